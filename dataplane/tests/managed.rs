//! A managed keyway against real redis-servers, with the test playing
//! keyway-ctld (`common::fake_ctld`): backend reports in acks (`kill -9` of
//! the master under traffic brings an Ack reporting it failing — within
//! 100 ms of keyway seeing it, besides the acks every second — and its
//! restart one reporting it up), and a group on hold (nothing sent to it
//! until a version without the hold).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::fake_ctld::{snapshot, FakeCtld};
use common::{calls, counter, wait_for, Keyway, Redis};
use keyway_capnp::control::BackendReport;

/// A managed keyway of cluster `c` served by `ctld`, once it serves.
fn managed(ctld: &FakeCtld) -> Keyway {
    let kw = Keyway::start_args("", &["--control", &ctld.addr, "--cluster", "c"]);
    wait_for("keyway to serve", Duration::from_secs(20), || {
        redis::cmd("PING").query::<String>(&mut kw.conn()).ok()?;
        redis::cmd("GET")
            .arg("warm")
            .query::<Option<String>>(&mut kw.conn())
            .ok()
    });
    kw
}

/// `addr`'s report in an Ack, if any.
fn report<'a>(a: &'a keyway_capnp::control::Ack, addr: &str) -> Option<&'a BackendReport> {
    a.backends.iter().find(|r| r.address == addr)
}

#[test]
fn acks_report_a_killed_master_at_once_and_its_return() {
    let mut m = Redis::start();
    let (port, addr) = (m.port, m.addr());
    let ctld = FakeCtld::start(snapshot(1, &addr, false));
    let kw = managed(&ctld);

    // Traffic, errors and all, until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, at) = (stop.clone(), kw.addr);
        std::thread::spawn(move || {
            let client = redis::Client::open(format!("redis://{at}")).unwrap();
            let mut c = client.get_connection().unwrap();
            while !stop.load(Ordering::Relaxed) {
                // Errors while the master is down are expected: keyway
                // answers each one, and the connection stays.
                let _ = redis::cmd("GET").arg("k").query::<Option<String>>(&mut c);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    m.kill();
    let a = ctld.ack_where(Duration::from_secs(5), |a| {
        report(a, &addr).is_some_and(|r| r.failures > 0)
    });
    let failing = report(&a, &addr).unwrap();
    assert!(!failing.last_error.is_empty(), "{failing:?}");
    assert!(failing.since_failure_ms.is_some(), "{failing:?}");
    assert!(
        failing.since_success_ms.is_some(),
        "keyway had talked to it before: {failing:?}"
    );

    let _back = Redis::start_on(port);
    let a = ctld.ack_where(Duration::from_secs(15), |a| {
        report(a, &addr).is_some_and(|r| r.failures == 0)
    });
    let up = report(&a, &addr).unwrap();
    assert!(
        up.since_success_ms < up.since_failure_ms,
        "answered since its last failure: {up:?}"
    );
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
}

#[test]
fn a_group_on_hold_gets_nothing_until_a_version_without_the_hold() {
    let m = Redis::start();
    let ctld = FakeCtld::start(snapshot(1, &m.addr(), false));
    let kw = managed(&ctld);
    ctld.publish(snapshot(2, &m.addr(), true));
    ctld.ack_where(Duration::from_secs(10), |a| a.version == 2 && a.drained);

    let mut c = TcpStream::connect(kw.addr).unwrap();
    let sets = calls(&m, "set");
    c.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv2\r\n*1\r\n$4\r\nPING\r\n")
        .unwrap();
    wait_for("keyway to hold the SET", Duration::from_secs(10), || {
        (counter(&kw, "requests_held") >= 1).then_some(())
    });
    c.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(c.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "no reply while held, not even PING's (order)"
    );
    assert_eq!(calls(&m, "set"), sets, "nothing written to a held group");

    ctld.publish(snapshot(3, &m.addr(), false));
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    while got.len() < b"+OK\r\n+PONG\r\n".len() {
        let n = c.read(&mut buf).expect("the replies after the release");
        assert!(n > 0, "keyway closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n+PONG\r\n");
    assert_eq!(calls(&m, "set"), sets + 1);
    let v: String = redis::cmd("GET").arg("k").query(&mut m.conn()).unwrap();
    assert_eq!(v, "v2");
}

/// `cmd` on a new connection, after `AUTH password` if given: the replies.
fn ask(kw: &Keyway, auth: Option<&str>, cmd: &[&str]) -> String {
    let mut s = TcpStream::connect(kw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    let mut n = 1;
    if let Some(p) = auth {
        req.extend(keyway_testkit::resp::request(&["AUTH", p]));
        n += 1;
    }
    req.extend(keyway_testkit::resp::request(cmd));
    String::from_utf8_lossy(&keyway_testkit::resp::exchange(&mut s, &req, n)).into_owned()
}

#[test]
fn a_snapshots_users_replace_the_config_files_and_bad_ones_are_refused() {
    use keyway_capnp::snapshot::User;
    let m = Redis::start();
    let hash = keyway_capnp::users::sha256_hex(b"ctld-pw");
    let with_users = |version, rules: &str| {
        let mut s = snapshot(version, &m.addr(), false);
        s.users = vec![User {
            name: "default".into(),
            rules: rules.into(),
        }];
        s
    };
    let ctld = FakeCtld::start(with_users(1, &format!("on #{hash} ~* &* +@all")));
    let mut kw = Keyway::start_args(
        "[[user]]\nname = \"default\"\nrules = \"on >file-pw ~* &* +@all\"\n",
        &["--control", &ctld.addr, "--cluster", "c"],
    );
    ctld.ack_where(Duration::from_secs(20), |a| a.version == 1 && a.drained);
    assert_eq!(
        ask(&kw, None, &["PING"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(ask(&kw, Some("file-pw"), &["PING"]).starts_with("-WRONGPASS"));
    assert_eq!(ask(&kw, Some("ctld-pw"), &["PING"]), "+OK\r\n+PONG\r\n");

    // Users the data plane cannot build: the snapshot is refused (never
    // acked), the users it has stay.
    ctld.publish(with_users(2, "on +nosuch"));
    kw.wait_log("cannot apply snapshot");
    assert_eq!(ask(&kw, Some("ctld-pw"), &["PING"]), "+OK\r\n+PONG\r\n");

    // None: the config file's again.
    ctld.publish(snapshot(3, &m.addr(), false));
    ctld.ack_where(Duration::from_secs(10), |a| a.version == 3 && a.drained);
    assert!(ask(&kw, Some("ctld-pw"), &["PING"]).starts_with("-WRONGPASS"));
    assert_eq!(ask(&kw, Some("file-pw"), &["PING"]), "+OK\r\n+PONG\r\n");
}
