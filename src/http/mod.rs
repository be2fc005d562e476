//! The HTTP API: the router factory [`app`], shared [`AppState`], bearer-token auth and the
//! JSON fallbacks. Handlers live in one file per capability.
//!
//! Invariants:
//! - Only this module knows HTTP and JSON request shapes; it calls the domain through the
//!   queue and store ports.
//! - Every error leaves through [`error::ApiError`], so every endpoint answers the same shape.

pub mod error;
mod ingest;
mod ops;
mod search;

use crate::cluster::Membership;
use crate::queue::IngestQueue;
use crate::store::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// How many maximum-size bodies may be held in memory at once across all ingest requests.
/// Past that, requests are shed with 503 instead of being buffered.
pub const BODY_BUDGET_IN_MAX_BODIES: usize = 16;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

struct AppInner {
    node_name: String,
    queue: Arc<dyn IngestQueue>,
    store: Arc<dyn Store>,
    max_body_bytes: usize,
    /// Bytes of request bodies that may be buffered at once (one permit per byte).
    body_budget: Semaphore,
    api_token: Option<String>,
    membership: Arc<Membership>,
}

impl AppState {
    pub fn new(
        node_name: String,
        queue: Arc<dyn IngestQueue>,
        store: Arc<dyn Store>,
        max_body_bytes: usize,
        api_token: Option<String>,
        membership: Arc<Membership>,
    ) -> Self {
        let budget = max_body_bytes.saturating_mul(BODY_BUDGET_IN_MAX_BODIES);
        AppState {
            inner: Arc::new(AppInner {
                node_name,
                queue,
                store,
                max_body_bytes,
                body_budget: Semaphore::new(budget.min(Semaphore::MAX_PERMITS)),
                api_token,
                membership,
            }),
        }
    }
}

/// The whole API as a router, ready to serve.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/event", post(ingest::post_event))
        .route("/api/v1/logs", post(ingest::post_logs))
        .route("/api/v1/logs/stats", get(ops::stats))
        .route("/api/v1/logs/search", get(search::search))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/api/v1/cluster", get(ops::cluster))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        // Shedding load (503) is expected behaviour, not an error worth a log line per request.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// With an API token configured, every request must carry `Authorization: Bearer <token>`.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.inner.api_token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this node requires `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}
