//! The HTTP API: the router factory [`app`], shared [`AppState`], bearer-token auth and the
//! JSON fallbacks. Handlers live in one file per capability.
//!
//! Invariants:
//! - Only this module knows HTTP and JSON request shapes; it calls the domain through the
//!   queue and store ports.
//! - Every error leaves through [`error::ApiError`], so every endpoint answers the same shape.

pub mod body;
mod console;
mod elastic;
pub mod error;
pub mod files;
mod guard;
mod ingest;
mod loki;
mod metrics;
pub mod openapi;
mod ops;
mod otlp;
mod search;
pub mod server;
mod tail;
mod work;

use crate::cluster::Membership;
use crate::files::LogRoots;
use crate::intake::Intake;
use crate::live::LiveFeed;
use crate::metrics::NodeMetrics;
use crate::pipeline::WriterWatch;
use crate::queue::IngestQueue;
use crate::store::Store;
use crate::work::Work;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use body::BodyPace;
use error::ApiError;
use guard::HostPolicy;
use server::{ServerLimits, Shutdown};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How many maximum-size bodies may be held in memory at once across all ingest requests.
/// Past that, requests are shed with 503 instead of being buffered.
pub const BODY_BUDGET_IN_MAX_BODIES: usize = 16;

/// The limits of the HTTP layer (`--max-connections` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    pub server: ServerLimits,
    pub body_pace: BodyPace,
    /// `GET /logs` streams this node serves at once (follow streams included).
    pub max_file_streams: usize,
    /// `GET /api/v1/tail` clients this node serves at once.
    pub max_live_clients: usize,
    /// How long another member may take to answer a forwarded request's head.
    pub peer_timeout: Duration,
    /// `--allowed-hosts`; empty: loopback names only on a loopback bind, any name otherwise.
    pub allowed_hosts: Vec<String>,
}

pub const DEFAULT_MAX_FILE_STREAMS: usize = 64;
pub const DEFAULT_MAX_LIVE_CLIENTS: usize = 256;
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            server: ServerLimits::default(),
            body_pace: BodyPace::default(),
            max_file_streams: DEFAULT_MAX_FILE_STREAMS,
            max_live_clients: DEFAULT_MAX_LIVE_CLIENTS,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            allowed_hosts: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

struct AppInner {
    node_name: String,
    /// Where events are handed over (queue, metrics, live feed).
    intake: Arc<Intake>,
    queue: Arc<dyn IngestQueue>,
    store: Arc<dyn Store>,
    max_body_bytes: usize,
    /// Bytes of request bodies that may be buffered at once (one permit per byte).
    body_budget: Arc<Semaphore>,
    /// The settings of this layer, as configured; handlers read them here.
    limits: HttpLimits,
    hosts: HostPolicy,
    /// One permit per `GET /logs` stream served here.
    file_streams: Arc<Semaphore>,
    /// One permit per live tail client.
    live_clients: Arc<Semaphore>,
    /// Ends long-lived responses when the node stops.
    shutdown: Shutdown,
    writers: Vec<Arc<WriterWatch>>,
    writer_stall_timeout: Duration,
    /// `GET /openapi.json`, set by [`app`].
    openapi: OnceLock<Bytes>,
    api_token: Option<String>,
    membership: Arc<Membership>,
    live: Arc<LiveFeed>,
    metrics: Arc<NodeMetrics>,
    log_roots: LogRoots,
    work: Arc<Work>,
    /// Requests to other members (`GET /logs?hostname=`).
    peers: reqwest::Client,
    /// For the storage figures: the disk's free space, the event log files' size.
    data_dir: std::path::PathBuf,
    event_log_dir: std::path::PathBuf,
}

/// What the API serves from: the node's parts, assembled by `Node::start`.
pub struct AppParts {
    pub node_name: String,
    pub intake: Arc<Intake>,
    pub queue: Arc<dyn IngestQueue>,
    pub store: Arc<dyn Store>,
    pub max_body_bytes: usize,
    pub api_token: Option<String>,
    pub membership: Arc<Membership>,
    pub live: Arc<LiveFeed>,
    pub metrics: Arc<NodeMetrics>,
    pub log_roots: LogRoots,
    pub work: Arc<Work>,
    pub limits: HttpLimits,
    /// Whether the node listens on a loopback address only (see [`guard`]).
    pub loopback_bind: bool,
    pub shutdown: Shutdown,
    /// The background writers, for `GET /readyz`.
    pub writers: Vec<Arc<WriterWatch>>,
    pub writer_stall_timeout: Duration,
    pub data_dir: std::path::PathBuf,
    pub event_log_dir: std::path::PathBuf,
}

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        let budget = parts
            .max_body_bytes
            .saturating_mul(BODY_BUDGET_IN_MAX_BODIES);
        AppState {
            inner: Arc::new(AppInner {
                node_name: parts.node_name,
                intake: parts.intake,
                queue: parts.queue,
                store: parts.store,
                max_body_bytes: parts.max_body_bytes,
                body_budget: Arc::new(Semaphore::new(budget.min(Semaphore::MAX_PERMITS))),
                hosts: HostPolicy::new(parts.loopback_bind, &parts.limits.allowed_hosts),
                file_streams: Arc::new(Semaphore::new(parts.limits.max_file_streams)),
                live_clients: Arc::new(Semaphore::new(parts.limits.max_live_clients)),
                shutdown: parts.shutdown,
                writers: parts.writers,
                writer_stall_timeout: parts.writer_stall_timeout,
                openapi: OnceLock::new(),
                api_token: parts.api_token,
                membership: parts.membership,
                live: parts.live,
                metrics: parts.metrics,
                log_roots: parts.log_roots,
                work: parts.work,
                peers: reqwest::Client::builder()
                    .connect_timeout(parts.limits.peer_timeout)
                    .build()
                    .expect("the HTTP client builds"),
                limits: parts.limits,
                data_dir: parts.data_dir,
                event_log_dir: parts.event_log_dir,
            }),
        }
    }
}

/// Every route with its documentation: the router and `GET /openapi.json` both come from here,
/// so no route is served undescribed.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ingest::post_event))
        .routes(routes!(ingest::post_logs))
        .routes(routes!(elastic::bulk))
        .routes(routes!(elastic::bulk_index))
        .routes(routes!(otlp::export))
        .routes(routes!(otlp::export_prefixed))
        .routes(routes!(loki::push))
        .routes(routes!(ops::stats))
        .routes(routes!(search::search))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::cluster))
        .routes(routes!(tail::tail))
        .routes(routes!(metrics::exposition, metrics::increment))
        .routes(routes!(metrics::query))
        .routes(routes!(files::logs))
        .routes(routes!(files::list))
        .routes(routes!(work::submit))
        .routes(routes!(work::status))
        .routes(routes!(work::result))
        .routes(routes!(ops::node_stats))
        .routes(routes!(console::index))
        .routes(routes!(console::file))
        .routes(routes!(openapi::document))
}

/// The OpenAPI document of [`app`], as served at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut document) = routes().split_for_parts();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    utoipa::Modify::modify(&openapi::DefaultErrors, &mut document);
    document
}

/// The whole API as a router, ready to serve.
pub fn app(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    let document = openapi_document()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    let _ = state.inner.openapi.set(Bytes::from(document));
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(state.clone(), guard_request))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        // Shedding load (503) is expected behaviour, not an error worth a log line per request.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

impl AppState {
    /// The OpenAPI document, as JSON.
    fn openapi_json(&self) -> Bytes {
        self.inner.openapi.get().cloned().unwrap_or_default()
    }
}

/// Counts every answered request (401s and 404s included) in the node's metrics, by the route
/// that matched (`other` when none did, so a scan of random URLs or methods cannot grow the
/// label set).
async fn count_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |matched| matched.as_str().to_owned());
    let method = match *request.method() {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS
        | Method::PATCH => request.method().as_str().to_owned(),
        _ => "other".to_owned(),
    };
    let response = next.run(request).await;
    state
        .inner
        .metrics
        .http_request(&route, &method, response.status().as_u16());
    response
}

/// Refuses what [`guard`] refuses, and paces every request body ([`body::MinRateBody`]).
async fn guard_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(error) = state.inner.hosts.check(request.method(), request.headers()) {
        return error.into_response();
    }
    let pace = state.inner.limits.body_pace;
    let request = request.map(|body| axum::body::Body::new(body::MinRateBody::new(body, pace)));
    next.run(request).await
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

/// With an API token configured, every request must carry it, as `Authorization: Bearer
/// <token>` or as the password of `Authorization: Basic` (any user name: log shippers and
/// logging libraries that only know Basic credentials, such as Python's `HTTPHandler`, can
/// send it), except those for the console's static shell, which holds no data
/// ([`console::is_public`]).
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.inner.api_token else {
        return next.run(request).await;
    };
    if console::is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(presented_token);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this node requires `Authorization: Bearer <token>` (or Basic with the token as \
             the password)",
        )
        .into_response(),
    }
}

/// The token of an `Authorization` value: a bearer token, or the password of Basic
/// credentials. Anything else (another scheme, Basic that does not decode) presents none.
fn presented_token(value: &str) -> Option<String> {
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.to_owned());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let credentials = String::from_utf8(decoded).ok()?;
    let (_user, password) = credentials.split_once(':')?;
    Some(password.to_owned())
}
