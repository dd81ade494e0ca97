//! Routing through keyway to three real Redis groups: placement, multi-key
//! splitting, ordering across groups, local commands. Where a single Redis
//! would answer the same, the expected reply is a real redis-server's, byte
//! for byte ([`SideBySide`]); where a key should land comes from Redis's own
//! `CLUSTER KEYSLOT`, not from keyway's config.

mod common;

use common::{groups, owners_by_redis, Keyway, Redis, SideBySide};
use redis::{Commands, Value};

struct Cluster {
    redis: Vec<Redis>,
    kw: Keyway,
}

fn cluster(cores: usize) -> Cluster {
    cluster_with(cores, "")
}

fn cluster_with(cores: usize, extra: &str) -> Cluster {
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let body = format!(
        "cores = {cores}\n{extra}\n{}",
        groups(&redis.iter().collect::<Vec<_>>())
    );
    let kw = Keyway::start(&body);
    Cluster { redis, kw }
}

impl Cluster {
    /// A fresh redis-server, the reference keyway is compared with, and a
    /// connection to each.
    fn side_by_side(&self) -> (Redis, SideBySide) {
        let reference = Redis::start();
        let both = SideBySide::connect(reference.addr(), self.kw.addr);
        (reference, both)
    }
}

#[test]
fn every_key_lands_on_the_group_owning_its_slot() {
    let c = cluster(2);
    let oracle = Redis::cluster_node();
    let mut con = c.kw.conn();
    let keys: Vec<String> = (0..600)
        .map(|i| format!("key:{i}"))
        .chain((0..20).map(|i| format!("{{tag}}:{i}")))
        .collect();
    let owners = owners_by_redis(&oracle, &keys, 3);
    for k in &keys {
        let _: () = con.set(k, format!("v-{k}")).unwrap();
    }
    let mut direct: Vec<redis::Connection> = c.redis.iter().map(Redis::conn).collect();
    let mut per_group = [0usize; 3];
    for (k, &o) in keys.iter().zip(&owners) {
        per_group[o] += 1;
        for (g, d) in direct.iter_mut().enumerate() {
            let v: Option<String> = d.get(k).unwrap();
            if g == o {
                assert_eq!(
                    v.as_deref(),
                    Some(format!("v-{k}").as_str()),
                    "{k} missing on its owner g{}",
                    g + 1
                );
            } else {
                assert_eq!(v, None, "{k} found on g{} but belongs to g{}", g + 1, o + 1);
            }
        }
        let back: String = con.get(k).unwrap();
        assert_eq!(back, format!("v-{k}"));
    }
    assert!(
        per_group.iter().all(|&n| n > 100),
        "keys spread over all groups: {per_group:?}"
    );
    // Hash-tagged keys share an owner.
    assert!(
        owners[600..].iter().all(|&o| o == owners[600]),
        "{:?}",
        &owners[600..]
    );
}

#[test]
fn multi_key_commands_split_and_merge_across_groups() {
    let c = cluster(1);
    let oracle = Redis::cluster_node();
    let (_reference, mut both) = c.side_by_side();
    let keys: Vec<String> = (0..50).map(|i| format!("mk:{i}")).collect();
    let owners = owners_by_redis(&oracle, &keys, 3);
    assert_eq!(
        owners
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3,
        "the keys span all groups"
    );
    let cmd = |name: &str, args: &[String]| -> Vec<String> {
        std::iter::once(name.to_string())
            .chain(args.iter().cloned())
            .collect()
    };

    let pairs: Vec<String> = keys
        .iter()
        .flat_map(|k| [k.clone(), format!("val-{k}")])
        .collect();
    both.same(&cmd("MSET", &pairs));
    let mut query: Vec<String> = keys.clone();
    query.insert(7, "mk:missing".into());
    query.push(keys[3].clone());
    both.same(&cmd("MGET", &query));
    // EXISTS counts every occurrence.
    let mut exists = keys[..10].to_vec();
    exists.extend(["mk:missing".to_string(), keys[0].clone()]);
    both.same(&cmd("EXISTS", &exists));
    both.same(&cmd("TOUCH", &keys[..10]));
    let mut del = keys[..20].to_vec();
    del.push("mk:missing".into());
    both.same(&cmd("DEL", &del));
    both.same(&cmd("UNLINK", &keys[15..30]));
    both.same(&["DBSIZE"]);
    let total: i64 = c
        .redis
        .iter()
        .map(|r| redis::cmd("DBSIZE").query::<i64>(&mut r.conn()).unwrap())
        .sum();
    assert_eq!(total, 20, "the groups together hold what is left");

    // Commands whose keys share a group pass whole.
    both.same_all(&[
        &["SET", "{u1}a", "1"],
        &["RENAME", "{u1}a", "{u1}b"],
        &["GET", "{u1}b"],
        &["MSETNX", "{t}1", "1", "{t}2", "2"],
    ]);
    // MSET with an odd argument count is refused before anything is sent.
    let (a, b) = cross_group_pair(&oracle);
    both.same(&["MSET", a.as_str(), "1", b.as_str()]);

    // Keys in different groups get CROSSSLOT: keyway refuses what a single
    // Redis would do, so these replies are keyway's own.
    let mut con = c.kw.conn();
    let _: () = con.set(&a, "x").unwrap();
    let err = redis::cmd("RENAME")
        .arg(&a)
        .arg(&b)
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    let err = redis::cmd("MSETNX")
        .arg(&a)
        .arg("1")
        .arg(&b)
        .arg("2")
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"));
}

/// Two keys owned by different groups (of three), as Redis hashes them.
fn cross_group_pair(oracle: &Redis) -> (String, String) {
    let keys: Vec<String> = (0..64).map(|i| format!("pair:{i}")).collect();
    let owners = owners_by_redis(oracle, &keys, 3);
    let b = (1..keys.len())
        .find(|&i| owners[i] != owners[0])
        .expect("64 keys do not all hash to one group");
    (keys[0].clone(), keys[b].clone())
}

#[test]
fn a_long_pipeline_across_groups_keeps_its_order() {
    // Three pipelined connections per backend: each client sticks to one, so
    // its requests to a group also execute in order.
    let c = cluster_with(2, "[backend]\nconnections = 3");
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let addr = c.kw.addr;
            std::thread::spawn(move || {
                let mut con = redis::Client::open(format!("redis://{addr}"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                check_pipeline(&mut con, &format!("p{t}"));
            })
        })
        .collect();
    for t in clients {
        t.join().expect("pipeline order held");
    }
}

fn check_pipeline(con: &mut redis::Connection, prefix: &str) {
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        let k = format!("{prefix}:{i}");
        match i % 5 {
            0 => pipe.set(&k, i).ignore(),
            1 => pipe.incr(format!("{prefix}:{}", i - 1), 1),
            2 => pipe.get(format!("{prefix}:{}", i - 2)),
            3 => pipe.cmd("PING"),
            _ => pipe.mget(&[
                format!("{prefix}:{}", i - 4),
                format!("{prefix}:nope"),
                format!("{prefix}:{}", i - 3),
            ]),
        };
    }
    let replies: Vec<Value> = pipe.query(con).unwrap();
    assert_eq!(replies.len(), 1600);
    let mut it = replies.into_iter();
    for i in (0..2000).step_by(5) {
        let incr: i64 = redis::from_redis_value(&it.next().unwrap()).unwrap();
        assert_eq!(incr, i + 1);
        let get: i64 = redis::from_redis_value(&it.next().unwrap()).unwrap();
        assert_eq!(get, i + 1);
        let pong: String = redis::from_redis_value(&it.next().unwrap()).unwrap();
        assert_eq!(pong, "PONG");
        let m: Vec<Option<i64>> = redis::from_redis_value(&it.next().unwrap()).unwrap();
        assert_eq!(m, vec![Some(i + 1), None, None]);
    }
}

#[test]
fn local_commands_answer_like_redis() {
    let c = cluster(1);
    let (reference, mut both) = c.side_by_side();
    both.same_all(&[
        &["PING"],
        &["PING", "hi"],
        &["ECHO", "héllo"],
        &["SELECT", "0"],
        &["SELECT", "zero"],
        &["COMMAND", "INFO", "get", "nosuch", "object|encoding"],
        &["COMMAND", "DOCS", "set"],
        &["ROLE"],
        &["OBJECT", "HELP"],
        &["XINFO", "HELP"],
        &["XGROUP", "HELP"],
        &["PFSELFTEST"],
        &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", "tester"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", "bad name"],
        &["HELLO", "two"],
        &["HELLO", "4"],
        &["HELLO", "2", "NOSUCHOPT"],
        &["AUTH", "secret"],
        &["AUTH", "default", "anything"],
        &["AUTH", "someone", "secret"],
    ]);
    // HELLO's reply holds the connection's id, which differs by server.
    let (theirs, ours) = both.both(&["HELLO", "2", "SETNAME", "hello-name"]);
    keyway_testkit::compare::assert_replies_equal(
        "HELLO 2 SETNAME hello-name (its id masked)",
        &keyway_testkit::resp::mask_field(&theirs, "id"),
        &keyway_testkit::resp::mask_field(&ours, "id"),
    );
    both.same_all(&[&["CLIENT", "GETNAME"], &["RESET"], &["CLIENT", "GETNAME"]]);
    // Errors: unknown commands and subcommands, arity, syntax, wrong type
    // (the last two answered by the backend, passed through).
    both.same_all(&[
        &["NOSUCH", "x"],
        &["OBJECT", "NOPE"],
        &["OBJECT"],
        &["CLIENT", "NOSUCH"],
        &["COMMAND", "NOSUCH"],
        &["COMMAND", "GETKEYS", "GET"],
        &["COMMAND", "GETKEYS", "NOSUCH", "a"],
        &["GET"],
        &["ECHO"],
        &["ECHO", "a", "b"],
        &["SELECT", "0", "1"],
        &["CLIENT", "SETNAME"],
        &["HELLO", "2", "AUTH", "someone", "secret"],
        &["AUTH", "a", "b", "c"],
        &["MGET"],
        &["MSET", "a"],
        &["DEL"],
        &["EXISTS"],
        &["DBSIZE", "x"],
        &["SET", "k", "v", "NX", "XX"],
        &["SET", "k", "v"],
        &["LPUSH", "k", "x"],
        &["INCR", "k"],
    ]);

    // Where keyway deliberately answers unlike a single Redis, the replies
    // are keyway's own, written here.
    let mut con = c.kw.conn();
    // COMMAND lists what keyway serves: what it refuses is absent, as an
    // unknown command is.
    let all: Vec<redis::Value> = redis::cmd("COMMAND").query(&mut con).unwrap();
    let count: usize = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
    assert_eq!(all.len(), count);
    let theirs: usize = redis::cmd("COMMAND")
        .arg("COUNT")
        .query(&mut reference.conn())
        .unwrap();
    assert!(count < theirs, "keyway lists {count} of Redis's {theirs}");
    let info: Vec<Option<redis::Value>> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("migrate")
        .arg("get")
        .query(&mut con)
        .unwrap();
    assert!(info[0].is_none() && info[1].is_some(), "{info:?}");
    let list: Vec<String> = redis::cmd("COMMAND").arg("LIST").query(&mut con).unwrap();
    assert!(list.iter().any(|n| n == "get") && !list.iter().any(|n| n == "migrate"));
    // Only database 0 exists behind a proxy of many servers (Redis would
    // switch to 3; -1 gets Redis's own range error, compared above).
    let err = redis::cmd("SELECT")
        .arg(3)
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string().contains("keyway serves database 0 only"),
        "{err}"
    );
    // Ids are keyway's own.
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    assert!(id > 0);
    // RESP2 and RESP3 only (RESP3: tests/resp3.rs).
    let err = redis::cmd("HELLO")
        .arg(4)
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPROTO"));
    // INFO adds keyway's section.
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    assert!(
        info.contains("redis_version:7.0") && info.contains("table_version:1"),
        "{info}"
    );
    // Refusals name the command and never reach a backend.
    for (cmd, needle) in [
        (vec!["SCRIPT", "DEBUG", "YES"], "'SCRIPT DEBUG'"),
        (vec!["SWAPDB", "0", "1"], "'SWAPDB'"),
        (vec!["CONFIG", "GET", "maxmemory"], "'CONFIG GET'"),
        (vec!["CLUSTER", "INFO"], "not a Redis Cluster node"),
        (vec!["MOVE", "after", "1"], "'MOVE'"),
    ] {
        let err = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query::<Value>(&mut con)
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{cmd:?}: {err}");
    }
    // The connection still works after every refusal, and scripts with keys
    // in one group pass through.
    both.same_all(&[
        &["SET", "after", "ok"],
        &["GET", "after"],
        &["EVAL", "return redis.call('GET', KEYS[1])", "1", "after"],
    ]);
}

#[test]
fn inline_requests_and_quit() {
    let c = cluster(1);
    let (_reference, mut both) = c.side_by_side();
    both.raw_same(b"PING\r\n", 1);
    both.raw_same(b"SET \"inline key\" 'v 1'\r\nGET \"inline key\"\r\n", 2);
    let mut con = c.kw.conn();
    let v: String = con.get("inline key").unwrap();
    assert_eq!(v, "v 1");
    // Nothing after QUIT is answered; then EOF.
    both.raw_same(b"QUIT\r\nPING\r\n", 1);
    both.same_close();
}

/// Edge cases of the connection commands keyway answers itself, where it
/// once answered unlike Redis (`PING a b` echoed `a`; `SELECT -1` got
/// keyway's one-database refusal instead of Redis's range error).
#[test]
fn ping_and_select_edge_cases_match_redis() {
    let c = cluster(1);
    let (_reference, mut both) = c.side_by_side();
    both.same(&["PING", "a", "b"]);
    both.same(&["ping", "a", "b", "c"]);
    both.same(&["PING", "a"]);
    both.same(&["SELECT", "-1"]);
    both.same(&["SELECT", "abc"]);
    both.same(&["SELECT", "99999999999999999999"]);
    both.same(&["SELECT", "0"]);
}

/// `redis-cli` in interactive mode (a terminal: `script` gives it a pty;
/// `TERM=dumb` keeps linenoise from querying the cursor) starts by asking
/// `COMMAND DOCS` for its hints, then shows replies by their types: a
/// session through keyway prints what the same session prints on Redis.
#[test]
fn redis_cli_interactive_mode_works_unchanged() {
    let c = cluster(2);
    let reference = Redis::start();
    let session = "SET a 1\nGET a\nHSET h f v\nHGETALL h\nMGET a nosuch h\nDEL a h\nquit\n";
    let run = |addr: std::net::SocketAddr| {
        let cmd = format!("redis-cli -h {} -p {}", addr.ip(), addr.port());
        let mut child = std::process::Command::new("timeout")
            .args(["20", "script", "-qec", &cmd, "/dev/null"])
            .env("TERM", "dumb")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(session.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).replace(&format!(":{}>", addr.port()), ":PORT>")
    };
    let ours = run(c.kw.addr);
    let theirs = run(reference.addr().parse().unwrap());
    assert!(
        ours.contains("1) \"f\"") && ours.contains("3) (nil)"),
        "{ours}"
    );
    assert_eq!(ours, theirs);
}
