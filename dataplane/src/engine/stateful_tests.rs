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
    assert!(
        r.written(0).contains("MIGRATE"),
        "then the GET, which moves its key first as every command does"
    );
    r.reply(0, "+NOKEY\r\n");
    assert_eq!(r.written(1), request(&["GET", &k]));
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
