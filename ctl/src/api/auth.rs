//! The API's one authentication check: every route but `/healthz` passes
//! through [`require_token`], which admits a request whose `Authorization:
//! Bearer <token>` matches ctld's token (`crate::auth::Auth`), and answers
//! 401 otherwise. When TLS comes, it wraps the transport; this check stays.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::auth::Auth;

/// Admits the request, or answers 401.
pub(super) async fn require_token(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if auth.admits_header(presented) {
        return next.run(req).await;
    }
    let mut resp = ApiError(
        StatusCode::UNAUTHORIZED,
        "authentication required: send the token keyway-ctld was started with as \
         'Authorization: Bearer <token>' (keywayctl --token-file PATH or KEYWAY_TOKEN)"
            .into(),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}
