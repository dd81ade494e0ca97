//! The worker outside migrations, driven without I/O as in
//! `moves_tests.rs`: the test plays the transport (accepts, reads, writes,
//! connects, loses connections) and checks the raw RESP bytes each side
//! gets. Slot 1 is on group a (127.0.0.1:7000), every other slot on c
//! (127.0.0.1:7002).

use super::rig::{addr, key_in, Rig, Settings};
use super::{ClientStatus, Drain, Rejected, DRAIN};
use crate::config::Limits;
use crate::routing::SlotRoute;

/// `args` as the multibulk request a client (or keyway) sends.
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

const ON_A: SlotRoute = SlotRoute::Stable(0);

#[test]
fn a_request_goes_whole_to_its_keys_group_and_its_reply_comes_back() {
    let mut r = Rig::new(ON_A);
    let (k1, k2) = (key_in(1), key_in(2));
    r.send(&format!("GET {k1}"));
    assert_eq!(r.written(0), request(&["GET", &k1]), "a's slot: to a");
    assert_eq!(r.written(2), "", "nothing to c");
    r.send(&format!("SET {k2} v"));
    assert_eq!(r.written(2), request(&["SET", &k2, "v"]), "c's slot: to c");
    r.reply(0, "$2\r\nva\r\n");
    r.reply(2, "+OK\r\n");
    assert_eq!(r.output(), "$2\r\nva\r\n+OK\r\n");
    assert_eq!(r.worker.stats().requests_forwarded, 2);
}

#[test]
fn replies_from_two_groups_reach_the_client_in_request_order() {
    let mut r = Rig::new(ON_A);
    let (k1, k2) = (key_in(1), key_in(2));
    r.send(&format!("GET {k1};GET {k2};PING"));
    r.written(0);
    r.written(2);
    r.reply(2, "$1\r\nc\r\n");
    assert_eq!(
        r.output(),
        "",
        "c's reply waits for the reply to the first request"
    );
    r.reply(0, "$1\r\na\r\n");
    assert_eq!(r.output(), "$1\r\na\r\n$1\r\nc\r\n+PONG\r\n");
}

#[test]
fn a_split_request_goes_to_each_group_and_is_merged_in_key_order() {
    let mut r = Rig::new(ON_A);
    let (k1, k2, k3) = (key_in(1), key_in(2), key_in(3));
    r.send(&format!("MGET {k2} {k1} {k3}"));
    assert_eq!(
        r.written(2),
        request(&["MGET", &k2, &k3]),
        "c's part: its keys in order"
    );
    assert_eq!(r.written(0), request(&["MGET", &k1]), "a's part");
    r.reply(0, &format!("*1\r\n{}", bulk("v1")));
    assert_eq!(r.output(), "", "the merge waits for every part");
    r.reply(2, &format!("*2\r\n{}{}", bulk("v2"), bulk("v3")));
    assert_eq!(
        r.output(),
        format!("*3\r\n{}{}{}", bulk("v2"), bulk("v1"), bulk("v3")),
        "values in the request's key order"
    );
    assert_eq!(r.worker.stats().requests_split, 1);
}

#[test]
fn keys_of_two_groups_in_a_single_group_command_are_crossslot() {
    let mut r = Rig::new(ON_A);
    let (k1, k2) = (key_in(1), key_in(2));
    r.send(&format!("RENAME {k1} {k2}"));
    assert_eq!(r.written(0) + &r.written(2), "", "sent nowhere");
    assert_eq!(
        r.output(),
        "-CROSSSLOT Keys in request don't hash to the same group\r\n"
    );
}

#[test]
fn a_backend_failing_with_requests_in_flight_answers_each_with_its_error_in_order() {
    let mut r = Rig::new(ON_A);
    let (k1, k2) = (key_in(1), key_in(2));
    r.send(&format!("GET {k1};GET {k2};INCR {k1}"));
    r.written(0);
    r.written(2);
    r.lose(addr(0));
    let down = "-ERR backend a unavailable: the backend closed the connection\r\n";
    assert_eq!(
        r.output(),
        down,
        "the first request's error at once; the third's waits for the second's reply"
    );
    r.reply(2, "$1\r\nc\r\n");
    assert_eq!(r.output(), format!("$1\r\nc\r\n{down}"));
    assert!(!r.backend_live(0), "the connection is dropped");
    // During the backoff a new request for a fails at once, unsent.
    r.send(&format!("GET {k1}"));
    assert_eq!(r.output(), down);
    assert_eq!(r.connect(), 0, "no new attempt during the backoff");
    let s = r.worker.stats();
    assert_eq!((s.backend_failures, s.errors_backend), (1, 3));
}

#[test]
fn a_reply_no_request_asked_for_fails_the_connection() {
    let mut r = Rig::new(ON_A);
    let k1 = key_in(1);
    r.send(&format!("GET {k1}"));
    r.written(0);
    r.reply(0, "$1\r\na\r\n+OK\r\n");
    assert_eq!(r.output(), "$1\r\na\r\n", "the reply owed is delivered");
    assert!(!r.backend_live(0), "then the connection is failed");
    assert_eq!(r.worker.stats().backend_unsolicited, 1);
}

#[test]
fn accept_refuses_past_max_clients_and_while_shutting_down() {
    let settings = Settings {
        limits: Limits {
            max_clients: 2,
            ..Limits::default()
        },
        ..Settings::default()
    };
    let mut r = Rig::with(ON_A, settings);
    let second = r.another_client();
    let peer = "127.0.0.1:50002".parse().unwrap();
    assert_eq!(r.worker.accept(peer, peer), Err(Rejected::MaxClients));
    assert_eq!(r.worker.client_count(), 2);
    r.worker.client_gone(second);
    assert!(r.worker.accept(peer, peer).is_ok(), "a slot is free again");
    r.worker.begin_shutdown();
    assert_eq!(r.worker.accept(peer, peer), Err(Rejected::ShuttingDown));
    let s = r.worker.stats();
    assert_eq!((s.clients_accepted, s.clients_rejected), (3, 1));
}

#[test]
fn a_drain_lets_open_clients_finish_then_the_core_is_done() {
    let mut r = Rig::new(ON_A);
    let k1 = key_in(1);
    r.send(&format!("GET {k1}"));
    r.written(0);
    assert_eq!(r.drain_step(0, false), Drain::Serving);
    assert_eq!(r.drain_step(100, true), Drain::Draining);
    assert_eq!(r.status(), ClientStatus::WriteOnly, "no more reads");
    r.send("PING");
    assert_eq!(r.written(0), "", "what comes after the stop is not read");
    r.reply(0, "$1\r\na\r\n");
    assert_eq!(r.output(), "$1\r\na\r\n", "the reply owed is written");
    assert_eq!(r.status(), ClientStatus::Close);
    assert_eq!(r.drain_step(200, true), Drain::Draining);
    r.worker.client_gone(r.client);
    assert_eq!(r.drain_step(300, true), Drain::Done);
}

#[test]
fn a_drain_gives_up_on_clients_still_waiting_after_the_deadline() {
    let mut r = Rig::new(ON_A);
    let k1 = key_in(1);
    r.send(&format!("GET {k1}"));
    r.written(0);
    assert_eq!(r.drain_step(0, true), Drain::Draining);
    let last = DRAIN.as_millis() as u64 - 1;
    assert_eq!(r.drain_step(last, true), Drain::Draining);
    assert_eq!(r.drain_step(last + 1, true), Drain::Done);
}
