//! The control plane end to end: real redis-servers, a real keyway-ctld, and
//! real keyway data planes managed by it.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{http, keywayctl, owner_of, wait_for, Ctld, DataPlane, Redis, TempDir};
use redis::Commands;

fn create(ctld: &Ctld, name: &str, groups: &[(&str, &Redis)], lease: &str) {
    let groups: Vec<(&str, String)> = groups.iter().map(|(g, r)| (*g, r.addr())).collect();
    common::checks::create_cluster(ctld, name, &groups, lease, &[]);
}

#[test]
fn lifecycle_create_write_grow_shrink_assign_with_two_data_planes() {
    let dir = TempDir::new("lifecycle");
    let r: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "shop", &[("g1", &r[0]), ("g2", &r[1])], "30s");
    let dp1 = DataPlane::start(ctld.control, "shop", "dp1", &dir.path().join("dp1"));
    let dp2 = DataPlane::start(ctld.control, "shop", "dp2", &dir.path().join("dp2"));
    dp1.wait_health(200, Duration::from_secs(10));
    dp2.wait_health(200, Duration::from_secs(10));

    // Write through one data plane, read through the other; every key is on
    // the group the cluster says owns its slot.
    let cluster = ctld.ctl_json(&["cluster", "show", "shop"]);
    let (mut c1, mut c2) = (dp1.conn(), dp2.conn());
    let servers: HashMap<&str, &Redis> = [("g1", &r[0]), ("g2", &r[1])].into_iter().collect();
    for i in 0..200 {
        let k = format!("item:{i}");
        let _: () = c1.set(&k, i).unwrap();
        let v: i64 = c2.get(&k).unwrap();
        assert_eq!(v, i);
        let owner = owner_of(&cluster, &k);
        let direct: Option<i64> = servers[owner.as_str()].conn().get(&k).unwrap();
        assert_eq!(direct, Some(i), "{k} not on {owner}");
    }

    // Free slots 16000-16383 (nothing was written there yet: check first).
    let keys_there = (0..200).filter(|i| {
        let s = keyway_protocol::slot::key_slot(format!("item:{i}").as_bytes(), 16384);
        s >= 16000
    });
    for i in keys_there {
        let _: () = c1.del(format!("item:{i}")).unwrap();
    }
    let export = dir.path().join("shop.json");
    let (ok, _, err) = ctld.ctl(&[
        "snapshot",
        "export",
        "shop",
        "--output",
        export.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let mut snap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let last = snap["slots"].as_array_mut().unwrap().last_mut().unwrap();
    last["last"] = 15999.into();
    std::fs::write(&export, serde_json::to_string(&snap).unwrap()).unwrap();
    let (ok, _, err) = ctld.ctl(&[
        "snapshot",
        "apply",
        "shop",
        "--file",
        export.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    ctld.wait_acked("dp1", 2);
    ctld.wait_acked("dp2", 2);
    let unowned_key = (0..)
        .map(|i| format!("free:{i}"))
        .find(|k| keyway_protocol::slot::key_slot(k.as_bytes(), 16384) >= 16000)
        .unwrap();
    let err = c1.set::<_, _, ()>(&unowned_key, "x").unwrap_err();
    assert_eq!(err.code(), Some("CLUSTERDOWN"), "{err}");

    // Grow: an empty group. Shrinking a group that owns slots is refused.
    let (ok, _, err) = ctld.ctl(&[
        "cluster",
        "grow",
        "shop",
        "--group",
        &format!("g3={}", r[2].addr()),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctld.ctl(&["cluster", "shrink", "shop", "--group", "g2"]);
    assert!(!ok);
    assert!(
        err.contains("group \"g2\" still owns slots 8192-15999"),
        "{err}"
    );
    // Assign the free slots to g3: the key now works, and lands on g3.
    let (ok, _, err) = ctld.ctl(&[
        "slots",
        "assign",
        "shop",
        "--slots",
        "16000-16383",
        "--to",
        "g3",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctld.ctl(&["slots", "assign", "shop", "--slots", "0-10", "--to", "g3"]);
    assert!(!ok && err.contains("already owned"), "{err}");
    ctld.wait_acked("dp1", 4);
    ctld.wait_acked("dp2", 4);
    let _: () = c1.set(&unowned_key, "x").unwrap();
    let v: Option<String> = r[2].conn().get(&unowned_key).unwrap();
    assert_eq!(v.as_deref(), Some("x"));
    let v: String = c2.get(&unowned_key).unwrap();
    assert_eq!(v, "x");

    // An empty group can go.
    let (ok, _, err) = ctld.ctl(&["cluster", "grow", "shop", "--group", "g4=127.0.0.1:1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctld.ctl(&["cluster", "shrink", "shop", "--group", "g4"]);
    assert!(ok, "{err}");
    let dps = ctld.ctl_json(&["dataplanes", "shop"]);
    for d in dps.as_array().unwrap() {
        assert_eq!(d["connected"], true);
        assert_eq!(d["fenced"], false);
    }
    let (ok, out, _) = ctld.ctl(&["cluster", "list"]);
    assert!(
        ok && out.contains("shop") && out.contains("VERSION"),
        "{out}"
    );
}

#[test]
fn forty_changes_under_load_lose_nothing() {
    let dir = TempDir::new("forty");
    let r: Vec<Redis> = (0..4).map(|_| Redis::start()).collect();
    let ctld = Ctld::start(dir.path(), "30s");
    create(
        &ctld,
        "load",
        &[("g1", &r[0]), ("g2", &r[1]), ("g3", &r[2])],
        "30s",
    );
    let dps = [
        DataPlane::start(ctld.control, "load", "dpa", &dir.path().join("a")),
        DataPlane::start(ctld.control, "load", "dpb", &dir.path().join("b")),
    ];
    for d in &dps {
        d.wait_health(200, Duration::from_secs(10));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, done, addr) = (stop.clone(), done.clone(), dps[t % 2].addr);
            std::thread::spawn(move || {
                let mut con = redis::Client::open(format!("redis://{addr}"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let mut expected: HashMap<String, i64> = HashMap::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("ctr:{t}:{}", i % 64);
                    let n: i64 = con
                        .incr(&k, 1)
                        .unwrap_or_else(|e| panic!("INCR failed during a change: {e}"));
                    let e = expected.entry(k.clone()).or_insert(0);
                    *e += 1;
                    assert_eq!(n, *e, "{k}: a write was lost or doubled");
                    let (set, got): (String, String) = redis::pipe()
                        .cmd("SET")
                        .arg(format!("v:{t}"))
                        .arg(i)
                        .cmd("GET")
                        .arg(format!("v:{t}"))
                        .query(&mut con)
                        .unwrap();
                    assert_eq!((set.as_str(), got), ("OK", i.to_string()));
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                expected
            })
        })
        .collect();
    let extra = r[3].addr();
    let changes: Vec<Vec<String>> = (0..40)
        .map(|i| {
            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
            match i % 5 {
                0 => s(&[
                    "group",
                    "load",
                    "g1",
                    "--add-replica",
                    &format!("127.0.0.1:{}@zone-b", 20000 + i),
                ]),
                1 => s(&[
                    "group",
                    "load",
                    "g1",
                    "--remove-replica",
                    &format!("127.0.0.1:{}", 20000 + i - 1),
                ]),
                2 => s(&["group", "load", "g2", "--zone", &format!("zone-{i}")]),
                3 => s(&["cluster", "grow", "load", "--group", &format!("g4={extra}")]),
                _ => s(&["cluster", "shrink", "load", "--group", "g4"]),
            }
        })
        .collect();
    for (n, c) in changes.iter().enumerate() {
        let before = done.load(Ordering::Relaxed);
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        let (ok, _, err) = ctld.ctl(&args);
        assert!(ok, "change {n} {c:?}: {err}");
        wait_for("the load to make progress", Duration::from_secs(10), || {
            (done.load(Ordering::Relaxed) > before + 20).then_some(())
        });
    }
    for d in &dps {
        ctld.wait_acked(&d.id, 41);
    }
    stop.store(true, Ordering::Relaxed);
    let mut con = dps[0].conn();
    for c in clients {
        let expected = c.join().expect("no client error during 40 changes");
        for (k, n) in expected {
            let v: i64 = con.get(&k).unwrap();
            assert_eq!(v, n, "{k}");
        }
    }
    assert!(done.load(Ordering::Relaxed) > 1000);
}

#[test]
fn ctld_restart_keeps_all_state() {
    let dir = TempDir::new("restart");
    let r = Redis::start();
    let mut ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "keep", &[("g1", &r)], "30s");
    let (ok, _, err) = ctld.ctl(&[
        "group",
        "keep",
        "g1",
        "--zone",
        "rack-7",
        "--add-replica",
        "127.0.0.1:9@rack-8",
    ]);
    assert!(ok, "{err}");
    let dp = DataPlane::start(ctld.control, "keep", "dp-k", &dir.path().join("dp"));
    ctld.wait_acked("dp-k", 2);
    let before = ctld.ctl_json(&["cluster", "show", "keep"]);
    ctld.proc.kill();
    let ctld = Ctld::start_on(
        dir.path(),
        "30s",
        &ctld.api.to_string(),
        &ctld.control.to_string(),
    );
    let after = ctld.ctl_json(&["cluster", "show", "keep"]);
    for field in [
        "name",
        "version",
        "slot_count",
        "lease_millis",
        "groups",
        "slots",
    ] {
        assert_eq!(before[field], after[field], "{field}");
    }
    // The data plane is remembered, reconnects, and never fenced.
    wait_for(
        "the data plane to reconnect",
        Duration::from_secs(10),
        || {
            let d = ctld.ctl_json(&["dataplanes"]);
            (d[0]["id"] == "dp-k" && d[0]["connected"] == true && d[0]["acked_version"] == 2)
                .then_some(())
        },
    );
    assert_eq!(dp.admin_get("/healthz").0, 200);
}

#[test]
fn a_restarted_data_plane_serves_its_snapshot_while_ctld_is_down_then_fences() {
    let dir = TempDir::new("dp-restart");
    let r = Redis::start();
    let mut ctld = Ctld::start(dir.path(), "6s");
    create(&ctld, "cold", &[("g1", &r)], "6s");
    let state = dir.path().join("dp");
    let mut dp = DataPlane::start(ctld.control, "cold", "dp-c", &state);
    ctld.wait_acked("dp-c", 1);
    let _: () = dp.conn().set("k", "v").unwrap();
    ctld.proc.kill();
    dp.proc.kill();
    let control = ctld.control;
    let dp = DataPlane::start(control, "cold", "dp-c", &state);
    let v: String = dp.conn().get("k").expect("serves from the saved snapshot");
    assert_eq!(v, "v");
    assert_eq!(dp.admin_get("/healthz").0, 200);
    // When what remained of the lease runs out, it fences.
    dp.wait_health(503, Duration::from_secs(10));
    let err = dp.conn().get::<_, String>("k").unwrap_err();
    assert_eq!(err.code(), Some("TRYAGAIN"), "{err}");
    let (_, body) = dp.admin_get("/healthz");
    assert!(body.contains("lease"), "{body}");
}

#[test]
fn a_cut_off_data_plane_fences_after_its_lease_and_recovers() {
    let dir = TempDir::new("cutoff");
    let r = Redis::start();
    let mut ctld = Ctld::start(dir.path(), "3s");
    create(&ctld, "cut", &[("g1", &r)], "3s");
    let dp = DataPlane::start(ctld.control, "cut", "dp-x", &dir.path().join("dp"));
    ctld.wait_acked("dp-x", 1);
    let mut con = dp.conn();
    let _: () = con.set("k", "1").unwrap();
    let (api, control) = (ctld.api.to_string(), ctld.control.to_string());
    ctld.proc.kill();
    // It fences because its lease ran out (the body says so); how long
    // after the kill depends on the machine, so that is not asserted.
    dp.wait_health(503, Duration::from_secs(30));
    let (_, body) = dp.admin_get("/healthz");
    assert!(body.contains("lease"), "fenced for its lease: {body}");
    let err = con.get::<_, String>("k").unwrap_err();
    assert_eq!(err.code(), Some("TRYAGAIN"));
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG", "connection commands still answer");
    let ctld = Ctld::start_on(dir.path(), "3s", &api, &control);
    dp.wait_health(200, Duration::from_secs(30));
    let v: String = con.get("k").unwrap();
    assert_eq!(v, "1");
    wait_for(
        "ctld to see the data plane serving",
        Duration::from_secs(30),
        || {
            let d = ctld.ctl_json(&["dataplanes"]);
            (d[0]["fenced"] == false).then_some(())
        },
    );
}

#[test]
fn an_ack_waits_for_requests_routed_under_the_old_version() {
    let dir = TempDir::new("ack");
    let r = Redis::start();
    let ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "slow", &[("g1", &r)], "30s");
    let dp = DataPlane::start(ctld.control, "slow", "dp-s", &dir.path().join("dp"));
    ctld.wait_acked("dp-s", 1);
    // A request routed under version 1 stays in flight for as long as its
    // Redis is stopped: the test, not a clock, decides when it may finish.
    let forwarded = || {
        let info: String = redis::cmd("INFO")
            .arg("keyway")
            .query(&mut dp.conn())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("requests_forwarded:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("INFO keyway has requests_forwarded")
    };
    let before = forwarded();
    r.pause();
    let mut slow = std::net::TcpStream::connect(dp.addr).unwrap();
    slow.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    wait_for("the GET to be forwarded", Duration::from_secs(30), || {
        (forwarded() > before).then_some(())
    });
    let (ok, _, err) = ctld.ctl(&["group", "slow", "g1", "--zone", "z"]);
    assert!(ok, "{err}");
    // Version 2 is loaded at once, but not acked while the GET is in flight.
    wait_for("version 2 to be loaded", Duration::from_secs(30), || {
        (dp.table_version() == 2).then_some(())
    });
    slow.set_nonblocking(true).unwrap();
    let in_flight = |slow: &std::net::TcpStream| matches!(slow.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    for i in 0..20 {
        assert!(
            in_flight(&slow),
            "the GET was answered while its Redis was stopped (the backend timeout passed?)"
        );
        assert_eq!(
            ctld.acked("dp-s"),
            1,
            "acked version 2 with a version-1 request in flight (check {i})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    r.resume();
    slow.set_nonblocking(false).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = [0u8; 5];
    slow.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"$-1\r\n");
    ctld.wait_acked("dp-s", 2);
}

#[test]
fn a_corrupt_or_torn_store_is_refused() {
    let dir = TempDir::new("corrupt");
    let r = Redis::start();
    let mut ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "c", &[("g1", &r)], "30s");
    let store = ctld.store.clone();
    ctld.proc.stop();
    let good = std::fs::read(&store).unwrap();
    for (name, bad) in [
        ("flipped", flip(&good)),
        ("torn", good[..good.len() / 2].to_vec()),
    ] {
        std::fs::write(&store, &bad).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyway-ctld"))
            .arg("--store")
            .arg(format!("file:{}", store.display()))
            .args(["--api", "127.0.0.1:0", "--control", "127.0.0.1:0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains("is corrupt") && err.contains("refusing"),
            "{name}: {err}"
        );
        assert_eq!(
            std::fs::read(&store).unwrap(),
            bad,
            "{name}: the store must not be replaced"
        );
    }
}

fn flip(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    let at = v.len() - 10;
    v[at] ^= 0x20;
    v
}

#[test]
fn api_and_cli_errors_are_clear() {
    let dir = TempDir::new("errors");
    let r = Redis::start();
    let ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "e", &[("g1", &r)], "30s");
    let g1 = format!("g1={}", r.addr());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["cluster", "create", "e", "--group", g1.as_str()],
            "cluster \"e\" already exists",
        ),
        (
            vec![
                "cluster",
                "create",
                "x",
                "--slots",
                "1000",
                "--group",
                "g1=127.0.0.1:1",
            ],
            "power of two",
        ),
        (
            vec!["cluster", "create", "x", "--group", "nodelimiter"],
            "expected NAME=HOST:PORT",
        ),
        (
            vec!["cluster", "create", "x", "--group", "g1=nohost"],
            "is not host:port",
        ),
        (vec!["cluster", "show", "nope"], "no cluster \"nope\""),
        (
            vec!["cluster", "grow", "e", "--group", g1.as_str()],
            "already has a group",
        ),
        (
            vec!["cluster", "shrink", "e", "--group", "g1"],
            "still owns slots 0-16383",
        ),
        (
            vec!["cluster", "shrink", "e", "--group", "zz"],
            "has no group \"zz\"",
        ),
        (
            vec!["slots", "assign", "e", "--slots", "5-1", "--to", "g1"],
            "reversed",
        ),
        (
            vec!["slots", "assign", "e", "--slots", "1-2", "--to", "g1"],
            "already owned",
        ),
        (
            vec!["group", "e", "g1", "--remove-replica", "1.2.3.4:5"],
            "has no replica",
        ),
        (
            vec!["snapshot", "apply", "e", "--file", "/nonexistent.json"],
            "cannot read",
        ),
    ];
    for (args, want) in cases {
        let (ok, out, err) = ctld.ctl(&args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(
            err.starts_with("keywayctl: ") && err.contains(want),
            "{args:?}: {err:?} lacks {want:?}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    }
    // A snapshot exported before a change is refused, unless forced.
    let file = dir.path().join("e.json");
    let (ok, _, _) = ctld.ctl(&["snapshot", "export", "e", "-o", file.to_str().unwrap()]);
    assert!(ok);
    let (ok, _, _) = ctld.ctl(&["group", "e", "g1", "--zone", "z1"]);
    assert!(ok);
    let (ok, _, err) = ctld.ctl(&["snapshot", "apply", "e", "--file", file.to_str().unwrap()]);
    assert!(
        !ok && err.contains("changed since this snapshot was exported"),
        "{err}"
    );
    let (ok, _, err) = ctld.ctl(&[
        "snapshot",
        "apply",
        "e",
        "--file",
        file.to_str().unwrap(),
        "--force",
    ]);
    assert!(ok, "{err}");
    // Nobody listening.
    let (ok, _, err) = keywayctl("127.0.0.1:1", &["cluster", "list"]);
    assert!(!ok && err.contains("cannot reach keyway-ctld"), "{err}");
    // Raw API errors are JSON with the right status.
    let (status, body) = http(ctld.api, "POST /v1/clusters HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{bad}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, body) = http(
        ctld.api,
        "DELETE /v1/clusters/e/groups/g1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = common::http_get(ctld.api, "/v1/nothing");
    assert_eq!(status, 404);
    assert!(body.contains("no such API endpoint"));
}

#[test]
fn systemd_units_verify() {
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        common::skip!("systemd-analyze is not installed (package systemd)");
    };
    assert!(probe.status.success());
    let dir = TempDir::new("units");
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let keyway = common::workspace_bin("keyway");
    let mut paths = Vec::new();
    for (unit, bin, real) in [
        (
            "keyway.service",
            "/usr/bin/keyway ",
            format!("{} ", keyway.display()),
        ),
        (
            "keyway-ctld.service",
            "/usr/bin/keyway-ctld ",
            format!("{} ", env!("CARGO_BIN_EXE_keyway-ctld")),
        ),
    ] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        assert!(text.contains(bin), "{unit} runs {bin}");
        for key in [
            "Type=notify",
            "Restart=always",
            "LimitNOFILE=",
            "CPUAffinity=",
            "StateDirectory=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
        ] {
            assert!(text.contains(key), "{unit} lacks {key}");
        }
        let p = dir.path().join(unit);
        std::fs::write(&p, text.replace(bin, &real)).unwrap();
        paths.push(p);
    }
    assert!(std::fs::read_to_string(units.join("keyway.service"))
        .unwrap()
        .contains("LimitMEMLOCK=infinity"));
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}

/// Stops a `local up` system even if the test fails midway.
struct LocalGuard(std::path::PathBuf);

impl Drop for LocalGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_keywayctl"))
            .args(["local", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

#[test]
fn local_up_runs_a_whole_system_and_down_stops_it() {
    let dir = TempDir::new("local");
    let sys = dir.path().join("sys");
    let _guard = LocalGuard(sys.clone());
    // `local up` takes fixed ports, free when picked but not reserved: should
    // another process take one first, it fails, and runs again on new ones.
    let mut failures = Vec::new();
    let out = loop {
        let ports: Vec<String> = (0..5).map(|_| common::free_port().to_string()).collect();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keywayctl"))
            .args([
                "--json",
                "local",
                "up",
                "--groups",
                "2",
                "--replicas",
                "1",
                "--dir",
            ])
            .arg(&sys)
            .args([
                "--port",
                &ports[0],
                "--api-port",
                &ports[1],
                "--control-port",
                &ports[2],
                "--admin-port",
                &ports[3],
                "--redis-port",
                &ports[4],
            ])
            .output()
            .unwrap();
        if out.status.success() {
            break out;
        }
        failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(failures.len() < 3, "local up failed thrice: {failures:#?}");
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_keywayctl"))
            .args(["local", "down", "--dir"])
            .arg(&sys)
            .output();
    };
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listen = info["listen"].as_str().unwrap().to_string();
    let mut con = redis::Client::open(format!("redis://{listen}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .arg("c")
        .arg(3)
        .query(&mut con)
        .unwrap();
    let v: Vec<i64> = redis::cmd("MGET")
        .arg("a")
        .arg("b")
        .arg("c")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, vec![1, 2, 3]);
    let (ok, shown, _) = keywayctl(info["api"].as_str().unwrap(), &["cluster", "show", "local"]);
    assert!(
        ok && shown.contains("REPLICAS") && shown.contains("local-1"),
        "{shown}"
    );
    let pids: Vec<i32> = std::fs::read_to_string(sys.join("pids"))
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2 * 2 + 2, "2 masters, 2 replicas, ctld, keyway");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keywayctl"))
        .args(["local", "down", "--dir"])
        .arg(&sys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in pids {
        // SAFETY: signal 0 only checks existence.
        assert_ne!(
            unsafe { libc::kill(pid, 0) },
            0,
            "process {pid} still runs after local down"
        );
    }
    assert!(std::net::TcpStream::connect(&listen).is_err());
}

#[test]
fn one_ctld_serves_several_clusters_and_refuses_unknown_ones() {
    let dir = TempDir::new("multi");
    let (ra, rb) = (Redis::start(), Redis::start());
    let ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "alpha", &[("g1", &ra)], "30s");
    create(&ctld, "beta", &[("g1", &rb)], "30s");
    let a = DataPlane::start(ctld.control, "alpha", "dp-alpha", &dir.path().join("a"));
    let b = DataPlane::start(ctld.control, "beta", "dp-beta", &dir.path().join("b"));
    let lost = DataPlane::start(ctld.control, "gamma", "dp-gamma", &dir.path().join("g"));
    a.wait_health(200, Duration::from_secs(10));
    b.wait_health(200, Duration::from_secs(10));
    let _: () = a.conn().set("k", "from-alpha").unwrap();
    let _: () = b.conn().set("k", "from-beta").unwrap();
    let va: String = ra.conn().get("k").unwrap();
    let vb: String = rb.conn().get("k").unwrap();
    assert_eq!((va.as_str(), vb.as_str()), ("from-alpha", "from-beta"));
    // A change to one cluster reaches only its own data planes.
    let (ok, _, err) = ctld.ctl(&["group", "alpha", "g1", "--zone", "z"]);
    assert!(ok, "{err}");
    ctld.wait_acked("dp-alpha", 2);
    assert_eq!(b.table_version(), 1);
    // A data plane of a cluster ctld does not have stays fenced, and says why.
    let (status, body) = lost.admin_get("/healthz");
    assert_eq!(status, 503);
    assert!(body.contains("no routing table"), "{body}");
    let err = lost.conn().get::<_, String>("k").unwrap_err();
    assert_eq!(err.code(), Some("TRYAGAIN"));
    let listed = ctld.ctl_json(&["cluster", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
}
