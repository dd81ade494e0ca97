//! Online migration end to end (DESIGN §4): real redis-servers, a real
//! keyway-ctld, and two keyway data planes, with checking clients that know
//! what every key must hold. After each move: every acknowledged write is
//! there, nothing is doubled, and every key is on exactly one server — the
//! one the cluster says owns its slot.
//!
//! `multi_and_blpop_on_a_slot_under_migration` does the same for the
//! commands with state at a backend (issue 12): transactions, `WATCH`
//! check-and-set loops and `BLPOP` woken by a push, on keys of slots that
//! move first on demand (sweep paused), then key by key (sweep running);
//! the `a_blpop_…` tests, a BLPOP blocked when a migration starts.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{owner_of, wait_for, Ctld, DataPlane, Redis, TempDir};
use redis::Commands;
use serde_json::Value;

/// Redis groups, a ctld and two data planes of cluster "m".
struct System {
    dir: TempDir,
    redis: Vec<(String, Redis)>,
    ctld: Ctld,
    dps: Vec<DataPlane>,
}

impl System {
    /// `groups` groups with slots, then `empty` more without.
    fn start(tag: &str, groups: usize, empty: usize) -> System {
        let dir = TempDir::new(tag);
        let redis: Vec<(String, Redis)> = (0..groups + empty)
            .map(|i| (format!("g{}", i + 1), Redis::start()))
            .collect();
        let ctld = Ctld::start(dir.path(), "30s");
        let mut args = vec!["cluster".to_string(), "create".into(), "m".into()];
        for (g, r) in &redis[..groups] {
            args.push("--group".into());
            args.push(format!("{g}={}", r.addr()));
        }
        ctl_ok(&ctld, &args.iter().map(String::as_str).collect::<Vec<_>>());
        for (g, r) in &redis[groups..] {
            ctl_ok(
                &ctld,
                &[
                    "cluster",
                    "grow",
                    "m",
                    "--group",
                    &format!("{g}={}", r.addr()),
                ],
            );
        }
        let dps: Vec<DataPlane> = ["dp1", "dp2"]
            .iter()
            .map(|id| DataPlane::start(ctld.control, "m", id, &dir.path().join(id)))
            .collect();
        for d in &dps {
            d.wait_health(200, Duration::from_secs(10));
        }
        System {
            dir,
            redis,
            ctld,
            dps,
        }
    }

    fn cluster(&self) -> Value {
        self.ctld.ctl_json(&["cluster", "show", "m"])
    }

    fn migration(&self, id: u64) -> Value {
        self.ctld.ctl_json(&["migrations", "m", &id.to_string()])
    }

    fn wait_state(&self, id: u64, phase: &str) -> Value {
        wait_for(
            &format!("migration {id} to be {phase}"),
            Duration::from_secs(60),
            || {
                let m = self.migration(id);
                (m["state"]["phase"] == phase).then_some(m)
            },
        )
    }

    fn server(&self, group: &str) -> &Redis {
        &self
            .redis
            .iter()
            .find(|(g, _)| g == group)
            .expect("group")
            .1
    }

    /// Every key of every server, with the group it is on.
    fn placement(&self) -> HashMap<String, Vec<String>> {
        let mut at: HashMap<String, Vec<String>> = HashMap::new();
        for (g, r) in &self.redis {
            let mut con = r.conn();
            let keys: Vec<String> = con.scan().unwrap().collect();
            for k in keys {
                at.entry(k).or_default().push(g.clone());
            }
        }
        at
    }

    /// Every key is on exactly one server, the owner of its slot; returns
    /// how many keys there are.
    fn assert_placed(&self) -> usize {
        let cluster = self.cluster();
        let at = self.placement();
        for (k, groups) in &at {
            assert_eq!(groups.len(), 1, "{k} is on {groups:?}");
            assert_eq!(groups[0], owner_of(&cluster, k), "{k} is not on its owner");
        }
        at.len()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let tail = |lines: Vec<String>| lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("--- keyway-ctld log\n{}", tail(self.ctld.proc.logs()));
            for d in &mut self.dps {
                eprintln!("--- {} log\n{}", d.id, tail(d.proc.logs()));
            }
        }
    }
}

fn ctl_ok(ctld: &Ctld, args: &[&str]) -> String {
    let (ok, out, err) = ctld.ctl(args);
    assert!(ok, "keywayctl {args:?}: {err}");
    out
}

/// Writes `n` keys of each kind through data plane `dp` in pipelines.
fn preload(dp: &DataPlane, n: usize) {
    let mut con = dp.conn();
    for i in 0..SHARED {
        let () = con.set(format!("shared:{i}"), 0).unwrap();
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut p = redis::pipe();
        for &i in chunk {
            p.cmd("SET").arg(format!("kv:{i}")).arg(0).ignore();
            p.cmd("SET").arg(format!("str:{i}")).arg("").ignore();
            p.cmd("INCRBY").arg(format!("ctr:{i}")).arg(0).ignore();
            p.cmd("RPUSH")
                .arg(format!("list:{i}"))
                .arg("start")
                .ignore();
            p.cmd("SET").arg(format!("{{tag:{i}}}:a")).arg(0).ignore();
            p.cmd("SET").arg(format!("{{tag:{i}}}:b")).arg(0).ignore();
        }
        let () = p.query(&mut con).unwrap();
    }
}

/// What one checking client knows every key it owns must hold.
#[derive(Debug, Default)]
struct Expected {
    kv: BTreeMap<usize, i64>,
    str_len: BTreeMap<usize, i64>,
    ctr: BTreeMap<usize, i64>,
    list_len: BTreeMap<usize, i64>,
    tag: BTreeMap<usize, i64>,
}

/// Checking clients: each owns the keys `i % clients == t` and checks every
/// reply against what it wrote; all of them also INCR a few shared counters
/// through both data planes at once.
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    shared: Arc<Mutex<HashMap<String, i64>>>,
    threads: Vec<JoinHandle<Expected>>,
}

const SHARED: usize = 8;

impl Load {
    fn start(sys: &System, clients: usize, keys: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Mutex::new(HashMap::new()));
        let threads = (0..clients)
            .map(|t| {
                let addr = sys.dps[t % sys.dps.len()].addr;
                let (stop, ops, errors, shared) =
                    (stop.clone(), ops.clone(), errors.clone(), shared.clone());
                std::thread::spawn(move || {
                    let mut con = redis::Client::open(format!("redis://{addr}"))
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut e = Expected::default();
                    let mine: Vec<usize> = (t..keys).step_by(clients).collect();
                    let mut n = 0usize;
                    let fail = |what: String| errors.lock().unwrap().push(what);
                    while !stop.load(Ordering::Relaxed) {
                        let i = mine[(n * 7919) % mine.len()];
                        let j = mine[(n * 104_729 + 13) % mine.len()];
                        n += 1;
                        let v = n as i64;
                        match n % 8 {
                            0 => match con.incr::<_, _, i64>(format!("ctr:{i}"), 1) {
                                Ok(got) => {
                                    let want = e.ctr.entry(i).or_insert(0);
                                    *want += 1;
                                    assert_eq!(got, *want, "ctr:{i}: lost or doubled");
                                }
                                Err(err) => fail(format!("INCR ctr:{i}: {err}")),
                            },
                            1 => match con.append::<_, _, i64>(format!("str:{i}"), "x") {
                                Ok(got) => {
                                    let want = e.str_len.entry(i).or_insert(0);
                                    *want += 1;
                                    assert_eq!(got, *want, "str:{i}: lost or doubled");
                                }
                                Err(err) => fail(format!("APPEND str:{i}: {err}")),
                            },
                            2 => match con.lpush::<_, _, i64>(format!("list:{i}"), v) {
                                Ok(got) => {
                                    let want = e.list_len.entry(i).or_insert(1);
                                    *want += 1;
                                    assert_eq!(got, *want, "list:{i}: lost or doubled");
                                }
                                Err(err) => fail(format!("LPUSH list:{i}: {err}")),
                            },
                            3 => match con.set::<_, _, ()>(format!("kv:{i}"), v) {
                                Ok(()) => {
                                    e.kv.insert(i, v);
                                }
                                Err(err) => fail(format!("SET kv:{i}: {err}")),
                            },
                            4 => {
                                // Across groups, most likely.
                                let r: redis::RedisResult<()> = redis::cmd("MSET")
                                    .arg(format!("kv:{i}"))
                                    .arg(v)
                                    .arg(format!("kv:{j}"))
                                    .arg(v + 1)
                                    .query(&mut con);
                                match r {
                                    Ok(()) => {
                                        e.kv.insert(i, v);
                                        e.kv.insert(j, v + 1);
                                    }
                                    Err(err) => fail(format!("MSET kv:{i} kv:{j}: {err}")),
                                }
                            }
                            5 => {
                                let r: redis::RedisResult<Vec<i64>> = redis::cmd("MGET")
                                    .arg(format!("kv:{i}"))
                                    .arg(format!("kv:{j}"))
                                    .query(&mut con);
                                match r {
                                    Ok(got) => assert_eq!(
                                        got,
                                        vec![
                                            e.kv.get(&i).copied().unwrap_or(0),
                                            e.kv.get(&j).copied().unwrap_or(0)
                                        ],
                                        "MGET kv:{i} kv:{j}: a write is missing"
                                    ),
                                    Err(err) => fail(format!("MGET: {err}")),
                                }
                            }
                            6 => {
                                // One slot by hash tag.
                                let r: redis::RedisResult<()> = redis::cmd("MSET")
                                    .arg(format!("{{tag:{i}}}:a"))
                                    .arg(v)
                                    .arg(format!("{{tag:{i}}}:b"))
                                    .arg(v)
                                    .query(&mut con);
                                match r {
                                    Ok(()) => {
                                        e.tag.insert(i, v);
                                    }
                                    Err(err) => fail(format!("MSET {{tag:{i}}}: {err}")),
                                }
                            }
                            _ => {
                                let k = format!("shared:{}", n % SHARED);
                                match con.incr::<_, _, i64>(&k, 1) {
                                    Ok(_) => *shared.lock().unwrap().entry(k).or_insert(0) += 1,
                                    Err(err) => fail(format!("INCR {k}: {err}")),
                                }
                            }
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    e
                })
            })
            .collect();
        Load {
            stop,
            ops,
            errors,
            shared,
            threads,
        }
    }

    fn wait_ops(&self, more: u64) {
        let start = self.ops.load(Ordering::Relaxed);
        wait_for("the load to make progress", Duration::from_secs(30), || {
            (self.ops.load(Ordering::Relaxed) >= start + more).then_some(())
        });
    }

    /// Stops the clients and checks every key they own through `dp`;
    /// returns the client errors.
    fn finish(self, dp: &DataPlane) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let all: Vec<Expected> = self
            .threads
            .into_iter()
            .map(|t| t.join().expect("a checking client found a wrong reply"))
            .collect();
        let errors = self.errors.lock().unwrap().clone();
        let exact = errors.is_empty();
        let mut con = dp.conn();
        for e in &all {
            for (i, &want) in &e.ctr {
                let got: i64 = con.get(format!("ctr:{i}")).unwrap();
                assert!(got == want || !exact, "ctr:{i} is {got}, want {want}");
            }
            for (i, &want) in &e.str_len {
                let got: i64 = con.strlen(format!("str:{i}")).unwrap();
                assert!(
                    got == want || !exact,
                    "str:{i} has {got} bytes, want {want}"
                );
            }
            for (i, &want) in &e.list_len {
                let got: i64 = con.llen(format!("list:{i}")).unwrap();
                assert!(got == want || !exact, "list:{i} has {got}, want {want}");
            }
            for (i, &want) in &e.kv {
                let got: i64 = con.get(format!("kv:{i}")).unwrap();
                assert!(got == want || !exact, "kv:{i} is {got}, want {want}");
            }
            for (i, &want) in &e.tag {
                let got: Vec<i64> = con
                    .mget(&[format!("{{tag:{i}}}:a"), format!("{{tag:{i}}}:b")])
                    .unwrap();
                assert!(got == vec![want, want] || !exact, "{{tag:{i}}}: {got:?}");
            }
        }
        for (k, &want) in self.shared.lock().unwrap().iter() {
            let got: i64 = con.get(k).unwrap();
            assert!(
                got == want || !exact,
                "{k} is {got}, want {want}: lost or doubled"
            );
        }
        (self.ops.load(Ordering::Relaxed), errors)
    }
}

fn moved_keys(sys: &System, id: u64) -> u64 {
    sys.migration(id)["progress"]["keys_moved"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_rebalance_moving_half_the_slots_under_a_checking_load_loses_nothing() {
    let sys = System::start("rebalance", 2, 2);
    const KEYS: usize = 10_000 / 6 + 1;
    preload(&sys.dps[0], KEYS);
    let before = sys.assert_placed();
    let load = Load::start(&sys, 4, KEYS);
    load.wait_ops(500);
    let out = ctl_ok(&sys.ctld, &["rebalance", "m", "--wait", "--rate", "5000"]);
    assert!(out.contains("finished"), "{out}");
    load.wait_ops(500);
    let (ops, errors) = load.finish(&sys.dps[1]);
    eprintln!("checking load: {ops} requests, {} errors", errors.len());
    assert!(
        errors.is_empty(),
        "client errors during the move: {errors:?}"
    );
    // Half the slots moved: every group owns a quarter now.
    let cluster = sys.cluster();
    let mut owned: HashMap<String, u64> = HashMap::new();
    for r in cluster["slots"].as_array().unwrap() {
        *owned
            .entry(r["group"].as_str().unwrap().into())
            .or_default() += r["last"].as_u64().unwrap() - r["first"].as_u64().unwrap() + 1;
    }
    assert_eq!(owned.values().copied().collect::<Vec<_>>(), vec![4096; 4]);
    let after = sys.assert_placed();
    assert!(after >= before, "{after} keys after, {before} before");
    for m in sys.ctld.ctl_json(&["migrations", "m"]).as_array().unwrap() {
        assert_eq!(m["state"]["phase"], "done");
        assert!(m["progress"]["keys_moved"].as_u64().unwrap() > 0, "{m}");
    }
    // Both data planes route by the final table.
    let version = cluster["version"].as_u64().unwrap();
    for d in &sys.dps {
        sys.ctld.wait_acked(&d.id, version);
    }
}

#[test]
fn ctld_killed_mid_move_resumes_and_completes() {
    let mut sys = System::start("ctld-kill", 2, 0);
    preload(&sys.dps[0], 3000);
    let before = sys.assert_placed();
    let load = Load::start(&sys, 2, 3000);
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", "0-8191", "--to", "g2", "--rate", "3000",
        ],
    );
    wait_for("keys to move", Duration::from_secs(30), || {
        (moved_keys(&sys, 1) > 1000).then_some(())
    });
    sys.ctld.proc.kill();
    load.wait_ops(200);
    let (api, control) = (sys.ctld.api.to_string(), sys.ctld.control.to_string());
    sys.ctld = Ctld::start_on(sys.dir.path(), "30s", &api, &control);
    let resumed = moved_keys(&sys, 1);
    assert!(resumed > 1000, "the progress was kept: {resumed}");
    sys.wait_state(1, "done");
    let (_, errors) = load.finish(&sys.dps[0]);
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert_eq!(sys.assert_placed(), before);
    assert_eq!(sys.server("g1").conn().scan::<String>().unwrap().count(), 0);
}

#[test]
fn a_data_plane_restarted_mid_move_serves_the_moving_slots() {
    let mut sys = System::start("dp-restart", 2, 0);
    preload(&sys.dps[0], 2000);
    let before = sys.assert_placed();
    // Paused: keys move only when commands name them.
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", "0-8191", "--to", "g2", "--paused",
        ],
    );
    let m = sys.wait_state(1, "moving");
    let version = m["state"]["version"].as_u64().unwrap();
    sys.ctld.wait_acked("dp2", version);
    let state = sys.dir.path().join("dp2");
    sys.dps[1].proc.kill();
    sys.dps[1] = DataPlane::start(sys.ctld.control, "m", "dp2", &state);
    sys.dps[1].wait_health(200, Duration::from_secs(10));
    assert_eq!(
        sys.dps[1].table_version(),
        version,
        "restored, still moving"
    );
    let mut con = sys.dps[1].conn();
    for i in 0..2000 {
        let n: i64 = con.incr(format!("ctr:{i}"), 1).unwrap();
        assert_eq!(n, 1, "ctr:{i}");
    }
    // Every counter in the moving slots was moved on demand.
    let cluster = sys.cluster();
    let on_g1 = (0..2000)
        .filter(|i| owner_of(&cluster, &format!("ctr:{i}")) == "g1")
        .count();
    assert!(on_g1 > 0);
    let mut g1 = sys.server("g1").conn();
    for i in 0..2000 {
        let e: bool = g1.exists(format!("ctr:{i}")).unwrap();
        assert!(!e, "ctr:{i} still on the source");
    }
    ctl_ok(&sys.ctld, &["migration", "resume", "m", "1", "--wait"]);
    assert_eq!(sys.assert_placed(), before);
    let mut con = sys.dps[0].conn();
    for i in 0..2000 {
        let n: i64 = con.get(format!("ctr:{i}")).unwrap();
        assert_eq!(n, 1, "ctr:{i}");
    }
}

#[test]
fn cancel_mid_move_moves_the_keys_back() {
    let sys = System::start("cancel", 2, 0);
    preload(&sys.dps[0], 3000);
    let before = sys.placement();
    let load = Load::start(&sys, 2, 3000);
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", "0-8191", "--to", "g2", "--rate", "3000",
        ],
    );
    wait_for("keys to move", Duration::from_secs(30), || {
        (moved_keys(&sys, 1) > 500).then_some(())
    });
    let out = ctl_ok(&sys.ctld, &["migration", "cancel", "m", "1", "--wait"]);
    assert!(out.contains("g2") && out.contains("g1"), "{out}");
    let m = sys.migration(1);
    assert_eq!(m["state"]["phase"], "cancelled");
    assert_eq!(
        (m["from"].as_str(), m["to"].as_str()),
        (Some("g2"), Some("g1"))
    );
    let (_, errors) = load.finish(&sys.dps[1]);
    assert!(errors.is_empty(), "client errors: {errors:?}");
    sys.assert_placed();
    // Back home: every key where it was before the move.
    let after = sys.placement();
    assert_eq!(after.len(), before.len());
    for (k, g) in &before {
        assert_eq!(&after[k], g, "{k}");
    }
    let cluster = sys.cluster();
    assert_eq!(cluster["slots"][0]["group"], "g1");
    assert_eq!(cluster["slots"][0]["last"], 8191);
}

#[test]
fn drain_then_shrink() {
    let sys = System::start("drain", 3, 0);
    preload(&sys.dps[0], 1500);
    let before = sys.assert_placed();
    let (ok, _, err) = sys.ctld.ctl(&["cluster", "shrink", "m", "--group", "g3"]);
    assert!(!ok && err.contains("still owns slots"), "{err}");
    let out = ctl_ok(&sys.ctld, &["drain", "m", "--group", "g3", "--wait"]);
    assert!(out.contains("finished"), "{out}");
    assert_eq!(sys.server("g3").conn().scan::<String>().unwrap().count(), 0);
    ctl_ok(&sys.ctld, &["cluster", "shrink", "m", "--group", "g3"]);
    let cluster = sys.cluster();
    assert_eq!(cluster["groups"].as_array().unwrap().len(), 2);
    assert_eq!(sys.assert_placed(), before);
    let (ok, _, err) = sys.ctld.ctl(&["drain", "m", "--group", "g3"]);
    assert!(!ok && err.contains("no group"), "{err}");
    let (ok, out, _) = sys.ctld.ctl(&["rebalance", "m"]);
    assert!(ok && out.contains("balanced"), "{out}");
}

#[test]
fn a_big_key_is_reported_and_moved_with_a_longer_timeout() {
    let sys = System::start("bigkey", 2, 0);
    let cluster = sys.cluster();
    let big = (0..)
        .map(|i| format!("big:{i}"))
        .find(|k| owner_of(&cluster, k) == "g1")
        .unwrap();
    let mut g1 = sys.server("g1").conn();
    // A hash of 200k fields: its RESTORE takes far longer than 1 ms.
    for chunk in 0..20 {
        let fields: Vec<(String, String)> = (0..10_000)
            .map(|f| (format!("f{}", chunk * 10_000 + f), "v".repeat(20)))
            .collect();
        let () = g1.hset_multiple(&big, &fields).unwrap();
    }
    let out = ctl_ok(
        &sys.ctld,
        &[
            "migrate",
            "m",
            "--slots",
            "0-8191",
            "--to",
            "g2",
            "--timeout",
            "1ms",
            "--max-timeout",
            "60s",
            "--wait",
        ],
    );
    assert!(out.contains("finished"), "{out}");
    let m = sys.migration(1);
    let reported = m["progress"]["big_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == big.as_str())
        .unwrap_or_else(|| panic!("{big} not reported: {m}"))
        .clone();
    assert!(
        reported["bytes"].as_u64().unwrap() > 1_000_000,
        "{reported}"
    );
    // The longest timeout that was too short is reported. Then either a
    // longer one moved the key, or that timed-out MIGRATE had restored it
    // after all: the retry met the copy (BUSYKEY) and deleted the source's.
    let short = reported["timed_out_ms"].as_u64().unwrap();
    let with = reported["moved_with_timeout_ms"].as_u64().expect("moved");
    assert!(short >= 1 && with >= short, "{reported}");
    if with == short {
        assert_eq!(m["progress"]["deleted_on_source"], 1, "{m}");
    } else {
        assert!(reported["move_ms"].as_u64().is_some(), "{reported}");
    }
    let n: u64 = sys.server("g2").conn().hlen(&big).unwrap();
    assert_eq!(n, 200_000);
    let e: bool = g1.exists(&big).unwrap();
    assert!(!e);
    let (_, detail, _) = sys.ctld.ctl(&["migrations", "m", "1"]);
    assert!(
        detail.contains(&format!("big key      {big:?}")),
        "{detail}"
    );
}

#[test]
fn a_copy_on_both_sides_is_deleted_on_the_source() {
    let sys = System::start("busykey", 2, 0);
    let cluster = sys.cluster();
    let keys: Vec<String> = (0..)
        .map(|i| format!("copy:{i}"))
        .filter(|k| owner_of(&cluster, k) == "g1")
        .take(2)
        .collect();
    let (g1, g2) = (sys.server("g1"), sys.server("g2"));
    let mut c1 = g1.conn();
    for k in &keys {
        let () = c1.set(k, format!("value of {k}")).unwrap();
        // What a MIGRATE that timed out after the target restored the key
        // leaves: the same value on both sides.
        let _: redis::Value = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(g2.port)
            .arg(k)
            .arg(0)
            .arg(5000)
            .arg("COPY")
            .query(&mut c1)
            .unwrap();
    }
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", "0-8191", "--to", "g2", "--paused",
        ],
    );
    let m = sys.wait_state(1, "moving");
    let version = m["state"]["version"].as_u64().unwrap();
    sys.ctld.wait_acked("dp1", version);
    // A data plane meets the first copy.
    let mut con = sys.dps[0].conn();
    let n: usize = con.append(&keys[0], "!").unwrap();
    assert_eq!(n, format!("value of {}!", keys[0]).len());
    let v: String = con.get(&keys[0]).unwrap();
    assert_eq!(v, format!("value of {}!", keys[0]));
    let e: bool = c1.exists(&keys[0]).unwrap();
    assert!(!e, "deleted on the source");
    // The sweep meets the second.
    ctl_ok(&sys.ctld, &["migration", "resume", "m", "1", "--wait"]);
    let m = sys.migration(1);
    assert_eq!(m["progress"]["deleted_on_source"], 1, "{m}");
    let v: String = sys.dps[1].conn().get(&keys[1]).unwrap();
    assert_eq!(v, format!("value of {}", keys[1]));
    sys.assert_placed();
}

#[test]
fn an_unreachable_target_or_source_is_a_clear_error_and_loses_nothing() {
    let mut sys = System::start("unreachable", 2, 0);
    let cluster = sys.cluster();
    let k = (0..)
        .map(|i| format!("safe:{i}"))
        .find(|k| owner_of(&cluster, k) == "g1")
        .unwrap();
    let _: () = sys.dps[0].conn().set(&k, "kept").unwrap();
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", "0-8191", "--to", "g2", "--paused",
        ],
    );
    let m = sys.wait_state(1, "moving");
    sys.ctld
        .wait_acked("dp1", m["state"]["version"].as_u64().unwrap());
    let port = sys.server("g2").port;
    sys.redis[1].1.kill();
    let err = sys.dps[0].conn().append::<_, _, i64>(&k, "!").unwrap_err();
    assert_eq!(err.code(), Some("TRYAGAIN"), "{err}");
    assert!(err.to_string().contains("could not move"), "{err}");
    let v: String = sys.server("g1").conn().get(&k).unwrap();
    assert_eq!(v, "kept", "still on the source, unchanged");
    // The target comes back: the command works, the key moves.
    sys.redis[1].1 = Redis::start_on(port);
    let n: i64 = sys.dps[0].conn().append(&k, "!").unwrap();
    assert_eq!(n, 5);
    let v: String = sys.server("g2").conn().get(&k).unwrap();
    assert_eq!(v, "kept!");
    // The source goes away: a clear error naming it.
    let k2 = (0..)
        .map(|i| format!("other:{i}"))
        .find(|k| owner_of(&cluster, k) == "g1")
        .unwrap();
    sys.redis[0].1.kill();
    let err = sys.dps[0].conn().get::<_, String>(&k2).unwrap_err();
    assert_eq!(err.code(), Some("TRYAGAIN"), "{err}");
    assert!(err.to_string().contains("backend g1 unavailable"), "{err}");
}

#[test]
fn a_target_failover_mid_move_sends_the_rest_to_the_new_master() {
    let mut sys = System::start("failover", 2, 0);
    // g2 gets a replica, synced before anything moves: Redis waits 5 s by
    // default before a full sync (for more replicas to share it), and a
    // replica in a full sync is not one ctld promotes.
    let () = redis::cmd("CONFIG")
        .arg(&["SET", "repl-diskless-sync-delay", "0"][..])
        .query(&mut sys.server("g2").conn())
        .unwrap();
    let replica = Redis::replica_of(sys.server("g2"));
    ctl_ok(
        &sys.ctld,
        &["group", "m", "g2", "--add-replica", &replica.addr()],
    );
    wait_synced(&sys, sys.server("g2"), &replica);
    preload(&sys.dps[0], 1000);
    let before = sys.assert_placed();
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", "0-8191", "--to", "g2", "--rate", "500",
        ],
    );
    wait_for("keys to move", Duration::from_secs(30), || {
        (moved_keys(&sys, 1) > 200).then_some(())
    });
    // A switchover of g2 through ctld, which knows of the migration: it
    // holds the group, stops the sweep's moves to it, promotes the replica
    // once it has the old master's offset, then lets the sweep go on to the
    // new master. (Promoting by hand behind ctld's back raced the sweep,
    // which kept moving keys to the old master.)
    let out = ctl_ok(&sys.ctld, &["failover", "m", "--group", "g2", "--wait"]);
    assert!(out.contains("done"), "{out}");
    let moved_at_switch = moved_keys(&sys, 1);
    assert_eq!(
        sys.cluster()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "g2")
            .unwrap()["master"],
        replica.addr().as_str(),
        "g2's master is the former replica"
    );
    let m = sys.wait_state(1, "done");
    assert!(m["progress"]["failed"].is_null(), "{m}");
    assert!(
        moved_keys(&sys, 1) > moved_at_switch,
        "the sweep moved keys after the switch ({moved_at_switch} before it)"
    );
    // The replica is g2 now; the old master follows it.
    let old_g2 = std::mem::replace(&mut sys.redis[1].1, replica);
    assert_eq!(sys.assert_placed(), before);
    let mut con = sys.dps[1].conn();
    for i in 0..1000 {
        let v: i64 = con.get(format!("kv:{i}")).unwrap();
        assert_eq!(v, 0, "kv:{i}");
    }
    drop(old_g2);
}

/// Waits until `replica` follows `master` with its link up, no sync in
/// progress and the master's offset, and ctld's checks have seen it so.
fn wait_synced(sys: &System, master: &Redis, replica: &Redis) {
    let offset = master.wait_replica_synced(replica);
    wait_for(
        "ctld to see the replica synced",
        Duration::from_secs(60),
        || {
            let health = sys.cluster()["health"].clone();
            health
                .as_array()?
                .iter()
                .flat_map(|g| g["servers"].as_array().cloned().unwrap_or_default())
                .any(|s| {
                    s["address"] == replica.addr().as_str()
                        && s["health"] == "up"
                        && s["link_up"] == true
                        && s["offset"].as_u64() >= Some(offset)
                })
                .then_some(())
        },
    );
}

// ---------------------------------------------------------------------------
// Transactions and blocking commands on slots under migration (issue 12).

/// `n` hash tags whose slots `g1` owns (so they move when `g1`'s slots do),
/// each with `prefix`.
fn tags_on_g1(cluster: &Value, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{{{prefix}:{i}}}"))
        .filter(|t| owner_of(cluster, t) == "g1")
        .take(n)
        .collect()
}

/// A client through keyway with a read timeout, so a lost reply fails the
/// test instead of hanging it.
fn client(addr: std::net::SocketAddr) -> redis::Connection {
    let con = redis::Client::open(format!("redis://{addr}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    con
}

/// `MULTI; INCR counter; SET other v; EXEC`, one command at a time (or as
/// one pipeline): the counter's new value, or what went wrong.
fn incr_and_set(
    con: &mut redis::Connection,
    counter: &str,
    other: &str,
    v: i64,
    pipelined: bool,
) -> Result<i64, String> {
    use redis::Value as V;
    let queued = |r: redis::RedisResult<V>| match r {
        Ok(V::SimpleString(s)) if s == "QUEUED" => Ok(()),
        other => Err(format!("queueing: {other:?}")),
    };
    let exec = if pipelined {
        redis::pipe()
            .cmd("MULTI")
            .cmd("INCR")
            .arg(counter)
            .cmd("SET")
            .arg(other)
            .arg(v)
            .cmd("EXEC")
            .query::<Vec<V>>(con)
            .map_err(|e| format!("pipeline: {e}"))
            .and_then(|mut r| {
                if r.len() != 4 || r[0] != V::Okay {
                    return Err(format!("pipeline: {r:?}"));
                }
                queued(Ok(r[1].clone()))?;
                queued(Ok(r[2].clone()))?;
                Ok(r.pop().unwrap())
            })?
    } else {
        match redis::cmd("MULTI").query::<V>(con) {
            Ok(V::Okay) => {}
            other => return Err(format!("MULTI: {other:?}")),
        }
        queued(redis::cmd("INCR").arg(counter).query(con))?;
        queued(redis::cmd("SET").arg(other).arg(v).query(con))?;
        redis::cmd("EXEC")
            .query::<V>(con)
            .map_err(|e| format!("EXEC: {e}"))?
    };
    match exec {
        V::Array(r) if r.len() == 2 && r[1] == V::Okay => match r[0] {
            V::Int(n) => Ok(n),
            _ => Err(format!("EXEC: {r:?}")),
        },
        other => Err(format!("EXEC: {other:?}")),
    }
}

/// `WATCH k; GET k; MULTI; SET k v+1; EXEC`: whether `EXEC` ran (`false`:
/// it returned nil, a watched key changed), or what went wrong.
fn check_and_set(con: &mut redis::Connection, k: &str) -> Result<bool, String> {
    use redis::Value as V;
    match redis::cmd("WATCH").arg(k).query::<V>(con) {
        Ok(V::Okay) => {}
        other => return Err(format!("WATCH: {other:?}")),
    }
    let v: Option<i64> = redis::cmd("GET")
        .arg(k)
        .query(con)
        .map_err(|e| format!("GET: {e}"))?;
    match redis::cmd("MULTI").query::<V>(con) {
        Ok(V::Okay) => {}
        other => return Err(format!("MULTI: {other:?}")),
    }
    match redis::cmd("SET")
        .arg(k)
        .arg(v.unwrap_or(0) + 1)
        .query::<V>(con)
    {
        Ok(V::SimpleString(s)) if s == "QUEUED" => {}
        other => return Err(format!("SET: {other:?}")),
    }
    match redis::cmd("EXEC").query::<V>(con) {
        Ok(V::Nil) => Ok(false),
        Ok(V::Array(r)) if r == [V::Okay] => Ok(true),
        other => Err(format!("EXEC: {other:?}")),
    }
}

/// Blocked clients on every server of `sys`.
fn blocked_clients(sys: &System) -> u64 {
    sys.redis
        .iter()
        .map(|(_, r)| {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query(&mut r.conn())
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .map_or(0, |n| n.trim().parse().unwrap())
        })
        .sum()
}

/// A client blocks in `BLPOP q 0` through one data plane (the list does not
/// exist); another client pushes one element through the other data plane.
/// The first must get exactly that element, and the list must then be on no
/// server at all (the element was delivered once, and nowhere else).
fn blpop_woken_by_rpush(sys: &System, q: &str, elem: &str) {
    let blocked_before = blocked_clients(sys);
    let (addr, key) = (sys.dps[0].addr, q.to_string());
    let popper = std::thread::spawn(move || {
        let mut con = client(addr);
        redis::cmd("BLPOP")
            .arg(&key)
            .arg(0)
            .query::<redis::Value>(&mut con)
    });
    wait_for(
        &format!("BLPOP {q} to block at a server"),
        Duration::from_secs(20),
        || (blocked_clients(sys) > blocked_before).then_some(()),
    );
    let n: i64 = redis::cmd("RPUSH")
        .arg(q)
        .arg(elem)
        .query(&mut client(sys.dps[1].addr))
        .unwrap_or_else(|e| panic!("RPUSH {q}: {e}"));
    assert_eq!(n, 1, "RPUSH {q}: the list was empty");
    let got = popper
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("BLPOP {q}: {e}"));
    assert_eq!(
        got,
        redis::Value::Array(vec![
            redis::Value::BulkString(q.as_bytes().to_vec()),
            redis::Value::BulkString(elem.as_bytes().to_vec()),
        ]),
        "BLPOP {q}"
    );
    for (g, r) in &sys.redis {
        let e: bool = r.conn().exists(q).unwrap();
        assert!(!e, "{q} is on {g} after its only element was popped");
    }
}

#[test]
fn multi_and_blpop_on_a_slot_under_migration() {
    let sys = System::start("stateful", 2, 0);
    // Keys for the sweep to move key by key while the clients run.
    preload(&sys.dps[0], 1000);
    let cluster = sys.cluster();
    const WORKERS: usize = 4;
    const TAGS: usize = 40;
    let tx_tags: Vec<Vec<String>> = (0..WORKERS)
        .map(|w| tags_on_g1(&cluster, &format!("tx{w}"), TAGS))
        .collect();
    let shared = tags_on_g1(&cluster, "txshared", 1).remove(0);
    let cas = format!("{}n", tags_on_g1(&cluster, "cas", 1)[0]);
    let queues = tags_on_g1(&cluster, "q", 6);
    // The transactions' keys exist on the source before the move, so moving
    // them is part of running the transactions.
    {
        let mut con = sys.dps[0].conn();
        for t in tx_tags.iter().flatten().chain([&shared]) {
            let () = con.set(format!("{t}k"), 0).unwrap();
            let () = con.set(format!("{t}k2"), 0).unwrap();
        }
        let () = con.set(&cas, 0).unwrap();
    }
    // Paused: keys move only as commands name them, until the sweep is
    // resumed below; both data planes route by the moving table.
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", "0-8191", "--to", "g2", "--paused", "--rate", "1000",
            "--batch", "20",
        ],
    );
    let m = sys.wait_state(1, "moving");
    let version = m["state"]["version"].as_u64().unwrap();
    for d in &sys.dps {
        sys.ctld.wait_acked(&d.id, version);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let progress = Arc::new(AtomicU64::new(0));
    // (a) Transactions: each worker owns its tags and knows what each INCR
    // must answer; all of them also count on one shared tag.
    let tx_workers: Vec<JoinHandle<(BTreeMap<String, i64>, i64)>> = tx_tags
        .iter()
        .enumerate()
        .map(|(w, tags)| {
            let (tags, shared) = (tags.clone(), shared.clone());
            let addr = sys.dps[w % 2].addr;
            let (stop, errors, progress) = (stop.clone(), errors.clone(), progress.clone());
            std::thread::spawn(move || {
                let mut con = client(addr);
                let mut want: BTreeMap<String, i64> = BTreeMap::new();
                let mut shared_execs = 0;
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let t = if n % 5 == 0 {
                        &shared
                    } else {
                        &tags[n as usize % tags.len()]
                    };
                    let (k, k2) = (format!("{t}k"), format!("{t}k2"));
                    match incr_and_set(&mut con, &k, &k2, n, n % 3 == 0) {
                        Ok(got) if *t == shared => {
                            assert!(got > 0, "{k}: {got}");
                            shared_execs += 1;
                        }
                        Ok(got) => {
                            let c = want.entry(t.clone()).or_insert(0);
                            *c += 1;
                            assert_eq!(got, *c, "{k}: an EXEC lost or doubled");
                        }
                        Err(e) => {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("worker {w} on {t}: {e}"));
                            con = client(addr);
                        }
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                (want, shared_execs)
            })
        })
        .collect();
    // (c) Check-and-set from several clients, through both data planes, on
    // one counter.
    let cas_workers: Vec<JoinHandle<(u64, u64)>> = (0..4)
        .map(|w| {
            let addr = sys.dps[w % 2].addr;
            let (stop, errors, progress, cas) =
                (stop.clone(), errors.clone(), progress.clone(), cas.clone());
            std::thread::spawn(move || {
                let mut con = client(addr);
                let (mut done, mut aborted) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    match check_and_set(&mut con, &cas) {
                        Ok(true) => done += 1,
                        Ok(false) => aborted += 1,
                        Err(e) => {
                            errors.lock().unwrap().push(format!("CAS client {w}: {e}"));
                            con = client(addr);
                        }
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                (done, aborted)
            })
        })
        .collect();
    let wait_progress = |more: u64| {
        let start = progress.load(Ordering::Relaxed);
        wait_for(
            "the clients to make progress",
            Duration::from_secs(30),
            || (progress.load(Ordering::Relaxed) >= start + more).then_some(()),
        );
    };
    wait_progress(300);
    // (b) While the slots move on demand only.
    blpop_woken_by_rpush(&sys, &format!("{}list", queues[0]), "one");
    blpop_woken_by_rpush(&sys, &format!("{}list", queues[1]), "two");
    // The sweep is paused: the transactions moved their keys themselves
    // (whether on both servers is checked once the clients stop: a key
    // moving now may be seen on each).
    let mut g2 = sys.server("g2").conn();
    let moved = tx_tags
        .iter()
        .flatten()
        .filter(|t| g2.exists::<_, bool>(format!("{t}k")).unwrap())
        .count();
    assert!(moved > 0, "no transaction moved its keys");
    // Now the sweep moves the rest, key by key, under the same load.
    ctl_ok(&sys.ctld, &["migration", "resume", "m", "1"]);
    wait_for("the sweep to move keys", Duration::from_secs(30), || {
        (moved_keys(&sys, 1) > 200).then_some(())
    });
    let mut q = 2;
    while sys.migration(1)["state"]["phase"] == "moving" && q < queues.len() {
        blpop_woken_by_rpush(&sys, &format!("{}list", queues[q]), &format!("e{q}"));
        q += 1;
    }
    sys.wait_state(1, "done");
    wait_progress(300);
    stop.store(true, Ordering::Relaxed);
    let tx: Vec<(BTreeMap<String, i64>, i64)> = tx_workers
        .into_iter()
        .map(|h| h.join().expect("a transaction got a wrong reply"))
        .collect();
    let cas_counts: Vec<(u64, u64)> = cas_workers
        .into_iter()
        .map(|h| h.join().expect("a check-and-set client panicked"))
        .collect();
    let errors = errors.lock().unwrap().clone();
    let (execs, shared_execs) = (
        tx.iter().map(|(w, _)| w.values().sum::<i64>()).sum::<i64>(),
        tx.iter().map(|(_, s)| s).sum::<i64>(),
    );
    let (cas_done, cas_aborted) = cas_counts
        .iter()
        .fold((0, 0), |(d, a), &(x, y)| (d + x, a + y));
    eprintln!(
        "{execs} + {shared_execs} transactions, {cas_done} check-and-sets \
         ({cas_aborted} aborted), {} blocking pops, {} client errors",
        q,
        errors.len()
    );
    assert!(errors.is_empty(), "errors during the move: {errors:?}");
    assert!(cas_done > 0 && execs > 0 && shared_execs > 0);

    // Every value is right on the server that owns its slot at the end,
    // and no key is on two servers.
    sys.assert_placed();
    let cluster = sys.cluster();
    let on_owner = |k: &str| -> Option<i64> {
        let owner = owner_of(&cluster, k);
        assert_eq!(owner, "g2", "{k} moved");
        sys.server(&owner).conn().get(k).unwrap()
    };
    for (want, _) in &tx {
        for (t, &n) in want {
            assert_eq!(on_owner(&format!("{t}k")), Some(n), "{t}k");
        }
    }
    assert_eq!(
        on_owner(&format!("{shared}k")),
        Some(shared_execs),
        "{shared}k"
    );
    assert_eq!(
        on_owner(&cas),
        Some(cas_done as i64),
        "{cas}: one increment per EXEC that did not return nil"
    );
    let on_g1: usize = sys.server("g1").conn().scan::<String>().unwrap().count();
    assert_eq!(on_g1, 0, "everything moved off g1");
}

/// A BLPOP blocked at the source when its slot starts to migrate: the data
/// plane must still ack the new tables (else the migration never leaves
/// `blocking` and pushes to the slot are held, then refused), and the push,
/// which goes to the target, must wake it (keyway unblocks it at the source
/// and sends it again to the target). Fails on `2a08bc8`, which did neither.
#[test]
fn a_blpop_blocked_before_its_slot_migrates_is_woken_by_a_push() {
    let sys = System::start("blpop-before", 2, 0);
    let cluster = sys.cluster();
    let q = format!("{}list", tags_on_g1(&cluster, "q", 1)[0]);
    let addr = sys.dps[0].addr;
    let key = q.clone();
    let popper = std::thread::spawn(move || {
        let mut con = client(addr);
        redis::cmd("BLPOP")
            .arg(&key)
            .arg(0)
            .query::<redis::Value>(&mut con)
    });
    wait_for("BLPOP to block at g1", Duration::from_secs(20), || {
        (blocked_clients(&sys) == 1).then_some(())
    });
    // Paused: once moving, the slot stays so (the list is on no server)
    // until the push is through.
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", "0-8191", "--to", "g2", "--paused",
        ],
    );
    let version = wait_for(
        "the slots to be moving (both data planes acked)",
        Duration::from_secs(20),
        || {
            let m = sys.migration(1);
            (m["state"]["phase"] == "moving").then(|| m["state"]["version"].as_u64().unwrap())
        },
    );
    for d in &sys.dps {
        sys.ctld.wait_acked(&d.id, version);
    }
    // Through the other data plane: the list is on no server, so the push
    // goes to the target.
    let pushed = redis::cmd("RPUSH")
        .arg(&q)
        .arg("e")
        .query::<i64>(&mut client(sys.dps[1].addr));
    assert_eq!(pushed, Ok(1), "RPUSH {q} through keyway");
    let got = popper
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("BLPOP {q}: {e}"));
    assert_eq!(
        got,
        redis::Value::Array(vec![
            redis::Value::BulkString(q.as_bytes().to_vec()),
            redis::Value::BulkString(b"e".to_vec()),
        ])
    );
    ctl_ok(&sys.ctld, &["migration", "resume", "m", "1", "--wait"]);
    for (g, r) in &sys.redis {
        let e: bool = r.conn().exists(&q).unwrap();
        assert!(!e, "{q} is on {g} after its only element was popped");
    }
}

/// A BLPOP on a slot that does not move must not hold back its core's ack
/// of a new table (on `2a08bc8` it did: no migration left `blocking` while a
/// client waited in `BLPOP … 0`).
#[test]
fn a_blpop_on_a_slot_that_does_not_move_does_not_stall_a_migration() {
    let sys = System::start("blpop-elsewhere", 2, 0);
    let cluster = sys.cluster();
    let q = (0..)
        .map(|i| format!("{{elsewhere:{i}}}list"))
        .find(|k| owner_of(&cluster, k) == "g2")
        .unwrap();
    let addr = sys.dps[0].addr;
    let key = q.clone();
    let popper = std::thread::spawn(move || {
        let mut con = client(addr);
        redis::cmd("BLPOP")
            .arg(&key)
            .arg(0)
            .query::<redis::Value>(&mut con)
    });
    wait_for("BLPOP to block at g2", Duration::from_secs(20), || {
        (blocked_clients(&sys) == 1).then_some(())
    });
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", "0-8191", "--to", "g2", "--paused",
        ],
    );
    let state = wait_for(
        "the migration to leave `blocking` (both data planes acked)",
        Duration::from_secs(20),
        || {
            let m = sys.migration(1);
            (m["state"]["phase"] == "moving").then_some(m)
        },
    );
    assert_eq!(state["state"]["phase"], "moving");
    let n: i64 = redis::cmd("RPUSH")
        .arg(&q)
        .arg("e")
        .query(&mut client(sys.dps[1].addr))
        .unwrap();
    assert_eq!(n, 1);
    let got = popper.join().unwrap().unwrap();
    assert_eq!(
        got,
        redis::Value::Array(vec![
            redis::Value::BulkString(q.as_bytes().to_vec()),
            redis::Value::BulkString(b"e".to_vec()),
        ])
    );
}

// ---------------------------------------------------------------------------
// The whole keyspace (issue 13).

/// One `SCAN` step through a data plane: the next cursor and the keys.
fn scan_step(con: &mut redis::Connection, cursor: u64, count: usize) -> (u64, Vec<String>) {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query(con)
        .expect("SCAN through keyway")
}

/// A `SCAN` through keyway while a migration moves keys from the last group
/// to the first, keys arriving on the destination between every two steps,
/// the migration running from before the scan's first step to after its
/// last: every key present before (and throughout: nothing writes) is
/// returned at least once. The source (g3, the highest index) must be
/// scanned before the destination (g1, the lowest): in plain index order g1
/// would be scanned first, and the keys moved to it while g2 and g3 are
/// scanned would be missed.
#[test]
fn a_scan_while_a_migration_runs_misses_no_key() {
    let sys = System::start("scan", 3, 0);
    preload(&sys.dps[0], 500);
    let before: Vec<String> = sys.placement().into_keys().collect();
    let cluster = sys.cluster();
    let g3: Vec<(u64, u64)> = cluster["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["group"] == "g3")
        .map(|r| (r["first"].as_u64().unwrap(), r["last"].as_u64().unwrap()))
        .collect();
    assert_eq!(g3.len(), 1, "g3 owns one range: {cluster}");
    let slots = format!("{}-{}", g3[0].0, g3[0].1);
    let dbsize = |g: &str| -> u64 {
        redis::cmd("DBSIZE")
            .query(&mut sys.server(g).conn())
            .unwrap()
    };
    let on_g3 = dbsize("g3");
    assert!(on_g3 > 500, "{on_g3} keys on g3");
    // Throttled so that it lasts well beyond the scan (about 20 s).
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", &slots, "--to", "g1", "--rate", "50", "--batch", "5",
        ],
    );
    let m = sys.wait_state(1, "moving");
    let version = m["state"]["version"].as_u64().unwrap();
    for d in &sys.dps {
        sys.ctld.wait_acked(&d.id, version);
    }
    let mut con = client(sys.dps[1].addr);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let (mut cursor, mut steps) = (0u64, 0);
    let start_g1 = dbsize("g1");
    loop {
        // Keys reach the destination between every two steps.
        let on_g1 = dbsize("g1");
        wait_for("keys to reach g1", Duration::from_secs(30), || {
            (dbsize("g1") > on_g1).then_some(())
        });
        let (next, keys) = scan_step(&mut con, cursor, 100);
        for k in keys {
            *seen.entry(k).or_default() += 1;
        }
        steps += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(steps < 10_000, "the scan does not end");
    }
    let moved = dbsize("g1") - start_g1;
    assert!(
        dbsize("g3") > 0 && sys.migration(1)["state"]["phase"] == "moving",
        "the migration ran throughout the scan"
    );
    let missed: Vec<&String> = before.iter().filter(|k| !seen.contains_key(*k)).collect();
    let twice = seen.values().filter(|&&n| n > 1).count();
    eprintln!(
        "{} keys, {steps} SCAN steps, {moved} keys moved meanwhile, {twice} seen twice",
        before.len()
    );
    assert!(
        missed.is_empty(),
        "{} keys missed: {:?}",
        missed.len(),
        &missed[..missed.len().min(10)]
    );
}

/// A migration that starts (and may end) while a `SCAN` is under way: the
/// migrations changed, so keyway starts the scan again from the first group
/// of the new order at the next step (`INFO keyway`: `scans_restarted`),
/// and every key present throughout is still returned. Without the restart
/// the new order (g2, g3, g1) would end the scan right after g1, where the
/// first steps were.
#[test]
fn a_migration_starting_mid_scan_restarts_it_and_misses_no_key() {
    let sys = System::start("scanstart", 3, 0);
    preload(&sys.dps[0], 300);
    let before: Vec<String> = sys.placement().into_keys().collect();
    let cluster = sys.cluster();
    let g3 = cluster["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "g3")
        .map(|r| format!("{}-{}", r["first"], r["last"]))
        .unwrap();
    let mut con = client(sys.dps[0].addr);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut cursor = 0u64;
    for _ in 0..3 {
        let (next, keys) = scan_step(&mut con, cursor, 50);
        for k in keys {
            *seen.entry(k).or_default() += 1;
        }
        cursor = next;
    }
    assert_ne!(cursor, 0);
    assert_eq!((cursor >> 40) & 0x7fff, 1, "still on the first group");
    ctl_ok(
        &sys.ctld,
        &[
            "migrate", "m", "--slots", &g3, "--to", "g1", "--rate", "2000",
        ],
    );
    let m = sys.wait_state(1, "moving");
    let version = m["state"]["version"].as_u64().unwrap();
    for d in &sys.dps {
        sys.ctld.wait_acked(&d.id, version);
    }
    let mut steps = 0;
    while cursor != 0 {
        let (next, keys) = scan_step(&mut con, cursor, 50);
        for k in keys {
            *seen.entry(k).or_default() += 1;
        }
        cursor = next;
        steps += 1;
        assert!(steps < 10_000, "the scan does not end");
    }
    let missed: Vec<&String> = before.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missed.is_empty(),
        "{} keys missed: {:?}",
        missed.len(),
        &missed[..missed.len().min(10)]
    );
    let info: String = redis::cmd("INFO").arg("keyway").query(&mut con).unwrap();
    let restarted: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("scans_restarted:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no scans_restarted in {info}"));
    assert!(restarted >= 1, "{info}");
}
