//! Loki's push API, `POST /loki/api/v1/push`, so that Promtail, Grafana Alloy, Fluent Bit's
//! `loki` output, Vector's `loki` sink and the Loki logging libraries send to a node unchanged:
//! snappy-compressed protobuf (`Content-Type: application/x-protobuf`, what they send by
//! default) or JSON (`application/json`, gzip with `Content-Encoding`).
//!
//! As Loki does, the answer is 204 once every entry is durable, and errors are plain text:
//! 400 for a push that does not decode or breaks a rule (nothing is stored: a push is taken
//! whole or refused whole), 413 too large (in bytes, entries or expansion:
//! [`crate::event::bounds`]), 429 or 503 with `Retry-After` when the node cannot take more now
//! (the shippers retry those). The mapping is
//! [`crate::event::loki`]'s; `?_service_label=` and `?service=` change which labels make the
//! service.

use super::AppState;
use super::body;
use super::error::{ApiError, media_type, with_retry_after};
use super::ingest;
use crate::event::bounds::Expansion;
use crate::event::loki::{self, LokiMapping};
use crate::event::parse::check_name;
use crate::event::{IngestContext, now_us};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

/// Which labels make the service; without parameters, [`LokiMapping::default`].
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PushParams {
    /// Labels that hold the service, comma-separated, first present wins (default
    /// `service_name,service,job,app,application,app_kubernetes_io_name,container,container_name,component,workload`).
    #[serde(rename = "_service_label")]
    #[param(rename = "_service_label")]
    service_label: Option<String>,
    /// The service of streams that have none of those labels (default `unknown_service`).
    #[param(min_length = 1, max_length = 128)]
    service: Option<String>,
}

impl PushParams {
    fn mapping(self) -> Result<LokiMapping, ApiError> {
        let mut mapping = LokiMapping::default();
        if let Some(labels) = self.service_label {
            mapping.service_labels = ingest::field_names("_service_label", &labels)?;
        }
        if let Some(service) = self.service {
            check_name(&service).map_err(|message| {
                ApiError::bad_request(format!("query parameter `service`: {message}"))
            })?;
            mapping.default_service = service;
        }
        Ok(mapping)
    }
}

/// Loki's error shape: the status and a line of text.
fn loki_error(error: ApiError) -> Response {
    with_retry_after(
        (
            error.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            format!("{}\n", error.message),
        )
            .into_response(),
    )
}

#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// Snappy-compressed `logproto.PushRequest`.
    Protobuf,
    Json,
}

fn encoding_of(headers: &HeaderMap) -> Encoding {
    // As Loki: JSON when it says so, else snappy protobuf, whatever it says (older clients
    // send `application/x-snappy`, some none).
    match media_type(headers).as_deref() {
        Some("application/json") => Encoding::Json,
        _ => Encoding::Protobuf,
    }
}

/// `POST /loki/api/v1/push`.
#[utoipa::path(post, path = "/loki/api/v1/push", tag = "ingest",
    params(PushParams),
    request_body(content((String = "application/x-protobuf"), (Object = "application/json")),
        description = "A Loki push: snappy-compressed logproto.PushRequest, or JSON {\"streams\":[{\"stream\":{labels},\"values\":[[\"<ns>\",\"<line>\",{metadata}]]}]} (gzip with Content-Encoding)"),
    responses(
        (status = 204, description = "Every entry durable"),
        (status = "default", description = "A line of text: 400 a push that does not decode or breaks a rule, 413 too large, 415 an unknown Content-Encoding, 429 or 503 retry later (with Retry-After); 401 and 403 come from the node in its own shape (JSON)",
            content((String = "text/plain"), (Object = "application/json"))),
    ))]
pub async fn push(
    State(state): State<AppState>,
    params: Result<Query<PushParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&state, params, &headers, body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => loki_error(error),
    }
}

async fn accept(
    state: &AppState,
    params: Result<Query<PushParams>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mapping = params.mapping()?;
    let encoding = encoding_of(headers);
    // Vector's and tracing-loki's pushes say `Content-Encoding: snappy`: read_body has then
    // decoded the snappy block already.
    let decoded_snappy = body::encoding_of(headers)? == body::Encoding::Snappy;
    let (mut bytes, mut permit) = ingest::read_ingest_body(state, headers, body).await?;
    let limit = state.inner.max_body_bytes;
    if matches!(encoding, Encoding::Protobuf) && !decoded_snappy {
        // Decoded here, not in the parser, so that the parser's choice of thread goes by the
        // decoded size.
        bytes = body::snappy_block(&bytes, limit, &mut permit)?;
    }
    let node = state.inner.node_name.clone();
    let now = now_us();
    let oldest = state.inner.intake.oldest_us(now);
    let mut expansion = Expansion::for_body_limit(limit);
    let parse = move |bytes: Bytes| {
        let ctx = IngestContext {
            node: &node,
            now_us: now,
            oldest_us: oldest,
        };
        match encoding {
            Encoding::Json => loki::events_from_json(&bytes, &mapping, ctx, &mut expansion),
            Encoding::Protobuf => loki::events_from_protobuf(&bytes, &mapping, ctx, &mut expansion),
        }
    };
    let events = ingest::parse_body(bytes, parse)
        .await
        .map_err(ApiError::bad_request)?
        .map_err(ingest::refused)?;
    drop(permit);
    if events.is_empty() {
        return Ok(());
    }
    ingest::append(state, events).await
}
