//! Transactions, `WATCH` and blocking commands, driven without I/O as in
//! `worker_tests.rs`: which connection each request goes on, what keyway
//! answers itself, and what it asks of Redis when a blocked client leaves.
//! Slot 1 is on group a (127.0.0.1:7000), every other slot on c.

use super::rig::{key_in, Rig, Settings};
use crate::config::BackendSettings;
use crate::routing::SlotRoute;

fn request(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

const ON_A: SlotRoute = SlotRoute::Stable(0);
const CLIENT_ID: &str = "*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";

#[test]
fn a_transaction_is_queued_by_keyway_and_sent_whole_at_exec() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("MULTI;SET {k} 1;INCR {k}"));
    assert_eq!(r.output(), "+OK\r\n+QUEUED\r\n+QUEUED\r\n");
    assert_eq!(r.written(0), "", "nothing is sent before EXEC");
    r.send("EXEC");
    let expected = [
        request(&["MULTI"]),
        request(&["SET", &k, "1"]),
        request(&["INCR", &k]),
        request(&["EXEC"]),
    ]
    .concat();
    assert_eq!(
        r.written(0),
        expected,
        "one contiguous block on the shared connection"
    );
    assert!(
        r.dedicated.is_empty(),
        "no dedicated connection without WATCH"
    );
    r.reply(0, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n");
    assert_eq!(
        r.output(),
        "*2\r\n+OK\r\n:2\r\n",
        "only EXEC's reply reaches the client"
    );
}

#[test]
fn a_transaction_is_bounded_in_commands_and_bytes() {
    let settings = Settings {
        limits: crate::config::Limits {
            max_arguments: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut r = Rig::with(ON_A, settings);
    let k = key_in(1);
    r.send(&format!("MULTI;INCR {k};INCR {k};INCR {k};EXEC"));
    assert_eq!(
        r.output(),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n-ERR a transaction holds at most \
         limits.max_arguments (2) commands\r\n-EXECABORT Transaction discarded because \
         of previous errors.\r\n"
    );
    assert_eq!(r.written(0), "", "nothing was sent");
}

#[test]
fn keys_of_two_groups_abort_the_transaction() {
    let mut r = Rig::new(ON_A);
    let (a, c) = (key_in(1), key_in(2));
    r.send(&format!("MULTI;SET {a} 1;SET {c} 1;EXEC;GET {a}"));
    assert_eq!(
        r.output(),
        "+OK\r\n+QUEUED\r\n-CROSSSLOT Keys in request don't hash to the same group\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(
        r.written(0),
        request(&["GET", &a]),
        "nothing of the transaction is sent"
    );
    r.send("MULTI;DBSIZE;EXEC");
    r.reply(0, "$-1\r\n");
    let out = r.output();
    assert!(
        out.contains("cannot queue 'DBSIZE' in a transaction")
            && out.ends_with("-EXECABORT Transaction discarded because of previous errors.\r\n"),
        "{out}"
    );
}

#[test]
fn watch_holds_a_dedicated_connection_until_its_transaction_is_answered() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("WATCH {k};GET {k};MULTI;SET {k} 2;EXEC;GET {k}"));
    assert_eq!(r.written(0), "", "nothing on the shared connection");
    let block = [
        CLIENT_ID.to_string(),
        request(&["WATCH", &k]),
        request(&["GET", &k]),
        request(&["MULTI"]),
        request(&["SET", &k, "2"]),
        request(&["EXEC"]),
        request(&["GET", &k]),
    ]
    .concat();
    assert_eq!(
        r.written_dedicated(0),
        block,
        "the watch, the transaction and the GET after it, in order, on one connection"
    );
    r.reply_dedicated(
        0,
        ":7\r\n+OK\r\n$1\r\n1\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n$1\r\n2\r\n",
    );
    assert_eq!(
        r.output(),
        "+OK\r\n$1\r\n1\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n$1\r\n2\r\n"
    );
    r.send(&format!("GET {k}"));
    assert_eq!(
        r.written(0),
        request(&["GET", &k]),
        "the watch is over and its requests answered: back on the shared connection"
    );
    r.send(&format!("WATCH {k}"));
    assert_eq!(
        r.written_dedicated(0),
        "",
        "the earlier GET is in flight: the new WATCH waits for it"
    );
    r.reply(0, "$1\r\n2\r\n");
    assert_eq!(
        r.written_dedicated(0),
        request(&["WATCH", &k]),
        "then it reuses the free dedicated connection"
    );
    assert_eq!(r.dedicated.len(), 1);
}

#[test]
fn discard_and_unwatch_end_the_watch_at_redis() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("WATCH {k};MULTI;DISCARD"));
    assert_eq!(
        r.written_dedicated(0),
        [
            CLIENT_ID.to_string(),
            request(&["WATCH", &k]),
            request(&["UNWATCH"])
        ]
        .concat()
    );
    r.reply_dedicated(0, ":7\r\n+OK\r\n+OK\r\n");
    assert_eq!(r.output(), "+OK\r\n+OK\r\n+OK\r\n");
    r.send("UNWATCH;EXEC;DISCARD");
    assert_eq!(
        r.output(),
        "+OK\r\n-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n"
    );
}

#[test]
fn a_blocking_command_runs_on_a_dedicated_connection_and_holds_back_its_client() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("BLPOP {k} 0;GET {k}"));
    assert_eq!(
        r.written_dedicated(0),
        [CLIENT_ID.to_string(), request(&["BLPOP", &k, "0"])].concat()
    );
    assert_eq!(r.written(0), "", "the GET waits until the block is over");
    let other = r.another_client();
    r.send_as(other, &format!("GET {k}"));
    assert_eq!(
        r.written(0),
        request(&["GET", &k]),
        "another client is not blocked"
    );
    r.reply(0, "$-1\r\n");
    assert_eq!(r.output_of(other), "$-1\r\n");
    r.reply_dedicated(0, ":7\r\n");
    r.tick(60_000);
    assert!(
        r.worker.client_status(r.client) != super::ClientStatus::Gone,
        "a block of 0 never times out"
    );
    r.reply_dedicated(0, "*2\r\n$2\r\nk1\r\n$1\r\nx\r\n");
    assert!(r.output().starts_with("*2\r\n"));
    assert_eq!(
        r.written(0),
        request(&["GET", &k]),
        "then the client goes on"
    );
    r.send(&format!("BRPOP {k} 1"));
    assert_eq!(
        r.written_dedicated(0),
        "",
        "the GET is in flight: the BRPOP must not overtake it"
    );
    r.reply(0, "$-1\r\n");
    assert_eq!(
        r.written_dedicated(0),
        request(&["BRPOP", &k, "1"]),
        "the dedicated connection was given back and is reused"
    );
}

#[test]
fn a_blocked_client_that_leaves_is_unblocked_and_what_it_popped_is_pushed_back() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("GET {k}"));
    r.written(0);
    r.reply(0, "$-1\r\n");
    r.output();
    r.send(&format!("BLPOP {k} 0"));
    r.written_dedicated(0);
    r.reply_dedicated(0, ":42\r\n");
    r.worker.client_eof(r.client);
    assert_eq!(
        r.written(0),
        request(&["CLIENT", "UNBLOCK", "42"]),
        "the block is ended at once from a shared connection"
    );
    // The pop completed before the unblock reached Redis.
    r.reply(0, ":0\r\n");
    r.reply_dedicated(0, "*2\r\n$2\r\nk1\r\n$1\r\nx\r\n");
    assert_eq!(
        r.written_dedicated(0),
        request(&["LPUSH", "k1", "x"]),
        "the element goes back to the head of its list"
    );
    r.reply_dedicated(0, ":1\r\n");
    assert_eq!(r.worker.stats().elements_restored, 1);
    let other = r.another_client();
    r.send_as(other, &format!("BLPOP {k} 0"));
    assert_eq!(
        r.written_dedicated(0),
        request(&["BLPOP", &k, "0"]),
        "the connection is free again"
    );
}

#[test]
fn the_unblock_is_repeated_until_the_block_is_over() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("BZPOPMIN {k} 0"));
    r.written_dedicated(0);
    r.reply_dedicated(0, ":9\r\n");
    let c = r.client;
    r.worker.client_gone(c);
    assert_eq!(r.written(0), request(&["CLIENT", "UNBLOCK", "9"]));
    r.reply(0, ":0\r\n");
    r.tick(1_000);
    assert_eq!(
        r.written(0),
        request(&["CLIENT", "UNBLOCK", "9"]),
        "the command had not reached Redis: unblocked again"
    );
    r.reply(0, ":1\r\n");
    r.reply_dedicated(0, "*-1\r\n");
    r.tick(2_000);
    assert_eq!(r.written(0), "", "the block is over: no more unblocks");
    assert_eq!(
        r.written_dedicated(0),
        "",
        "a timeout reply restores nothing"
    );
}

#[test]
fn dedicated_connections_are_capped_per_core() {
    let settings = Settings {
        backend: BackendSettings {
            dedicated_connections: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut r = Rig::with(ON_A, settings);
    let k = key_in(1);
    r.send(&format!("BLPOP {k} 0"));
    let other = r.another_client();
    r.send_as(other, &format!("WATCH {k}"));
    assert_eq!(
        r.output_of(other),
        "-ERR every dedicated backend connection of this keyway core is in use \
         (backend.dedicated_connections = 1); WATCH and blocking commands need one\r\n"
    );
}

#[test]
fn exec_on_a_migrating_slot_moves_the_keys_first() {
    let mut r = Rig::new(SlotRoute::Moving { from: 0, to: 1 });
    let k = key_in(1);
    r.send(&format!("MULTI;SET {k} 1;EXEC"));
    assert_eq!(r.output(), "+OK\r\n+QUEUED\r\n");
    let migrate = r.written(0);
    assert!(
        migrate.contains("MIGRATE") && migrate.contains(&k),
        "the key moves from a first: {migrate}"
    );
    assert_eq!(r.written(1), "");
    r.reply(0, "+NOKEY\r\n");
    assert_eq!(
        r.written(1),
        [
            request(&["MULTI"]),
            request(&["SET", &k, "1"]),
            request(&["EXEC"])
        ]
        .concat(),
        "then the transaction goes to b"
    );
    r.reply(1, "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    assert_eq!(r.output(), "*1\r\n+OK\r\n");
}

#[test]
fn wait_runs_on_a_dedicated_connection_of_each_group_written_to() {
    let mut r = Rig::new(ON_A);
    let (a, c) = (key_in(1), key_in(2));
    r.send(&format!("SET {a} 1;GET {c};WAIT 1 100"));
    assert_eq!(r.written(0), request(&["SET", &a, "1"]));
    assert_eq!(r.written(2), request(&["GET", &c]));
    assert_eq!(
        r.written_dedicated(0),
        "",
        "WAIT waits for the writes to be answered"
    );
    r.reply(0, "+OK\r\n");
    r.reply(2, "$-1\r\n");
    assert_eq!(
        r.written_dedicated(0),
        [
            CLIENT_ID.to_string(),
            request(&["PUBLISH", "__keyway__:wait", ""]),
            request(&["WAIT", "1", "100"])
        ]
        .concat(),
        "only group a was written to; the PUBLISH sets the connection's offset past the SET"
    );
    assert_eq!(r.dedicated.len(), 1, "c was only read from");
    r.reply_dedicated(0, ":3\r\n:0\r\n:1\r\n");
    assert_eq!(r.output(), "+OK\r\n$-1\r\n:1\r\n");
    r.send(&format!("SET {a} 2;SET {c} 2"));
    r.written(0);
    r.written(2);
    r.reply(0, "+OK\r\n");
    r.reply(2, "+OK\r\n");
    r.send("WAIT 1 0");
    r.written_dedicated(0);
    r.written_dedicated(1);
    r.reply_dedicated(0, ":0\r\n:2\r\n");
    assert_eq!(r.output(), "+OK\r\n+OK\r\n", "one group has answered");
    r.reply_dedicated(1, ":3\r\n:0\r\n:1\r\n");
    assert_eq!(
        r.output(),
        ":1\r\n",
        "two groups written to: the least of their acknowledgements"
    );
    r.send("WAIT 0 0");
    assert_eq!(
        r.written_dedicated(1),
        request(&["WAIT", "0", "0"]),
        "nothing written since: no offset bump, on the keyless group (slot 0's: c)"
    );
}

#[test]
fn a_blocking_command_on_a_migrating_slot_moves_its_keys_then_blocks_on_the_target() {
    let mut r = Rig::new(SlotRoute::Moving { from: 0, to: 1 });
    let k = key_in(1);
    r.send(&format!("BLPOP {k} 0;GET {k}"));
    let migrate = r.written(0);
    assert!(
        migrate.contains("MIGRATE") && migrate.contains(&k),
        "{migrate}"
    );
    assert!(r.dedicated.is_empty(), "nothing leased before the move");
    r.reply(0, "+NOKEY\r\n");
    assert_eq!(
        r.written_dedicated(0),
        [CLIENT_ID.to_string(), request(&["BLPOP", &k, "0"])].concat(),
        "then it blocks on a dedicated connection to b"
    );
    assert_eq!(r.written(1), "", "the GET waits for the block");
    r.reply_dedicated(0, ":5\r\n*2\r\n$2\r\nk2\r\n$1\r\nx\r\n");
    assert_eq!(
        r.written(0),
        "",
        "the BLPOP's move showed its key off the source: no second MIGRATE"
    );
    assert_eq!(
        r.written(1),
        request(&["GET", &k]),
        "then the GET, straight to b"
    );
}

#[test]
fn a_failover_ends_the_watches_and_blocks_on_the_old_master() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("BLPOP {k} 0"));
    r.written_dedicated(0);
    r.reply_dedicated(0, ":5\r\n");
    // Slot 1's group now answers at b only if the table says so; here the
    // pool of a stops being used when its group leaves the table's use.
    let other = r.another_client();
    r.send_as(other, &format!("WATCH {k}"));
    r.written_dedicated(1);
    r.reply_dedicated(1, ":6\r\n+OK\r\n");
    assert_eq!(r.output_of(other), "+OK\r\n");
    r.settings.unresolved = Some(0);
    r.swap(2, ON_A);
    let out = r.output();
    assert!(
        out.starts_with("-ERR backend a unavailable: the group's master changed"),
        "{out}"
    );
    r.send_as(other, &format!("MULTI;SET {k} 1;EXEC"));
    assert_eq!(
        r.output_of(other),
        "+OK\r\n+QUEUED\r\n*-1\r\n",
        "the watch was lost: EXEC answers nil"
    );
}

#[test]
fn a_blocked_command_does_not_hold_a_new_tables_ack_and_follows_its_keys() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("BLPOP {k} 0"));
    r.written_dedicated(0);
    r.reply_dedicated(0, ":5\r\n");
    assert_eq!(
        r.worker.oldest_inflight_version(),
        None,
        "a blocked command is not counted: it would hold every new table's ack"
    );
    r.swap(2, SlotRoute::Moving { from: 0, to: 1 });
    assert_eq!(
        r.written(0),
        request(&["CLIENT", "UNBLOCK", "5"]),
        "its slot migrates: keyway ends the block to send it again"
    );
    r.reply(0, ":1\r\n");
    r.reply_dedicated(0, "*-1\r\n");
    assert_eq!(r.output(), "", "the timeout reply is not the client's");
    assert!(
        r.written(0).contains("MIGRATE"),
        "sent again by the new table: its key moves first"
    );
    r.reply(0, "+NOKEY\r\n");
    assert_eq!(
        r.written_dedicated(1),
        [CLIENT_ID.to_string(), request(&["BLPOP", &k, "0.000"])].concat(),
        "then it blocks on b, still forever"
    );
    r.reply_dedicated(1, ":6\r\n*2\r\n$2\r\nk2\r\n$1\r\nx\r\n");
    assert_eq!(r.output(), "*2\r\n$2\r\nk2\r\n$1\r\nx\r\n");
}

// ---- found by an adversarial review ------------------------------------

#[test]
fn discard_then_watch_on_another_group_leaks_the_first_connection() {
    let settings = Settings {
        backend: BackendSettings {
            dedicated_connections: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut r = Rig::with(ON_A, settings);
    let (a, c) = (key_in(1), key_in(2));
    r.send(&format!("WATCH {a};MULTI;DISCARD;WATCH {c}"));
    assert_eq!(
        r.written_dedicated(0),
        [
            CLIENT_ID.to_string(),
            request(&["WATCH", &a]),
            request(&["UNWATCH"])
        ]
        .concat()
    );
    // WATCH a's reply; the UNWATCH keyway sent for DISCARD is still in flight.
    r.reply_dedicated(0, ":7\r\n+OK\r\n");
    assert_eq!(r.output(), "+OK\r\n+OK\r\n+OK\r\n");
    assert_eq!(
        r.written_dedicated(1),
        [CLIENT_ID.to_string(), request(&["WATCH", &c])].concat()
    );
    r.reply_dedicated(1, ":8\r\n+OK\r\n");
    r.reply_dedicated(0, "+OK\r\n");
    assert_eq!(r.output(), "+OK\r\n");
    // The client leaves: both its connections should be back.
    let me = r.client;
    r.worker.client_gone(me);
    r.tick(10);
    let other = r.another_client();
    r.send_as(other, &format!("BLPOP {a} 0"));
    assert_eq!(
        r.output_of(other),
        "",
        "connection 0 (group a) should have been given back, not leaked"
    );
}

#[test]
fn wait_after_exec_waits_on_the_transactions_group() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("MULTI;SET {k} 1;EXEC"));
    r.written(0);
    r.reply(0, "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    assert_eq!(r.output(), "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    r.send("WAIT 1 0");
    r.connect();
    assert_eq!(
        r.dedicated.first().map(|d| d.0),
        Some(super::rig::addr(0)),
        "the transaction wrote to group a: WAIT must run there"
    );
    assert_eq!(
        r.written_dedicated(0),
        [
            CLIENT_ID.to_string(),
            request(&["PUBLISH", "__keyway__:wait", ""]),
            request(&["WAIT", "1", "0"])
        ]
        .concat()
    );
}

#[test]
fn wait_after_blmove_waits_on_its_group() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("BLMOVE {k} {{{k}}}x LEFT RIGHT 0"));
    r.written_dedicated(0);
    r.reply_dedicated(0, ":5\r\n$1\r\nv\r\n");
    assert_eq!(r.output(), "$1\r\nv\r\n");
    r.send("WAIT 1 0");
    assert!(
        r.written_dedicated(0)
            .contains(&request(&["PUBLISH", "__keyway__:wait", ""])),
        "BLMOVE wrote to group a: WAIT must bump and wait there"
    );
}

#[test]
fn a_multi_group_wait_releases_a_reused_slab_index() {
    let mut r = Rig::new(ON_A);
    let (a, c) = (key_in(1), key_in(2));
    r.send(&format!("SET {a} 1;SET {c} 1"));
    r.written(0);
    r.written(2);
    r.reply(0, "+OK\r\n");
    r.reply(2, "+OK\r\n");
    r.output();
    r.send("WAIT 1 0");
    r.written_dedicated(0);
    r.written_dedicated(1);
    assert_eq!(r.dedicated[1].0, super::rig::addr(2));
    r.reply_dedicated(0, ":3\r\n:0\r\n");
    // c's dedicated connection breaks: its part gets the error, and the
    // connection is closed and removed from the slab.
    let id = r.dedicated[1].1;
    r.worker
        .backend_failed(id, "the backend closed the connection");
    r.tick(10);
    // Another client watches a key of c: a new dedicated connection, which
    // takes the freed slab index.
    let other = r.another_client();
    r.send_as(other, &format!("WATCH {c}"));
    r.written_dedicated(2);
    assert_eq!(r.dedicated[2].1.idx, id.idx, "slab index reused");
    r.reply_dedicated(2, ":9\r\n+OK\r\n");
    assert_eq!(r.output_of(other), "+OK\r\n");
    // The first client's WAIT ends.
    r.reply_dedicated(0, ":1\r\n");
    r.output();
    // The other client's watch must be intact.
    r.send_as(other, &format!("MULTI;SET {c} 2;EXEC"));
    assert_eq!(
        r.written_dedicated(2),
        [
            request(&["MULTI"]),
            request(&["SET", &c, "2"]),
            request(&["EXEC"])
        ]
        .concat(),
        "the watch connection was given away by the other client's WAIT"
    );
}

#[test]
fn a_kept_back_exec_that_fails_ends_a_later_transaction_too() {
    let mut r = Rig::new(SlotRoute::Moving { from: 0, to: 1 });
    let k = key_in(1);
    r.send(&format!("GET {k};MULTI;SET {k} 1;EXEC;MULTI;SET {k} 2"));
    assert!(r.written(0).contains("MIGRATE"));
    // The slot loses its group before the move is answered: the kept-back
    // EXEC fails when it is dispatched again.
    r.swap(2, SlotRoute::Unassigned);
    r.reply(0, "+NOKEY\r\n");
    r.send("EXEC");
    let out = r.output();
    assert!(
        !out.contains("EXEC without MULTI"),
        "the second MULTI was open when the first EXEC failed: {out}"
    );
}

#[test]
fn a_client_that_closed_before_its_kept_back_blpop_ran_is_not_left_blocked() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("GET {k};BLPOP {k} 0"));
    assert_eq!(r.written(0), request(&["GET", &k]));
    // The client closes its side (e.g. `redis-cli < file`, `nc -q`).
    r.worker.client_eof(r.client);
    r.reply(0, "$-1\r\n");
    r.written_dedicated(0);
    r.tick(60_000);
    let status = r.status();
    assert!(
        !matches!(
            status,
            super::ClientStatus::WriteOnly | super::ClientStatus::Active
        ),
        "a client that sent EOF is blocked forever holding a dedicated connection: {status:?}"
    );
}

#[test]
fn a_leaving_watcher_only_restores_what_its_blocking_command_popped() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("WATCH {k};LRANGE {k} 0 -1;BLPOP {k} 0"));
    assert_eq!(
        r.written_dedicated(0),
        [
            CLIENT_ID.to_string(),
            request(&["WATCH", &k]),
            request(&["LRANGE", &k, "0", "-1"]),
            request(&["BLPOP", &k, "0"]),
        ]
        .concat(),
        "all three on the watch connection"
    );
    r.reply_dedicated(0, ":7\r\n+OK\r\n");
    // The client leaves before LRANGE's reply is read.
    r.worker.client_eof(r.client);
    r.written(0);
    r.reply(0, ":1\r\n");
    // LRANGE's reply, then the BLPOP's timeout after CLIENT UNBLOCK.
    r.reply_dedicated(0, "*2\r\n$1\r\nx\r\n$1\r\ny\r\n*-1\r\n");
    let written = r.written_dedicated(0);
    assert!(
        !written.contains("LPUSH"),
        "LRANGE's reply was taken for elements the BLPOP popped: {written:?}"
    );
}

#[test]
fn a_keyless_script_inside_multi_runs_where_it_would_outside() {
    // A script naming no keys runs on the keyless group (slot 0's: c
    // here); inside a transaction it binds the transaction to that group.
    let mut r = Rig::new(ON_A);
    let a = key_in(1);
    r.send(&format!("MULTI;SET {a} 1;EVAL return 0"));
    assert_eq!(
        r.output(),
        "+OK\r\n+QUEUED\r\n-CROSSSLOT Keys in request don't hash to the same group\r\n",
        "a's key, then a script bound to c"
    );
    r.send("DISCARD;MULTI;EVAL return 0;EXEC");
    r.output();
    assert_eq!(
        r.written(2),
        [
            request(&["MULTI"]),
            request(&["EVAL", "return", "0"]),
            request(&["EXEC"])
        ]
        .concat(),
        "alone, it runs on c"
    );
}

#[test]
fn a_timeout_redis_reads_but_keyway_does_not_fails_the_backend() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    // Redis 7.0 reads timeouts with strtold: 0x10 is 16 seconds.
    r.send(&format!("BLPOP {k} 0x10"));
    r.written_dedicated(0);
    r.reply_dedicated(0, ":5\r\n");
    r.tick(8_000);
    assert_eq!(
        r.output(),
        "",
        "Redis still blocks (16 s): keyway must not fail the connection"
    );
}

#[test]
fn xreadgroup_of_a_group_named_block_keeps_its_own_block() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("XREADGROUP GROUP block 100 BLOCK 0 STREAMS {k} >"));
    r.written_dedicated(0);
    r.reply_dedicated(0, ":5\r\n");
    r.tick(8_000);
    assert_eq!(
        r.output(),
        "",
        "BLOCK 0 waits forever; keyway read the consumer name (100) as the block"
    );
}

#[test]
fn a_connection_is_not_leased_while_a_client_unblock_for_it_is_in_flight() {
    let mut r = Rig::new(ON_A);
    let k = key_in(1);
    r.send(&format!("BLPOP {k} 0"));
    r.written_dedicated(0);
    r.reply_dedicated(0, ":5\r\n");
    let c = r.client;
    r.worker.client_gone(c);
    assert_eq!(r.written(0), request(&["CLIENT", "UNBLOCK", "5"]));
    // The shared connection is slow: the retry goes out behind the first.
    r.tick(200);
    assert_eq!(r.written(0), request(&["CLIENT", "UNBLOCK", "5"]));
    // Redis ran the first: the block ends.
    r.reply(0, ":1\r\n");
    r.reply_dedicated(0, "*-1\r\n");
    // Another client blocks at once, on the same (free) connection, while
    // the second CLIENT UNBLOCK 5 is still to be run by Redis: it will
    // end this client's BLPOP 0 with a nil Redis never sends for timeout 0.
    let other = r.another_client();
    r.send_as(other, &format!("BLPOP {k} 0"));
    assert_eq!(
        r.written_dedicated(0),
        "",
        "connection 5 leased again while a CLIENT UNBLOCK 5 is unanswered"
    );
}

/// Users changed between `MULTI` and an `EXEC` refused whole (fenced): the
/// queued commands are not checked again, so `ACL LOG` records nothing for
/// commands that never ran.
#[test]
fn a_fenced_exec_logs_no_acl_refusal_of_its_commands() {
    use std::sync::Arc;

    use crate::acl::{UserConfig, Users};

    let users = |rules: &str| {
        Arc::new(
            Users::from_config(&[
                UserConfig {
                    name: "default".into(),
                    rules: "on >d ~* &* +@all".into(),
                },
                UserConfig {
                    name: "u".into(),
                    rules: rules.into(),
                },
            ])
            .unwrap(),
        )
    };
    let mut r = Rig::with(
        SlotRoute::Stable(2),
        Settings {
            users: users("on >p ~* &* +@all"),
            ..Settings::default()
        },
    );
    r.send("AUTH u p");
    r.send("MULTI");
    r.send("SET k v");
    assert_eq!(r.output(), "+OK\r\n+OK\r\n+QUEUED\r\n");
    r.settings.users = users("on >p ~* &* +@all -set");
    r.settings.fence = Some("the lease ended");
    r.swap(2, SlotRoute::Stable(2));
    r.send("EXEC");
    let out = r.output();
    assert!(
        out.starts_with('-') && out.contains("the lease ended"),
        "{out:?}"
    );
    r.settings.fence = None;
    r.swap(3, SlotRoute::Stable(2));
    r.send("ACL LOG");
    assert_eq!(r.output(), "*0\r\n", "nothing ran, nothing is logged");
    // The same transaction unfenced is checked again and logged.
    r.send("MULTI");
    r.send("GET k");
    assert_eq!(r.output(), "+OK\r\n+QUEUED\r\n");
    r.settings.users = users("on >p ~* &* +@all -get");
    r.swap(4, SlotRoute::Stable(2));
    r.send("EXEC");
    let sent = r.written(2);
    assert!(
        sent.contains("redis.error_reply") && !sent.contains("GET"),
        "the refused GET goes as the error's stand-in: {sent:?}"
    );
}
