//! The test playing keyway-ctld for one managed keyway: a TcpListener
//! speaking the control protocol (`capnp/schema/control.capnp`): the first
//! snapshot after the Hello, a Heartbeat answering every Ack (renewing a
//! 30 s lease), and whatever snapshots the test publishes. Its threads end
//! when keyway closes the session.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keyway_capnp::control::{Ack, FromDataPlane, Heartbeat, ToDataPlane};
use keyway_capnp::frame::{frame, read_frame, MAX_FRAME};
use keyway_capnp::snapshot::{Group, SlotRange, Snapshot};

/// The lease granted: lease-third Acks come every 10 s, so an Ack within a
/// few seconds of an event is one the event brought.
pub const LEASE_MS: u64 = 30_000;

/// A fake ctld serving one data plane.
pub struct FakeCtld {
    /// Its control address, for `keyway --control`.
    pub addr: String,
    /// Every Ack received, in order.
    pub acks: mpsc::Receiver<Ack>,
    publish: mpsc::Sender<Snapshot>,
}

/// Cluster `c`, all 16384 slots on group `g1` (master `master`), version
/// `version`.
pub fn snapshot(version: u64, master: &str, hold: bool) -> Snapshot {
    Snapshot {
        cluster: "c".into(),
        version,
        slot_count: 16384,
        groups: vec![Group {
            name: "g1".into(),
            master: master.into(),
            hold,
            ..Group::default()
        }],
        slot_ranges: vec![SlotRange {
            first: 0,
            last: 16383,
            group: 0,
        }],
        migrations: vec![],
        lease_millis: LEASE_MS,
        users: vec![],
    }
}

impl FakeCtld {
    /// Listens on a loopback port; serves `first` to the data plane that
    /// dials it.
    pub fn start(first: Snapshot) -> FakeCtld {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (ack_tx, acks) = mpsc::channel();
        let (publish, snapshots) = mpsc::channel::<Snapshot>();
        std::thread::spawn(move || {
            let Ok((s, _)) = listener.accept() else {
                return;
            };
            serve(s, first, &snapshots, &ack_tx);
        });
        FakeCtld {
            addr,
            acks,
            publish,
        }
    }

    /// Sends `s` to the data plane (heartbeats then carry its version).
    pub fn publish(&self, s: Snapshot) {
        self.publish.send(s).unwrap();
    }

    /// The first Ack for which `want` holds, within `within`.
    pub fn ack_where(&self, within: Duration, want: impl Fn(&Ack) -> bool) -> Ack {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let a = self
                .acks
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no Ack as wanted within {within:?}: {e}"));
            eprintln!("ack: {a:?}");
            if want(&a) {
                return a;
            }
        }
    }
}

fn serve(
    mut s: TcpStream,
    first: Snapshot,
    snapshots: &mpsc::Receiver<Snapshot>,
    acks: &mpsc::Sender<Ack>,
) {
    let hello = read_frame(&mut s, MAX_FRAME).unwrap();
    assert!(matches!(
        FromDataPlane::decode(&hello).unwrap(),
        FromDataPlane::Hello(_)
    ));
    let mut version = first.version;
    s.write_all(&frame(&ToDataPlane::Snapshot(first).encode()))
        .unwrap();
    // A reader thread turns frames into Acks; this one writes.
    let (from_keyway, incoming) = mpsc::channel::<Ack>();
    let mut reader = s.try_clone().unwrap();
    std::thread::spawn(move || {
        while let Ok(bytes) = read_frame(&mut reader, MAX_FRAME) {
            let FromDataPlane::Ack(a) = FromDataPlane::decode(&bytes).unwrap() else {
                panic!("a second Hello");
            };
            if from_keyway.send(a).is_err() {
                return;
            }
        }
    });
    loop {
        while let Ok(next) = snapshots.try_recv() {
            version = next.version;
            if s.write_all(&frame(&ToDataPlane::Snapshot(next).encode()))
                .is_err()
            {
                return;
            }
        }
        match incoming.recv_timeout(Duration::from_millis(5)) {
            Ok(a) => {
                let hb = ToDataPlane::Heartbeat(Heartbeat {
                    seq: a.seq,
                    lease_millis: LEASE_MS,
                    version,
                });
                if s.write_all(&frame(&hb.encode())).is_err() || acks.send(a).is_err() {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}
