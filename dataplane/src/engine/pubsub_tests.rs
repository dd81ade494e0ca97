//! Pub/Sub in the worker, driven without I/O (see `rig.rs`): the test plays
//! the transport and the Redis servers, and checks the raw RESP bytes each
//! side gets. Slot 1 is on group a (0), every other slot on c (2).

use super::pubsub::Kind;
use super::rig::{key_in, Rig, Settings};
use crate::config::Limits;
use crate::routing::SlotRoute;

const ON_A: SlotRoute = SlotRoute::Stable(0);

fn bulk(v: &str) -> String {
    format!("${}\r\n{v}\r\n", v.len())
}

fn request(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&bulk(a));
    }
    s
}

fn confirm(word: &str, name: &str, count: usize) -> String {
    format!("*3\r\n{}{}:{count}\r\n", bulk(word), bulk(name))
}

fn message(channel: &str, payload: &str) -> String {
    format!(
        "*3\r\n{}{}{}",
        bulk("message"),
        bulk(channel),
        bulk(payload)
    )
}

#[test]
fn many_clients_share_one_backend_subscription_and_each_gets_every_message() {
    let mut r = Rig::new(ON_A);
    let ch = key_in(1);
    let other = r.another_client();
    r.send(&format!("SUBSCRIBE {ch}"));
    r.send_as(other, &format!("SUBSCRIBE {ch}"));
    assert_eq!(r.output(), "", "the confirmation waits for the backend's");
    assert_eq!(
        r.sub_written(0),
        request(&["SUBSCRIBE", &ch]),
        "one SUBSCRIBE for both clients, on a's subscriber connection"
    );
    assert_eq!(r.written(0), "", "nothing on a's request connection");
    assert_eq!(
        r.worker.pubsub().subscribers(Kind::Channel, ch.as_bytes()),
        2
    );
    // The backend's confirmation lets keyway's go, each with the client's
    // own count; the backend's messages go to both, as they are, in order.
    let pushed = format!(
        "{}{}{}",
        confirm("subscribe", &ch, 1),
        message(&ch, "one"),
        message(&ch, "two")
    );
    r.sub_push(0, &pushed);
    let want = format!("{}{}", message(&ch, "one"), message(&ch, "two"));
    assert_eq!(r.output(), confirm("subscribe", &ch, 1) + &want);
    assert_eq!(r.output_of(other), confirm("subscribe", &ch, 1) + &want);
    assert_eq!(r.worker.stats().pubsub_messages, 2);
    assert_eq!(r.worker.stats().pubsub_deliveries, 4);
    // A message split across reads is delivered once whole.
    let m = message(&ch, "three");
    r.sub_push(0, &m[..7]);
    assert_eq!(r.output(), "", "half a message is kept");
    r.sub_push(0, &m[7..]);
    assert_eq!(r.output(), m);
    // A third client on a channel the core has: confirmed at once.
    let third = r.another_client();
    r.send_as(third, &format!("SUBSCRIBE {ch} {ch}"));
    assert_eq!(
        r.output_of(third),
        confirm("subscribe", &ch, 1) + &confirm("subscribe", &ch, 1)
    );
    assert_eq!(r.sub_written(0), "");
}

#[test]
fn the_backend_is_unsubscribed_when_the_last_client_of_the_core_leaves() {
    let mut r = Rig::new(ON_A);
    let ch = key_in(1);
    let other = r.another_client();
    r.send(&format!("SUBSCRIBE {ch}"));
    r.send_as(other, &format!("SUBSCRIBE {ch}"));
    r.sub_written(0);
    r.sub_push(0, &confirm("subscribe", &ch, 1));
    r.send(&format!("UNSUBSCRIBE {ch}"));
    assert_eq!(
        r.output(),
        confirm("subscribe", &ch, 1) + &confirm("unsubscribe", &ch, 0)
    );
    assert_eq!(r.sub_written(0), "", "another client still listens");
    r.sub_push(0, &message(&ch, "m"));
    assert_eq!(r.output(), "", "not to a client that left");
    assert_eq!(
        r.output_of(other),
        confirm("subscribe", &ch, 1) + &message(&ch, "m")
    );
    r.worker.client_gone(other);
    assert_eq!(
        r.sub_written(0),
        request(&["UNSUBSCRIBE", &ch]),
        "the last client went: unsubscribed"
    );
    assert_eq!(
        r.worker.pubsub().subscribers(Kind::Channel, ch.as_bytes()),
        0
    );
}

#[test]
fn a_pattern_is_subscribed_on_every_group_and_confirmed_once_all_have() {
    let mut r = Rig::new(ON_A);
    r.send("PSUBSCRIBE p*");
    for g in 0..3 {
        assert_eq!(
            r.sub_written(g),
            request(&["PSUBSCRIBE", "p*"]),
            "group {g}"
        );
    }
    assert_eq!(r.worker.pubsub().connections(), 3);
    r.sub_push(0, &confirm("psubscribe", "p*", 1));
    r.sub_push(2, &confirm("psubscribe", "p*", 1));
    assert_eq!(r.output(), "", "b has not confirmed yet");
    r.sub_push(1, &confirm("psubscribe", "p*", 1));
    assert_eq!(r.output(), confirm("psubscribe", "p*", 1));
    r.send("PUNSUBSCRIBE");
    assert_eq!(r.output(), confirm("punsubscribe", "p*", 0));
    for g in 0..3 {
        assert_eq!(
            r.sub_written(g),
            request(&["PUNSUBSCRIBE", "p*"]),
            "group {g}"
        );
    }
}

#[test]
fn a_message_waits_behind_the_replies_its_client_is_owed() {
    let mut r = Rig::new(ON_A);
    let ch = key_in(1);
    let k = key_in(2);
    r.send(&format!("GET {k};SUBSCRIBE {ch}"));
    assert_eq!(r.written(2), request(&["GET", &k]));
    r.sub_written(0);
    r.sub_push(0, &(confirm("subscribe", &ch, 1) + &message(&ch, "early")));
    assert_eq!(r.output(), "", "the GET's reply comes first");
    r.reply(2, "$1\r\nv\r\n");
    assert_eq!(
        r.output(),
        format!(
            "$1\r\nv\r\n{}{}",
            confirm("subscribe", &ch, 1),
            message(&ch, "early")
        )
    );
}

#[test]
fn publish_goes_to_the_channels_group_on_a_request_connection() {
    let mut r = Rig::new(ON_A);
    let (on_a, on_c) = (key_in(1), key_in(3));
    r.send(&format!("PUBLISH {on_a} x;SPUBLISH {on_c} y"));
    assert_eq!(r.written(0), request(&["PUBLISH", &on_a, "x"]));
    assert_eq!(r.written(2), request(&["SPUBLISH", &on_c, "y"]));
    r.reply(2, ":0\r\n");
    r.reply(0, ":3\r\n");
    assert_eq!(r.output(), ":3\r\n:0\r\n", "in request order");
}

#[test]
fn a_subscriber_connection_that_fails_before_confirming_lets_the_confirmation_go() {
    let mut r = Rig::new(ON_A);
    let ch = key_in(1);
    r.send(&format!("SUBSCRIBE {ch};PING"));
    r.sub_written(0);
    assert_eq!(r.output(), "");
    r.sub_lose(0);
    assert_eq!(
        r.output(),
        confirm("subscribe", &ch, 1) + "*2\r\n$4\r\npong\r\n$0\r\n\r\n",
        "confirmed (as a Redis client that reconnects, it may miss messages meanwhile)"
    );
}

#[test]
fn a_confirmation_the_backend_never_sends_goes_after_the_backend_timeout() {
    let mut r = Rig::new(ON_A);
    let ch = key_in(1);
    r.send(&format!("SUBSCRIBE {ch}"));
    r.sub_written(0);
    r.tick(1_000);
    assert_eq!(r.output(), "");
    r.tick(6_000);
    assert_eq!(
        r.output(),
        confirm("subscribe", &ch, 1),
        "after backend.timeout (5s)"
    );
}

#[test]
fn a_lost_subscriber_connection_subscribes_everything_again_after_its_backoff() {
    let mut r = Rig::new(ON_A);
    let (c1, c2) = (key_in(1), key_in(3));
    r.send(&format!(
        "SUBSCRIBE {c1} {c2};PSUBSCRIBE p*;SSUBSCRIBE {c1}"
    ));
    assert_eq!(
        r.sub_written(0),
        request(&["SUBSCRIBE", &c1])
            + &request(&["PSUBSCRIBE", "p*"])
            + &request(&["SSUBSCRIBE", &c1])
    );
    r.sub_written(1);
    r.sub_written(2);
    r.sub_push(
        0,
        &(confirm("subscribe", &c1, 1)
            + &confirm("psubscribe", "p*", 2)
            + &confirm("ssubscribe", &c1, 1)),
    );
    r.sub_push(1, &confirm("psubscribe", "p*", 1));
    r.sub_push(
        2,
        &(confirm("subscribe", &c2, 1) + &confirm("psubscribe", "p*", 1)),
    );
    assert_eq!(
        r.output(),
        confirm("subscribe", &c1, 1)
            + &confirm("subscribe", &c2, 2)
            + &confirm("psubscribe", "p*", 3)
            + &confirm("ssubscribe", &c1, 1)
    );
    r.sub_lose(0);
    assert!(!r.sub_live(0));
    r.tick(10);
    assert_eq!(r.sub_written(0), "", "down for its backoff");
    r.tick(1_000);
    let again = r.sub_written(0);
    for want in [
        request(&["SUBSCRIBE", &c1]),
        request(&["PSUBSCRIBE", "p*"]),
        request(&["SSUBSCRIBE", &c1]),
    ] {
        assert!(again.contains(&want), "{want:?} again in {again:?}");
    }
    assert!(!again.contains(&c2), "c's channel stays on c: {again:?}");
    r.sub_push(0, &(confirm("subscribe", &c1, 1) + &message(&c1, "back")));
    assert_eq!(
        r.output(),
        message(&c1, "back"),
        "the client stayed subscribed"
    );
}

#[test]
fn a_channel_follows_its_slot_to_the_new_group() {
    let mut r = Rig::new(ON_A);
    let ch = key_in(1);
    r.send(&format!("SUBSCRIBE {ch}"));
    r.sub_written(0);
    r.sub_push(0, &confirm("subscribe", &ch, 1));
    r.output();
    r.swap(2, SlotRoute::Stable(1));
    assert_eq!(r.sub_written(0), request(&["UNSUBSCRIBE", &ch]), "off a");
    assert_eq!(r.sub_written(1), request(&["SUBSCRIBE", &ch]), "onto b");
    r.sub_push(1, &(confirm("subscribe", &ch, 1) + &message(&ch, "from b")));
    assert_eq!(r.output(), message(&ch, "from b"));
    let publisher = r.another_client();
    r.send_as(publisher, &format!("PUBLISH {ch} x"));
    assert_eq!(
        r.written(1),
        request(&["PUBLISH", &ch, "x"]),
        "published on b"
    );
}

#[test]
fn subscribed_mode_refuses_other_commands_and_pings_as_redis() {
    let mut r = Rig::new(ON_A);
    let ch = key_in(1);
    r.send(&format!("SUBSCRIBE {ch};GET a;PING;PING hi;CLIENT ID"));
    r.sub_written(0);
    r.sub_push(0, &confirm("subscribe", &ch, 1));
    assert_eq!(
        r.output(),
        confirm("subscribe", &ch, 1)
            + "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
            + "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
            + "*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"
            + "-ERR Can't execute 'client|id': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    );
    r.send("RESET;PING");
    assert_eq!(
        r.output(),
        "+RESET\r\n+PONG\r\n",
        "RESET leaves subscribed mode"
    );
    assert_eq!(
        r.worker.pubsub().subscribers(Kind::Channel, ch.as_bytes()),
        0
    );
    assert_eq!(r.sub_written(0), request(&["UNSUBSCRIBE", &ch]));
}

#[test]
fn more_subscriptions_than_the_limit_are_refused_whole() {
    let settings = Settings {
        limits: Limits {
            max_subscriptions: 2,
            ..Limits::default()
        },
        ..Settings::default()
    };
    let mut r = Rig::with(ON_A, settings);
    // Both on c.
    let (a, b) = (key_in(3), key_in(5));
    r.send(&format!("SUBSCRIBE {a} {b} c"));
    assert_eq!(
        r.output(),
        "-ERR keyway allows a client at most limits.max_subscriptions (2) channels, patterns and shard channels; nothing was subscribed\r\n"
    );
    assert_eq!(r.sub_written(2), "", "nothing subscribed");
    // Two names (one of them twice) fit; a third does not.
    r.send(&format!("SUBSCRIBE {a} {a} {b};PSUBSCRIBE p"));
    assert_eq!(
        r.sub_written(2),
        request(&["SUBSCRIBE", &a]) + &request(&["SUBSCRIBE", &b])
    );
    r.sub_push(
        2,
        &(confirm("subscribe", &a, 1) + &confirm("subscribe", &b, 2)),
    );
    let out = r.output();
    assert!(
        out.ends_with("nothing was subscribed\r\n"),
        "two are the most: {out:?}"
    );
    r.send(&format!("UNSUBSCRIBE {b};PSUBSCRIBE p"));
    for g in 0..3 {
        r.sub_written(g);
        r.sub_push(g, &confirm("psubscribe", "p", 1));
    }
    assert!(r.output().ends_with(&confirm("psubscribe", "p", 2)));
}

#[test]
fn a_subscriber_that_does_not_read_is_closed_at_the_hard_output_limit() {
    let settings = Settings {
        limits: Limits {
            output_hard_limit: 1_000,
            ..Limits::default()
        },
        ..Settings::default()
    };
    let mut r = Rig::with(ON_A, settings);
    let ch = key_in(1);
    let reader = r.another_client();
    r.send(&format!("SUBSCRIBE {ch}"));
    r.send_as(reader, &format!("SUBSCRIBE {ch}"));
    r.sub_written(0);
    r.sub_push(0, &confirm("subscribe", &ch, 1));
    let payload = "x".repeat(100);
    for _ in 0..20 {
        r.sub_push(0, &message(&ch, &payload));
        r.output_of(reader);
    }
    let out = r.output();
    assert!(
        out.ends_with("limits.output_hard_limit (1000 bytes)\r\n"),
        "closed with the limit's error: {out:?}"
    );
    assert_ne!(r.status(), super::ClientStatus::Active);
}
