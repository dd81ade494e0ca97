//! keyway-ctld's `GET /metrics` and structured events on real processes:
//! a ctld, one keyway data plane and Redis groups (g1 with a replica).
//!
//! - `promtool check metrics` passes on a real ctld's text after a
//!   migration and a switchover, and the counters moved by what was done:
//!   API requests by route pattern and status, the keys moved equal the
//!   keys the moved slots held, the slots moved, one failover done;
//! - the events of a change, a migration and a failover read through
//!   `keywayctl events`, with who made each;
//! - on etcd, the standby says `keyway_ctld_leader 0` (and has no state
//!   gauges) and the active ctld's store writes are labelled `etcd`;
//! - `/metrics` needs the token when ctld has one;
//! - `keywayctl top --json` shows a data plane whose admin endpoint does
//!   not answer as unreachable, promptly;
//! - `keywayctl top --json` over a real keyway shows its requests/s,
//!   latency and connections. That one needs the data plane's `/metrics`
//!   and its Hello naming its admin endpoint (the data plane's side of
//!   issue 15).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_get, wait_for, Ctld, DataPlane, Redis, TempDir};
use redis::Commands;
use serde_json::Value;

fn ctl_ok(ctld: &Ctld, args: &[&str]) -> String {
    let (ok, out, err) = ctld.ctl(args);
    assert!(ok, "keywayctl {args:?}: {err}");
    out
}

/// The metrics text of `ctld`.
fn scrape(ctld: &Ctld) -> String {
    let (status, body) = http_get(ctld.api, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    body
}

/// Samples by `name{labels}` as written.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("name and value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

fn value(text: &str, key: &str) -> f64 {
    samples(text).get(key).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on `text`.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian prometheus, scripts/deps.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn version(ctld: &Ctld) -> u64 {
    common::checks::version(ctld, "c")
}

#[test]
fn ctld_metrics_pass_promtool_and_count_what_was_done() {
    let dir = TempDir::new("ctld-metrics");
    let ctld = Ctld::start(dir.path(), "10s");
    let m1 = Redis::start();
    let r1 = Redis::replica_of(&m1);
    let m2 = Redis::start();
    common::checks::create_cluster(
        &ctld,
        "c",
        &[("g1", m1.addr()), ("g2", m2.addr())],
        "10s",
        &[],
    );
    ctl_ok(&ctld, &["group", "c", "g1", "--add-replica", &r1.addr()]);
    ctl_ok(&ctld, &["cluster", "set", "c", "--check-interval", "200ms"]);
    let dp = DataPlane::start(ctld.control, "c", "dp1", &dir.path().join("dp1"));
    let v = version(&ctld);
    ctld.wait_acked("dp1", v);

    let before = scrape(&ctld);
    promtool_check(&before);
    assert_eq!(value(&before, "keyway_ctld_leader"), 1.0);
    assert_eq!(
        value(&before, "keyway_ctld_dataplanes_connected{cluster=\"c\"}"),
        1.0
    );
    assert_eq!(
        value(
            &before,
            "keyway_ctld_dataplane_acked_version{cluster=\"c\",dataplane=\"dp1\"}"
        ),
        v as f64
    );
    assert_eq!(
        value(&before, "keyway_ctld_cluster_version{cluster=\"c\"}"),
        v as f64
    );
    let lease = value(
        &before,
        "keyway_ctld_dataplane_lease_remaining_seconds{cluster=\"c\",dataplane=\"dp1\"}",
    );
    assert!(lease > 0.0 && lease <= 10.0, "lease remaining {lease}");

    // API requests: counted by route pattern and status, exactly.
    let show = "keyway_ctld_api_requests_total{route=\"/v1/clusters/{name}\",status=\"200\"}";
    let missing = "keyway_ctld_api_requests_total{route=\"/v1/clusters/{name}\",status=\"404\"}";
    let unmatched = "keyway_ctld_api_requests_total{route=\"unmatched\",status=\"404\"}";
    let (s0, m0, u0) = (
        value(&before, show),
        value(&before, missing),
        value(&before, unmatched),
    );
    for _ in 0..3 {
        assert_eq!(http_get(ctld.api, "/v1/clusters/c").0, 200);
    }
    assert_eq!(http_get(ctld.api, "/v1/clusters/nope").0, 404);
    assert_eq!(http_get(ctld.api, "/v1/no/such/thing").0, 404);
    let after = scrape(&ctld);
    assert_eq!(value(&after, show) - s0, 3.0, "three shows");
    assert_eq!(value(&after, missing) - m0, 1.0, "one missing cluster");
    assert_eq!(value(&after, unmatched) - u0, 1.0, "one unknown path");
    assert!(
        !after.contains("/v1/clusters/c\"") && !after.contains("nope"),
        "raw paths never become labels"
    );

    // A migration of slots 0-1023 from g1 to g2: keys moved = the keys
    // those slots held.
    let mut con = dp.conn();
    for i in 0..300 {
        let () = con.set(format!("key:{i}"), i).unwrap();
    }
    let on_g2_before: u64 = redis::cmd("DBSIZE").query(&mut m2.conn()).unwrap();
    ctl_ok(
        &ctld,
        &["migrate", "c", "--slots", "0-1023", "--to", "g2", "--wait"],
    );
    let on_g2_after: u64 = redis::cmd("DBSIZE").query(&mut m2.conn()).unwrap();
    let moved = on_g2_after - on_g2_before;
    assert!(moved > 0, "some of 300 keys are in slots 0-1023");
    let after = scrape(&ctld);
    assert_eq!(
        value(
            &after,
            "keyway_ctld_migration_keys_moved_total{cluster=\"c\"}"
        ),
        moved as f64,
        "keys moved = the keys the slots held"
    );
    assert_eq!(
        value(
            &after,
            "keyway_ctld_migration_slots_done_total{cluster=\"c\"}"
        ),
        1024.0
    );
    assert_eq!(
        value(&after, "keyway_ctld_migrations_active{cluster=\"c\"}"),
        0.0
    );
    assert_eq!(
        value(
            &after,
            "keyway_ctld_api_requests_total{route=\"/v1/clusters/{name}/migrations\",status=\"201\"}"
        ),
        1.0,
        "the migration's start"
    );

    // A switchover of g1.
    m1.wait_replica_synced(&r1);
    let out = ctl_ok(&ctld, &["failover", "c", "--group", "g1", "--wait"]);
    assert!(out.contains("done"), "{out}");
    let after = scrape(&ctld);
    assert_eq!(
        value(
            &after,
            "keyway_ctld_failovers_total{cluster=\"c\",group=\"g1\",result=\"done\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&after, "keyway_ctld_failover_duration_seconds_count"),
        1.0
    );
    assert!(
        value(
            &after,
            "keyway_ctld_store_write_duration_seconds_count{store=\"file\"}"
        ) >= 5.0
    );
    promtool_check(&after);

    // The events tell the story, with who did what.
    let events = ctld.ctl_json(&["events", "c"]);
    let events = events.as_array().expect("a list");
    let find = |kind: &str, f: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|e| e["kind"] == kind && f(e))
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} event like that in {events:#?}"))
    };
    let created = find("created", &|_| true);
    assert_eq!(created["who"], "api");
    assert_eq!(created["route"], "POST /v1/clusters");
    assert!(created["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let migrate = find("change", &|e| e["what"]["change"]["kind"] == "migrate");
    assert_eq!(migrate["route"], "POST /v1/clusters/{name}/migrations");
    assert_eq!(migrate["what"]["change"]["slots"], "0-1023");
    assert!(migrate["what"]["version"].as_u64().unwrap() > 1);
    let advanced = find("change", &|e| {
        e["what"]["change"]["kind"] == "advance-migrations"
    });
    assert_eq!(advanced["who"], "ctld", "the orchestrator's own change");
    let finished = find("migration", &|e| e["what"]["step"] == "finished");
    assert_eq!(finished["what"]["keys_moved"], moved);
    assert_eq!(finished["what"]["slots"], 1024);
    let begin = find("change", &|e| {
        e["what"]["change"]["kind"] == "begin-failover"
    });
    assert_eq!(
        begin["who"], "api",
        "the switchover was asked through the API"
    );
    assert_eq!(
        begin["route"],
        "POST /v1/clusters/{name}/groups/{group}/failover"
    );
    for step in ["held", "caught-up", "promoted", "done"] {
        let e = find("failover", &|e| e["what"]["step"] == step);
        assert_eq!(e["who"], "ctld");
        assert_eq!(e["what"]["group"], "g1");
    }
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );
    let last = *seqs.last().unwrap();
    let since = ctld.ctl_json(&["events", "c", "--since", &(last - 1).to_string()]);
    assert_eq!(since.as_array().unwrap().len(), 1, "--since is exclusive");
    let table = ctl_ok(&ctld, &["events", "c"]);
    assert!(
        table.starts_with("SEQ") && table.contains("begin-failover"),
        "{table}"
    );
    let (ok, _, err) = ctld.ctl(&["events", "nope"]);
    assert!(!ok && err.contains("no cluster"), "{err}");
}

#[test]
fn the_metrics_need_the_token_when_ctld_has_one() {
    let dir = TempDir::new("ctld-metrics-token");
    let token = common::token_file(dir.path(), "token", "metrics-secret-token-0123456789");
    let ctld = Ctld::start_with(
        dir.path(),
        "10s",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--token-file", token.to_str().unwrap()],
    );
    let (status, _) = http_get(ctld.api, "/metrics");
    assert_eq!(status, 401, "no token, no metrics");
    let (status, body) = common::request(
        ctld.api,
        "GET",
        "/metrics",
        &["Authorization: Bearer metrics-secret-token-0123456789"],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("keyway_ctld_api_requests_total{route=\"/metrics\",status=\"401\"} 1"),
        "{body}"
    );
    promtool_check(&body);
}

#[test]
fn top_shows_a_data_plane_whose_admin_endpoint_does_not_answer_as_unreachable() {
    let dir = TempDir::new("ctld-top-unreachable");
    let ctld = Ctld::start(dir.path(), "10s");
    let m1 = Redis::start();
    common::checks::create_cluster(&ctld, "c", &[("g1", m1.addr())], "10s", &[]);
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = dead.local_addr().unwrap().to_string();
    drop(dead);
    let mut s = common::RawSession::connect(ctld.control);
    let keyway_capnp::control::FromDataPlane::Hello(mut h) =
        common::checks::hello("dp-dead", "c", version(&ctld), "127.0.0.1:6379", "")
    else {
        unreachable!()
    };
    h.admin = admin.clone();
    s.send(&keyway_capnp::control::FromDataPlane::Hello(h));
    // Registered at its first valid ack.
    s.send(&common::checks::ack(version(&ctld), 1));
    wait_for(
        "the data plane to be listed",
        Duration::from_secs(10),
        || {
            let d = ctld.ctl_json(&["dataplanes", "c"]);
            (d[0]["admin"] == admin.as_str()).then_some(())
        },
    );
    let listed = ctl_ok(&ctld, &["dataplanes", "c"]);
    assert!(listed.contains(&format!("http://{admin}")), "{listed}");
    let t = Instant::now();
    let top = ctld.ctl_json(&["top", "c", "--interval", "200ms"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "top took {:?}",
        t.elapsed()
    );
    let p = &top["dataplanes"][0];
    assert_eq!(p["id"], "dp-dead");
    assert_eq!(p["reachable"], false);
    assert_eq!(p["url"], format!("http://{admin}/metrics"));
    assert!(p["error"].as_str().is_some_and(|e| !e.is_empty()), "{top}");
}

/// Needs the data plane's `/metrics` and admin endpoint in its Hello.
#[test]
fn top_json_shows_a_real_data_planes_rates_latency_and_connections() {
    let dir = TempDir::new("ctld-top");
    let ctld = Ctld::start(dir.path(), "10s");
    let m1 = Redis::start();
    common::checks::create_cluster(&ctld, "c", &[("g1", m1.addr())], "10s", &[]);
    let dp = DataPlane::start(ctld.control, "c", "dp1", &dir.path().join("dp1"));
    ctld.wait_acked("dp1", version(&ctld));
    let listed = ctld.ctl_json(&["dataplanes", "c"]);
    assert_eq!(
        listed[0]["admin"],
        dp.admin.to_string(),
        "the data plane's Hello names its admin endpoint"
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, addr) = (stop.clone(), dp.addr);
    let load = std::thread::spawn(move || {
        let mut con = redis::Client::open(format!("redis://{addr}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let mut n = 0u64;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let () = con.set("k", n).unwrap();
            n += 1;
        }
        n
    });
    let top = ctld.ctl_json(&["top", "c"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.join().unwrap();
    assert!(sent > 0);
    let p = &top["dataplanes"][0];
    assert_eq!(p["reachable"], true, "{top}");
    assert!(p["requests_per_s"].as_f64().unwrap() > 0.0, "{top}");
    assert!(p["p99_ms"].as_f64().is_some_and(|v| v > 0.0), "{top}");
    assert!(p["client_connections"].as_f64().unwrap() >= 1.0, "{top}");
    assert_eq!(top["groups"][0]["group"], "g1", "{top}");
    assert!(
        top["groups"][0]["requests_per_s"].as_f64().unwrap() > 0.0,
        "{top}"
    );
}

#[test]
fn on_etcd_the_standby_says_so_and_store_writes_are_etcd_writes() {
    let etcd = common::Etcd::start();
    let a = Ctld::start_on_etcd(&etcd.url, "/metrics-test", &["--election-ttl", "2s"]);
    let b = Ctld::start_on_etcd(&etcd.url, "/metrics-test", &["--election-ttl", "2s"]);
    let (active, standby) = wait_for("one ctld to be active", Duration::from_secs(30), || match (
        a.is_active(),
        b.is_active(),
    ) {
        (true, false) => Some((&a, &b)),
        (false, true) => Some((&b, &a)),
        _ => None,
    });
    let m1 = Redis::start();
    common::checks::create_cluster(active, "c", &[("g1", m1.addr())], "10s", &[]);
    let text = scrape(active);
    promtool_check(&text);
    assert_eq!(value(&text, "keyway_ctld_leader"), 1.0);
    assert!(
        value(
            &text,
            "keyway_ctld_store_write_duration_seconds_count{store=\"etcd\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "keyway_ctld_cluster_version{cluster=\"c\"}"),
        1.0
    );
    let text = scrape(standby);
    promtool_check(&text);
    assert_eq!(value(&text, "keyway_ctld_leader"), 0.0);
    assert!(
        !text.contains("keyway_ctld_cluster_version{"),
        "a standby has no state gauges: {text}"
    );
}
