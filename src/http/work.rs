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
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

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

pub async fn status(
    State(state): State<AppState>,
    Path(callback): Path<String>,
) -> Result<Json<StatusView>, ApiError> {
    Ok(Json(state.inner.work.status(&callback).await?))
}

pub async fn result(
    State(state): State<AppState>,
    Path(callback): Path<String>,
) -> Result<Response, ApiError> {
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
