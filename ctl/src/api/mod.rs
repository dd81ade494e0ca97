//! The HTTP JSON API (seed 002's dashboard interface, Trove-shaped per seed
//! 000). Every error is `{"error": "..."}` with a status that says what kind:
//! 400 bad input, 401 no or wrong token, 404 no such thing, 408 too slow,
//! 409 conflicts with the current state, 403 refused by a rule, 413 body too
//! large, 500 not saved.
//!
//! Handlers never do slow work on the async runtime: parsing bodies,
//! changing and validating the model, saving (fsync) and serializing replies
//! run on the blocking pool ([`blocking`]); resolving addresses runs there
//! too, bounded ([`crate::resolve`]). Bodies are bounded ([`MAX_BODY`],
//! [`MAX_CLUSTER_BODY`]), and so is everything in them (`crate::model`).
//! [`serve`] bounds connections and time. The request and response bodies
//! are in [`crate::wire`], shared with `keywayctl`.

mod auth;
mod clusters;
mod events;
mod ha;
pub mod leader;
mod migrations;
pub mod observe;
pub mod serve;
mod users;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use serve::{serve, serve_tls, Limits};

use crate::auth::Auth;
use crate::daemon::{ChangeError, Shared};
use crate::model::{ErrorKind, ModelError, Resolved};
use crate::resolve::Resolver;
use crate::wire::ErrorBody;

/// The largest request body, but for the two below.
pub const MAX_BODY: usize = 1 << 20;

/// The largest body of a cluster creation or snapshot apply, which carry a
/// whole cluster: 16384 groups with a replica each fit; and of a cluster's
/// client users (`keyway_capnp::users::MAX_USERS` of `MAX_RULES` bytes).
pub const MAX_CLUSTER_BODY: usize = 8 << 20;

/// The longest error message sent (serde's messages quote the input).
const MAX_MESSAGE: usize = 512;

/// An error response.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut message = self.1;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        (self.0, axum::Json(ErrorBody { error: message })).into_response()
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

macro_rules! rejection {
    ($t:ty, $what:literal) => {
        impl From<$t> for ApiError {
            fn from(e: $t) -> ApiError {
                ApiError(e.status(), format!(concat!($what, ": {}"), e.body_text()))
            }
        }
    };
}
rejection!(BytesRejection, "bad request body");
rejection!(PathRejection, "bad path");
rejection!(QueryRejection, "bad query");

/// A reply or an error.
pub(crate) type Reply = Result<Response, ApiError>;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Api {
    /// The daemon.
    pub ctld: Shared,
    /// Resolves the addresses requests give.
    pub resolver: Arc<Resolver>,
    /// Who may call.
    pub auth: Arc<Auth>,
}

impl Api {
    /// The handlers' state over `ctld`.
    pub fn new(ctld: Shared, auth: Auth) -> Api {
        Api {
            ctld,
            resolver: Arc::new(Resolver::default()),
            auth: Arc::new(auth),
        }
    }

    /// Resolves `new` (each must resolve unless `force`) and `known` (the
    /// cluster's addresses, to compare with).
    pub(crate) async fn resolve(
        &self,
        new: &[String],
        known: &[String],
        force: bool,
    ) -> Result<Resolved, ApiError> {
        let lookups = self.resolver.resolve(new, known).await;
        if !force {
            if let Some((addr, why)) = lookups.failed.first() {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "cannot resolve {addr}: {why}. Data planes could not reach it; fix the \
                         address, or send it with ?force=true (keywayctl --force) to accept it anyway"
                    ),
                ));
            }
        }
        Ok(lookups.resolved)
    }
}

/// Runs `f` on the blocking pool: model changes, validation, fsync, JSON;
/// as the request's actor, whom the events of its changes name.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let actor = crate::events::capture();
    tokio::task::spawn_blocking(move || crate::events::run_as(actor, f))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}"),
            )
        })?
}

/// The shape of a handler on `/v1/clusters/{name}…` with a JSON body: the
/// path's and body's rejections answered, then, on the blocking pool, the
/// body parsed and `f` run with the cluster's name.
pub(crate) async fn on_cluster<T: DeserializeOwned + Send + 'static>(
    api: Api,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    f: impl FnOnce(Api, String, T) -> Reply + Send + 'static,
) -> Reply {
    let (Path(name), body) = (path?, body?);
    blocking(move || {
        let req: T = parse(&body)?;
        f(api, name, req)
    })
    .await
}

/// Parses a JSON body.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// A JSON reply.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Reply {
    let body = serde_json::to_vec(v).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The API's routes over a shared daemon. Every route but `/healthz`
/// requires the token, if ctld has one.
pub fn router(api: Api) -> Router {
    let big = DefaultBodyLimit::max(MAX_CLUSTER_BODY);
    let v1 = Router::new()
        .route(
            "/v1/clusters",
            get(clusters::list).post(clusters::create).layer(big),
        )
        .route(
            "/v1/clusters/{name}",
            get(clusters::show)
                .delete(clusters::delete)
                .patch(ha::edit_cluster),
        )
        .route(
            "/v1/clusters/{name}/groups/{group}/failover",
            post(ha::failover),
        )
        .route("/v1/clusters/{name}/groups", post(clusters::grow))
        .route(
            "/v1/clusters/{name}/groups/{group}",
            delete(clusters::shrink).patch(clusters::edit_group),
        )
        .route("/v1/clusters/{name}/slots", post(clusters::assign))
        .route(
            "/v1/clusters/{name}/dataplanes",
            get(clusters::cluster_dataplanes),
        )
        .route(
            "/v1/clusters/{name}/snapshot",
            get(clusters::export).put(clusters::apply).layer(big),
        )
        .route(
            "/v1/clusters/{name}/migrations",
            get(migrations::list).post(migrations::start),
        )
        .route("/v1/clusters/{name}/migrations/{id}", get(migrations::one))
        .route(
            "/v1/clusters/{name}/migrations/{id}/{action}",
            post(migrations::action),
        )
        .route(
            "/v1/clusters/{name}/users",
            get(users::list).put(users::set).layer(big),
        )
        .route("/v1/clusters/{name}/rebalance", post(migrations::rebalance))
        .route("/v1/clusters/{name}/drain", post(migrations::drain))
        .route("/v1/clusters/{name}/events", get(events::list))
        .route("/v1/dataplanes", get(clusters::all_dataplanes))
        .route("/v1/dataplanes/{id}", delete(clusters::forget_dataplane))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such API endpoint".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            api.auth.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn(observe::routes));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(v1)
        .with_state(api)
}
