//! Drives one failover of a group, from its recorded progress to its end
//! (DESIGN §5). The group is already held (the version recorded as
//! `hold_version` is published, see `Cluster::begin_failover`); then:
//!
//! 1. wait until every data plane of the cluster has acked that version or
//!    lost its lease (from then on nothing routes to the old master), and
//!    until no migration sweep moves keys to or from it (the orchestrator
//!    stops them while the group fails over);
//! 2. if the replica already says `role:master`, a previous run promoted
//!    it: go to step 5. Otherwise, a switchover pauses writes on the old
//!    master (`CLIENT PAUSE … WRITE`, against clients that bypass keyway)
//!    and waits until the replica, following it, has its offset;
//! 3. `REPLICAOF NO ONE` on the replica, and check it says `role:master`
//!    (if that cannot be confirmed, the replica is pointed back at the old
//!    master and the failover abandoned);
//! 4. a switchover: make the old master a replica of the new one;
//! 5. publish the version with the new master and without the hold (the old
//!    master is listed as a replica only once ctld sees it follow the new
//!    one with its link up); retried until it is saved — past step 3 a
//!    failover is never abandoned;
//! 6. point the other replicas at the new master, all at once (the
//!    supervisor retries those that do not answer).
//!
//! Every step is idempotent, so a ctld restarted (or newly elected) in the
//! middle runs the failover again from step 1. A switchover must end within
//! [`SWITCHOVER_BUDGET`], inside the data planes' default hold limit (2 s),
//! or it is abandoned before its promotion: held commands never time out.

use std::time::{Duration, Instant};

use super::probe::{Probe, ProbeError, Replication};
use crate::daemon::{unix_ms, ChangeError, Shared};
use crate::metrics::FailoverResult;
use crate::model::{Change, FailoverKind, FailoverProgress};
use crate::reach::Reach;

/// Logs and keeps a step of failover `p` of `cluster`/`group`
/// (`crate::events`), with `extra` fields.
fn step(cluster: &str, group: &str, p: &FailoverProgress, name: &str, extra: serde_json::Value) {
    let mut what = serde_json::json!({
        "step": name, "group": group, "id": p.id, "failover": p.kind, "from": p.from, "to": p.to,
    });
    if let (Some(w), serde_json::Value::Object(extra)) = (what.as_object_mut(), extra) {
        w.extend(extra);
    }
    crate::events::emit(cluster, "failover", what);
}

/// How long a server command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A switchover that has not promoted its replica this long after it
/// started is abandoned (the data planes' `hold_timeout` is 2 s by default:
/// a held command would get `-TRYAGAIN` after it).
pub const SWITCHOVER_BUDGET: Duration = Duration::from_millis(1500);

/// How long writes stay paused on a switchover's old master at most (it is
/// unpaused once demoted, or when the switchover gives up).
const PAUSE_MS: &[u8] = b"3000";

/// How long an automatic failover waits for sweeps touching the group to
/// stop (a MIGRATE in flight ends within its timeout).
const SWEEP_WAIT: Duration = Duration::from_secs(30);

/// The failover of `group` numbered `id`, if it is still under way.
fn progress(ctld: &Shared, cluster: &str, group: &str, id: u64) -> Option<FailoverProgress> {
    let state = ctld.state();
    let g = state
        .clusters
        .get(cluster)?
        .groups
        .iter()
        .find(|g| g.name == group)?;
    g.failover.clone().filter(|p| p.id == id)
}

/// Why a step of a failover failed: the failover's recorded outcome.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// Another ctld (or an operator) ended it.
    #[error("the failover was ended elsewhere")]
    EndedElsewhere,
    /// A switchover step did not finish within `SWITCHOVER_BUDGET`.
    #[error("{what} within {budget_ms} ms; nothing was changed")]
    OverBudget {
        /// What did not happen.
        what: String,
        /// The budget.
        budget_ms: u128,
    },
    /// The replica had not caught up when the budget ran out.
    #[error("{budget} (offset {offset} of {of})")]
    Behind {
        /// The budget error.
        budget: Box<FailoverError>,
        /// The replica's offset.
        offset: u64,
        /// The master's.
        of: u64,
    },
    /// A sweep touching the group did not stop within `SWEEP_WAIT`.
    #[error("a migration sweep on the group did not stop")]
    SweepDidNotStop,
    /// Writes could not be paused on the master.
    #[error("cannot pause writes on the master {master}: {source}")]
    Pause {
        /// The master.
        master: String,
        /// Why.
        source: ProbeError,
    },
    /// The master did not answer a check.
    #[error("the master {addr} does not answer: {source}")]
    MasterSilent {
        /// The master.
        addr: String,
        /// Why.
        source: ProbeError,
    },
    /// The replica did not answer a check.
    #[error("the replica {addr} does not answer: {source}")]
    ReplicaSilent {
        /// The replica.
        addr: String,
        /// Why.
        source: ProbeError,
    },
    /// The old master says it is a replica now.
    #[error("{0} is no longer a master")]
    NoLongerMaster(String),
    /// The replica follows another master.
    #[error("{replica} does not replicate {from} (it follows {follows})")]
    NotFollowing {
        /// The replica.
        replica: String,
        /// The master it should follow.
        from: String,
        /// What it follows.
        follows: String,
    },
    /// `REPLICAOF NO ONE` was not confirmed in three tries.
    #[error("cannot promote {replica}: {last}")]
    Promote {
        /// The replica.
        replica: String,
        /// The last try's failure.
        last: String,
    },
}

/// Why a failover's change could not be saved.
#[derive(Debug, thiserror::Error)]
enum SaveError {
    /// The change was refused or not saved.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The blocking task did not finish.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ChangeError> + Send + 'static,
) -> Result<T, SaveError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// Runs failover `id` of `cluster`/`group` to its end; returns its outcome.
pub async fn drive(ctld: Shared, cluster: String, group: String, id: u64) -> String {
    let Some(p) = progress(&ctld, &cluster, &group, id) else {
        return "no longer under way".into();
    };
    let began = Instant::now();
    step(&cluster, &group, &p, "driving", serde_json::json!({}));
    match run(&ctld, &cluster, &group, &p).await {
        Ok(()) => {
            publish(&ctld, &cluster, &group, id).await;
            tracing::info!(%cluster, %group, id, from = %p.from, to = %p.to,
                kind = ?p.kind, took_ms = began.elapsed().as_millis() as u64,
                "failover done: {} is the master", p.to);
            crate::metrics::global().failover(
                &cluster,
                &group,
                FailoverResult::Done,
                began.elapsed(),
            );
            step(
                &cluster,
                &group,
                &p,
                "done",
                serde_json::json!({ "took_ms": began.elapsed().as_millis() as u64 }),
            );
            repoint_others(&ctld, &cluster, &group, &p.to).await;
            "done".into()
        }
        Err(why) => {
            let why = why.to_string();
            tracing::warn!(%cluster, %group, id, from = %p.from, to = %p.to,
                "failover abandoned: {why}");
            crate::metrics::global().failover(
                &cluster,
                &group,
                FailoverResult::Failed,
                began.elapsed(),
            );
            step(
                &cluster,
                &group,
                &p,
                "abandoned",
                serde_json::json!({
                    "why": why, "took_ms": began.elapsed().as_millis() as u64,
                }),
            );
            let (c, g, w) = (cluster.clone(), group.clone(), why.clone());
            let r = blocking(move || {
                let abandon = Change::AbandonFailover {
                    group: g,
                    id,
                    why: w,
                    now_ms: unix_ms(),
                };
                ctld.change(&c, &abandon).map(|_| ())
            })
            .await;
            if let Err(e) = r {
                tracing::error!(%cluster, %group, id, "could not record the abandoned failover: {e}");
            }
            why
        }
    }
}

/// Step 5: saves and publishes the new master, retrying until it is saved
/// (or the failover is no longer under way: another ctld finished it).
async fn publish(ctld: &Shared, cluster: &str, group: &str, id: u64) {
    let mut wait = Duration::from_millis(100);
    loop {
        let (c, g, ctld2) = (cluster.to_string(), group.to_string(), ctld.clone());
        let r = blocking(move || {
            ctld2
                .change(
                    &c,
                    &Change::FinishFailover {
                        group: g,
                        id,
                        now_ms: unix_ms(),
                    },
                )
                .map(|_| ())
        })
        .await;
        match r {
            Ok(()) => return,
            Err(_) if progress(ctld, cluster, group, id).is_none() => return,
            Err(e) => {
                tracing::error!(
                    cluster,
                    group,
                    id,
                    "the promoted master is not published yet ({e}); retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How ctld reaches the servers of `group` of `cluster` (plain, with the
/// cluster's login, if the group is gone).
fn reach_of(ctld: &Shared, cluster: &str, group: &str) -> Reach {
    ctld.state()
        .clusters
        .get(cluster)
        .and_then(|c| c.groups.iter().find(|g| g.name == group))
        .map_or_else(|| Reach::plain(cluster), |g| Reach::of(cluster, g))
}

/// Step 6: every other replica of the group follows the new master.
async fn repoint_others(ctld: &Shared, cluster: &str, group: &str, master: &str) {
    let (others, reach): (Vec<String>, Reach) = ctld
        .state()
        .clusters
        .get(cluster)
        .and_then(|c| c.groups.iter().find(|g| g.name == group))
        .map(|g| {
            let others = g
                .replicas
                .iter()
                .chain(&g.demoting)
                .map(|r| r.address.clone())
                .collect();
            (others, Reach::of(cluster, g))
        })
        .unwrap_or_default();
    let mut set = tokio::task::JoinSet::new();
    for r in others {
        let (m, reach) = (master.to_string(), reach.clone());
        set.spawn(async move {
            if let Err(e) = Probe::new(&r, reach)
                .replicaof(Some(&m), COMMAND_TIMEOUT)
                .await
            {
                tracing::warn!(replica = %r,
                    "cannot point the replica at the new master now ({e}); retried later");
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Steps 1–4.
async fn run(
    ctld: &Shared,
    cluster: &str,
    group: &str,
    p: &FailoverProgress,
) -> Result<(), FailoverError> {
    let switchover = p.kind == FailoverKind::Switchover;
    let started = Instant::now();
    let over_budget = |what: &str| {
        (switchover && started.elapsed() > SWITCHOVER_BUDGET).then(|| FailoverError::OverBudget {
            what: what.to_string(),
            budget_ms: SWITCHOVER_BUDGET.as_millis(),
        })
    };
    // 1. Every data plane holds the group (or has lost its lease), and no
    // sweep moves keys to or from it.
    loop {
        if progress(ctld, cluster, group, p.id).is_none() {
            return Err(FailoverError::EndedElsewhere);
        }
        let waiting = ctld.unsettled(cluster, p.hold_version);
        let sweeping = ctld.sweeping_server(cluster, &p.from);
        if waiting.is_empty() && !sweeping {
            break;
        }
        if let Some(e) = over_budget(&format!(
            "data planes {} did not hold the group, or sweeps did not stop,",
            waiting.join(", ")
        )) {
            return Err(e);
        }
        if sweeping && waiting.is_empty() && started.elapsed() > SWEEP_WAIT {
            return Err(FailoverError::SweepDidNotStop);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tracing::info!(
        cluster,
        group,
        id = p.id,
        waited_ms = started.elapsed().as_millis() as u64,
        "every data plane holds the group"
    );
    step(
        cluster,
        group,
        p,
        "held",
        serde_json::json!({
            "waited_ms": started.elapsed().as_millis() as u64,
        }),
    );
    let reach = reach_of(ctld, cluster, group);
    let mut new = Probe::new(&p.to, reach.clone());
    let mut old = Probe::new(&p.from, reach);
    // 2. Promoted by an earlier run (of this ctld or another)?
    if new
        .check(COMMAND_TIMEOUT)
        .await
        .is_ok_and(|r| r.is_master())
    {
        tracing::info!(
            cluster,
            group,
            id = p.id,
            "the replica was promoted already"
        );
        step(cluster, group, p, "promoted-already", serde_json::json!({}));
        if switchover {
            let _ = old.replicaof(Some(&p.to), COMMAND_TIMEOUT).await;
            let _ = old.command(&[b"CLIENT", b"UNPAUSE"], COMMAND_TIMEOUT).await;
        }
        return Ok(());
    }
    if switchover {
        old.command(&[b"CLIENT", b"PAUSE", PAUSE_MS, b"WRITE"], COMMAND_TIMEOUT)
            .await
            .map_err(|source| FailoverError::Pause {
                master: p.from.clone(),
                source,
            })?;
        let caught_up = catch_up(&mut old, &mut new, &p.from, &|| {
            over_budget("the replica did not catch up")
        })
        .await;
        if let Err(e) = caught_up {
            let _ = old.command(&[b"CLIENT", b"UNPAUSE"], COMMAND_TIMEOUT).await;
            return Err(e);
        }
        tracing::info!(
            cluster,
            group,
            id = p.id,
            at_ms = started.elapsed().as_millis() as u64,
            "the replica has caught up"
        );
        step(
            cluster,
            group,
            p,
            "caught-up",
            serde_json::json!({
                "at_ms": started.elapsed().as_millis() as u64,
            }),
        );
    }
    // 3. Promote, and confirm.
    let mut last = String::new();
    for _ in 0..3 {
        match new.replicaof(None, COMMAND_TIMEOUT).await {
            Ok(()) => match new.check(COMMAND_TIMEOUT).await {
                Ok(r) if r.is_master() => {
                    last.clear();
                    break;
                }
                Ok(r) => last = format!("it still says role:{}", r.role),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !last.is_empty() {
        // Maybe promoted without our knowing: back to following the old
        // master, as it was (best effort; the supervisor re-points it too).
        let _ = new.replicaof(Some(&p.from), COMMAND_TIMEOUT).await;
        if switchover {
            let _ = old.command(&[b"CLIENT", b"UNPAUSE"], COMMAND_TIMEOUT).await;
        }
        return Err(FailoverError::Promote {
            replica: p.to.clone(),
            last,
        });
    }
    step(
        cluster,
        group,
        p,
        "promoted",
        serde_json::json!({
            "at_ms": started.elapsed().as_millis() as u64,
        }),
    );
    // 4. A switchover's old master follows the new one at once (if it does
    // not answer now, the supervisor makes it a replica when it does).
    if switchover {
        if let Err(e) = old.replicaof(Some(&p.to), COMMAND_TIMEOUT).await {
            tracing::warn!(cluster, group, old = %p.from,
                "cannot make the old master a replica now ({e}); it will be when it answers");
        }
        let _ = old.command(&[b"CLIENT", b"UNPAUSE"], COMMAND_TIMEOUT).await;
    }
    Ok(())
}

/// Waits until `new`, a replica of `old` (`from`), has processed `old`'s
/// whole offset; `budget` says when to give up.
async fn catch_up(
    old: &mut Probe,
    new: &mut Probe,
    from: &str,
    budget: &(dyn Fn() -> Option<FailoverError> + Sync),
) -> Result<(), FailoverError> {
    loop {
        let m = old
            .check(COMMAND_TIMEOUT)
            .await
            .map_err(|source| FailoverError::MasterSilent {
                addr: old.addr().to_string(),
                source,
            })?;
        let r =
            new.check(COMMAND_TIMEOUT)
                .await
                .map_err(|source| FailoverError::ReplicaSilent {
                    addr: new.addr().to_string(),
                    source,
                })?;
        if !m.is_master() {
            return Err(FailoverError::NoLongerMaster(old.addr().to_string()));
        }
        if !follows(&r, from) {
            return Err(FailoverError::NotFollowing {
                replica: new.addr().to_string(),
                from: from.to_string(),
                follows: r.master.as_deref().unwrap_or("nothing").to_string(),
            });
        }
        if r.offset >= m.offset && r.link_up {
            return Ok(());
        }
        if let Some(e) = budget() {
            return Err(FailoverError::Behind {
                budget: Box::new(e),
                offset: r.offset,
                of: m.offset,
            });
        }
        tracing::debug!(
            master = m.offset,
            replica = r.offset,
            link = r.link_up,
            "catching up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether replica `r` says it follows `master` (`host:port`): the same
/// port, and the same host unless one of the two is a name and the other an
/// address (which this does not resolve).
pub fn follows(r: &Replication, master: &str) -> bool {
    let Some(theirs) = r.master.as_deref() else {
        return false;
    };
    let split = |a: &str| {
        a.rsplit_once(':')
            .map(|(h, p)| (h.trim_matches(['[', ']']).to_string(), p.to_string()))
    };
    match (split(theirs), split(master)) {
        (Some((h1, p1)), Some((h2, p2))) => {
            let ip = |h: &str| h.parse::<std::net::IpAddr>().is_ok();
            p1 == p2 && (h1.eq_ignore_ascii_case(&h2) || ip(&h1) != ip(&h2))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_follows_a_master_by_port_and_host() {
        let r = |m: &str| Replication {
            role: "slave".into(),
            master: Some(m.into()),
            ..Replication::default()
        };
        assert!(follows(&r("127.0.0.1:7001"), "127.0.0.1:7001"));
        assert!(!follows(&r("127.0.0.1:7002"), "127.0.0.1:7001"));
        assert!(!follows(&r("10.0.0.2:7001"), "127.0.0.1:7001"));
        // A name against an address: not resolved here, so not refused.
        assert!(follows(&r("10.0.0.1:6379"), "redis-a:6379"));
        assert!(follows(&r("REDIS-A:6379"), "redis-a:6379"));
        assert!(!follows(&r("redis-b:6379"), "redis-a:6379"));
        assert!(!follows(&Replication::default(), "127.0.0.1:7001"));
    }
}
