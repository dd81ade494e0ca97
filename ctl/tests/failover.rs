//! High availability on real processes: keyway-ctld, two keyway data planes,
//! and two Redis groups with a replica each. A master killed under a
//! checking write load is failed over by ctld alone, the old master comes
//! back as a replica, and the acknowledged writes lost (async replication)
//! are counted; a switchover under load loses nothing and errs nothing; a
//! ctld that cannot check a master the data planes still reach does not fail
//! it over; a group without a usable replica stays failed and says so.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{owner_of, wait_for, Ctld, DataPlane, Redis, TempDir};
use serde_json::Value;

struct System {
    _dir: TempDir,
    ctld: Ctld,
    dps: Vec<DataPlane>,
    /// Servers by address.
    servers: HashMap<String, Redis>,
}

impl System {
    /// Groups g1 (master + replica in zone b) and g2 (master, and a replica
    /// unless `lone_g2`), checks every 200 ms, masters failed after
    /// `down_after`.
    fn start(tag: &str, down_after: &str, lone_g2: bool) -> System {
        let dir = TempDir::new(tag);
        let ctld = Ctld::start(dir.path(), "10s");
        // Replicas sync at once (Redis waits 5 s by default, for more
        // replicas to share one transfer).
        let quick = |r: &Redis| {
            let () = redis::cmd("CONFIG")
                .arg(&["SET", "repl-diskless-sync-delay", "0"][..])
                .query(&mut r.conn())
                .unwrap();
        };
        let m1 = Redis::start();
        quick(&m1);
        let r1 = Redis::replica_of(&m1);
        let m2 = Redis::start();
        quick(&m2);
        common::checks::create_cluster(
            &ctld,
            "c",
            &[("g1", m1.addr()), ("g2", m2.addr())],
            "10s",
            &[],
        );
        ctl_ok(
            &ctld,
            &[
                "group",
                "c",
                "g1",
                "--zone",
                "a",
                "--add-replica",
                &format!("{}@b", r1.addr()),
            ],
        );
        let mut servers = HashMap::new();
        if !lone_g2 {
            let r2 = Redis::replica_of(&m2);
            ctl_ok(&ctld, &["group", "c", "g2", "--add-replica", &r2.addr()]);
            servers.insert(r2.addr(), r2);
        }
        ctl_ok(
            &ctld,
            &[
                "cluster",
                "set",
                "c",
                "--check-interval",
                "200ms",
                "--down-after",
                down_after,
            ],
        );
        for r in [m1, r1, m2] {
            servers.insert(r.addr(), r);
        }
        let dps: Vec<DataPlane> = (0..2)
            .map(|i| {
                let id = format!("dp{i}");
                DataPlane::start(ctld.control, "c", &id, &dir.path().join(&id))
            })
            .collect();
        let v = version(&ctld);
        for d in &dps {
            ctld.wait_acked(&d.id, v);
        }
        let sys = System {
            _dir: dir,
            ctld,
            dps,
            servers,
        };
        sys.wait_replicated("g1");
        if !lone_g2 {
            sys.wait_replicated("g2");
        }
        sys
    }

    fn show(&self) -> Value {
        self.ctld.ctl_json(&["cluster", "show", "c"])
    }

    fn group(&self, name: &str) -> Value {
        self.show()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()
            .clone()
    }

    fn master(&self, group: &str) -> String {
        self.group(group)["master"].as_str().unwrap().to_string()
    }

    fn health(&self, group: &str) -> Value {
        self.show()["health"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == group)
            .unwrap()
            .clone()
    }

    fn role(&self, addr: &str) -> String {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut self.servers[addr].conn())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("role:"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Waits until every server listed as a replica of `group` says it
    /// follows the group's master with its link up.
    fn wait_replicated(&self, group: &str) {
        wait_for(
            "replicas to follow their master",
            Duration::from_secs(30),
            || {
                let g = self.group(group);
                let master = g["master"].as_str().unwrap();
                g["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| {
                        let info: String = redis::cmd("INFO")
                            .arg("replication")
                            .query(&mut self.servers[r["address"].as_str().unwrap()].conn())
                            .unwrap();
                        let port = master.rsplit(':').next().unwrap();
                        info.contains(&format!("master_port:{port}"))
                            && info.contains("master_link_status:up")
                    })
                    .then_some(())
            },
        );
    }
}

fn ctl_ok(ctld: &Ctld, args: &[&str]) -> String {
    let (ok, out, err) = ctld.ctl(args);
    assert!(ok, "keywayctl {args:?}: {err}");
    out
}

fn version(ctld: &Ctld) -> u64 {
    common::checks::version(ctld, "c")
}

/// What the load saw.
#[derive(Debug, Default)]
struct Seen {
    /// Acknowledged value of every counter.
    acked: HashMap<String, i64>,
    /// Replies lower than acknowledged before: writes lost.
    lost: i64,
    /// Errors, with when they happened.
    errors: Vec<(Instant, String)>,
    /// The slowest request.
    slowest: Duration,
}

/// INCR clients through both data planes, each on its own counters; every
/// reply is checked against what the client had acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Seen>>,
    /// Per group, the first acknowledged write after its latest error.
    recovered: Arc<Mutex<HashMap<String, Option<Instant>>>>,
}

impl Load {
    fn start(sys: &System, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let recovered = Arc::new(Mutex::new(HashMap::new()));
        let cluster = sys.show();
        let threads = (0..clients)
            .map(|t| {
                let addr = sys.dps[t % sys.dps.len()].addr;
                let keys: Vec<(String, String)> = (0..40)
                    .map(|i| {
                        let k = format!("ctr:{t}:{i}");
                        let g = owner_of(&cluster, &k);
                        (k, g)
                    })
                    .collect();
                let (stop, ops, recovered) = (stop.clone(), ops.clone(), recovered.clone());
                std::thread::spawn(move || {
                    let mut con = redis::Client::open(format!("redis://{addr}"))
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut seen = Seen::default();
                    let mut maybe: HashMap<String, i64> = HashMap::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (k, g) = &keys[n % keys.len()];
                        n += 1;
                        let t0 = Instant::now();
                        let r: redis::RedisResult<i64> = redis::cmd("INCR").arg(k).query(&mut con);
                        seen.slowest = seen.slowest.max(t0.elapsed());
                        match r {
                            Ok(got) => {
                                let want = seen.acked.get(k).copied().unwrap_or(0) + 1;
                                // An INCR that failed may still have been applied.
                                let slack = maybe.remove(k).unwrap_or(0);
                                assert!(
                                    got <= want + slack,
                                    "{k}: {got} after {} acknowledged and {slack} failed: doubled",
                                    want - 1
                                );
                                if got < want {
                                    seen.lost += want - got;
                                }
                                seen.acked.insert(k.clone(), got);
                                if let Some(r @ None) = recovered.lock().unwrap().get_mut(g) {
                                    *r = Some(Instant::now());
                                }
                            }
                            Err(e) => {
                                *maybe.entry(k.clone()).or_default() += 1;
                                recovered.lock().unwrap().insert(g.clone(), None);
                                seen.errors.push((Instant::now(), format!("INCR {k}: {e}")));
                                if e.is_connection_dropped() || e.is_io_error() {
                                    std::thread::sleep(Duration::from_millis(20));
                                    if let Ok(c) = redis::Client::open(format!("redis://{addr}"))
                                        .unwrap()
                                        .get_connection()
                                    {
                                        con = c;
                                    }
                                }
                            }
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    seen
                })
            })
            .collect();
        Load {
            stop,
            ops,
            threads,
            recovered,
        }
    }

    fn wait_ops(&self, more: u64) {
        let start = self.ops.load(Ordering::Relaxed);
        wait_for("the load to make progress", Duration::from_secs(30), || {
            (self.ops.load(Ordering::Relaxed) >= start + more).then_some(())
        });
    }

    /// The first acknowledged write to `group` after its latest error, if
    /// it had errors and one came since.
    fn recovered(&self, group: &str) -> Option<Instant> {
        self.recovered.lock().unwrap().get(group).copied().flatten()
    }

    /// Stops the clients; returns what they saw, merged, and the writes the
    /// cluster lost: acknowledged values above what it holds now.
    fn finish(self, dp: &DataPlane) -> (Seen, i64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Seen::default();
        for t in self.threads {
            let s = t.join().expect("a checking client found a doubled write");
            all.lost += s.lost;
            all.errors.extend(s.errors);
            all.slowest = all.slowest.max(s.slowest);
            all.acked.extend(s.acked);
        }
        let mut con = dp.conn();
        let mut missing = 0;
        for (k, want) in &all.acked {
            let got: i64 = redis::cmd("GET")
                .arg(k)
                .query::<Option<i64>>(&mut con)
                .unwrap()
                .unwrap_or(0);
            missing += (want - got).max(0);
        }
        (all, missing)
    }
}

#[test]
fn a_killed_master_is_failed_over_and_returns_as_a_replica() {
    let mut sys = System::start("ha-kill", "2s", false);
    let m1 = sys.master("g1");
    let r1 = sys.group("g1")["replicas"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let load = Load::start(&sys, 8);
    load.wait_ops(2000);
    let port: u16 = m1.rsplit(':').next().unwrap().parse().unwrap();
    let killed = Instant::now();
    sys.servers.get_mut(&m1).unwrap().kill();
    // Writes to g1 resume on the replica, with nothing for a person to do.
    wait_for("g1 to fail over", Duration::from_secs(30), || {
        (sys.master("g1") == r1).then_some(())
    });
    let resumed = wait_for("writes to g1 to resume", Duration::from_secs(30), || {
        load.recovered("g1").map(|t| t - killed)
    });
    assert_eq!(sys.role(&r1), "master");
    let g = sys.group("g1");
    assert_eq!(
        g["demoting"][0]["address"], m1,
        "the old master waits to be demoted"
    );
    assert!(g["replicas"].as_array().unwrap().is_empty());
    let record = &sys.show()["failovers"][0];
    assert_eq!(record["outcome"], "done");
    assert_eq!(record["kind"], "automatic");
    load.wait_ops(2000);
    // The old master comes back empty, as a master: ctld makes it a replica
    // of the new one before listing (and routing reads to) it.
    let back = Redis::start_on(port);
    sys.servers.insert(m1.clone(), back);
    wait_for(
        "the old master to be listed as a replica",
        Duration::from_secs(30),
        || {
            let g = sys.group("g1");
            (g["replicas"][0]["address"] == m1.as_str() && g["demoting"].is_null()).then_some(())
        },
    );
    assert_eq!(sys.role(&m1), "slave");
    sys.wait_replicated("g1");
    load.wait_ops(1000);
    let (seen, missing) = load.finish(&sys.dps[0]);
    let acked: i64 = seen.acked.values().sum();
    eprintln!(
        "kill -9 of g1's master: writes resumed after {} ms; {} acknowledged writes lost of {} \
         (the replica lacked them: async replication); ctld's recorded gap {} bytes; {} client \
         errors while g1 was down",
        resumed.as_millis(),
        seen.lost,
        acked,
        record["offset_gap"],
        seen.errors.len()
    );
    assert_eq!(
        missing, 0,
        "writes acknowledged after the failover are all there"
    );
    assert!(
        seen.errors.iter().all(|(t, _)| *t >= killed),
        "errors only after the kill: {:?}",
        seen.errors
    );
    // Only writes g1's master had not yet sent to its replica can be lost:
    // its last milliseconds, never g2's (the checking clients would have
    // panicked on a doubled write).
    assert!(
        seen.lost * 10 <= acked,
        "{} of {acked} acknowledged writes lost",
        seen.lost
    );
    assert!(
        resumed < Duration::from_secs(2 + 5),
        "writes resumed after {resumed:?}"
    );
}

#[test]
fn a_switchover_under_load_loses_nothing_and_errs_nothing() {
    let sys = System::start("ha-switch", "5s", false);
    let m1 = sys.master("g1");
    let r1 = sys.group("g1")["replicas"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    sys.wait_replicated("g1");
    let load = Load::start(&sys, 8);
    load.wait_ops(2000);
    let out = ctl_ok(&sys.ctld, &["failover", "c", "--group", "g1", "--wait"]);
    assert!(out.contains("done"), "{out}");
    assert_eq!(sys.master("g1"), r1);
    assert_eq!(sys.role(&r1), "master");
    assert_eq!(
        sys.role(&m1),
        "slave",
        "the old master follows the new one at once"
    );
    // Listed (and readable) as a replica once ctld sees it follow.
    wait_for(
        "the old master to be listed as a replica",
        Duration::from_secs(10),
        || (sys.group("g1")["replicas"][0]["address"] == m1.as_str()).then_some(()),
    );
    load.wait_ops(2000);
    // And back, naming the target.
    sys.wait_replicated("g1");
    let out = ctl_ok(
        &sys.ctld,
        &["failover", "c", "--group", "g1", "--to", &m1, "--wait"],
    );
    assert!(out.contains("done"), "{out}");
    assert_eq!(sys.master("g1"), m1);
    load.wait_ops(2000);
    let (seen, missing) = load.finish(&sys.dps[1]);
    let records = sys.show()["failovers"].clone();
    eprintln!(
        "two switchovers: slowest request {} ms; took {} and {} ms",
        seen.slowest.as_millis(),
        records[0]["finished_ms"].as_u64().unwrap() - records[0]["started_ms"].as_u64().unwrap(),
        records[1]["finished_ms"].as_u64().unwrap() - records[1]["started_ms"].as_u64().unwrap(),
    );
    assert!(seen.errors.is_empty(), "client errors: {:?}", seen.errors);
    assert_eq!((seen.lost, missing), (0, 0), "writes lost");
    assert_eq!(records[0]["offset_gap"], 0);
}

#[test]
fn a_master_the_data_planes_reach_is_not_failed_over_when_only_ctld_cannot_check_it() {
    let mut sys = System::start("ha-partial", "1s", false);
    let m1 = sys.master("g1");
    let load = Load::start(&sys, 4);
    load.wait_ops(1000);
    // ctld's checks need INFO; the data planes only INCR. From ctld's side
    // the master fails every check, as if cut off from it.
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "-info"][..])
        .query(&mut sys.servers[&m1].conn())
        .unwrap();
    wait_for(
        "ctld to see the master down",
        Duration::from_secs(10),
        || {
            let h = sys.health("g1");
            (h["servers"][0]["health"] == "down").then_some(h)
        },
    );
    // Well past down_after, with the data planes reporting they reach it.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        load.wait_ops(200);
    }
    let h = sys.health("g1");
    assert_eq!(sys.master("g1"), m1, "not failed over: {h}");
    assert!(sys.show()["failovers"].is_null());
    assert!(
        h["servers"][0]["dataplanes_reaching"].as_u64().unwrap() >= 1,
        "the data planes report reaching it: {h}"
    );
    assert!(
        h["servers"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("NOPERM"),
        "{h}"
    );
    // When the data planes lose it too, it is failed over.
    sys.servers.get_mut(&m1).unwrap().kill();
    wait_for("g1 to fail over", Duration::from_secs(30), || {
        (sys.master("g1") != m1).then_some(())
    });
    let (seen, _) = load.finish(&sys.dps[0]);
    assert!(
        seen.errors.iter().all(|(_, e)| e.contains("ctr")),
        "{:?}",
        seen.errors
    );
}

#[test]
fn a_group_without_a_usable_replica_stays_failed_and_says_so() {
    let mut sys = System::start("ha-lone", "1s", true);
    let m2 = sys.master("g2");
    sys.servers.get_mut(&m2).unwrap().kill();
    let h = wait_for("g2 to be failed", Duration::from_secs(20), || {
        let h = sys.health("g2");
        (h["state"] == "failed" && h["problem"].is_string()).then_some(h)
    });
    assert_eq!(
        h["problem"], "its master is failed and it has no replica",
        "{h}"
    );
    assert_eq!(h["servers"][0]["health"], "failed");
    assert_eq!(sys.master("g2"), m2);
    let out = ctl_ok(&sys.ctld, &["cluster", "show", "c"]);
    assert!(
        out.contains("group g2 is failed: its master is failed and it has no replica"),
        "{out}"
    );
    // A switchover needs a master that is up.
    let (ok, _, err) = sys.ctld.ctl(&["failover", "c", "--group", "g2"]);
    assert!(!ok && err.contains("does not answer"), "{err}");
    // g1 is untouched.
    let mut con = sys.dps[0].conn();
    let k = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| owner_of(&sys.show(), k) == "g1")
        .unwrap();
    let () = redis::cmd("SET").arg(&k).arg(1).query(&mut con).unwrap();
}

#[test]
fn a_migration_follows_its_target_through_an_automatic_failover() {
    let mut sys = System::start("ha-migrate", "1s", false);
    let m1 = sys.master("g1");
    let r1 = sys.group("g1")["replicas"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut con = sys.dps[0].conn();
    let mut keys = Vec::new();
    let cluster = sys.show();
    for i in 0..3000 {
        let k = format!("mk:{i}");
        if owner_of(&cluster, &k) == "g2" {
            let () = redis::cmd("SET").arg(&k).arg(i).query(&mut con).unwrap();
            keys.push((k, i));
        }
    }
    // g2's slots to g1, slowly; g1's master dies mid-move.
    ctl_ok(
        &sys.ctld,
        &[
            "migrate",
            "c",
            "--slots",
            "8192-16383",
            "--to",
            "g1",
            "--rate",
            "300",
        ],
    );
    wait_for("keys to move", Duration::from_secs(30), || {
        let m = sys.ctld.ctl_json(&["migrations", "c", "1"]);
        (m["progress"]["keys_moved"].as_u64().unwrap_or(0) > 100).then_some(())
    });
    // Wait until the replica has what was moved so far, then kill.
    sys.servers[&m1].wait_replica_synced(&sys.servers[&r1]);
    sys.servers.get_mut(&m1).unwrap().kill();
    wait_for("g1 to fail over", Duration::from_secs(30), || {
        (sys.master("g1") == r1).then_some(())
    });
    wait_for("the migration to finish", Duration::from_secs(120), || {
        let m = sys.ctld.ctl_json(&["migrations", "c", "1"]);
        assert!(m["progress"]["failed"].is_null(), "{m}");
        (m["state"]["phase"] == "done").then_some(())
    });
    // Every key is on g1's new master and reads through keyway; keys moved
    // to the old master in its last milliseconds may be lost with it
    // (async replication), never silently duplicated.
    let mut on_new = sys.servers[&r1].conn();
    let mut lost = 0;
    for (k, v) in &keys {
        let got: Option<i64> = redis::cmd("GET").arg(k).query(&mut on_new).unwrap();
        match got {
            Some(g) => assert_eq!(g, *v as i64, "{k}"),
            None => lost += 1,
        }
        let through: Option<i64> = redis::cmd("GET").arg(k).query(&mut con).unwrap();
        assert_eq!(through, got, "{k} through keyway");
    }
    let left: i64 = redis::cmd("DBSIZE")
        .query(&mut sys.servers[&sys.master("g2")].conn())
        .unwrap();
    assert_eq!(left, 0, "the source is empty");
    assert!(
        lost * 20 <= keys.len(),
        "{lost} of {} keys lost with the old master",
        keys.len()
    );
    eprintln!(
        "migration through a failover: {} keys, {lost} lost with the old master",
        keys.len()
    );
}

/// `cmdstat_get` calls of a server.
fn gets(r: &Redis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut r.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|v| v.split(',').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[test]
fn a_group_set_to_read_from_replicas_is_read_from_them_through_managed_data_planes() {
    let sys = System::start("ha-reads", "5s", false);
    let (m1, r1) = (
        sys.master("g1"),
        sys.group("g1")["replicas"][0]["address"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let out = ctl_ok(
        &sys.ctld,
        &["--json", "group", "c", "g1", "--read-from", "replica"],
    );
    assert!(out.contains("\"read_from\": \"replica\""), "{out}");
    let v = version(&sys.ctld);
    for d in &sys.dps {
        sys.ctld.wait_acked(&d.id, v);
    }
    let cluster = sys.show();
    let key = (0..)
        .map(|i| format!("r{i}"))
        .find(|k| owner_of(&cluster, k) == "g1")
        .unwrap();
    let mut con = sys.dps[0].conn();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query(&mut con)
        .unwrap();
    sys.servers[&m1].wait_replica_synced(&sys.servers[&r1]);
    // The first read opens the connection to the replica and, not waiting
    // for it, goes to the master; reads go to the replica once it is open.
    wait_for(
        "a read to reach the replica",
        Duration::from_secs(10),
        || {
            let _: Option<String> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
            (gets(&sys.servers[&r1]) > 0).then_some(())
        },
    );
    let (on_master, on_replica) = (gets(&sys.servers[&m1]), gets(&sys.servers[&r1]));
    for _ in 0..20 {
        let got: Option<String> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        // A replica may lag a write by its replication delay; this one
        // has it (WAIT above).
        assert_eq!(got.as_deref(), Some("v"));
    }
    assert_eq!(
        gets(&sys.servers[&r1]) - on_replica,
        20,
        "reads went to the replica"
    );
    assert_eq!(gets(&sys.servers[&m1]), on_master, "none to the master");
    let (ok, _, err) = sys
        .ctld
        .ctl(&["group", "c", "g1", "--read-from", "anywhere"]);
    assert!(!ok && err.contains("local-zone"), "{err}");
}
