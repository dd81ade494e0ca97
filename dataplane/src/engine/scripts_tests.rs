//! Scripts and functions in the worker, driven without I/O as in
//! `worker_tests.rs`: what each group's connection gets for `SCRIPT LOAD`,
//! `EVALSHA` (with its `NOSCRIPT` retry), keyless calls and a partial
//! `FUNCTION LOAD` (undone), as raw RESP. Slot 1 is on group a, every other
//! slot (slot 0 included: the documented group) on c.

use super::rig::{key_in, Rig};
use crate::routing::SlotRoute;

fn request(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

fn bulk(v: &str) -> String {
    format!("${}\r\n{v}\r\n", v.len())
}

const BODY: &str = "return redis.call('GET', KEYS[1])";
const NOSCRIPT: &str = "-NOSCRIPT No matching script. Please use EVAL.\r\n";

fn sha() -> String {
    sha1_smol::Sha1::from(BODY).digest().to_string()
}

/// A rig whose every group has answered `SCRIPT LOAD BODY`.
fn loaded() -> Rig {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.send_raw(request(&["SCRIPT", "LOAD", BODY]).as_bytes());
    for g in 0..3 {
        assert_eq!(
            r.written(g),
            request(&["SCRIPT", "LOAD", BODY]),
            "SCRIPT LOAD goes to group {g}"
        );
    }
    for g in 0..3 {
        r.reply(g, &bulk(&sha()));
    }
    assert_eq!(r.output(), bulk(&sha()), "every group agrees: the sha");
    r
}

#[test]
fn an_evalsha_answered_noscript_is_loaded_and_sent_again_once() {
    let mut r = loaded();
    let k = key_in(1);
    let call = request(&["EVALSHA", &sha(), "1", &k]);
    r.send_raw(call.as_bytes());
    assert_eq!(
        r.written(0),
        format!("{}{call}", request(&["SCRIPT", "LOAD", BODY])),
        "the connection's first EVALSHA of the script goes after a SCRIPT LOAD"
    );
    r.reply(0, &bulk(&sha()));
    // The server flushed its scripts behind keyway's back meanwhile.
    r.reply(0, NOSCRIPT);
    assert_eq!(r.output(), "", "NOSCRIPT is not delivered");
    assert_eq!(
        r.written(0),
        format!("{}{call}", request(&["SCRIPT", "LOAD", BODY])),
        "loaded, then sent again"
    );
    r.reply(0, &bulk(&sha()));
    r.reply(0, "$1\r\nv\r\n");
    assert_eq!(r.output(), "$1\r\nv\r\n", "the retried call's reply");
    let stats = r.worker.stats();
    assert_eq!((stats.scripts_preloaded, stats.scripts_retried), (1, 1));
    assert_eq!(r.worker.ctx.scripts.retriable(), 0, "nothing kept");

    // Known on this connection now: the call alone; a second NOSCRIPT
    // (the load failed) is delivered as is.
    r.send_raw(call.as_bytes());
    assert_eq!(r.written(0), call);
    r.reply(0, NOSCRIPT);
    assert_eq!(
        r.written(0),
        format!("{}{call}", request(&["SCRIPT", "LOAD", BODY]))
    );
    r.reply(0, "-ERR Error compiling script\r\n");
    r.reply(0, NOSCRIPT);
    assert_eq!(r.output(), NOSCRIPT);
    assert_eq!(r.worker.ctx.scripts.retriable(), 0);
}

#[test]
fn an_evalsha_of_an_unknown_script_costs_nothing_extra() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    let call = request(&["EVALSHA", &"f".repeat(40), "1", &key_in(1)]);
    r.send_raw(call.as_bytes());
    assert_eq!(r.written(0), call, "no SCRIPT LOAD");
    r.reply(0, NOSCRIPT);
    assert_eq!(r.output(), NOSCRIPT, "delivered as is");
    assert_eq!(r.worker.ctx.scripts.retriable(), 0);
}

#[test]
fn a_call_without_keys_goes_to_the_owner_of_slot_0() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    let call = request(&["EVAL", "return 1", "0"]);
    r.send_raw(call.as_bytes());
    assert_eq!(r.written(2), call, "slot 0 is on c");
    assert_eq!(r.written(0), "");
    r.reply(2, ":1\r\n");
    // The body was remembered: an EVALSHA of it may be retried.
    let sha = sha1_smol::Sha1::from("return 1").digest().to_string();
    let again = request(&["EVALSHA", &sha.to_uppercase(), "0"]);
    r.send_raw(again.as_bytes());
    assert_eq!(
        r.written(2),
        format!("{}{again}", request(&["SCRIPT", "LOAD", "return 1"]))
    );
    r.reply(2, &bulk(&sha));
    r.reply(2, ":1\r\n");
    assert_eq!(r.output(), ":1\r\n:1\r\n");
    let list = request(&["FUNCTION", "LIST"]);
    r.send_raw(list.as_bytes());
    assert_eq!(r.written(2), list, "FUNCTION LIST: the documented group");
}

#[test]
fn a_function_load_failing_on_one_group_is_undone_on_the_others() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    let code = "#!lua name=lib\nredis.register_function('f', function() return 1 end)";
    let load = request(&["FUNCTION", "LOAD", code]);
    r.send_raw(load.as_bytes());
    for g in 0..3 {
        assert_eq!(r.written(g), load);
    }
    r.reply(2, &bulk("lib"));
    r.reply(1, "-ERR Library 'lib' already exists\r\n");
    assert_eq!(r.output(), "", "until every group answered");
    r.reply(0, &bulk("lib"));
    assert_eq!(
        r.output(),
        "-ERR keyway: FUNCTION LOAD failed on group(s) b (ERR Library 'lib' already exists); \
         it succeeded on a, c, undone on a (FUNCTION DELETE lib), c (FUNCTION DELETE lib)\r\n"
    );
    let delete = request(&["FUNCTION", "DELETE", "lib"]);
    assert_eq!(r.written(0), delete);
    assert_eq!(r.written(2), delete);
    assert_eq!(r.written(1), "", "nothing to undo where it failed");
    assert_eq!(r.worker.stats().scripts_undone, 2);
    r.reply(0, "+OK\r\n");
    r.reply(2, "+OK\r\n");
    assert_eq!(r.output(), "", "the undo's replies go to no one");

    // With REPLACE, nothing is undone.
    let replace = request(&["FUNCTION", "LOAD", "REPLACE", code]);
    r.send_raw(replace.as_bytes());
    for g in 0..3 {
        assert_eq!(r.written(g), replace);
    }
    r.reply(0, &bulk("lib"));
    r.reply(
        1,
        "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    );
    r.reply(2, &bulk("lib"));
    assert!(r
        .output()
        .ends_with("it succeeded on a, c, where it was not undone\r\n"));
    assert_eq!(r.written(0), "");
}

#[test]
fn the_frame_kept_for_a_client_that_left_is_dropped_at_the_next_tick() {
    let mut r = loaded();
    let call = request(&["EVALSHA", &sha(), "1", &key_in(1)]);
    r.send_raw(call.as_bytes());
    r.written(0);
    assert_eq!(r.worker.ctx.scripts.retriable(), 1, "kept until its reply");
    let gone = r.client;
    r.worker.client_gone(gone);
    r.tick(100);
    assert_eq!(
        r.worker.ctx.scripts.retriable(),
        0,
        "dropped with its client"
    );
    // Its replies, when they come, go to no one.
    r.reply(0, &bulk(&sha()));
    r.reply(0, NOSCRIPT);
    assert_eq!(r.worker.ctx.scripts.retriable(), 0);
    assert_eq!(r.written(0), "", "no retry for a client that left");
}
