//! `CLIENT LIST|KILL|PAUSE|UNPAUSE|REPLY|UNBLOCK|NO-EVICT` through keyway to
//! three real Redis groups, with one core and with two (the commands must
//! see every core's clients). Replies a single Redis would give the same
//! way (errors, `CLIENT REPLY`, an unblocked `BLPOP`) are compared byte for
//! byte with a real redis-server ([`SideBySide`]); the rest is checked on
//! keyway's own clients.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::time::Duration;

use common::{groups, key_on, wait_for, Keyway, Redis, SideBySide};
use keyway_testkit::resp::{closed, exchange, read_replies, request};

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

/// One command, one reply, as bytes.
fn ask<A: AsRef<[u8]>>(s: &mut TcpStream, args: &[A]) -> Vec<u8> {
    exchange(s, &request(args), 1)
}

/// The text of a bulk (or RESP3 verbatim) reply.
fn text(reply: &[u8]) -> String {
    let s = String::from_utf8(reply.to_vec()).unwrap();
    let (_, body) = s
        .split_once("\r\n")
        .unwrap_or_else(|| panic!("not a bulk: {s:?}"));
    body.strip_suffix("\r\n").unwrap_or(body).to_string()
}

/// A `CLIENT LIST`/`INFO` line's fields, in order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(' ')
        .map(|f| {
            let (k, v) = f.split_once('=').unwrap_or((f, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `CLIENT LIST` (with `filter`) asked on `s`: each line's fields by name,
/// in the order listed.
fn list(s: &mut TcpStream, filter: &[&str]) -> Vec<HashMap<String, String>> {
    let mut args = vec!["CLIENT", "LIST"];
    args.extend_from_slice(filter);
    let reply = ask(s, &args);
    assert!(
        reply.starts_with(b"$"),
        "CLIENT LIST: {}",
        String::from_utf8_lossy(&reply)
    );
    text(&reply)
        .lines()
        .map(|l| fields(l).into_iter().collect())
        .collect()
}

/// A connection to keyway with its `CLIENT ID`, core, and address as
/// keyway sees it.
struct Conn {
    s: TcpStream,
    id: u64,
    core: String,
    addr: String,
}

fn connect(kw: &Keyway) -> Conn {
    let mut s = kw.tcp();
    let info: HashMap<String, String> = fields(text(&ask(&mut s, &["CLIENT", "INFO"])).trim_end())
        .into_iter()
        .collect();
    Conn {
        s,
        id: info["id"].parse().unwrap(),
        core: info["core"].clone(),
        addr: info["addr"].clone(),
    }
}

/// At least `n` connections, on every one of `cores` cores (SO_REUSEPORT
/// spreads them; `CLIENT INFO` says where each landed).
fn spread(kw: &Keyway, cores: usize, n: usize) -> Vec<Conn> {
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        let seen: HashSet<&str> = conns.iter().map(|c| c.core.as_str()).collect();
        if seen.len() >= cores && conns.len() >= n {
            break;
        }
        assert!(conns.len() < 64, "every connection landed on one core");
        conns.push(connect(kw));
    }
    // Each core's first connection first, so that a test using the first
    // few has clients on every core.
    let mut seen = HashSet::new();
    let (mut first, rest): (Vec<Conn>, Vec<Conn>) =
        conns.into_iter().partition(|c| seen.insert(c.core.clone()));
    first.extend(rest);
    first
}

fn both_cores(test: impl Fn(usize)) {
    for cores in [1, 2] {
        test(cores);
    }
}

#[test]
fn client_list_shows_every_client_with_redis_fields_and_filters() {
    // Redis 7.0's field names, in its order.
    let reference = Redis::start();
    let mut r = TcpStream::connect(reference.addr()).unwrap();
    let redis_line = text(&ask(&mut r, &["CLIENT", "LIST"]));
    let redis_names: Vec<String> = fields(redis_line.lines().next().unwrap())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    both_cores(|cores| {
        let c = cluster(cores);
        let mut conns = spread(&c.kw, cores, 4);
        for (i, conn) in conns.iter_mut().enumerate() {
            assert_eq!(
                ask(&mut conn.s, &["CLIENT", "SETNAME", &format!("c{i}")]),
                b"+OK\r\n"
            );
        }
        // One in MULTI with a command queued, one subscribed.
        assert_eq!(ask(&mut conns[1].s, &["MULTI"]), b"+OK\r\n");
        assert_eq!(ask(&mut conns[1].s, &["GET", "k"]), b"+QUEUED\r\n");
        exchange(&mut conns[2].s, &request(&["SUBSCRIBE", "news"]), 1);
        let asker = &mut conns[0];
        let lines = list(&mut asker.s, &[]);
        let ids: Vec<u64> = lines.iter().map(|l| l["id"].parse().unwrap()).collect();
        let mut want: Vec<u64> = conns.iter().map(|c| c.id).collect();
        want.sort();
        assert_eq!(
            ids, want,
            "CLIENT LIST lists every core's clients, by id ({cores} cores)"
        );
        let text_line = text(&ask(&mut conns[0].s, &["CLIENT", "LIST"]));
        let ours: Vec<String> = fields(text_line.lines().next().unwrap())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            ours[..redis_names.len()],
            redis_names[..],
            "Redis 7.0's fields, in its order"
        );
        assert_eq!(&ours[redis_names.len()..], ["core"], "then keyway's core=");
        let by_id: HashMap<u64, &HashMap<String, String>> = lines
            .iter()
            .map(|l| (l["id"].parse().unwrap(), l))
            .collect();
        for (i, conn) in conns.iter().enumerate() {
            let l = by_id[&conn.id];
            assert_eq!(l["name"], format!("c{i}"));
            assert_eq!(l["addr"], conn.addr);
            assert_eq!(l["core"], conn.core);
            assert_eq!(l["laddr"], c.kw.addr.to_string());
        }
        let (me, tx, sub) = (
            by_id[&conns[0].id],
            by_id[&conns[1].id],
            by_id[&conns[2].id],
        );
        assert_eq!(
            (me["flags"].as_str(), me["cmd"].as_str()),
            ("N", "client|list")
        );
        assert_eq!((tx["flags"].as_str(), tx["multi"].as_str()), ("x", "1"));
        assert_eq!((sub["flags"].as_str(), sub["sub"].as_str()), ("P", "1"));
        // TYPE and ID filters.
        let pubsub = list(&mut conns[0].s, &["TYPE", "pubsub"]);
        assert_eq!(pubsub.len(), 1);
        assert_eq!(pubsub[0]["id"], conns[2].id.to_string());
        assert_eq!(
            list(&mut conns[0].s, &["TYPE", "normal"]).len(),
            conns.len() - 1
        );
        assert!(list(&mut conns[0].s, &["TYPE", "master"]).is_empty());
        let (a, b) = (conns[3].id.to_string(), conns[1].id.to_string());
        let picked = list(&mut conns[0].s, &["ID", &a, "999999", &b]);
        let picked: Vec<&str> = picked.iter().map(|l| l["id"].as_str()).collect();
        assert_eq!(
            picked,
            [a.as_str(), b.as_str()],
            "ID filter, in the order given"
        );
        // HELP: Redis's (keyway answers every subcommand it lists).
        let help = |s: &mut TcpStream| -> Vec<String> {
            let reply = String::from_utf8(ask(s, &["CLIENT", "HELP"])).unwrap();
            reply
                .split("\r\n")
                .filter_map(|l| l.strip_prefix('+'))
                .map(String::from)
                .collect()
        };
        let mut r = TcpStream::connect(reference.addr()).unwrap();
        assert_eq!(help(&mut conns[0].s), help(&mut r), "CLIENT HELP");
        // Errors as Redis words them.
        let mut sbs = SideBySide::connect(reference.addr(), c.kw.addr);
        for bad in [
            &["CLIENT", "LIST", "TYPE", "foo"][..],
            &["CLIENT", "LIST", "ID", "x"],
            &["CLIENT", "LIST", "ID"],
            &["CLIENT", "LIST", "foo"],
            &["CLIENT", "LIST", "TYPE", "normal", "x"],
            &["CLIENT", "SETINFO", "lib-name", "x"],
            &["CLIENT", "NO-TOUCH", "on"],
            &["CLIENT", "NO-EVICT", "on"],
            &["CLIENT", "NO-EVICT", "maybe"],
            &["CLIENT", "NO-EVICT", "off"],
        ] {
            sbs.same(bad);
        }
    });
}

#[test]
fn client_kill_closes_exactly_the_clients_its_filters_name() {
    let reference = Redis::start();
    both_cores(|cores| {
        let c = cluster(cores);
        let mut conns = spread(&c.kw, cores, 8);
        let mut asker = conns.remove(0);
        // ID: on whichever core it is.
        let victim = conns.remove(0);
        let mut victim_s = victim.s;
        assert_eq!(
            ask(
                &mut asker.s,
                &["CLIENT", "KILL", "ID", &victim.id.to_string()]
            ),
            b":1\r\n"
        );
        assert!(closed(&mut victim_s), "killed by ID");
        // Old form: +OK, then no such client.
        let victim = conns.remove(0);
        let mut victim_s = victim.s;
        assert_eq!(
            ask(&mut asker.s, &["CLIENT", "KILL", &victim.addr]),
            b"+OK\r\n"
        );
        assert!(closed(&mut victim_s), "killed by ip:port");
        let mut sbs = SideBySide::connect(reference.addr(), c.kw.addr);
        sbs.same(&["CLIENT", "KILL", &victim.addr]);
        // ADDR with SKIPME yes.
        let victim = conns.remove(0);
        let mut victim_s = victim.s;
        let got = ask(
            &mut asker.s,
            &["CLIENT", "KILL", "ADDR", &victim.addr, "SKIPME", "yes"],
        );
        assert_eq!(got, b":1\r\n");
        assert!(closed(&mut victim_s), "killed by ADDR");
        // TYPE pubsub: only the subscriber.
        let mut sub = conns.remove(0);
        exchange(&mut sub.s, &request(&["SUBSCRIBE", "news"]), 1);
        assert_eq!(
            ask(&mut asker.s, &["CLIENT", "KILL", "TYPE", "pubsub"]),
            b":1\r\n"
        );
        assert!(closed(&mut sub.s), "killed by TYPE pubsub");
        // A blocked client: its block ends at Redis too, and nothing it
        // would have popped is lost.
        let k = key_on(&c.body, 2, "killed");
        let mut blocked = conns.remove(0);
        {
            use std::io::Write;
            blocked.s.write_all(&request(&["BLPOP", &k, "0"])).unwrap();
        }
        let blpops = |r: &Redis| {
            let mut s = TcpStream::connect(r.addr()).unwrap();
            let clients = text(&ask(&mut s, &["CLIENT", "LIST"]));
            let blocked = |l: &&str| l.contains("cmd=blpop") && l.contains("flags=b");
            clients.lines().filter(blocked).count()
        };
        wait_for("BLPOP blocked at Redis", Duration::from_secs(10), || {
            (blpops(&c.redis[2]) == 1).then_some(())
        });
        let id = blocked.id.to_string();
        assert_eq!(ask(&mut asker.s, &["CLIENT", "KILL", "ID", &id]), b":1\r\n");
        assert!(closed(&mut blocked.s), "blocked client killed");
        wait_for("the BLPOP to end at Redis", Duration::from_secs(10), || {
            (blpops(&c.redis[2]) == 0).then_some(())
        });
        assert_eq!(ask(&mut asker.s, &["RPUSH", &k, "x"]), b":1\r\n");
        assert_eq!(ask(&mut asker.s, &["LLEN", &k]), b":1\r\n");
        // MAXAGE (Redis 7.4's): no client is that old.
        assert_eq!(
            ask(&mut asker.s, &["CLIENT", "KILL", "MAXAGE", "100000"]),
            b":0\r\n"
        );
        // The others are untouched.
        for other in &mut conns {
            assert_eq!(
                ask(&mut other.s, &["PING"]),
                b"+PONG\r\n",
                "client {} lives",
                other.id
            );
        }
        // Errors as Redis words them.
        for bad in [
            &["CLIENT", "KILL", "ID", "0"][..],
            &["CLIENT", "KILL", "ID", "x"],
            &["CLIENT", "KILL", "TYPE", "foo"],
            &["CLIENT", "KILL", "USER", "nobody"],
            &["CLIENT", "KILL", "SKIPME", "maybe"],
            &["CLIENT", "KILL", "ID", "5", "TYPE"],
            &["CLIENT", "KILL", "FOO", "bar"],
            &["CLIENT", "KILL", "1.2.3.4:5"],
            &["CLIENT", "KILL", "ID", "999999"],
            &["CLIENT", "KILL", "TYPE", "master"],
        ] {
            sbs.same(bad);
        }
        // USER default and LADDR keyway's, SKIPME yes (the default): every
        // other client.
        let others = conns.len() as i64 + 1; // and `sbs`'s keyway side
        let laddr = c.kw.addr.to_string();
        let got = ask(
            &mut asker.s,
            &["CLIENT", "KILL", "USER", "default", "LADDR", &laddr],
        );
        assert_eq!(got, format!(":{others}\r\n").into_bytes());
        for other in &mut conns {
            assert!(closed(&mut other.s), "client {} killed by USER", other.id);
        }
        // SKIPME no: the asker too, after its reply.
        let me = asker.id.to_string();
        let got = ask(&mut asker.s, &["CLIENT", "KILL", "ID", &me, "SKIPME", "no"]);
        assert_eq!(got, b":1\r\n");
        assert!(closed(&mut asker.s), "the asker is closed after its reply");
    });
}

/// Waits until `CLIENT LIST` (asked on `s`) shows client `id` blocked.
fn wait_blocked(s: &mut TcpStream, id: u64) {
    let id = id.to_string();
    wait_for("the client to be held", Duration::from_secs(10), || {
        list(s, &["ID", &id])
            .first()
            .is_some_and(|l| l["flags"].contains('b'))
            .then_some(())
    });
}

#[test]
fn client_pause_write_holds_writes_on_every_core_until_unpause_or_timeout() {
    both_cores(|cores| {
        let c = cluster(cores);
        let mut conns = spread(&c.kw, cores, 3);
        let k = key_on(&c.body, 1, "paused");
        assert_eq!(
            ask(&mut conns[0].s, &["CLIENT", "PAUSE", "50000", "WRITE"]),
            b"+OK\r\n"
        );
        // Reads are served, on every core.
        for conn in conns.iter_mut() {
            assert_eq!(ask(&mut conn.s, &["GET", &k]), b"$-1\r\n");
        }
        // Writes are held, on every core; the client's later reads wait
        // behind its write.
        for conn in conns.iter_mut().skip(1) {
            use std::io::Write;
            let mut req = request(&["SET", &k, "v"]);
            req.extend(request(&["GET", &k]));
            conn.s.write_all(&req).unwrap();
        }
        let held: Vec<u64> = conns.iter().skip(1).map(|c| c.id).collect();
        for id in held {
            wait_blocked(&mut conns[0].s, id);
        }
        let mut direct = c.redis[1].conn();
        let v: Option<String> = redis::cmd("GET").arg(&k).query(&mut direct).unwrap();
        assert_eq!(v, None, "the SETs are held at keyway");
        assert_eq!(ask(&mut conns[0].s, &["CLIENT", "UNPAUSE"]), b"+OK\r\n");
        for conn in conns.iter_mut().skip(1) {
            let got = read_replies(&mut conn.s, 2);
            assert_eq!(got, b"+OK\r\n$1\r\nv\r\n", "served in order after UNPAUSE");
        }
        // A pause that times out.
        assert_eq!(
            ask(&mut conns[0].s, &["CLIENT", "PAUSE", "300", "WRITE"]),
            b"+OK\r\n"
        );
        {
            use std::io::Write;
            conns[1].s.write_all(&request(&["DEL", &k])).unwrap();
        }
        let id = conns[1].id;
        wait_blocked(&mut conns[0].s, id);
        assert_eq!(
            read_replies(&mut conns[1].s, 1),
            b":1\r\n",
            "served after the timeout"
        );
        // ALL holds reads too (and the asker's own next command).
        assert_eq!(
            ask(&mut conns[0].s, &["CLIENT", "PAUSE", "300", "ALL"]),
            b"+OK\r\n"
        );
        {
            use std::io::Write;
            conns[1].s.write_all(&request(&["GET", &k])).unwrap();
        }
        assert_eq!(read_replies(&mut conns[1].s, 1), b"$-1\r\n");
        // Errors as Redis words them.
        let reference = Redis::start();
        let mut sbs = SideBySide::connect(reference.addr(), c.kw.addr);
        for bad in [
            &["CLIENT", "PAUSE", "x"][..],
            &["CLIENT", "PAUSE", "-1"],
            &["CLIENT", "PAUSE", "10", "foo"],
            &["CLIENT", "PAUSE", "10", "write", "x"],
            &["CLIENT", "UNPAUSE"],
        ] {
            sbs.same(bad);
        }
    });
}

#[test]
fn client_reply_off_skip_on_as_redis() {
    let c = cluster(1);
    let reference = Redis::start();
    let mut sbs = SideBySide::connect(reference.addr(), c.kw.addr);
    let (a, b) = (key_on(&c.body, 0, "r"), key_on(&c.body, 2, "r"));
    let script: Vec<Vec<&str>> = vec![
        vec!["CLIENT", "REPLY", "OFF"],
        vec!["PING"],
        vec!["SET", &a, "1"],
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["MGET", &a, &b],
        vec!["CLIENT", "REPLY", "ON"],
        vec!["GET", &a],
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["MGET", &a, &b],
        vec!["PING"],
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["CLIENT", "REPLY", "ON"],
        vec!["CLIENT", "REPLY", "foo"],
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["CLIENT", "REPLY", "foo"],
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["SET", &b, "2"],
        vec!["MGET", &a, &b],
    ];
    let mut bytes = Vec::new();
    for cmd in &script {
        bytes.extend(request(cmd));
    }
    // +OK, "1", +PONG, +OK, -ERR syntax error, [a, b].
    let got = sbs.raw_same(&bytes, 6);
    assert!(got.ends_with(b"*2\r\n$1\r\n1\r\n$1\r\n2\r\n"));
    // The same, one command at a time.
    let mut sbs = SideBySide::connect(reference.addr(), c.kw.addr);
    sbs.raw_same(&request(&["CLIENT", "REPLY", "SKIP"]), 0);
    sbs.raw_same(&request(&["GET", &a]), 0);
    sbs.same(&["GET", &a]);
}

#[test]
fn client_unblock_ends_a_blpop_with_redis_reply() {
    // What Redis answers an unblocked BLPOP, by TIMEOUT and by ERROR.
    let reference = Redis::start();
    let unblocked = |addr: String, key: &str, mode: &str, via: &Redis| {
        let mut blocked = TcpStream::connect(&addr).unwrap();
        let mut admin = TcpStream::connect(&addr).unwrap();
        let id = text(&ask(&mut blocked, &["CLIENT", "INFO"]))
            .split(' ')
            .find_map(|f| f.strip_prefix("id="))
            .unwrap()
            .to_string();
        {
            use std::io::Write;
            blocked.write_all(&request(&["BLPOP", key, "0"])).unwrap();
        }
        // Redis itself shows the BLPOP blocked (keyway's or the reference's).
        let mut via_conn = TcpStream::connect(via.addr()).unwrap();
        wait_for("BLPOP blocked at Redis", Duration::from_secs(10), || {
            text(&ask(&mut via_conn, &["CLIENT", "LIST"]))
                .lines()
                .any(|l| l.contains("cmd=blpop") && l.contains("flags=b"))
                .then_some(())
        });
        let n = ask(&mut admin, &["CLIENT", "UNBLOCK", &id, mode]);
        (n, read_replies(&mut blocked, 1))
    };
    both_cores(|cores| {
        let c = cluster(cores);
        let k = key_on(&c.body, 2, "bl");
        for mode in ["TIMEOUT", "ERROR"] {
            let theirs = unblocked(reference.addr(), "bl", mode, &reference);
            let ours = unblocked(c.kw.addr.to_string(), &k, mode, &c.redis[2]);
            assert_eq!(ours, theirs, "CLIENT UNBLOCK {mode} ({cores} cores)");
        }
        let mut sbs = SideBySide::connect(reference.addr(), c.kw.addr);
        for bad in [
            &["CLIENT", "UNBLOCK", "x"][..],
            &["CLIENT", "UNBLOCK", "1", "foo"],
            &["CLIENT", "UNBLOCK", "1", "timeout", "x"],
            &["CLIENT", "UNBLOCK", "999999"],
        ] {
            sbs.same(bad);
        }
    });
}
