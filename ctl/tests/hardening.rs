//! What keyway-ctld must withstand, end to end with real processes: heavy
//! and pathological API requests while data planes hold their leases,
//! impostors on the control port, names that do not resolve, clients
//! without the token, slow or idle clients, bad stores, closed pipes.
//! Each test asserts on behaviour (answers, closed connections, fencing,
//! records), never on how long something took.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{
    closed_by_peer, http_get, keywayctl_env, request, token_file, wait_for, Ctld, DataPlane,
    RawSession, Redis, TempDir,
};
use keyway_capnp::control::{Ack, FromDataPlane, Hello, ToDataPlane};
use serde_json::{json, Value};

fn create(ctld: &Ctld, name: &str, groups: &[(&str, String)], lease: &str, extra: &[&str]) {
    let mut args = vec![
        "cluster".to_string(),
        "create".into(),
        name.into(),
        "--lease".into(),
        lease.into(),
    ];
    for (g, addr) in groups {
        args.push("--group".into());
        args.push(format!("{g}={addr}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = ctld.ctl(&args);
    assert!(ok, "create failed: {err}");
}

/// Watches a data plane's `/healthz` until stopped; every answer that is not
/// 200 is kept.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    bad: Arc<Mutex<Vec<(u16, String)>>>,
    thread: JoinHandle<()>,
}

impl HealthWatch {
    fn start(dp: &DataPlane) -> HealthWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let bad: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
        let (s, b, admin) = (stop.clone(), Arc::clone(&bad), dp.admin);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let (status, body) = http_get(admin, "/healthz");
                if status != 200 {
                    b.lock().unwrap().push((status, body));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        HealthWatch { stop, bad, thread }
    }

    /// Stops, and returns what was not healthy.
    fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let bad = self.bad.lock().unwrap().clone();
        bad
    }
}

fn view(ctld: &Ctld, id: &str) -> Option<Value> {
    let all = ctld.ctl_json(&["dataplanes"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
}

fn version(ctld: &Ctld, cluster: &str) -> u64 {
    ctld.ctl_json(&["cluster", "show", cluster])["version"]
        .as_u64()
        .unwrap()
}

/// A create request body of `n` groups with distinct loopback-free masters.
fn big_cluster(name: &str, n: usize) -> String {
    let groups: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("g{i}"), "master": format!("10.{}.{}.1:6379", i / 256, i % 256)}))
        .collect();
    json!({"name": name, "groups": groups}).to_string()
}

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

fn hello(id: &str, cluster: &str, version: u64, address: &str, token: &str) -> FromDataPlane {
    FromDataPlane::Hello(Hello {
        id: id.into(),
        cluster: cluster.into(),
        version,
        address: address.into(),
        token: token.into(),
    })
}

fn ack(version: u64, seq: u64) -> FromDataPlane {
    FromDataPlane::Ack(Ack {
        version,
        drained: true,
        seq,
        fenced: false,
    })
}

fn refusal(msgs: &[ToDataPlane]) -> Option<&str> {
    msgs.iter().find_map(|m| match m {
        ToDataPlane::Refused(why) => Some(why.as_str()),
        _ => None,
    })
}

#[test]
fn an_impostors_ack_is_refused_and_a_replaced_session_is_closed() {
    let dir = TempDir::new("impostor");
    let r = Redis::start();
    let mut ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "c", &[("g1", r.addr())], "30s", &[]);
    let dp = DataPlane::start(ctld.control, "c", "dp1", &dir.path().join("dp1"));
    ctld.wait_acked("dp1", 1);
    let before = view(&ctld, "dp1").unwrap();

    // Hello as dp1, then an ack for a version that does not exist.
    let mut fake = RawSession::connect(ctld.control);
    fake.send(&hello("dp1", "c", 1, "6.6.6.6:6666", ""));
    fake.send(&ack(999, 1));
    let got = fake.until_closed();
    let why = refusal(&got).unwrap_or_else(|| panic!("no refusal: {got:?}"));
    assert!(
        why.contains("ack for version 999") && why.contains("at version 1"),
        "{why}"
    );
    assert!(
        !got.iter().any(|m| matches!(m, ToDataPlane::Heartbeat(_))),
        "no lease for it: {got:?}"
    );
    let after = view(&ctld, "dp1").unwrap();
    assert_eq!(
        after["address"], before["address"],
        "the address is unchanged"
    );
    assert_eq!(after["acked_version"], 1, "no ack recorded");
    assert_eq!(
        after["connected"], true,
        "the real session was not replaced"
    );
    assert!(!std::fs::read_to_string(&ctld.store)
        .unwrap()
        .contains("6.6.6.6"));
    // The real data plane's acks still count.
    let (ok, _, err) = ctld.ctl(&["group", "c", "g1", "--zone", "z"]);
    assert!(ok, "{err}");
    ctld.wait_acked("dp1", 2);

    // A second session of one id with a valid ack replaces the first, which
    // is closed: two sessions never both count. The real data plane comes
    // back and replaces it in turn.
    let mut second = RawSession::connect(ctld.control);
    second.send(&hello("dp1", "c", 2, "127.0.0.1:1", ""));
    second.send(&ack(2, 1));
    let got = second.until_closed();
    assert!(
        got.iter().any(|m| matches!(m, ToDataPlane::Heartbeat(_))),
        "it was served until replaced: {got:?}"
    );
    ctld.proc
        .wait_log("replaces the one from", Duration::from_secs(10));
    wait_for(
        "the real data plane to be back in session",
        Duration::from_secs(15),
        || {
            let d = view(&ctld, "dp1")?;
            (d["connected"] == true && d["address"] == before["address"]).then_some(())
        },
    );
    dp.wait_health(200, Duration::from_secs(10));
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
fn a_token_guards_the_api_and_the_control_port_and_is_never_shown() {
    const TOKEN: &str = "tok-3f9d2c7e1b";
    let dir = TempDir::new("token");
    let r = Redis::start();
    let good = token_file(dir.path(), "token", TOKEN);
    let wrong = token_file(dir.path(), "wrong", "not-the-token");
    let mut ctld = Ctld::start_with(
        dir.path(),
        "30s",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--token-file", good.to_str().unwrap()],
    );
    let api = ctld.api.to_string();
    // Raw API: none, wrong, right.
    let (status, body) = request(ctld.api, "GET", "/v1/clusters", &[], "");
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("\"error\"") && body.contains("Bearer"),
        "{body}"
    );
    let (status, _) = request(
        ctld.api,
        "GET",
        "/v1/clusters",
        &["Authorization: Bearer nope"],
        "",
    );
    assert_eq!(status, 401);
    let (status, _) = request(ctld.api, "GET", "/v1/nothing", &[], "");
    assert_eq!(status, 401, "unknown paths too");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (status, body) = request(ctld.api, "GET", "/v1/clusters", &[&bearer], "");
    assert_eq!((status, body.as_str()), (200, "[]"));
    assert_eq!(
        http_get(ctld.api, "/healthz").0,
        200,
        "health needs no token"
    );
    // keywayctl: without, with --token-file, with KEYWAY_TOKEN.
    let (ok, _, err) = keywayctl_env(&api, &["cluster", "list"], &[]);
    assert!(!ok && err.contains("authentication required"), "{err}");
    let (ok, _, err) = keywayctl_env(
        &api,
        &["--token-file", wrong.to_str().unwrap(), "cluster", "list"],
        &[],
    );
    assert!(!ok && err.contains("authentication required"), "{err}");
    let mut outputs = vec![err];
    let args = [
        "--token-file",
        good.to_str().unwrap(),
        "cluster",
        "create",
        "c",
        "--lease",
        "30s",
        "--group",
    ];
    let g1 = format!("g1={}", r.addr());
    let (ok, out, err) = keywayctl_env(&api, &[&args[..], &[g1.as_str()]].concat(), &[]);
    assert!(ok, "{err}");
    outputs.extend([out, err]);
    let (ok, out, err) = keywayctl_env(&api, &["cluster", "show", "c"], &[("KEYWAY_TOKEN", TOKEN)]);
    assert!(ok && out.contains("g1"), "{err}");
    outputs.extend([out, err]);
    // A data plane with the token serves; one with a wrong token stays
    // fenced, and ctld has no record of it.
    let dp = DataPlane::start_with(
        ctld.control,
        "c",
        "dp-good",
        &dir.path().join("good"),
        &["--control-token-file", good.to_str().unwrap()],
    );
    dp.wait_health(200, Duration::from_secs(10));
    let mut bad = DataPlane::start_with(
        ctld.control,
        "c",
        "dp-bad",
        &dir.path().join("bad"),
        &["--control-token-file", wrong.to_str().unwrap()],
    );
    bad.proc
        .wait_log("authentication failed", Duration::from_secs(15));
    ctld.proc.wait_log(
        "control session refused: authentication failed",
        Duration::from_secs(5),
    );
    assert_eq!(bad.admin_get("/healthz").0, 503);
    let listed = keywayctl_env(&api, &["--json", "dataplanes"], &[("KEYWAY_TOKEN", TOKEN)]);
    assert!(listed.0 && listed.1.contains("dp-good"), "{listed:?}");
    assert!(
        !listed.1.contains("dp-bad"),
        "no record of it: {}",
        listed.1
    );
    // An impostor without the token is told nothing more.
    let mut fake = RawSession::connect(ctld.control);
    fake.send(&hello("dp-good", "c", 1, "6.6.6.6:1", ""));
    fake.send(&ack(1, 1));
    let got = fake.until_closed();
    assert_eq!(
        got,
        vec![ToDataPlane::Refused("authentication failed".into())]
    );
    // The token appears nowhere: logs, listings, tables, stores.
    let (_, table) = dp.admin_get("/table");
    let mut everything = outputs;
    everything.extend(ctld.proc.logs());
    let mut dp = dp;
    everything.extend(dp.proc.logs());
    everything.extend(bad.proc.logs());
    everything.push(table);
    everything.push(listed.1);
    everything.push(std::fs::read_to_string(&ctld.store).unwrap());
    for state in ["good", "bad"] {
        for f in std::fs::read_dir(dir.path().join(state)).unwrap() {
            everything.push(
                String::from_utf8_lossy(&std::fs::read(f.unwrap().path()).unwrap()).into_owned(),
            );
        }
    }
    for text in &everything {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
    }
}

/// Runs keyway-ctld expecting it to refuse to start: (exit code, stderr).
/// Panics if it is still running after half a minute (it started).
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let mut child = keyway_testkit::die_with_parent(
        Command::new(env!("CARGO_BIN_EXE_keyway-ctld"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .spawn()
    .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_for(
        "keyway-ctld to refuse to start (it started)",
        Duration::from_secs(30),
        || child.try_wait().unwrap(),
    );
    (status.code(), reader.join().unwrap())
}

#[test]
fn without_a_token_ctld_listens_on_loopback_only() {
    let dir = TempDir::new("loopback");
    let store = format!("file:{}", dir.path().join("state").display());
    for (api, control, flag) in [
        ("0.0.0.0:0", "127.0.0.1:0", "--api"),
        ("127.0.0.1:0", "0.0.0.0:0", "--control"),
    ] {
        let (code, err) = refused_start(&["--store", &store, "--api", api, "--control", control]);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains(&format!(
                "refusing to listen on 0.0.0.0:0 ({flag}) without authentication"
            )) && err.contains("--token-file"),
            "{err}"
        );
    }
    // With a token it may.
    let token = token_file(dir.path(), "token", "some-token");
    let mut ctld = Ctld::start_with(
        dir.path(),
        "30s",
        "0.0.0.0:0",
        "0.0.0.0:0",
        &["--token-file", token.to_str().unwrap()],
    );
    assert!(ctld.proc.alive());
    // And on loopback without one, it says so.
    ctld.proc.stop();
    let mut ctld = Ctld::start(dir.path(), "30s");
    ctld.proc
        .wait_log("listens on loopback only", Duration::from_secs(5));
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
fn half_open_and_malformed_control_sessions_cost_little_and_are_refused() {
    let dir = TempDir::new("control-limits");
    let r = Redis::start();
    let ctld = Ctld::start(dir.path(), "3s");
    create(&ctld, "c", &[("g1", r.addr())], "3s", &[]);
    let dp = DataPlane::start(ctld.control, "c", "dp1", &dir.path().join("dp1"));
    dp.wait_health(200, Duration::from_secs(10));
    let watch = HealthWatch::start(&dp);

    // Connections that never say hello: at most 64 wait at once; more are
    // closed unanswered, and the waiting ones are closed in time.
    let silent: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(ctld.control).unwrap())
        .collect();
    let mut surplus = RawSession::connect(ctld.control);
    surplus.send(&hello("dp-surplus", "c", 0, "", ""));
    surplus.send(&ack(0, 1));
    assert!(
        surplus.until_closed().is_empty(),
        "over the cap: closed unanswered"
    );
    for mut s in silent {
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(60)),
            "no hello: closed"
        );
    }

    // A frame announced at 1 MB, holding a valid Hello with a 1 MB id:
    // closed at the length, nothing read, nothing recorded.
    let mut big = RawSession::connect(ctld.control);
    big.send(&hello(&"d".repeat(1 << 20), "c", 0, "", ""));
    assert!(big.until_closed().is_empty(), "closed without an answer");
    // Ids, clusters and addresses are checked.
    for (h, want) in [
        (hello(&"d".repeat(10_000), "c", 0, "", ""), "data plane id"),
        (hello("dp/../x", "c", 0, "", ""), "data plane id"),
        (hello("dp9", "..", 0, "", ""), "cluster name"),
        (hello("dp9", "c", 0, "a/b?c:1", ""), "address"),
    ] {
        let mut s = RawSession::connect(ctld.control);
        s.send(&h);
        s.send(&ack(1, 1));
        let got = s.until_closed();
        let why = refusal(&got).unwrap_or_else(|| panic!("no refusal: {got:?}"));
        assert!(why.contains(want), "{why}");
    }
    // The data plane in session never noticed; a new one connects.
    let dp2 = DataPlane::start(ctld.control, "c", "dp2", &dir.path().join("dp2"));
    dp2.wait_health(200, Duration::from_secs(10));
    let unhealthy = watch.finish();
    assert!(
        unhealthy.is_empty(),
        "{} answers were not 200, the first: {:?}",
        unhealthy.len(),
        unhealthy.first()
    );
    let ids: Vec<String> = ctld
        .ctl_json(&["dataplanes"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["dp1", "dp2"], "nothing else was recorded");
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
        replicas: vec![],
        zone: String::new(),
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
