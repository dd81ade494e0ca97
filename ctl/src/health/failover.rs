//! Drives one failover of a group, from its recorded progress to its end
//! (DESIGN §5). The group is already held (the version recorded as
//! `hold_version` is published, see `Cluster::begin_failover`); then:
//!
//! 1. wait until every data plane of the cluster has acked that version or
//!    lost its lease: from then on nothing routes to the old master;
//! 2. a switchover only: pause writes on the old master (`CLIENT PAUSE …
//!    WRITE`, against clients that bypass keyway) and wait until the
//!    replica's offset reaches the master's;
//! 3. `REPLICAOF NO ONE` on the replica, and check it says `role:master`;
//! 4. a switchover: make the old master a replica of the new one (an
//!    automatic failover leaves the old master, which is down, to the
//!    supervisor: it is made a replica when it returns, before anything
//!    routes to it);
//! 5. point the other replicas at the new master;
//! 6. publish the version with the new master and without the hold.
//!
//! Every step is idempotent, so a ctld restarted (or newly elected) in the
//! middle runs the failover again from step 1. A failover that cannot
//! promote its replica is abandoned: the hold is lifted and the reason
//! recorded in the cluster's failover history.

use std::time::{Duration, Instant};

use super::probe::Probe;
use crate::daemon::{unix_ms, Shared};
use crate::model::{FailoverKind, FailoverProgress};

/// How long a server command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a switchover waits for every data plane to hold the group, and
/// then for the replica to catch up, before it gives up (the group's
/// commands wait meanwhile).
pub const SWITCHOVER_WAIT: Duration = Duration::from_secs(5);

/// How long writes stay paused on a switchover's old master at most (it is
/// unpaused once demoted, or when the switchover gives up).
const PAUSE_MS: &[u8] = b"10000";

/// The failover of `group` numbered `id`, if it is still under way.
fn progress(ctld: &Shared, cluster: &str, group: &str, id: u64) -> Option<FailoverProgress> {
    let c = ctld.state().clusters.get(cluster)?.clone();
    let g = c.groups.iter().find(|g| g.name == group)?;
    g.failover.clone().filter(|p| p.id == id)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

/// Runs failover `id` of `cluster`/`group` to its end; returns its outcome.
pub async fn drive(ctld: Shared, cluster: String, group: String, id: u64) -> String {
    let Some(p) = progress(&ctld, &cluster, &group, id) else {
        return "no longer under way".into();
    };
    let began = Instant::now();
    let outcome = match run(&ctld, &cluster, &group, &p).await {
        Ok(old_is_replica) => {
            let (c, g, ctld2) = (cluster.clone(), group.clone(), ctld.clone());
            blocking(move || {
                ctld2
                    .change(&c, |cl| {
                        cl.finish_failover(&g, id, old_is_replica, unix_ms())
                            .map(|_| ())
                    })
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .map(|()| "done".to_string())
        }
        Err(why) => Err(why),
    };
    match outcome {
        Ok(done) => {
            tracing::info!(%cluster, %group, id, from = %p.from, to = %p.to,
                kind = ?p.kind, took_ms = began.elapsed().as_millis() as u64,
                "failover done: {} is the master", p.to);
            done
        }
        Err(why) => {
            tracing::warn!(%cluster, %group, id, from = %p.from, to = %p.to,
                "failover abandoned: {why}");
            let (c, g, w) = (cluster.clone(), group.clone(), why.clone());
            let r = blocking(move || {
                ctld.change(&c, |cl| cl.abandon_failover(&g, id, &w, unix_ms()))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await;
            if let Err(e) = r {
                tracing::error!(%cluster, %group, id, "could not record the abandoned failover: {e}");
            }
            why
        }
    }
}

/// Steps 1–5; true if the old master was made a replica.
async fn run(
    ctld: &Shared,
    cluster: &str,
    group: &str,
    p: &FailoverProgress,
) -> Result<bool, String> {
    let switchover = p.kind == FailoverKind::Switchover;
    // 1. Every data plane holds the group (or has lost its lease).
    let start = Instant::now();
    loop {
        if progress(ctld, cluster, group, p.id).is_none() {
            return Err("the failover was ended elsewhere".into());
        }
        let waiting = ctld.unsettled(cluster, p.hold_version);
        if waiting.is_empty() {
            break;
        }
        if switchover && start.elapsed() > SWITCHOVER_WAIT {
            return Err(format!(
                "data planes {} did not hold the group within {} s",
                waiting.join(", "),
                SWITCHOVER_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tracing::info!(
        cluster,
        group,
        id = p.id,
        waited_ms = start.elapsed().as_millis() as u64,
        "every data plane holds the group"
    );
    let mut new = Probe::new(&p.to);
    let mut old = Probe::new(&p.from);
    // 2. A switchover: the replica catches up with the paused master.
    if switchover {
        old.command(&[b"CLIENT", b"PAUSE", PAUSE_MS, b"WRITE"], COMMAND_TIMEOUT)
            .await
            .map_err(|e| format!("cannot pause writes on the master {}: {e}", p.from))?;
        let caught_up = catch_up(&mut old, &mut new).await;
        if let Err(e) = caught_up {
            let _ = old.command(&[b"CLIENT", b"UNPAUSE"], COMMAND_TIMEOUT).await;
            return Err(e);
        }
        tracing::info!(
            cluster,
            group,
            id = p.id,
            at_ms = start.elapsed().as_millis() as u64,
            "the replica has caught up"
        );
    }
    // 3. Promote.
    let mut last = String::new();
    let mut promoted = false;
    for _ in 0..3 {
        match new.replicaof(None, COMMAND_TIMEOUT).await {
            Ok(()) => match new.check(COMMAND_TIMEOUT).await {
                Ok(r) if r.is_master() => {
                    promoted = true;
                    break;
                }
                Ok(r) => last = format!("it still says role:{}", r.role),
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !promoted {
        if switchover {
            let _ = old.command(&[b"CLIENT", b"UNPAUSE"], COMMAND_TIMEOUT).await;
        }
        return Err(format!("cannot promote {}: {last}", p.to));
    }
    // 4. A switchover's old master follows the new one at once.
    let mut old_is_replica = false;
    if switchover {
        match old.replicaof(Some(&p.to), COMMAND_TIMEOUT).await {
            Ok(()) => old_is_replica = true,
            Err(e) => tracing::warn!(cluster, group, old = %p.from,
                "cannot make the old master a replica now ({e}); it will be when it answers"),
        }
        let _ = old.command(&[b"CLIENT", b"UNPAUSE"], COMMAND_TIMEOUT).await;
    }
    // 5. The other replicas follow the new master (the supervisor retries
    // those that do not answer now).
    let others: Vec<String> = ctld
        .state()
        .clusters
        .get(cluster)
        .and_then(|c| c.groups.iter().find(|g| g.name == group))
        .map(|g| {
            g.replicas
                .iter()
                .map(|r| r.address.clone())
                .filter(|a| *a != p.to)
                .collect()
        })
        .unwrap_or_default();
    for r in others {
        if let Err(e) = Probe::new(&r).replicaof(Some(&p.to), COMMAND_TIMEOUT).await {
            tracing::warn!(cluster, group, replica = %r,
                "cannot point the replica at the new master now ({e}); retried later");
        }
    }
    Ok(old_is_replica)
}

/// Waits until `new`'s processed offset reaches `old`'s.
async fn catch_up(old: &mut Probe, new: &mut Probe) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let m = old
            .check(COMMAND_TIMEOUT)
            .await
            .map_err(|e| format!("the master {} does not answer: {e}", old.addr()))?;
        let r = new
            .check(COMMAND_TIMEOUT)
            .await
            .map_err(|e| format!("the replica {} does not answer: {e}", new.addr()))?;
        if !m.is_master() {
            return Err(format!("{} is no longer a master", old.addr()));
        }
        if r.offset >= m.offset && r.link_up {
            return Ok(());
        }
        tracing::debug!(
            master = m.offset,
            replica = r.offset,
            link = r.link_up,
            "catching up"
        );
        if start.elapsed() > SWITCHOVER_WAIT {
            return Err(format!(
                "the replica did not catch up within {} s (offset {} of {})",
                SWITCHOVER_WAIT.as_secs(),
                r.offset,
                m.offset
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
