//! `INFO`, `CONFIG`, `SLOWLOG` and the per-command counters through keyway
//! in front of three real Redis groups, checked against a real
//! redis-server (field names, help texts, errors) and against each group
//! asked directly (keyspace sums, settings reaching every group, slow
//! log entries).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{groups, key_on, wait_for, Keyway, Redis, SideBySide};

struct Cluster {
    redis: Vec<Redis>,
    body: String,
    kw: Keyway,
    reference: Redis,
}

fn cluster_with(third: &[&str], extra: &str) -> Cluster {
    let redis = vec![Redis::start(), Redis::start(), Redis::start_with(third)];
    let body = format!(
        "cores = 2\n{extra}{}",
        groups(&[&redis[0], &redis[1], &redis[2]])
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
    cluster_with(&[], "")
}

/// `INFO` text parsed: section title → fields in order.
fn sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# ") {
            out.push((t.to_string(), Vec::new()));
        } else if let Some((k, v)) = line.split_once(':') {
            out.last_mut()
                .expect("a field before any section")
                .1
                .push((k.to_string(), v.to_string()));
        }
    }
    out
}

fn info(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut c = redis::cmd("INFO");
    for a in args {
        c.arg(*a);
    }
    c.query(con).unwrap()
}

fn field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::to_string)
}

fn query<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).unwrap()
}

fn error_of(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    match c.query::<redis::Value>(con) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{args:?}: expected an error, got {v:?}"),
    }
}

#[test]
fn info_has_every_field_redis_has_in_redis_order() {
    let c = cluster();
    let mut kw = c.kw.conn();
    let mut reference = c.reference.conn();
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        let _: () = query(&mut kw, &["SET", &key_on(&c.body, i, k), "v"]);
        let _: () = query(&mut reference, &["SET", k, "v"]);
    }
    let theirs = sections(&info(&mut reference, &["everything"]));
    let ours = sections(&info(&mut kw, &["everything"]));
    let titles = |s: &[(String, Vec<(String, String)>)]| -> Vec<String> {
        s.iter().map(|(t, _)| t.clone()).collect()
    };
    let mut want = titles(&theirs);
    want.push("Keyway".into());
    assert_eq!(titles(&ours), want, "the sections, in Redis's order");
    for title in [
        "Server",
        "Clients",
        "Memory",
        "Persistence",
        "Stats",
        "Replication",
        "CPU",
        "Cluster",
        "Keyspace",
    ] {
        let of = |s: &[(String, Vec<(String, String)>)]| -> Vec<String> {
            s.iter()
                .find(|(t, _)| t == title)
                .map(|(_, f)| f.iter().map(|(k, _)| k.clone()).collect())
                .unwrap_or_default()
        };
        let (r, k) = (of(&theirs), of(&ours));
        let missing: Vec<&String> = r.iter().filter(|n| !k.contains(n)).collect();
        assert!(missing.is_empty(), "# {title}: keyway lacks {missing:?}");
        let in_order: Vec<&String> = k.iter().filter(|n| r.contains(n)).collect();
        assert_eq!(
            in_order,
            r.iter().collect::<Vec<_>>(),
            "# {title}: Redis's fields in Redis's order"
        );
    }
    let server = info(&mut kw, &["server"]);
    assert_eq!(sections(&server).len(), 1, "INFO server: one section");
    let version = field(&info(&mut c.redis[0].conn(), &["server"]), "redis_version");
    assert_eq!(field(&server, "redis_version"), version);
    assert_eq!(field(&server, "redis_mode").as_deref(), Some("standalone"));
    assert_eq!(
        field(&server, "process_id"),
        Some(c.kw.pid().to_string()),
        "keyway's own pid"
    );
    assert_eq!(
        field(&server, "tcp_port"),
        Some(c.kw.addr.port().to_string())
    );
    let run_id = field(&server, "run_id").unwrap();
    assert!(
        run_id.len() == 40 && run_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{run_id}"
    );
    assert_eq!(field(&server, "arch_bits").as_deref(), Some("64"));
    assert_eq!(
        field(&info(&mut kw, &["cluster"]), "cluster_enabled").as_deref(),
        Some("0")
    );
    assert_eq!(
        field(&info(&mut kw, &["replication"]), "role").as_deref(),
        Some("master")
    );
    let two = sections(&info(&mut kw, &["CPU", "clients"]));
    assert_eq!(titles(&two), ["Clients", "CPU"], "several sections");
    let default = titles(&sections(&info(&mut kw, &[])));
    let mut want = titles(&sections(&info(&mut reference, &[])));
    want.push("Keyway".into());
    assert_eq!(default, want, "INFO without arguments");
    SideBySide::connect(c.reference.addr(), c.kw.addr).same(&["INFO", "nosuch"]);
}

#[test]
fn keyspace_and_memory_add_up_over_groups() {
    let c = cluster();
    let mut kw = c.kw.conn();
    for g in 0..3 {
        for i in 0..=g {
            let k = key_on(&c.body, g, &format!("k{i}"));
            let _: () = query(&mut kw, &["SET", &k, "v"]);
            if i == 0 {
                let _: () = query(&mut kw, &["EXPIRE", &k, "1000"]);
            }
        }
    }
    let keyspace = info(&mut kw, &["keyspace"]);
    assert_eq!(
        field(&keyspace, "db0").unwrap().split(",avg_ttl").next(),
        Some("keys=6,expires=3"),
        "{keyspace}"
    );
    let used: u64 = c
        .redis
        .iter()
        .map(|r| {
            field(&info(&mut r.conn(), &["memory"]), "maxmemory")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    let memory = info(&mut kw, &["memory"]);
    assert_eq!(field(&memory, "maxmemory"), Some(used.to_string()));
    assert!(field(&memory, "keyway_used_memory").is_some(), "{memory}");
}

#[test]
fn commandstats_and_errorstats_move_by_exactly_the_requests_sent() {
    let c = cluster();
    let mut kw = c.kw.conn();
    let k = key_on(&c.body, 1, "str");
    let _: () = query(&mut kw, &["CONFIG", "RESETSTAT"]);
    let _: () = query(&mut kw, &["SET", &k, "v"]);
    for _ in 0..5 {
        let _: Option<String> = query(&mut kw, &["GET", &k]);
    }
    for _ in 0..2 {
        assert!(error_of(&mut kw, &["LPUSH", &k, "x"]).contains("WRONGTYPE"));
    }
    assert!(error_of(&mut kw, &["GET", &k, "extra"]).contains("wrong number of arguments"));
    assert!(error_of(&mut kw, &["NOSUCHCOMMAND"]).contains("unknown command"));
    let stats = info(&mut kw, &["commandstats"]);
    let line = |name: &str| field(&stats, &format!("cmdstat_{name}")).unwrap_or_default();
    assert!(
        line("get").starts_with("calls=5,") && line("get").contains("rejected_calls=1,"),
        "{stats}"
    );
    assert!(line("set").starts_with("calls=1,"), "{stats}");
    assert!(line("lpush").starts_with("calls=2,"), "{stats}");
    assert!(line("config|resetstat").starts_with("calls=1,"), "{stats}");
    let errors = info(&mut kw, &["errorstats"]);
    assert_eq!(
        field(&errors, "errorstat_WRONGTYPE").as_deref(),
        Some("count=2")
    );
    assert_eq!(field(&errors, "errorstat_ERR").as_deref(), Some("count=2"));
    let total = field(&info(&mut kw, &["stats"]), "total_error_replies");
    assert_eq!(total.as_deref(), Some("4"));

    // RESETSTAT: keyway's counters and every group's.
    let _: () = query(&mut kw, &["CONFIG", "RESETSTAT"]);
    let stats = info(&mut kw, &["commandstats"]);
    assert_eq!(field(&stats, "cmdstat_get"), None, "{stats}");
    assert_eq!(
        field(&info(&mut kw, &["errorstats"]), "errorstat_ERR"),
        None
    );
    for (g, r) in c.redis.iter().enumerate() {
        let theirs = info(&mut r.conn(), &["commandstats"]);
        assert_eq!(
            field(&theirs, "cmdstat_get"),
            None,
            "group {g}'s stats were reset: {theirs}"
        );
    }
}

#[test]
fn config_set_reaches_every_group_and_config_get_reads_as_redis() {
    let c = cluster();
    let mut both = SideBySide::connect(c.reference.addr(), c.kw.addr);
    both.same(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    for (g, r) in c.redis.iter().enumerate() {
        let v: Vec<String> = query(&mut r.conn(), &["CONFIG", "GET", "maxmemory-policy"]);
        assert_eq!(v, ["maxmemory-policy", "allkeys-lru"], "group {g}");
    }
    both.same(&["CONFIG", "GET", "maxmemory-policy"]);
    both.same(&["CONFIG", "SET", "maxmemory-policy", "bogus"]);
    both.same(&["CONFIG", "SET", "nosuch", "1"]);
    both.same(&["CONFIG", "SET", "maxmemory"]);
    both.same(&["CONFIG", "SET", "maxmemory", "1", "hz"]);
    both.same(&["CONFIG", "HELP"]);
    both.same(&["SLOWLOG", "HELP"]);
    both.same(&["SLOWLOG", "GET", "-2"]);
    both.same(&["SLOWLOG", "GET", "x"]);
    both.same(&["SLOWLOG", "GET", "1", "2"]);
    both.same(&["CONFIG", "GET"]);
    both.same(&["CONFIG", "NOSUCH"]);
    both.same(&["INFO", "nosuch", "other"]);
}

#[test]
fn a_config_set_refused_by_one_group_is_set_back_where_it_was_accepted() {
    // Only the third group lets `dir` (a protected config) be changed.
    let c = cluster_with(&["--enable-protected-configs", "yes"], "");
    let mut kw = c.kw.conn();
    let before: Vec<String> = query(&mut c.redis[2].conn(), &["CONFIG", "GET", "dir"]);
    let err = error_of(&mut kw, &["CONFIG", "SET", "dir", "/tmp"]);
    assert!(
        err.contains("CONFIG SET failed on group(s) g1 (") && err.contains("), g2 ("),
        "{err}"
    );
    assert!(
        err.contains("it succeeded on g3, set back to the previous values there"),
        "{err}"
    );
    wait_for("g3's dir set back", Duration::from_secs(5), || {
        let now: Vec<String> = query(&mut c.redis[2].conn(), &["CONFIG", "GET", "dir"]);
        (now == before).then_some(())
    });
}

#[test]
fn keyways_own_settings_are_read_not_written() {
    let c = cluster_with(&[], "[limits]\nmax_clients = 1234\n");
    let mut kw = c.kw.conn();
    let pairs: Vec<String> = query(&mut kw, &["CONFIG", "GET", "keyway-*"]);
    let map: BTreeMap<&str, &str> = pairs
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].as_str()))
        .collect();
    assert!(map.keys().all(|k| k.starts_with("keyway-")), "{pairs:?}");
    assert_eq!(map.get("keyway-limits.max_clients"), Some(&"1234"));
    assert_eq!(map.get("keyway-limits.slowlog_max_len"), Some(&"128"));
    assert_eq!(map.get("keyway-limits.client_pause_max"), Some(&"60s"));
    let both: Vec<String> = query(
        &mut kw,
        &["CONFIG", "GET", "maxclients", "keyway-limits.max_c*"],
    );
    assert_eq!(both.len(), 4, "the group's and keyway's: {both:?}");
    let err = error_of(
        &mut kw,
        &["CONFIG", "SET", "keyway-limits.max_clients", "5"],
    );
    assert!(err.contains("cannot be changed with CONFIG SET"), "{err}");
    let err = error_of(&mut kw, &["CONFIG", "REWRITE"]);
    assert!(
        err.contains("keyway does not rewrite the groups' config files"),
        "{err}"
    );
}

#[test]
fn slowlog_merges_the_groups_entries_newest_first() {
    let c = cluster();
    let mut kw = c.kw.conn();
    let _: () = query(&mut kw, &["SLOWLOG", "RESET"]);
    let (k1, k2) = (key_on(&c.body, 0, "slow"), key_on(&c.body, 1, "slow"));
    for r in &c.redis[..2] {
        let _: () = query(
            &mut r.conn(),
            &["CONFIG", "SET", "slowlog-log-slower-than", "0"],
        );
    }
    let _: () = query(&mut kw, &["SET", &k1, "v"]);
    let _: Option<String> = query(&mut kw, &["GET", &k2]);
    for r in &c.redis[..2] {
        let _: () = query(
            &mut r.conn(),
            &["CONFIG", "SET", "slowlog-log-slower-than", "-1"],
        );
    }
    let lens: i64 = c
        .redis
        .iter()
        .map(|r| query::<i64>(&mut r.conn(), &["SLOWLOG", "LEN"]))
        .sum();
    assert!(lens >= 2);
    assert_eq!(query::<i64>(&mut kw, &["SLOWLOG", "LEN"]), lens);
    let entries: Vec<redis::Value> = query(&mut kw, &["SLOWLOG", "GET", "-1"]);
    assert_eq!(entries.len() as i64, lens);
    let mut seen = Vec::new();
    let mut ids = Vec::new();
    let mut last_time = i64::MAX;
    for e in &entries {
        let redis::Value::Array(f) = e else {
            panic!("{e:?}")
        };
        let int = |v: &redis::Value| match v {
            redis::Value::Int(n) => *n,
            other => panic!("{other:?}"),
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{other:?}"),
        };
        ids.push(int(&f[0]));
        let time = int(&f[1]);
        assert!(time <= last_time, "newest first");
        last_time = time;
        let redis::Value::Array(args) = &f[3] else {
            panic!("{f:?}")
        };
        let args: Vec<String> = args.iter().map(text).collect();
        seen.push((args.join(" "), text(&f[5])));
    }
    assert!(
        seen.contains(&(format!("SET {k1} v"), "group=g1".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(format!("GET {k2}"), "group=g2".into())),
        "{seen:?}"
    );
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids are unique: {ids:?}");
    let one: Vec<redis::Value> = query(&mut kw, &["SLOWLOG", "GET", "1"]);
    assert_eq!(one.len(), 1);
    let _: () = query(&mut kw, &["SLOWLOG", "RESET"]);
    for r in &c.redis {
        assert_eq!(query::<i64>(&mut r.conn(), &["SLOWLOG", "LEN"]), 0);
    }
}

#[test]
fn info_without_a_group_says_which_one_is_missing() {
    let mut c = cluster();
    c.redis[1].kill();
    let mut kw = c.kw.conn();
    let text = wait_for("INFO without g2", Duration::from_secs(10), || {
        let t = info(&mut kw, &["server", "keyspace"]);
        field(&t, "keyway_groups_missing").map(|_| t)
    });
    assert_eq!(
        field(&text, "keyway_groups_missing").as_deref(),
        Some("g2"),
        "{text}"
    );
    assert!(field(&text, "redis_version").is_some(), "{text}");
}

#[test]
fn info_clients_counts_blocked_subscribed_and_watching_clients() {
    let c = cluster();
    let mut blocked = c.kw.tcp();
    let k = key_on(&c.body, 0, "list");
    let req = format!("*3\r\n$5\r\nBLPOP\r\n${}\r\n{k}\r\n$1\r\n0\r\n", k.len());
    std::io::Write::write_all(&mut blocked, req.as_bytes()).unwrap();
    let mut sub = c.kw.tcp();
    let subscribed = common::raw_roundtrip(&mut sub, b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n");
    assert!(subscribed.starts_with(b"*3\r\n$9\r\nsubscribe"));
    let mut watcher = c.kw.conn();
    let _: () = query(&mut watcher, &["WATCH", &k]);
    let mut kw = c.kw.conn();
    let counts = |kw: &mut redis::Connection| {
        let t = info(kw, &["clients"]);
        ["blocked_clients", "pubsub_clients", "watching_clients"]
            .map(|f| field(&t, f).unwrap_or_default())
    };
    wait_for("every kind counted", Duration::from_secs(5), || {
        (counts(&mut kw) == ["1", "1", "1"]).then_some(())
    });
    drop(blocked);
    drop(sub);
    drop(watcher);
    wait_for("none left", Duration::from_secs(5), || {
        (counts(&mut kw) == ["0", "0", "0"]).then_some(())
    });
}
