//! Client authentication, ACL users and protected mode, compared byte for
//! byte with a redis-server configured with the same users (`ACL SETUSER`
//! with the same rules) where Redis answers the same request.

mod common;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{groups, read_some, Keyway, Redis, SideBySide};
use keyway_testkit::compare::assert_replies_equal;
use keyway_testkit::resp::{escape, exchange, mask_field, request};

/// The users of these tests, as `[[user]]` rules (and `ACL SETUSER`
/// arguments on the reference redis-server).
const USERS: &[(&str, &str)] = &[
    ("default", "on >defpass ~* &* +@all"),
    (
        "app",
        "on >apppass ~app:* resetchannels &chat:* +@all -@dangerous",
    ),
    ("ro", "on >ropass %R~r:* %W~w:* resetchannels +@all"),
];

fn users_toml(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(n, r)| format!("[[user]]\nname = \"{n}\"\nrules = \"{r}\"\n"))
        .collect()
}

/// A reference redis-server with `USERS`, and a keyway with the same users
/// in front of another.
fn setup() -> (Redis, Redis, Keyway) {
    let backend = Redis::start();
    let reference = Redis::start();
    let mut c = reference.conn();
    for (name, rules) in USERS {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(*name);
        for r in rules.split_whitespace() {
            cmd.arg(r);
        }
        let () = cmd.query(&mut c).expect("ACL SETUSER on the reference");
    }
    let keyway = Keyway::start(&format!("{}{}", groups(&[&backend]), users_toml(USERS)));
    (backend, reference, keyway)
}

fn side_by_side(reference: &Redis, keyway: &Keyway) -> SideBySide {
    SideBySide::connect(reference.addr(), keyway.addr)
}

fn roundtrip(s: &mut TcpStream, args: &[&str]) -> Vec<u8> {
    exchange(s, &request(args), 1)
}

#[test]
fn no_auth_then_auth_and_wrong_passwords() {
    let (_b, reference, keyway) = setup();
    let mut s = side_by_side(&reference, &keyway);
    s.same_all(&[
        &["GET", "x"],
        &["GET"],
        &["PING"],
        &["SET", "x", "1"],
        &["CLIENT", "LIST"],
        &["FOO"],
        &["HELLO", "3"],
        &["HELLO", "2", "SETNAME", "n"],
        &["AUTH", "wrong"],
        &["AUTH", "default", "wrong"],
        &["AUTH", "nobody", "x"],
        &["AUTH", "app", "wrong"],
        &["AUTH", "a", "b", "c"],
        &["HELLO", "3", "AUTH", "app", "wrong"],
        &["GET", "x"],
        &["AUTH", "defpass"],
        &["GET", "x"],
        &["ACL", "WHOAMI"],
        &["AUTH", "app", "apppass"],
        &["ACL", "WHOAMI"],
        &["AUTH", "default", "defpass"],
        &["ACL", "WHOAMI"],
    ]);
    // Before authentication Redis's limits for an unauthenticated client
    // hold (10 arguments, 16 KiB each): the error, then the close. After
    // AUTH, in the same pipeline, the full limits.
    let big = "v".repeat(20_000);
    let mut s = side_by_side(&reference, &keyway);
    s.same(&["GET", &big[..16_384]]);
    let mut after = request(&["AUTH", "defpass"]);
    after.extend(request(&["SET", "big", &big]));
    assert_eq!(s.raw_same(&after, 2), b"+OK\r\n+OK\r\n");
    for bytes in [
        request(&["SET", "k", &big]),
        request(&["DEL", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]),
    ] {
        let mut s = side_by_side(&reference, &keyway);
        s.raw_same(&bytes, 1);
    }
}

#[test]
fn hello_authenticates_and_switches_protocol() {
    let (_b, reference, keyway) = setup();
    let mut s = side_by_side(&reference, &keyway);
    for args in [
        &["HELLO", "3", "AUTH", "app", "apppass"][..],
        &["HELLO", "2", "AUTH", "ro", "ropass", "SETNAME", "mine"],
    ] {
        let (theirs, ours) = s.both(args);
        assert_replies_equal(
            &format!("{args:?}"),
            &mask_field(&theirs, "id"),
            &mask_field(&ours, "id"),
        );
        s.same(&["ACL", "WHOAMI"]);
    }
    s.same(&["CLIENT", "GETNAME"]);
}

#[test]
fn acl_denials_match_redis() {
    let (backend, reference, keyway) = setup();
    let mut s = side_by_side(&reference, &keyway);
    s.same(&["AUTH", "app", "apppass"]);
    s.same_all(&[
        // Keys.
        &["GET", "x"],
        &["SET", "app:1", "v"],
        &["GET", "app:1"],
        &["MGET", "app:1", "x"],
        &["MSET", "app:2", "v", "x", "v"],
        &["DEL", "x"],
        &["EVAL", "return 1", "1", "x"],
        &["RENAME", "app:1", "x"],
        &["SORT", "app:1", "BY", "app:w_*"],
        &["SORT", "app:1", "GET", "#"],
        &["SORT", "app:1", "BY", "nosort"],
        &["SORT", "x", "BY", "app:*"],
        &["SORT", "app:1", "STORE", "x"],
        // Commands, categories, subcommands.
        &["FLUSHALL"],
        &["KEYS", "*"],
        &["CONFIG", "GET", "maxmemory"],
        &["CLIENT", "KILL", "ID", "999"],
        &["SAVE"],
        // Channels.
        &["PUBLISH", "x", "m"],
        &["PUBLISH", "chat:1", "m"],
        &["SSUBSCRIBE", "x"],
        &["SUBSCRIBE", "chat:1", "x"],
        &["PSUBSCRIBE", "chat:a*"],
        // A transaction: refused at queue time, then EXECABORT.
        &["MULTI"],
        &["GET", "x"],
        &["SET", "app:1", "w"],
        &["EXEC"],
        &["GET", "app:1"],
        &["ACL", "WHOAMI"],
        &["ACL", "LIST"],
    ]);
    // A script whose declared keys pass: Redis would hold its own calls to
    // the user's rules, keyway cannot see them, so it refuses the script
    // (the one documented difference).
    let (theirs, ours) = s.both(&["EVAL", "return redis.call('SET', 'x', 'v')", "1", "app:1"]);
    assert!(theirs.starts_with(b"-"), "{theirs:?}");
    assert_eq!(
        String::from_utf8_lossy(&ours),
        "-NOPERM this user has no permissions to run the 'eval' command: keyway cannot check \
         what a script runs, so only users with every command, key and channel may run \
         scripts\r\n"
    );
    // Nothing refused reached the group.
    let mut group = backend.conn();
    for key in ["x", "app:2"] {
        let exists: i64 = redis::cmd("EXISTS").arg(key).query(&mut group).unwrap();
        assert_eq!(exists, 0, "{key} was never written");
    }
    s.same(&["AUTH", "ro", "ropass"]);
    s.same_all(&[
        &["GET", "r:1"],
        &["SET", "r:1", "v"],
        &["SET", "w:1", "v"],
        &["GET", "w:1"],
        &["EXISTS", "w:1"],
        &["COPY", "w:1", "r:2"],
        &["LPUSH", "w:l", "a"],
        &["LRANGE", "w:l", "0", "-1"],
        // SORT's BY and GET are checked when it runs: queued, and the
        // error is in EXEC's reply; the other commands run.
        &["SORT", "r:{t}l", "BY", "r:{t}w_*"],
        &["MULTI"],
        &["SORT", "r:{t}l", "BY", "r:{t}w_*"],
        &["SET", "w:3", "v"],
        &["SORT", "r:{t}l", "GET", "#"],
        &["SORT", "r:{t}l", "BY", "nosort"],
        &["EXEC"],
        &["EXISTS", "w:3"],
    ]);
}

#[test]
fn acl_commands_match_redis() {
    let (_b, reference, keyway) = setup();
    let mut s = side_by_side(&reference, &keyway);
    s.same(&["AUTH", "defpass"]);
    s.same_all(&[
        &["ACL", "WHOAMI"],
        &["ACL", "USERS"],
        &["ACL", "LIST"],
        &["ACL", "GETUSER", "app"],
        &["ACL", "GETUSER", "ro"],
        &["ACL", "GETUSER", "default"],
        &["ACL", "GETUSER", "nobody"],
        &["ACL", "CAT"],
        &["ACL", "CAT", "nope"],
        &["ACL", "CAT", "a", "b"],
        &["ACL", "DRYRUN", "app", "get", "app:1"],
        &["ACL", "DRYRUN", "app", "get", "x"],
        &["ACL", "DRYRUN", "app", "flushall"],
        &["ACL", "DRYRUN", "app", "config", "get", "x"],
        &["ACL", "DRYRUN", "app", "publish", "chat:1", "m"],
        &["ACL", "DRYRUN", "app", "publish", "x", "m"],
        &["ACL", "DRYRUN", "ro", "set", "r:1", "v"],
        &["ACL", "DRYRUN", "nobody", "get", "x"],
        &["ACL", "DRYRUN", "app", "nocommand", "x"],
        &["ACL", "DRYRUN", "app", "get"],
        &["ACL", "GENPASS", "0"],
        &["ACL", "GENPASS", "abc"],
        &["ACL", "GENPASS", "5000"],
        &["ACL", "LOG", "x"],
        &["ACL", "LOG", "RESET"],
        &["ACL", "LOG"],
        &["ACL", "HELP"],
        &["ACL", "WHOAMI", "x"],
    ]);
    // RESP3: GETUSER is a map with a set of flags.
    let (theirs, ours) = s.both(&["HELLO", "3"]);
    assert_replies_equal(
        "HELLO 3",
        &mask_field(&theirs, "id"),
        &mask_field(&ours, "id"),
    );
    s.same_all(&[&["ACL", "GETUSER", "app"], &["ACL", "GETUSER", "nobody"]]);
    // The categories' commands: the same set (Redis lists them in its
    // dict's random order).
    for cat in ["dangerous", "read", "pubsub", "connection"] {
        let (theirs, ours) = s.both(&["ACL", "CAT", cat]);
        assert_eq!(sorted_lines(&theirs), sorted_lines(&ours), "ACL CAT {cat}");
    }
    let (_, ours) = s.both(&["ACL", "GENPASS"]);
    assert_eq!(ours.len(), b"$64\r\n\r\n".len() + 64, "{}", escape(&ours));
    let (_, ours) = s.both(&["ACL", "GENPASS", "32"]);
    assert!(ours.starts_with(b"$8\r\n"), "{}", escape(&ours));
    let (_, ours) = s.both(&["ACL", "SETUSER", "x", "on"]);
    assert!(
        ours.starts_with(b"-ERR keyway does not support 'ACL SETUSER'"),
        "{}",
        escape(&ours)
    );
}

/// The bulk strings of a flat array reply, sorted.
fn sorted_lines(reply: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(reply);
    let mut lines: Vec<String> = text
        .split("\r\n")
        .filter(|l| !l.starts_with(['$', '*', '~']) && !l.is_empty())
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[test]
fn acl_log_records_refusals_as_redis() {
    let (_b, reference, keyway) = setup();
    let mut s = side_by_side(&reference, &keyway);
    s.same(&["AUTH", "app", "apppass"]);
    s.same_all(&[
        &["GET", "x"],
        &["GET", "x"],
        &["FLUSHALL"],
        &["PUBLISH", "x", "m"],
        &["MULTI"],
        &["FLUSHALL"],
        &["DISCARD"],
        &["AUTH", "app", "wrong"],
        &["AUTH", "defpass"],
    ]);
    let (theirs, ours) = s.both(&["ACL", "LOG"]);
    let fields = |reply: &[u8]| -> Vec<String> {
        // Every field but the age and the client's details.
        let text = String::from_utf8_lossy(reply).into_owned();
        let lines: Vec<&str> = text.split("\r\n").collect();
        let mut out = Vec::new();
        let mut skip = false;
        for l in lines {
            if skip && !l.starts_with('$') {
                skip = false;
                continue;
            }
            if l == "age-seconds" || l == "client-info" {
                out.push(l.to_string());
                skip = true;
                continue;
            }
            if !l.starts_with('$') {
                out.push(l.to_string());
            }
        }
        out
    };
    assert_eq!(
        fields(&theirs),
        fields(&ours),
        "ACL LOG\nredis:  {}\nkeyway: {}",
        escape(&theirs),
        escape(&ours)
    );
    assert!(
        String::from_utf8_lossy(&ours).contains("user=app"),
        "client-info names the user: {}",
        escape(&ours)
    );
    // Redis 7.2's counters (7.0 has none).
    let (_, ours) = s.both(&["INFO", "stats"]);
    for field in [
        "acl_access_denied_auth:1",
        "acl_access_denied_cmd:2",
        "acl_access_denied_key:2",
        "acl_access_denied_channel:1",
    ] {
        let text = String::from_utf8_lossy(&ours);
        assert!(text.contains(field), "INFO stats {field}: {text}");
    }
    s.same(&["ACL", "LOG", "-1"]);
    s.same(&["ACL", "LOG", "0"]);
    let (theirs, ours) = s.both(&["ACL", "LOG", "2"]);
    assert_eq!(fields(&theirs), fields(&ours), "ACL LOG 2");
    let (theirs, ours) = s.both(&["HELLO", "3"]);
    assert_replies_equal(
        "HELLO 3",
        &mask_field(&theirs, "id"),
        &mask_field(&ours, "id"),
    );
    let (theirs, ours) = s.both(&["ACL", "LOG"]);
    assert_eq!(
        fields(&theirs),
        fields(&ours),
        "ACL LOG in RESP3\nredis:  {}\nkeyway: {}",
        escape(&theirs),
        escape(&ours)
    );
    s.same(&["ACL", "LOG", "RESET"]);
    s.same(&["ACL", "LOG"]);
}

#[test]
fn without_users_auth_behaves_as_redis_without_a_password() {
    let backend = Redis::start();
    let reference = Redis::start();
    let keyway = Keyway::start(&groups(&[&backend]));
    let mut s = side_by_side(&reference, &keyway);
    s.same_all(&[
        &["AUTH", "x"],
        &["AUTH", "default", "x"],
        &["AUTH", "nobody", "x"],
        &["ACL", "WHOAMI"],
        &["ACL", "LIST"],
        &["ACL", "USERS"],
        &["ACL", "GETUSER", "default"],
        &["GET", "x"],
    ]);
}

fn connect_auth(keyway: &Keyway, user: &str, pass: &str) -> TcpStream {
    let mut c = keyway.tcp();
    let r = roundtrip(&mut c, &["AUTH", user, pass]);
    assert_eq!(r, b"+OK\r\n", "AUTH {user}: {}", escape(&r));
    c
}

#[test]
fn reload_changes_users_live() {
    let backend = Redis::start();
    let base = groups(&[&backend]);
    let before = [
        ("default", "on >defpass ~* &* +@all"),
        ("app", "on >apppass ~app:* +@all"),
        ("tmp", "on >tmppass ~* +@all"),
        ("gone", "on >gonepass ~* +@all"),
        ("sub", "on >subpass ~* resetchannels &chat:* +@all"),
    ];
    let keyway = Keyway::start(&format!("{base}{}", users_toml(&before)));
    let mut app = connect_auth(&keyway, "app", "apppass");
    let mut tmp = connect_auth(&keyway, "tmp", "tmppass");
    let mut gone = connect_auth(&keyway, "gone", "gonepass");
    let mut sub = connect_auth(&keyway, "sub", "subpass");
    let r = roundtrip(&mut sub, &["SUBSCRIBE", "chat:1"]);
    assert!(r.starts_with(b"*3\r\n$9\r\nsubscribe"), "{}", escape(&r));
    let mut sub_ok = connect_auth(&keyway, "sub", "subpass");
    let r = roundtrip(&mut sub_ok, &["SUBSCRIBE", "chat:x"]);
    assert!(r.starts_with(b"*3\r\n$9\r\nsubscribe"), "{}", escape(&r));
    assert_eq!(roundtrip(&mut app, &["GET", "other"]).first(), Some(&b'-'));
    let after = [
        ("default", "on >defpass ~* &* +@all"),
        ("app", "on >newpass ~* +@all"),
        ("tmp", "off >tmppass ~* +@all"),
        ("sub", "on >subpass ~* resetchannels &news:* &chat:x +@all"),
    ];
    keyway.reload(&format!("{base}{}", users_toml(&after)));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = keyway.tcp();
        if roundtrip(&mut c, &["AUTH", "app", "newpass"]) == b"+OK\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "the new password never worked");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = keyway.tcp();
    let r = roundtrip(&mut c, &["AUTH", "app", "apppass"]);
    assert!(r.starts_with(b"-WRONGPASS"), "old password: {}", escape(&r));
    // A connected client of a changed user stays, with the new rules.
    assert_eq!(roundtrip(&mut app, &["GET", "other"]), b"$-1\r\n");
    assert_eq!(roundtrip(&mut app, &["ACL", "WHOAMI"]), b"$3\r\napp\r\n");
    // A subscriber whose channels are still allowed stays.
    let r = roundtrip(&mut sub_ok, &["PING"]);
    assert!(r.starts_with(b"*2\r\n$4\r\npong"), "{}", escape(&r));
    // Those of a removed user, of one turned off, and a subscriber to a
    // channel no longer allowed are disconnected.
    for (name, s) in [("gone", &mut gone), ("tmp", &mut tmp), ("sub", &mut sub)] {
        let _ = s.write_all(&request(&["PING"]));
        let got = read_some(s, Duration::from_millis(500));
        assert!(
            got.is_empty(),
            "{name}'s client was answered: {}",
            escape(&got)
        );
    }
}

/// Redis 7.0 checks a transaction's commands again at `EXEC`: one the
/// user's rules no longer allow gets `-NOPERM ACLs rules changed …` in its
/// slot of `EXEC`'s reply, the others run. keyway's users change on a
/// reload between `MULTI` and `EXEC`; the reference's with `ACL SETUSER`.
#[test]
fn a_transaction_is_checked_again_at_exec_after_the_users_change() {
    let backend = Redis::start();
    let reference = Redis::start();
    let base = groups(&[&backend]);
    let before = [
        ("default", "on >defpass ~* &* +@all"),
        ("tx", "on >txpass ~* &* +@all"),
    ];
    let after = [
        ("default", "on >defpass ~* &* +@all"),
        ("tx", "on >txpass ~k:* resetchannels &ok:* +@all -set"),
    ];
    let setuser = |rules: &str| {
        let mut c = reference.conn();
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg("tx").arg("reset");
        for r in rules.split_whitespace() {
            cmd.arg(r);
        }
        let () = cmd.query(&mut c).expect("ACL SETUSER on the reference");
    };
    setuser(before[1].1);
    let keyway = Keyway::start(&format!("{base}{}", users_toml(&before)));
    let mut kw = connect_auth(&keyway, "tx", "txpass");
    let mut rf = TcpStream::connect(reference.addr()).unwrap();
    rf.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(roundtrip(&mut rf, &["AUTH", "tx", "txpass"]), b"+OK\r\n");
    let queued: &[&[&str]] = &[
        &["MULTI"],
        &["SET", "k:1", "v"],
        &["INCR", "k:n"],
        &["GET", "other"],
        &["PUBLISH", "news", "x"],
        &["PUBLISH", "ok:1", "x"],
        &["ECHO", "hi"],
    ];
    for cmd in queued {
        let (r, k) = (roundtrip(&mut rf, cmd), roundtrip(&mut kw, cmd));
        assert_replies_equal(&cmd.join(" "), &r, &k);
    }
    setuser(after[1].1);
    keyway.reload(&format!("{base}{}", users_toml(&after)));
    let mut admin = connect_auth(&keyway, "default", "defpass");
    let deadline = Instant::now() + Duration::from_secs(10);
    while roundtrip(&mut admin, &["ACL", "DRYRUN", "tx", "SET", "k:1", "v"]) == b"+OK\r\n" {
        assert!(Instant::now() < deadline, "the reload never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (r, k) = (roundtrip(&mut rf, &["EXEC"]), roundtrip(&mut kw, &["EXEC"]));
    assert!(
        r.starts_with(b"*6\r\n-NOPERM ACLs rules changed"),
        "the reference: {}",
        escape(&r)
    );
    assert_replies_equal("EXEC after the rules changed", &r, &k);
    // The refusals are in ACL LOG, in the `multi` context.
    let log = roundtrip(&mut admin, &["ACL", "LOG"]);
    assert!(
        log.starts_with(b"*3\r\n") && escape(&log).contains("$5\\r\\nmulti\\r\\n"),
        "{}",
        escape(&log)
    );
    // The connection goes on with the new rules.
    let cmd = ["SET", "k:2", "v"];
    assert_replies_equal(
        "SET after EXEC",
        &roundtrip(&mut rf, &cmd),
        &roundtrip(&mut kw, &cmd),
    );
}

/// At `EXEC` after the users changed, Redis checks every queued command
/// again, a script call and a `SORT … BY` whose option is refused included:
/// a user who may no longer run `EVAL` or `SORT` gets `-NOPERM ACLs rules
/// changed …` in their slots (not the script's own error, nor `SORT`'s).
#[test]
fn exec_checks_queued_scripts_and_sorts_again_after_the_users_change() {
    let backend = Redis::start();
    let reference = Redis::start();
    let base = groups(&[&backend]);
    // `sc` may run scripts (keyway lets only users with every command, key
    // and channel), `so` may not read every key (`SORT … BY` refused).
    let before = [
        ("default", "on >defpass ~* &* +@all"),
        ("sc", "on >scpass ~* &* +@all"),
        ("so", "on >sopass %R~r:* ~w:* &* +@all"),
    ];
    let after = [
        ("default", "on >defpass ~* &* +@all"),
        ("sc", "on >scpass ~* &* +@all -eval"),
        ("so", "on >sopass %R~r:* ~w:* &* +@all -sort"),
    ];
    let setusers = |users: &[(&str, &str)]| {
        let mut c = reference.conn();
        for (name, rules) in &users[1..] {
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER").arg(*name).arg("reset");
            for r in rules.split_whitespace() {
                cmd.arg(r);
            }
            let () = cmd.query(&mut c).expect("ACL SETUSER on the reference");
        }
    };
    setusers(&before);
    let keyway = Keyway::start(&format!("{base}{}", users_toml(&before)));
    let queued: [(&str, &str, &[&[&str]]); 2] = [
        (
            "sc",
            "scpass",
            &[
                &["MULTI"],
                // The very frame keyway stands in for a refused command with.
                &["EVAL", "return redis.error_reply(ARGV[1])", "0", "mine"],
                &["ECHO", "hi"],
            ],
        ),
        (
            "so",
            "sopass",
            &[
                &["MULTI"],
                // Queued; refused by Redis when it runs.
                &["SORT", "r:{t}l", "BY", "w:{t}_*"],
                &["ECHO", "hi"],
            ],
        ),
    ];
    let mut conns = Vec::new();
    for (user, pass, cmds) in queued {
        let mut kw = connect_auth(&keyway, user, pass);
        let mut rf = TcpStream::connect(reference.addr()).unwrap();
        rf.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(roundtrip(&mut rf, &["AUTH", user, pass]), b"+OK\r\n");
        for cmd in cmds {
            let (r, k) = (roundtrip(&mut rf, cmd), roundtrip(&mut kw, cmd));
            assert_replies_equal(&cmd.join(" "), &r, &k);
        }
        conns.push((rf, kw));
    }
    setusers(&after);
    keyway.reload(&format!("{base}{}", users_toml(&after)));
    let mut admin = connect_auth(&keyway, "default", "defpass");
    let deadline = Instant::now() + Duration::from_secs(10);
    while roundtrip(&mut admin, &["ACL", "DRYRUN", "so", "SORT", "r:l"]) == b"+OK\r\n" {
        assert!(Instant::now() < deadline, "the reload never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (rf, kw) in &mut conns {
        let (r, k) = (roundtrip(rf, &["EXEC"]), roundtrip(kw, &["EXEC"]));
        assert!(
            r.starts_with(b"*2\r\n-NOPERM ACLs rules changed"),
            "the reference: {}",
            escape(&r)
        );
        assert_replies_equal("EXEC after the rules changed", &r, &k);
    }
}

#[test]
fn failed_auth_is_rate_limited_and_logged() {
    let backend = Redis::start();
    let mut keyway = Keyway::start(&format!(
        "{}{}[auth]\nmax_failures = 3\nfailure_window = \"60s\"\n",
        groups(&[&backend]),
        users_toml(USERS)
    ));
    let mut c = keyway.tcp();
    for _ in 0..3 {
        let r = roundtrip(&mut c, &["AUTH", "app", "hunter2"]);
        assert_eq!(
            r,
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n".to_vec()
        );
    }
    let mut other = keyway.tcp();
    let r = roundtrip(&mut other, &["AUTH", "app", "apppass"]);
    assert!(
        r.starts_with(b"-WRONGPASS too many failed authentication attempts"),
        "the right password is refused too while the address is over the limit: {}",
        escape(&r)
    );
    let r = roundtrip(&mut other, &["HELLO", "3", "AUTH", "app", "apppass"]);
    assert!(r.starts_with(b"-WRONGPASS too many"), "{}", escape(&r));
    keyway.wait_log("authentication failed");
    let logs = keyway.logs().join("\n");
    let line = logs
        .lines()
        .find(|l| l.contains("authentication failed"))
        .unwrap_or_default();
    assert!(line.contains("app"), "the user is logged: {line}");
    assert!(line.contains("127.0.0.1"), "the address is logged: {line}");
    assert!(!logs.contains("hunter2"), "never the password: {logs}");
}

#[test]
fn client_list_and_kill_by_user() {
    let (_b, _reference, keyway) = setup();
    let mut admin = connect_auth(&keyway, "default", "defpass");
    let mut app = connect_auth(&keyway, "app", "apppass");
    let r = String::from_utf8_lossy(&roundtrip(&mut app, &["CLIENT", "INFO"])).into_owned();
    assert!(r.contains(" user=app "), "{r}");
    let r = String::from_utf8_lossy(&roundtrip(&mut admin, &["CLIENT", "LIST"])).into_owned();
    assert!(
        r.contains(" user=app ") && r.contains(" user=default "),
        "{r}"
    );
    let r = roundtrip(&mut admin, &["CLIENT", "KILL", "USER", "nobody"]);
    assert_eq!(r, b"-ERR No such user 'nobody'\r\n".to_vec());
    let r = roundtrip(&mut admin, &["CLIENT", "KILL", "USER", "app"]);
    assert_eq!(r, b":1\r\n".to_vec());
    assert!(
        keyway_testkit::resp::closed(&mut app),
        "app's client is closed"
    );
}

/// A local address that is not loopback, if the machine has one.
fn non_loopback() -> Option<IpAddr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback())
}

#[test]
fn protected_mode_refuses_other_addresses_without_a_password() {
    let Some(ip) = non_loopback() else {
        common::skip!("no non-loopback address (the decision is unit-tested in engine::auth)");
    };
    let backend = Redis::start();
    let base = groups(&[&backend]);
    let start = |body: &str| {
        let k = Keyway::start_args(body, &["--listen", "0.0.0.0:0"]);
        let far = SocketAddr::new(ip, k.addr.port());
        let near = SocketAddr::new([127, 0, 0, 1].into(), k.addr.port());
        (k, far, near)
    };
    let ask = |addr: SocketAddr| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&request(&["PING"])).unwrap();
        read_some(&mut s, Duration::from_millis(500))
    };
    let (mut k, far, near) = start(&base);
    let r = ask(far);
    assert!(
        r.starts_with(b"-DENIED keyway is running in protected mode"),
        "{}",
        escape(&r)
    );
    assert_eq!(ask(near), b"+PONG\r\n");
    k.wait_log("protected mode is on");
    drop(k);
    let (_k, far, _) = start(&format!("protected_mode = false\n{base}"));
    assert_eq!(ask(far), b"+PONG\r\n", "protected_mode = false");
    let (_k, far, _) = start(&format!("{base}{}", users_toml(USERS)));
    assert_eq!(
        ask(far),
        b"-NOAUTH Authentication required.\r\n",
        "a default password lifts it"
    );
}
