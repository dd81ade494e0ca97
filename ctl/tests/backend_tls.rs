//! keyway-ctld and managed data planes over groups that speak TLS, and
//! clusters with logins of their own:
//! - groups added with `keywayctl … --tls` on redis-servers' TLS ports:
//!   ctld's health checks see them up (`--backend-tls-*`), a grow copies
//!   functions over TLS, a migration between them moves every key
//!   (`tls-cluster yes`: the servers' own `MIGRATE` is TLS too), and a
//!   managed data plane with `[backend] tls_*` serves them — while one
//!   whose `tls_ca` does not trust the servers answers that the group is
//!   unavailable, never reaching them in plain text;
//! - a TLS master killed: ctld's checks see it fail and promote its TLS
//!   replica (`--tls-replication yes`) over TLS;
//! - two clusters on one ctld whose servers ask for different passwords
//!   (`--backend-credentials`): health checks and a migration work in both.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{wait_for, Ctld, DataPlane, Redis, TempDir};
use keyway_testkit::resp;
use keyway_testkit::tls::Certs;
use redis::Commands;
use serde_json::Value;

fn ctl_ok(ctld: &Ctld, args: &[&str]) -> String {
    let (ok, out, err) = ctld.ctl(args);
    assert!(ok, "keywayctl {args:?}: {err}");
    out
}

/// A redis-server serving plain on its `port` (the test's own look) and
/// TLS on the returned port, with `tls-cluster yes` so that its `MIGRATE`
/// speaks TLS to a TLS target.
fn tls_redis(certs: &Certs) -> (Redis, u16) {
    tls_redis_with(certs, &[])
}

/// As [`tls_redis`], with more arguments.
fn tls_redis_with(certs: &Certs, extra: &[&str]) -> (Redis, u16) {
    let tls_port = keyway_testkit::free_port();
    let tls_port_arg = tls_port.to_string();
    let mut args = vec![
        "--tls-port",
        &tls_port_arg,
        "--tls-cert-file",
        certs.server_cert.to_str().unwrap(),
        "--tls-key-file",
        certs.server_key.to_str().unwrap(),
        "--tls-ca-cert-file",
        certs.ca.to_str().unwrap(),
        "--tls-cluster",
        "yes",
    ];
    args.extend_from_slice(extra);
    let r = Redis::start_with(&args);
    (r, tls_port)
}

/// Waits until ctld's checks see every server of `group` of `cluster` up.
/// A ctld that reaches TLS groups with `certs`' CA and client certificate.
fn tls_ctld(dir: &Path, certs: &Certs) -> Ctld {
    let (ca, cert, key) = (
        certs.ca.display().to_string(),
        certs.client_cert.display().to_string(),
        certs.client_key.display().to_string(),
    );
    Ctld::start_with(
        dir,
        "10s",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--backend-tls-ca",
            &ca,
            "--backend-tls-cert",
            &cert,
            "--backend-tls-key",
            &key,
        ],
    )
}

fn wait_up(ctld: &Ctld, cluster: &str, group: &str) {
    wait_for(
        &format!("ctld to see {cluster}/{group} up"),
        Duration::from_secs(30),
        || {
            let show = ctld.ctl_json(&["cluster", "show", cluster]);
            let h = show["health"]
                .as_array()?
                .iter()
                .find(|h| h["group"] == group)?
                .clone();
            let servers = h["servers"].as_array()?;
            (!servers.is_empty() && servers.iter().all(|s| s["health"] == "up")).then_some(())
        },
    );
}

fn dbsize(con: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(con).unwrap()
}

/// Migrates every slot of `cluster` to `to` and waits until it is done.
fn migrate_all(ctld: &Ctld, cluster: &str, to: &str, id: u64) {
    ctl_ok(
        ctld,
        &["migrate", cluster, "--slots", "0-16383", "--to", to],
    );
    wait_for(
        &format!("migration {cluster}/{id} to finish"),
        Duration::from_secs(60),
        || {
            let m: Value = ctld.ctl_json(&["migrations", cluster, &id.to_string()]);
            assert_ne!(m["state"]["phase"], "failed", "{m}");
            (m["state"]["phase"] == "done").then_some(())
        },
    );
}

/// `[backend]` of a data plane trusting `ca` with `certs`' client
/// certificate.
fn backend_tls_config(dir: &Path, name: &str, ca: &Path, certs: &Certs) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[backend]\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            ca.display(),
            certs.client_cert.display(),
            certs.client_key.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn tls_groups_are_checked_migrated_and_served_over_tls() {
    let dir = TempDir::new("ctl-backend-tls");
    let certs = Certs::generate(dir.path());
    let ((m1, p1), (m2, p2)) = (tls_redis(&certs), tls_redis(&certs));
    let (a1, a2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    // A library on g1, for the grow to copy to g2 over TLS.
    let lib = "#!lua name=kwlib\nredis.register_function('kwping', function() return 'pong' end)";
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query(&mut m1.conn())
        .unwrap();
    let ctld = tls_ctld(dir.path(), &certs);
    common::checks::create_cluster(&ctld, "c", &[("g1", a1.clone())], "10s", &["--tls"]);
    ctl_ok(
        &ctld,
        &[
            "cluster",
            "grow",
            "c",
            "--group",
            &format!("g2={a2}"),
            "--tls",
        ],
    );
    let show = ctld.ctl_json(&["cluster", "show", "c"]);
    for g in show["groups"].as_array().unwrap() {
        assert_eq!(g["tls"], true, "{g}");
    }
    let copied: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query(&mut m2.conn())
        .unwrap();
    assert_eq!(copied.len(), 1, "the grow copied g1's library over TLS");
    ctl_ok(&ctld, &["cluster", "set", "c", "--check-interval", "200ms"]);
    wait_up(&ctld, "c", "g1");
    wait_up(&ctld, "c", "g2");

    // A data plane with this host's CA and client certificate serves the
    // TLS groups; one whose CA does not trust them says why.
    let good = backend_tls_config(dir.path(), "good.toml", &certs.ca, &certs);
    let bad = backend_tls_config(dir.path(), "bad.toml", &certs.other_ca, &certs);
    let dp = DataPlane::start_with(
        ctld.control,
        "c",
        "dp0",
        &dir.path().join("dp0"),
        &["--config", &good],
    );
    let dp_bad = DataPlane::start_with(
        ctld.control,
        "c",
        "dp1",
        &dir.path().join("dp1"),
        &["--config", &bad],
    );
    dp.wait_health(200, Duration::from_secs(20));
    let mut con = dp.conn();
    for i in 0..200 {
        let () = con.set(format!("k{i}"), i).unwrap();
    }
    assert_eq!(con.get::<_, i64>("k7").unwrap(), 7);
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut m1.conn())
        .unwrap();
    assert!(
        list.lines()
            .any(|l| l.contains(&format!("laddr=127.0.0.1:{p1}"))),
        "keyway and ctld are connected to the TLS port: {list}"
    );
    let refused = wait_for(
        "the untrusting data plane to have the table",
        Duration::from_secs(20),
        || match dp_bad.conn().get::<_, Option<i64>>("k7") {
            Err(e) if e.to_string().contains("unavailable") => Some(e.to_string()),
            _ => None,
        },
    );
    assert!(
        refused.contains("backend g1 unavailable: TLS:")
            || refused.contains("backend g2 unavailable: TLS:"),
        "{refused}"
    );
    let mut s = TcpStream::connect(dp_bad.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let reply = resp::exchange(&mut s, &resp::request(&["SET", "k7", "plain?"]), 1);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("-ERR backend g") && reply.contains(" unavailable: TLS: "),
        "{reply}"
    );
    assert_eq!(
        con.get::<_, i64>("k7").unwrap(),
        7,
        "never written in plain"
    );
    drop(dp_bad);

    // Every key moves from g1 to g2 (ctld's sweep over TLS, the servers'
    // MIGRATE over TLS).
    let (mut c1, mut c2) = (m1.conn(), m2.conn());
    assert_eq!(dbsize(&mut c1), 200, "a grow adds an empty group");
    migrate_all(&ctld, "c", "g2", 1);
    assert_eq!(dbsize(&mut c2), 200, "every key on g2");
    assert_eq!(dbsize(&mut c1), 0, "none left on g1");
    for i in 0..200 {
        assert_eq!(con.get::<_, i64>(format!("k{i}")).unwrap(), i);
    }
}

#[test]
fn a_tls_master_fails_over_to_its_tls_replica() {
    let dir = TempDir::new("ctl-backend-tls-failover");
    let certs = Certs::generate(dir.path());
    let (mut m1, p1) = tls_redis(&certs);
    let p1_arg = p1.to_string();
    let (r1, rp) = tls_redis_with(
        &certs,
        &[
            "--tls-replication",
            "yes",
            "--replicaof",
            "127.0.0.1",
            &p1_arg,
        ],
    );
    let (a1, ar) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{rp}"));
    let ctld = tls_ctld(dir.path(), &certs);
    common::checks::create_cluster(&ctld, "c", &[("g1", a1)], "10s", &["--tls"]);
    ctl_ok(&ctld, &["group", "c", "g1", "--add-replica", &ar]);
    ctl_ok(
        &ctld,
        &[
            "cluster",
            "set",
            "c",
            "--check-interval",
            "200ms",
            "--down-after",
            "1s",
        ],
    );
    let mut c1 = m1.conn();
    for i in 0..50 {
        let () = c1.set(format!("k{i}"), i).unwrap();
    }
    wait_for(
        "the TLS replica to have every key",
        Duration::from_secs(30),
        || (dbsize(&mut r1.conn()) == 50).then_some(()),
    );
    wait_up(&ctld, "c", "g1");
    m1.kill();
    wait_for("g1 to fail over", Duration::from_secs(30), || {
        let show = ctld.ctl_json(&["cluster", "show", "c"]);
        (show["groups"][0]["master"] == ar.as_str()).then_some(())
    });
    let role: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut r1.conn())
        .unwrap();
    assert!(
        role.contains("role:master"),
        "promoted over TLS (REPLICAOF NO ONE): {role}"
    );
}

/// A redis-server asking for `pass` (`requirepass`).
fn locked_redis(pass: &str) -> Redis {
    let r = Redis::start();
    let () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", pass][..])
        .query(&mut r.conn())
        .unwrap();
    r
}

/// A connection to `r` logged in with `pass`.
fn login(r: &Redis, pass: &str) -> redis::Connection {
    let mut con = redis::Client::open(format!("redis://:{pass}@{}/", r.addr()))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let () = redis::cmd("PING").query(&mut con).unwrap();
    con
}

#[test]
fn two_clusters_with_their_own_backend_passwords() {
    const PASS_A: &str = "cluster-a-pw-71c";
    const PASS_B: &str = "cluster-b-pw-d04";
    let dir = TempDir::new("ctl-backend-creds");
    let (a1, a2) = (locked_redis(PASS_A), locked_redis(PASS_A));
    let (b1, b2) = (locked_redis(PASS_B), locked_redis(PASS_B));
    // Cluster a has its own login, at first a wrong one; b uses the
    // default.
    let (a_pass, b_pass, creds) = (
        dir.path().join("a.pass"),
        dir.path().join("b.pass"),
        dir.path().join("creds.toml"),
    );
    std::fs::write(&a_pass, "not-the-password\n").unwrap();
    std::fs::write(&b_pass, format!("{PASS_B}\n")).unwrap();
    std::fs::write(
        &creds,
        format!("[cluster.a]\npassword_file = \"{}\"\n", a_pass.display()),
    )
    .unwrap();
    let (b_arg, creds_arg) = (b_pass.display().to_string(), creds.display().to_string());
    let mut ctld = Ctld::start_with(
        dir.path(),
        "10s",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--backend-password-file",
            &b_arg,
            "--backend-credentials",
            &creds_arg,
        ],
    );
    for (name, m) in [("a", &a1), ("b", &b1)] {
        common::checks::create_cluster(&ctld, name, &[("g1", m.addr())], "10s", &[]);
        ctl_ok(
            &ctld,
            &["cluster", "set", name, "--check-interval", "200ms"],
        );
    }
    wait_up(&ctld, "b", "g1");
    let refused = wait_for("a's wrong login to show", Duration::from_secs(30), || {
        let show = ctld.ctl_json(&["cluster", "show", "a"]);
        let e = show["health"][0]["servers"][0]["last_error"]
            .as_str()?
            .to_string();
        e.contains("WRONGPASS").then_some(e)
    });
    assert!(!refused.contains("not-the-password"), "{refused}");

    // The right password, read again on SIGHUP.
    std::fs::write(&a_pass, format!("{PASS_A}\n")).unwrap();
    ctld.proc.signal(libc::SIGHUP);
    wait_up(&ctld, "a", "g1");

    for (name, m1, m2, pass) in [("a", &a1, &a2, PASS_A), ("b", &b1, &b2, PASS_B)] {
        // The grow copies functions: ctld logs in to both masters.
        ctl_ok(
            &ctld,
            &[
                "cluster",
                "grow",
                name,
                "--group",
                &format!("g2={}", m2.addr()),
            ],
        );
        let mut c1 = login(m1, pass);
        for i in 0..100 {
            let () = c1.set(format!("{name}{i}"), i).unwrap();
        }
        migrate_all(&ctld, name, "g2", 1);
        wait_up(&ctld, name, "g2");
        assert_eq!(dbsize(&mut login(m2, pass)), 100, "{name}: every key on g2");
        assert_eq!(dbsize(&mut c1), 0, "{name}: none left on g1");
    }
    let logs = ctld.proc.logs().join("\n");
    assert!(logs.contains("backend logins of"), "the reload is logged");
    for secret in [PASS_A, PASS_B, "not-the-password"] {
        assert!(!logs.contains(secret), "no password in ctld's logs");
    }
}
