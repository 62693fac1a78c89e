//! The hub's recordings API (`[record]`, docs/recording.md): list, fetch and delete, each
//! scoped to the channels the caller's token may join, like a console's hello.
//!
//! - `GET /api/recordings?channel=&talker=&from_ms=&to_ms=&limit=`: metadata, newest first
//!   (`limit` 1-1000, default 100; `from_ms`/`to_ms`: Unix milliseconds of the start).
//! - `GET /api/recordings/{id}`: the Ogg Opus file (`audio/ogg`).
//! - `DELETE /api/recordings/{id}`: 204.
//!
//! The token comes as `Authorization: Bearer <token>` or `?token=`. An unknown token is 401;
//! a recording of a channel the token may not join is 404, as one that does not exist (its
//! existence is not told). Ids are looked up in the index, never used as paths.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::core::record::RecordingMeta;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

fn token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or_else(|| query.get("token").map(String::as_str))
}

/// A refusal: its status and why, as `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 }).to_string();
        (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    ApiError(status, message.to_string()).into_response()
}

/// The channels the request's token may see, or the response refusing it.
fn scope(shared: &Shared, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Vec<String>, ApiError> {
    if shared.recordings.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, "this box records nothing ([record] is not configured)".into()));
    }
    let token = token(headers, query).ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "no token".into()))?;
    shared.auth.visible_channels(token).ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))
}

/// A recording the scope may see.
fn find(shared: &Shared, allowed: &[String], id: &str) -> Option<RecordingMeta> {
    let api = shared.recordings.as_ref()?;
    let index = api.index.lock().unwrap_or_else(|e| e.into_inner());
    index.entries.get(id).filter(|m| allowed.contains(&m.channel)).cloned()
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let allowed = match scope(&shared, &headers, &query) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        query.get(key).map(|v| v.parse::<u64>().map_err(|_| format!("{key}: not a number"))).transpose()
    };
    let (from, to, limit) = match (number("from_ms"), number("to_ms"), number("limit")) {
        (Ok(f), Ok(t), Ok(l)) => (f, t, l.map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT))),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let Some(api) = shared.recordings.as_ref() else { return error(StatusCode::NOT_FOUND, "no recordings") };
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
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

pub(super) async fn fetch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Response {
    let allowed = match scope(&shared, &headers, &query) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let (Some(meta), Some(api)) = (find(&shared, &allowed, &id), shared.recordings.as_ref()) else {
        return error(StatusCode::NOT_FOUND, "no such recording");
    };
    // Read whole (a 3-minute transmission is about 1 MB): a retention that unlinks it now
    // does not cut the answer short.
    match tokio::fs::read(api.dir.join(&meta.file)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "audio/ogg".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", meta.file)),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => error(StatusCode::NOT_FOUND, "no such recording"),
    }
}

pub(super) async fn delete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Response {
    let allowed = match scope(&shared, &headers, &query) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let (Some(meta), Some(api)) = (find(&shared, &allowed, &id), shared.recordings.as_ref()) else {
        return error(StatusCode::NOT_FOUND, "no such recording");
    };
    match api.delete(&meta.id) {
        Ok(()) => {
            tracing::info!(id = %meta.id, channel = %meta.channel, "recording deleted (API)");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
