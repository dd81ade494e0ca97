//! The migration orchestrator: one thread in keyway-ctld that drives every
//! migration of every cluster through its phases (DESIGN §4; the phases are
//! described in [`crate::model::migration`]):
//!
//! 1. `Pending` → `Blocking`: publish a version in which data planes hold
//!    commands on the slots.
//! 2. `Blocking` → `Moving`: once every registered data plane has acked the
//!    blocking version or its lease has ended ([`Ctld::unsettled`]), and no
//!    sweep of the other direction (a cancel) is still running, publish the
//!    version in which data planes move keys on demand, and start the sweep
//!    ([`sweep`]).
//! 3. `Moving` → done: when a whole sweep pass finds no key of the slots on
//!    the source, publish the version in which the target owns them.
//!
//! Pause stops the sweep (data planes still move keys on demand); resume and
//! a restarted ctld start it again from the recorded cursor. Every phase
//! change goes through [`Ctld::change`] (validated, persisted, published);
//! progress goes through [`Ctld::record`] (persisted only).
//!
//! [`Ctld::unsettled`]: crate::daemon::Ctld::unsettled
//! [`Ctld::change`]: crate::daemon::Ctld::change
//! [`Ctld::record`]: crate::daemon::Ctld::record

pub mod mover;
pub mod sweep;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::daemon::{unix_ms, Shared};
use crate::model::{Change, MigrationState, State};
use sweep::{Ended, Job};

/// How often the orchestrator looks at every migration at least. It also
/// looks as soon as a data plane acks a newer version or a cluster changes
/// ([`Ctld::orchestrator_wait`]): a blocking step holds commands on its
/// slots until the orchestrator sees the acks.
///
/// [`Ctld::orchestrator_wait`]: crate::daemon::Ctld::orchestrator_wait
const TICK: Duration = Duration::from_millis(10);

/// The master of group `name` of `c`; none while the group fails over
/// (no sweep moves keys to or from it then: the failover waits for them to
/// stop, and the next sweep uses the new master).
fn master(c: &crate::model::Cluster, name: &str) -> Option<String> {
    c.groups
        .iter()
        .find(|g| g.name == name && g.failover.is_none())
        .map(|g| g.master.clone())
}

/// A sweep thread.
#[derive(Debug)]
struct Running {
    job: Job,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Ended>,
}

/// The orchestrator's state: the sweeps it runs.
#[derive(Debug)]
pub struct Orchestrator {
    ctld: Shared,
    sweeps: HashMap<(String, u64), Running>,
}

/// Starts the orchestrator thread; it stops (stopping its sweeps, which
/// record their progress) when `stop` is set.
pub fn start(ctld: Shared, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let mut o = Orchestrator {
        ctld,
        sweeps: HashMap::new(),
    };
    std::thread::Builder::new()
        .name("keyway-migrate".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                o.tick();
                o.ctld.orchestrator_wait(TICK);
            }
            o.shutdown();
        })
}

impl Orchestrator {
    fn sweeping(&self, cluster: &str, id: u64) -> bool {
        self.sweeps.contains_key(&(cluster.to_string(), id))
    }

    /// One look at every migration.
    pub fn tick(&mut self) {
        self.reap();
        let state = self.ctld.state();
        self.stop_unwanted(&state);
        for (name, c) in &state.clusters {
            let mut block = Vec::new();
            let mut start = Vec::new();
            for m in c.migrations.iter().filter(|m| m.active()) {
                match m.state {
                    MigrationState::Pending => block.push(m.id),
                    MigrationState::Blocking { version } => {
                        let waiting = self.ctld.unsettled(name, version);
                        if waiting.is_empty() && !self.sweeping(name, m.id) {
                            start.push(m.id);
                        } else if waiting != m.progress.waiting_for {
                            let id = m.id;
                            let _ = self.ctld.record(name, |c| {
                                c.migration_mut(id)?.progress.waiting_for = waiting;
                                Ok(())
                            });
                        }
                    }
                    MigrationState::Moving { version } => {
                        let masters = master(c, &m.from).zip(master(c, &m.to));
                        if !m.paused && m.progress.failed.is_none() && !self.sweeping(name, m.id) {
                            if let Some(masters) = masters {
                                self.spawn(Job {
                                    cluster: name.clone(),
                                    id: m.id,
                                    version,
                                    masters,
                                });
                            }
                        }
                    }
                    MigrationState::Done | MigrationState::Cancelled => {}
                }
            }
            if !block.is_empty() {
                self.advance(name, &block, false);
            }
            if !start.is_empty() {
                self.advance(name, &start, true);
            }
        }
    }

    /// Moves migrations `ids` to the phase `next(new version)`, in one new
    /// version.
    fn advance(&self, cluster: &str, ids: &[u64], moving: bool) {
        let advance = Change::Advance {
            ids: ids.to_vec(),
            moving,
            now_ms: unix_ms(),
        };
        match self.ctld.change(cluster, &advance) {
            Ok((c, _)) => {
                tracing::info!(
                    cluster,
                    ?ids,
                    version = c.version,
                    moving,
                    "migrations advanced"
                );
            }
            Err(e) => self.note(cluster, ids, format!("cannot advance: {e}")),
        }
    }

    /// Logs and records an error of migrations `ids`, once per message.
    fn note(&self, cluster: &str, ids: &[u64], msg: String) {
        let _ = self.ctld.record(cluster, |c| {
            for &id in ids {
                let p = &mut c.migration_mut(id)?.progress;
                if p.errors.last() != Some(&msg) {
                    tracing::warn!(cluster, migration = id, "{msg}");
                    crate::metrics::global().migration_errors(cluster, 1);
                    crate::events::emit(
                        cluster,
                        "migration",
                        serde_json::json!({
                            "step": "error", "id": id, "error": msg,
                        }),
                    );
                    p.error(msg.clone());
                }
            }
            Ok(())
        });
    }

    fn spawn(&mut self, job: Job) {
        let stop = Arc::new(AtomicBool::new(false));
        let (ctld, j, s) = (self.ctld.clone(), job.clone(), stop.clone());
        match std::thread::Builder::new()
            .name(format!("keyway-sweep-{}", job.id))
            .spawn(move || sweep::run(&ctld, &j, &s))
        {
            Ok(thread) => {
                crate::events::emit(
                    &job.cluster,
                    "migration",
                    serde_json::json!({
                        "step": "sweep-started", "id": job.id, "version": job.version,
                        "source": job.masters.0, "target": job.masters.1,
                    }),
                );
                self.ctld
                    .sweep(&job.cluster, job.id, Some(job.masters.clone()));
                self.sweeps
                    .insert((job.cluster.clone(), job.id), Running { job, stop, thread });
            }
            Err(e) => tracing::error!("cannot start a sweep thread: {e}"),
        }
    }

    /// Asks sweeps to stop whose migration no longer wants them, or whose
    /// source or target has a new master (the next sweep uses it).
    fn stop_unwanted(&self, state: &State) {
        for r in self.sweeps.values() {
            let wanted = state.clusters.get(&r.job.cluster).is_some_and(|c| {
                c.migration(r.job.id).is_ok_and(|m| {
                    m.state
                        == (MigrationState::Moving {
                            version: r.job.version,
                        })
                        && !m.paused
                        && m.progress.failed.is_none()
                        && master(c, &m.from).zip(master(c, &m.to)).as_ref() == Some(&r.job.masters)
                })
            });
            if !wanted {
                r.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Collects sweeps that ended and acts on how they did.
    fn reap(&mut self) {
        let done: Vec<(String, u64)> = self
            .sweeps
            .iter()
            .filter(|(_, r)| r.thread.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            let Some(r) = self.sweeps.remove(&key) else {
                continue;
            };
            let ended = r
                .thread
                .join()
                .unwrap_or_else(|_| Ended::Failed("the sweep thread panicked".into()));
            self.ctld.sweep(&r.job.cluster, r.job.id, None);
            let (cluster, id, version) = (&r.job.cluster, r.job.id, r.job.version);
            match ended {
                Ended::Empty => {
                    let finish = Change::FinishMigration {
                        id,
                        version,
                        now_ms: unix_ms(),
                    };
                    match self.ctld.change(cluster, &finish) {
                        Ok((c, _)) => {
                            tracing::info!(
                                cluster,
                                migration = id,
                                version = c.version,
                                "migration finished"
                            );
                            let m = c.migration(id).ok();
                            let slots = m.map_or(0, |m| u64::from(m.slot_count()));
                            let keys = m.map_or(0, |m| m.progress.keys_moved);
                            crate::metrics::global().migration_slots_done(cluster, slots);
                            crate::events::emit(
                                cluster,
                                "migration",
                                serde_json::json!({
                                    "step": "finished", "id": id, "version": c.version,
                                    "slots": slots, "keys_moved": keys,
                                }),
                            );
                        }
                        Err(e) => tracing::info!(cluster, migration = id, "not finished: {e}"),
                    }
                }
                Ended::Failed(why) => {
                    tracing::error!(cluster, migration = id, "sweep failed: {why}");
                    crate::metrics::global().migration_errors(cluster, 1);
                    crate::events::emit(
                        cluster,
                        "migration",
                        serde_json::json!({
                            "step": "failed", "id": id, "why": why,
                        }),
                    );
                    let _ = self.ctld.record(cluster, |c| {
                        let m = c.migration_mut(id)?;
                        if m.state == (MigrationState::Moving { version }) {
                            m.progress.error(why.clone());
                            m.progress.failed = Some(why);
                        }
                        Ok(())
                    });
                }
                Ended::Stopped => {}
            }
        }
    }

    /// Stops every sweep and waits for them (each records its progress).
    fn shutdown(&mut self) {
        for r in self.sweeps.values() {
            r.stop.store(true, Ordering::Relaxed);
        }
        for (_, r) in self.sweeps.drain() {
            let _ = r.thread.join();
            self.ctld.sweep(&r.job.cluster, r.job.id, None);
        }
    }
}
