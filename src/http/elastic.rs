//! Elasticsearch's bulk API, so that shippers with an Elasticsearch output (rsyslog's
//! `omelasticsearch`, Filebeat, Logstash, Fluent Bit's `es`, the Python client's
//! `helpers.bulk`) send to a node unchanged: `POST`/`PUT` `/_bulk` and `/{index}/_bulk`, and
//! `GET /` for the version document clients may ask for first. Every answer carries
//! `X-Elastic-Product: Elasticsearch`, which the official clients check.
//!
//! Semantics are Elasticsearch's, per item: a request whose lines do not pair up is refused whole
//! (400, nothing stored); otherwise every `index` or `create` item whose document maps to an event
//! is made durable, all together, before the answer, and every other item (a document that does
//! not map, a `delete` or an `update`: logs are append-only) is answered with its own 400 and
//! `"errors": true`. A full queue refuses the request whole with 429 and `Retry-After`, which
//! shippers retry.
//!
//! Mapping ([`FieldMap::common`]): the document's `message`/`msg`/`log` → message,
//! `@timestamp`/`timestamp` → timestamp, `level`/`severity`/`log.level` → severity, its
//! `service`/`service.name`/`app` → service, else the item's index, else `?service=`; the
//! action's `_id` → id (a repeated id is stored once); every other field → attributes,
//! flattened with dotted keys. The query parameters of `POST /api/v1/logs` (`_msg_field`,
//! `_time_field`, `_service_field`, `_severity_field`, `service`) change the field lists.

use super::AppState;
use super::body::Reservation;
use super::error::{ApiError, with_retry_after};
use super::ingest::{self, LogsParams};
use crate::event::parse::{Location, check_name};
use crate::event::{Event, FieldMap, IngestContext, now_us};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Instant;

/// The version clients are told; the 8.x wire format is what the bulk API here speaks.
const VERSION: &str = "8.17.0";

/// Elasticsearch's error shape, `{"error": {"type", "reason"}, "status"}`, with the product
/// header.
fn es_error(status: StatusCode, kind: &str, reason: impl Into<String>) -> Response {
    let reason = reason.into();
    let body = json!({
        "error": {
            "root_cause": [{"type": kind, "reason": reason}],
            "type": kind,
            "reason": reason,
        },
        "status": status.as_u16(),
    });
    with_product(with_retry_after((status, Json(body)).into_response()))
}

fn with_product(mut response: Response) -> Response {
    response.headers_mut().insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    response
}

/// A logmesh error in Elasticsearch's shape; a full queue becomes the 429 shippers retry.
fn from_api_error(error: ApiError) -> Response {
    let (status, kind) = match (error.status, error.code) {
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded") => (
            StatusCode::TOO_MANY_REQUESTS,
            "es_rejected_execution_exception",
        ),
        (StatusCode::PAYLOAD_TOO_LARGE, _) => (error.status, "content_too_long_exception"),
        (StatusCode::BAD_REQUEST, _) => (error.status, "illegal_argument_exception"),
        (status, _) if status.is_server_error() => (status, "unavailable_shards_exception"),
        (status, code) => (status, code),
    };
    es_error(status, kind, error.message)
}

/// The version document Elasticsearch clients may read before they send.
pub fn info(node_name: &str) -> Response {
    with_product(
        Json(json!({
            "name": node_name,
            "cluster_name": "logmesh",
            "cluster_uuid": "logmesh",
            "version": {
                "number": VERSION,
                "build_flavor": "default",
                "build_type": "logmesh",
                "lucene_version": "9.12.0",
                "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0",
            },
            "tagline": "You Know, for Search",
        }))
        .into_response(),
    )
}

/// Whether a `GET /` is an Elasticsearch client's (it asks for JSON, not for a page).
pub fn wants_info(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| {
            (accept.contains("application/json") || accept.contains("vnd.elasticsearch"))
                && !accept.contains("text/html")
        })
}

/// Items one bulk request may hold: its answer holds one entry (~100 bytes) per item, so the
/// count bounds the answer's memory, which the body budget does not cover.
const MAX_ITEMS: usize = crate::event::bounds::MAX_EVENTS_PER_REQUEST;

/// Why a bulk body is refused whole.
#[derive(Debug)]
enum Refused {
    /// Its lines do not make action/document pairs.
    Malformed(String),
    /// More than [`MAX_ITEMS`] items.
    TooMany,
}

impl Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Malformed(reason) => es_error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                reason,
            ),
            Refused::TooMany => es_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "content_too_long_exception",
                format!("a bulk request holds at most {MAX_ITEMS} items; split it"),
            ),
        }
    }
}

/// One item of a bulk request, as the answer reports it.
struct Item {
    action: &'static str,
    index: String,
    id: String,
    /// `Ok` with the item's event (made durable with the others), or its error.
    outcome: Result<(), (&'static str, String)>,
}

/// An `index` or `create` action line, read without building a JSON tree (most lines are).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexOrCreate<'a> {
    #[serde(borrow)]
    index: Option<Metadata<'a>>,
    #[serde(borrow)]
    create: Option<Metadata<'a>>,
}

/// The metadata of an action the mapping reads; any other is ignored.
#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(rename = "_index", borrow)]
    index: Option<Cow<'a, str>>,
    #[serde(rename = "_id", borrow)]
    id: Option<Cow<'a, str>>,
}

/// An item's action, and the `_index` and `_id` of its metadata.
type Action = (&'static str, Option<String>, Option<String>);

/// The action line of an item.
fn action_of(line: &[u8], number: usize) -> Result<Action, String> {
    if let Ok(parsed) = serde_json::from_slice::<IndexOrCreate<'_>>(line) {
        let owned = |meta: Metadata<'_>| {
            (
                meta.index.map(Cow::into_owned),
                meta.id.map(Cow::into_owned),
            )
        };
        match (parsed.index, parsed.create) {
            (Some(meta), None) => {
                let (index, id) = owned(meta);
                return Ok(("index", index, id));
            }
            (None, Some(meta)) => {
                let (index, id) = owned(meta);
                return Ok(("create", index, id));
            }
            // Anything else is answered, with its reason, by the general reading below.
            _ => {}
        }
    }
    let (action, metadata) = action_and_metadata(line, number)?;
    let text = |key: &str| metadata.get(key).and_then(Value::as_str).map(str::to_owned);
    Ok((action, text("_index"), text("_id")))
}

/// The action line of an item as a JSON tree: which action, and its metadata.
fn action_and_metadata(
    line: &[u8],
    number: usize,
) -> Result<(&'static str, Map<String, Value>), String> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| format!("Malformed action/metadata line [{number}]: {e}"))?;
    let Value::Object(object) = value else {
        return Err(format!(
            "Malformed action/metadata line [{number}], expected START_OBJECT"
        ));
    };
    let mut entries = object.into_iter();
    let (Some((action, metadata)), None) = (entries.next(), entries.next()) else {
        return Err(format!(
            "Malformed action/metadata line [{number}], expected one action"
        ));
    };
    let action = match action.as_str() {
        "index" => "index",
        "create" => "create",
        "delete" => "delete",
        "update" => "update",
        other => {
            return Err(format!(
                "Malformed action/metadata line [{number}], expected one of [create, delete, \
                 index, update] but found [{other}]"
            ));
        }
    };
    match metadata {
        Value::Object(metadata) => Ok((action, metadata)),
        _ => Err(format!(
            "Malformed action/metadata line [{number}], expected an object of metadata"
        )),
    }
}

/// The events of a bulk body and the answer for each item, or why the body is refused whole.
fn parse_bulk(
    body: &[u8],
    path_index: Option<&str>,
    mut fields: FieldMap,
    ctx: IngestContext<'_>,
) -> Result<(Vec<Event>, Vec<Item>), Refused> {
    if std::str::from_utf8(body).is_err() {
        return Err(Refused::Malformed("the body is not valid UTF-8".into()));
    }
    let mut lines = body
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace));
    // An item is two lines (a delete one): room for all of them up front, not grown by copies.
    // (Blank lines count too, so also bounded by the smallest item, `{"delete":{}}` and its
    // newline.)
    let expected_items = (memchr::memchr_iter(b'\n', body).count() / 2 + 1)
        .min(body.len() / 14 + 1)
        .min(MAX_ITEMS);
    let mut events = Vec::with_capacity(expected_items);
    let mut items = Vec::with_capacity(expected_items);
    // One mapping for the request; only the fallback service and the id field vary per item.
    let common_id = fields.id.clone();
    let common_service = fields.default_service.clone();
    while let Some((number, line)) = lines.next() {
        let (action, index, given_id) = action_of(line, number).map_err(Refused::Malformed)?;
        let index = index
            .or_else(|| path_index.map(str::to_owned))
            .unwrap_or_default();
        let source = match action {
            "delete" => None,
            _ => {
                let Some((source_number, source)) = lines.next() else {
                    return Err(Refused::Malformed(format!(
                        "The bulk request must be terminated by a newline [\\n]: the {action} \
                         action on line {number} has no document line"
                    )));
                };
                let document: Value = serde_json::from_slice(source).map_err(|e| {
                    Refused::Malformed(format!("Malformed document on line [{source_number}]: {e}"))
                })?;
                Some((source_number, document))
            }
        };
        let mut item = Item {
            action,
            index: index.clone(),
            id: given_id.clone().unwrap_or_default(),
            outcome: Ok(()),
        };
        let bad_index = (!index.is_empty())
            .then(|| check_name(&index).err())
            .flatten();
        item.outcome = match (action, source) {
            (_, _) if bad_index.is_some() => Err((
                "invalid_index_name_exception",
                format!(
                    "index `{}` {}: an index becomes a service name",
                    index.escape_debug(),
                    bad_index.unwrap_or_default()
                ),
            )),
            ("index" | "create", Some((source_number, Value::Object(document)))) => {
                let service = if index.is_empty() {
                    common_service.as_ref()
                } else {
                    Some(&index)
                };
                if fields.default_service.as_ref() != service {
                    fields.default_service = service.cloned();
                }
                fields.id = match given_id {
                    Some(_) => vec!["_id".into()],
                    None => common_id.clone(),
                };
                let mut document = document;
                if let Some(id) = &given_id {
                    document.insert("_id".into(), Value::String(id.clone()));
                }
                match fields.event_from_document(document, &Location::Line(source_number), ctx) {
                    Ok(event) => {
                        item.id = event.id.clone();
                        events.push(event);
                        Ok(())
                    }
                    Err(error) => Err(("document_parsing_exception", error.to_string())),
                }
            }
            ("index" | "create", Some((source_number, _))) => Err((
                "document_parsing_exception",
                format!("line {source_number}: a document is a JSON object"),
            )),
            _ => Err((
                "illegal_argument_exception",
                format!("{action} is not supported: logmesh keeps logs append-only"),
            )),
        };
        items.push(item);
        if items.len() > MAX_ITEMS {
            return Err(Refused::TooMany);
        }
    }
    if items.is_empty() {
        return Err(Refused::Malformed("request body is required".into()));
    }
    Ok((events, items))
}

/// `POST` or `PUT` `/_bulk`.
#[utoipa::path(method(post, put), path = "/_bulk", tag = "ingest",
    params(LogsParams),
    request_body(content((String = "application/x-ndjson"), (String = "text/plain")),
        description = "Elasticsearch bulk: action/metadata lines, each index or create followed by its document; any content type"),
    responses(
        (status = 200, description = "Per-item results, in Elasticsearch's shape", body = Object),
        (status = "default", description = ERRORS, body = Object),
    ))]
pub async fn bulk(
    State(state): State<AppState>,
    params: Result<Query<LogsParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    bulk_into(state, None, params, headers, body).await
}

/// `POST` or `PUT` `/{index}/_bulk`: items without `_index` go to `index`.
#[utoipa::path(method(post, put), path = "/{index}/_bulk", tag = "ingest",
    params(("index" = String, Path, description = "The index of items that name none"), LogsParams),
    request_body(content((String = "application/x-ndjson"), (String = "text/plain")),
        description = "Elasticsearch bulk: action/metadata lines, each index or create followed by its document; any content type"),
    responses(
        (status = 200, description = "Per-item results, in Elasticsearch's shape", body = Object),
        (status = "default", description = ERRORS, body = Object),
    ))]
pub async fn bulk_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
    params: Result<Query<LogsParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    bulk_into(state, Some(index), params, headers, body).await
}

/// How the bulk endpoints' errors are described.
const ERRORS: &str = "An error in Elasticsearch's shape (`{\"error\": {\"type\", \"reason\"}, \
    \"status\"}`): 400 a body whose lines do not pair up, 413 too large, 429 the queue is full \
    (with Retry-After), 503 unavailable; 401 and 403 come from the node in its own shape.";

async fn bulk_into(
    state: AppState,
    path_index: Option<String>,
    params: Result<Query<LogsParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let fields = match params
        .map_err(|e| ApiError::bad_request(e.body_text()))
        .and_then(|Query(params)| params.field_map())
    {
        Ok(fields) => fields.unwrap_or_else(FieldMap::common),
        Err(error) => return from_api_error(error),
    };
    if let Some(index) = &path_index
        && let Err(problem) = check_name(index)
    {
        return es_error(
            StatusCode::BAD_REQUEST,
            "invalid_index_name_exception",
            format!(
                "index `{}` {problem}: an index becomes a service name",
                index.escape_debug()
            ),
        );
    }
    let (bytes, permit): (Bytes, Reservation) =
        match ingest::read_ingest_body(&state, &headers, body).await {
            Ok(read) => read,
            Err(error) => return from_api_error(error),
        };
    let node = state.inner.node_name.clone();
    let now = now_us();
    let oldest = state.inner.intake.oldest_us(now);
    let parse = move |bytes: Bytes| {
        parse_bulk(
            &bytes,
            path_index.as_deref(),
            fields,
            IngestContext {
                node: &node,
                now_us: now,
                oldest_us: oldest,
            },
        )
    };
    let parsed = ingest::parse_body(bytes, parse)
        .await
        .unwrap_or_else(|error| Err(Refused::Malformed(error)));
    // The body budget stays taken until the answer is built: the items and the answer are of
    // the body's order of size.
    let (events, items) = match parsed {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    if !events.is_empty()
        && let Err(error) = ingest::append(&state, events).await
    {
        return from_api_error(error);
    }
    let errors = items.iter().any(|item| item.outcome.is_err());
    let took = started.elapsed().as_millis() as u64;
    let mut answer = String::with_capacity(64 + items.len() * 100);
    answer.push_str(&format!(
        "{{\"took\":{took},\"errors\":{errors},\"items\":["
    ));
    for (number, item) in items.into_iter().enumerate() {
        if number > 0 {
            answer.push(',');
        }
        // Written directly rather than through serde_json::Value: a 10,000-item answer is a
        // large share of a bulk request's work otherwise.
        answer.push_str("{\"");
        answer.push_str(item.action);
        answer.push_str("\":{\"_index\":");
        push_json_string(&mut answer, &item.index);
        answer.push_str(",\"_id\":");
        push_json_string(&mut answer, &item.id);
        match item.outcome {
            // What shippers read of an item is its status (and error); Elasticsearch's
            // `_version`, `_shards`, `_seq_no` and `_primary_term` are left out, as VictoriaLogs
            // does: they would double the answer, which is a large share of a bulk's cost.
            Ok(()) => answer.push_str(",\"result\":\"created\",\"status\":201}}"),
            Err((kind, reason)) => {
                let _ = write!(
                    answer,
                    ",\"status\":400,\"error\":{{\"type\":\"{kind}\",\"reason\":"
                );
                push_json_string(&mut answer, &reason);
                answer.push_str("}}}");
            }
        }
    }
    answer.push_str("]}");
    drop(permit);
    with_product(
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            answer,
        )
            .into_response(),
    )
}

/// Appends `text` as a JSON string; most index names and ids need no escaping and are copied.
fn push_json_string(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&Value::String(text.to_owned()).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: IngestContext<'static> = IngestContext {
        node: "n1",
        now_us: 1_796_000_000_000_000,
        oldest_us: i64::MIN,
    };

    #[test]
    fn strings_in_the_answer_are_json() {
        for text in ["web", "a\"b", "back\\slash", "tab\there", "é"] {
            let mut out = String::new();
            push_json_string(&mut out, text);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
        }
    }

    #[test]
    fn bad_index_names_and_too_many_items_are_refused() {
        let body = "{\"index\":{\"_index\":\"a b\"}}\n{\"message\":\"m\"}\n";
        let (events, items) = parse_bulk(body.as_bytes(), None, FieldMap::common(), CTX).unwrap();
        assert!(events.is_empty());
        let Err((kind, _)) = &items[0].outcome else {
            panic!("a bad index is an item error");
        };
        assert_eq!(*kind, "invalid_index_name_exception");
        let many = "{\"delete\":{}}\n".repeat(MAX_ITEMS + 1);
        assert!(matches!(
            parse_bulk(many.as_bytes(), None, FieldMap::common(), CTX),
            Err(Refused::TooMany)
        ));
    }

    #[test]
    fn items_map_one_by_one_and_lines_must_pair_up() {
        let body = concat!(
            "{\"index\":{\"_index\":\"web\",\"_id\":\"a1\"}}\n",
            "{\"message\":\"GET /\",\"@timestamp\":\"2026-11-23T10:15:00Z\",\"log\":{\"level\":\"warn\"}}\n",
            "{\"create\":{}}\n",
            "{\"msg\":\"no index, path's\",\"service\":{\"name\":\"api\"}}\n",
            "{\"index\":{\"_index\":\"web\"}}\n",
            "{\"nothing\":\"to say\"}\n",
            "{\"delete\":{\"_index\":\"web\",\"_id\":\"a1\"}}\n",
        );
        let (events, items) =
            parse_bulk(body.as_bytes(), Some("fallback"), FieldMap::common(), CTX).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id, "a1");
        assert_eq!(events[0].service, "web");
        assert_eq!(events[0].severity, crate::event::Severity::Warn);
        assert_eq!(events[1].service, "api");
        let outcomes: Vec<(&str, bool)> = items
            .iter()
            .map(|item| (item.action, item.outcome.is_ok()))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("index", true),
                ("create", true),
                ("index", false),
                ("delete", false)
            ]
        );

        for (body, expected) in [
            ("{\"index\":{}}\n", "no document line"),
            (
                "{\"index\":{}}\n{\"message\":\n",
                "Malformed document on line [2]",
            ),
            ("{\"upsert\":{}}\n{}\n", "found [upsert]"),
            ("[1]\n", "expected START_OBJECT"),
            ("{\"index\":{},\"create\":{}}\n{}\n", "expected one action"),
            ("\n\n", "request body is required"),
        ] {
            let Some(Refused::Malformed(error)) =
                parse_bulk(body.as_bytes(), None, FieldMap::common(), CTX).err()
            else {
                panic!("{body:?} is malformed");
            };
            assert!(error.contains(expected), "{body:?}: {error}");
        }
    }
}
