//! RESP3 through keyway to three real Redis groups, side by side with a
//! real redis-server spoken to in RESP3 the same way ([`SideBySide`]):
//! `HELLO 3`/`HELLO 2` round trips, maps, sets, doubles, booleans and nulls
//! passing through from RESP3 backend connections, keyway's own replies
//! (nulls, `CLIENT` tracking subcommands), merged replies (an `MGET` across
//! groups with a missing key), transactions and blocking commands on
//! dedicated connections switched to the client's protocol, Pub/Sub as
//! push messages, and `redis-cli -3`.

mod common;

use std::net::TcpStream;
use std::process::Command;

use common::{groups, key_on, Keyway, Redis, SideBySide};
use keyway_testkit::compare::assert_replies_equal;
use keyway_testkit::resp::{escape, exchange, mask_field, request};

struct Setup {
    /// The reference: one redis-server holding every key.
    reference: Redis,
    _groups: Vec<Redis>,
    kw: Keyway,
    body: String,
}

fn setup() -> Setup {
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let body = groups(&redis.iter().collect::<Vec<_>>());
    let kw = Keyway::start(&body);
    Setup {
        reference: Redis::start(),
        _groups: redis,
        kw,
        body,
    }
}

impl Setup {
    fn side_by_side(&self) -> SideBySide {
        SideBySide::connect(self.reference.addr(), self.kw.addr)
    }

    /// A key of group `g`.
    fn key(&self, g: usize, tag: &str) -> String {
        key_on(&self.body, g, tag)
    }
}

/// `HELLO …` on both, compared with the per-server `id` masked.
fn same_hello(s: &mut SideBySide, args: &[&str]) -> Vec<u8> {
    let (theirs, ours) = s.both(args);
    let (theirs, ours) = (mask_field(&theirs, "id"), mask_field(&ours, "id"));
    assert_replies_equal(&format!("{args:?}"), &theirs, &ours);
    ours
}

/// `replies` with every `HELLO` reply's `id` masked.
fn mask_ids(replies: &[u8]) -> Vec<u8> {
    let key = b"$2\r\nid\r\n:";
    let mut out = Vec::new();
    let mut rest = replies;
    while let Some(at) = rest.windows(key.len()).position(|w| w == key) {
        out.extend_from_slice(&rest[..at + key.len()]);
        out.extend_from_slice(b"<id>");
        rest = &rest[at + key.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        rest = &rest[digits..];
    }
    out.extend_from_slice(rest);
    out
}

#[test]
fn hello_switches_to_resp3_and_back_like_redis() {
    let t = setup();
    let mut s = t.side_by_side();
    let h = t.key(0, "h");
    s.same(&["HSET", &h, "f", "v"]);
    let three = same_hello(&mut s, &["HELLO", "3"]);
    assert!(three.starts_with(b"%7\r\n"), "a map: {}", escape(&three));
    s.same(&["HGETALL", &h]);
    // Without a version: the current protocol.
    same_hello(&mut s, &["HELLO"]);
    let two = same_hello(&mut s, &["HELLO", "2"]);
    assert!(two.starts_with(b"*14\r\n"), "an array: {}", escape(&two));
    let flat = s.same(&["HGETALL", &h]);
    assert!(
        flat.starts_with(b"*2\r\n"),
        "RESP2 again: {}",
        escape(&flat)
    );
    same_hello(&mut s, &["HELLO", "3", "SETNAME", "me"]);
    s.same(&["CLIENT", "GETNAME"]);
    s.same(&["HGETALL", &h]);
    same_hello(&mut s, &["HELLO", "3", "AUTH", "default", "x"]);
    s.same_all(&[
        &["HELLO", "4"],
        &["HELLO", "x"],
        &["HELLO", "3", "BOGUS"],
        &["HELLO", "3", "SETNAME", "a b"],
    ]);
    // Still RESP3 after the errors.
    s.same(&["HGETALL", &h]);
    // RESET: back to RESP2.
    s.same(&["RESET"]);
    s.same(&["HGETALL", &h]);
    s.same(&["CLIENT", "GETNAME"]);
}

#[test]
fn resp3_replies_pass_through_byte_for_byte() {
    let t = setup();
    let mut s = t.side_by_side();
    let (k0, k1, k2) = (t.key(0, "k"), t.key(1, "k"), t.key(2, "k"));
    let (h, set, z) = (t.key(1, "h"), t.key(2, "s"), t.key(0, "z"));
    let missing = t.key(2, "missing");
    for (k, v) in [(&k0, "a"), (&k1, "b"), (&k2, "c")] {
        s.same(&["SET", k, v]);
    }
    s.same(&["HSET", &h, "f1", "v1", "f2", "v2"]);
    s.same(&["SADD", &set, "3", "1", "2"]);
    s.same(&["ZADD", &z, "1.5", "m", "0.1", "n"]);
    same_hello(&mut s, &["HELLO", "3"]);
    let map = s.same(&["HGETALL", &h]);
    assert!(map.starts_with(b"%2\r\n"), "{}", escape(&map));
    let members = s.same(&["SMEMBERS", &set]);
    assert!(members.starts_with(b"~3\r\n"), "{}", escape(&members));
    let score = s.same(&["ZSCORE", &z, "n"]);
    assert_eq!(score, b",0.10000000000000001\r\n");
    let nil = s.same(&["GET", &missing]);
    assert_eq!(nil, b"_\r\n");
    s.same_all(&[
        &["ZRANGE", &z, "0", "-1", "WITHSCORES"],
        &["ZINCRBY", &z, "2", "m"],
        &["ZMSCORE", &z, "m", "nope"],
        &["HMGET", &h, "f1", "nope"],
        &["HRANDFIELD", &missing],
        &["LPOS", &missing, "x"],
        &["SMISMEMBER", &set, "1", "9"],
        &["EXISTS", &k0, &k1, &k2, &missing],
        &["DEL", &missing],
        &["TYPE", &h],
        // Lua booleans and doubles (the group of slot 0 runs it).
        &["EVAL", "return true", "0"],
        &["EVAL", "return {double=3.5}", "0"],
        &["EVAL", "return redis.call('hgetall', KEYS[1])", "1", &h],
        // keyway's own replies.
        &["CLIENT", "GETNAME"],
        &["COMMAND", "INFO", "nosuchcommand"],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "off"],
        &["CLIENT", "TRACKING", "maybe"],
        &["CLIENT", "TRACKING", "off", "BOGUS"],
        &["CLIENT", "CACHING", "yes"],
        &["PING"],
        &["ECHO", "x"],
    ]);
    // A merge across the three groups, with a missing value.
    let mget = s.same(&["MGET", &k0, &k1, &missing, &k2]);
    assert!(mget.windows(3).any(|w| w == b"_\r\n"), "{}", escape(&mget));
    // INFO and CLIENT INFO are verbatim strings.
    let (theirs, ours) = s.both(&["CLIENT", "INFO"]);
    assert!(theirs.starts_with(b"=") && ours.starts_with(b"="));
    assert!(ours[ours.iter().position(|&b| b == b'\n').unwrap() + 1..].starts_with(b"txt:id="));
    let (theirs, ours) = s.both(&["INFO", "server"]);
    assert!(
        theirs.starts_with(b"=") && ours.starts_with(b"="),
        "{}",
        escape(&ours)
    );
    // Tracking is refused rather than half served (and turned off again
    // on the reference, which took it).
    let (_, ours) = s.both(&["CLIENT", "TRACKING", "on"]);
    assert!(
        ours.starts_with(b"-ERR keyway does not support CLIENT TRACKING on"),
        "{}",
        escape(&ours)
    );
    s.both(&["CLIENT", "TRACKING", "off"]);
    // And RESP2 again for the same commands.
    same_hello(&mut s, &["HELLO", "2"]);
    s.same_all(&[
        &["HGETALL", &h],
        &["SMEMBERS", &set],
        &["ZSCORE", &z, "n"],
        &["GET", &missing],
        &["MGET", &k0, &k1, &missing, &k2],
        &["EVAL", "return true", "0"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "TRACKINGINFO"],
    ]);
}

#[test]
fn a_pipelined_hello_does_not_let_later_requests_overtake_earlier_ones() {
    let t = setup();
    let mut s = t.side_by_side();
    let k = t.key(1, "p");
    let h = t.key(1, "ph");
    let mut bytes = Vec::new();
    for args in [
        &["SET", &k, "1"][..],
        &["HSET", &h, "f", "v"],
        &["HELLO", "3"],
        &["INCR", &k],
        &["HGETALL", &h],
        &["HELLO", "2"],
        &["INCR", &k],
        &["HGETALL", &h],
    ] {
        bytes.extend_from_slice(&request(args));
    }
    let (theirs, ours) = s.raw_both(&bytes, 8);
    assert_replies_equal(
        "a pipeline switching protocols",
        &mask_ids(&theirs),
        &mask_ids(&ours),
    );
}

#[test]
fn a_pipelined_reset_does_not_let_later_requests_overtake_earlier_ones() {
    let t = setup();
    let mut s = t.side_by_side();
    let (k, h) = (t.key(2, "r"), t.key(2, "rh"));
    same_hello(&mut s, &["HELLO", "3"]);
    let mut bytes = Vec::new();
    for args in [
        &["SET", &k, "1"][..],
        &["HSET", &h, "f", "v"],
        &["HGETALL", &h],
        &["RESET"],
        &["INCR", &k],
        &["HGETALL", &h],
        &["CLIENT", "GETNAME"],
        &["HELLO", "3"],
        &["RESET"],
        &["HGETALL", &h],
    ] {
        bytes.extend_from_slice(&request(args));
    }
    let (theirs, ours) = s.raw_both(&bytes, 10);
    assert_replies_equal(
        "a pipeline with RESETs",
        &mask_ids(&theirs),
        &mask_ids(&ours),
    );
}

#[test]
fn transactions_and_blocking_commands_follow_the_clients_protocol() {
    let t = setup();
    let mut s = t.side_by_side();
    let (h, z, l) = (t.key(2, "th"), t.key(2, "tz"), t.key(1, "l"));
    s.same(&["HSET", &h, "f", "v"]);
    s.same(&["ZADD", &z, "2.5", "m"]);
    for proto in ["3", "2", "3"] {
        same_hello(&mut s, &["HELLO", proto]);
        // WATCH leases a dedicated connection: in the client's protocol.
        s.same_all(&[
            &["WATCH", &h],
            &["MULTI"],
            &["HGETALL", &h],
            &["ZSCORE", &z, "m"],
            &["EXEC"],
        ]);
        // A blocking command's timeout and its popped score.
        s.same(&["BLPOP", &l, "0.01"]);
        s.same(&["BZPOPMIN", &z, "1"]);
        s.same(&["ZADD", &z, "2.5", "m"]);
    }
}

/// Reads `n` pushes or replies from both (nothing sent).
fn next_both(s: &mut SideBySide, n: usize, what: &str) -> Vec<u8> {
    let (theirs, ours) = s.raw_both(b"", n);
    assert_replies_equal(what, &theirs, &ours);
    ours
}

#[test]
fn pubsub_in_resp3_is_push_messages() {
    let t = setup();
    let mut s = t.side_by_side();
    let k = t.key(0, "sub");
    s.same(&["SET", &k, "v"]);
    same_hello(&mut s, &["HELLO", "3"]);
    let confirm = s.same(&["SUBSCRIBE", "news"]);
    assert!(confirm.starts_with(b">3\r\n"), "{}", escape(&confirm));
    s.same(&["PSUBSCRIBE", "n*"]);
    // A RESP3 client may send any command while subscribed.
    s.same(&["GET", &k]);
    s.same(&["PING"]);
    // Merged across groups, in RESP3.
    s.same_all(&[
        &["PUBSUB", "NUMSUB", "news", "other"],
        &["PUBSUB", "CHANNELS"],
        &["PUBSUB", "NUMPAT"],
    ]);
    let publish = |addr: &str| {
        let mut p = TcpStream::connect(addr).unwrap();
        exchange(&mut p, &request(&["PUBLISH", "news", "hi"]), 1)
    };
    let theirs = publish(&t.reference.addr());
    let ours = publish(&t.kw.addr.to_string());
    assert_replies_equal("PUBLISH", &theirs, &ours);
    let pushes = next_both(&mut s, 2, "the message and the pattern message");
    assert!(
        pushes.starts_with(b">3\r\n$7\r\nmessage"),
        "{}",
        escape(&pushes)
    );
    s.same(&["UNSUBSCRIBE"]);
    s.same(&["PUNSUBSCRIBE", "n*"]);
    s.same(&["UNSUBSCRIBE"]);
    // Subscribed, then RESET: RESP2 and no subscriptions.
    s.same(&["SUBSCRIBE", "news"]);
    s.same(&["RESET"]);
    s.same(&["GET", &k]);
    s.same(&["PING"]);
}

#[test]
fn redis_cli_dash_3_works_through_keyway() {
    let t = setup();
    let h = t.key(1, "cli");
    let cli = |port: u16, args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-3", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}");
        out.stdout
    };
    for args in [
        &["HSET", &h, "a", "1", "b", "2"][..],
        &["HGETALL", &h],
        &["SMEMBERS", &h],
        &["GET", "nothing-here"],
        &["ZADD", "{cli}z", "1.5", "m"],
        &["ZSCORE", "{cli}z", "m"],
    ] {
        let theirs = cli(t.reference.port, args);
        let ours = cli(t.kw.addr.port(), args);
        assert_replies_equal(&format!("redis-cli -3 {args:?}"), &theirs, &ours);
    }
}

#[test]
fn command_info_and_docs_in_resp3_like_redis() {
    let t = setup();
    let mut s = t.side_by_side();
    same_hello(&mut s, &["HELLO", "3"]);
    // Commands keyway serves, of every shape: key specs of each kind,
    // tips, history, deprecation, nested arguments, a subcommand (the
    // order of a container's subcommands is a dict's, which differs
    // between two redis-servers: see the next test).
    let names = [
        "get",
        "set",
        "mget",
        "georadius",
        "sort",
        "xadd",
        "xread",
        "zadd",
        "bitfield",
        "object|encoding",
        "eval",
        "lmpop",
        "zunionstore",
        "nosuch",
    ];
    let mut info = vec!["COMMAND", "INFO"];
    info.extend(names);
    let reply = s.same(&info);
    assert!(
        reply.windows(4).any(|w| w == b"~1\r\n"),
        "sets: {}",
        escape(&reply[..200])
    );
    let mut docs = vec!["COMMAND", "DOCS"];
    docs.extend(names);
    let reply = s.same(&docs);
    assert!(reply.starts_with(b"%"), "a map: {}", escape(&reply[..200]));
    // What keyway refuses is absent, as an unknown command is.
    let (_, ours) = s.both(&["COMMAND", "INFO", "migrate"]);
    assert_eq!(ours, b"*1\r\n_\r\n");
}

/// Every command keyway lists, in `COMMAND INFO` and `COMMAND DOCS` in
/// RESP3, as Redis answers it (its RESP2 form is compared elsewhere;
/// refused commands are absent: `engine::commands`). A container whose
/// subcommands keyway lists only in part is compared in RESP2 by the unit
/// tests of `engine::commands`.
#[test]
fn the_whole_command_table_in_resp3_like_redis() {
    use keyway::engine::commands::{listed, served};
    use keyway_protocol::command::COMMANDS;
    let t = setup();
    let mut s = t.side_by_side();
    same_hello(&mut s, &["HELLO", "3"]);
    let whole =
        |c: &&keyway_protocol::command::CommandSpec| listed(c) && c.subcommands.iter().all(served);
    let names: Vec<&str> = COMMANDS.iter().filter(whole).map(|c| c.name).collect();
    assert!(names.len() > 150, "{}", names.len());
    for sub in ["INFO", "DOCS"] {
        for name in &names {
            let (theirs, ours) = s.both(&["COMMAND", sub, name]);
            // A container's subcommands come in a dict's order, which
            // differs between servers: compare its entries' lines sorted.
            assert_eq!(entries(&theirs), entries(&ours), "COMMAND {sub} {name}");
        }
    }
}

/// The header line and the top-level entries of an array or map reply
/// (a map's as key and value together, each as its sorted lines), sorted.
fn entries(reply: &[u8]) -> Vec<Vec<u8>> {
    let line = reply.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let per = if reply[0] == b'%' { 2 } else { 1 };
    let mut out = vec![reply[..line].to_vec()];
    let mut rest = &reply[line..];
    while !rest.is_empty() {
        let mut entry = Vec::new();
        for _ in 0..per {
            let n = keyway_protocol::resp::ReplyFramer::new()
                .next(rest)
                .unwrap()
                .expect("whole replies");
            entry.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        // Its lines in any order (a container's subcommands come in a
        // dict's order): every type byte, length and value still counts.
        let mut lines: Vec<&[u8]> = entry.split(|&b| b == b'\n').collect();
        lines.sort_unstable();
        out.push(lines.join(&b'\n'));
    }
    out[1..].sort_unstable();
    out
}
