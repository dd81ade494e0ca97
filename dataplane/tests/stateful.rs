//! Transactions and blocking commands through keyway to three real Redis
//! groups. Replies a single Redis would give are compared byte for byte with
//! a real redis-server ([`SideBySide`]); WATCH, BLPOP and a client leaving
//! while blocked are checked against the servers themselves.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{groups, key_on, wait_for, Keyway, Redis, SideBySide};
use keyway_testkit::resp::request;
use redis::Commands;

struct Cluster {
    redis: Vec<Redis>,
    kw: Keyway,
    body: String,
}

fn cluster(extra: &str) -> Cluster {
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let body = format!(
        "cores = 1\n{extra}\n{}",
        groups(&redis.iter().collect::<Vec<_>>())
    );
    let kw = Keyway::start(&body);
    Cluster { redis, kw, body }
}

/// Sends `bytes` and reads until `want` (a suffix) arrives or 5 s pass.
fn exchange_until(s: &mut TcpStream, bytes: &[u8], want: &[u8]) -> Vec<u8> {
    s.write_all(bytes).unwrap();
    read_until(s, want)
}

fn read_until(s: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(want) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Reads until `n` bytes arrived (or 5 s without any).
fn read_len(s: &mut TcpStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < n {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    got
}

/// Nothing arrives on `s` for a moment.
fn silent(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    !matches!(s.read(&mut buf), Ok(n) if n > 0)
}

fn info_field(r: &Redis, section: &str, field: &str) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut r.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in INFO {section}"))
}

#[test]
fn transactions_answer_as_redis_does() {
    let c = cluster("");
    let reference = Redis::start();
    let mut both = SideBySide::connect(reference.addr(), c.kw.addr);
    both.same_all(&[
        &["EXEC"],
        &["DISCARD"],
        &["MULTI"],
        &["MULTI"],
        &["WATCH", "{t}a"],
        &["SET", "{t}a", "1"],
        &["INCR", "{t}a"],
        &["GET", "{t}a"],
        &["PING"],
        &["ECHO", "hi"],
        &["EXEC"],
        // Errors while queueing abort the transaction.
        &["MULTI"],
        &["SET", "{t}a", "2"],
        &["NOSUCHCOMMAND", "x"],
        &["GET"],
        &["EXEC"],
        &["GET", "{t}a"],
        // EXEC's own arity error discards at once.
        &["MULTI"],
        &["SET", "{t}a", "3"],
        &["EXEC", "x"],
        &["EXEC"],
        // A command Redis refuses inside MULTI.
        &["MULTI"],
        &["SAVE"],
        &["EXEC"],
        // Empty transactions, DISCARD, RESET.
        &["MULTI"],
        &["EXEC"],
        &["MULTI"],
        &["DISCARD"],
        &["MULTI"],
        &["SET", "{t}a", "4"],
        &["RESET"],
        &["EXEC"],
        &["GET", "{t}a"],
        // A runtime error inside EXEC is in its array, as in Redis.
        &["MULTI"],
        &["SET", "{t}s", "x"],
        &["INCR", "{t}s"],
        &["LPUSH", "{t}s", "y"],
        &["EXEC"],
        // Blocking commands inside MULTI do not block.
        &["MULTI"],
        &["BLPOP", "{t}empty", "0"],
        &["EXEC"],
        // WATCH with nothing changed, UNWATCH.
        &["WATCH", "{t}a", "{t}b"],
        &["MULTI"],
        &["INCR", "{t}a"],
        &["EXEC"],
        &["UNWATCH"],
        &["WATCH", "{t}a"],
        &["UNWATCH"],
        &["MULTI"],
        &["INCR", "{t}a"],
        &["EXEC"],
    ]);
    // A pipelined transaction (what client libraries send), with a read after.
    let pipelined: Vec<u8> = [
        request(&["MULTI"]),
        request(&["SET", "{p}x", "1"]),
        request(&["INCR", "{p}x"]),
        request(&["EXEC"]),
        request(&["GET", "{p}x"]),
    ]
    .concat();
    both.raw_same(&pipelined, 5);
    both.same(&["QUIT"]);
}

#[test]
fn a_transaction_across_groups_is_refused_as_redis_cluster_does() {
    let c = cluster("");
    let (a, b) = (key_on(&c.body, 0, "x"), key_on(&c.body, 1, "x"));
    let mut s = TcpStream::connect(c.kw.addr).unwrap();
    let bytes: Vec<u8> = [
        request(&["MULTI"]),
        request(&["SET", &a, "1"]),
        request(&["SET", &b, "1"]),
        request(&["EXEC"]),
        request(&["EXISTS", &a]),
    ]
    .concat();
    let got = exchange_until(&mut s, &bytes, b":0\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n+QUEUED\r\n-CROSSSLOT Keys in request don't hash to the same group\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n:0\r\n",
        "the offending command gets CROSSSLOT, EXEC aborts, nothing was written"
    );
    let watched: Vec<u8> = [request(&["WATCH", &a]), request(&["WATCH", &b])].concat();
    let got = exchange_until(&mut s, &watched, b"group\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n-CROSSSLOT Keys in request don't hash to the same group\r\n",
        "the watch and the transaction must be in one group"
    );
}

#[test]
fn watch_aborts_exec_after_a_concurrent_write() {
    let c = cluster("");
    let k = key_on(&c.body, 2, "w");
    let mut mine = c.kw.conn();
    let mut other = c.kw.conn();
    let _: () = mine.set(&k, 1).unwrap();
    for round in 0..3 {
        let _: () = redis::cmd("WATCH").arg(&k).query(&mut mine).unwrap();
        let v: i64 = mine.get(&k).unwrap();
        // Another client writes the watched key between WATCH and EXEC:
        // through keyway, then directly on the group's server.
        if round == 0 {
            let _: () = other.set(&k, 100).unwrap();
        } else if round == 1 {
            let _: () = c.redis[2].conn().set(&k, 200).unwrap();
        }
        let r: Option<(String,)> = redis::pipe()
            .atomic()
            .set(&k, v + 1)
            .query(&mut mine)
            .unwrap();
        if round < 2 {
            assert_eq!(
                r, None,
                "round {round}: EXEC must return nil after the write"
            );
        } else {
            assert_eq!(r, Some(("OK".to_string(),)), "no write: EXEC runs");
        }
    }
    let v: i64 = mine.get(&k).unwrap();
    assert_eq!(v, 201);
}

#[test]
fn check_and_set_loops_from_many_clients_count_exactly() {
    let c = cluster("");
    let k = key_on(&c.body, 1, "cas");
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let addr = c.kw.addr;
            let k = k.clone();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(format!("redis://{addr}/"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let mut won = 0;
                for _ in 0..60 {
                    let _: () = redis::cmd("WATCH").arg(&k).query(&mut con).unwrap();
                    let v: Option<i64> = con.get(&k).unwrap();
                    let r: Option<(String,)> = redis::pipe()
                        .atomic()
                        .set(&k, v.unwrap_or(0) + 1)
                        .query(&mut con)
                        .unwrap();
                    if r.is_some() {
                        won += 1;
                    }
                }
                won
            })
        })
        .collect();
    let won: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let v: i64 = c.redis[1].conn().get(&k).unwrap();
    assert_eq!(
        v, won,
        "every EXEC that ran incremented once; the others saw nil"
    );
    assert!(won > 0);
}

#[test]
fn blpop_is_woken_by_another_client_and_times_out_as_redis() {
    let c = cluster("");
    let q = key_on(&c.body, 0, "q");
    let mut blocked = TcpStream::connect(c.kw.addr).unwrap();
    blocked
        .write_all(&[request(&["BLPOP", &q, "0"]), request(&["PING"])].concat())
        .unwrap();
    assert!(
        silent(&mut blocked),
        "BLPOP blocks, and the PING behind it waits"
    );
    // Other clients of the same core and group are not blocked.
    let mut other = c.kw.conn();
    for i in 0..50 {
        let _: () = other.set(format!("{q}-{i}"), i).unwrap();
    }
    let _: () = other.rpush(&q, "job").unwrap();
    let got = read_until(&mut blocked, b"+PONG\r\n");
    let expected = format!("*2\r\n${}\r\n{q}\r\n$3\r\njob\r\n+PONG\r\n", q.len());
    assert_eq!(String::from_utf8_lossy(&got), expected);
    // A timeout answers as Redis does, for each blocking command.
    let reference = Redis::start();
    let mut both = SideBySide::connect(reference.addr(), c.kw.addr);
    both.same_all(&[
        &["BLPOP", "{z}q", "0.1"],
        &["BRPOP", "{z}q", "{z}r", "0.1"],
        &["BLMOVE", "{z}q", "{z}r", "LEFT", "RIGHT", "0.1"],
        &["BRPOPLPUSH", "{z}q", "{z}r", "0.1"],
        &["BLMPOP", "0.1", "2", "{z}q", "{z}r", "LEFT"],
        &["BZPOPMIN", "{z}z", "0.1"],
        &["BZPOPMAX", "{z}z", "0.1"],
        &["BZMPOP", "0.1", "1", "{z}z", "MIN"],
        &["XREAD", "BLOCK", "100", "STREAMS", "{z}s", "$"],
        &["BLPOP", "{z}q", "notanumber"],
        &["BLPOP", "{z}q", "-1"],
        &["RPUSH", "{z}q", "a", "b", "c"],
        &["BLMPOP", "1", "1", "{z}q", "RIGHT", "COUNT", "2"],
        &["BLPOP", "{z}q", "1"],
        &["ZADD", "{z}z", "1", "m", "2", "n"],
        &["BZPOPMIN", "{z}z", "1"],
        &["BZMPOP", "1", "1", "{z}z", "MAX", "COUNT", "5"],
        &["XADD", "{z}s", "1-1", "f", "v"],
        &["XREAD", "BLOCK", "100", "STREAMS", "{z}s", "0"],
        &["XGROUP", "CREATE", "{z}s", "grp", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "grp",
            "c1",
            "BLOCK",
            "100",
            "STREAMS",
            "{z}s",
            ">",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "grp",
            "c1",
            "BLOCK",
            "100",
            "STREAMS",
            "{z}s",
            ">",
        ],
    ]);
}

#[test]
fn a_blocked_client_that_leaves_frees_its_connection_and_loses_nothing() {
    let c = cluster("[backend]\ndedicated_connections = 2\n");
    let server = &c.redis[1];
    let queues: Vec<String> = (0..5)
        .map(|i| key_on(&c.body, 1, &format!("leave{i}")))
        .collect();
    for (round, q) in queues.iter().enumerate() {
        let mut blocked = TcpStream::connect(c.kw.addr).unwrap();
        blocked.write_all(&request(&["BLPOP", q, "0"])).unwrap();
        wait_for(
            &format!("round {round}: the BLPOP to block at Redis"),
            Duration::from_secs(5),
            || (info_field(server, "clients", "blocked_clients") == 1).then_some(()),
        );
        drop(blocked);
        wait_for(
            "keyway to unblock it at Redis",
            Duration::from_secs(5),
            || (info_field(server, "clients", "blocked_clients") == 0).then_some(()),
        );
        // The element pushed now is not taken by the departed client.
        let _: () = server.conn().rpush(q, format!("e{round}")).unwrap();
    }
    for (round, q) in queues.iter().enumerate() {
        let left: Vec<String> = server.conn().lrange(q, 0, -1).unwrap();
        assert_eq!(left, [format!("e{round}")], "nothing vanished from {q}");
    }
    // Five clients came and went with a cap of two: their connections
    // came back, and serve the next blocking command.
    let mut con = c.kw.conn();
    let got: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(&queues[0])
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert_eq!(got, Some((queues[0].clone(), "e0".to_string())));
}

#[test]
fn dedicated_connections_beyond_the_cap_get_a_clear_error() {
    let c = cluster("[backend]\ndedicated_connections = 1\n");
    let q = key_on(&c.body, 0, "cap");
    let mut blocked = TcpStream::connect(c.kw.addr).unwrap();
    blocked.write_all(&request(&["BLPOP", &q, "0"])).unwrap();
    wait_for("the BLPOP to block", Duration::from_secs(5), || {
        (info_field(&c.redis[0], "clients", "blocked_clients") == 1).then_some(())
    });
    let mut s = TcpStream::connect(c.kw.addr).unwrap();
    let got = exchange_until(&mut s, &request(&["WATCH", &q]), b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR every dedicated backend connection of this keyway core is in use \
         (backend.dedicated_connections = 1); WATCH and blocking commands need one\r\n"
    );
    let got = exchange_until(&mut s, &request(&["RPUSH", &q, "x"]), b"\r\n");
    assert_eq!(got, b":1\r\n", "plain commands are not affected");
    let got = read_until(&mut blocked, b"x\r\n");
    assert!(got.ends_with(b"$1\r\nx\r\n"));
}

#[test]
fn random_interleavings_of_transactions_and_commands_keep_each_clients_order() {
    // Each client owns its keys, so every reply it must get is known: a
    // model run alongside. Clients pipeline random mixes of plain commands,
    // transactions (some aborted by an error, some discarded) and watches.
    let c = cluster("");
    let threads: Vec<_> = (0..8u64)
        .map(|seed| {
            let addr = c.kw.addr;
            std::thread::spawn(move || {
                let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = move |n: u64| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng % n
                };
                let mut s = TcpStream::connect(addr).unwrap();
                let mut counters = [0i64; 3];
                for t in 0..3 {
                    let key = format!("{{c{seed}t{t}}}n");
                    s.write_all(&request(&["SET", &key, "0"])).unwrap();
                    assert_eq!(read_len(&mut s, 5), b"+OK\r\n");
                }
                for _batch in 0..40 {
                    let mut bytes = Vec::new();
                    let mut want = String::new();
                    for _ in 0..1 + next(6) {
                        // Keys of this client, in one of three groups' worth
                        // of hash tags.
                        let t = next(3) as usize;
                        let key = format!("{{c{seed}t{t}}}n");
                        match next(5) {
                            0 | 1 => {
                                counters[t] += 1;
                                bytes.extend(request(&["INCR", &key]));
                                want.push_str(&format!(":{}\r\n", counters[t]));
                            }
                            2 => {
                                counters[t] += 2;
                                for r in [
                                    request(&["MULTI"]),
                                    request(&["INCR", &key]),
                                    request(&["INCRBY", &key, "1"]),
                                    request(&["EXEC"]),
                                ] {
                                    bytes.extend(r);
                                }
                                want.push_str(&format!(
                                    "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:{}\r\n:{}\r\n",
                                    counters[t] - 1,
                                    counters[t]
                                ));
                            }
                            3 => {
                                for r in [
                                    request(&["MULTI"]),
                                    request(&["INCR", &key]),
                                    request(&["GET"]),
                                    request(&["EXEC"]),
                                ] {
                                    bytes.extend(r);
                                }
                                want.push_str(
                                    "+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n\
                                     -EXECABORT Transaction discarded because of previous errors.\r\n",
                                );
                            }
                            _ => {
                                counters[t] += 1;
                                for r in [
                                    request(&["WATCH", &key]),
                                    request(&["GET", &key]),
                                    request(&["MULTI"]),
                                    request(&["INCR", &key]),
                                    request(&["EXEC"]),
                                ] {
                                    bytes.extend(r);
                                }
                                let v = (counters[t] - 1).to_string();
                                want.push_str(&format!(
                                    "+OK\r\n${}\r\n{v}\r\n+OK\r\n+QUEUED\r\n*1\r\n:{}\r\n",
                                    v.len(),
                                    counters[t]
                                ));
                            }
                        }
                    }
                    s.write_all(&bytes).unwrap();
                    let got = read_len(&mut s, want.len());
                    assert_eq!(String::from_utf8_lossy(&got), want, "client {seed}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn wait_counts_the_replicas_of_the_groups_written_to() {
    let c = cluster("");
    // Nothing written: answered at once, as Redis answers a connection that
    // wrote nothing (no replicas yet, as on the reference).
    let reference = Redis::start();
    let mut both = SideBySide::connect(reference.addr(), c.kw.addr);
    both.same_all(&[
        &["WAIT", "0", "0"],
        &["WAIT", "x", "0"],
        &["WAIT", "0", "-1"],
        &["MULTI"],
        &["WAIT", "0", "0"],
        &["EXEC"],
    ]);
    let replica = Redis::replica_of(&c.redis[0]);
    c.redis[0].wait_replica_synced(&replica);
    let (a, b) = (key_on(&c.body, 0, "w"), key_on(&c.body, 1, "w"));
    let mut con = c.kw.conn();
    let _: () = con.set(&a, "1").unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut con).unwrap();
    assert_eq!(n, 1, "group 0's replica acknowledged the write");
    let v: Option<String> = replica.conn().get(&a).unwrap();
    assert_eq!(
        v.as_deref(),
        Some("1"),
        "WAIT returned after the replica had it"
    );
    // Written to a group without replicas as well: the least of the two.
    let _: () = con.set(&a, "2").unwrap();
    let _: () = con.set(&b, "2").unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(200).query(&mut con).unwrap();
    assert_eq!(n, 0, "group 1 has no replica: the timeout answers 0");
}

#[test]
fn script_kill_and_function_kill_reach_the_group_running_the_script() {
    // Redis serves other connections during a script after
    // busy-reply-threshold; 100 ms instead of 5 s.
    let redis: Vec<Redis> = (0..3)
        .map(|_| Redis::start_with(&["--busy-reply-threshold", "100"]))
        .collect();
    let body = format!("cores = 1\n{}", groups(&redis.iter().collect::<Vec<_>>()));
    let kw = Keyway::start(&body);
    let reference = Redis::start_with(&["--busy-reply-threshold", "100"]);
    let mut both = SideBySide::connect(reference.addr(), kw.addr);
    both.same_all(&[&["SCRIPT", "KILL"], &["FUNCTION", "KILL"]]);
    // The keyless group (slot 0's) runs a script that never ends.
    let slot0 = &redis[0];
    let busy = |r: &Redis| {
        let reply: redis::RedisResult<String> = redis::cmd("PING").query(&mut r.conn());
        matches!(reply, Err(e) if e.code() == Some("BUSY"))
    };
    let mut spinning = TcpStream::connect(kw.addr).unwrap();
    spinning
        .write_all(&request(&["EVAL", "while true do end", "0"]))
        .unwrap();
    wait_for("the script to run", Duration::from_secs(10), || {
        busy(slot0).then_some(())
    });
    let mut killer = TcpStream::connect(kw.addr).unwrap();
    let got = exchange_until(&mut killer, &request(&["SCRIPT", "KILL"]), b"\r\n");
    assert_eq!(got, b"+OK\r\n", "the group running it killed it");
    let ended = read_until(&mut spinning, b"\r\n");
    assert!(
        ended.starts_with(b"-ERR") && String::from_utf8_lossy(&ended).contains("killed"),
        "{}",
        String::from_utf8_lossy(&ended)
    );
    let got = exchange_until(&mut killer, &request(&["SCRIPT", "KILL"]), b"\r\n");
    assert_eq!(got, b"-NOTBUSY No scripts in execution right now.\r\n");
    // The same for a function.
    let lib = "#!lua name=spin\nredis.register_function{function_name='spin', \
               callback=function() while true do end end, flags={'no-writes'}}";
    let got = exchange_until(&mut killer, &request(&["FUNCTION", "LOAD", lib]), b"\r\n");
    assert_eq!(got, b"$4\r\nspin\r\n");
    spinning
        .write_all(&request(&["FCALL", "spin", "0"]))
        .unwrap();
    wait_for("the function to run", Duration::from_secs(10), || {
        busy(slot0).then_some(())
    });
    let got = exchange_until(&mut killer, &request(&["FUNCTION", "KILL"]), b"\r\n");
    assert_eq!(got, b"+OK\r\n");
    let ended = read_until(&mut spinning, b"\r\n");
    assert!(
        ended.starts_with(b"-ERR"),
        "{}",
        String::from_utf8_lossy(&ended)
    );
    // Everyone goes on.
    let got = exchange_until(&mut killer, &request(&["PING"]), b"\r\n");
    assert_eq!(got, b"+PONG\r\n");
}
