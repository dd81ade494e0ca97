//! Counts every API request by route pattern and status
//! (`keyway_ctld_api_requests_total`) and runs it as its events' actor
//! (`crate::events::as_actor`: the peer and `METHOD /route/{pattern}`).
//!
//! Two layers: [`routes`] on the active term's routes (which know the
//! pattern of a `/v1/clusters/…` request), and [`front`] on the routes in
//! front of the roles (`/metrics`, `/v1/leader`, a standby's answers),
//! which counts what the first did not. A path no route matches counts as
//! route `unmatched`: label values stay bounded.

use std::net::SocketAddr;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::events::{self, Actor};

/// The peer of a request (`serve` puts it in every request's extensions).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The route label of a path no route matches.
pub const UNMATCHED: &str = "unmatched";

/// Marks a response as counted.
#[derive(Debug, Clone, Copy)]
struct Counted;

fn route(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_string(), |m| m.as_str().to_string())
}

/// Counts a request of the active term's routes and runs it as its actor.
pub(super) async fn routes(req: Request, next: Next) -> Response {
    let route = route(&req);
    let peer = req.extensions().get::<Peer>().map(|p| p.0.to_string());
    let actor = Actor::api(peer, format!("{} {route}", req.method()));
    let mut resp = events::as_actor(actor, next.run(req)).await;
    crate::metrics::global().api_request(&route, resp.status().as_u16());
    resp.extensions_mut().insert(Counted);
    resp
}

/// Counts a request the active term's routes did not.
pub(super) async fn front(req: Request, next: Next) -> Response {
    let route = route(&req);
    let resp = next.run(req).await;
    if resp.extensions().get::<Counted>().is_none() {
        crate::metrics::global().api_request(&route, resp.status().as_u16());
    }
    resp
}
