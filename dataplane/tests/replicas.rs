//! Reads from replicas against real redis-servers: a group with
//! `read_from = "replica"` or `"local-zone"` in the standalone config sends
//! reads to a replica (the replica's `INFO commandstats` counts them, the
//! master's does not) and writes to the master, and falls back to the
//! master when the replica dies.

mod common;

use std::time::Duration;

use common::{calls, wait_for, Keyway, Redis};

/// A group `g1` with master `m`, its `replicas` (address, zone), reading as
/// `read_from`.
fn config(m: &Redis, read_from: &str, replicas: &[(&Redis, &str)]) -> String {
    let mut s = format!(
        "[[group]]\nname = \"g1\"\nmaster = \"{}\"\nread_from = \"{read_from}\"\n",
        m.addr()
    );
    for (r, zone) in replicas {
        s.push_str(&format!(
            "[[group.replica]]\naddress = \"{}\"\nzone = \"{zone}\"\n",
            r.addr()
        ));
    }
    s
}

/// Waits until `replica` has `key` = `value` (replication is asynchronous).
fn replicated(replica: &Redis, key: &str, value: &str) {
    let mut c = replica.conn();
    wait_for(
        "the replica to have the key",
        Duration::from_secs(20),
        || {
            let v: Option<String> = redis::cmd("GET").arg(key).query(&mut c).ok()?;
            (v.as_deref() == Some(value)).then_some(())
        },
    );
}

/// GETs `key` through keyway until `replica` serves one: the first reads
/// go to the master while keyway connects to the replica.
fn until_replica_reads(kw: &Keyway, replica: &Redis, key: &str) {
    let mut c = kw.conn();
    let before = calls(replica, "get");
    wait_for(
        "a read served by the replica",
        Duration::from_secs(20),
        || {
            let _: Option<String> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
            (calls(replica, "get") > before).then_some(())
        },
    );
}

#[test]
fn reads_go_to_the_replica_writes_to_the_master_and_a_dead_replica_is_skipped() {
    let m = Redis::start();
    let mut r = Redis::replica_of(&m);
    let kw = Keyway::start(&config(&m, "replica", &[(&r, "")]));
    let mut c = kw.conn();
    let _: () = redis::cmd("SET").arg("k").arg("v1").query(&mut c).unwrap();
    replicated(&r, "k", "v1");
    until_replica_reads(&kw, &r, "k");

    let (m_gets, r_gets, m_sets) = (calls(&m, "get"), calls(&r, "get"), calls(&m, "set"));
    for _ in 0..20 {
        let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
        assert_eq!(v, "v1");
    }
    assert_eq!(
        calls(&r, "get") - r_gets,
        20,
        "every read served by the replica"
    );
    assert_eq!(calls(&m, "get"), m_gets, "none by the master");
    let _: () = redis::cmd("SET").arg("k").arg("v2").query(&mut c).unwrap();
    assert_eq!(
        calls(&m, "set") - m_sets,
        1,
        "the write went to the master (the replica would answer -READONLY)"
    );
    let n: i64 = redis::cmd("INCR").arg("n").query(&mut c).unwrap();
    assert_eq!(n, 1);

    // The replica dies. A read in flight on it at that moment gets
    // `-ERR backend g1 unavailable: …` (one at most: this client has one in
    // flight); every later read is served by the master.
    r.kill();
    let m_gets = calls(&m, "get");
    let mut errors = Vec::new();
    let mut served = 0;
    for _ in 0..50 {
        match redis::cmd("GET").arg("k").query::<String>(&mut c) {
            Ok(v) => {
                assert_eq!(v, "v2", "the master has the latest write");
                served += 1;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert!(
        errors.len() <= 1,
        "at most the read in flight fails: {errors:?}"
    );
    assert!(
        errors.iter().all(|e| e.contains("backend g1 unavailable")),
        "{errors:?}"
    );
    assert_eq!(calls(&m, "get") - m_gets, served, "the master served them");
}

#[test]
fn local_zone_reads_from_the_replica_in_our_zone() {
    let m = Redis::start();
    let (r1, r2) = (Redis::replica_of(&m), Redis::replica_of(&m));
    let kw = Keyway::start_args(
        &config(&m, "local-zone", &[(&r1, "z1"), (&r2, "z2")]),
        &["--zone", "z2"],
    );
    let mut c = kw.conn();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    replicated(&r2, "k", "v");
    until_replica_reads(&kw, &r2, "k");
    let before = [calls(&m, "get"), calls(&r1, "get"), calls(&r2, "get")];
    for _ in 0..20 {
        let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
        assert_eq!(v, "v");
    }
    let after = [calls(&m, "get"), calls(&r1, "get"), calls(&r2, "get")];
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [0, 0, 20],
        "master, replica in z1, replica in z2 (ours)"
    );
}
