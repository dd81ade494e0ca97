//! SIGHUP reload under load: routing changes take effect with no failed or
//! misrouted request, backends that leave are disconnected, and an invalid
//! config is rejected while the old one keeps serving.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{owner, table_version, wait_for, Keyway, Redis};
use redis::Commands;

fn group(name: &str, r: &Redis, slots: &str) -> String {
    format!(
        "[[group]]\nname = \"{name}\"\nmaster = \"{}\"\nslots = [{slots}]\n",
        r.addr()
    )
}

/// Waits until every core reports `version` (new connections land on cores
/// by hash, so several are opened).
fn wait_version(kw: &Keyway, version: u64) {
    wait_for(
        &format!("table version {version} on every core"),
        Duration::from_secs(10),
        || (0..8).all(|_| table_version(kw) == version).then_some(()),
    );
}

/// Connections keyway holds to a Redis server.
fn keyway_conns(r: &Redis) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut r.conn())
        .unwrap();
    list.lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .count()
}

#[test]
fn reload_reroutes_under_load_without_errors() {
    let r: Vec<Redis> = (0..4).map(|_| Redis::start()).collect();
    let v1 = format!(
        "cores = 2\n{}{}{}",
        group("g1", &r[0], "\"0-5460\""),
        group("g2", &r[1], "\"5461-10922\""),
        group("g3", &r[2], "\"10923-16383\"")
    );
    let mut kw = Keyway::start(&v1);

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, ops, addr) = (stop.clone(), ops.clone(), kw.addr);
            std::thread::spawn(move || {
                let mut con = redis::Client::open(format!("redis://{addr}"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("load:{t}:{}", i % 500);
                    let v = format!("{i}");
                    // One write: both commands are routed by the same table, so
                    // the GET must see the SET whichever group serves the key.
                    let (set, got): (String, String) = redis::pipe()
                        .cmd("SET")
                        .arg(&k)
                        .arg(&v)
                        .cmd("GET")
                        .arg(&k)
                        .query(&mut con)
                        .unwrap_or_else(|e| panic!("request failed during reload: {e}"));
                    assert_eq!(set, "OK");
                    assert_eq!(
                        got, v,
                        "{k} read back from another group than it was written to"
                    );
                    ops.fetch_add(2, Ordering::Relaxed);
                    i += 1;
                }
                i
            })
        })
        .collect();
    let wait_ops = |n: u64| {
        let target = ops.load(Ordering::Relaxed) + n;
        wait_for("client progress", Duration::from_secs(20), || {
            (ops.load(Ordering::Relaxed) >= target).then_some(())
        });
    };
    wait_ops(2000);

    // 2: move slot ranges between groups.
    let v2 = format!(
        "cores = 2\n{}{}{}",
        group("g1", &r[0], "\"10923-16383\""),
        group("g2", &r[1], "\"0-5460\""),
        group("g3", &r[2], "\"5461-10922\"")
    );
    kw.reload(&v2);
    wait_version(&kw, 2);
    wait_ops(2000);

    // 3: a fourth group joins and takes slots from the others.
    let v3 = format!(
        "cores = 2\n{}{}{}{}",
        group("g1", &r[0], "\"0-4095\""),
        group("g2", &r[1], "\"4096-8191\""),
        group("g3", &r[2], "\"8192-12287\""),
        group("g4", &r[3], "\"12288-16383\"")
    );
    kw.reload(&v3);
    wait_version(&kw, 3);
    wait_ops(2000);

    // 4: g1 leaves; its slots go to g4. Its connections close once drained.
    assert!(keyway_conns(&r[0]) > 0);
    let v4 = format!(
        "cores = 2\n{}{}{}",
        group("g2", &r[1], "\"4096-8191\""),
        group("g3", &r[2], "\"8192-12287\""),
        group("g4", &r[3], "\"0-4095\", \"12288-16383\"")
    );
    kw.reload(&v4);
    wait_version(&kw, 4);
    wait_ops(2000);
    wait_for(
        "keyway to disconnect from the removed group",
        Duration::from_secs(10),
        || (keyway_conns(&r[0]) == 0).then_some(()),
    );

    // 5: an invalid config is rejected; version 4 keeps serving.
    kw.reload(
        "cores = 2\n[[group]]\nname = \"bad\"\nmaster = \"127.0.0.1:1\"\nslots = [\"0-99999\"]\n",
    );
    kw.wait_log("reload rejected");
    wait_ops(2000);
    assert_eq!(table_version(&kw), 4);

    stop.store(true, Ordering::Relaxed);
    let iterations: u64 = workers
        .into_iter()
        .map(|w| w.join().expect("no client errors"))
        .sum();
    assert!(iterations > 5000);

    // New writes land where version 4 says.
    let mut con = kw.conn();
    let servers = [&r[1], &r[2], &r[3]];
    for i in 0..300 {
        let k = format!("after:{i}");
        let _: () = con.set(&k, i).unwrap();
        let o = owner(&v4, k.as_bytes());
        let v: Option<i64> = servers[o].conn().get(&k).unwrap();
        assert_eq!(v, Some(i), "{k} not on its owner");
    }
    let v: Option<i64> = r[0].conn().get("after:0").unwrap();
    assert_eq!(v, None);
    assert!(kw.alive());
}
