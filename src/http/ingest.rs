//! Ingest endpoints: `POST /event` (one raw-text event) and `POST /api/v1/logs` (JSON: one
//! object, an array, or NDJSON). Both answer 202 only once the queue made every event durable.

use super::AppState;
use super::error::ApiError;
use crate::event::{Event, IngestContext, now_us, parse_json_body, parse_raw_body};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::SemaphorePermit;

/// Bodies larger than this are parsed on the blocking pool so that they do not stall the
/// runtime thread other requests share.
const INLINE_PARSE_MAX_BYTES: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventParams {
    service: Option<String>,
    severity: Option<String>,
}

/// Makes `events` durable, then offers them to live clients (embedded shape; in a cluster the
/// live feed follows the stream instead, so that it sees every node's events).
async fn append(state: &AppState, events: Vec<Event>) -> Result<(), ApiError> {
    let live = &state.inner.live;
    let offered = (live.fed_by_ingest() && live.has_clients()).then(|| events.clone());
    let count = events.len();
    if let Err(error) = state.inner.queue.append(events).await {
        state.inner.metrics.events_refused(count);
        return Err(error.into());
    }
    state.inner.metrics.events_accepted(count);
    for event in offered.into_iter().flatten() {
        live.offer(Arc::new(event));
    }
    Ok(())
}

pub async fn post_event(
    State(state): State<AppState>,
    params: Result<Query<RawEventParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (bytes, permit) = read_body(&state, &headers, body).await?;
    let context = IngestContext {
        node: &state.inner.node_name,
        now_us: now_us(),
    };
    let event = parse_raw_body(
        &bytes,
        params.service.as_deref(),
        params.severity.as_deref(),
        context,
    )?;
    drop((bytes, permit));
    let id = event.id.clone();
    append(&state, vec![event]).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": 1, "id": id}))))
}

pub async fn post_logs(
    State(state): State<AppState>,
    params: Result<Query<NoParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (bytes, permit) = read_body(&state, &headers, body).await?;
    let node = state.inner.node_name.clone();
    let now = now_us();
    let parse = move |bytes: Bytes| {
        parse_json_body(
            &bytes,
            IngestContext {
                node: &node,
                now_us: now,
            },
        )
    };
    let events = if bytes.len() <= INLINE_PARSE_MAX_BYTES {
        parse(bytes)?
    } else {
        tokio::task::spawn_blocking(move || parse(bytes))
            .await
            .map_err(|e| ApiError::bad_request(format!("parsing the body failed: {e}")))??
    };
    drop(permit);
    let accepted = events.len();
    append(&state, events).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": accepted}))))
}

/// `POST /api/v1/logs` takes no query parameters; a stray one is most likely a mistake.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// How a request body is encoded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

fn encoding_of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    match value.as_bytes().to_ascii_lowercase().as_slice() {
        b"identity" => Ok(Encoding::Identity),
        b"gzip" | b"x-gzip" => Ok(Encoding::Gzip),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!(
                "Content-Encoding {:?} is not supported; send the body as gzip or uncompressed",
                String::from_utf8_lossy(value.as_bytes())
            ),
        )),
    }
}

/// Reads the whole body within the size limit and the node's in-flight body budget. A gzip
/// body is decompressed (on the blocking pool); the limit applies to both its compressed and
/// its decompressed size, so a small bomb cannot grow past it.
async fn read_body<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, SemaphorePermit<'a>), ApiError> {
    let encoding = encoding_of(headers)?;
    let limit = state.inner.max_body_bytes;
    let too_large = || {
        ApiError::too_large(format!(
            "the body is larger than the {limit}-byte limit; split it into several requests"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    // A compressed body may grow to the limit once decompressed: budget for that.
    let wanted = match encoding {
        Encoding::Identity => declared.unwrap_or(limit),
        Encoding::Gzip => limit,
    };
    let wanted = wanted.clamp(1, u32::MAX as usize) as u32;
    let permit = state
        .inner
        .body_budget
        .try_acquire_many(wanted)
        .map_err(|_| ApiError::overloaded("too many request bodies in flight; retry later"))?;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        if is_length_limit(&error) {
            too_large()
        } else {
            ApiError::bad_request(format!("could not read the request body: {error}"))
        }
    })?;
    let bytes = match encoding {
        Encoding::Identity => bytes,
        Encoding::Gzip => tokio::task::spawn_blocking(move || gunzip(&bytes, limit))
            .await
            .expect("decompressing does not panic")?,
    };
    Ok((bytes, permit))
}

/// Decompresses a gzip body (several members are one stream, as `cat a.gz b.gz` makes), reading
/// at most `limit` bytes of output.
fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    use std::io::Read;
    let mut decompressed = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut decompressed)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid gzip: {e}")))?;
    if decompressed.len() > limit {
        return Err(ApiError::too_large(format!(
            "the body decompresses to more than the {limit}-byte limit; split it into several \
             requests"
        )));
    }
    Ok(Bytes::from(decompressed))
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}
