//! Migrations: start (`migrate`, `rebalance`, `drain`), list, show, pause,
//! resume, cancel. Slot ranges are parsed into a bitmap
//! (`crate::model::SlotSet`) and settings checked against their bounds
//! (`crate::model::migration::check_settings`) before anything changes.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{blocking, json, on_cluster, Api, ApiError, Reply};
use crate::daemon::{unix_ms, Shared};
use crate::model::{Change, Cluster, ModelError};
use crate::wire::{MigrationView, Rebalance, StartMigration};

fn views(c: &Cluster, ids: &[u64]) -> Vec<MigrationView> {
    c.migrations
        .iter()
        .filter(|m| ids.contains(&m.id))
        .map(MigrationView::of)
        .collect()
}

pub(super) async fn list(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(name) = path?;
    blocking(move || {
        let c = api.ctld.cluster(&name)?;
        let v: Vec<MigrationView> = c.migrations.iter().map(MigrationView::of).collect();
        json(StatusCode::OK, &v)
    })
    .await
}

pub(super) async fn one(
    State(api): State<Api>,
    path: Result<Path<(String, u64)>, PathRejection>,
) -> Reply {
    let Path((name, id)) = path?;
    blocking(move || {
        json(
            StatusCode::OK,
            &MigrationView::of(&api.ctld.migration(&name, id)?),
        )
    })
    .await
}

pub(super) async fn start(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    on_cluster(api, path, body, move |api, name, req: StartMigration| {
        let migrate = Change::Migrate {
            slots: req.slots,
            to: req.to,
            settings: req.settings,
            paused: req.paused,
            now_ms: unix_ms(),
        };
        let (c, applied) = api.ctld.change(&name, &migrate)?;
        json(StatusCode::CREATED, &views(&c, &applied.ids))
    })
    .await
}

/// Starts the migrations of a plan (`rebalance`, `drain`); an empty plan
/// changes nothing. Blocking.
fn start_plan(ctld: &Shared, name: &str, req: &Rebalance) -> Reply {
    let plan = ctld.cluster(name)?.plan_balance(req.group.as_deref())?;
    if plan.is_empty() {
        return json(StatusCode::OK, &Vec::<MigrationView>::new());
    }
    let balance = Change::Balance {
        drain: req.group.clone(),
        settings: req.settings.clone(),
        paused: req.paused,
        now_ms: unix_ms(),
    };
    let (c, applied) = ctld.change(name, &balance)?;
    json(StatusCode::CREATED, &views(&c, &applied.ids))
}

pub(super) async fn rebalance(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    on_cluster(api, path, body, move |api, name, req: Rebalance| {
        if req.group.is_some() {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "rebalance takes no group; drain moves one group's slots away".into(),
            ));
        }
        start_plan(&api.ctld, &name, &req)
    })
    .await
}

pub(super) async fn drain(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    on_cluster(api, path, body, move |api, name, req: Rebalance| {
        let Some(group) = &req.group else {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "drain needs the group to empty".into(),
            ));
        };
        let c = api.ctld.cluster(&name)?;
        let g = c.group_index(group)?;
        if c.slots_of(g).is_empty() {
            return Err(ModelError::conflict(format!(
                "group {group:?} owns no slots: nothing to drain; shrink it"
            ))
            .into());
        }
        start_plan(&api.ctld, &name, &req)
    })
    .await
}

pub(super) async fn action(
    State(api): State<Api>,
    path: Result<Path<(String, u64, String)>, PathRejection>,
    // Read (and ignored) so that the connection can serve the next request.
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (Path((name, id, action)), _) = (path?, body?);
    blocking(move || {
        let change = match action.as_str() {
            "pause" => Change::Pause { id },
            "resume" => Change::Resume { id },
            "cancel" => Change::Cancel {
                id,
                now_ms: unix_ms(),
            },
            other => {
                // The cluster is named first, as when the change was applied.
                api.ctld.cluster(&name)?;
                return Err(ModelError::not_found(format!(
                    "no migration action {}: pause, resume or cancel",
                    crate::model::slots::quote(other)
                ))
                .into());
            }
        };
        let (c, _) = api.ctld.change(&name, &change)?;
        json(StatusCode::OK, &MigrationView::of(c.migration(id)?))
    })
    .await
}
