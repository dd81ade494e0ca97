//! Mutual TLS on the control session, end to end with real processes:
//! keyway-ctld started with `--tls-cert/--tls-key/--tls-ca`, managed keyway
//! data planes with `--control-tls-ca/--control-tls-cert/--control-tls-key`.
//! A data plane whose certificate is signed by another CA, or that presents
//! none, is refused by the handshake and never gets a table. Certificates
//! are made with `openssl` at test time.

mod common;

use std::time::Duration;

use common::checks::{create_cluster as create, view};
use common::{Ctld, DataPlane, Redis, TempDir};
use keyway_testkit::tls::Certs;

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn control_sessions_need_a_certificate_signed_by_ctlds_ca() {
    let dir = TempDir::new("control-tls");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let mut ctld = Ctld::start_with(
        dir.path(),
        "30s",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--tls-cert",
            path(&certs.server_cert),
            "--tls-key",
            path(&certs.server_key),
            "--tls-ca",
            path(&certs.ca),
        ],
    );
    // The API speaks HTTPS too.
    ctld.ca = Some(certs.ca.clone());
    create(&ctld, "c", &[("g1", r.addr())], "30s", &[]);

    // A data plane with a certificate from ctld's CA is served.
    let good = DataPlane::start_with(
        ctld.control,
        "c",
        "dp-good",
        &dir.path().join("good"),
        &[
            "--control-tls-ca",
            path(&certs.ca),
            "--control-tls-cert",
            path(&certs.client_cert),
            "--control-tls-key",
            path(&certs.client_key),
        ],
    );
    ctld.wait_acked("dp-good", 1);
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut good.conn())
        .unwrap();

    // One whose certificate another CA signed is refused by the handshake.
    let mut wrong = DataPlane::start_with(
        ctld.control,
        "c",
        "dp-wrong",
        &dir.path().join("wrong"),
        &[
            "--control-tls-ca",
            path(&certs.ca),
            "--control-tls-cert",
            path(&certs.other_cert),
            "--control-tls-key",
            path(&certs.other_key),
        ],
    );
    ctld.proc
        .wait_log("control session refused: TLS", Duration::from_secs(15));
    // One without a certificate is refused too.
    let mut none = DataPlane::start_with(
        ctld.control,
        "c",
        "dp-none",
        &dir.path().join("none"),
        &["--control-tls-ca", path(&certs.ca)],
    );
    // And a plain-TCP one cannot speak to a TLS control port.
    let mut plain = DataPlane::start(ctld.control, "c", "dp-plain", &dir.path().join("plain"));
    for dp in [&mut wrong, &mut none, &mut plain] {
        dp.proc
            .wait_log("control session ended", Duration::from_secs(15));
        assert_eq!(
            dp.admin_get("/healthz").0,
            503,
            "{} never got a table or a lease",
            dp.id
        );
    }
    for id in ["dp-wrong", "dp-none", "dp-plain"] {
        assert!(view(&ctld, id).is_none(), "{id} was never registered");
    }
    assert!(view(&ctld, "dp-good").is_some());

    // A data plane that does not trust ctld's certificate refuses it.
    let mut distrust = DataPlane::start_with(
        ctld.control,
        "c",
        "dp-distrust",
        &dir.path().join("distrust"),
        &[
            "--control-tls-ca",
            path(&certs.other_ca),
            "--control-tls-cert",
            path(&certs.client_cert),
            "--control-tls-key",
            path(&certs.client_key),
        ],
    );
    distrust
        .proc
        .wait_log("invalid peer certificate", Duration::from_secs(15));
    assert!(view(&ctld, "dp-distrust").is_none());
}

#[test]
fn keywayctl_speaks_https_and_verifies_the_server() {
    let dir = TempDir::new("api-tls");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let ctld = Ctld::start_with(
        dir.path(),
        "30s",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--tls-cert",
            path(&certs.server_cert),
            "--tls-key",
            path(&certs.server_key),
        ],
    );
    let api = ctld.api.to_string();
    let group = format!("g1={}", r.addr());
    let (ok, _, err) = common::keywayctl(
        &api,
        &[
            "--ca",
            path(&certs.ca),
            "cluster",
            "create",
            "c",
            "--group",
            &group,
        ],
    );
    assert!(ok, "keywayctl --ca with ctld's CA: {err}");
    let (ok, out, err) = common::keywayctl_env(
        &api,
        &["--json", "cluster", "list"],
        &[("KEYWAY_CA", path(&certs.ca))],
    );
    assert!(
        ok && out.contains("\"c\""),
        "KEYWAY_CA works too: {out} {err}"
    );

    let (ok, _, err) = common::keywayctl(&api, &["--ca", path(&certs.other_ca), "cluster", "list"]);
    assert!(!ok, "a server another CA signed is not trusted");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "the error says why: {err}"
    );
    let (ok, _, _) = common::keywayctl(&api, &["cluster", "list"]);
    assert!(!ok, "plain HTTP to a TLS API fails");
}

/// `SIGHUP` reads `--tls-cert/--tls-key/--tls-ca` again: a new API
/// connection gets the new certificate; files that do not load keep the
/// current one.
#[test]
fn sighup_reloads_ctlds_certificate_for_new_connections() {
    let dir = TempDir::new("api-tls-reload");
    let certs = Certs::generate(dir.path());
    let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    let put = |c: &std::path::Path, k: &std::path::Path| {
        std::fs::copy(c, &cert).unwrap();
        std::fs::copy(k, &key).unwrap();
    };
    put(&certs.server_cert, &certs.server_key);
    let mut ctld = Ctld::start_with(
        dir.path(),
        "30s",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--tls-cert", path(&cert), "--tls-key", path(&key)],
    );
    let api = ctld.api.to_string();
    let list =
        |ca: &std::path::Path| common::keywayctl(&api, &["--ca", path(ca), "cluster", "list"]);
    assert!(list(&certs.ca).0, "ctld's first certificate");

    put(&certs.other_cert, &certs.other_key);
    assert!(list(&certs.ca).0, "nothing changes before the signal");
    ctld.proc.signal(libc::SIGHUP);
    ctld.proc
        .wait_log("TLS certificates reloaded", Duration::from_secs(10));
    let (ok, _, err) = list(&certs.other_ca);
    assert!(ok, "a new connection gets the new certificate: {err}");
    assert!(
        !list(&certs.ca).0,
        "the old certificate is no longer presented"
    );

    // A key that does not match the certificate: the current pair stays.
    std::fs::copy(&certs.server_key, &key).unwrap();
    ctld.proc.signal(libc::SIGHUP);
    ctld.proc
        .wait_log("TLS reload rejected", Duration::from_secs(10));
    assert!(list(&certs.other_ca).0, "the certificate in use stays");
    assert!(ctld.proc.alive(), "ctld is still running");
}
