//! Backend reports in acks, against a real keyway and real redis-servers,
//! with the test playing keyway-ctld (a TcpListener speaking the control
//! protocol: Snapshot, then a Heartbeat answering every Ack). `kill -9` of
//! the master under traffic must bring an Ack reporting it failing well
//! before the next lease-third Ack, and its restart one reporting it up.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{Keyway, Redis};
use keyway_capnp::control::{Ack, BackendReport, FromDataPlane, Heartbeat, ToDataPlane};
use keyway_capnp::frame::{frame, read_frame, MAX_FRAME};
use keyway_capnp::snapshot::{Group, SlotRange, Snapshot};

/// The lease the fake ctld grants: lease-third Acks come every 10 s, so an
/// Ack within a few seconds of a failure is one the failure brought.
const LEASE_MS: u64 = 30_000;

/// Serves one data plane: sends `snapshot` after its Hello, answers every
/// Ack with a Heartbeat, and passes the Acks on. Ends when keyway does.
fn fake_ctld(listener: TcpListener, snapshot: Snapshot, acks: mpsc::Sender<Ack>) {
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let hello = read_frame(&mut s, MAX_FRAME).unwrap();
        assert!(matches!(
            FromDataPlane::decode(&hello).unwrap(),
            FromDataPlane::Hello(_)
        ));
        let version = snapshot.version;
        s.write_all(&frame(&ToDataPlane::Snapshot(snapshot).encode()))
            .unwrap();
        while let Ok(bytes) = read_frame(&mut s, MAX_FRAME) {
            let FromDataPlane::Ack(a) = FromDataPlane::decode(&bytes).unwrap() else {
                panic!("a second Hello");
            };
            let hb = ToDataPlane::Heartbeat(Heartbeat {
                seq: a.seq,
                lease_millis: LEASE_MS,
                version,
            });
            if s.write_all(&frame(&hb.encode())).is_err() || acks.send(a).is_err() {
                return;
            }
        }
    });
}

/// The next Ack whose report on `addr` satisfies `want`, within `within`.
fn ack_reporting(
    acks: &mpsc::Receiver<Ack>,
    addr: &str,
    within: Duration,
    want: impl Fn(&BackendReport) -> bool,
) -> BackendReport {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let a = acks.recv_timeout(left).unwrap_or_else(|e| {
            panic!("no Ack reporting on {addr} as wanted within {within:?}: {e}")
        });
        eprintln!("ack: {a:?}");
        if let Some(r) = a.backends.iter().find(|r| r.address == addr && want(r)) {
            return r.clone();
        }
    }
}

#[test]
fn acks_report_a_killed_master_at_once_and_its_return() {
    let mut m = Redis::start();
    let port = m.port;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ctld = listener.local_addr().unwrap().to_string();
    let snapshot = Snapshot {
        cluster: "c".into(),
        version: 1,
        slot_count: 16384,
        groups: vec![Group {
            name: "g1".into(),
            master: m.addr(),
            ..Group::default()
        }],
        slot_ranges: vec![SlotRange {
            first: 0,
            last: 16383,
            group: 0,
        }],
        migrations: vec![],
        lease_millis: LEASE_MS,
    };
    let (tx, acks) = mpsc::channel();
    fake_ctld(listener, snapshot, tx);
    let kw = Keyway::start_args("", &["--control", &ctld, "--cluster", "c"]);
    common::wait_for("keyway to serve", Duration::from_secs(20), || {
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query::<()>(&mut kw.conn())
            .ok()
    });

    // Traffic, errors and all, until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, addr) = (stop.clone(), kw.addr);
        std::thread::spawn(move || {
            let client = redis::Client::open(format!("redis://{addr}")).unwrap();
            let mut c = client.get_connection().unwrap();
            while !stop.load(Ordering::Relaxed) {
                // Errors while the master is down are expected: keyway
                // answers each one, and the connection stays.
                let _ = redis::cmd("GET").arg("k").query::<Option<String>>(&mut c);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let addr = m.addr();
    m.kill();
    let failing = ack_reporting(&acks, &addr, Duration::from_secs(5), |r| r.failures > 0);
    assert!(!failing.last_error.is_empty(), "{failing:?}");
    assert!(failing.since_failure_ms.is_some(), "{failing:?}");
    assert!(
        failing.since_success_ms.is_some(),
        "keyway had talked to it before: {failing:?}"
    );

    let _back = Redis::start_on(port);
    let up = ack_reporting(&acks, &addr, Duration::from_secs(15), |r| r.failures == 0);
    assert!(
        up.since_success_ms < up.since_failure_ms,
        "answered since its last failure: {up:?}"
    );
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
}
