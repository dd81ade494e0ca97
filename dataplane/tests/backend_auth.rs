//! Backend authentication against real redis-server processes: keyway
//! logging in as a restricted ACL user (provisioned by `keyway
//! --provision-backend-users`) and as an admin user around its maintenance
//! commands; scripts that try what keyway refuses getting Redis's own
//! `NOPERM` error with the data intact; a wrong password answered with a
//! clear error, keyway alive, and fixed by a reload; `SCRIPT KILL` freeing
//! a group busy with an endless script; no password in logs, `/table` or
//! `INFO`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{http_get, wait_for, Keyway, Redis};
use keyway_testkit::resp;

const CLIENT_PASS: &str = "client-Secret-9f2";
const ADMIN_PASS: &str = "admin-Secret-7c1";

/// A request and its first reply, on a raw connection.
fn ask(s: &mut TcpStream, args: &[&str]) -> Vec<u8> {
    resp::exchange(s, &resp::request(args), 1)
}

/// A raw connection to `r` logged in as `user`.
fn login(r: &Redis, user: &str, pass: &str) -> TcpStream {
    let mut s = TcpStream::connect(r.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        ask(&mut s, &["AUTH", user, pass]),
        b"+OK\r\n",
        "AUTH {user}"
    );
    s
}

/// A server whose default user is off, with an admin user `kwadmin`.
fn locked_redis() -> Redis {
    locked_redis_with(&[])
}

/// [`locked_redis`] started with `extra` arguments.
fn locked_redis_with(extra: &[&str]) -> Redis {
    let r = Redis::start_with(extra);
    let mut s = TcpStream::connect(r.addr()).unwrap();
    let pass = format!(">{ADMIN_PASS}");
    let admin = [
        "ACL", "SETUSER", "kwadmin", "on", &pass, "~*", "&*", "+@all",
    ];
    assert_eq!(ask(&mut s, &admin), b"+OK\r\n");
    assert_eq!(
        ask(&mut s, &["ACL", "SETUSER", "default", "off"]),
        b"+OK\r\n"
    );
    r
}

/// A server asking for `pass` (`requirepass`, set once it is up: the test
/// kit's readiness check does not log in).
fn requirepass(extra: &[&str], pass: &str) -> Redis {
    let r = Redis::start_with(extra);
    let mut s = TcpStream::connect(r.addr()).unwrap();
    assert_eq!(
        ask(&mut s, &["CONFIG", "SET", "requirepass", pass]),
        b"+OK\r\n"
    );
    r
}

/// `[backend]` credentials read from files in `dir`.
fn credentials(dir: &std::path::Path, admin: bool) -> String {
    let client = dir.join("client.pass");
    std::fs::write(&client, format!("{CLIENT_PASS}\n")).unwrap();
    let mut s = format!(
        "[backend]\nusername = \"kw\"\npassword_file = \"{}\"\n",
        client.display()
    );
    if admin {
        let file = dir.join("admin.pass");
        std::fs::write(&file, ADMIN_PASS).unwrap();
        s.push_str(&format!(
            "admin_username = \"kwadmin\"\nadmin_password_file = \"{}\"\n",
            file.display()
        ));
    }
    s
}

fn groups(redis: &[&Redis]) -> String {
    common::groups(redis)
}

/// Provisions the restricted user `kw` on `servers` with `keyway
/// --provision-backend-users` from `body`.
fn provision(dir: &std::path::Path, body: &str, servers: usize) {
    let config = dir.join("keyway.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\n{body}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .arg("--config")
        .arg(&config)
        .arg("--provision-backend-users")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report.matches("user \"kw\" provisioned").count(),
        servers,
        "{report}"
    );
}

/// Redis's CRC-64 (Jones, reflected, as `DUMP` payloads end with).
fn crc64(data: &[u8]) -> u64 {
    let mut crc = 0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x95ac_9329_ac4b_c9b5
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[test]
fn restore_payloads_of_the_restricted_user_are_sanitized() {
    let r = locked_redis_with(&["--sanitize-dump-payload", "clients"]);
    let dir = keyway_testkit::TempDir::new("backend-sanitize");
    let body = format!("{}{}", credentials(dir.path(), true), groups(&[&r]));
    provision(dir.path(), &body, 1);
    let mut admin = login(&r, "kwadmin", ADMIN_PASS);
    let flags = ask(&mut admin, &["ACL", "GETUSER", "kw"]);
    assert!(
        resp::escape(&flags).contains("sanitize-payload"),
        "the restricted user sanitizes payloads: {}",
        resp::escape(&flags)
    );
    // A hash's DUMP whose first listpack entry has a wrong back-length:
    // the CRC is right, so only a deep check finds it.
    assert_eq!(
        ask(&mut admin, &["HSET", "h", "a", "1", "b", "2"]),
        b":2\r\n"
    );
    let dump = ask(&mut admin, &["DUMP", "h"]);
    let text_end = dump.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut payload = dump[text_end..dump.len() - 2].to_vec();
    let body_len = payload.len() - 8;
    let at = payload
        .windows(3)
        .position(|w| w == b"\x81a\x02")
        .expect("entry a in the listpack");
    payload[at + 2] = 0x05;
    let crc = crc64(&payload[..body_len]).to_le_bytes();
    payload[body_len..].copy_from_slice(&crc);
    let restore = |s: &mut TcpStream, key: &str| {
        let args: [&[u8]; 4] = [b"RESTORE", key.as_bytes(), b"0", &payload];
        resp::exchange(s, &resp::request(&args), 1)
    };
    let mut kw = Keyway::start(&body);
    let mut c = kw.tcp();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut direct = login(&r, "kw", CLIENT_PASS);
    let expected = restore(&mut direct, "bad:direct");
    assert_eq!(
        resp::escape(&expected),
        "-ERR Bad data format\\r\\n",
        "the server refuses it for the restricted user"
    );
    let through = restore(&mut c, "bad:keyway");
    assert_eq!(
        resp::escape(&through),
        resp::escape(&expected),
        "through keyway as directly"
    );
    assert_eq!(ask(&mut c, &["EXISTS", "bad:keyway"]), b":0\r\n");
    // An intact payload is restored.
    let good = dump[text_end..dump.len() - 2].to_vec();
    let args: [&[u8]; 4] = [b"RESTORE", b"good", b"0", &good];
    assert_eq!(resp::exchange(&mut c, &resp::request(&args), 1), b"+OK\r\n");
    assert!(kw.alive());
}

#[test]
fn scripts_through_keyway_cannot_run_what_keyway_refuses() {
    let (r1, r2) = (locked_redis(), locked_redis());
    let dir = keyway_testkit::TempDir::new("backend-auth");
    let body = format!(
        "admin = \"127.0.0.1:0\"\n{}{}",
        credentials(dir.path(), true),
        groups(&[&r1, &r2])
    );
    // Provision the restricted user on both servers from the same config.
    let config = dir.path().join("keyway.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\n{body}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .arg("--config")
        .arg(&config)
        .arg("--provision-backend-users")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report.matches("user \"kw\" provisioned").count(),
        2,
        "{report}"
    );
    assert!(!report.contains(CLIENT_PASS) && !report.contains(ADMIN_PASS));

    let mut kw = Keyway::start(&body);
    let admin = kw.admin();
    let mut c = kw.tcp();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let keys: Vec<String> = (0..2)
        .map(|g| common::key_on(&groups(&[&r1, &r2]), g, "k"))
        .collect();
    for k in &keys {
        assert_eq!(ask(&mut c, &["SET", k, "v"]), b"+OK\r\n", "SET {k}");
    }
    // Each forbidden call, as a one-key script on the group owning k0:
    // keyway forwards it; the backend answers for its restricted user,
    // exactly as the same server answers that user directly.
    let mut direct = login(&r1, "kw", CLIENT_PASS);
    let target = r2.addr();
    let (host, port) = target.split_once(':').unwrap();
    let migrate = format!("return redis.call('MIGRATE','{host}','{port}',KEYS[1],'0','1000')");
    for script in [
        "return redis.call('FLUSHDB')",
        "return redis.call('FLUSHALL')",
        "return redis.call('SWAPDB','0','1')",
        "return redis.call('KEYS','*')",
        "return redis.call('CONFIG','SET','maxmemory','1')",
        "return redis.call('SELECT','1')",
        migrate.as_str(),
    ] {
        let through = ask(&mut c, &["EVAL", script, "1", &keys[0]]);
        let expected = ask(&mut direct, &["EVAL", script, "1", &keys[0]]);
        assert_eq!(
            String::from_utf8_lossy(&through),
            String::from_utf8_lossy(&expected),
            "{script}: as Redis answers the restricted user"
        );
        // (CONFIG is out of any script's reach anyway: `noscript`.)
        let text = String::from_utf8_lossy(&through);
        assert!(
            text.starts_with("-ERR The user executing the script can't run this command")
                || text.starts_with("-ERR This Redis command is not allowed from script"),
            "{script}: refused by the backend's ACL: {}",
            String::from_utf8_lossy(&through)
        );
    }
    for k in &keys {
        assert_eq!(ask(&mut c, &["GET", k]), b"$1\r\nv\r\n", "{k} intact");
    }
    // What keyway itself fans out runs as the admin user.
    assert!(
        String::from_utf8_lossy(&ask(&mut c, &["KEYS", "*"])).starts_with("*2\r\n"),
        "KEYS merged over both groups"
    );
    assert_eq!(ask(&mut c, &["DBSIZE"]), b":2\r\n");
    let info = String::from_utf8_lossy(&ask(&mut c, &["INFO", "keyspace"])).to_string();
    assert!(info.contains("db0:keys=2"), "{info}");
    assert_eq!(ask(&mut c, &["PING"]), b"+PONG\r\n");
    let config = String::from_utf8_lossy(&ask(&mut c, &["CONFIG", "GET", "*"])).to_string();
    let table = http_get(&admin, "/table");
    let info = String::from_utf8_lossy(&ask(&mut c, &["INFO", "everything"])).to_string();
    assert_eq!(ask(&mut c, &["FLUSHALL"]), b"+OK\r\n");
    assert_eq!(ask(&mut c, &["DBSIZE"]), b":0\r\n", "FLUSHALL ran as admin");
    // No password anywhere keyway shows things.
    let logs = kw.logs().join("\n");
    for (what, text) in [
        ("CONFIG GET", &config),
        ("/table", &table),
        ("INFO", &info),
        ("logs", &logs),
    ] {
        for secret in [CLIENT_PASS, ADMIN_PASS] {
            assert!(!text.contains(secret), "{what} shows a password");
        }
    }
    assert!(kw.alive());
}

#[test]
fn a_wrong_backend_password_is_a_clear_error_until_a_reload_fixes_it() {
    let r = requirepass(&[], "right-one");
    let dir = keyway_testkit::TempDir::new("backend-auth");
    let file = dir.path().join("pass");
    std::fs::write(&file, "wrong-one\n").unwrap();
    let body = format!(
        "[backend]\npassword_file = \"{}\"\n{}",
        file.display(),
        groups(&[&r])
    );
    let mut kw = Keyway::start(&body);
    let mut c = kw.tcp();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let want = "-ERR backend g1 unavailable: authentication as backend user \"default\" \
                failed: WRONGPASS invalid username-password pair or user is disabled.\r\n";
    for _ in 0..3 {
        assert_eq!(String::from_utf8_lossy(&ask(&mut c, &["GET", "k"])), want);
    }
    assert!(kw.alive());
    let logs = kw.logs().join("\n");
    assert!(!logs.contains("wrong-one"), "no password in logs");
    std::fs::write(&file, "right-one\n").unwrap();
    kw.reload(&body);
    wait_for(
        "the reloaded password to work",
        Duration::from_secs(10),
        || (ask(&mut c, &["GET", "k"]) == b"$-1\r\n").then_some(()),
    );
    assert_eq!(ask(&mut c, &["SET", "k", "v"]), b"+OK\r\n");
}

#[test]
fn script_kill_frees_a_group_busy_with_an_endless_script() {
    let r = requirepass(&["--busy-reply-threshold", "50"], "pw");
    let dir = keyway_testkit::TempDir::new("backend-auth");
    let file = dir.path().join("pass");
    std::fs::write(&file, "pw").unwrap();
    let body = format!(
        "[backend]\npassword_file = \"{}\"\n{}",
        file.display(),
        groups(&[&r])
    );
    let kw = Keyway::start(&body);
    let mut busy = kw.tcp();
    busy.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    busy.write_all(&resp::request(&["EVAL", "while true do end", "1", "x"]))
        .unwrap();
    let mut direct = login(&r, "default", "pw");
    wait_for("the group to be busy", Duration::from_secs(10), || {
        ask(&mut direct, &["PING"])
            .starts_with(b"-BUSY")
            .then_some(())
    });
    let mut c = kw.tcp();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(ask(&mut c, &["SCRIPT", "KILL"]), b"+OK\r\n");
    let killed = String::from_utf8_lossy(&resp::read_replies(&mut busy, 1)).to_string();
    assert!(
        killed.starts_with("-ERR") && killed.contains("Script killed by user"),
        "{killed}"
    );
    assert_eq!(ask(&mut c, &["SET", "k", "v"]), b"+OK\r\n");
    assert_eq!(
        ask(&mut c, &["SCRIPT", "KILL"]),
        b"-NOTBUSY No scripts in execution right now.\r\n"
    );
}

#[test]
fn a_managed_keyway_reads_its_backend_password_again_on_sighup() {
    use common::fake_ctld::{snapshot, FakeCtld};
    let r = requirepass(&[], "old-pw");
    let dir = keyway_testkit::TempDir::new("backend-auth");
    let file = dir.path().join("pass");
    std::fs::write(&file, "old-pw\n").unwrap();
    let body = format!("[backend]\npassword_file = \"{}\"\n", file.display());
    let ctld = FakeCtld::start(snapshot(1, &r.addr(), false));
    let kw = Keyway::start_args(&body, &["--control", &ctld.addr, "--cluster", "c"]);
    let mut c = kw.tcp();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    wait_for("keyway to serve", Duration::from_secs(20), || {
        (ask(&mut c, &["GET", "k"]) == b"$-1\r\n").then_some(())
    });
    // The server's password changes; keyway's connections are dropped.
    let mut admin = login(&r, "default", "old-pw");
    assert_eq!(
        ask(&mut admin, &["CONFIG", "SET", "requirepass", "new-pw"]),
        b"+OK\r\n"
    );
    let kill = ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"];
    ask(&mut admin, &kill);
    wait_for(
        "keyway to log in with the old password",
        Duration::from_secs(10),
        || {
            String::from_utf8_lossy(&ask(&mut c, &["GET", "k"]))
                .contains("failed: WRONGPASS")
                .then_some(())
        },
    );
    // The file gets the new one, and SIGHUP.
    std::fs::write(&file, "new-pw\n").unwrap();
    kw.reload(&body);
    wait_for(
        "keyway to log in with the new password",
        Duration::from_secs(10),
        || {
            ask(&mut admin, &kill);
            (ask(&mut c, &["GET", "k"]) == b"$-1\r\n").then_some(())
        },
    );
}
