//! Clusters, groups, slots, snapshots and data planes: the API's lifecycle
//! endpoints. Each handler parses its body, resolves the addresses it brings
//! (refusing one that does not resolve unless forced), and makes its change
//! through `Ctld::change` — every step but the resolution on the blocking
//! pool.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::{blocking, json, on_cluster, parse, Api, ApiError, Reply};
use crate::model::cluster::check_group;
use crate::model::names::{MAX_GROUPS, MAX_REPLICAS};
use crate::model::{Change, Cluster, Group, GroupChanges, ModelError};
use crate::wire::{Assign, ClusterSummary, ClusterView, CreateCluster, Force, GroupEdit};

/// Checks groups before their addresses are resolved: how many, and each
/// one's own fields (so only well-formed addresses are looked up).
fn check_groups(groups: &[Group]) -> Result<(), ApiError> {
    if groups.len() > MAX_GROUPS {
        return Err(ModelError::invalid(format!(
            "{} groups: a cluster has at most {MAX_GROUPS}",
            groups.len()
        ))
        .into());
    }
    for g in groups {
        check_group(g)?;
    }
    Ok(())
}

fn addresses(groups: &[Group]) -> Vec<String> {
    groups
        .iter()
        .flat_map(Group::addresses)
        .map(str::to_string)
        .collect()
}

pub(super) async fn list(State(api): State<Api>) -> Reply {
    blocking(move || {
        let state = api.ctld.state();
        let mut planes: HashMap<String, usize> = HashMap::new();
        for d in api.ctld.dataplanes(None) {
            *planes.entry(d.cluster).or_default() += 1;
        }
        let list: Vec<ClusterSummary> = state
            .clusters
            .values()
            .map(|c| ClusterSummary {
                name: c.name.clone(),
                version: c.version,
                slots: c.slot_count,
                groups: c.groups.len(),
                dataplanes: planes.get(&c.name).copied().unwrap_or(0),
            })
            .collect();
        json(StatusCode::OK, &list)
    })
    .await
}

pub(super) async fn create(
    State(api): State<Api>,
    force: Result<Query<Force>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let Query(force) = force?;
    let body = body?;
    let req: CreateCluster = blocking(move || {
        let req: CreateCluster = parse(&body)?;
        check_groups(&req.groups)?;
        Ok(req)
    })
    .await?;
    let resolved = api
        .resolve(&addresses(&req.groups), &[], force.force)
        .await?;
    blocking(move || {
        let lease = req
            .lease_ms
            .unwrap_or(api.ctld.default_lease.as_millis() as u64);
        let mut cluster = Cluster::create(&req.name, req.slots, req.groups, lease, &resolved)?;
        if let Some(ha) = req.ha {
            ha.check()?;
            cluster.ha = ha;
        }
        json(StatusCode::CREATED, &api.ctld.create(cluster)?)
    })
    .await
}

pub(super) async fn show(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(name) = path?;
    blocking(move || {
        let cluster = api.ctld.cluster(&name)?;
        let view = ClusterView {
            health: api.ctld.health(&cluster),
            cluster,
            dataplanes: api.ctld.dataplanes(Some(&name)),
        };
        json(StatusCode::OK, &view)
    })
    .await
}

pub(super) async fn delete(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(name) = path?;
    blocking(move || {
        api.ctld.delete(&name)?;
        json(StatusCode::OK, &serde_json::json!({ "deleted": name }))
    })
    .await
}

/// The addresses cluster `name` uses now (to compare new ones with).
async fn known(api: &Api, name: &str) -> Result<Vec<String>, ApiError> {
    let (ctld, name) = (api.ctld.clone(), name.to_string());
    blocking(move || Ok(addresses(&ctld.cluster(&name)?.groups))).await
}

pub(super) async fn grow(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    force: Result<Query<Force>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (Path(name), Query(force), body) = (path?, force?, body?);
    let g: Group = blocking(move || {
        let g: Group = parse(&body)?;
        check_group(&g)?;
        Ok(g)
    })
    .await?;
    let known = known(&api, &name).await?;
    let resolved = api
        .resolve(&addresses(std::slice::from_ref(&g)), &known, force.force)
        .await?;
    // The new group gets the cluster's functions before it can own a slot
    // (`crate::functions`).
    let (ctld, cluster, new) = (api.ctld.clone(), name.clone(), g.clone());
    blocking(move || {
        let existing = ctld.cluster(&cluster)?.groups;
        crate::functions::copy_to_new_group(&cluster, &existing, &new)
            .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e.to_string()))
    })
    .await?;
    blocking(move || {
        json(
            StatusCode::OK,
            &api.ctld
                .change(&name, &Change::Grow { group: g, resolved })?
                .0,
        )
    })
    .await
}

pub(super) async fn shrink(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Reply {
    let Path((name, group)) = path?;
    blocking(move || {
        json(
            StatusCode::OK,
            &api.ctld.change(&name, &Change::Shrink { group })?.0,
        )
    })
    .await
}

pub(super) async fn edit_group(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
    force: Result<Query<Force>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (Path((name, group)), Query(force), body) = (path?, force?, body?);
    let e: GroupEdit = blocking(move || {
        let e: GroupEdit = parse(&body)?;
        for (what, n) in [
            ("add_replicas", e.add_replicas.len()),
            ("remove_replicas", e.remove_replicas.len()),
            ("replica_zones", e.replica_zones.len()),
        ] {
            if n > MAX_REPLICAS {
                return Err(ModelError::invalid(format!(
                    "{what}: {n} entries; a group has at most {MAX_REPLICAS} replicas"
                ))
                .into());
            }
        }
        Ok(e)
    })
    .await?;
    let new: Vec<String> = e
        .master
        .iter()
        .cloned()
        .chain(e.add_replicas.iter().map(|r| r.address.clone()))
        .collect();
    let resolved = if new.is_empty() {
        Default::default()
    } else {
        let known = known(&api, &name).await?;
        api.resolve(&new, &known, force.force).await?
    };
    blocking(move || {
        let edit = GroupChanges {
            master: e.master,
            zone: e.zone,
            add_replicas: e.add_replicas,
            remove_replicas: e.remove_replicas,
            replica_zones: e.replica_zones,
            read_from: e.read_from,
            tls: e.tls,
            tls_server_name: e.tls_server_name,
        };
        let change = Change::EditGroup {
            group,
            edit,
            resolved,
        };
        let (c, _) = api.ctld.change(&name, &change)?;
        json(StatusCode::OK, &c)
    })
    .await
}

pub(super) async fn assign(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    on_cluster(api, path, body, move |api, name, a: Assign| {
        let assign = Change::Assign {
            slots: a.slots,
            group: a.group,
        };
        let (c, _) = api.ctld.change(&name, &assign)?;
        json(StatusCode::OK, &c)
    })
    .await
}

pub(super) async fn cluster_dataplanes(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(name) = path?;
    blocking(move || {
        api.ctld.cluster(&name)?;
        json(StatusCode::OK, &api.ctld.dataplanes(Some(&name)))
    })
    .await
}

pub(super) async fn all_dataplanes(State(api): State<Api>) -> Reply {
    blocking(move || json(StatusCode::OK, &api.ctld.dataplanes(None))).await
}

pub(super) async fn forget_dataplane(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(id) = path?;
    blocking(move || {
        api.ctld.forget(&id)?;
        json(StatusCode::OK, &serde_json::json!({ "forgotten": id }))
    })
    .await
}

pub(super) async fn export(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(name) = path?;
    blocking(move || json(StatusCode::OK, &api.ctld.cluster(&name)?)).await
}

pub(super) async fn apply(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    force: Result<Query<Force>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (Path(name), Query(q), body) = (path?, force?, body?);
    let ctld = api.ctld.clone();
    let n = name.clone();
    // Addresses the cluster already has are known; only the others must
    // resolve.
    let (desired, new, known) = blocking(move || {
        let desired: Cluster = parse(&body)?;
        check_groups(&desired.groups)?;
        let known = addresses(&ctld.cluster(&n)?.groups);
        let have: HashSet<&str> = known.iter().map(String::as_str).collect();
        let new: Vec<String> = addresses(&desired.groups)
            .into_iter()
            .filter(|a| !have.contains(a.as_str()))
            .collect();
        Ok((desired, new, known))
    })
    .await?;
    let resolved = api.resolve(&new, &known, q.force).await?;
    blocking(move || {
        let apply = Change::Apply {
            desired: Box::new(desired),
            resolved,
            force: q.force,
        };
        let (c, _) = api.ctld.change(&name, &apply)?;
        json(StatusCode::OK, &c)
    })
    .await
}
