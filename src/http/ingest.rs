//! Ingest endpoints: `POST /event` (one raw-text event) and `POST /api/v1/logs` (JSON: one
//! object, an array, or NDJSON). Both answer 202 only once the queue made every event durable.

use super::AppState;
use super::body::{Reservation, read_body};
use super::error::ApiError;
use crate::event::{Event, IngestContext, now_us, parse_json_body, parse_raw_body};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use utoipa::IntoParams;

/// Bodies larger than this are parsed on the blocking pool so that they do not stall the
/// runtime thread other requests share.
const INLINE_PARSE_MAX_BYTES: usize = 256 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RawEventParams {
    /// The event's service (default: `default`).
    #[param(min_length = 1, max_length = 32, pattern = "^[A-Za-z0-9._:/@+=-]+$")]
    service: Option<String>,
    /// The event's severity (default: info).
    #[param(value_type = Option<crate::http::openapi::SeverityName>, inline)]
    severity: Option<String>,
}

/// The request's body within the node's size limit and body budget.
async fn read_ingest_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Reservation), ApiError> {
    read_body(
        &state.inner.body_budget,
        state.inner.max_body_bytes,
        headers,
        body,
    )
    .await
}

/// Makes `events` durable, then offers them to live clients (embedded shape; in a cluster the
/// live feed follows the stream instead, so that it sees every node's events).
async fn append(state: &AppState, events: Vec<Event>) -> Result<(), ApiError> {
    let live = &state.inner.live;
    let offered = (live.fed_by_ingest() && live.has_clients()).then(|| events.clone());
    let count = events.len();
    if let Err(error) = state.inner.queue.append(events).await {
        state.inner.metrics.events_refused(count);
        return Err(error.into());
    }
    state.inner.metrics.events_accepted(count);
    for event in offered.into_iter().flatten() {
        live.offer(Arc::new(event));
    }
    Ok(())
}

/// One raw-text event; 202 once it is durable.
#[utoipa::path(
    post,
    path = "/event",
    tag = "ingest",
    params(RawEventParams),
    request_body(content = crate::http::openapi::RawMessage, content_type = "text/plain", description = "The message, UTF-8 (gzip with Content-Encoding)"),
    responses((status = 202, description = "Durable", body = crate::http::openapi::IngestAccepted))
)]
pub async fn post_event(
    State(state): State<AppState>,
    params: Result<Query<RawEventParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (bytes, permit) = read_ingest_body(&state, &headers, body).await?;
    let context = IngestContext {
        node: &state.inner.node_name,
        now_us: now_us(),
    };
    let event = parse_raw_body(
        &bytes,
        params.service.as_deref(),
        params.severity.as_deref(),
        context,
    )?;
    drop((bytes, permit));
    let id = event.id.clone();
    append(&state, vec![event]).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": 1, "id": id}))))
}

/// Events as one JSON object, a JSON array or NDJSON; accepted whole or rejected whole.
#[utoipa::path(
    post,
    path = "/api/v1/logs",
    tag = "ingest",
    request_body(
        description = "One event, an array of events, or one event per line (NDJSON)",
        content(
            (Vec<crate::http::openapi::EventIn> = "application/json"),
            (String = "application/x-ndjson"),
        )
    ),
    responses((status = 202, description = "Every event durable", body = crate::http::openapi::IngestAccepted))
)]
pub async fn post_logs(
    State(state): State<AppState>,
    params: Result<Query<NoParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (bytes, permit) = read_ingest_body(&state, &headers, body).await?;
    let node = state.inner.node_name.clone();
    let now = now_us();
    let parse = move |bytes: Bytes| {
        parse_json_body(
            &bytes,
            IngestContext {
                node: &node,
                now_us: now,
            },
        )
    };
    let events = if bytes.len() <= INLINE_PARSE_MAX_BYTES {
        parse(bytes)?
    } else {
        tokio::task::spawn_blocking(move || parse(bytes))
            .await
            .map_err(|e| ApiError::bad_request(format!("parsing the body failed: {e}")))??
    };
    drop(permit);
    let accepted = events.len();
    append(&state, events).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": accepted}))))
}

/// `POST /api/v1/logs` takes no query parameters; a stray one is most likely a mistake.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}
