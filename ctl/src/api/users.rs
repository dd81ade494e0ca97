//! A cluster's client users: `GET`/`PUT /v1/clusters/{name}/users`. A `PUT`
//! replaces the whole list; clear text passwords (`>pass`, `<pass`) are
//! replaced by their SHA-256 before the change is made, so they are never
//! stored, logged or sent to a data plane.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{blocking, json, on_cluster, Api, Reply};
use crate::model::{users, Change};
use crate::wire::ClusterUsers;

pub(super) async fn list(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(name) = path?;
    blocking(move || {
        let c = api.ctld.cluster(&name)?;
        json(
            StatusCode::OK,
            &ClusterUsers {
                version: c.version,
                users: c.users,
            },
        )
    })
    .await
}

pub(super) async fn set(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    on_cluster(api, path, body, move |api, name, req: ClusterUsers| {
        let change = Change::SetUsers {
            users: users::prepare(&req.users)?,
        };
        let (c, _) = api.ctld.change(&name, &change)?;
        json(
            StatusCode::OK,
            &ClusterUsers {
                version: c.version,
                users: c.users,
            },
        )
    })
    .await
}
