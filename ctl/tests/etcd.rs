//! keyway-ctld on etcd (issue 10, items 6 and 7): three ctlds on one real
//! etcd, two data planes given all three control addresses, keywayctl given
//! all three API addresses, and a checking INCR load. Killing the active
//! ctld, during a migration too, costs no client error, fences no data
//! plane, and loses no write; a save with a stale revision is refused; a
//! paused etcd does not stop the sessions.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::checks::{hello, refusal, HealthWatch};
use common::load::IncrLoad;
use common::{
    http_get, keywayctl, owner_of, wait_for, Ctld, DataPlane, Etcd, RawSession, Redis, TempDir,
};
use keyway_ctl::etcd::store::{EtcdStore, Guard};
use keyway_ctl::etcd::Etcd as EtcdConn;
use keyway_ctl::leader::{LeaseClock, Term};
use keyway_ctl::model::{Cluster, Group, Resolved, State};
use keyway_ctl::store::{Store, StoreError};
use redis::Commands;
use serde_json::Value;

/// The election TTL the ctlds run with (the default).
const TTL: Duration = Duration::from_secs(5);

/// etcd, three ctlds on it, Redis groups, and two data planes of cluster
/// "c" that know all three ctlds.
struct System {
    dir: TempDir,
    etcd: Etcd,
    ctlds: Vec<Ctld>,
    redis: Vec<(String, Redis)>,
    dps: Vec<DataPlane>,
}

impl System {
    /// `groups` groups with slots, `empty` more without.
    fn start(tag: &str, groups: usize, empty: usize) -> System {
        let dir = TempDir::new(tag);
        let etcd = Etcd::start();
        let ctlds: Vec<Ctld> = (0..3)
            .map(|_| Ctld::start_on_etcd(&etcd.url, "/keyway-test", &[]))
            .collect();
        let mut sys = System {
            dir,
            etcd,
            ctlds,
            redis: (0..groups + empty)
                .map(|i| (format!("g{}", i + 1), Redis::start()))
                .collect(),
            dps: Vec::new(),
        };
        sys.wait_active(Duration::from_secs(20));
        let mut args = vec!["cluster".to_string(), "create".into(), "c".into()];
        for (g, r) in &sys.redis[..groups] {
            args.push("--group".into());
            args.push(format!("{g}={}", r.addr()));
        }
        sys.ctl_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        for (g, r) in &sys.redis[groups..] {
            sys.ctl_ok(&[
                "cluster",
                "grow",
                "c",
                "--group",
                &format!("{g}={}", r.addr()),
            ]);
        }
        let controls = sys.controls();
        sys.dps = ["dp1", "dp2"]
            .iter()
            .map(|id| DataPlane::start_with_controls(&controls, "c", id, &sys.dir.path().join(id)))
            .collect();
        for d in &sys.dps {
            d.wait_health(200, Duration::from_secs(20));
        }
        sys
    }

    /// `A,B,C` of the ctlds' API addresses.
    fn apis(&self) -> String {
        let v: Vec<String> = self.ctlds.iter().map(|c| c.api.to_string()).collect();
        v.join(",")
    }

    fn controls(&self) -> String {
        let v: Vec<String> = self.ctlds.iter().map(|c| c.control.to_string()).collect();
        v.join(",")
    }

    /// keywayctl with every API address.
    fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        keywayctl(&self.apis(), args)
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.ctl(args);
        assert!(ok, "keywayctl {args:?}: {err}");
        out
    }

    fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl_ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// The index of the one active ctld, waiting for there to be one.
    fn wait_active(&mut self, within: Duration) -> usize {
        wait_for("one ctld to be active", within, || {
            let active: Vec<usize> = (0..self.ctlds.len())
                .filter(|&i| self.ctlds[i].proc.alive() && self.ctlds[i].is_active())
                .collect();
            assert!(active.len() <= 1, "two active ctlds: {active:?}");
            active.first().copied()
        })
    }

    /// Waits until every data plane is in session with the active ctld.
    fn wait_connected(&self, within: Duration) {
        wait_for(
            "both data planes in session with the new leader",
            within,
            || {
                // Right after a takeover the API may still be moving: a
                // failed call is "not yet".
                let (ok, out, _) = self.ctl(&["--json", "dataplanes"]);
                let dps: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
                let all = dps.as_array()?;
                (all.len() == 2 && all.iter().all(|d| d["connected"] == true)).then_some(())
            },
        );
    }

    /// Every key is on exactly one server, the owner of its slot; returns
    /// how many keys there are.
    fn assert_placed(&self) -> usize {
        let cluster = self.ctl_json(&["cluster", "show", "c"]);
        let mut at: HashMap<String, Vec<String>> = HashMap::new();
        for (g, r) in &self.redis {
            let keys: Vec<String> = r.conn().scan().unwrap().collect();
            for k in keys {
                at.entry(k).or_default().push(g.clone());
            }
        }
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
            let tail = |lines: Vec<String>| lines[lines.len().saturating_sub(40)..].join("\n");
            for (i, c) in self.ctlds.iter_mut().enumerate() {
                eprintln!("--- keyway-ctld {i} log\n{}", tail(c.proc.logs()));
            }
            for d in &mut self.dps {
                eprintln!("--- {} log\n{}", d.id, tail(d.proc.logs()));
            }
        }
        self.etcd.resume();
    }
}

/// Watches every data plane's health, and notes where its log is.
fn watch(sys: &mut System) -> Vec<(HealthWatch, usize)> {
    sys.dps
        .iter_mut()
        .map(|d| (HealthWatch::start(d), d.proc.logs().len()))
        .collect()
}

/// No data plane was unhealthy or fenced since [`watch`].
fn no_fences(watches: Vec<(HealthWatch, usize)>, dps: &mut [DataPlane]) {
    for ((w, logged), d) in watches.into_iter().zip(dps.iter_mut()) {
        let bad = w.finish();
        assert!(bad.is_empty(), "{} was not healthy: {bad:?}", d.id);
        let fenced: Vec<String> = d.proc.logs()[logged..]
            .iter()
            .filter(|l| l.contains("fenced"))
            .cloned()
            .collect();
        assert!(fenced.is_empty(), "{} fenced: {fenced:?}", d.id);
    }
}

#[test]
fn killing_the_active_ctld_under_load_costs_no_error_and_fences_nothing() {
    let mut sys = System::start("etcd-kill", 2, 1);
    let watches = watch(&mut sys);
    let addrs: Vec<_> = sys.dps.iter().map(|d| d.addr).collect();
    let load = IncrLoad::start(&addrs, 4, 500);
    load.wait_ops(500);

    let old = sys.wait_active(Duration::from_secs(5));
    // The standbys refuse sessions and API requests, naming the leader.
    let standby = &sys.ctlds[(old + 1) % 3];
    let mut raw = RawSession::connect(standby.control);
    raw.send(&hello("dp9", "c", 0, "", ""));
    let msgs = raw.until_closed();
    let want = format!(
        "standby: the active keyway-ctld is {}",
        sys.ctlds[old].control
    );
    assert_eq!(refusal(&msgs), Some(want.as_str()), "{msgs:?}");
    let (status, body) = http_get(standby.api, "/v1/clusters");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&sys.ctlds[old].api.to_string()), "{body}");
    assert_eq!(http_get(standby.api, "/healthz").0, 200);
    let killed = Instant::now();
    sys.ctlds[old].proc.kill();
    let new = sys.wait_active(TTL + Duration::from_secs(10));
    let took = killed.elapsed();
    eprintln!("ctld {new} active {took:?} after ctld {old} was killed");
    assert_ne!(new, old);
    sys.wait_connected(Duration::from_secs(20));
    eprintln!(
        "both data planes in session {:?} after the kill",
        killed.elapsed()
    );
    load.wait_ops(500);

    // The API through all three addresses (one dead, one standby): a change
    // that every data plane then routes by.
    sys.ctl_ok(&["migrate", "c", "--slots", "0-99", "--to", "g3", "--wait"]);
    let version = sys.ctl_json(&["cluster", "show", "c"])["version"]
        .as_u64()
        .unwrap();
    wait_for(
        "both data planes to ack the new version",
        Duration::from_secs(20),
        || {
            let dps = sys.ctl_json(&["dataplanes"]);
            dps.as_array()?
                .iter()
                .all(|d| d["acked_version"].as_u64() >= Some(version))
                .then_some(())
        },
    );
    load.wait_ops(500);
    let (ops, errors) = load.finish(sys.dps[0].addr);
    eprintln!("checking load: {ops} requests, {} errors", errors.len());
    assert!(errors.is_empty(), "client errors: {errors:?}");
    no_fences(watches, &mut sys.dps);
    sys.assert_placed();
}

#[test]
fn a_migration_interrupted_by_a_leader_kill_completes_under_the_new_leader() {
    let mut sys = System::start("etcd-migrate", 2, 0);
    // Keys on both groups first, so that half the slots have keys to move.
    {
        let mut con = sys.dps[0].conn();
        for chunk in (0..3000).collect::<Vec<_>>().chunks(500) {
            let mut p = redis::pipe();
            for i in chunk {
                p.cmd("SET").arg(format!("pre:{i}")).arg(*i).ignore();
            }
            let () = p.query(&mut con).unwrap();
        }
    }
    let before = sys.assert_placed();
    let watches = watch(&mut sys);
    let addrs: Vec<_> = sys.dps.iter().map(|d| d.addr).collect();
    let load = IncrLoad::start(&addrs, 2, 300);
    load.wait_ops(200);
    sys.ctl_ok(&[
        "migrate", "c", "--slots", "0-8191", "--to", "g2", "--rate", "300",
    ]);
    wait_for("keys to move", Duration::from_secs(60), || {
        let m = sys.ctl_json(&["migrations", "c", "1"]);
        (m["progress"]["keys_moved"].as_u64()? > 200).then_some(())
    });
    let old = sys.wait_active(Duration::from_secs(5));
    sys.ctlds[old].proc.kill();
    let new = sys.wait_active(TTL + Duration::from_secs(10));
    assert_ne!(new, old);
    let resumed = sys.ctl_json(&["migrations", "c", "1"])["progress"]["keys_moved"]
        .as_u64()
        .unwrap();
    assert!(resumed > 200, "the progress was kept in etcd: {resumed}");
    wait_for("the migration to finish", Duration::from_secs(120), || {
        let m = sys.ctl_json(&["migrations", "c", "1"]);
        (m["state"]["phase"] == "done").then_some(())
    });
    load.wait_ops(200);
    let (ops, errors) = load.finish(sys.dps[1].addr);
    eprintln!("checking load: {ops} requests, {} errors", errors.len());
    assert!(errors.is_empty(), "client errors: {errors:?}");
    no_fences(watches, &mut sys.dps);
    assert!(sys.assert_placed() >= before);
    let left: Vec<String> = sys.redis[0]
        .1
        .conn()
        .scan::<String>()
        .unwrap()
        .filter(|k| k.starts_with("pre:"))
        .collect();
    let cluster = sys.ctl_json(&["cluster", "show", "c"]);
    assert!(
        left.iter().all(|k| owner_of(&cluster, k) == "g1"),
        "keys of moved slots left on g1"
    );
}

#[test]
fn a_paused_etcd_stops_no_session_and_writes_resume() {
    let mut sys = System::start("etcd-pause", 1, 1);
    let leader = sys.wait_active(Duration::from_secs(5));
    let watches = watch(&mut sys);
    let addrs: Vec<_> = sys.dps.iter().map(|d| d.addr).collect();
    let load = IncrLoad::start(&addrs, 4, 500);
    load.wait_ops(300);

    sys.etcd.pause();
    let paused = Instant::now();
    // A write issued while etcd is paused waits for it (the save's bound is
    // the election TTL), and succeeds once etcd is back.
    let apis = sys.apis();
    let writer = std::thread::spawn(move || {
        let started = Instant::now();
        let r = keywayctl(&apis, &["group", "c", "g2", "--zone", "z2"]);
        (r, started.elapsed())
    });
    let during = load.ops();
    std::thread::sleep(Duration::from_secs(3));
    let served = load.ops() - during;
    sys.etcd.resume();
    eprintln!(
        "etcd paused for {:?}; {served} requests meanwhile",
        paused.elapsed()
    );
    let ((ok, out, err), took) = writer.join().unwrap();
    eprintln!("the write issued during the pause took {took:?}: {ok} {out} {err}");
    assert!(ok, "the write failed: {err}");
    assert!(
        took >= Duration::from_secs(2),
        "the write was issued while etcd was paused, so it waited for it ({took:?})"
    );
    assert!(
        served > 0,
        "the data planes served nothing while etcd was paused"
    );
    load.wait_ops(300);
    assert_eq!(
        sys.wait_active(Duration::from_secs(5)),
        leader,
        "leadership moved"
    );
    let zone = sys.ctl_json(&["cluster", "show", "c"])["groups"][1]["zone"].clone();
    assert_eq!(zone, "z2");
    let (ops, errors) = load.finish(sys.dps[0].addr);
    eprintln!("checking load: {ops} requests, {} errors", errors.len());
    assert!(errors.is_empty(), "client errors: {errors:?}");
    no_fences(watches, &mut sys.dps);
}

#[test]
fn an_etcd_outage_longer_than_the_ttl_stops_the_leases_grants_not_the_data_planes() {
    let mut sys = System::start("etcd-outage", 1, 0);
    sys.wait_active(Duration::from_secs(5));
    let watches = watch(&mut sys);
    let addrs: Vec<_> = sys.dps.iter().map(|d| d.addr).collect();
    let load = IncrLoad::start(&addrs, 2, 200);
    load.wait_ops(300);

    sys.etcd.pause();
    // The active ctld cannot renew its election lease: within the TTL it
    // stops granting leases and stands by, and so does every ctld.
    wait_for(
        "every ctld to stand by",
        TTL + Duration::from_secs(10),
        || sys.ctlds.iter().all(|c| !c.is_active()).then_some(()),
    );
    // The data planes serve on the leases they hold.
    load.wait_ops(300);
    sys.etcd.resume();
    sys.wait_active(TTL + Duration::from_secs(15));
    sys.wait_connected(Duration::from_secs(20));
    // Leadership may move once more while etcd works through what queued
    // up during the outage: a write goes through once it has settled.
    wait_for("an API write to succeed", Duration::from_secs(30), || {
        sys.ctl(&["group", "c", "g1", "--zone", "back"])
            .0
            .then_some(())
    });
    load.wait_ops(300);
    let (ops, errors) = load.finish(sys.dps[0].addr);
    eprintln!("checking load: {ops} requests, {} errors", errors.len());
    assert!(errors.is_empty(), "client errors: {errors:?}");
    no_fences(watches, &mut sys.dps);
}

/// A one-group cluster for the store tests.
fn state_with(name: &str, master: &str) -> State {
    let mut s = State::default();
    let g = Group {
        name: "g1".into(),
        master: master.into(),
        ..Group::default()
    };
    s.clusters.insert(
        name.into(),
        Cluster::create(name, 1024, vec![g], 30_000, &Resolved::none()).unwrap(),
    );
    s
}

#[test]
fn a_save_with_a_stale_revision_or_without_the_election_is_a_conflict() {
    let etcd = Etcd::start();
    let conn = EtcdConn::connect(std::slice::from_ref(&etcd.url), "/cas-test", TTL).unwrap();
    // The election's proof, as a campaign leaves it: a key and its create
    // revision.
    let guard_key = "/cas-test/election/me".to_string();
    let k = guard_key.clone();
    let rev = conn
        .call(move |mut c| async move { c.put(k, "me", None).await })
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let guard = Guard {
        key: guard_key.clone().into_bytes(),
        create_revision: rev,
    };
    let term = || Term::new(Arc::new(LeaseClock::forever()));
    let (mut a, empty) = EtcdStore::load(&conn, guard.clone(), term()).unwrap();
    assert_eq!(empty, State::default());
    let (t_b, t_c) = (term(), term());
    let (mut b, _) = EtcdStore::load(&conn, guard.clone(), t_b.clone()).unwrap();

    // A creates the cluster; B, which read before, creates it too: refused.
    a.save(&state_with("c", "127.0.0.1:1")).unwrap();
    let err = b.save(&state_with("c", "127.0.0.1:2")).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(t_b.ended().is_some(), "a refused save ends the term");
    let (_, now) = EtcdStore::load(&conn, guard.clone(), term()).unwrap();
    assert_eq!(
        now,
        state_with("c", "127.0.0.1:1"),
        "A's state, not a merge"
    );

    // C reads, A changes the cluster, C's change of the old one is refused.
    let (mut c, _) = EtcdStore::load(&conn, guard.clone(), t_c.clone()).unwrap();
    a.save(&state_with("c", "127.0.0.1:3")).unwrap();
    let err = c.save(&state_with("c", "127.0.0.1:4")).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // Nor may a stale store delete it.
    let (mut d, _) = EtcdStore::load(&conn, guard.clone(), term()).unwrap();
    a.save(&state_with("c", "127.0.0.1:5")).unwrap();
    assert!(matches!(
        d.save(&State::default()),
        Err(StoreError::Conflict(_))
    ));

    // Without the election (the leader key is gone), even an up-to-date
    // store is refused.
    let k = guard_key.clone();
    conn.call(move |mut c| async move { c.delete(k, None).await })
        .unwrap();
    let err = a.save(&state_with("c", "127.0.0.1:6")).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let (_, now) = EtcdStore::load(&conn, guard, term()).unwrap();
    assert_eq!(now, state_with("c", "127.0.0.1:5"));
}

#[test]
fn a_master_killed_with_the_active_ctld_is_failed_over_by_the_next_one() {
    let mut sys = System::start("etcd-failover", 2, 0);
    let replica = Redis::replica_of(&sys.redis[0].1);
    sys.ctl_ok(&["group", "c", "g1", "--add-replica", &replica.addr()]);
    sys.ctl_ok(&[
        "cluster",
        "set",
        "c",
        "--check-interval",
        "200ms",
        "--down-after",
        "1s",
    ]);
    let cluster = sys.ctl_json(&["cluster", "show", "c"]);
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| owner_of(&cluster, k) == "g1")
        .unwrap();
    let mut con = sys.dps[0].conn();
    let () = con.set(&key, 1).unwrap();
    sys.redis[0].1.wait_replica_synced(&replica);
    let watches = watch(&mut sys);
    // The master and the active ctld die together: the next leader's
    // supervisor finds the master failed and fails it over.
    let active = sys.wait_active(Duration::from_secs(5));
    sys.redis[0].1.kill();
    sys.ctlds[active].proc.kill();
    wait_for(
        "g1 to fail over under the next leader",
        Duration::from_secs(60),
        || {
            let (ok, out, _) = sys.ctl(&["--json", "cluster", "show", "c"]);
            let c: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            (c["groups"][0]["master"] == replica.addr().as_str()).then_some(())
        },
    );
    let next = sys.wait_active(Duration::from_secs(5));
    assert_ne!(next, active);
    let got: i64 = con.incr(&key, 1).unwrap();
    assert_eq!(got, 2, "the write before the kill is on the new master");
    no_fences(watches, &mut sys.dps);
}
