//! The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json`.
//!
//! Every route is declared once, with its documentation, through `utoipa-axum` (see
//! [`super::app`]): the router and this document come from the same list, so a route cannot be
//! served without being described. The schemas here describe the wire shapes the handlers
//! produce; the schemathesis run of the test suite checks real answers against them.
//!
//! Invariants:
//! - Every operation may also answer an error in the one error shape ([`ErrorBody`]): the
//!   document says so once, as each operation's `default` response, since limits, auth and host
//!   checks apply to all of them.

use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "logmesh",
        description = "One binary that turns any number of machines into a log platform. \
                       Errors are `{\"error\": {\"code\", \"message\"}}` with a fitting status; \
                       503 answers carry `Retry-After`.",
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "ingest", description = "Sending events"),
        (name = "query", description = "Stored events, counts and the live tail"),
        (name = "files", description = "Files on the cluster's hosts"),
        (name = "counters", description = "Cluster-wide labelled counters"),
        (name = "work", description = "Asynchronous work with a callback id"),
        (name = "operations", description = "Health, membership and the console"),
    )
)]
pub struct ApiDoc;

/// Adds the error shape as every operation's `default` response; applied to the finished
/// document (the routes are merged into it after `ApiDoc`'s own modifiers ran).
pub struct DefaultErrors;

impl Modify for DefaultErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = ResponseBuilder::new()
            .description(
                "An error: 400 bad input, 401 no or a wrong token, 403 refused (host, origin, \
                 outside the log roots), 404, 405, 408 body too slow, 413 too large, 415 \
                 encoding, 502/504 another member, 503 overloaded or unavailable (with \
                 Retry-After).",
            )
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
            .build();
        // Answered by the HTTP layer itself, before any route: a request head larger than the
        // node reads gets a bare status, without a body.
        let bare =
            |description: &str| RefOr::T(ResponseBuilder::new().description(description).build());
        let uri_too_long =
            bare("The request line is longer than the node reads (64 KiB); no body.");
        let headers_too_large =
            bare("The request's headers are larger than the node reads (64 KiB); no body.");
        for item in openapi.paths.paths.values_mut() {
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.head,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses
                    .entry("default".to_owned())
                    .or_insert_with(|| RefOr::T(error.clone()));
                responses
                    .entry("414".to_owned())
                    .or_insert_with(|| uri_too_long.clone());
                responses
                    .entry("431".to_owned())
                    .or_insert_with(|| headers_too_large.clone());
            }
        }
    }
}

/// The bearer token every request needs when the node has `--api-token`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![
            utoipa::openapi::security::SecurityRequirement::new::<_, _, &str>("bearer", []),
            // Without `--api-token` no token is needed.
            utoipa::openapi::security::SecurityRequirement::default(),
        ]);
    }
}

/// A severity: a name or alias (any case) or a syslog number.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum SeverityName {
    Trace,
    Debug,
    Info,
    Notice,
    Warn,
    Warning,
    Error,
    Err,
    Fatal,
    Critical,
    #[schema(rename = "0")]
    Emergency,
    #[schema(rename = "3")]
    SyslogError,
    #[schema(rename = "4")]
    SyslogWarning,
    #[schema(rename = "6")]
    SyslogInfo,
    #[schema(rename = "7")]
    SyslogDebug,
}

/// `true` or `false`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Flag {
    True,
    False,
}

/// `desc` (newest first) or `asc`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Order {
    Desc,
    Asc,
}

/// What a job does.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum JobKind {
    Search,
    Count,
    Export,
}

/// Every error answer.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `bad_request`, `overloaded`, `limit_exceeded`.
    pub code: String,
    /// What went wrong and, where it helps, which setting or field it concerns.
    pub message: String,
}

/// A raw message: UTF-8 text, not empty.
#[derive(ToSchema)]
#[schema(value_type = String, min_length = 1)]
pub struct RawMessage(pub String);

/// `POST /event` and `POST /api/v1/logs` answers once every event is durable.
#[derive(ToSchema)]
pub struct IngestAccepted {
    /// How many events the request held.
    pub accepted: u64,
    /// The event's id (`POST /event` only).
    pub id: Option<String>,
}

/// An event as `POST /api/v1/logs` takes it.
#[derive(ToSchema)]
pub struct EventIn {
    /// Unique; re-sending an id never stores the event twice. Generated when absent. At most
    /// 128 bytes, no whitespace or control characters.
    #[schema(min_length = 1, max_length = 32, pattern = "^[A-Za-z0-9._:/@+=-]+$")]
    pub id: Option<String>,
    /// RFC 3339 (e.g. 2026-11-23T10:15:00Z) at most 2 days after the node's clock. Epoch
    /// milliseconds (a number) are taken too. Default: now.
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// At most 128 bytes, no whitespace or control characters.
    #[schema(min_length = 1, max_length = 32, pattern = "^[A-Za-z0-9._:/@+=-]+$")]
    pub service: String,
    /// trace, debug, info, warn, error or fatal (any case), an alias such as `warning`, or a
    /// syslog number 0-7. Default: info.
    #[schema(inline)]
    pub severity: Option<SeverityName>,
    pub message: String,
    /// A flat JSON object: string, number, boolean or null values.
    pub attributes: Option<BTreeMap<String, Value>>,
}

/// A stored event as queries show it.
#[derive(ToSchema)]
pub struct StoredEvent {
    pub id: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub service: String,
    pub severity: String,
    pub message: String,
    pub attributes: Option<BTreeMap<String, Value>>,
    /// The node that accepted the event.
    pub node: String,
}

#[derive(ToSchema)]
pub struct SearchAnswer {
    pub events: Vec<StoredEvent>,
    /// Pass it as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
pub struct SeverityRow {
    pub service: String,
    pub severity: String,
    pub count: i64,
}

/// The `service_severity` table.
#[derive(ToSchema)]
pub struct Stats {
    pub rows: Vec<SeverityRow>,
    pub total: i64,
}

#[derive(ToSchema)]
pub struct Health {
    pub status: String,
    pub node: String,
}

#[derive(ToSchema)]
pub struct MemberView {
    pub name: String,
    /// The member's API base URL.
    pub address: String,
    pub version: String,
    pub started_at: String,
    pub last_heartbeat: String,
    /// serving, leaving or unresponsive.
    pub state: String,
    pub instance: String,
}

#[derive(ToSchema)]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    pub members: Vec<MemberView>,
}

/// `POST /metrics`.
#[derive(ToSchema)]
pub struct Increment {
    /// A Prometheus metric name, not starting with `logmesh_`.
    #[schema(max_length = 200, pattern = "^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
    pub name: String,
    /// Label names are Prometheus label names, not starting with `__`.
    #[schema(nullable = false)]
    pub labels: Option<BTreeMap<String, String>>,
    /// At least 0; default 1.
    #[schema(nullable = false, minimum = 0)]
    pub by: Option<i64>,
}

#[derive(ToSchema)]
pub struct Incremented {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The value after this increment.
    pub value: i64,
}

/// The Prometheus HTTP API's instant query answer.
#[derive(ToSchema)]
pub struct QueryAnswer {
    /// Always `success`.
    pub status: String,
    pub data: QueryData,
}

#[derive(ToSchema)]
pub struct QueryData {
    /// Always `vector`.
    #[schema(rename = "resultType")]
    pub result_type: String,
    pub result: Vec<QuerySample>,
}

#[derive(ToSchema)]
pub struct QuerySample {
    pub metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    #[schema(value_type = Vec<Object>)]
    pub value: Vec<Value>,
}

/// `POST /api/v1/work`.
#[derive(ToSchema)]
pub struct WorkSubmission {
    /// search (default), count or export.
    #[schema(inline, nullable = false)]
    pub kind: Option<JobKind>,
    /// A search string, or the job's filters as an object.
    pub data: Value,
}

#[derive(ToSchema)]
pub struct WorkAccepted {
    pub accepted_by: String,
    /// Upper-case hex MD5 of `data` (search) or of the canonical request.
    pub callback: String,
    /// As submitted.
    pub data: Value,
    pub status: String,
}

#[derive(ToSchema)]
pub struct WorkStatus {
    pub callback: String,
    pub kind: String,
    /// As submitted.
    pub data: Value,
    /// accepted, pending, working, worked or failed.
    pub status: String,
    pub accepted_by: String,
    pub worker: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub error: Option<String>,
    pub progress: u64,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    pub elapsed_ms: f64,
    pub retry_at: Option<String>,
    pub result_bytes: Option<u64>,
    pub result_items: Option<u64>,
    pub expires_at: String,
}

#[derive(ToSchema)]
pub struct FileView {
    /// The name to pass as `filename`.
    pub name: String,
    /// The log root's own name (absent for rotated siblings).
    pub root: Option<String>,
    pub size: u64,
    pub modified: String,
    /// The rotated siblings (`app.log.1`, `app.log.2.gz`), newest first.
    #[schema(no_recursion)]
    pub rotated: Option<Vec<FileView>>,
}

/// This node's files, or with `hostname=*` every member's (`nodes`).
#[derive(ToSchema)]
pub struct FileList {
    pub node: Option<String>,
    pub roots: Option<Vec<String>>,
    pub files: Option<Vec<FileView>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub nodes: Option<Vec<Value>>,
}

/// A node's operational figures, or with `hostname=*` every member's (`nodes`).
#[derive(ToSchema)]
pub struct NodeStatsView {
    pub node: Option<String>,
    pub at_ms: Option<u64>,
    pub events_accepted: Option<u64>,
    pub events_refused: Option<u64>,
    pub queue_depth_events: Option<u64>,
    pub queue_depth_bytes: Option<u64>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub sinks: Option<Vec<Value>>,
    /// What this node's data takes: `store_bytes`, `store_rows`, `oldest_event_ms`,
    /// `event_log_bytes`, `disk_free_bytes` (each left out when it cannot be read, with
    /// `error` saying why).
    #[schema(value_type = Option<Object>)]
    pub storage: Option<Value>,
    /// Each syslog listener's counters: `listener` and `connections`, `messages`, `bytes`,
    /// `unparsed`, `dropped`, `refused`, `broken`, `lost`, `truncated` (those counted so far).
    #[schema(value_type = Option<Vec<Object>>)]
    pub syslog: Option<Vec<Value>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub nodes: Option<Vec<Value>>,
}

/// The counters as JSON (`GET /metrics` with `Accept: application/json`).
#[derive(ToSchema)]
pub struct CountersView {
    pub counters: Vec<Incremented>,
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
pub async fn document(
    axum::extract::State(state): axum::extract::State<super::AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.openapi_json(),
    )
        .into_response()
}
