//! What keyway-ctld's API and store must withstand, end to end with real
//! processes: heavy and pathological requests while data planes hold their
//! leases, names that do not resolve, malformed or oversized input, slow,
//! idle or surplus clients, forgotten data planes, bad stores, closed pipes.
//! Each test asserts on behaviour (answers, closed connections, fencing,
//! records), never on how long something took. The control port's side is
//! in `control_port.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use common::checks::{
    big_cluster, create_cluster as create, refused_start, version, view, HealthWatch,
};
use common::{closed_by_peer, request, wait_for, Ctld, DataPlane, Redis, TempDir};
use serde_json::{json, Value};

#[test]
fn pathological_and_heavy_requests_never_fence_a_data_plane() {
    let dir = TempDir::new("stall");
    let r = Redis::start();
    let ctld = Ctld::start(dir.path(), "3s");
    create(&ctld, "c", &[("g1", r.addr())], "3s", &[]);
    let dp = DataPlane::start(ctld.control, "c", "dp1", &dir.path().join("dp1"));
    dp.wait_health(200, Duration::from_secs(10));
    let watch = HealthWatch::start(&dp);

    // The review's request: 96 KB of "0-16383," — refused at its second
    // range. Several at once, with migrations of the same text.
    let ranges = vec!["0-16383"; 12_000].join(",");
    let assign = json!({"slots": ranges, "group": "g1"}).to_string();
    let migrate = json!({"slots": ranges, "to": "g1"}).to_string();
    let api = ctld.api;
    let mut work: Vec<JoinHandle<()>> = (0..3)
        .map(|i| {
            let (assign, migrate) = (assign.clone(), migrate.clone());
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let (status, body) = if i == 2 {
                        request(api, "POST", "/v1/clusters/c/migrations", &[], &migrate)
                    } else {
                        request(api, "POST", "/v1/clusters/c/slots", &[], &assign)
                    };
                    assert_eq!(status, 400, "{body}");
                    assert!(
                        body.contains("0-16383: slot 0 is named twice"),
                        "the refusal says why: {body}"
                    );
                    assert!(body.len() < 600, "and is short: {} bytes", body.len());
                }
            })
        })
        .collect();
    // Heavy but valid: clusters of 16384 groups each (linear now; this was
    // quadratic, seconds on the runtime thread).
    for i in 0..2 {
        let body = big_cluster(&format!("big{i}"), 16384);
        work.push(std::thread::spawn(move || {
            let (status, reply) = request(api, "POST", "/v1/clusters", &[], &body);
            assert_eq!(status, 201, "{}", &reply[..reply.len().min(300)]);
        }));
    }
    let answered: Vec<bool> = work.into_iter().map(|w| w.join().is_ok()).collect();
    let unhealthy = watch.finish();
    assert!(
        unhealthy.is_empty(),
        "the data plane fenced while ctld served other requests: {} answers were not 200, \
         the first: {:?}",
        unhealthy.len(),
        unhealthy.first()
    );
    assert!(
        answered.iter().all(|ok| *ok),
        "every request answered as expected: {answered:?}"
    );
    let d = view(&ctld, "dp1").unwrap();
    assert_eq!(
        (d["connected"].clone(), d["fenced"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(version(&ctld, "c"), 1, "nothing changed");
    assert_eq!(
        ctld.ctl_json(&["cluster", "list"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn an_unresolvable_or_duplicate_server_is_refused_unless_forced() {
    let dir = TempDir::new("resolve");
    let (r1, r2) = (Redis::start(), Redis::start());
    let ctld = Ctld::start(dir.path(), "30s");
    create(
        &ctld,
        "c",
        &[("g1", r1.addr()), ("g2", r2.addr())],
        "30s",
        &[],
    );
    let v = version(&ctld, "c");

    let (ok, _, err) = ctld.ctl(&["group", "c", "g2", "--master", "redis-typo.invalid:6379"]);
    assert!(!ok);
    assert!(
        err.contains("cannot resolve redis-typo.invalid:6379") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(version(&ctld, "c"), v, "nothing changed");
    let (ok, _, err) = ctld.ctl(&[
        "group",
        "c",
        "g2",
        "--master",
        "redis-typo.invalid:6379",
        "--force",
    ]);
    assert!(ok, "{err}");
    assert_eq!(version(&ctld, "c"), v + 1);
    let (ok, _, err) = ctld.ctl(&["group", "c", "g2", "--master", &r2.addr()]);
    assert!(ok, "{err}");
    // Create and grow resolve too.
    let (ok, _, err) = ctld.ctl(&["cluster", "create", "x", "--group", "g1=nowhere.invalid:1"]);
    assert!(
        !ok && err.contains("cannot resolve nowhere.invalid:1"),
        "{err}"
    );
    let (ok, _, err) = ctld.ctl(&["cluster", "grow", "c", "--group", "g3=nowhere.invalid:1"]);
    assert!(!ok && err.contains("cannot resolve"), "{err}");
    let (ok, _, err) = ctld.ctl(&[
        "cluster",
        "grow",
        "c",
        "--group",
        "g3=nowhere.invalid:1",
        "--force",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctld.ctl(&["cluster", "shrink", "c", "--group", "g3"]);
    assert!(ok, "{err}");
    // So does a snapshot apply, for the addresses it brings.
    let file = dir.path().join("c.json");
    let (ok, _, err) = ctld.ctl(&["snapshot", "export", "c", "-o", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace(&r2.addr(), "nowhere.invalid:2")).unwrap();
    let v = version(&ctld, "c");
    let (ok, _, err) = ctld.ctl(&["snapshot", "apply", "c", "--file", file.to_str().unwrap()]);
    assert!(
        !ok && err.contains("cannot resolve nowhere.invalid:2"),
        "{err}"
    );
    assert_eq!(version(&ctld, "c"), v, "nothing changed");

    // One server under two names is used once.
    let (ok, _, err) = ctld.ctl(&[
        "group",
        "c",
        "g1",
        "--add-replica",
        &format!("localhost:{}", r2.port),
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "localhost:{} is the same server as {}",
            r2.port,
            r2.addr()
        )),
        "{err}"
    );
    let (ok, _, err) = ctld.ctl(&[
        "cluster",
        "grow",
        "c",
        "--group",
        &format!("g4=localhost:{}", r1.port),
    ]);
    assert!(!ok && err.contains("same server"), "{err}");
    let (ok, _, err) = ctld.ctl(&[
        "cluster",
        "create",
        "twice",
        "--group",
        &format!("g1=localhost:{}", r1.port),
        "--group",
        &format!("g2={}", r1.addr()),
    ]);
    assert!(!ok && err.contains("same server"), "{err}");
}

#[test]
fn a_master_that_does_not_resolve_fences_nothing_and_errors_only_its_group() {
    let dir = TempDir::new("typo");
    let (r1, r2) = (Redis::start(), Redis::start());
    let ctld = Ctld::start(dir.path(), "30s");
    create(
        &ctld,
        "c",
        &[("g1", r1.addr()), ("g2", r2.addr())],
        "30s",
        &[],
    );
    let dp = DataPlane::start(ctld.control, "c", "dp1", &dir.path().join("dp1"));
    dp.wait_health(200, Duration::from_secs(10));
    let cluster = ctld.ctl_json(&["cluster", "show", "c"]);
    let key = |group: &str| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| common::owner_of(&cluster, k) == group)
            .unwrap()
    };
    let (k1, k2) = (key("g1"), key("g2"));
    let mut con = dp.conn();
    let _: () = redis::cmd("SET")
        .arg(&k1)
        .arg("one")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&k2)
        .arg("two")
        .query(&mut con)
        .unwrap();
    let watch = HealthWatch::start(&dp);

    // A typo forced through (or a DNS outage): before, every data plane
    // rejected the whole snapshot and fenced, g1's keys failing too.
    let (ok, _, err) = ctld.ctl(&[
        "group",
        "c",
        "g2",
        "--master",
        "redis-typo.invalid:6379",
        "--force",
    ]);
    assert!(ok, "{err}");
    ctld.wait_acked("dp1", version(&ctld, "c"));
    let v: String = redis::cmd("GET").arg(&k1).query(&mut con).unwrap();
    assert_eq!(v, "one", "the other groups serve");
    let err = redis::cmd("GET")
        .arg(&k2)
        .query::<String>(&mut con)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backend g2 unavailable: cannot resolve \"redis-typo.invalid:6379\""),
        "{err}"
    );
    let (_, table) = dp.admin_get("/table");
    assert!(table.contains("\"unresolved\":\"cannot resolve"), "{table}");

    // Fixed: g2 serves again.
    let (ok, _, err) = ctld.ctl(&["group", "c", "g2", "--master", &r2.addr()]);
    assert!(ok, "{err}");
    let v = wait_for("g2 to serve again", Duration::from_secs(10), || {
        redis::cmd("GET").arg(&k2).query::<String>(&mut con).ok()
    });
    assert_eq!(v, "two");
    assert_eq!(watch.finish(), vec![], "the data plane never fenced");
}

#[test]
fn names_addresses_and_settings_are_bounded() {
    let dir = TempDir::new("bounds");
    let r = Redis::start();
    let ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "c", &[("g1", r.addr())], "30s", &[]);
    let m = r.addr();
    let huge_host = format!("{}:1", "h".repeat(10_000));
    let seventeen: Vec<Value> = (0..17)
        .map(|i| json!({"address": format!("127.0.0.2:{}", 100 + i)}))
        .collect();
    let creates = [
        (
            json!({"name": ".", "groups": [{"name": "g1", "master": m}]}),
            "cluster name",
        ),
        (
            json!({"name": "..", "groups": [{"name": "g1", "master": m}]}),
            "cluster name",
        ),
        (
            json!({"name": "a/b", "groups": [{"name": "g1", "master": m}]}),
            "cluster name",
        ),
        (
            json!({"name": "x", "groups": [{"name": "-g", "master": m}]}),
            "group name",
        ),
        (
            json!({"name": "x", "groups": [{"name": "g1", "master": "a\u{0}b:1"}]}),
            "no valid host",
        ),
        (
            json!({"name": "x", "groups": [{"name": "g1", "master": "a/b:1"}]}),
            "no valid host",
        ),
        (
            json!({"name": "x", "groups": [{"name": "g1", "master": "a?b:1"}]}),
            "no valid host",
        ),
        (
            json!({"name": "x", "groups": [{"name": "g1", "master": huge_host}]}),
            "too long",
        ),
        (
            json!({"name": "x", "groups": [{"name": "g1", "master": m, "zone": "a zone"}]}),
            "zone",
        ),
        (
            json!({"name": "x", "groups": [{"name": "g1", "master": m, "replicas": seventeen}]}),
            "17 replicas",
        ),
        (
            json!({"name": "x", "groups": [{"name": "g1", "master": m}], "lease_ms": 0}),
            "lease",
        ),
        (
            json!({"name": "x", "groups": [{"name": "g1", "master": m}], "lease_ms": 600_001}),
            "lease",
        ),
    ];
    for (body, want) in creates {
        let (status, reply) = request(ctld.api, "POST", "/v1/clusters", &[], &body.to_string());
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(reply.contains(want), "{want:?} not in {reply}");
        assert!(
            reply.len() < 700,
            "a bounded message: {} bytes",
            reply.len()
        );
    }
    // More groups than slots.
    let (status, reply) = request(
        ctld.api,
        "POST",
        "/v1/clusters",
        &[],
        &big_cluster("many", 20_000),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("at most 16384"), "{reply}");
    // Migration settings that would overflow the sweep's arithmetic.
    let (ok, _, err) = ctld.ctl(&["cluster", "grow", "c", "--group", "g2=127.0.0.1:2"]);
    assert!(ok, "{err}");
    let body = json!({"slots": "0-10", "to": "g2", "settings": {"timeout_ms": u64::MAX / 3 + 1, "max_timeout_ms": u64::MAX}});
    let (status, reply) = request(
        ctld.api,
        "POST",
        "/v1/clusters/c/migrations",
        &[],
        &body.to_string(),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("timeout"), "{reply}");
    assert!(ctld
        .ctl_json(&["migrations", "c"])
        .as_array()
        .unwrap()
        .is_empty());
    // Bodies are bounded: one announced over 8 MiB is refused before it is
    // read; one over its route's 1 MiB as it is.
    let mut s = TcpStream::connect(ctld.api).unwrap();
    s.write_all(
        b"PUT /v1/clusters/c/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let (status, reply) = request(
        ctld.api,
        "PATCH",
        "/v1/clusters/c/groups/g1",
        &[],
        &" ".repeat((1 << 20) + 1),
    );
    assert_eq!(status, 413, "{reply}");
    // A lease outside 1 s to 10 min is refused at the command line too.
    for lease in ["500ms", "11m"] {
        let store = format!("file:{}", dir.path().join("other").display());
        let (code, err) = refused_start(&[
            "--store",
            &store,
            "--lease",
            lease,
            "--api",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
        ]);
        assert!(code != Some(0) && err.contains("from 1s to 600s"), "{err}");
    }
}

#[test]
fn slow_idle_and_surplus_api_clients_are_cut_off_and_others_served() {
    let dir = TempDir::new("api-limits");
    let r = Redis::start();
    let ctld = Ctld::start(dir.path(), "30s");
    let api = ctld.api;
    // First, before any other client: connections over the cap are closed
    // unanswered; idle ones are closed in time, and then clients are served
    // again.
    let idle: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(api).unwrap()).collect();
    let mut surplus = TcpStream::connect(api).unwrap();
    let _ = surplus.write_all(b"GET /v1/clusters HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    surplus
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut resp = Vec::new();
    let _ = surplus.read_to_end(&mut resp);
    assert!(
        resp.is_empty(),
        "over the cap: closed, never answered: {resp:?}"
    );
    for mut s in idle {
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(120)),
            "idle connections are closed"
        );
    }
    create(&ctld, "c", &[("g1", r.addr())], "30s", &[]);

    // A request head that never ends, and a body that never ends.
    let slow_head = std::thread::spawn(move || {
        let mut s = TcpStream::connect(api).unwrap();
        s.write_all(b"GET /v1/clusters HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        closed_by_peer(&mut s, Duration::from_secs(120))
    });
    let slow_body = std::thread::spawn(move || {
        let mut s = TcpStream::connect(api).unwrap();
        s.write_all(
            b"POST /v1/clusters/c/slots HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"sl",
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        String::from_utf8_lossy(&resp).into_owned()
    });
    // A kept-alive connection, answered once, then idle.
    let kept_alive = std::thread::spawn(move || {
        let mut s = TcpStream::connect(api).unwrap();
        s.write_all(b"GET /v1/clusters HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut all = Vec::new();
        let closed = s.read_to_end(&mut all).is_ok();
        (String::from_utf8_lossy(&all).into_owned(), closed)
    });
    // Meanwhile others are served.
    for _ in 0..3 {
        let (ok, out, err) = ctld.ctl(&["cluster", "list"]);
        assert!(ok && out.contains('c'), "{err}");
    }
    let (answer, closed) = kept_alive.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle kept-alive connection is closed: {answer}");
    assert!(slow_head.join().unwrap(), "an endless head is cut off");
    let answer = slow_body.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "an endless body gets 408: {answer}"
    );
    let (ok, _, err) = ctld.ctl(&["cluster", "list"]);
    assert!(ok, "{err}");
}

#[test]
fn a_dead_data_plane_can_be_forgotten_once_its_lease_has_ended() {
    let dir = TempDir::new("forget");
    let r = Redis::start();
    let mut ctld = Ctld::start(dir.path(), "1s");
    create(&ctld, "c", &[("g1", r.addr())], "1s", &[]);
    let mut dp = DataPlane::start(ctld.control, "c", "dp1", &dir.path().join("dp1"));
    ctld.wait_acked("dp1", 1);
    let (ok, _, err) = ctld.ctl(&["dataplane", "forget", "dp1"]);
    assert!(!ok && err.contains("is connected"), "{err}");
    dp.proc.kill();
    wait_for(
        "the data plane to be forgotten",
        Duration::from_secs(30),
        || {
            let (ok, _, err) = ctld.ctl(&["dataplane", "forget", "dp1"]);
            assert!(
                ok || err.contains("is connected") || err.contains("may still hold a lease"),
                "{err}"
            );
            ok.then_some(())
        },
    );
    assert!(view(&ctld, "dp1").is_none());
    let (ok, _, err) = ctld.ctl(&["dataplane", "forget", "dp1"]);
    assert!(!ok && err.contains("no data plane \"dp1\""), "{err}");
    // Gone for good: a restarted ctld does not know it either.
    let (api, control) = (ctld.api.to_string(), ctld.control.to_string());
    ctld.proc.stop();
    let ctld = Ctld::start_on(dir.path(), "1s", &api, &control);
    assert!(view(&ctld, "dp1").is_none());
}

#[test]
fn a_store_that_checks_out_but_breaks_a_rule_is_refused() {
    let dir = TempDir::new("invalid-store");
    let mut state = keyway_ctl::model::State::default();
    let g = keyway_ctl::model::Group {
        name: "g1".into(),
        master: "127.0.0.1:7001".into(),
        ..Default::default()
    };
    let mut c = keyway_ctl::model::Cluster::create(
        "shop",
        16384,
        vec![g],
        30_000,
        &keyway_ctl::model::Resolved::none(),
    )
    .unwrap();
    c.slot_count = 0;
    state.clusters.insert("shop".into(), c);
    let path = dir.path().join("state");
    let bytes = keyway_ctl::store::encode(&state);
    std::fs::write(&path, &bytes).unwrap();
    let store = format!("file:{}", path.display());
    let (code, err) = refused_start(&[
        "--store",
        &store,
        "--api",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cluster \"shop\": slot count 0 is not a power of two")
            && err.contains("refusing to start"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "never replaced");
}

#[test]
fn keywayctl_ends_quietly_when_its_reader_goes_away() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new("pipe");
    let r = Redis::start();
    let ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "c", &[("g1", r.addr())], "30s", &[]);
    // A pipe whose reading end is closed before keywayctl writes.
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are ours, each wrapped once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = Command::new(env!("CARGO_BIN_EXE_keywayctl"))
        .args(["--api", &ctld.api.to_string(), "cluster", "show", "c"])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.trim().is_empty(), "nothing on stderr: {err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
