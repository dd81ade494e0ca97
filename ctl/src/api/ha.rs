//! High availability endpoints: a group's switchover (or forced failover)
//! and a cluster's health-check and failover settings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{blocking, json, on_cluster, parse, Api, Reply};
use crate::daemon::unix_ms;
use crate::health::probe::Probe;
use crate::health::{choose_replica, ServerState};
use crate::model::names::check_lease;
use crate::model::slots::quote;
use crate::model::{Change, FailoverKind, ModelError};
use crate::wire::{ClusterEdit, FailoverRequest, FailoverStarted};

pub(super) async fn failover(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (Path((name, group)), body) = (path?, body?);
    let (ctld, n, gr) = (api.ctld.clone(), name.clone(), group.clone());
    let (req, c, g) = blocking(move || {
        let req: FailoverRequest = if body.is_empty() {
            FailoverRequest::default()
        } else {
            parse(&body)?
        };
        let c = ctld.cluster(&n)?;
        let g = c.groups[c.group_index(&gr)?].clone();
        Ok((req, c, g))
    })
    .await?;
    // The group's servers as they are now (ctld's last checks may be an
    // interval old: a master promoted a moment ago, a replica just synced).
    let states = fresh_states(&c.name, &g).await;
    blocking(move || {
        let now = Instant::now();
        let master = states.get(&g.master).cloned();
        let master_up = master
            .as_ref()
            .is_some_and(|s| s.up() && s.replication.as_ref().is_some_and(|r| r.is_master()));
        if !master_up && !req.force {
            let why =
                match &master {
                    Some(s) if s.up() => format!(
                        "the group's master {} says it is a replica: point the group at its real \
                     master (keywayctl group --master), or give force to promote a replica now",
                        g.master
                    ),
                    other => format!(
                    "the master of group {group:?} does not answer ({}), so its replica cannot \
                     catch up: automatic failover handles a failed master, or give force to \
                     promote a replica now, losing what it lacks",
                    other.as_ref().map_or("not checked".into(), |s| s.last_error.clone())
                ),
                };
            return Err(ModelError::conflict(why).into());
        }
        let master_offset = master.and_then(|s| s.replication).map_or(0, |r| r.offset);
        let candidates = match &req.to {
            Some(to) => {
                if !g.replicas.iter().any(|r| r.address == *to) {
                    return Err(ModelError::not_found(format!(
                        "group {group:?} has no replica {}",
                        quote(to)
                    ))
                    .into());
                }
                crate::model::Group {
                    replicas: g
                        .replicas
                        .iter()
                        .filter(|r| r.address == *to)
                        .cloned()
                        .collect(),
                    ..g.clone()
                }
            }
            None => g.clone(),
        };
        let (to, offset) = choose_replica(
            &candidates,
            |a| states.get(a).cloned(),
            master_offset,
            &c.ha,
            true,
            now,
        )
        .or_else(|why| match (&req.to, req.force) {
            (Some(to), true) => Ok((to.clone(), 0)),
            _ => Err(ModelError::conflict(format!(
                "group {group:?}: {why}{}",
                if req.to.is_some() {
                    ""
                } else {
                    " (name one with to, and force)"
                }
            ))),
        })?;
        let kind = if master_up {
            FailoverKind::Switchover
        } else {
            FailoverKind::Automatic
        };
        let begin = Change::BeginFailover {
            group: group.clone(),
            kind,
            from: g.master.clone(),
            to: to.clone(),
            offsets: (master_offset, offset),
            now_ms: unix_ms(),
        };
        let (_, applied) = api.ctld.change(&name, &begin)?;
        let id = applied.ids[0];
        tracing::info!(cluster = %name, %group, id, %to, ?kind, "failover requested");
        json(
            StatusCode::ACCEPTED,
            &FailoverStarted {
                failover: id,
                to,
                kind,
            },
        )
    })
    .await
}

pub(super) async fn edit_cluster(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    on_cluster(api, path, body, move |api, name, e: ClusterEdit| {
        if let Some(l) = e.lease_ms {
            check_lease(l).map_err(ModelError::from)?;
        }
        let settings = Change::Settings {
            check_interval_ms: e.check_interval_ms,
            down_after_ms: e.down_after_ms,
            auto_failover: e.auto_failover,
            max_lag_bytes: e.max_lag_bytes,
            lease_ms: e.lease_ms,
        };
        let (c, _) = api.ctld.change(&name, &settings)?;
        json(StatusCode::OK, &c)
    })
    .await
}

/// Checks the master and replicas of `g` now, all at once, each within a
/// second.
async fn fresh_states(cluster: &str, g: &crate::model::Group) -> HashMap<String, ServerState> {
    let mut checks = tokio::task::JoinSet::new();
    for a in g.addresses() {
        let a = a.to_string();
        let reach = crate::reach::Reach::of(cluster, g);
        checks.spawn(async move {
            let at = Instant::now();
            let r = Probe::new(&a, reach).check(Duration::from_secs(1)).await;
            let mut s = ServerState::default();
            s.record(at, r);
            (a, s)
        });
    }
    let mut out = HashMap::new();
    while let Some(r) = checks.join_next().await {
        if let Ok((a, s)) = r {
            out.insert(a, s);
        }
    }
    out
}
