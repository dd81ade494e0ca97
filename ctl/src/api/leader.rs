//! The API in front of the roles (`crate::leader`): `/healthz` (liveness,
//! whatever the role), `GET /v1/leader` (who is active), `GET /metrics`
//! (Prometheus, with the token like every route but `/healthz`), and every other
//! route passed to the active term's routes — or, on a standby, answered
//! 503 with `{"error": "standby: the active keyway-ctld is ADDR", "leader":
//! {"api", "control"}}`, reads and writes alike, so that a client with
//! several addresses (`keywayctl --api A,B,C`) moves on to the next.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tokio::sync::watch;
use tower_service::Service;

use crate::auth::Auth;
use crate::leader::{Addresses, Role};

/// What the routes share.
#[derive(Debug, Clone)]
struct Roles {
    roles: watch::Receiver<Role>,
    me: Arc<Addresses>,
}

/// `GET /v1/leader`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LeaderView {
    /// This ctld is the active one.
    pub active: bool,
    /// This ctld's addresses.
    pub this: Addresses,
    /// The active ctld's, if known.
    pub leader: Option<Addresses>,
}

async fn leader(State(r): State<Roles>) -> Response {
    let role = r.roles.borrow().clone();
    let view = match role {
        Role::Active(_) => LeaderView {
            active: true,
            this: (*r.me).clone(),
            leader: Some((*r.me).clone()),
        },
        Role::Standby(leader) => LeaderView {
            active: false,
            this: (*r.me).clone(),
            leader,
        },
    };
    axum::Json(view).into_response()
}

/// `GET /metrics`: the Prometheus text (`crate::metrics`), on the active
/// ctld and on a standby (which has `keyway_ctld_leader 0` and its
/// counters).
async fn metrics(State(r): State<Roles>) -> Response {
    let active = match &*r.roles.borrow() {
        Role::Active(a) => Some(a.ctld.clone()),
        Role::Standby(_) => None,
    };
    let text = tokio::task::spawn_blocking(move || crate::metrics::render(active.as_deref()))
        .await
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

async fn dispatch(State(r): State<Roles>, req: Request) -> Response {
    let role = r.roles.borrow().clone();
    match role {
        Role::Active(a) => {
            let mut api = a.api;
            let ready: Result<(), Infallible> =
                std::future::poll_fn(|cx| Service::<Request>::poll_ready(&mut api, cx)).await;
            match ready {
                Ok(()) => match api.call(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                },
                Err(never) => match never {},
            }
        }
        Role::Standby(leader) => {
            let error = match &leader {
                Some(a) => format!("standby: the active keyway-ctld is {}", a.api),
                None => "standby: no keyway-ctld is active right now".into(),
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "error": error, "leader": leader })),
            )
                .into_response()
        }
    }
}

/// The routes of a ctld at `me` whose role `roles` follows. Every route but
/// `/healthz` requires the token, if ctld has one.
pub fn router(roles: watch::Receiver<Role>, auth: Auth, me: Addresses) -> Router {
    let state = Roles {
        roles,
        me: Arc::new(me),
    };
    let guarded = Router::new()
        .route("/v1/leader", get(leader))
        .route("/metrics", get(metrics))
        .fallback(dispatch)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth),
            super::auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(guarded)
        .layer(axum::middleware::from_fn(super::observe::front))
        .with_state(state)
}
