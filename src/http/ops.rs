//! Operational endpoints: liveness, readiness (the sum of the adapters' health checks), the
//! `service_severity` counts, the cluster's members and the nodes' operational figures.

use super::AppState;
use super::error::ApiError;
use super::files::{FORWARDED_HEADER, forward};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// Alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves", body = crate::http::openapi::Health)))]
pub async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "node": state.inner.node_name}))
}

/// How long `GET /readyz` waits for a health check: one that does not answer is a problem.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A health check's problem, if any, a check that does not answer in time included.
async fn in_time(
    what: &'static str,
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Option<String> {
    match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(format!("{what}: {error}")),
        Err(_) => Some(format!(
            "{what}: no answer to the health check within {} s",
            HEALTH_CHECK_TIMEOUT.as_secs()
        )),
    }
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = crate::http::openapi::Health)))]
/// Ready when the queue and the store answer their health checks in time and no writer holds a
/// batch longer than `--writer-stall-timeout` without completing a write.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (queue, store) = tokio::join!(
        in_time("queue", async {
            state.inner.queue.health().await.map_err(|e| e.to_string())
        }),
        in_time("store", async {
            state.inner.store.health().await.map_err(|e| e.to_string())
        }),
    );
    let mut problems: Vec<String> = queue.into_iter().chain(store).collect();
    for writer in &state.inner.writers {
        if let Some(stalled) = writer.stalled_for()
            && stalled > state.inner.writer_stall_timeout
        {
            problems.push(format!(
                "{}: holds events it has not written for {} s (--writer-stall-timeout {})",
                writer.name(),
                stalled.as_secs(),
                humantime::format_duration(state.inner.writer_stall_timeout)
            ));
        }
    }
    if problems.is_empty() {
        Ok(Json(
            json!({"status": "ready", "node": state.inner.node_name}),
        ))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            problems.join("; "),
        ))
    }
}

/// The `service_severity` table.
#[utoipa::path(get, path = "/api/v1/logs/stats", tag = "query",
    responses((status = 200, description = "Counts per service and severity", body = crate::http::openapi::Stats)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = state.inner.store.severity_counts().await?;
    let total: i64 = rows.iter().map(|row| row.count).sum();
    Ok(Json(json!({"rows": rows, "total": total})))
}

/// The cluster's members, as they last described themselves.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "operations",
    responses((status = 200, description = "Members", body = crate::http::openapi::ClusterView)))]
pub async fn cluster(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let members = state.inner.membership.members().await?;
    Ok(Json(
        json!({"node": state.inner.node_name, "members": members}),
    ))
}

/// How long `GET /api/v1/node/stats?hostname=*` waits for one member: a hung member shows as
/// an error instead of holding up the figures of the others.
const MEMBER_STATS_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NodeStatsParams {
    /// `*` for every member, or this node's name (default: this node).
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
}

/// This node's figures, with its name and the time they were read (epoch ms).
async fn local_stats(state: &AppState) -> Value {
    let stats = state.inner.metrics.snapshot(state.inner.queue.depth());
    let mut value = serde_json::to_value(stats).expect("the stats serialise");
    value["node"] = json!(state.inner.node_name);
    value["at_ms"] = json!(crate::event::now_us() / 1000);
    value["storage"] =
        serde_json::to_value(storage_figures(state, None).await).expect("serialises");
    value
}

/// What this node's data takes: the store's (the shared database's, in a cluster: every node
/// reports the same), its event log files', and its data directory's disk. A figure that
/// cannot be read is left out, and `error` says why.
#[derive(Debug, Default, serde::Serialize)]
pub struct StorageFigures {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_bytes: Option<u64>,
    /// Events stored and within the retention period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_rows: Option<i64>,
    /// The oldest event's timestamp, epoch ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_event_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_log_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_free_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `known_rows`: the stored events when the caller has just counted them (`/metrics`), so they
/// are not counted twice.
pub(super) async fn storage_figures(state: &AppState, known_rows: Option<i64>) -> StorageFigures {
    let mut figures = StorageFigures::default();
    let mut errors = Vec::new();
    let store = &state.inner.store;
    let rows = async {
        match known_rows {
            Some(rows) => Ok(rows),
            None => Ok(store
                .severity_counts()
                .await?
                .iter()
                .map(|row| row.count)
                .sum()),
        }
    };
    let (storage, counts): (_, Result<i64, crate::store::StoreError>) =
        tokio::join!(store.storage(), rows);
    match storage {
        Ok(storage) => {
            figures.store_bytes = Some(storage.bytes);
            figures.oldest_event_ms = storage.oldest_us.map(|us| us.div_euclid(1000));
        }
        Err(error) => errors.push(format!("store: {error}")),
    }
    match counts {
        Ok(rows) => figures.store_rows = Some(rows),
        Err(error) => errors.push(format!("counts: {error}")),
    }
    let data_dir = state.inner.data_dir.clone();
    let event_log_dir = state.inner.event_log_dir.clone();
    let files = tokio::task::spawn_blocking(move || {
        (
            crate::disk::free_bytes(&data_dir),
            crate::eventlog::files_bytes(&event_log_dir),
        )
    })
    .await;
    match files {
        Ok((free, event_log)) => {
            match free {
                Ok(free) => figures.disk_free_bytes = Some(free),
                Err(error) => errors.push(format!("free disk space: {error}")),
            }
            match event_log {
                Ok(bytes) => figures.event_log_bytes = Some(bytes),
                Err(error) => errors.push(format!("event log: {error}")),
            }
        }
        Err(error) => errors.push(error.to_string()),
    }
    if !errors.is_empty() {
        figures.error = Some(errors.join("; "));
    }
    figures
}

/// `GET /api/v1/node/stats`: this node's operational figures (events accepted, queue depth,
/// batches per sink); `hostname=*` asks every member (server-side, like `GET /logs`, so the
/// console needs no cross-origin requests) and answers `{"nodes": [...]}`, a member that cannot
/// be asked appearing as `{"node", "error"}` rather than failing the whole answer.
#[utoipa::path(get, path = "/api/v1/node/stats", tag = "operations", params(NodeStatsParams),
    responses((status = 200, description = "Operational figures", body = crate::http::openapi::NodeStatsView)))]
pub async fn node_stats(
    State(state): State<AppState>,
    params: Result<Query<NodeStatsParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match params.hostname.as_deref() {
        None | Some("") => Ok(Json(local_stats(&state).await)),
        Some("*") if !headers.contains_key(FORWARDED_HEADER) => {
            let members = state.inner.membership.members().await?;
            let asks = members.iter().map(|member| {
                let state = &state;
                let headers = &headers;
                async move {
                    if member.name == state.inner.node_name {
                        return local_stats(state).await;
                    }
                    let failed = |error: String| json!({"node": member.name, "error": error});
                    let ask = async {
                        let params = NodeStatsParams::default();
                        let upstream =
                            forward(state, member, "/api/v1/node/stats", &params, headers)
                                .await
                                .map_err(|error| error.message)?;
                        if !upstream.status().is_success() {
                            return Err(format!("answered {}", upstream.status()));
                        }
                        upstream
                            .json::<Value>()
                            .await
                            .map_err(|error| error.to_string())
                    };
                    match tokio::time::timeout(MEMBER_STATS_TIMEOUT, ask).await {
                        Ok(Ok(stats)) => stats,
                        Ok(Err(error)) => failed(error),
                        Err(_) => failed(format!(
                            "no answer within {} s",
                            MEMBER_STATS_TIMEOUT.as_secs()
                        )),
                    }
                }
            });
            let nodes = futures_util::future::join_all(asks).await;
            Ok(Json(json!({ "nodes": nodes })))
        }
        Some(name) if name == state.inner.node_name => Ok(Json(local_stats(&state).await)),
        Some(name) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_host",
            format!(
                "parameter `hostname`: `{name}` is not this node; give `*` for every member or \
                 this node's name"
            ),
        )),
    }
}
