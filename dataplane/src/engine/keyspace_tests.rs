//! `SCAN` through the worker, driven without I/O (see `engine::rig`): the
//! cursor's group and backend cursor, the order under a migration, and the
//! restart when the migrations change mid-scan. The same against real
//! redis-servers: `dataplane/tests/keyspace.rs`, `ctl/tests/migration.rs`.

use super::keyspace::{decode_cursor, At};
use super::rig::Rig;
use crate::routing::SlotRoute;

fn scan_req(cursor: &str) -> String {
    format!(
        "*4\r\n$4\r\nSCAN\r\n${}\r\n{cursor}\r\n$5\r\nCOUNT\r\n$1\r\n5\r\n",
        cursor.len()
    )
}

/// The cursor of a `SCAN` reply keyway wrote, and the rest (the keys).
fn cursor_of(out: &str) -> (String, &str) {
    let rest = out.strip_prefix("*2\r\n$").expect(out);
    let (len, rest) = rest.split_once("\r\n").unwrap();
    let len: usize = len.parse().unwrap();
    (rest[..len].to_string(), &rest[len + 2..])
}

fn at_of(cursor: &str) -> At {
    decode_cursor(cursor.as_bytes(), 3).unwrap().expect("not 0")
}

#[test]
fn a_scan_walks_the_groups_and_starts_again_when_the_migrations_change() {
    let mut r = Rig::new(SlotRoute::Stable(2));
    r.send("SCAN 0 COUNT 5");
    assert_eq!(r.written(0), scan_req("0"), "group 0 first, from 0");
    r.reply(0, "*2\r\n$2\r\n17\r\n*1\r\n$1\r\na\r\n");
    let out = r.output();
    let (c, keys) = cursor_of(&out);
    assert_eq!(keys, "*1\r\n$1\r\na\r\n");
    let at = at_of(&c);
    assert_eq!((at.group, at.backend), (0, 17));
    r.send(&format!("SCAN {c} COUNT 5"));
    assert_eq!(r.written(0), scan_req("17"));
    r.reply(0, "*2\r\n$1\r\n0\r\n*0\r\n");
    let (c, _) = cursor_of(&r.output());
    let at = at_of(&c);
    assert_eq!((at.group, at.backend), (1, 0), "group 0 done: group 1");
    let stable_epoch = at.epoch;
    // Slot 1 starts moving from group 2 to group 0: the order becomes
    // 1, 2, 0 and the cursor's epoch is old: the scan starts again.
    r.swap(2, SlotRoute::Moving { from: 2, to: 0 });
    r.send(&format!("SCAN {c} COUNT 5"));
    assert_eq!(r.written(1), scan_req("0"));
    assert_eq!(r.worker.stats().scans_restarted, 1);
    r.reply(1, "*2\r\n$1\r\n0\r\n*0\r\n");
    let (c, _) = cursor_of(&r.output());
    let at = at_of(&c);
    assert_eq!(at.group, 2, "the source before the destination");
    assert_ne!(at.epoch, stable_epoch);
    r.send(&format!("SCAN {c} COUNT 5"));
    assert_eq!(r.written(2), scan_req("0"));
    r.reply(2, "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nb\r\n");
    let (c, _) = cursor_of(&r.output());
    assert_eq!(at_of(&c).group, 0, "the destination last");
    r.send(&format!("SCAN {c} COUNT 5"));
    assert_eq!(r.written(0), scan_req("0"));
    r.reply(0, "*2\r\n$1\r\n0\r\n*0\r\n");
    assert_eq!(r.output(), "*2\r\n$1\r\n0\r\n*0\r\n", "the end");
    assert_eq!(r.worker.stats().scans_restarted, 1, "no change since");
    // Errors: the group's own, passed through; keyway's for a bad cursor.
    r.send("SCAN 0 COUNT 0");
    assert!(r.written(1).contains("COUNT\r\n$1\r\n0\r\n"));
    r.reply(1, "-ERR syntax error\r\n");
    assert_eq!(r.output(), "-ERR syntax error\r\n");
    r.send("SCAN 12");
    assert_eq!(r.output(), "-ERR invalid cursor\r\n");
}
