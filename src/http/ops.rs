//! Operational endpoints: liveness, readiness (the sum of the adapters' health checks), the
//! `service_severity` counts and the cluster's members.

use super::AppState;
use super::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

pub async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "node": state.inner.node_name}))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (queue, store) = tokio::join!(state.inner.queue.health(), state.inner.store.health());
    let mut problems = Vec::new();
    if let Err(error) = queue {
        problems.push(format!("queue: {error}"));
    }
    if let Err(error) = store {
        problems.push(format!("store: {error}"));
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

pub async fn stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = state.inner.store.severity_counts().await?;
    let total: i64 = rows.iter().map(|row| row.count).sum();
    Ok(Json(json!({"rows": rows, "total": total})))
}

/// The cluster's members, as they last described themselves.
pub async fn cluster(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let members = state.inner.membership.members().await?;
    Ok(Json(
        json!({"node": state.inner.node_name, "members": members}),
    ))
}
