//! Pub/Sub through keyway to three real Redis groups: confirmations, the
//! subscribed-mode rules and errors byte for byte as a real redis-server
//! answers them ([`SideBySide`]); messages fanned out from ONE subscriber
//! connection per group per core to many clients, in order; patterns
//! receiving from every group; subscriptions following a channel's slot to
//! a new group, and coming back after a backend restart.
//!
//! As with Redis, a message published after the client has read its
//! subscription's confirmation reaches it: the tests publish right after
//! reading the confirmations, without waiting for anything else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{groups, key_on, wait_for, Keyway, Redis, SideBySide};
use keyway_testkit::resp::{exchange, request};

const WAIT: Duration = Duration::from_secs(10);

struct Cluster {
    redis: Vec<Redis>,
    kw: Keyway,
    body: String,
}

fn cluster(cores: usize) -> Cluster {
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let body = format!(
        "cores = {cores}\n{}",
        groups(&redis.iter().collect::<Vec<_>>())
    );
    let kw = Keyway::start(&body);
    Cluster { redis, kw, body }
}

/// A client connection to keyway.
fn client(kw: &Keyway) -> TcpStream {
    kw.tcp()
}

fn send(s: &mut TcpStream, args: &[&str]) {
    s.write_all(&request(args)).unwrap();
}

/// Reads exactly `want` bytes (within 10 s) and asserts they are `want`.
fn expect(s: &mut TcpStream, want: &[u8], what: &str) {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: timed out; got {:?}",
            got.escape_ascii().to_string()
        );
        s.set_read_timeout(Some(left)).unwrap();
        let n = (want.len() - got.len()).min(buf.len());
        match s.read(&mut buf[..n]) {
            Ok(0) => panic!(
                "{what}: connection closed after {:?}",
                got.escape_ascii().to_string()
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
    assert_eq!(
        got.escape_ascii().to_string(),
        want.escape_ascii().to_string(),
        "{what}"
    );
}

fn bulk(v: &str) -> String {
    format!("${}\r\n{v}\r\n", v.len())
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

fn pmessage(pattern: &str, channel: &str, payload: &str) -> String {
    format!(
        "*4\r\n{}{}{}{}",
        bulk("pmessage"),
        bulk(pattern),
        bulk(channel),
        bulk(payload)
    )
}

/// `PUBSUB NUMSUB channel` on a Redis server.
fn numsub(r: &Redis, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(&mut r.conn())
        .unwrap();
    n
}

fn numpat(r: &Redis) -> i64 {
    redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query(&mut r.conn())
        .unwrap()
}

/// Connections in Pub/Sub mode on a Redis server (`CLIENT LIST TYPE
/// pubsub`).
fn pubsub_conns(r: &Redis) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut r.conn())
        .unwrap();
    list.lines().count()
}

fn wait_numsub(r: &Redis, channel: &str, n: i64) {
    wait_for(
        &format!("NUMSUB {channel} = {n} on {}", r.addr()),
        WAIT,
        || (numsub(r, channel) == n).then_some(()),
    );
}

/// Publishes through keyway; returns the reply.
fn publish(kw: &Keyway, channel: &str, payload: &str) -> i64 {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query(&mut kw.conn())
        .unwrap()
}

#[test]
fn a_thousand_subscribers_on_one_core_get_every_message_in_order_over_one_connection_per_group() {
    let c = cluster(1);
    let g = 1;
    let channel = key_on(&c.body, g, "news");
    let mut subs: Vec<TcpStream> = (0..1000).map(|_| client(&c.kw)).collect();
    for s in subs.iter_mut() {
        send(s, &["SUBSCRIBE", &channel]);
    }
    for s in subs.iter_mut() {
        expect(
            s,
            confirm("subscribe", &channel, 1).as_bytes(),
            "confirmation",
        );
    }
    for (i, r) in c.redis.iter().enumerate() {
        let want = usize::from(i == g);
        assert_eq!(
            pubsub_conns(r),
            want,
            "group {i}: one subscriber connection for 1000 subscribers on the owner, none elsewhere"
        );
    }
    let mut pub_con = c.kw.conn();
    let mut want = String::new();
    for i in 0..100 {
        let payload = format!("m-{i}");
        let n: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&payload)
            .query(&mut pub_con)
            .unwrap();
        assert_eq!(n, 1, "Redis sees one receiver: the core's connection");
        want.push_str(&message(&channel, &payload));
    }
    for (i, s) in subs.iter_mut().enumerate() {
        expect(
            s,
            want.as_bytes(),
            &format!("subscriber {i}: every message, in order"),
        );
    }
}

#[test]
fn a_pattern_receives_from_channels_of_every_group() {
    let c = cluster(2);
    let mut s = client(&c.kw);
    send(&mut s, &["PSUBSCRIBE", "ev:*"]);
    expect(
        &mut s,
        confirm("psubscribe", "ev:*", 1).as_bytes(),
        "confirmation",
    );
    let mut want = String::new();
    for g in 0..3 {
        let channel = key_on(&c.body, g, "ev");
        assert_eq!(publish(&c.kw, &channel, &format!("from {g}")), 1);
        want.push_str(&pmessage("ev:*", &channel, &format!("from {g}")));
    }
    expect(&mut s, want.as_bytes(), "one pmessage per group's channel");
    // NUMPAT counts distinct patterns, once (every group has it).
    let n: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query(&mut c.kw.conn())
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn subscribed_mode_rules_and_replies_match_redis() {
    let c = cluster(1);
    let reference = Redis::start();
    let mut both = SideBySide::connect(reference.addr(), c.kw.addr);
    // Not subscribed: unsubscribing anything answers a nil name, count 0.
    both.same(&["UNSUBSCRIBE"]);
    both.same(&["PUNSUBSCRIBE"]);
    both.same(&["SUNSUBSCRIBE"]);
    both.same(&["UNSUBSCRIBE", "nothing"]);
    both.same(&["SUBSCRIBE"]);
    both.same(&["PUBLISH", "a"]);
    both.same(&["PUBSUB"]);
    both.same(&["PUBSUB", "NOSUCH"]);
    both.same(&["PUBSUB", "HELP"]);
    both.raw_same(&request(&["SUBSCRIBE", "a", "b", "a"]), 3);
    both.same(&["PSUBSCRIBE", "p*"]);
    both.raw_same(&request(&["SSUBSCRIBE", "s1", "s2"]), 2);
    for cmd in [
        &["PING"][..],
        &["PING", "hi"],
        &["PING", "a", "b"],
        &["GET", "x"],
        &["CLIENT", "ID"],
        &["NOSUCHCOMMAND"],
        &["GET"],
        &["PUBSUB", "NUMPAT"],
        &["PUBLISH", "a", "m"],
        &["SUBSCRIBE", "a"],
        &["SUNSUBSCRIBE", "s1"],
        &["UNSUBSCRIBE", "zz"],
        &["UNSUBSCRIBE", "a"],
        &["UNSUBSCRIBE"],
        &["PUNSUBSCRIBE"],
        // Still subscribed to a shard channel.
        &["GET", "x"],
        &["SUNSUBSCRIBE"],
        // Out of subscribed mode.
        &["GET", "x"],
        &["PING"],
        &["SUBSCRIBE", "c"],
        &["RESET"],
        &["GET", "x"],
        &["PSUBSCRIBE", "q*"],
    ] {
        both.same(cmd);
    }
    both.same(&["QUIT"]);
    both.same_close();
}

#[test]
fn unsubscribe_with_no_argument_leaves_every_channel_of_every_group() {
    let c = cluster(1);
    let names: Vec<String> = (0..3).map(|g| key_on(&c.body, g, "u")).collect();
    let mut s = client(&c.kw);
    s.write_all(&request(&["SUBSCRIBE", &names[0], &names[1], &names[2]]))
        .unwrap();
    let mut want = String::new();
    for (i, n) in names.iter().enumerate() {
        want.push_str(&confirm("subscribe", n, i + 1));
    }
    expect(&mut s, want.as_bytes(), "confirmations");
    for (g, n) in names.iter().enumerate() {
        assert_eq!(
            numsub(&c.redis[g], n),
            1,
            "confirmed: subscribed at the server"
        );
    }
    send(&mut s, &["UNSUBSCRIBE"]);
    let mut want = String::new();
    for (i, n) in names.iter().enumerate() {
        want.push_str(&confirm("unsubscribe", n, 2 - i));
    }
    expect(
        &mut s,
        want.as_bytes(),
        "one reply per channel, in subscription order",
    );
    for (g, n) in names.iter().enumerate() {
        wait_numsub(&c.redis[g], n, 0);
    }
    let reply = exchange(&mut s, &request(&["GET", "k"]), 1);
    assert_eq!(reply, b"$-1\r\n", "out of subscribed mode");
}

#[test]
fn a_subscriber_that_disconnects_leaves_its_channels() {
    let c = cluster(1);
    let channel = key_on(&c.body, 2, "d");
    let mut a = client(&c.kw);
    let mut b = client(&c.kw);
    for s in [&mut a, &mut b] {
        send(s, &["SUBSCRIBE", &channel]);
        expect(
            s,
            confirm("subscribe", &channel, 1).as_bytes(),
            "confirmation",
        );
    }
    drop(a);
    assert_eq!(publish(&c.kw, &channel, "still"), 1, "b still listens");
    expect(&mut b, message(&channel, "still").as_bytes(), "b gets it");
    drop(b);
    wait_numsub(&c.redis[2], &channel, 0);
    assert_eq!(publish(&c.kw, &channel, "nobody"), 0);
}

#[test]
fn subscriptions_follow_a_channel_whose_slot_moves_to_another_group() {
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let group = |name: &str, r: &Redis, slots: &str| {
        format!(
            "[[group]]\nname = \"{name}\"\nmaster = \"{}\"\nslots = [{slots}]\n",
            r.addr()
        )
    };
    let v1 = format!(
        "cores = 2\n{}{}{}",
        group("g1", &redis[0], "\"0-5460\""),
        group("g2", &redis[1], "\"5461-10922\""),
        group("g3", &redis[2], "\"10923-16383\"")
    );
    let kw = Keyway::start(&v1);
    let channel = key_on(&v1, 0, "mv");
    let mut s = client(&kw);
    send(&mut s, &["SUBSCRIBE", &channel]);
    send(&mut s, &["PSUBSCRIBE", "mv*"]);
    expect(
        &mut s,
        format!(
            "{}{}",
            confirm("subscribe", &channel, 1),
            confirm("psubscribe", "mv*", 2)
        )
        .as_bytes(),
        "confirmations",
    );
    // g1 and g3 swap their slots: the channel moves to g3; g1 stays (the
    // pattern with it).
    let v2 = format!(
        "cores = 2\n{}{}{}",
        group("g1", &redis[0], "\"10923-16383\""),
        group("g2", &redis[1], "\"5461-10922\""),
        group("g3", &redis[2], "\"0-5460\"")
    );
    kw.reload(&v2);
    wait_numsub(&redis[2], &channel, 1);
    wait_numsub(&redis[0], &channel, 0);
    assert_eq!(numpat(&redis[0]), 1, "the pattern stays on g1");
    assert_eq!(
        publish(&kw, &channel, "after"),
        2,
        "the channel and the pattern, on g3"
    );
    expect(
        &mut s,
        format!(
            "{}{}",
            message(&channel, "after"),
            pmessage("mv*", &channel, "after")
        )
        .as_bytes(),
        "the message from the new owner",
    );
    // g1 leaves the table (its slots to g2): its subscriber connections
    // close; the channel and the pattern stay where the table says.
    let v3 = format!(
        "cores = 2\n{}{}",
        group("g2", &redis[1], "\"5461-16383\""),
        group("g3", &redis[2], "\"0-5460\"")
    );
    kw.reload(&v3);
    wait_for("g1's subscriber connections closed", WAIT, || {
        (pubsub_conns(&redis[0]) == 0).then_some(())
    });
    assert_eq!(numsub(&redis[2], &channel), 1);
    assert_eq!(numpat(&redis[1]), 1);
    let on_g2 = key_on(&v3, 0, "mv");
    assert_eq!(publish(&kw, &on_g2, "g2"), 1, "the pattern on g2");
    expect(&mut s, pmessage("mv*", &on_g2, "g2").as_bytes(), "from g2");
}

#[test]
fn a_restarted_backend_gets_the_subscriptions_again() {
    let mut c = cluster(1);
    let channel = key_on(&c.body, 0, "rs");
    let mut s = client(&c.kw);
    send(&mut s, &["SUBSCRIBE", &channel]);
    expect(
        &mut s,
        confirm("subscribe", &channel, 1).as_bytes(),
        "confirmation",
    );
    let port = c.redis[0].port;
    c.redis[0].kill();
    c.redis[0] = Redis::start_on(port);
    wait_numsub(&c.redis[0], &channel, 1);
    let n = wait_for("PUBLISH through keyway after the restart", WAIT, || {
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("back")
            .query::<i64>(&mut c.kw.conn())
            .ok()
    });
    assert_eq!(n, 1);
    expect(
        &mut s,
        message(&channel, "back").as_bytes(),
        "still subscribed",
    );
}

#[test]
fn pubsub_channels_and_numsub_merge_every_group() {
    let c = cluster(2);
    let names: Vec<String> = (0..3).map(|g| key_on(&c.body, g, "ch")).collect();
    let mut s = client(&c.kw);
    let mut t = client(&c.kw);
    s.write_all(&request(&["SUBSCRIBE", &names[0], &names[1], &names[2]]))
        .unwrap();
    t.write_all(&request(&["SUBSCRIBE", &names[0]])).unwrap();
    let mut want = String::new();
    for (i, n) in names.iter().enumerate() {
        want.push_str(&confirm("subscribe", n, i + 1));
    }
    expect(&mut s, want.as_bytes(), "confirmations");
    expect(
        &mut t,
        confirm("subscribe", &names[0], 1).as_bytes(),
        "confirmation",
    );
    let mut con = c.kw.conn();
    let mut listed: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("ch:*")
        .query(&mut con)
        .unwrap();
    listed.sort();
    let mut all = names.clone();
    all.sort();
    assert_eq!(listed, all, "each channel once");
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&names[0])
        .arg("none")
        .query(&mut con)
        .unwrap();
    // Each keyway core counts as one subscriber connection at Redis: both
    // clients may be on one core (1) or on two (2).
    assert_eq!(counts.len(), 2);
    assert!((1..=2).contains(&counts[0].1), "{counts:?}");
    assert_eq!(counts[1], ("none".to_string(), 0));
}
