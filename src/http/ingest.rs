//! Ingest endpoints: `POST /event` (one raw-text event) and `POST /api/v1/logs` (JSON: one
//! object, an array, or NDJSON). Both answer 202 only once the queue made every event durable.

use super::AppState;
use super::body::{Reservation, read_encoded_body};
use super::error::{ApiError, media_type};
use crate::event::bounds::Refusal;
use crate::event::parse::check_name;
use crate::event::python_logging;
use crate::event::{
    Event, FieldMap, IngestContext, now_us, parse_json_body, parse_mapped_body, parse_raw_body,
};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

/// Bodies larger than this are parsed on the blocking pool so that they do not stall the
/// runtime thread other requests share.
const INLINE_PARSE_MAX_BYTES: usize = 256 * 1024;

/// Runs `parse` on `bytes`: inline for a small body, on the blocking pool for a large one (see
/// [`INLINE_PARSE_MAX_BYTES`]). `Err` says why it did not finish (it panicked).
pub(super) async fn parse_body<T: Send + 'static>(
    bytes: Bytes,
    parse: impl FnOnce(Bytes) -> T + Send + 'static,
) -> Result<T, String> {
    if bytes.len() <= INLINE_PARSE_MAX_BYTES {
        return Ok(parse(bytes));
    }
    tokio::task::spawn_blocking(move || parse(bytes))
        .await
        .map_err(|e| format!("parsing the body failed: {e}"))
}

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
pub(super) async fn read_ingest_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Reservation), ApiError> {
    let encoded = read_encoded_body(
        &state.inner.body_budget,
        state.inner.max_body_bytes,
        headers,
        body,
    )
    .await?;
    // Refused here, before decompressing and parsing, while the queue sheds load: doing either
    // only to refuse the request would take the CPU the store writer needs to drain the queue.
    // The body is read all the same, so that the connection stays usable for the retry.
    state.inner.intake.check_shedding()?;
    encoded.decode().await
}

/// Whether the body is declared form-encoded (`curl --data` and Python's `HTTPHandler` both
/// declare it).
fn is_form(headers: &HeaderMap) -> bool {
    media_type(headers).as_deref() == Some("application/x-www-form-urlencoded")
}

/// A shipper's request refused whole: 400 when it is malformed, 413 when it expands too far.
pub(super) fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Malformed(message) => ApiError::bad_request(message),
        Refusal::TooLarge(message) => ApiError::too_large(message),
    }
}

/// Makes `events` durable (through the node's [`Intake`](crate::intake::Intake)).
pub(super) async fn append(state: &AppState, events: Vec<Event>) -> Result<(), ApiError> {
    Ok(state.inner.intake.append(events).await?)
}

/// One raw-text event, or one log record posted by Python's `logging.handlers.HTTPHandler`
/// (form fields `name`, `msg`, `args`, `levelname`, `created`, …); 202 once it is durable.
#[utoipa::path(
    post,
    path = "/event",
    tag = "ingest",
    params(RawEventParams),
    request_body(
        content(
            (crate::http::openapi::RawMessage = "text/plain"),
            (String = "application/x-www-form-urlencoded"),
        ),
        description = "The message, UTF-8 (gzip with Content-Encoding); form-encoded, a log record of Python's logging.handlers.HTTPHandler (name, msg, args, levelname, created, …), or text as curl --data sends it"
    ),
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
    let form = is_form(&headers);
    let node = state.inner.node_name.clone();
    let now = now_us();
    let oldest = state.inner.intake.oldest_us(now);
    let parse = move |bytes: Bytes| -> Result<Event, ApiError> {
        let context = IngestContext {
            node: &node,
            now_us: now,
            oldest_us: oldest,
        };
        let record = form
            .then(|| {
                form_urlencoded::parse(&bytes)
                    .into_owned()
                    .collect::<Vec<_>>()
            })
            .filter(|fields| python_logging::is_log_record(fields));
        Ok(match record {
            // Python's logging.handlers.HTTPHandler posts a LogRecord's fields.
            Some(fields) => {
                if params.severity.is_some() {
                    return Err(ApiError::bad_request(
                        "query parameter `severity`: a posted log record carries its own level",
                    ));
                }
                python_logging::event_from_log_record(&fields, params.service.as_deref(), context)?
            }
            None => parse_raw_body(
                &bytes,
                params.service.as_deref(),
                params.severity.as_deref(),
                context,
            )?,
        })
    };
    // A large record (or body) is decoded off the runtime, as a large JSON body is.
    let event = parse_body(bytes, parse)
        .await
        .map_err(ApiError::bad_request)??;
    drop(permit);
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
    params(LogsParams),
    responses((status = 202, description = "Every event durable", body = crate::http::openapi::IngestAccepted))
)]
pub async fn post_logs(
    State(state): State<AppState>,
    params: Result<Query<LogsParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let fields = params.field_map()?;
    let (bytes, permit) = read_ingest_body(&state, &headers, body).await?;
    let node = state.inner.node_name.clone();
    let now = now_us();
    let oldest = state.inner.intake.oldest_us(now);
    let parse = move |bytes: Bytes| {
        let ctx = IngestContext {
            node: &node,
            now_us: now,
            oldest_us: oldest,
        };
        match &fields {
            None => parse_json_body(&bytes, ctx),
            Some(fields) => parse_mapped_body(&bytes, fields, ctx),
        }
    };
    let events = parse_body(bytes, parse)
        .await
        .map_err(ApiError::bad_request)??;
    drop(permit);
    let accepted = events.len();
    append(&state, events).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": accepted}))))
}

/// Field names per list, and bytes per name, a field mapping may give.
const MAX_FIELD_NAMES: usize = 16;
const MAX_FIELD_NAME_BYTES: usize = 256;

/// `POST /api/v1/logs` without parameters takes logmesh's own event fields. With any of these it
/// takes JSON documents of any shape (a Docker json-file log, a JSON logger's output) and maps
/// their fields, as VictoriaLogs' `_msg_field` and `_time_field` do; a stray parameter is a
/// mistake and refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsParams {
    /// Fields that hold the message, comma-separated, first present wins
    /// (default `message,msg,log,_msg`).
    #[serde(rename = "_msg_field")]
    #[param(rename = "_msg_field")]
    msg_field: Option<String>,
    /// Fields that hold the timestamp, RFC 3339 or epoch milliseconds
    /// (default `@timestamp,timestamp,time,ts,_time`).
    #[serde(rename = "_time_field")]
    #[param(rename = "_time_field")]
    time_field: Option<String>,
    /// Fields that hold the service (default `service,service.name,app,application,job`).
    #[serde(rename = "_service_field")]
    #[param(rename = "_service_field")]
    service_field: Option<String>,
    /// Fields that hold the severity (default `level,severity,log.level,levelname,loglevel`).
    #[serde(rename = "_severity_field")]
    #[param(rename = "_severity_field")]
    severity_field: Option<String>,
    /// Fields that hold the event id (default: none, ids are generated).
    #[serde(rename = "_id_field")]
    #[param(rename = "_id_field")]
    id_field: Option<String>,
    /// The service of documents that have none of the service fields.
    #[param(min_length = 1, max_length = 128)]
    service: Option<String>,
}

impl LogsParams {
    /// The field mapping these parameters ask for; `None` for logmesh's own event fields.
    pub(super) fn field_map(&self) -> Result<Option<FieldMap>, ApiError> {
        let LogsParams {
            msg_field,
            time_field,
            service_field,
            severity_field,
            id_field,
            service,
        } = self;
        if [
            msg_field,
            time_field,
            service_field,
            severity_field,
            id_field,
            service,
        ]
        .iter()
        .all(|p| p.is_none())
        {
            return Ok(None);
        }
        let mut fields = FieldMap::common();
        let lists = [
            ("_msg_field", msg_field, &mut fields.message),
            ("_time_field", time_field, &mut fields.timestamp),
            ("_service_field", service_field, &mut fields.service),
            ("_severity_field", severity_field, &mut fields.severity),
            ("_id_field", id_field, &mut fields.id),
        ];
        for (parameter, given, list) in lists {
            if let Some(given) = given {
                *list = field_names(parameter, given)?;
            }
        }
        if let Some(service) = service {
            check_name(service).map_err(|message| {
                ApiError::bad_request(format!("query parameter `service`: {message}"))
            })?;
            fields.default_service = Some(service.clone());
        }
        Ok(Some(fields))
    }
}

pub(super) fn field_names(parameter: &str, given: &str) -> Result<Vec<String>, ApiError> {
    let names: Vec<String> = given
        .split(',')
        .map(|name| name.trim().to_owned())
        .collect();
    let problem = if names.len() > MAX_FIELD_NAMES {
        Some(format!("at most {MAX_FIELD_NAMES} field names"))
    } else if names.iter().any(|name| name.is_empty()) {
        Some("a field name is empty".to_owned())
    } else if names.iter().any(|name| name.len() > MAX_FIELD_NAME_BYTES) {
        Some(format!(
            "a field name is longer than {MAX_FIELD_NAME_BYTES} bytes"
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ApiError::bad_request(format!(
            "query parameter `{parameter}`: {problem} (comma-separated names, e.g. log,message)"
        ))),
        None => Ok(names),
    }
}
