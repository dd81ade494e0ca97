//! Routing through keyway to three real Redis groups: placement, multi-key
//! splitting, ordering across groups, local commands.

mod common;

use common::{groups, owner, raw_roundtrip, Keyway, Redis};
use redis::{Commands, Value};

struct Cluster {
    redis: Vec<Redis>,
    body: String,
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
    Cluster { redis, body, kw }
}

#[test]
fn every_key_lands_on_the_group_owning_its_slot() {
    let c = cluster(2);
    let mut con = c.kw.conn();
    let keys: Vec<String> = (0..600)
        .map(|i| format!("key:{i}"))
        .chain((0..20).map(|i| format!("{{tag}}:{i}")))
        .collect();
    for k in &keys {
        let _: () = con.set(k, format!("v-{k}")).unwrap();
    }
    let mut direct: Vec<redis::Connection> = c.redis.iter().map(Redis::conn).collect();
    let mut per_group = [0usize; 3];
    for k in &keys {
        let o = owner(&c.body, k.as_bytes());
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
    let tag_owner = owner(&c.body, b"{tag}:0");
    assert!((0..20).all(|i| owner(&c.body, format!("{{tag}}:{i}").as_bytes()) == tag_owner));
}

#[test]
fn multi_key_commands_split_and_merge_across_groups() {
    let c = cluster(1);
    let mut con = c.kw.conn();
    let keys: Vec<String> = (0..50).map(|i| format!("mk:{i}")).collect();
    let owners: std::collections::HashSet<usize> =
        keys.iter().map(|k| owner(&c.body, k.as_bytes())).collect();
    assert_eq!(owners.len(), 3, "the keys span all groups");

    let pairs: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.clone(), format!("val-{k}")))
        .collect();
    let _: () = con.mset(&pairs).unwrap();
    let mut query: Vec<String> = keys.clone();
    query.insert(7, "mk:missing".into());
    query.push(keys[3].clone());
    let got: Vec<Option<String>> = con.mget(&query).unwrap();
    let want: Vec<Option<String>> = query
        .iter()
        .map(|k| (k != "mk:missing").then(|| format!("val-{k}")))
        .collect();
    assert_eq!(got, want);

    let n: i64 = redis::cmd("EXISTS")
        .arg(&keys[..10])
        .arg("mk:missing")
        .arg(&keys[0])
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 11, "EXISTS counts every occurrence");
    let n: i64 = redis::cmd("TOUCH")
        .arg(&keys[..10])
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 10);
    let n: i64 = redis::cmd("DEL")
        .arg(&keys[..20])
        .arg("mk:missing")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 20);
    let n: i64 = redis::cmd("UNLINK")
        .arg(&keys[15..30])
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 10);
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 20);
    let total: i64 = c
        .redis
        .iter()
        .map(|r| redis::cmd("DBSIZE").query::<i64>(&mut r.conn()).unwrap())
        .sum();
    assert_eq!(total, 20);

    // Commands whose keys share a group pass whole; others get CROSSSLOT.
    let _: () = con.set("{u1}a", "1").unwrap();
    let _: () = redis::cmd("RENAME")
        .arg("{u1}a")
        .arg("{u1}b")
        .query(&mut con)
        .unwrap();
    let v: String = con.get("{u1}b").unwrap();
    assert_eq!(v, "1");
    let (a, b) = cross_group_pair(&c.body);
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
    let ok: i64 = redis::cmd("MSETNX")
        .arg("{t}1")
        .arg("1")
        .arg("{t}2")
        .arg("2")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, 1);
    // MSET with an odd argument count is refused before anything is sent.
    let err = redis::cmd("MSET")
        .arg(&a)
        .arg("1")
        .arg(&b)
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("wrong number of arguments for 'mset'"),
        "{err}"
    );
}

/// Two keys owned by different groups.
fn cross_group_pair(body: &str) -> (String, String) {
    let a = "pair:0".to_string();
    let oa = owner(body, a.as_bytes());
    let b = (1..)
        .map(|i| format!("pair:{i}"))
        .find(|k| owner(body, k.as_bytes()) != oa)
        .unwrap();
    (a, b)
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
    let mut con = c.kw.conn();
    let mut direct = c.redis[0].conn();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO").arg("héllo").query(&mut con).unwrap();
    assert_eq!(echo, "héllo");
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    assert!(redis::cmd("SELECT").arg(3).query::<()>(&mut con).is_err());
    for args in [
        vec!["COMMAND", "COUNT"],
        vec!["COMMAND", "INFO", "get", "nosuch", "config|get"],
        vec!["COMMAND", "DOCS", "set"],
    ] {
        let mine: Value = redis::cmd(args[0]).arg(&args[1..]).query(&mut con).unwrap();
        let theirs: Value = redis::cmd(args[0])
            .arg(&args[1..])
            .query(&mut direct)
            .unwrap();
        assert_eq!(mine, theirs, "{args:?}");
    }
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut con)
        .unwrap();
    assert_eq!(keys, ["a", "b"]);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut con)
        .unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name, "tester");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    assert!(id > 0);
    let hello: Value = redis::cmd("HELLO").arg(2).query(&mut con).unwrap();
    let Value::Array(items) = hello else {
        panic!("{hello:?}")
    };
    assert_eq!(items.len(), 14);
    let err = redis::cmd("HELLO")
        .arg(3)
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPROTO"));
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    assert!(
        info.contains("redis_version:7.0") && info.contains("table_version:1"),
        "{info}"
    );

    // Refusals name the command and never reach a backend.
    for (cmd, needle) in [
        (vec!["MULTI"], "'MULTI': transactions"),
        (vec!["SUBSCRIBE", "ch"], "'SUBSCRIBE': Pub/Sub"),
        (vec!["BLPOP", "l", "0"], "'BLPOP': blocking"),
        (
            vec!["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
            "'XREAD BLOCK'",
        ),
        (vec!["EVAL", "return 1", "0"], "without keys"),
        (vec!["KEYS", "*"], "'KEYS'"),
        (vec!["CONFIG", "GET", "maxmemory"], "'CONFIG GET'"),
        (vec!["CLUSTER", "INFO"], "not a Redis Cluster node"),
        (vec!["FLUSHALL"], "'FLUSHALL'"),
        (vec!["NOSUCH", "x"], "unknown command 'NOSUCH'"),
        (vec!["OBJECT", "NOPE"], "unknown subcommand 'NOPE'"),
        (vec!["GET"], "wrong number of arguments for 'get'"),
    ] {
        let err = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query::<Value>(&mut con)
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{cmd:?}: {err}");
    }
    // The connection still works after every refusal.
    let _: () = con.set("after", "ok").unwrap();
    let v: String = con.get("after").unwrap();
    assert_eq!(v, "ok");
    // Scripts with keys in one group pass through.
    let v: String = redis::cmd("EVAL")
        .arg("return redis.call('GET', KEYS[1])")
        .arg(1)
        .arg("after")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "ok");
}

#[test]
fn inline_requests_and_quit() {
    let c = cluster(1);
    let mut s = c.kw.tcp();
    assert_eq!(raw_roundtrip(&mut s, b"PING\r\n"), b"+PONG\r\n");
    assert_eq!(
        raw_roundtrip(
            &mut s,
            b"SET \"inline key\" 'v 1'\r\nGET \"inline key\"\r\n"
        ),
        b"+OK\r\n$3\r\nv 1\r\n"
    );
    let mut con = c.kw.conn();
    let v: String = con.get("inline key").unwrap();
    assert_eq!(v, "v 1");
    assert_eq!(
        raw_roundtrip(&mut s, b"QUIT\r\nPING\r\n"),
        b"+OK\r\n",
        "nothing after QUIT is answered; then EOF"
    );
}
