//! The worker on migrating slots, driven without I/O: the test plays the
//! transport, reads what the worker writes to each backend and feeds it the
//! replies Redis gives in each case (the same paths run against real
//! redis-servers in `ctl/tests/migration.rs`).

use super::rig::{key_in, Rig};
use crate::routing::SlotRoute;

fn migrate_of(key: &str, timeout: u64) -> String {
    format!(
        "*8\r\n$7\r\nMIGRATE\r\n$9\r\n127.0.0.1\r\n$4\r\n7001\r\n$0\r\n\r\n$1\r\n0\r\n${}\r\n{timeout}\r\n$4\r\nKEYS\r\n${}\r\n{key}\r\n",
        timeout.to_string().len(),
        key.len()
    )
}

const MOVING: SlotRoute = SlotRoute::Moving { from: 0, to: 1 };

#[test]
fn a_key_moves_before_its_command_goes_to_the_target() {
    let mut r = Rig::new(MOVING);
    let k = key_in(1);
    r.send(&format!("SET {k} v"));
    assert_eq!(
        r.written(0),
        migrate_of(&k, 1000),
        "MIGRATE first, on the source"
    );
    assert_eq!(r.written(1), "", "nothing reaches the target yet");
    r.reply(0, "+NOKEY\r\n");
    assert!(r
        .written(1)
        .contains(&format!("SET\r\n${}\r\n{k}", k.len())));
    assert_eq!(r.written(0), "", "no write reaches the source");
    r.reply(1, "+OK\r\n");
    assert_eq!(r.output(), "+OK\r\n");
    assert_eq!(r.worker.stats().key_moves, 1);
}

#[test]
fn later_requests_wait_behind_a_kept_back_one() {
    let mut r = Rig::new(MOVING);
    let (k, j) = (key_in(1), key_in(3));
    // MSET over a moving key and a stable one, then a GET of the stable one:
    // the GET must not overtake the MSET's write to c.
    r.send(&format!("MSET {k} 1 {j} 2;GET {j};PING"));
    assert!(r.written(0).starts_with("*8\r\n$7\r\nMIGRATE"));
    assert_eq!(r.written(2), "", "GET {j} waits behind the MSET");
    assert_eq!(r.output(), "", "and PING's reply waits its turn");
    r.reply(0, "+OK\r\n");
    let to_c = r.written(2);
    let mset_part = to_c.find("MSET").expect("the MSET part for c");
    let get = to_c.find("GET").expect("then the GET");
    assert!(mset_part < get, "{to_c:?}");
    assert!(
        r.written(1).contains("MSET"),
        "the moved key's part goes to b"
    );
    r.reply(1, "+OK\r\n");
    r.reply(2, "+OK\r\n$1\r\n2\r\n");
    assert_eq!(r.output(), "+OK\r\n$1\r\n2\r\n+PONG\r\n");
    assert_eq!(r.worker.stats().requests_kept_behind, 1);
}

#[test]
fn a_copy_on_both_sides_is_deleted_on_the_source() {
    let mut r = Rig::new(MOVING);
    let k = key_in(1);
    r.send(&format!("INCR {k}"));
    r.written(0);
    r.reply(
        0,
        "-ERR Target instance replied with error: BUSYKEY Target key name already exists.\r\n",
    );
    assert_eq!(
        r.written(0),
        migrate_of(&k, 2000),
        "retried alone, with twice the timeout"
    );
    r.reply(
        0,
        "-ERR Target instance replied with error: BUSYKEY Target key name already exists.\r\n",
    );
    assert_eq!(
        r.written(0),
        format!("*2\r\n$3\r\nDEL\r\n${}\r\n{k}\r\n", k.len())
    );
    assert_eq!(r.written(1), "");
    r.reply(0, ":1\r\n");
    assert!(r.written(1).contains("INCR"));
    r.reply(1, ":5\r\n");
    assert_eq!(r.output(), ":5\r\n");
    assert_eq!(r.worker.stats().keys_deleted_on_source, 1);
}

#[test]
fn moves_that_keep_failing_answer_tryagain_and_write_nothing() {
    let mut r = Rig::new(MOVING);
    let k = key_in(1);
    r.send(&format!("SET {k} v"));
    for timeout in [1000, 2000, 4000] {
        assert_eq!(r.written(0), migrate_of(&k, timeout));
        r.reply(0, "-IOERR error or timeout connecting to the client\r\n");
    }
    assert_eq!(r.written(0), "");
    assert_eq!(r.written(1), "", "the command went nowhere");
    let out = r.output();
    assert!(
        out.starts_with("-TRYAGAIN keyway could not move this command's keys: IOERR"),
        "{out}"
    );
    assert_eq!(r.worker.stats().moves_failed, 1);
}

#[test]
fn held_requests_go_when_the_table_changes() {
    let mut r = Rig::new(SlotRoute::Blocked { from: 0, to: 1 });
    let k = key_in(1);
    r.send(&format!("GET {k};GET {}", key_in(3)));
    assert_eq!(r.written(0) + &r.written(1) + &r.written(2), "", "held");
    r.swap(2, MOVING);
    assert_eq!(
        r.written(0),
        migrate_of(&k, 1000),
        "moved first under the new table"
    );
    assert_eq!(r.written(2), "", "the second waits behind the first");
    r.reply(0, "+NOKEY\r\n");
    assert!(r.written(1).contains("GET"));
    assert!(r.written(2).contains("GET"));
    r.reply(2, "$1\r\ny\r\n");
    r.reply(1, "$-1\r\n");
    assert_eq!(r.output(), "$-1\r\n$1\r\ny\r\n");
}

#[test]
fn a_hold_that_lasts_too_long_answers_tryagain() {
    let mut r = Rig::new(SlotRoute::Blocked { from: 0, to: 1 });
    r.send(&format!("GET {};PING", key_in(1)));
    r.tick(100);
    assert_eq!(r.output(), "");
    r.tick(2500);
    assert_eq!(
        r.output(),
        "-TRYAGAIN the slot is on hold while a migration or failover is prepared; try again\r\n+PONG\r\n"
    );
}

#[test]
fn a_table_change_between_move_and_send_routes_again() {
    let mut r = Rig::new(MOVING);
    let k = key_in(1);
    r.send(&format!("GET {k}"));
    r.written(0);
    // The migration finished meanwhile: the target owns the slot.
    r.publish(2, SlotRoute::Stable(1));
    r.send("PING");
    r.reply(0, "+NOKEY\r\n");
    assert!(r.written(1).contains("GET"), "sent to the new owner");
    assert_eq!(r.written(0), "", "without another MIGRATE");
}

#[test]
fn moves_of_many_clients_share_one_migrate_at_a_time() {
    let mut r = Rig::new(MOVING);
    let (k1, k2, k3) = (
        key_in(1),
        format!("{{{}}}x", key_in(1)),
        format!("{{{}}}y", key_in(1)),
    );
    let (b, c) = (r.another_client(), r.another_client());
    r.send(&format!("GET {k1}"));
    assert_eq!(r.written(0), migrate_of(&k1, 1000));
    r.send_as(b, &format!("GET {k2}"));
    r.send_as(c, &format!("SET {k3} v"));
    r.send_as(b, &format!("GET {k2}"));
    assert_eq!(
        r.written(0),
        "",
        "one MIGRATE in flight per source and target"
    );
    r.reply(0, "+NOKEY\r\n");
    let next = r.written(0);
    assert!(
        next.starts_with("*9\r\n$7\r\nMIGRATE") && next.contains(&k2) && next.contains(&k3),
        "the waiting keys go in one MIGRATE, each once: {next:?}"
    );
    assert!(r.written(1).contains("GET"), "the first request went on");
    r.reply(0, "+OK\r\n");
    let to_b = r.written(1);
    // b's second GET waited behind its first; its key is now known to be
    // off the source, so it goes straight to b, without another MIGRATE.
    assert_eq!(to_b.matches("GET").count(), 2, "{to_b:?}");
    assert_eq!(to_b.matches("SET").count(), 1, "{to_b:?}");
    assert_eq!(r.written(0), "", "no MIGRATE for a key known moved");
    assert_eq!(r.worker.stats().key_moves, 2);
    let (get, set) = (to_b.find("GET").unwrap(), to_b.find("SET").unwrap());
    let replies = if get < set {
        "$1\r\n2\r\n$1\r\n3\r\n+OK\r\n"
    } else {
        "+OK\r\n$1\r\n2\r\n$1\r\n3\r\n"
    };
    r.reply(1, &format!("$1\r\n1\r\n{replies}"));
    assert_eq!(r.output(), "$1\r\n1\r\n");
    assert_eq!(r.output_of(c), "+OK\r\n");
    assert_eq!(r.output_of(b), "$1\r\n2\r\n$1\r\n3\r\n");
}

#[test]
fn unsent_moves_are_dropped_when_the_table_changes() {
    let mut r = Rig::new(MOVING);
    let (k1, k2) = (key_in(1), format!("{{{}}}x", key_in(1)));
    let b = r.another_client();
    r.send(&format!("GET {k1}"));
    r.send_as(b, &format!("GET {k2}"));
    assert_eq!(r.written(0), migrate_of(&k1, 1000));
    // The migration finished: the target owns the slot.
    r.swap(2, SlotRoute::Stable(1));
    assert!(r.written(1).contains(&k2), "routed again, without a move");
    r.reply(0, "+NOKEY\r\n");
    assert!(r.written(1).contains(&k1));
    assert_eq!(r.written(0), "", "no MIGRATE under the new table");
}

#[test]
fn a_key_known_moved_goes_straight_to_the_target_until_the_table_changes() {
    let mut r = Rig::new(MOVING);
    let k = key_in(1);
    r.send(&format!("SET {k} v"));
    assert_eq!(r.written(0), migrate_of(&k, 1000));
    r.reply(0, "+OK\r\n");
    r.written(1);
    r.reply(1, "+OK\r\n");
    assert_eq!(r.output(), "+OK\r\n");
    // The source said the key left it: later commands on it skip the move.
    let b = r.another_client();
    r.send_as(b, &format!("GET {k}"));
    assert_eq!(r.written(0), "", "no second MIGRATE");
    assert_eq!(
        r.written(1),
        format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len())
    );
    r.reply(1, "$1\r\nv\r\n");
    assert_eq!(r.output_of(b), "$1\r\nv\r\n");
    assert_eq!(r.worker.stats().key_moves, 1);
    // A multi-key command moves only the keys not known moved.
    let j = format!("{{{k}}}j");
    r.send(&format!("MSET {k} 1 {j} 2"));
    assert_eq!(r.written(0), migrate_of(&j, 1000), "only the unknown key");
    r.reply(0, "+NOKEY\r\n");
    assert!(r.written(1).contains("MSET"));
    r.reply(1, "+OK\r\n");
    assert_eq!(r.output(), "+OK\r\n");
    // A backend connection breaks (the source may have restarted from an
    // older copy of its data): nothing is known any more.
    r.lose(super::rig::addr(1));
    let b = r.another_client();
    r.send_as(b, &format!("GET {k}"));
    assert_eq!(r.written(0), migrate_of(&k, 1000), "asked again");
    r.reply(0, "+NOKEY\r\n");
    r.output_of(b);
    // Known again; a new table (the same move, a new version): forgotten.
    r.send(&format!("GET {k}"));
    assert_eq!(r.written(0), "", "known again");
    r.output();
    r.swap(3, MOVING);
    r.send(&format!("GET {k}"));
    assert_eq!(r.written(0), migrate_of(&k, 1000), "asked again");
}

#[test]
fn a_failed_move_teaches_nothing() {
    let mut r = Rig::new(MOVING);
    let k = key_in(1);
    r.send(&format!("GET {k}"));
    r.written(0);
    r.reply(0, "-IOERR error or timeout reading to target instance\r\n");
    // Retried alone with twice the timeout, and this time it moves.
    assert_eq!(r.written(0), migrate_of(&k, 2000));
    let b = r.another_client();
    r.send_as(b, &format!("GET {k}"));
    assert_eq!(
        r.written(0),
        migrate_of(&k, 1000),
        "the failed batch showed nothing: b's GET moves its key too"
    );
}

#[test]
fn a_move_answered_under_an_older_table_teaches_nothing() {
    let mut r = Rig::new(MOVING);
    let k = key_in(1);
    r.send(&format!("GET {k}"));
    assert_eq!(r.written(0), migrate_of(&k, 1000));
    // A new version of the same move while the MIGRATE is in flight.
    r.swap(2, MOVING);
    r.reply(0, "+OK\r\n");
    assert_eq!(
        r.written(0),
        migrate_of(&k, 1000),
        "routed again under the new table, which knows nothing yet"
    );
    r.reply(0, "+NOKEY\r\n");
    assert!(r.written(1).contains("GET"));
    r.reply(1, "$1\r\nv\r\n");
    assert_eq!(r.output(), "$1\r\nv\r\n");
}
