//! A group on hold (`GroupRoute::hold`: a failover or switchover under
//! way), driven without I/O as in `moves_tests`: nothing is written to the
//! group, commands wait in order and go when a table without the hold
//! comes, or get `-TRYAGAIN` after the hold limit.

use super::rig::{key_in, Rig};
use crate::routing::SlotRoute;

const MOVING: SlotRoute = SlotRoute::Moving { from: 0, to: 1 };

/// Everything written to the three groups since the last call.
fn anything_written(r: &mut Rig) -> String {
    r.written(0) + &r.written(1) + &r.written(2)
}

#[test]
fn a_held_group_gets_nothing_and_its_commands_go_in_order_on_release() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    let (k, j) = (key_in(1), key_in(3));
    r.publish_held(3, SlotRoute::Stable(0), &[0]);
    r.send(&format!("SET {k} 1;GET {j};INCR {k};PING"));
    assert_eq!(
        anything_written(&mut r),
        "",
        "held: sent nowhere, not even c's GET behind it"
    );
    assert_eq!(r.output(), "", "and PING's reply waits its turn");
    r.tick(500);
    assert_eq!(anything_written(&mut r), "", "still held after a while");
    r.swap(4, SlotRoute::Stable(0));
    let to_a = r.written(0);
    let (set, incr) = (to_a.find("SET"), to_a.find("INCR"));
    assert!(
        set.is_some() && incr.is_some() && set < incr,
        "released in order to a: {to_a:?}"
    );
    assert!(r.written(2).contains("GET"), "c's GET went too");
    r.reply(2, "$1\r\nx\r\n");
    assert_eq!(r.output(), "", "replies keep request order");
    r.reply(0, "+OK\r\n:2\r\n");
    assert_eq!(r.output(), "+OK\r\n$1\r\nx\r\n:2\r\n+PONG\r\n");
    assert_eq!(r.worker.stats().requests_held, 1);
}

#[test]
fn other_groups_serve_while_one_is_held() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.publish_held(2, SlotRoute::Stable(0), &[0]);
    let c = r.another_client();
    r.send(&format!("GET {}", key_in(1)));
    r.send_as(c, &format!("GET {}", key_in(3)));
    assert_eq!(r.written(0), "");
    assert!(r.written(2).contains("GET"), "group c is not held");
    r.reply(2, "$-1\r\n");
    assert_eq!(r.output_of(c), "$-1\r\n");
    assert_eq!(r.output(), "");
}

#[test]
fn a_hold_that_outlasts_the_limit_answers_tryagain() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.publish_held(2, SlotRoute::Stable(0), &[0]);
    r.send(&format!("SET {} v;PING", key_in(1)));
    r.tick(100);
    assert_eq!(r.output(), "");
    r.tick(2500);
    assert_eq!(
        r.output(),
        "-TRYAGAIN the slot is on hold while a migration or failover is prepared; try again\r\n+PONG\r\n"
    );
    r.swap(3, SlotRoute::Stable(0));
    assert_eq!(r.written(0), "", "an expired command is never sent later");
}

#[test]
fn key_moves_from_or_to_a_held_group_are_held() {
    for held in [0, 1] {
        let mut r = Rig::new(MOVING);
        r.publish_held(2, MOVING, &[held]);
        let k = key_in(1);
        r.send(&format!("SET {k} v"));
        assert_eq!(
            anything_written(&mut r),
            "",
            "group {held} on hold: no MIGRATE, no SET"
        );
        r.swap(3, MOVING);
        assert!(
            r.written(0).contains("MIGRATE"),
            "the hold lifted: moved first, as usual"
        );
        r.reply(0, "+NOKEY\r\n");
        assert!(r.written(1).contains("SET"));
    }
}

#[test]
fn split_parts_and_fan_outs_wait_for_a_held_group() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.publish_held(2, SlotRoute::Stable(0), &[0]);
    let (k, j) = (key_in(1), key_in(3));
    r.send(&format!("MGET {k} {j};DBSIZE"));
    assert_eq!(
        anything_written(&mut r),
        "",
        "a part for a held group holds it all"
    );
    r.swap(3, SlotRoute::Stable(0));
    assert!(r.written(0).contains("MGET"));
    let to_c = r.written(2);
    assert!(to_c.contains("MGET") && to_c.contains("DBSIZE"), "{to_c:?}");
    assert!(r.written(1).contains("DBSIZE"));
}

/// A reply no read or backend reply brings (the hold's expiry, on the
/// tick) is timed when it is handed to the client, not at the client's
/// next read (whose own requests would be answered before it counted).
#[test]
fn a_reply_sent_on_the_tick_is_recorded_when_it_leaves() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.publish_held(2, SlotRoute::Stable(0), &[0]);
    r.send(&format!("SET {} v", key_in(1)));
    r.tick(2600);
    assert!(r.output().starts_with("-TRYAGAIN"));
    // A command's first times get their histogram on the tick.
    r.tick(100);
    r.send("INFO commandstats latencystats");
    let out = r.output();
    assert!(
        out.contains("cmdstat_set:calls=1,") && out.contains(",failed_calls=1\r\n"),
        "{out}"
    );
    assert!(out.contains("latency_percentiles_usec_set:p50="), "{out}");
}

/// The same with replies off: nothing is written, the reply is recorded
/// all the same when it is dropped.
#[test]
fn a_dropped_reply_sent_on_the_tick_is_recorded_when_dropped() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.publish_held(2, SlotRoute::Stable(0), &[0]);
    r.send(&format!("CLIENT REPLY OFF;SET {} v", key_in(1)));
    r.tick(2600);
    assert_eq!(r.output(), "");
    r.tick(100);
    r.send("CLIENT REPLY ON;INFO commandstats latencystats");
    let out = r.output();
    assert!(
        out.contains("cmdstat_set:calls=1,") && out.contains(",failed_calls=1\r\n"),
        "{out}"
    );
    assert!(out.contains("latency_percentiles_usec_set:p50="), "{out}");
}
