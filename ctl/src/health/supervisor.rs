//! The supervisor: checks every server of every cluster on its interval,
//! fails failed masters over, finishes failovers a previous ctld left under
//! way, and keeps replicas pointed at their master (a former master that
//! returns is made a replica before it is listed as one). It runs on its
//! own thread and runtime, only on the active ctld ([`start`], from
//! `leader::ActiveTasks`), so that nothing it does can delay a control
//! session; its checks and failovers are tasks it owns, all stopped when
//! the term's stop flag is set (a failover cut short is finished by the
//! next active ctld from its persisted progress).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::probe::{Probe, ProbeError, Replication};
use super::{choose_replica, failover, master_failed};
use crate::daemon::{unix_ms, Shared};
use crate::model::{Change, Cluster, FailoverKind, Group};
use crate::reach::Reach;

/// How often the supervisor looks at the state.
const TICK: Duration = Duration::from_millis(50);

type Key = (String, String);

/// A finished check: the probe comes back with its result.
type Checked = (Key, Probe, Instant, Result<Replication, ProbeError>);

/// How long one check may take.
fn check_timeout(c: &Cluster) -> Duration {
    Duration::from_millis(c.ha.check_interval_ms.clamp(200, 2000))
}

/// The supervisor's own state.
struct Supervisor {
    ctld: Shared,
    probes: HashMap<Key, Probe>,
    checking: HashSet<Key>,
    tx: mpsc::UnboundedSender<Checked>,
    tasks: JoinSet<()>,
    /// Failovers being driven, by (cluster, group).
    driving: HashMap<Key, u64>,
    done: mpsc::UnboundedSender<Key>,
    /// When a server was last told whom to follow.
    repointed: HashMap<Key, Instant>,
    /// When each group's last failover here ended, and how many ended in a
    /// row while its master stayed failed: an automatic failover that was
    /// abandoned is tried again `down_after` later, doubling with each one
    /// in a row.
    ended: HashMap<Key, (Instant, u32)>,
}

/// Starts the supervisor on its own thread; it runs until `stop` is set.
pub fn start(ctld: Shared, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("keyway-health".into())
        .spawn(move || rt.block_on(run(ctld, stop)))
}

/// Runs until `stop` is set.
pub async fn run(ctld: Shared, stop: Arc<AtomicBool>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (done, mut finished) = mpsc::unbounded_channel();
    let mut s = Supervisor {
        ctld,
        probes: HashMap::new(),
        checking: HashSet::new(),
        tx,
        tasks: JoinSet::new(),
        driving: HashMap::new(),
        done,
        repointed: HashMap::new(),
        ended: HashMap::new(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {}
            Some(c) = rx.recv() => s.checked(c),
            Some(k) = finished.recv() => {
                s.driving.remove(&k);
                let e = s.ended.entry(k).or_insert((Instant::now(), 0));
                *e = (Instant::now(), e.1.saturating_add(1));
            }
            Some(_) = s.tasks.join_next(), if !s.tasks.is_empty() => {}
        }
        while let Ok(c) = rx.try_recv() {
            s.checked(c);
        }
        s.round();
    }
}

impl Supervisor {
    fn checked(&mut self, (key, probe, at, r): Checked) {
        self.checking.remove(&key);
        if let Err(e) = &r {
            tracing::debug!(cluster = %key.0, server = %key.1, "check failed: {e}");
        }
        self.ctld.board().record(&key.0, &key.1, at, r);
        self.probes.insert(key, probe);
    }

    fn round(&mut self) {
        let state = self.ctld.state();
        let now = Instant::now();
        let mut listed: HashSet<Key> = HashSet::new();
        let mut groups: HashSet<Key> = HashSet::new();
        for c in state.clusters.values() {
            for g in &c.groups {
                groups.insert((c.name.clone(), g.name.clone()));
                for a in g.addresses() {
                    let key = (c.name.clone(), a.to_string());
                    self.schedule(c, g, &key, now);
                    listed.insert(key);
                }
                self.decide(c, g, now);
            }
        }
        self.probes.retain(|k, _| listed.contains(k));
        self.repointed.retain(|k, _| listed.contains(k));
        self.ended.retain(|k, _| groups.contains(k));
        self.ctld.board().retain(&listed, &groups);
    }

    /// Starts a check of `key` if one is due.
    fn schedule(&mut self, c: &Cluster, g: &Group, key: &Key, now: Instant) {
        if self.checking.contains(key) {
            return;
        }
        let interval = Duration::from_millis(c.ha.check_interval_ms);
        let due = self
            .ctld
            .board()
            .get(&key.0, &key.1)
            .and_then(|s| s.last_check)
            .is_none_or(|t| now.saturating_duration_since(t) >= interval);
        if !due {
            return;
        }
        let reach = Reach::of(&c.name, g);
        let mut probe = match self.probes.remove(key) {
            Some(mut p) => {
                p.set_reach(reach);
                p
            }
            None => Probe::new(&key.1, reach),
        };
        let (tx, key, timeout) = (self.tx.clone(), key.clone(), check_timeout(c));
        self.checking.insert(key.clone());
        self.tasks.spawn(async move {
            let at = Instant::now();
            let r = probe.check(timeout).await;
            let _ = tx.send((key, probe, at, r));
        });
    }

    /// Fails `g` over if its master is failed, finishes a failover left
    /// under way, and re-points replicas and former masters.
    fn decide(&mut self, c: &Cluster, g: &Group, now: Instant) {
        let gkey = (c.name.clone(), g.name.clone());
        if let Some(p) = &g.failover {
            if !self.driving.contains_key(&gkey) {
                self.drive(gkey, p.id);
            }
            return;
        }
        if self.driving.contains_key(&gkey) {
            return;
        }
        let down_after = Duration::from_millis(c.ha.down_after_ms);
        let master = self.ctld.board().get(&c.name, &g.master).cloned();
        let tally = self.ctld.tally(&c.name, &g.master, down_after);
        // After an abandoned failover, wait down_after, doubling with each
        // one in a row (at most 64 times), before trying again.
        let resting = self.ended.get(&gkey).is_some_and(|(t, n)| {
            now.saturating_duration_since(*t) < down_after * (1u32 << (n.saturating_sub(1)).min(6))
        });
        if master_failed(master.as_ref(), tally, &c.ha, now) {
            if resting {
                return;
            }
            self.fail_over(
                c,
                g,
                master.and_then(|m| m.replication).map_or(0, |r| r.offset),
                now,
            );
        } else {
            self.ended.remove(&gkey);
            self.ctld.board().set_stuck(&c.name, &g.name, None);
            self.repoint(c, g, now);
        }
    }

    fn fail_over(&mut self, c: &Cluster, g: &Group, master_offset: u64, now: Instant) {
        if !c.ha.auto_failover {
            self.stuck(c, g, "its master is failed and auto_failover is off".into());
            return;
        }
        let board = self.ctld.board();
        let chosen = choose_replica(
            g,
            |a| board.get(&c.name, a).cloned(),
            master_offset,
            &c.ha,
            false,
            now,
        );
        drop(board);
        let (to, offset) = match chosen {
            Ok(x) => x,
            Err(why) => {
                self.stuck(c, g, format!("its master is failed and {why}"));
                return;
            }
        };
        let gkey = (c.name.clone(), g.name.clone());
        // Marked as driven now, so that the next round does not start a
        // second one while the change is saved.
        self.driving.insert(gkey.clone(), 0);
        let (ctld, done, from) = (self.ctld.clone(), self.done.clone(), g.master.clone());
        tracing::warn!(cluster = %c.name, group = %g.name, master = %from, replica = %to,
            "master failed: failing over");
        self.tasks.spawn(async move {
            let (c2, g2, t2, from2) = (gkey.0.clone(), gkey.1.clone(), to.clone(), from.clone());
            let ctld2 = ctld.clone();
            let begun = tokio::task::spawn_blocking(move || {
                let begin = Change::BeginFailover {
                    group: g2,
                    kind: FailoverKind::Automatic,
                    from: from2,
                    to: t2,
                    offsets: (master_offset, offset),
                    now_ms: unix_ms(),
                };
                ctld2.change(&c2, &begin).map(|(_, applied)| applied.ids[0])
            })
            .await;
            match begun {
                Ok(Ok(id)) => {
                    failover::drive(ctld, gkey.0.clone(), gkey.1.clone(), id).await;
                }
                Ok(Err(e)) => tracing::error!(cluster = %gkey.0, group = %gkey.1,
                    "cannot start the failover: {e}"),
                Err(e) => tracing::error!("failover task: {e}"),
            }
            let _ = done.send(gkey);
        });
    }

    fn drive(&mut self, gkey: Key, id: u64) {
        self.driving.insert(gkey.clone(), id);
        let (ctld, done) = (self.ctld.clone(), self.done.clone());
        tracing::info!(cluster = %gkey.0, group = %gkey.1, id, "driving a failover under way");
        self.tasks.spawn(async move {
            failover::drive(ctld, gkey.0.clone(), gkey.1.clone(), id).await;
            let _ = done.send(gkey);
        });
    }

    fn stuck(&self, c: &Cluster, g: &Group, why: String) {
        let mut board = self.ctld.board();
        if board.stuck(&c.name, &g.name) != Some(why.as_str()) {
            tracing::error!(cluster = %c.name, group = %g.name, "group failed: {why}");
            board.set_stuck(&c.name, &g.name, Some(why));
        }
    }

    /// Makes former masters that are back, and replicas that claim to be
    /// masters or whose link to a master other than the group's is down,
    /// replicas of the group's master; lists a former master as a replica
    /// once it is one with its link up. Each server is told at most once per
    /// two check intervals.
    fn repoint(&mut self, c: &Cluster, g: &Group, now: Instant) {
        let master_up =
            self.ctld.board().get(&c.name, &g.master).is_some_and(|s| {
                s.up() && s.replication.as_ref().is_some_and(Replication::is_master)
            });
        if !master_up {
            return;
        }
        let every = Duration::from_millis(c.ha.check_interval_ms * 2);
        let servers = g
            .replicas
            .iter()
            .map(|r| (r.address.clone(), false))
            .chain(g.demoting.iter().map(|r| (r.address.clone(), true)));
        for (addr, former) in servers {
            let Some(rep) = self
                .ctld
                .board()
                .get(&c.name, &addr)
                .filter(|s| s.up())
                .and_then(|s| s.replication.clone())
            else {
                continue;
            };
            let follows = !rep.is_master() && rep.master.as_deref() == Some(g.master.as_str());
            let key = (c.name.clone(), addr.clone());
            if self.repointed.get(&key).is_some_and(|t| now < *t) {
                continue;
            }
            if former && follows && rep.link_up {
                self.repointed.insert(key, now + every);
                let (ctld, cl, gr) = (self.ctld.clone(), c.name.clone(), g.name.clone());
                self.tasks.spawn(async move {
                    let a = addr.clone();
                    let r = tokio::task::spawn_blocking(move || {
                        ctld.change(
                            &cl,
                            &Change::Demoted {
                                group: gr,
                                address: a,
                            },
                        )
                    })
                    .await;
                    match r {
                        Ok(Ok(_)) => tracing::info!(server = %addr,
                            "the former master is a replica of the new one: listed as a replica"),
                        Ok(Err(e)) => tracing::warn!(server = %addr,
                            "cannot list the former master as a replica: {e}"),
                        Err(e) => tracing::warn!("{e}"),
                    }
                });
                continue;
            }
            let wrong = former || rep.is_master() || (!follows && !rep.link_up);
            if !wrong {
                continue;
            }
            if former && follows {
                // Syncing with the new master: listed once its link is up.
                continue;
            }
            self.repointed.insert(key, now + every);
            let master = g.master.clone();
            tracing::warn!(cluster = %c.name, group = %g.name, server = %addr, role = %rep.role,
                "making {addr} a replica of the group's master {master}");
            let reach = Reach::of(&c.name, g);
            self.tasks.spawn(async move {
                if let Err(e) = Probe::new(&addr, reach)
                    .replicaof(Some(&master), Duration::from_secs(2))
                    .await
                {
                    tracing::warn!(server = %addr, "REPLICAOF {master} failed: {e}");
                }
            });
        }
    }
}
