//! The whole keyspace through keyway to three real Redis groups: `SCAN`
//! (with `MATCH`, `COUNT`, `TYPE`, and `redis-cli --scan`), `KEYS`,
//! `RANDOMKEY`, `FLUSHALL`/`FLUSHDB`, `DBSIZE`, `TIME`, `LASTSAVE`, and
//! Redis's own error texts for bad arguments, compared byte for byte with a
//! real redis-server holding the same keys ([`SideBySide`]). A scan while a
//! migration runs is in `ctl/tests/migration.rs`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use common::{groups, key_on, Keyway, Redis, SideBySide};
use redis::Commands;

struct Cluster {
    redis: Vec<Redis>,
    body: String,
    kw: Keyway,
    /// A single redis-server given the same writes: the specification.
    reference: Redis,
}

fn cluster_with(extra: &str) -> Cluster {
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let body = format!(
        "cores = 2\n{extra}\n{}",
        groups(&redis.iter().collect::<Vec<_>>())
    );
    let kw = Keyway::start(&body);
    Cluster {
        redis,
        body,
        kw,
        reference: Redis::start(),
    }
}

fn cluster() -> Cluster {
    cluster_with("")
}

/// Strings, lists and hashes under `user:`, `item:` and `{tag}` names, on
/// keyway and on the reference; every group gets some of each.
fn populate(c: &Cluster, n: usize) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    let mut p = redis::pipe();
    for i in 0..n {
        let (u, l, h, t) = (
            format!("user:{i}"),
            format!("item:list:{i}"),
            format!("item:hash:{i}"),
            format!("{{tag}}:{i}"),
        );
        p.cmd("SET").arg(&u).arg(i).ignore();
        p.cmd("RPUSH").arg(&l).arg("a").ignore();
        p.cmd("HSET").arg(&h).arg("f").arg(i).ignore();
        p.cmd("SET").arg(&t).arg(i).ignore();
        all.extend([u, l, h, t]);
    }
    let () = p.query(&mut c.kw.conn()).unwrap();
    let () = p.query(&mut c.reference.conn()).unwrap();
    for r in &c.redis {
        let n: u64 = redis::cmd("DBSIZE").query(&mut r.conn()).unwrap();
        assert!(n > 0, "every group holds keys");
    }
    all
}

/// A full `SCAN` iteration with `opts`: each key with how often it came.
fn scan_all(con: &mut redis::Connection, opts: &[&str]) -> (HashMap<String, usize>, usize) {
    let mut seen = HashMap::new();
    let (mut cursor, mut steps) = (0u64, 0);
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg(opts).query(con).unwrap();
        for k in keys {
            *seen.entry(k).or_insert(0) += 1;
        }
        steps += 1;
        assert!(steps < 100_000, "the scan does not end");
        cursor = next;
        if cursor == 0 {
            return (seen, steps);
        }
    }
}

fn once(seen: HashMap<String, usize>) -> BTreeSet<String> {
    for (k, n) in &seen {
        assert_eq!(*n, 1, "{k} seen {n} times");
    }
    seen.into_keys().collect()
}

#[test]
fn a_full_scan_sees_every_key_of_every_group_once() {
    let c = cluster();
    let all = populate(&c, 150);
    let mut k = c.kw.conn();
    let mut r = c.reference.conn();
    for opts in [
        &[][..],
        &["COUNT", "7"][..],
        &["COUNT", "1000"][..],
        &["MATCH", "user:*"][..],
        &["MATCH", "item:*", "COUNT", "3"][..],
        &["TYPE", "list"][..],
        &["TYPE", "hash", "COUNT", "20", "MATCH", "*:1*"][..],
        &["MATCH", "nothing:*"][..],
        // Redis 7.0 takes an unknown type and matches nothing.
        &["TYPE", "nosuchtype"][..],
    ] {
        let (ours, steps) = scan_all(&mut k, opts);
        let (theirs, _) = scan_all(&mut r, opts);
        let ours = once(ours);
        assert_eq!(ours, once(theirs), "SCAN {opts:?}");
        assert!(steps >= 3, "one step per group at least: {steps}");
        if opts.is_empty() {
            assert_eq!(ours, all);
        }
    }
    // Cursors are u64 below 2⁶³ and 0 only at the end.
    let (cursor, _): (String, Vec<String>) = redis::cmd("SCAN").arg(0).query(&mut k).unwrap();
    let n: u64 = cursor.parse().unwrap();
    assert!(n != 0 && n < 1 << 63, "{cursor}");
}

#[test]
fn redis_cli_scan_lists_every_key() {
    let c = cluster();
    let all = populate(&c, 100);
    let cli = |extra: &[&str]| -> BTreeSet<String> {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &c.kw.addr.port().to_string(),
                "--scan",
            ])
            .args(extra)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let set: BTreeSet<String> = lines.iter().cloned().collect();
        assert_eq!(set.len(), lines.len(), "each key once");
        set
    };
    assert_eq!(cli(&[]), all);
    let users: BTreeSet<String> = all
        .iter()
        .filter(|k| k.starts_with("user:"))
        .cloned()
        .collect();
    assert_eq!(cli(&["--pattern", "user:*"]), users);
}

#[test]
fn keys_merges_every_group() {
    let c = cluster();
    let all = populate(&c, 80);
    let mut k = c.kw.conn();
    let mut r = c.reference.conn();
    for pattern in ["*", "user:*", "item:*:1?", "{tag}:*", "none*"] {
        let ours: Vec<String> = k.keys(pattern).unwrap();
        let theirs: Vec<String> = r.keys(pattern).unwrap();
        let ours_set: BTreeSet<String> = ours.iter().cloned().collect();
        assert_eq!(ours_set.len(), ours.len(), "KEYS {pattern}: each key once");
        assert_eq!(ours_set, theirs.into_iter().collect(), "KEYS {pattern}");
    }
    let every: Vec<String> = k.keys("*").unwrap();
    assert_eq!(every.len(), all.len());
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut k).unwrap();
    assert_eq!(dbsize as usize, all.len());
}

#[test]
fn keys_is_bounded_by_the_output_hard_limit() {
    let c = cluster_with("[limits]\nmax_bulk_bytes = \"1kb\"\noutput_hard_limit = \"2mb\"\noutput_soft_limit = \"1mb\"\n");
    let mut k = c.kw.conn();
    let pad = "x".repeat(60);
    for chunk in (0..36_000).collect::<Vec<_>>().chunks(4000) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("SET").arg(format!("{pad}:{i}")).arg(1).ignore();
        }
        let () = p.query(&mut k).unwrap();
    }
    let err = redis::cmd("KEYS")
        .arg("*")
        .query::<Vec<String>>(&mut k)
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("limits.output_hard_limit"), "{text}");
    // The connection still serves.
    let n: Vec<String> = k.keys(format!("{pad}:1234*")).unwrap();
    assert_eq!(n.len(), 1 + 10);
}

#[test]
fn randomkey_picks_from_the_whole_keyspace() {
    let c = cluster();
    let mut both_ = SideBySide::connect(c.reference.addr(), c.kw.addr);
    // Empty everywhere: nil as Redis sends it.
    both_.same(&["RANDOMKEY"]);
    both_.same(&["RANDOMKEY", "x"]);
    let mut k = c.kw.conn();
    // One key, on the last group: always that key.
    let only = key_on(&c.body, 2, "only");
    let () = k.set(&only, 1).unwrap();
    for _ in 0..20 {
        let got: Option<String> = redis::cmd("RANDOMKEY").query(&mut k).unwrap();
        assert_eq!(got.as_deref(), Some(only.as_str()));
    }
    // A key on each group: every group's key comes up.
    let keys: Vec<String> = (0..3).map(|g| key_on(&c.body, g, "rk")).collect();
    let () = k.del(&only).unwrap();
    for key in &keys {
        let () = k.set(key, 1).unwrap();
    }
    let mut got = BTreeSet::new();
    for _ in 0..200 {
        let key: String = redis::cmd("RANDOMKEY").query(&mut k).unwrap();
        assert!(keys.contains(&key), "{key}");
        got.insert(key);
    }
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn flushall_and_flushdb_empty_every_group() {
    let c = cluster();
    let mut both_ = SideBySide::connect(c.reference.addr(), c.kw.addr);
    let dbsizes = || -> Vec<u64> {
        c.redis
            .iter()
            .map(|r| redis::cmd("DBSIZE").query(&mut r.conn()).unwrap())
            .collect()
    };
    for flush in [
        &["FLUSHALL"][..],
        &["FLUSHDB"][..],
        &["FLUSHALL", "ASYNC"][..],
        &["FLUSHDB", "SYNC"][..],
        &["flushall", "sync"][..],
    ] {
        populate(&c, 20);
        assert!(dbsizes().iter().all(|&n| n > 0));
        both_.same(flush);
        assert_eq!(dbsizes(), vec![0, 0, 0], "{flush:?}");
        both_.same(&["DBSIZE"]);
    }
    // Bad arguments: Redis's error, and nothing flushed.
    populate(&c, 5);
    both_.same_all(&[
        &["FLUSHALL", "LAZY"],
        &["FLUSHDB", "ASYNC", "SYNC"],
        &["FLUSHALL", "ASYNC", "x"],
    ]);
    assert!(dbsizes().iter().all(|&n| n > 0));
}

#[test]
fn a_flush_with_a_group_down_names_it() {
    let mut c = cluster();
    populate(&c, 10);
    c.redis[1].kill();
    let mut k = c.kw.conn();
    let err = redis::cmd("FLUSHALL").query::<()>(&mut k).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("FLUSHALL failed on group(s) g2") && text.contains("succeeded on g1, g3"),
        "{text}"
    );
    for g in [0, 2] {
        let n: u64 = redis::cmd("DBSIZE").query(&mut c.redis[g].conn()).unwrap();
        assert_eq!(n, 0, "g{} flushed", g + 1);
    }
}

#[test]
fn time_and_lastsave() {
    let c = cluster();
    let mut k = c.kw.conn();
    let mut r = c.reference.conn();
    let (ks, kus): (String, String) = redis::cmd("TIME").query(&mut k).unwrap();
    let (rs, _): (String, String) = redis::cmd("TIME").query(&mut r).unwrap();
    let (ks, kus, rs): (i64, i64, i64) = (
        ks.parse().unwrap(),
        kus.parse().unwrap(),
        rs.parse().unwrap(),
    );
    assert!((ks - rs).abs() <= 2, "keyway {ks}, redis {rs}");
    assert!((0..1_000_000).contains(&kus));
    // LASTSAVE: the oldest group's, after one group saved.
    let () = redis::cmd("SAVE").query(&mut c.redis[1].conn()).unwrap();
    let saves: Vec<i64> = c
        .redis
        .iter()
        .map(|r| redis::cmd("LASTSAVE").query(&mut r.conn()).unwrap())
        .collect();
    let ours: i64 = redis::cmd("LASTSAVE").query(&mut k).unwrap();
    assert_eq!(ours, *saves.iter().min().unwrap(), "{saves:?}");
    let mut both_ = SideBySide::connect(c.reference.addr(), c.kw.addr);
    both_.same_all(&[&["TIME", "x"], &["LASTSAVE", "x"], &["DBSIZE", "x"]]);
}

#[test]
fn errors_read_as_redis_words_them() {
    let c = cluster();
    populate(&c, 10);
    let mut both_ = SideBySide::connect(c.reference.addr(), c.kw.addr);
    both_.same_all(&[
        // SCAN: the cursor is keyway's, the options the group's.
        &["SCAN"],
        &["SCAN", "abc"],
        &["SCAN", " 1"],
        &["SCAN", "1x"],
        &["SCAN", "18446744073709551616"],
        &["SCAN", "0", "COUNT", "0"],
        &["SCAN", "0", "COUNT", "-1"],
        &["SCAN", "0", "COUNT", "x"],
        &["SCAN", "0", "MATCH"],
        &["SCAN", "0", "foo", "bar"],
        &["SCAN", "0", "TYPE"],
        &["KEYS"],
        &["KEYS", "a", "b"],
        &["RANDOMKEY", "x"],
        // Key counts Redis refuses itself.
        &["SINTERCARD", "0", "a"],
        &["SINTERCARD", "-1", "a"],
        &["SINTERCARD", "x", "a"],
        &["SINTERCARD", "5", "a"],
        &["ZUNION", "0", "a"],
        &["ZUNION", "5", "a"],
        &["ZUNION", "x", "a"],
        &["ZINTER", "0", "a"],
        &["ZDIFF", "-1", "a"],
        &["ZINTERCARD", "0", "a"],
        &["ZINTERCARD", "3", "a"],
        &["ZUNIONSTORE", "d", "5", "a"],
        &["ZINTERSTORE", "d", "0", "a"],
        &["LMPOP", "0", "a", "LEFT"],
        &["LMPOP", "x", "a", "LEFT"],
        &["LMPOP", "-1", "a", "LEFT"],
        &["ZMPOP", "0", "a", "MIN"],
        &["ZMPOP", "3", "a", "MIN"],
        &["BLMPOP", "0", "0", "a", "LEFT"],
        &["BLMPOP", "0", "5", "a", "LEFT"],
        &["BZMPOP", "0", "x", "a", "MIN"],
        // Scripts' key counts were already Redis's.
        &["EVAL", "return 1", "5", "a"],
        &["EVAL", "return 1", "-1"],
    ]);
    // A cursor Redis would take but keyway cannot decode: Redis's words.
    let mut k = c.kw.conn();
    for bad in ["5", "-1", &((4u64 << 40) | 7).to_string()] {
        let err = redis::cmd("SCAN")
            .arg(bad)
            .query::<redis::Value>(&mut k)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "An error was signalled by the server - ResponseError: invalid cursor",
            "{bad}"
        );
    }
    // One database.
    for cmd in [
        &["SELECT", "1"][..],
        &["MOVE", "a", "1"][..],
        &["SWAPDB", "0", "1"][..],
    ] {
        let err = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query::<()>(&mut k)
            .unwrap_err();
        assert!(
            err.to_string().contains("keyway serves database 0 only"),
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn sort_patterns_that_stay_on_the_keys_group() {
    let c = cluster();
    let mut both_ = SideBySide::connect(c.reference.addr(), c.kw.addr);
    both_.same_all(&[
        &["RPUSH", "{u}list", "2", "1", "3"],
        &["MSET", "{u}w_1", "30", "{u}w_2", "10", "{u}w_3", "20"],
        &["HSET", "{u}o_1", "f", "one"],
        &["SORT", "{u}list", "BY", "{u}w_*"],
        &[
            "SORT",
            "{u}list",
            "BY",
            "{u}w_*",
            "GET",
            "#",
            "GET",
            "{u}o_*->f",
        ],
        &["SORT_RO", "{u}list", "BY", "{u}w_*", "DESC"],
        &["SORT", "{u}list", "BY", "nosort", "GET", "#"],
        &["SORT", "{u}list", "BY", "{u}w_*", "STORE", "{u}out"],
        &["LRANGE", "{u}out", "0", "-1"],
    ]);
    let mut k = c.kw.conn();
    // A pattern whose keys could be anywhere: refused, saying why.
    let err = redis::cmd("SORT")
        .arg(&["{u}list", "BY", "w_*"])
        .query::<Vec<String>>(&mut k)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("SORT BY/GET patterns must contain a hash tag"),
        "{err}"
    );
    // A tagged pattern on another group than the key's: CROSSSLOT.
    let other = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| {
            common::owner(&c.body, format!("{{{t}}}").as_bytes()) != common::owner(&c.body, b"{u}")
        })
        .unwrap();
    let err = redis::cmd("SORT")
        .arg(&["{u}list", "BY", &format!("{{{other}}}w_*")])
        .query::<Vec<String>>(&mut k)
        .unwrap_err();
    assert!(
        err.to_string().contains("don't hash to the same group"),
        "{err}"
    );
}

#[test]
fn copy_to_another_database_is_refused() {
    let c = cluster();
    let mut k = c.kw.conn();
    let _: () = k.set("{c}src", "v").unwrap();
    let refused = "COPY to database 3 is not supported: keyway serves database 0 only";
    let e = redis::cmd("COPY")
        .arg(&["{c}src", "{c}dst", "DB", "3"])
        .query::<i64>(&mut k)
        .unwrap_err();
    assert!(e.to_string().contains(refused), "{e}");
    // In a transaction it is refused at queue time, and EXEC aborts.
    let mut s = c.kw.tcp();
    let out = common::raw_roundtrip(&mut s, b"MULTI\r\nCOPY {c}src {c}dst DB 3\r\nEXEC\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!(
            "+OK\r\n-ERR {refused}\r\n-EXECABORT Transaction discarded because of previous \
             errors.\r\n"
        )
    );
    // Database 0 and Redis's own errors are as Redis.
    let copied: i64 = redis::cmd("COPY")
        .arg(&["{c}src", "{c}dst", "DB", "0"])
        .query(&mut k)
        .unwrap();
    assert_eq!(copied, 1);
    let e = redis::cmd("COPY")
        .arg(&["{c}src", "{c}x", "DB", "x"])
        .query::<i64>(&mut k)
        .unwrap_err();
    assert!(e.to_string().contains("value is not an integer"), "{e}");
    for g in &c.redis {
        let mut r = g.conn();
        let _: () = redis::cmd("SELECT").arg(3).query(&mut r).unwrap();
        let n: i64 = redis::cmd("DBSIZE").query(&mut r).unwrap();
        assert_eq!(n, 0, "nothing reached database 3");
    }
}
