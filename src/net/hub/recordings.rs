//! The hub's recordings API (`[record]`, docs/recording.md): list, fetch and delete, each
//! scoped to the channels the caller's token may join, like a console's hello.
//!
//! - `GET /api/recordings?channel=&talker=&from_ms=&to_ms=&limit=`: metadata, newest first
//!   (`limit` 1-1000, default 100; `from_ms`/`to_ms`: Unix milliseconds of the start).
//! - `GET /api/recordings/{id}`: the Ogg Opus file (`audio/ogg`).
//! - `DELETE /api/recordings/{id}`: 204.
//!
//! The token comes only as `Authorization: Bearer <token>`: a request with `?token=` is
//! refused (400), since a URL ends up in access logs, proxies and browser history. An unknown
//! token is 401, and an address that presented unknown tokens too often is refused with 429
//! and `Retry-After` before its token is looked at ([`AuthFailures`], shared with the
//! WebSocket hello). A recording of a channel the token may not join is 404, as one that does
//! not exist (its existence is not told). Ids are looked up in the index, never used as paths.
//!
//! [`AuthFailures`]: super::limits::AuthFailures

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::debug;

use super::Shared;
use crate::core::record::RecordingMeta;
use crate::record::RecordingsApi;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The token of `Authorization: Bearer <token>`, the only place the API takes it from.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// A refusal: its status and why, as `{"error": "..."}`, and for 429 the seconds to wait.
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

fn refuse(status: StatusCode, message: &str) -> ApiError {
    ApiError { status, message: message.to_string(), retry_after: None }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// Who is asking: the channels the request's token may see, or the refusal.
fn scope(
    shared: &Shared,
    remote: SocketAddr,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Vec<String>, ApiError> {
    if shared.recordings.is_none() {
        return Err(refuse(StatusCode::NOT_FOUND, "this box records nothing ([record] is not configured)"));
    }
    if query.contains_key("token") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "a token in the URL is refused (it would be logged): send Authorization: Bearer <token>",
        ));
    }
    let now = Instant::now();
    if let Err(wait) = shared.auth_failures.check(remote.ip(), now) {
        // Whole seconds, rounded up (Retry-After has no fractions).
        let secs = (wait.as_millis().div_ceil(1000) as u64).max(1);
        return Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("too many unknown tokens from this address: retry in {secs} s"),
            retry_after: Some(secs),
        });
    }
    let token = bearer(headers).ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "no token"))?;
    shared.auth.visible_channels(token).ok_or_else(|| {
        shared.auth_failures.failed(remote.ip(), now);
        debug!(%remote, "recordings API: unknown token");
        refuse(StatusCode::UNAUTHORIZED, "unknown token")
    })
}

/// What fetch and delete share: the caller's scope, and the recording named in the path if
/// that scope may see it (404 otherwise, as for one that does not exist).
fn one(
    shared: &Shared,
    remote: SocketAddr,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    id: &str,
) -> Result<(RecordingMeta, RecordingsApi), ApiError> {
    let allowed = scope(shared, remote, headers, query)?;
    let api = shared.recordings.as_ref().ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no recordings"))?;
    let index = api.index.lock().unwrap_or_else(|e| e.into_inner());
    let meta = index.entries.get(id).filter(|m| allowed.contains(&m.channel)).cloned();
    drop(index);
    meta.map(|m| (m, api.clone())).ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such recording"))
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let allowed = scope(&shared, remote, &headers, &query)?;
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        query
            .get(key)
            .map(|v| v.parse::<u64>().map_err(|_| refuse(StatusCode::BAD_REQUEST, &format!("{key}: not a number"))))
            .transpose()
    };
    let (from, to) = (number("from_ms")?, number("to_ms")?);
    let limit = number("limit")?.map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));
    let api = shared.recordings.as_ref().ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no recordings"))?;
    let recordings: Vec<RecordingMeta> = {
        let index = api.index.lock().unwrap_or_else(|e| e.into_inner());
        index
            .entries
            .values()
            .rev()
            .filter(|m| allowed.contains(&m.channel))
            .filter(|m| query.get("channel").is_none_or(|c| *c == m.channel))
            .filter(|m| query.get("talker").is_none_or(|t| *t == m.talker))
            .filter(|m| from.is_none_or(|f| m.start_unix_ms >= f))
            .filter(|m| to.is_none_or(|t| m.start_unix_ms <= t))
            .take(limit)
            .cloned()
            .collect()
    };
    let body = serde_json::json!({ "recordings": recordings });
    Ok(([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}

pub(super) async fn fetch(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (meta, api) = one(&shared, remote, &headers, &query, &id)?;
    // Read whole (a 3-minute transmission is about 1 MB): a retention that unlinks it now
    // does not cut the answer short.
    let bytes = tokio::fs::read(api.dir.join(&meta.file))
        .await
        .map_err(|_| refuse(StatusCode::NOT_FOUND, "no such recording"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "audio/ogg".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", meta.file)),
        ],
        bytes,
    )
        .into_response())
}

pub(super) async fn delete(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (meta, api) = one(&shared, remote, &headers, &query, &id)?;
    api.delete(&meta.id).map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    tracing::info!(id = %meta.id, channel = %meta.channel, "recording deleted (API)");
    Ok(StatusCode::NO_CONTENT.into_response())
}
