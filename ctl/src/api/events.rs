//! `GET /v1/clusters/{name}/events[?since=SEQ]`: a cluster's recent
//! structured events (`crate::events`), oldest first, those numbered above
//! `since` (0 by default: every one kept).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{blocking, json, Api, Reply};

/// The query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Since {
    #[serde(default)]
    since: u64,
}

/// The handler.
pub(super) async fn list(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Since>, QueryRejection>,
) -> Reply {
    let (Path(name), Query(q)) = (path?, query?);
    blocking(move || {
        api.ctld.state().cluster(&name)?;
        json(
            StatusCode::OK,
            &crate::events::journal().since(&name, q.since),
        )
    })
    .await
}
