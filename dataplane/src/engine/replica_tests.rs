//! Reads from replicas (`GroupRoute::read_from`), driven without I/O as in
//! `moves_tests`: which backend each command is written to, and what the
//! client gets back.

use super::rig::{key_in, replica_addr, Rig, Settings};
use crate::routing::{ReadFrom, SlotRoute};

const GET: &str = "*2\r\n$3\r\nGET\r\n";

/// Group c (every slot but 1) reading as `read_from` from `replicas`
/// (replica number, zone), in zone `zone`.
fn rig(read_from: ReadFrom, replicas: &[(u16, &'static str)], zone: Option<&'static str>) -> Rig {
    Rig::with(
        SlotRoute::Stable(1),
        Settings {
            replicas: replicas.iter().map(|&(i, z)| (2, i, z)).collect(),
            read_from: vec![(2, read_from)],
            zone,
            ..Settings::default()
        },
    )
}

/// Sends a GET on group c, connects what the worker asked for, and
/// answers it from wherever it went; returns where that was (`None`: c's
/// master).
fn read_once(r: &mut Rig, replicas: &[u16]) -> Option<u16> {
    r.send(&format!("GET {}", key_in(3)));
    let mut at = None;
    for &i in replicas {
        if r.written_at(replica_addr(i)).contains(GET) {
            assert!(at.is_none(), "one GET, one backend");
            at = Some(i);
            r.reply_at(replica_addr(i), b"$1\r\nr\r\n");
        }
    }
    if r.written(2).contains(GET) {
        assert!(at.is_none(), "one GET, one backend");
        r.reply(2, "$1\r\nm\r\n");
    }
    assert!(r.output().starts_with("$1\r\n"), "the read was answered");
    at
}

#[test]
fn reads_go_round_robin_over_up_replicas_and_writes_to_the_master() {
    let mut r = rig(ReadFrom::Replica, &[(0, ""), (1, "")], None);
    assert_eq!(
        read_once(&mut r, &[0, 1]),
        None,
        "no replica connection is up yet: the master serves, no waiting"
    );
    let got: Vec<Option<u16>> = (0..4).map(|_| read_once(&mut r, &[0, 1])).collect();
    assert_eq!(got, [Some(0), Some(1), Some(0), Some(1)]);
    r.send(&format!("SET {} v", key_in(3)));
    assert!(r.written(2).contains("SET"), "a write goes to the master");
    assert_eq!(
        r.written_at(replica_addr(0)) + &r.written_at(replica_addr(1)),
        ""
    );
    r.send(&format!("MGET {} {}", key_in(3), key_in(5)));
    assert!(
        (r.written_at(replica_addr(0)) + &r.written_at(replica_addr(1))).contains("MGET"),
        "a read-only multi-key command reads from a replica too"
    );
}

#[test]
fn replies_keep_request_order_across_replicas() {
    let mut r = rig(ReadFrom::Replica, &[(0, ""), (1, "")], None);
    read_once(&mut r, &[0, 1]);
    let k = key_in(3);
    r.send(&format!("GET {k};GET {k}"));
    assert!(r.written_at(replica_addr(0)).contains(GET));
    assert!(r.written_at(replica_addr(1)).contains(GET));
    r.reply_at(replica_addr(1), b"$1\r\nb\r\n");
    assert_eq!(r.output(), "", "the second reply waits for the first");
    r.reply_at(replica_addr(0), b"$1\r\na\r\n");
    assert_eq!(r.output(), "$1\r\na\r\n$1\r\nb\r\n");
}

#[test]
fn local_zone_reads_only_from_replicas_in_our_zone() {
    let replicas = [(0, "z1"), (1, "z2"), (2, "z1")];
    let mut r = rig(ReadFrom::LocalZone, &replicas, Some("z2"));
    read_once(&mut r, &[0, 1, 2]);
    let got: Vec<Option<u16>> = (0..3).map(|_| read_once(&mut r, &[0, 1, 2])).collect();
    assert_eq!(got, [Some(1); 3], "only z2's replica");
    let mut r = rig(ReadFrom::LocalZone, &replicas, None);
    read_once(&mut r, &[0, 1, 2]);
    assert_eq!(
        read_once(&mut r, &[0, 1, 2]),
        None,
        "no zone of our own: the master"
    );
    let mut r = rig(ReadFrom::LocalZone, &replicas, Some("z9"));
    read_once(&mut r, &[0, 1, 2]);
    assert_eq!(
        read_once(&mut r, &[0, 1, 2]),
        None,
        "no replica in our zone: the master"
    );
}

#[test]
fn a_failing_replica_is_skipped_until_it_answers_a_probe() {
    let mut r = rig(ReadFrom::Replica, &[(0, "")], None);
    let shared = r.worker.ctx.shared.clone();
    let turns = || {
        shared
            .health_changes
            .load(std::sync::atomic::Ordering::Acquire)
    };
    r.refusing.insert(replica_addr(0));
    assert_eq!(read_once(&mut r, &[0]), None);
    assert_eq!(turns(), 1, "refused: the replica turned from up to failing");
    let reports = shared.backend_reports(std::time::Instant::now());
    let replica = reports
        .iter()
        .find(|b| b.address == replica_addr(0).to_string())
        .expect("the replica is reported");
    assert_eq!(replica.failures, 1);
    assert!(replica.last_error.contains("refused"), "{replica:?}");
    assert_eq!(
        read_once(&mut r, &[0]),
        None,
        "in backoff: the master serves"
    );
    r.tick(100);
    assert_eq!(r.connect(), 1, "the backoff over, the replica is probed");
    assert_eq!(read_once(&mut r, &[0]), None, "refused again");
    r.refusing.clear();
    r.tick(400);
    assert_eq!(r.connect(), 1, "probed again");
    assert_eq!(
        r.written_at(replica_addr(0)),
        "*1\r\n$4\r\nPING\r\n",
        "connected: a PING, no read yet"
    );
    assert_eq!(read_once(&mut r, &[0]), None, "not up until it answers");
    r.reply_at(replica_addr(0), b"+PONG\r\n");
    assert_eq!(r.output(), "", "the probe's reply goes to no client");
    assert_eq!(turns(), 2, "answered: up again");
    assert_eq!(read_once(&mut r, &[0]), Some(0), "reads go to it again");
}

#[test]
fn a_read_in_flight_on_a_replica_that_dies_gets_the_error_and_the_next_goes_to_the_master() {
    let mut r = rig(ReadFrom::Replica, &[(0, "")], None);
    read_once(&mut r, &[0]);
    r.send(&format!("GET {}", key_in(3)));
    assert!(r.written_at(replica_addr(0)).contains(GET));
    r.lose(replica_addr(0));
    assert_eq!(
        r.output(),
        "-ERR backend c unavailable: the backend closed the connection\r\n",
        "a read in flight is not retried (its bytes are gone)"
    );
    assert_eq!(read_once(&mut r, &[0]), None);
}

#[test]
fn reads_on_migrating_or_blocked_slots_go_to_the_master() {
    // Group b (slot 1) reads from replica 0.
    let settings = Settings {
        replicas: vec![(1, 0, "")],
        read_from: vec![(1, ReadFrom::Replica)],
        ..Settings::default()
    };
    let mut r = Rig::with(SlotRoute::Stable(1), settings);
    let k = key_in(1);
    r.send(&format!("GET {k}"));
    r.written(1);
    r.reply(1, "$-1\r\n");
    r.output();
    r.send(&format!("GET {k}"));
    assert!(
        r.written_at(replica_addr(0)).contains(GET),
        "stable: the replica"
    );
    r.reply_at(replica_addr(0), b"$-1\r\n");
    r.output();
    r.swap(2, SlotRoute::Moving { from: 0, to: 1 });
    r.send(&format!("GET {k}"));
    assert!(r.written(0).contains("MIGRATE"));
    r.reply(0, "+OK\r\n");
    assert!(
        r.written(1).contains(GET),
        "a key just moved to b may not be on b's replica yet: b's master"
    );
    assert_eq!(r.written_at(replica_addr(0)), "");
    r.reply(1, "$1\r\nv\r\n");
    assert_eq!(r.output(), "$1\r\nv\r\n");
    r.swap(3, SlotRoute::Moving { from: 1, to: 0 });
    r.send(&format!("GET {k}"));
    assert!(r.written(1).contains("MIGRATE"), "moving away from b");
    assert_eq!(r.written_at(replica_addr(0)), "");
}
