//! `/api/v1/work`: submit a job, read its status, fetch its result, through
//! [`Work`](crate::work::Work).
//!
//! Invariants: a submission is checked whole before anything is recorded (400 names the
//! problem); 202 is sent only once the job's record and queue entry are durable; a result is
//! streamed from the result store, never held whole in memory.

use super::AppState;
use super::body::read_small_body;
use super::error::ApiError;
use crate::work::submission::MAX_SUBMISSION_BYTES;
use crate::work::{Accepted, StatusView, Submission};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

/// Submits work; answers its callback. Identical work within its TTL is not run twice.
#[utoipa::path(post, path = "/api/v1/work", tag = "work",
    request_body(content = crate::http::openapi::WorkSubmission, content_type = "application/json"),
    responses((status = 202, description = "Recorded and queued", body = crate::http::openapi::WorkAccepted)))]
#[tracing::instrument(skip_all)]
pub async fn submit(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body = read_small_body(body, MAX_SUBMISSION_BYTES).await?;
    let submission = Submission::parse(&body)?;
    let accepted = state.inner.work.submit(submission).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// A job's record.
#[utoipa::path(get, path = "/api/v1/work/{callback}", tag = "work",
    params(("callback" = String, Path, description = "The callback `POST /api/v1/work` answered", pattern = "^[0-9A-Fa-f]{32}$")),
    responses((status = 200, description = "The record", body = crate::http::openapi::WorkStatus)))]
pub async fn status(
    State(state): State<AppState>,
    callback: Result<Path<String>, PathRejection>,
) -> Result<Json<StatusView>, ApiError> {
    let Path(callback) = callback.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(Json(state.inner.work.status(&callback).await?))
}

/// A worked job's result (NDJSON for an export).
#[utoipa::path(get, path = "/api/v1/work/{callback}/result", tag = "work",
    params(("callback" = String, Path, description = "The callback `POST /api/v1/work` answered", pattern = "^[0-9A-Fa-f]{32}$")),
    responses((status = 200, description = "The result", content(
        (Object = "application/json"),
        (String = "application/x-ndjson"),
    ))))]
pub async fn result(
    State(state): State<AppState>,
    callback: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(callback) = callback.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let blob = state.inner.work.result(&callback).await?;
    Ok((
        [
            (header::CONTENT_TYPE, blob.kind.content_type().to_owned()),
            (header::CONTENT_LENGTH, blob.bytes.to_string()),
        ],
        Body::from_stream(ReaderStream::new(blob.reader)),
    )
        .into_response())
}
