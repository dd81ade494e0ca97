//! keyway-ctld and a managed data plane over redis-servers that ask for a
//! password (`requirepass`): ctld's health checks and failover log in
//! (`--backend-password-file`), the data plane's connections too (`[backend]
//! password_file` in its `--config`), and a migration moves every key with
//! `MIGRATE … AUTH` to a target that asks for it, first the data plane's
//! moves on demand, then ctld's sweep.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{wait_for, Ctld, DataPlane, Redis, TempDir};
use keyway_testkit::resp;
use redis::Commands;

const PASS: &str = "backend-pw-3e9";

/// `AUTH` and a command on a new connection to `r`: both replies.
fn ask(r: &Redis, args: &[&str]) -> Vec<u8> {
    let mut s = TcpStream::connect(r.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = resp::request(&["AUTH", PASS]);
    req.extend_from_slice(&resp::request(args));
    resp::exchange(&mut s, &req, 2)
}

fn ctl_ok(ctld: &Ctld, args: &[&str]) -> String {
    let (ok, out, err) = ctld.ctl(args);
    assert!(ok, "keywayctl {args:?}: {err}");
    out
}

fn master_of(ctld: &Ctld, group: &str) -> String {
    let show = ctld.ctl_json(&["cluster", "show", "c"]);
    show["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == group)
        .unwrap()["master"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn failover_and_migration_log_in_to_backends_that_ask_for_a_password() {
    let dir = TempDir::new("ctl-backend-auth");
    let mut m1 = Redis::start();
    let () = redis::cmd("CONFIG")
        .arg(&["SET", "repl-diskless-sync-delay", "0"][..])
        .query(&mut m1.conn())
        .unwrap();
    let r1 = Redis::replica_of(&m1);
    let m2 = Redis::start();
    m1.wait_replica_synced(&r1);
    let () = redis::cmd("CONFIG")
        .arg(&["SET", "masterauth", PASS][..])
        .query(&mut r1.conn())
        .unwrap();
    for r in [&m1, &r1, &m2] {
        let () = redis::cmd("CONFIG")
            .arg(&["SET", "requirepass", PASS][..])
            .query(&mut r.conn())
            .unwrap();
    }
    let pass_file = dir.path().join("backend.pass");
    std::fs::write(&pass_file, format!("{PASS}\n")).unwrap();
    let pass_arg = pass_file.display().to_string();
    let mut ctld = Ctld::start_with(
        dir.path(),
        "10s",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--backend-password-file", &pass_arg],
    );
    common::checks::create_cluster(&ctld, "c", &[("g1", m1.addr())], "10s", &[]);
    ctl_ok(&ctld, &["group", "c", "g1", "--add-replica", &r1.addr()]);
    ctl_ok(
        &ctld,
        &[
            "cluster",
            "grow",
            "c",
            "--group",
            &format!("g2={}", m2.addr()),
        ],
    );
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
    let config = dir.path().join("keyway.toml");
    std::fs::write(
        &config,
        format!("[backend]\npassword_file = \"{pass_arg}\"\n"),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let dp = DataPlane::start_with(
        ctld.control,
        "c",
        "dp0",
        &dir.path().join("dp0"),
        &["--config", &config_arg],
    );
    dp.wait_health(200, Duration::from_secs(10));
    let mut con = dp.conn();
    for i in 0..200 {
        let () = con.set(format!("k{i}"), i).unwrap();
    }
    let offset: u64 = String::from_utf8_lossy(&ask(&m1, &["INFO", "replication"]))
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    wait_for(
        "the replica to have every write",
        Duration::from_secs(30),
        || {
            let info = String::from_utf8_lossy(&ask(&r1, &["INFO", "replication"])).to_string();
            info.lines()
                .find_map(|l| l.strip_prefix("slave_repl_offset:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&o| o >= offset)
        },
    );

    // Failover: ctld's checks see the master die (they log in to tell a
    // live one) and promote the replica, which it logs in to as well.
    m1.kill();
    wait_for("g1 to fail over", Duration::from_secs(30), || {
        (master_of(&ctld, "g1") == r1.addr()).then_some(())
    });
    wait_for(
        "the data plane to read from the new master",
        Duration::from_secs(30),
        || {
            dp.conn()
                .get::<_, Option<i64>>("k7")
                .ok()
                .flatten()
                .filter(|&v| v == 7)
        },
    );

    // Migration, paused: the data plane moves each key a command names
    // (MIGRATE … AUTH to a target that asks for the password) …
    ctl_ok(
        &ctld,
        &[
            "migrate", "c", "--slots", "0-16383", "--to", "g2", "--paused",
        ],
    );
    let version = wait_for("the migration to start", Duration::from_secs(30), || {
        let m = ctld.ctl_json(&["migrations", "c", "1"]);
        (m["state"]["phase"] == "moving").then(|| m["state"]["version"].as_u64().unwrap())
    });
    ctld.wait_acked("dp0", version);
    let mut con = dp.conn();
    for i in 0..100 {
        assert_eq!(con.get::<_, i64>(format!("k{i}")).unwrap(), i);
    }
    let dbsize = String::from_utf8_lossy(&ask(&m2, &["DBSIZE"])).to_string();
    assert!(
        dbsize.ends_with(":100\r\n"),
        "moved by the data plane: {dbsize}"
    );
    // … then ctld's sweep moves the rest.
    ctl_ok(&ctld, &["migration", "resume", "c", "1"]);
    wait_for("the migration to finish", Duration::from_secs(60), || {
        let m = ctld.ctl_json(&["migrations", "c", "1"]);
        (m["state"]["phase"] == "done").then_some(())
    });
    let dbsize = String::from_utf8_lossy(&ask(&m2, &["DBSIZE"])).to_string();
    assert!(dbsize.ends_with(":200\r\n"), "every key on g2: {dbsize}");
    let dbsize = String::from_utf8_lossy(&ask(&r1, &["DBSIZE"])).to_string();
    assert!(dbsize.ends_with(":0\r\n"), "none left on g1: {dbsize}");
    for i in 0..200 {
        assert_eq!(con.get::<_, i64>(format!("k{i}")).unwrap(), i);
    }
    let logs = ctld.proc.logs().join("\n");
    assert!(!logs.contains(PASS), "no password in ctld's logs");
}

/// A server whose default user is off, with an admin user `kwadmin`.
fn locked(r: &Redis, admin_pass: &str) {
    let mut s = TcpStream::connect(r.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let pass = format!(">{admin_pass}");
    let req = [
        resp::request(&[
            "ACL", "SETUSER", "kwadmin", "on", &pass, "~*", "&*", "+@all",
        ]),
        resp::request(&["ACL", "SETUSER", "default", "off"]),
    ]
    .concat();
    assert_eq!(resp::exchange(&mut s, &req, 2), b"+OK\r\n+OK\r\n");
}

/// `args` on a new connection to `r` logged in as `user`: every reply.
fn as_user(r: &Redis, user: &str, pass: &str, args: &[&str]) -> String {
    let mut s = TcpStream::connect(r.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = resp::request(&["AUTH", user, pass]);
    req.extend_from_slice(&resp::request(args));
    String::from_utf8_lossy(&resp::exchange(&mut s, &req, 2)).into_owned()
}

#[test]
fn keywayctl_provisions_the_restricted_user_on_every_server_of_a_group() {
    let dir = TempDir::new("ctl-provision");
    let (m1, r1, m2) = (Redis::start(), Redis::start(), Redis::start());
    for r in [&m1, &r1, &m2] {
        locked(r, "admin-pw-1");
    }
    let (client, admin) = (
        dir.path().join("client.pass"),
        dir.path().join("admin.pass"),
    );
    std::fs::write(&client, "client-pw-2\n").unwrap();
    std::fs::write(&admin, "admin-pw-1\n").unwrap();
    let (client, admin) = (client.display().to_string(), admin.display().to_string());
    // ctld reaches the masters too (a grow copies the cluster's functions).
    let ctld = Ctld::start_with(
        dir.path(),
        "10s",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--backend-username",
            "kwadmin",
            "--backend-password-file",
            &admin,
        ],
    );
    common::checks::create_cluster(&ctld, "c", &[("g1", m1.addr())], "10s", &[]);
    ctl_ok(&ctld, &["group", "c", "g1", "--add-replica", &r1.addr()]);
    ctl_ok(
        &ctld,
        &[
            "cluster",
            "grow",
            "c",
            "--group",
            &format!("g2={}", m2.addr()),
        ],
    );
    let provision = |group: &str, admin_file: &str| {
        ctld.ctl(&[
            "backend-users",
            "provision",
            "c",
            "--group",
            group,
            "--user",
            "kw",
            "--password-file",
            &client,
            "--admin-user",
            "kwadmin",
            "--admin-password-file",
            admin_file,
        ])
    };
    let (ok, out, err) = provision("g1", &admin);
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.matches("user \"kw\" provisioned").count(), 2, "{out}");
    for r in [&m1, &r1] {
        assert_eq!(
            as_user(r, "kw", "client-pw-2", &["GET", "k"]),
            "+OK\r\n$-1\r\n"
        );
        let denied = as_user(r, "kw", "client-pw-2", &["FLUSHALL"]);
        assert!(denied.contains("-NOPERM"), "{denied}");
    }
    assert!(
        as_user(&m2, "kw", "client-pw-2", &["PING"]).contains("WRONGPASS"),
        "--group g1 leaves g2 alone"
    );
    // A wrong admin password: a clear failure, no password shown.
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not-the-admin-pw").unwrap();
    let (ok, out, err) = provision("g2", &wrong.display().to_string());
    assert!(!ok, "{out}");
    assert!(
        out.contains("WRONGPASS") && err.contains("1 server(s) failed"),
        "{out}\n{err}"
    );
    for secret in ["not-the-admin-pw", "client-pw-2", "admin-pw-1"] {
        assert!(!out.contains(secret) && !err.contains(secret));
    }
    let (ok, out, err) = provision("g2", &admin);
    assert!(ok && out.contains("provisioned"), "{out}\n{err}");
}
