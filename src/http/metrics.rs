//! Counters over HTTP: `POST /metrics` (increment), `GET /metrics` (Prometheus text, or JSON
//! with `Accept: application/json`) and `GET /metrics/query?expression=` (the PromQL subset of
//! [`crate::counters`], answered in the Prometheus HTTP API shape).

use super::AppState;
use super::body::read_small_body;
use super::error::ApiError;
use crate::counters::{self, Counter, CounterKey, Family, Sample};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Increment {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Checked by hand: serde would accept 1.0 for a float or wrap a negative number.
    by: Option<Value>,
}

fn parse_increment(body: &[u8]) -> Result<(CounterKey, i64), ApiError> {
    let increment: Increment = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"name\": \"...\", \"labels\": {{\"label\": \"value\"}}, \"by\": 1}}: {e}"
        ))
    })?;
    let by = match &increment.by {
        None => 1,
        Some(Value::Number(n)) => n.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`by`: {n} is not an integer from 0 to {}",
                i64::MAX
            ))
        })?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`by`: {other} is not an integer from 0 to {}",
                i64::MAX
            )));
        }
    };
    let key = CounterKey::new(&increment.name, increment.labels)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((key, by))
}

/// The largest increment body: a name and at most a few kilobytes of labels.
pub const MAX_INCREMENT_BYTES: usize = 64 * 1024;

/// Adds `by` to a counter, creating it at 0 if new; answers the new value.
#[utoipa::path(post, path = "/metrics", tag = "counters",
    request_body(content = crate::http::openapi::Increment, content_type = "application/json"),
    responses((status = 200, description = "The value after this increment", body = crate::http::openapi::Incremented)))]
pub async fn increment(State(state): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let body = read_small_body(body, MAX_INCREMENT_BYTES).await?;
    let (key, by) = parse_increment(&body)?;
    let value = state.inner.store.increment_counter(&key, by).await?;
    Ok(Json(
        json!({"name": key.name, "labels": key.labels, "value": value}),
    ))
}

/// Stored counters plus `logmesh_events_total`, as families.
async fn all_families(state: &AppState) -> Result<(Vec<Counter>, Vec<Family>), ApiError> {
    let (counters, severities) = tokio::try_join!(
        state.inner.store.counters(),
        state.inner.store.severity_counts()
    )?;
    let mut families = counters::families(&counters);
    families.push(Family {
        name: "logmesh_events_total".into(),
        help: "Events stored, by service and severity (the service_severity table); a gauge, \
               as expiry lowers it"
            .into(),
        samples: severities
            .iter()
            .map(|row| Sample {
                labels: BTreeMap::from([
                    ("service".to_owned(), row.service.clone()),
                    ("severity".to_owned(), row.severity.clone()),
                ]),
                value: row.count as f64,
            })
            .collect(),
        gauge: true,
    });
    Ok((counters, families))
}

/// The storage figures as gauges (a figure that could not be read is left out).
fn render_storage(figures: &super::ops::StorageFigures) -> String {
    let gauges: [(&str, &str, Option<f64>); 5] = [
        (
            "logmesh_store_bytes",
            "Bytes the stored events take: service_logs and service_severity with their indexes (SQLite: the database file); in a cluster, the shared database's",
            figures.store_bytes.map(|v| v as f64),
        ),
        (
            "logmesh_store_rows",
            "Events stored within the retention period",
            figures.store_rows.map(|v| v as f64),
        ),
        (
            "logmesh_store_oldest_event_timestamp_seconds",
            "The timestamp of the oldest event stored, epoch seconds",
            figures.oldest_event_ms.map(|ms| ms as f64 / 1000.0),
        ),
        (
            "logmesh_event_log_bytes",
            "Bytes of this node's event log files (events.log and its rotated siblings)",
            figures.event_log_bytes.map(|v| v as f64),
        ),
        (
            "logmesh_disk_free_bytes",
            "Free bytes on the disk of this node's data directory",
            figures.disk_free_bytes.map(|v| v as f64),
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in gauges {
        if let Some(value) = value {
            text.push_str(&format!(
                "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
    }
    text
}

/// Every counter, `logmesh_events_total` and the node's own metrics in the Prometheus text
/// format; the counters as JSON with `Accept: application/json`.
#[utoipa::path(get, path = "/metrics", tag = "counters",
    responses((status = 200, description = "The exposition", content(
        (String = "text/plain"),
        (crate::http::openapi::CountersView = "application/json"),
    ))))]
pub async fn exposition(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (counters, families) = all_families(&state).await?;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    if wants_json {
        return Ok(Json(json!({"counters": counters})).into_response());
    }
    let mut text = counters::render_counters(&families);
    text.push_str(&state.inner.metrics.render(state.inner.queue.depth()));
    // The stored events were just counted for `logmesh_events_total`.
    let rows = families
        .iter()
        .find(|family| family.name == "logmesh_events_total")
        .map(|family| {
            family
                .samples
                .iter()
                .map(|sample| sample.value as i64)
                .sum()
        });
    text.push_str(&render_storage(
        &super::ops::storage_figures(&state, rows).await,
    ));
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QueryParams {
    /// Selectors with =, !=, =~, !~ and sum, min, max, avg or count with by/without; at most
    /// 4096 bytes.
    #[param(required = true, min_length = 1, max_length = 4096)]
    expression: Option<String>,
}

/// A PromQL subset over the counters, in the Prometheus HTTP API's result shape.
#[utoipa::path(get, path = "/metrics/query", tag = "counters", params(QueryParams),
    responses((status = 200, description = "An instant vector", body = crate::http::openapi::QueryAnswer)))]
pub async fn query(
    State(state): State<AppState>,
    params: Result<Query<QueryParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let expression = params
        .expression
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("parameter `expression` is required"))?;
    let expr =
        counters::parse_query(&expression).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (_, families) = all_families(&state).await?;
    let now = crate::event::now_us() as f64 / 1e6;
    let result: Vec<Value> = counters::evaluate(&expr, &counters::series(&families))
        .into_iter()
        .map(|sample| {
            json!({
                "metric": sample.labels,
                "value": [now, counters::format_value(sample.value)],
            })
        })
        .collect();
    Ok(Json(json!({
        "status": "success",
        "data": {"resultType": "vector", "result": result},
    })))
}
