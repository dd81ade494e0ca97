//! MONITOR, LATENCY and MEMORY through keyway to three real Redis groups:
//! the merged monitor stream (commands of every group, none of keyway's own
//! maintenance traffic, which a direct MONITOR on the backend does see);
//! the backend MONITOR connections closed when the client leaves (seen in
//! the backends' own `CLIENT LIST`); what a monitoring client may send, as
//! a real redis-server answers it ([`SideBySide`]); LATENCY and MEMORY
//! replies carrying every group's data, `MEMORY USAGE` byte for byte.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{counter, groups, key_on, table_version, wait_for, Keyway, Redis, SideBySide};
use keyway_testkit::resp::request;

const WAIT: Duration = Duration::from_secs(10);

struct Cluster {
    redis: Vec<Redis>,
    kw: Keyway,
    body: String,
}

fn cluster() -> Cluster {
    cluster_with(&[])
}

fn cluster_with(args: &[&str]) -> Cluster {
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start_with(args)).collect();
    let body = format!("cores = 2\n{}", groups(&redis.iter().collect::<Vec<_>>()));
    let kw = Keyway::start(&body);
    Cluster { redis, kw, body }
}

fn send(s: &mut TcpStream, args: &[&str]) {
    s.write_all(&request(args)).unwrap();
}

/// Reads from `s` until what was read contains `needle` (within 10 s).
fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if text.contains(needle) {
            return text;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {needle:?} within {WAIT:?}; got {text:?}"
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => panic!("closed before {needle:?}; got {text:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

fn monitor(addr: impl std::net::ToSocketAddrs) -> TcpStream {
    let mut m = TcpStream::connect(addr).unwrap();
    send(&mut m, &["MONITOR"]);
    read_until(&mut m, "+OK\r\n");
    m
}

/// Monitor connections (`flags=O`) a Redis server has.
fn monitors(r: &Redis) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut r.conn())
        .unwrap();
    list.lines().filter(|l| l.contains(" flags=O ")).count()
}

#[test]
fn monitor_sees_commands_of_every_group_but_not_keyways_own() {
    let c = cluster();
    // A direct monitor on group 1's server sees what keyway sends there.
    let mut direct = monitor(c.redis[0].addr());
    let mut m = monitor(c.kw.addr);
    for r in &c.redis {
        assert_eq!(
            monitors(r),
            if std::ptr::eq(r, &c.redis[0]) { 2 } else { 1 }
        );
    }
    let (k1, k2, k3) = (
        key_on(&c.body, 0, "mon"),
        key_on(&c.body, 1, "mon"),
        key_on(&c.body, 2, "end"),
    );
    let mut kw = c.kw.conn();
    let _: () = redis::cmd("SET").arg(&k1).arg("v1").query(&mut kw).unwrap();
    let _: () = redis::cmd("SET").arg(&k2).arg("v2").query(&mut kw).unwrap();
    // A WATCH leases a dedicated connection: keyway's CLIENT ID on it, and
    // its UNWATCH when it is given back.
    let _: () = redis::cmd("WATCH").arg(&k1).query(&mut kw).unwrap();
    let _: () = redis::cmd("UNWATCH").query(&mut kw).unwrap();
    let _: () = redis::cmd("WATCH").arg(&k1).query(&mut kw).unwrap();
    let (): () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&k1)
        .arg("v3")
        .ignore()
        .query(&mut kw)
        .unwrap();
    let _: Option<String> = redis::cmd("GET").arg(&k3).query(&mut kw).unwrap();
    let seen = read_until(&mut m, &format!("\"GET\" \"{k3}\""));
    for want in [
        format!("\"SET\" \"{k1}\" \"v1\""),
        format!("\"SET\" \"{k2}\" \"v2\""),
        format!("\"WATCH\" \"{k1}\""),
        "\"MULTI\"".to_string(),
        format!("\"SET\" \"{k1}\" \"v3\""),
        "\"EXEC\"".to_string(),
    ] {
        assert!(seen.contains(&want), "{want} missing from {seen:?}");
    }
    assert!(
        !seen.contains("\"CLIENT\" \"ID\"") && !seen.contains("\"UNWATCH\""),
        "keyway's own traffic shown: {seen:?}"
    );
    for line in seen.lines() {
        assert!(
            line.starts_with('+') && line.contains(" [0 127.0.0.1:"),
            "a Redis monitor line: {line:?}"
        );
    }
    // The filter is what hides them: the server did run them.
    let raw = read_until(&mut direct, &format!("\"SET\" \"{k1}\" \"v3\""));
    assert!(raw.contains("\"CLIENT\" \"ID\""), "{raw:?}");
    // Counted in INFO keyway (published by each core's tick).
    wait_for("monitor counters", WAIT, || {
        (counter(&c.kw, "monitor_lines_left_out") >= 1 && counter(&c.kw, "monitor_lines") >= 7)
            .then_some(())
    });
}

#[test]
fn keyway_ctlds_named_connections_are_left_out() {
    let c = cluster();
    let named = |name: &str| {
        let mut con = c.redis[0].conn();
        let _: () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(name)
            .query(&mut con)
            .unwrap();
        con
    };
    // keyway-ctld's connections: one open before MONITOR (found by CLIENT
    // LIST), one opened after (its CLIENT SETNAME line names it).
    let mut before = named("keyway-ctld");
    let mut m = monitor(c.kw.addr);
    let mut after = named("keyway-ctld");
    let mut other = named("someone");
    let _: (i64, Vec<String>) = redis::cmd("SCAN").arg(0).query(&mut before).unwrap();
    let _: i64 = redis::cmd("DEL").arg("swept").query(&mut after).unwrap();
    let _: () = redis::cmd("SET")
        .arg("marker")
        .arg("1")
        .query(&mut other)
        .unwrap();
    let seen = read_until(&mut m, "\"SET\" \"marker\" \"1\"");
    assert!(
        seen.contains("\"CLIENT\" \"SETNAME\" \"someone\""),
        "{seen:?}"
    );
    for hidden in ["\"SCAN\"", "\"DEL\"", "keyway-ctld"] {
        assert!(!seen.contains(hidden), "{hidden} shown: {seen:?}");
    }
}

#[test]
fn the_monitor_connections_close_when_the_client_leaves() {
    let c = cluster();
    let m = monitor(c.kw.addr);
    for r in &c.redis {
        assert_eq!(monitors(r), 1, "one MONITOR connection per group");
    }
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut c.kw.conn())
        .unwrap();
    assert_eq!(
        list.lines().filter(|l| l.contains(" flags=O ")).count(),
        1,
        "keyway's CLIENT LIST flags its monitor as Redis does: {list}"
    );
    drop(m);
    for (i, r) in c.redis.iter().enumerate() {
        wait_for(
            &format!("group {i}'s MONITOR connection closed"),
            WAIT,
            || (monitors(r) == 0).then_some(()),
        );
    }
    // RESET ends the mode too, and the client goes on.
    let mut m = monitor(c.kw.addr);
    send(&mut m, &["RESET"]);
    read_until(&mut m, "+RESET\r\n");
    for r in &c.redis {
        wait_for("MONITOR connections closed by RESET", WAIT, || {
            (monitors(r) == 0).then_some(())
        });
    }
    send(&mut m, &["SET", "after", "reset"]);
    read_until(&mut m, "+OK\r\n");
}

#[test]
fn a_group_added_while_monitoring_joins_the_stream() {
    let c = cluster();
    let mut m = monitor(c.kw.addr);
    let r4 = Redis::start();
    let all = [&c.redis[0], &c.redis[1], &c.redis[2], &r4];
    let body = format!("cores = 2\n{}", groups(&all));
    let before = table_version(&c.kw);
    c.kw.reload(&body);
    wait_for("the new table", WAIT, || {
        (table_version(&c.kw) > before).then_some(())
    });
    wait_for("the new group monitored", WAIT, || {
        (monitors(&r4) == 1).then_some(())
    });
    let k4 = key_on(&body, 3, "new");
    let _: () = redis::cmd("SET")
        .arg(&k4)
        .arg("v")
        .query(&mut c.kw.conn())
        .unwrap();
    read_until(&mut m, &format!("\"SET\" \"{k4}\" \"v\""));
    for r in &c.redis {
        assert_eq!(monitors(r), 1, "still one MONITOR connection per group");
    }
}

#[test]
fn a_monitoring_client_gets_what_redis_gives_a_monitor() {
    let c = cluster();
    let oracle = Redis::start();
    let mut sbs = SideBySide::connect(oracle.addr(), c.kw.addr);
    sbs.same(&["MONITOR"]);
    sbs.same(&["GET", "a"]);
    sbs.same(&["SET", "a", "1"]);
    sbs.same(&["DBSIZE"]);
    // Redis's stream shows its monitor's own MULTI and EXEC (keyway answers
    // them itself: no line); the replies are the same.
    for cmd in [&["MULTI"][..], &["SET", "a", "1"], &["EXEC"]] {
        let (theirs, ours) = sbs.both(cmd);
        assert_eq!(
            String::from_utf8_lossy(&without_lines(&theirs)),
            String::from_utf8_lossy(&ours),
            "{cmd:?}"
        );
    }
    sbs.same(&["RESET"]);
    sbs.same(&["SET", "a", "1"]);
}

fn query<T: redis::FromRedisValue>(kw: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(kw).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn latency_and_memory_carry_every_groups_data() {
    // DEBUG SLEEP makes latency events.
    let c = cluster_with(&["--enable-debug-command", "local"]);
    let mut kw = c.kw.conn();
    for (i, r) in c.redis.iter().enumerate() {
        let mut d = r.conn();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("latency-monitor-threshold")
            .arg("1")
            .query(&mut d)
            .unwrap();
        // Group i's event: a sleep of (i + 1) * 20 ms.
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(format!("0.0{}", 2 * (i + 1)))
            .query(&mut d)
            .unwrap();
    }
    // LATEST: one "command" entry, the largest maximum of the three.
    let latest: Vec<(String, i64, i64, i64)> = query(&mut kw, &["LATENCY", "LATEST"]);
    let command: Vec<_> = latest.iter().filter(|e| e.0 == "command").collect();
    assert_eq!(command.len(), 1, "{latest:?}");
    assert!(command[0].3 >= 60, "group 3's 60 ms sleep: {latest:?}");
    let history: Vec<(i64, i64)> = query(&mut kw, &["LATENCY", "HISTORY", "command"]);
    assert_eq!(history.len(), 3, "a sample per group: {history:?}");
    assert!(history.windows(2).all(|w| w[0].0 <= w[1].0), "{history:?}");
    let doctor: String = query(&mut kw, &["LATENCY", "DOCTOR"]);
    for g in ["g1", "g2", "g3"] {
        assert!(doctor.contains(&format!("=== group {g} ===")), "{doctor}");
    }
    let graph: String = query(&mut kw, &["LATENCY", "GRAPH", "command"]);
    assert_eq!(graph.matches("=== group").count(), 3, "{graph}");
    let reset: i64 = query(&mut kw, &["LATENCY", "RESET"]);
    assert_eq!(reset, 3, "one event reset on each group");
    let none: Vec<(i64, i64)> = query(&mut kw, &["LATENCY", "HISTORY", "command"]);
    assert!(none.is_empty());

    // HISTOGRAM: the calls of every group added up.
    for g in 0..3 {
        let k = key_on(&c.body, g, "h");
        let _: () = query(&mut kw, &["SET", &k, "v"]);
    }
    let direct: i64 = c
        .redis
        .iter()
        .map(|r| {
            let h: redis::Value = redis::cmd("LATENCY")
                .arg("HISTOGRAM")
                .arg("set")
                .query(&mut r.conn())
                .unwrap();
            calls(&h)
        })
        .sum();
    let h: redis::Value = query(&mut kw, &["LATENCY", "HISTOGRAM", "set"]);
    assert_eq!(calls(&h), 3);
    assert_eq!(direct, 3);

    // MEMORY STATS: counts added up; DOCTOR per group; PURGE everywhere.
    let stats: Vec<redis::Value> = query(&mut kw, &["MEMORY", "STATS"]);
    let keys = stats
        .chunks(2)
        .find_map(|kv| match kv {
            [redis::Value::BulkString(k), redis::Value::Int(n)] if k == b"keys.count" => Some(*n),
            _ => None,
        })
        .expect("keys.count");
    assert_eq!(keys, 3, "a key on each group");
    let doctor: String = query(&mut kw, &["MEMORY", "DOCTOR"]);
    assert_eq!(doctor.matches("=== group").count(), 3, "{doctor}");
    let purge: String = query(&mut kw, &["MEMORY", "PURGE"]);
    assert_eq!(purge, "OK");

    // Served as one Redis serves them.
    let oracle = Redis::start();
    let mut sbs = SideBySide::connect(oracle.addr(), c.kw.addr);
    let k = key_on(&c.body, 1, "usage");
    sbs.same(&["RPUSH", &k, "a", "bb", "ccc"]);
    sbs.same(&["MEMORY", "USAGE", &k]);
    sbs.same(&["MEMORY", "USAGE", &k, "SAMPLES", "0"]);
    sbs.same(&["MEMORY", "USAGE", "missing"]);
    sbs.same(&["LATENCY", "HELP"]);
    sbs.same(&["MEMORY", "HELP"]);
    sbs.same(&["LATENCY", "HISTORY", "nothing"]);
    sbs.same(&["LATENCY", "HISTOGRAM", "nosuchcommand"]);
}

#[test]
fn resp3_clients_get_resp3_shapes() {
    let c = cluster();
    let oracle = Redis::start();
    let mut sbs = SideBySide::connect(oracle.addr(), c.kw.addr);
    let (_, hello) = sbs.both(&["HELLO", "3"]);
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    let k = key_on(&c.body, 2, "r3");
    sbs.same(&["SET", &k, "v"]);
    sbs.same(&["MEMORY", "USAGE", &k]);
    sbs.same(&["MEMORY", "USAGE", "missing"]);
    sbs.same(&["LATENCY", "HISTOGRAM", "nosuchcommand"]);
    let (theirs, ours) = sbs.both(&["LATENCY", "DOCTOR"]);
    assert!(
        theirs.starts_with(b"=") && ours.starts_with(b"="),
        "verbatim text"
    );
    let (theirs, ours) = sbs.both(&["MEMORY", "STATS"]);
    assert!(theirs.starts_with(b"%") && ours.starts_with(b"%"), "a map");
    let (_, ours) = sbs.both(&["LATENCY", "HISTOGRAM", "set"]);
    assert!(ours.starts_with(b"%1\r\n$3\r\nset\r\n%2\r\n"), "{ours:?}");
    // MONITOR lines are simple strings in RESP3 too.
    let mut m = TcpStream::connect(c.kw.addr).unwrap();
    send(&mut m, &["HELLO", "3"]);
    read_until(&mut m, "proto");
    send(&mut m, &["MONITOR"]);
    read_until(&mut m, "+OK\r\n");
    let _: () = redis::cmd("SET")
        .arg(&k)
        .arg("w")
        .query(&mut c.kw.conn())
        .unwrap();
    let seen = read_until(&mut m, &format!("\"SET\" \"{k}\" \"w\""));
    assert!(seen.contains("+"), "{seen:?}");
}

/// `calls` of the first command of a `LATENCY HISTOGRAM` reply (RESP2).
fn calls(v: &redis::Value) -> i64 {
    let redis::Value::Array(top) = v else {
        panic!("{v:?}")
    };
    let Some(redis::Value::Array(h)) = top.get(1) else {
        panic!("{v:?}")
    };
    match h.get(1) {
        Some(redis::Value::Int(n)) => *n,
        _ => panic!("{v:?}"),
    }
}

/// `bytes` without monitor lines (`+<time> [<db> <addr>] …`).
fn without_lines(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    text.split_inclusive("\r\n")
        .filter(|l| {
            !(l.starts_with('+')
                && l[1..].split(' ').next().is_some_and(|t| {
                    t.contains('.') && t.chars().all(|c| c.is_ascii_digit() || c == '.')
                }))
        })
        .collect::<String>()
        .into_bytes()
}
