//! What keyway-ctld's control port and its authentication must withstand,
//! end to end with real processes: impostors speaking the framing
//! themselves, sessions of one id, clients and data planes without the
//! token, half-open and malformed sessions. Each test asserts on behaviour,
//! never on how long something took. The API's side is in `hardening.rs`.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::checks::{
    ack, create_cluster as create, hello, refusal, refused_start, view, HealthWatch,
};
use common::{
    closed_by_peer, http_get, keywayctl_env, request, token_file, wait_for, Ctld, DataPlane,
    RawSession, Redis, TempDir,
};
use keyway_capnp::control::ToDataPlane;

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
