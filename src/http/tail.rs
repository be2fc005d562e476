//! `GET /api/v1/tail?service=&severity=`: newly accepted events as Server-Sent Events.
//!
//! Each event is an SSE event named `log` whose id is the event id and whose data is one JSON
//! object (the event log line without `seq`). Where a client's queue (`--tail-buffer` events,
//! `--tail-buffer-bytes`) overflowed it gets an event named `dropped` with the number missed;
//! one that stays behind gets a final `dropped` with `"disconnected": true` and the stream
//! ends. Ingest never waits for a client.

use super::AppState;
use super::error::ApiError;
use crate::event::{Event, Severity, format_us};
use crate::live::{LiveFilter, LiveItem};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::time::Duration;

/// Comment lines sent while nothing happens, so proxies keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TailParams {
    /// Comma-separated services; all when absent.
    service: Option<String>,
    /// Comma-separated severities (names or aliases); all when absent.
    severity: Option<String>,
}

#[derive(Serialize)]
struct LiveEvent<'a> {
    ts: String,
    severity: &'a str,
    service: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<&'a RawValue>,
    id: &'a str,
    node: &'a str,
}

fn to_sse(item: LiveItem) -> SseEvent {
    match item {
        LiveItem::Event(event) => {
            let event: &Event = &event;
            let data = LiveEvent {
                ts: format_us(event.ts_us),
                severity: event.severity.as_str(),
                service: &event.service,
                message: &event.message,
                attributes: event.attributes.as_deref(),
                id: &event.id,
                node: &event.node,
            };
            SseEvent::default()
                .event("log")
                .id(event.id.clone())
                .json_data(data)
                .expect("events serialise")
        }
        LiveItem::Dropped {
            missed,
            disconnected,
        } => SseEvent::default().event("dropped").data(
            serde_json::json!({
                "reason": if disconnected {
                    "the client stayed behind the live feed and is disconnected"
                } else {
                    "the client's queue was full: events were dropped here"
                },
                "missed": missed,
                "disconnected": disconnected,
            })
            .to_string(),
        ),
    }
}

fn parse_filter(params: &TailParams) -> Result<LiveFilter, ApiError> {
    let list = |value: &Option<String>| -> Option<Vec<String>> {
        value
            .as_ref()
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
    };
    let services = list(&params.service);
    if let Some(services) = &services
        && services.iter().any(String::is_empty)
    {
        return Err(ApiError::bad_request(
            "parameter `service`: empty service name",
        ));
    }
    let severities = match list(&params.severity) {
        None => None,
        Some(names) => Some(
            names
                .iter()
                .map(|name| {
                    Severity::from_name(name).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "parameter `severity`: unknown severity `{name}` (use trace, debug, \
                             info, warn, error or fatal)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(LiveFilter {
        services,
        severities,
    })
}

/// Live events as Server-Sent Events (`log`, and `dropped` where the client fell behind).
#[utoipa::path(get, path = "/api/v1/tail", tag = "query", params(TailParams),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String)))]
pub async fn tail(
    State(state): State<AppState>,
    params: Result<Query<TailParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = parse_filter(&params)?;
    let permit = state
        .inner
        .live_clients
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::overloaded(format!(
                "this node already serves {} live tail clients (--max-live-clients); retry later",
                state.inner.limits.max_live_clients
            ))
        })?;
    let shutdown = state.inner.shutdown.clone();
    let stream = state
        .inner
        .live
        .subscribe(filter)
        // The permit lives as long as the stream.
        .map(move |item| {
            let _held = &permit;
            Ok(to_sse(item))
        })
        // A stopping node ends its live streams, so that the shutdown is not held up.
        .take_until(async move { shutdown.wait().await });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
