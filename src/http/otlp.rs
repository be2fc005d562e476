//! OpenTelemetry logs over OTLP/HTTP: `POST /v1/logs` (the path the SDKs and the Collector's
//! `otlphttp` exporter append to an endpoint) and `POST /otlp/v1/logs` (for an endpoint that
//! names a path prefix, as Loki's and OpenObserve's do), with binary protobuf or OTLP/JSON
//! bodies, gzip, deflate or snappy encoded or not.
//!
//! Answers follow the OTLP/HTTP specification: 200 with an `ExportLogsServiceResponse` in the
//! request's encoding once every accepted record is durable, with `partial_success` naming how
//! many records were rejected and why the first was; 400 (not retried) when the body does not
//! decode or no record of it can be an event; 413 too large; 429 or 503 with `Retry-After`
//! (retried) when the node cannot take more now. Errors carry a `google.rpc.Status`. The mapping
//! of records onto events is [`crate::event::otlp`]'s.

use super::AppState;
use super::error::{ApiError, media_type, with_retry_after};
use super::ingest;
use crate::event::bounds::Expansion;
use crate::event::otlp::{self, Export};
use crate::event::{IngestContext, now_us};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use prost::Message;
use serde_json::json;

/// `google.rpc.Status`, the body of an OTLP/HTTP error (its `details` are left out).
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
        match media_type(headers).as_deref() {
            Some("application/x-protobuf" | "application/protobuf") => Ok(Encoding::Protobuf),
            Some("application/json") => Ok(Encoding::Json),
            other => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type {} is not OTLP/HTTP: send application/x-protobuf or \
                     application/json",
                    other.map_or_else(|| "(none)".to_owned(), |media| format!("`{media}`"))
                ),
            )),
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        })
    }
}

/// An OTLP/HTTP error: the status, and a `google.rpc.Status` in the request's encoding.
fn otlp_error(encoding: Encoding, error: ApiError) -> Response {
    // gRPC's codes for the same conditions, as the specification asks.
    let code = match error.status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8,
        StatusCode::UNAUTHORIZED => 16,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        _ => 13,
    };
    let status = RpcStatus {
        code,
        message: error.message,
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => json!({"code": status.code, "message": status.message})
            .to_string()
            .into_bytes(),
    };
    with_retry_after(
        (
            error.status,
            [(header::CONTENT_TYPE, encoding.content_type())],
            body,
        )
            .into_response(),
    )
}

/// `POST /v1/logs`.
#[utoipa::path(post, path = "/v1/logs", tag = "ingest",
    request_body(content((String = "application/x-protobuf"), (Object = "application/json")),
        description = "An OTLP ExportLogsServiceRequest, binary protobuf or OTLP/JSON (gzip, deflate or snappy with Content-Encoding)"),
    responses(
        (status = 200, description = "Every accepted record durable; an ExportLogsServiceResponse in the request's encoding, with partial_success when some were rejected", body = Object),
        (status = "default", description = ERRORS, body = Object),
    ))]
pub async fn export(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    export_logs(state, headers, body).await
}

/// `POST /otlp/v1/logs`, the same for endpoints configured with an `/otlp` prefix.
#[utoipa::path(post, path = "/otlp/v1/logs", tag = "ingest",
    request_body(content((String = "application/x-protobuf"), (Object = "application/json")),
        description = "An OTLP ExportLogsServiceRequest, binary protobuf or OTLP/JSON (gzip, deflate or snappy with Content-Encoding)"),
    responses(
        (status = 200, description = "Every accepted record durable; an ExportLogsServiceResponse in the request's encoding, with partial_success when some were rejected", body = Object),
        (status = "default", description = ERRORS, body = Object),
    ))]
pub async fn export_prefixed(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    export_logs(state, headers, body).await
}

const ERRORS: &str = "A google.rpc.Status in the request's encoding: 400 a body that does not \
    decode or no record that can be stored, 413 too large, 415 not protobuf or JSON, 429 or \
    503 retry later (with Retry-After); 401 and 403 come from the node in its own shape.";

async fn export_logs(state: AppState, headers: HeaderMap, body: Body) -> Response {
    let encoding = match Encoding::of(&headers) {
        Ok(encoding) => encoding,
        // A sender that is not OTLP is told in JSON, which any client can read.
        Err(error) => return otlp_error(Encoding::Json, error),
    };
    match accept(&state, encoding, &headers, body).await {
        Ok(export) => {
            let answer = ExportLogsServiceResponse {
                partial_success: (export.rejected > 0).then(|| ExportLogsPartialSuccess {
                    rejected_log_records: export.rejected as i64,
                    error_message: export.rejection_message(),
                }),
            };
            let body = match encoding {
                Encoding::Protobuf => answer.encode_to_vec(),
                // int64 is a string in the protobuf JSON mapping.
                Encoding::Json => match answer.partial_success {
                    Some(partial) => json!({"partialSuccess": {
                        "rejectedLogRecords": partial.rejected_log_records.to_string(),
                        "errorMessage": partial.error_message,
                    }}),
                    None => json!({}),
                }
                .to_string()
                .into_bytes(),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, encoding.content_type())],
                body,
            )
                .into_response()
        }
        Err(error) => otlp_error(encoding, error),
    }
}

/// Decodes the request, maps its records and makes the accepted ones durable.
async fn accept(
    state: &AppState,
    encoding: Encoding,
    headers: &HeaderMap,
    body: Body,
) -> Result<Export, ApiError> {
    let (bytes, permit) = ingest::read_ingest_body(state, headers, body).await?;
    let node = state.inner.node_name.clone();
    let now = now_us();
    let oldest = state.inner.intake.oldest_us(now);
    let mut expansion = Expansion::for_body_limit(state.inner.max_body_bytes);
    let parse = move |bytes: Bytes| {
        let request = match encoding {
            Encoding::Protobuf => otlp::decode_protobuf(&bytes),
            Encoding::Json => otlp::decode_json(&bytes),
        }?;
        drop(bytes);
        let ctx = IngestContext {
            node: &node,
            now_us: now,
            oldest_us: oldest,
        };
        otlp::events_from_request(request, ctx, &mut expansion)
    };
    let mut export = ingest::parse_body(bytes, parse)
        .await
        .map_err(ApiError::bad_request)?
        .map_err(ingest::refused)?;
    drop(permit);
    if export.events.is_empty() {
        if export.rejected > 0 {
            return Err(ApiError::bad_request(export.rejection_message()));
        }
        return Ok(export);
    }
    let events = std::mem::take(&mut export.events);
    ingest::append(state, events).await?;
    Ok(export)
}
