//! Scripts and functions through keyway to three real Redis groups:
//! `SCRIPT LOAD|EXISTS|FLUSH` and `FUNCTION LOAD|DELETE|FLUSH|RESTORE` on
//! every group, keyless calls and `FUNCTION LIST|DUMP|STATS` on the group
//! owning slot 0, and `EVALSHA` surviving a group that lost (or never had)
//! the script. Replies a single Redis would give are compared byte for byte
//! with a real redis-server ([`SideBySide`]).

mod common;

use std::time::Duration;

use common::{key_on, owner, table_version, wait_for, Keyway, Redis, SideBySide};
use redis::Commands;

const SET_SCRIPT: &str = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])";
/// One function per library: Redis lists a library's functions (and
/// libraries) in its hash table's order, which differs between servers.
const LIB: &str = "#!lua name=kwlib\nredis.register_function('kwset', function(keys, args) redis.call('SET', keys[1], args[1]); return redis.call('GET', keys[1]) end)";
const LIB_RO: &str = "#!lua name=kwro\nredis.register_function{function_name='kwping', callback=function(keys, args) return 'pong' end, flags={'no-writes'}}";

fn group(name: &str, r: &Redis, slots: &str) -> String {
    format!(
        "[[group]]\nname = \"{name}\"\nmaster = \"{}\"\nslots = [{slots}]\n",
        r.addr()
    )
}

struct Cluster {
    redis: Vec<Redis>,
    body: String,
    kw: Keyway,
    reference: Redis,
}

/// Three groups; g2 owns slot 0 (the documented group for keyless calls).
fn cluster() -> Cluster {
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let body = format!(
        "cores = 2\n{}{}{}",
        group("g1", &redis[0], "\"5461-10922\""),
        group("g2", &redis[1], "\"0-5460\""),
        group("g3", &redis[2], "\"10923-16383\"")
    );
    let kw = Keyway::start(&body);
    Cluster {
        redis,
        body,
        kw,
        reference: Redis::start(),
    }
}

impl Cluster {
    fn both(&self) -> SideBySide {
        SideBySide::connect(self.reference.addr(), self.kw.addr)
    }

    /// A key owned by each group, in group order.
    fn keys(&self, tag: &str) -> Vec<String> {
        (0..3).map(|g| key_on(&self.body, g, tag)).collect()
    }
}

/// A script's sha, computed apart from keyway and Redis.
fn sha_of(script: &str) -> String {
    sha1_smol::Sha1::from(script).digest().to_string()
}

fn script_exists(r: &Redis, sha: &str) -> bool {
    let v: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(sha)
        .query(&mut r.conn())
        .unwrap();
    v == [1]
}

fn libraries(r: &Redis) -> usize {
    let v: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query(&mut r.conn())
        .unwrap();
    v.len()
}

#[test]
fn script_load_then_evalsha_with_keys_in_every_group() {
    let c = cluster();
    let mut both = c.both();
    let sha = String::from_utf8(both.same(&["SCRIPT", "LOAD", SET_SCRIPT])).unwrap();
    let sha = sha.lines().nth(1).unwrap().to_string();
    for r in &c.redis {
        assert!(script_exists(r, &sha), "SCRIPT LOAD reached {}", r.addr());
    }
    for (g, k) in c.keys("ev").iter().enumerate() {
        both.same(&["EVALSHA", &sha, "1", k, &format!("v{g}")]);
        both.same(&["EVALSHA_RO", &sha, "1", k, "x"]);
        both.same(&["EVAL", SET_SCRIPT, "1", k, &format!("w{g}")]);
        let direct: Option<String> = c.redis[g].conn().get(k).unwrap();
        assert_eq!(
            direct.as_deref(),
            Some(format!("w{g}").as_str()),
            "{k} on g{}",
            g + 1
        );
    }
    // Keys of two groups in one call: as Redis Cluster, CROSSSLOT.
    let keys = c.keys("cross");
    let mut con = c.kw.conn();
    let err = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(2)
        .arg(&keys[0])
        .arg(&keys[1])
        .arg("v")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("CrossSlot: Keys in request don't hash to the same group"),
        "{err}"
    );
}

#[test]
fn script_exists_is_true_only_where_every_group_has_it() {
    let c = cluster();
    let mut both = c.both();
    let a = "return 'a'";
    let b = "return 'b'";
    let sha_a = sha_of(a);
    // Through keyway only: the reference never loads `a`.
    let mut con = c.kw.conn();
    let _: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(a)
        .query(&mut con)
        .unwrap();
    let all: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha_a)
        .query(&mut con)
        .unwrap();
    assert_eq!(all, [1], "loaded on every group");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut c.redis[2].conn())
        .unwrap();
    let sha_b = String::from_utf8(both.same(&["SCRIPT", "LOAD", b])).unwrap();
    let sha_b = sha_b.lines().nth(1).unwrap().to_string();
    // `a` is missing on g3 only: 0, as on the reference that never had it.
    both.same(&[
        "SCRIPT",
        "EXISTS",
        &sha_a,
        &sha_b,
        "ffffffffffffffffffffffffffffffffffffffff",
    ]);
    both.same(&["SCRIPT", "EXISTS", &sha_b]);
    both.same(&["SCRIPT", "EXISTS"]);
}

#[test]
fn evalsha_is_retried_on_a_group_that_flushed_its_scripts() {
    let c = cluster();
    let mut both = c.both();
    let sha = String::from_utf8(both.same(&["SCRIPT", "LOAD", SET_SCRIPT])).unwrap();
    let sha = sha.lines().nth(1).unwrap().to_string();
    let keys = c.keys("flushed");
    // Once on each group's connection: keyway knows the script is there.
    for k in &keys {
        both.same(&["EVALSHA", &sha, "1", k, "before"]);
    }
    for r in &c.redis {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut r.conn())
            .unwrap();
    }
    // Each group answers NOSCRIPT once; keyway loads the script and sends
    // the call again. (Sent one at a time: a request pipelined behind the
    // EVALSHA on the same group runs before the retry, see README.)
    for (g, k) in keys.iter().enumerate() {
        both.same(&["EVALSHA", &sha, "1", k, &format!("p{g}")]);
        both.same(&["GET", k]);
    }
    for r in &c.redis {
        assert!(script_exists(r, &sha), "reloaded on {}", r.addr());
    }
    // A script seen only through EVAL is known too.
    let seen = "return redis.call('INCR', KEYS[1])";
    both.same(&["EVAL", seen, "1", &keys[0]]);
    let seen_sha = sha_of(seen);
    both.same(&["EVALSHA", &seen_sha, "1", &keys[2]]);
    both.same(&["EVALSHA", &seen_sha, "1", &keys[1]]);
    // SCRIPT FLUSH through keyway forgets them: NOSCRIPT as on one server.
    both.same(&["SCRIPT", "FLUSH"]);
    both.same(&["EVALSHA", &sha, "1", &keys[1], "x"]);
    both.same(&["EVALSHA", &seen_sha, "0"]);
}

#[test]
fn evalsha_after_grow_runs_on_the_new_group() {
    let mut c = cluster();
    let mut both = c.both();
    let sha = String::from_utf8(both.same(&["SCRIPT", "LOAD", SET_SCRIPT])).unwrap();
    let sha = sha.lines().nth(1).unwrap().to_string();
    let fresh = Redis::start();
    let grown = format!(
        "cores = 2\n{}{}{}{}",
        group("g1", &c.redis[0], "\"5461-10922\""),
        group("g2", &c.redis[1], "\"0-5460\""),
        group("g3", &c.redis[2], "\"10923-13000\""),
        group("g4", &fresh, "\"13001-16383\"")
    );
    let before = table_version(&c.kw);
    c.kw.reload(&grown);
    wait_for("the grown table", Duration::from_secs(10), || {
        (0..8).all(|_| table_version(&c.kw) > before).then_some(())
    });
    let k = key_on(&grown, 3, "grown");
    assert_eq!(owner(&grown, k.as_bytes()), 3);
    // The new group's connection gets the script before the first call:
    // no NOSCRIPT, so a pipelined read behind it sees its write.
    let mut req = keyway_testkit::resp::request(&["EVALSHA", &sha, "1", &k, "on-g4"]);
    req.extend(keyway_testkit::resp::request(&["GET", &k]));
    both.raw_same(&req, 2);
    let direct: Option<String> = fresh.conn().get(&k).unwrap();
    assert_eq!(direct.as_deref(), Some("on-g4"));
    assert!(script_exists(&fresh, &sha));
    c.redis.push(fresh);
}

#[test]
fn calls_without_keys_run_on_the_group_owning_slot_0() {
    let c = cluster();
    let mut both = c.both();
    both.same(&[
        "EVAL",
        "redis.call('SET', 'keyless', 'here'); return 1",
        "0",
    ]);
    both.same(&["EVAL_RO", "return 'ro'", "0"]);
    for (g, r) in c.redis.iter().enumerate() {
        let v: Option<String> = r.conn().get("keyless").unwrap();
        assert_eq!(v.is_some(), g == 1, "the keyless EVAL ran on g2 only");
    }
    both.same(&["FUNCTION", "LOAD", LIB_RO]);
    both.same(&["FCALL", "kwping", "0"]);
    both.same(&["FCALL_RO", "kwping", "0"]);
    both.same(&["FUNCTION", "LIST"]);
    both.same(&["FUNCTION", "LIST", "WITHCODE"]);
    both.same(&["FUNCTION", "STATS"]);
    both.same(&["FUNCTION", "DUMP"]);
    both.same(&["FUNCTION", "LOAD", LIB]);
    both.same(&["FUNCTION", "LIST", "LIBRARYNAME", "kwl", "WITHCODE"]);
    both.same(&["FUNCTION", "LIST", "LIBRARYNAME", "kwr"]);
    both.same(&["FUNCTION", "STATS"]);
    both.same(&["SCRIPT", "HELP"]);
    both.same(&["FUNCTION", "HELP"]);
    // No group owns slot 0: as a key of an unassigned slot.
    let mut con = c.kw.conn();
    let lonely = format!("cores = 1\n{}", group("g1", &c.redis[0], "\"1-16383\""));
    let kw = Keyway::start(&lonely);
    let err = redis::cmd("EVAL")
        .arg("return 1")
        .arg(0)
        .query::<i64>(&mut kw.conn())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("ClusterDown: Hash slot 0 is not served by any group"),
        "{err}"
    );
    let _: i64 = redis::cmd("EVAL")
        .arg("return 1")
        .arg(0)
        .query(&mut con)
        .unwrap();
}

#[test]
fn errors_read_as_redis() {
    let c = cluster();
    let mut both = c.both();
    let k = &c.keys("err")[2];
    both.same_all(&[
        &["SCRIPT", "LOAD", "return +"],
        &["SCRIPT", "LOAD"],
        &["SCRIPT", "FLUSH", "BOGUS"],
        &["SCRIPT", "FLUSH", "ASYNC"],
        &["SCRIPT", "FLUSH", "SYNC"],
        &["SCRIPT", "NOPE"],
        &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"],
        &[
            "EVALSHA",
            "ffffffffffffffffffffffffffffffffffffffff",
            "1",
            k,
        ],
        &["EVALSHA", "short", "1", k],
        &["EVAL", "return +", "1", k],
        &["EVAL", "return 1", "2", k],
        &["EVAL", "error('boom')", "0"],
        &["FUNCTION", "LOAD", "return 1"],
        &["FUNCTION", "LOAD", "#!lua name=x\nreturn +"],
        &["FUNCTION", "DELETE", "nolib"],
        &["FUNCTION", "RESTORE", "garbage"],
        &["FUNCTION", "FLUSH", "BOGUS"],
        &["FCALL", "nofunc", "0"],
        &["FCALL", "nofunc", "1", k],
    ]);
    // With no script running anywhere, as one Redis words it.
    both.same(&["SCRIPT", "KILL"]);
    both.same(&["FUNCTION", "KILL"]);
}

#[test]
fn function_load_then_fcall_on_keys_in_every_group() {
    let c = cluster();
    let mut both = c.both();
    both.same(&["FUNCTION", "LOAD", LIB]);
    for r in &c.redis {
        assert_eq!(libraries(r), 1, "FUNCTION LOAD reached {}", r.addr());
    }
    for (g, k) in c.keys("fc").iter().enumerate() {
        both.same(&["FCALL", "kwset", "1", k, &format!("f{g}")]);
        // A function that writes, called read-only: Redis's error.
        both.same(&["FCALL_RO", "kwset", "1", k, "ro"]);
        let direct: Option<String> = c.redis[g].conn().get(k).unwrap();
        assert_eq!(direct.as_deref(), Some(format!("f{g}").as_str()));
    }
    // The same library again: the same error from every group, verbatim.
    both.same(&["FUNCTION", "LOAD", LIB]);
    both.same(&["FUNCTION", "LOAD", "REPLACE", LIB]);
    let dump = both.same(&["FUNCTION", "DUMP"]);
    both.same(&["FUNCTION", "DELETE", "kwlib"]);
    both.same(&["FUNCTION", "DELETE", "kwlib"]);
    for r in &c.redis {
        assert_eq!(libraries(r), 0, "FUNCTION DELETE reached {}", r.addr());
    }
    // RESTORE the dump (its payload, a bulk string) on every group.
    let payload = {
        let text = dump.splitn(2, |&b| b == b'\n').nth(1).unwrap();
        text[..text.len() - 2].to_vec()
    };
    both.same(&[b"FUNCTION".as_slice(), b"RESTORE", &payload]);
    for r in &c.redis {
        assert_eq!(libraries(r), 1, "FUNCTION RESTORE reached {}", r.addr());
    }
    // A second RESTORE conflicts the same way on every group.
    both.same(&[b"FUNCTION".as_slice(), b"RESTORE", &payload]);
    both.same(&["FUNCTION", "LIST", "WITHCODE"]);
    both.same(&["FUNCTION", "FLUSH", "SYNC"]);
    for r in &c.redis {
        assert_eq!(libraries(r), 0, "FUNCTION FLUSH reached {}", r.addr());
    }
}

#[test]
fn a_function_load_conflicting_on_one_group_is_reported_and_undone() {
    let c = cluster();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query(&mut c.redis[1].conn())
        .unwrap();
    let mut con = c.kw.conn();
    let err = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query::<String>(&mut con)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("FUNCTION LOAD failed on group(s) g2 (ERR Library 'kwlib' already exists)")
            && err.contains("succeeded on g1, g3, undone on g1 (FUNCTION DELETE kwlib), g3"),
        "{err}"
    );
    wait_for("the undo on g1 and g3", Duration::from_secs(10), || {
        (libraries(&c.redis[0]) == 0 && libraries(&c.redis[2]) == 0).then_some(())
    });
    assert_eq!(libraries(&c.redis[1]), 1, "g2's own library stays");
    // REPLACE cannot be undone: it says so (g3 refuses it, out of memory).
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut c.redis[2].conn())
        .unwrap();
    let err = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIB)
        .query::<String>(&mut con)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("FUNCTION LOAD failed on group(s) g3 (OOM")
            && err.contains("it succeeded on g1, g2, where it was not undone"),
        "{err}"
    );
}

#[test]
fn scripts_in_a_transaction_run_as_queued_commands() {
    let c = cluster();
    let mut both = c.both();
    // On g2, which owns slot 0: the keyless calls run there too.
    let k = &c.keys("tx")[1];
    let sha = String::from_utf8(both.same(&["SCRIPT", "LOAD", SET_SCRIPT])).unwrap();
    let sha = sha.lines().nth(1).unwrap().to_string();
    both.same(&["FUNCTION", "LOAD", LIB]);
    both.same_all(&[
        &["MULTI"],
        &["EVALSHA", &sha, "1", k, "in-tx"],
        &["EVAL", "return 'keyless'", "0"],
        &["FCALL", "kwset", "1", k, "by-function"],
        &["FUNCTION", "LIST", "LIBRARYNAME", "kwl"],
        &["GET", k],
        &["EXEC"],
    ]);
    // With a WATCH (the scripts go on the watch's connection), a script
    // writing the watched key aborts the EXEC, as in Redis even from the
    // watching client itself…
    both.same_all(&[
        &["WATCH", k],
        &["EVALSHA", &sha, "1", k, "watched"],
        &["MULTI"],
        &["GET", k],
        &["EXEC"],
    ]);
    // …and SCRIPT management still reaches every group.
    both.same(&["SCRIPT", "EXISTS", &sha]);
}
