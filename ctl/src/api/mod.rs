//! The HTTP JSON API (seed 002's dashboard interface, Trove-shaped per seed
//! 000). Every error is `{"error": "..."}` with a status that says what kind:
//! 400 bad input, 404 no such thing, 409 conflicts with the current state, 403
//! refused by a rule, 500 not saved.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::daemon::unix_ms;
use crate::daemon::{ChangeError, DataPlaneView, Shared};
use crate::model::slots::parse_ranges;
use crate::model::{
    Cluster, ErrorKind, Group, Migration, MigrationState, ModelError, MoveSettings, Replica,
};

/// An error response.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> ApiError {
        let status = match e.kind {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        };
        ApiError(status, e.message)
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> ApiError {
        match e {
            ChangeError::Model(m) => m.into(),
            ChangeError::Store(s) => ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the change was not saved: {s}"),
            ),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {}", e.body_text()),
        )
    }
}

type Result<T> = std::result::Result<Json<T>, ApiError>;

/// `POST /v1/clusters`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    /// Name.
    pub name: String,
    /// Slot count (default 16384).
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Groups; the slots are split evenly among them in this order.
    pub groups: Vec<Group>,
    /// Lease for its data planes (default: ctld's `--lease`).
    #[serde(default)]
    pub lease_ms: Option<u64>,
}

fn default_slots() -> u32 {
    16384
}

/// `PATCH /v1/clusters/{name}/groups/{group}`: any of these edits.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEdit {
    /// New master address.
    #[serde(default)]
    pub master: Option<String>,
    /// The master's zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// Replicas to add.
    #[serde(default)]
    pub add_replicas: Vec<Replica>,
    /// Replicas to remove, by address.
    #[serde(default)]
    pub remove_replicas: Vec<String>,
    /// Zones of existing replicas, by address.
    #[serde(default)]
    pub replica_zones: BTreeMap<String, String>,
}

/// `POST /v1/clusters/{name}/slots`: give unowned slots to a group.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// Ranges, e.g. `"0-100,200"`.
    pub slots: String,
    /// The group.
    pub group: String,
}

/// One line of `GET /v1/clusters`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Slot count.
    pub slots: u32,
    /// Number of groups.
    pub groups: usize,
    /// Data planes known to serve it.
    pub dataplanes: usize,
}

/// `GET /v1/clusters/{name}`.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// The desired state.
    #[serde(flatten)]
    pub cluster: Cluster,
    /// Its data planes.
    pub dataplanes: Vec<DataPlaneView>,
}

/// `POST /v1/clusters/{name}/migrations`: move slots to a group.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartMigration {
    /// Ranges, e.g. `"0-100,200"`.
    pub slots: String,
    /// The target group.
    pub to: String,
    /// How the sweep moves keys.
    #[serde(default)]
    pub settings: MoveSettings,
    /// Start with the sweep paused (data planes still move keys on demand).
    #[serde(default)]
    pub paused: bool,
}

/// `POST /v1/clusters/{name}/rebalance` and `/drain`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rebalance {
    /// For drain: the group whose slots all move to the others.
    #[serde(default)]
    pub group: Option<String>,
    /// How the sweeps move keys.
    #[serde(default)]
    pub settings: MoveSettings,
    /// Start with the sweeps paused.
    #[serde(default)]
    pub paused: bool,
}

/// A migration as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationView {
    /// The migration.
    #[serde(flatten)]
    pub migration: Migration,
    /// Its slots, as operators write them.
    pub slots: String,
    /// Seconds left at the recent rate, while moving (an estimate: data
    /// planes move keys too).
    pub eta_s: Option<u64>,
}

impl MigrationView {
    /// The view of `m`.
    pub fn of(m: &Migration) -> MigrationView {
        let p = &m.progress;
        let eta_s = match (m.state, p.estimated_keys) {
            (MigrationState::Moving { .. }, Some(est)) if p.rate > 0 => {
                Some(est.saturating_sub(p.keys_moved) / p.rate)
            }
            _ => None,
        };
        MigrationView {
            slots: m.slots_text(),
            migration: m.clone(),
            eta_s,
        }
    }
}

/// `?force=true` on snapshot apply.
#[derive(Debug, Deserialize)]
pub struct ApplyQuery {
    #[serde(default)]
    force: bool,
}

/// The API's routes over a shared daemon.
pub fn router(ctld: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/clusters", get(list).post(create))
        .route("/v1/clusters/{name}", get(show).delete(delete))
        .route("/v1/clusters/{name}/groups", post(grow))
        .route(
            "/v1/clusters/{name}/groups/{group}",
            axum::routing::delete(shrink).patch(edit_group),
        )
        .route("/v1/clusters/{name}/slots", post(assign))
        .route("/v1/clusters/{name}/dataplanes", get(cluster_dataplanes))
        .route("/v1/clusters/{name}/snapshot", get(export).put(apply))
        .route(
            "/v1/clusters/{name}/migrations",
            get(migrations).post(start_migration),
        )
        .route("/v1/clusters/{name}/migrations/{id}", get(migration))
        .route(
            "/v1/clusters/{name}/migrations/{id}/{action}",
            post(migration_action),
        )
        .route("/v1/clusters/{name}/rebalance", post(rebalance))
        .route("/v1/clusters/{name}/drain", post(drain))
        .route("/v1/dataplanes", get(all_dataplanes))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such API endpoint".into()) })
        .with_state(ctld)
}

async fn list(State(ctld): State<Shared>) -> Result<Vec<ClusterSummary>> {
    let state = ctld.state();
    Ok(Json(
        state
            .clusters
            .values()
            .map(|c| ClusterSummary {
                name: c.name.clone(),
                version: c.version,
                slots: c.slot_count,
                groups: c.groups.len(),
                dataplanes: state
                    .dataplanes
                    .values()
                    .filter(|d| d.cluster == c.name)
                    .count(),
            })
            .collect(),
    ))
}

async fn create(
    State(ctld): State<Shared>,
    body: std::result::Result<Json<CreateCluster>, JsonRejection>,
) -> std::result::Result<(StatusCode, Json<Cluster>), ApiError> {
    let Json(req) = body?;
    let lease = req
        .lease_ms
        .unwrap_or(ctld.default_lease.as_millis() as u64);
    let cluster = Cluster::create(&req.name, req.slots, req.groups, lease)?;
    Ok((StatusCode::CREATED, Json(ctld.create(cluster)?)))
}

async fn show(State(ctld): State<Shared>, Path(name): Path<String>) -> Result<ClusterView> {
    let cluster = ctld.cluster(&name)?;
    Ok(Json(ClusterView {
        cluster,
        dataplanes: ctld.dataplanes(Some(&name)),
    }))
}

async fn delete(State(ctld): State<Shared>, Path(name): Path<String>) -> Result<serde_json::Value> {
    ctld.delete(&name)?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

async fn grow(
    State(ctld): State<Shared>,
    Path(name): Path<String>,
    body: std::result::Result<Json<Group>, JsonRejection>,
) -> Result<Cluster> {
    let Json(g) = body?;
    Ok(Json(ctld.change(&name, |c| c.grow(g))?))
}

async fn shrink(
    State(ctld): State<Shared>,
    Path((name, group)): Path<(String, String)>,
) -> Result<Cluster> {
    Ok(Json(ctld.change(&name, |c| c.shrink(&group))?))
}

async fn edit_group(
    State(ctld): State<Shared>,
    Path((name, group)): Path<(String, String)>,
    body: std::result::Result<Json<GroupEdit>, JsonRejection>,
) -> Result<Cluster> {
    let Json(e) = body?;
    Ok(Json(ctld.change(&name, |c| {
        if let Some(m) = &e.master {
            c.set_master(&group, m)?;
        }
        if let Some(z) = &e.zone {
            c.set_zone(&group, None, z)?;
        }
        for r in &e.add_replicas {
            c.add_replica(&group, r.clone())?;
        }
        for a in &e.remove_replicas {
            c.remove_replica(&group, a)?;
        }
        for (a, z) in &e.replica_zones {
            c.set_zone(&group, Some(a), z)?;
        }
        Ok(())
    })?))
}

async fn assign(
    State(ctld): State<Shared>,
    Path(name): Path<String>,
    body: std::result::Result<Json<Assign>, JsonRejection>,
) -> Result<Cluster> {
    let Json(a) = body?;
    Ok(Json(ctld.change(&name, |c| {
        let ranges = parse_ranges(&a.slots, c.slot_count).map_err(ModelError::invalid)?;
        c.assign(&ranges, &a.group)
    })?))
}

async fn cluster_dataplanes(
    State(ctld): State<Shared>,
    Path(name): Path<String>,
) -> Result<Vec<DataPlaneView>> {
    ctld.cluster(&name)?;
    Ok(Json(ctld.dataplanes(Some(&name))))
}

async fn all_dataplanes(State(ctld): State<Shared>) -> Result<Vec<DataPlaneView>> {
    Ok(Json(ctld.dataplanes(None)))
}

async fn export(State(ctld): State<Shared>, Path(name): Path<String>) -> Result<Cluster> {
    Ok(Json(ctld.cluster(&name)?))
}

async fn apply(
    State(ctld): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<ApplyQuery>,
    body: std::result::Result<Json<Cluster>, JsonRejection>,
) -> Result<Cluster> {
    let Json(desired) = body?;
    Ok(Json(ctld.change(&name, |c| {
        if !q.force && desired.version != c.version {
            return Err(ModelError::conflict(format!(
                "cluster {name:?} changed since this snapshot was exported (version {} then, {} now); \
                 export it again, or apply with force",
                desired.version, c.version
            )));
        }
        c.apply(&desired)
    })?))
}

fn views(c: &Cluster, ids: &[u64]) -> Vec<MigrationView> {
    c.migrations
        .iter()
        .filter(|m| ids.contains(&m.id))
        .map(MigrationView::of)
        .collect()
}

async fn migrations(
    State(ctld): State<Shared>,
    Path(name): Path<String>,
) -> Result<Vec<MigrationView>> {
    let c = ctld.cluster(&name)?;
    Ok(Json(c.migrations.iter().map(MigrationView::of).collect()))
}

async fn migration(
    State(ctld): State<Shared>,
    Path((name, id)): Path<(String, u64)>,
) -> Result<MigrationView> {
    Ok(Json(MigrationView::of(&ctld.migration(&name, id)?)))
}

async fn start_migration(
    State(ctld): State<Shared>,
    Path(name): Path<String>,
    body: std::result::Result<Json<StartMigration>, JsonRejection>,
) -> std::result::Result<(StatusCode, Json<Vec<MigrationView>>), ApiError> {
    let Json(req) = body?;
    let mut ids = Vec::new();
    let c = ctld.change(&name, |c| {
        let ranges = parse_ranges(&req.slots, c.slot_count).map_err(ModelError::invalid)?;
        ids = c.migrate(&ranges, &req.to, &req.settings, req.paused, unix_ms())?;
        Ok(())
    })?;
    Ok((StatusCode::CREATED, Json(views(&c, &ids))))
}

/// Starts the migrations of a plan (`rebalance`, `drain`); an empty plan
/// changes nothing.
fn start_plan(
    ctld: &Shared,
    name: &str,
    req: &Rebalance,
) -> std::result::Result<(StatusCode, Json<Vec<MigrationView>>), ApiError> {
    let plan = ctld.cluster(name)?.plan_balance(req.group.as_deref())?;
    if plan.is_empty() {
        return Ok((StatusCode::OK, Json(Vec::new())));
    }
    let mut ids = Vec::new();
    let c = ctld.change(name, |c| {
        let now = unix_ms();
        for (ranges, to) in c.plan_balance(req.group.as_deref())? {
            ids.extend(c.migrate(&ranges, &to, &req.settings, req.paused, now)?);
        }
        Ok(())
    })?;
    Ok((StatusCode::CREATED, Json(views(&c, &ids))))
}

async fn rebalance(
    State(ctld): State<Shared>,
    Path(name): Path<String>,
    body: std::result::Result<Json<Rebalance>, JsonRejection>,
) -> std::result::Result<(StatusCode, Json<Vec<MigrationView>>), ApiError> {
    let Json(req) = body?;
    if req.group.is_some() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "rebalance takes no group; drain moves one group's slots away".into(),
        ));
    }
    start_plan(&ctld, &name, &req)
}

async fn drain(
    State(ctld): State<Shared>,
    Path(name): Path<String>,
    body: std::result::Result<Json<Rebalance>, JsonRejection>,
) -> std::result::Result<(StatusCode, Json<Vec<MigrationView>>), ApiError> {
    let Json(req) = body?;
    let Some(group) = &req.group else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "drain needs the group to empty".into(),
        ));
    };
    let c = ctld.cluster(&name)?;
    let g = c.group_index(group)?;
    if c.slots_of(g).is_empty() {
        return Err(ModelError::conflict(format!(
            "group {group:?} owns no slots: nothing to drain; shrink it"
        ))
        .into());
    }
    start_plan(&ctld, &name, &req)
}

async fn migration_action(
    State(ctld): State<Shared>,
    Path((name, id, action)): Path<(String, u64, String)>,
    // Read (and ignored) so that the connection can serve the next request.
    _body: axum::body::Bytes,
) -> Result<MigrationView> {
    let c = ctld.change(&name, |c| match action.as_str() {
        "pause" => c.pause(id),
        "resume" => c.resume(id),
        "cancel" => c.cancel(id, unix_ms()),
        other => Err(ModelError::not_found(format!(
            "no migration action {other:?}: pause, resume or cancel"
        ))),
    })?;
    Ok(Json(MigrationView::of(c.migration(id)?)))
}
