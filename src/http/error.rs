//! The one place errors become HTTP responses: `{"error": {"code": "...", "message": "..."}}`
//! with a fitting status, and `Retry-After` when the node sheds load.

use crate::cluster::ClusterError;
use crate::event::InputError;
use crate::queue::QueueError;
use crate::store::StoreError;
use crate::work::WorkError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Seconds a client is asked to wait when the node sheds load.
const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
}

/// Adds `Retry-After` to an answer that asks the client to come back (429, 503), in whatever
/// shape the protocol answers: clients and shippers retry on it.
pub fn with_retry_after(mut response: Response) -> Response {
    if matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    response
}

/// The media type of the request's `Content-Type`, lowercase, without parameters.
pub fn media_type(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = with_retry_after((self.status, body).into_response());
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"logmesh\""),
            );
        }
        response
    }
}

impl From<InputError> for ApiError {
    fn from(error: InputError) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::Full { .. } => ApiError::overloaded(error.to_string()),
            QueueError::TooLarge { .. } | QueueError::TooManyMessages { .. } => {
                ApiError::too_large(error.to_string())
            }
            QueueError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                error.to_string(),
            ),
            QueueError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                error.to_string(),
            ),
            QueueError::DiskLow { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "disk_low",
                error.to_string(),
            ),
            QueueError::Io(_) | QueueError::Config(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_unavailable",
                error.to_string(),
            ),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            error.to_string(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Rejected(message) | StoreError::InvalidQuery(message) => {
                return ApiError::bad_request(message);
            }
            StoreError::LimitExceeded(message) => {
                return ApiError::new(StatusCode::BAD_REQUEST, "limit_exceeded", message);
            }
            _ => {}
        }
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            error.to_string(),
        )
    }
}

impl From<WorkError> for ApiError {
    fn from(error: WorkError) -> Self {
        let (status, code) = match &error {
            WorkError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            WorkError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            WorkError::NotWorked(_) => (StatusCode::CONFLICT, "not_worked"),
            WorkError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            WorkError::ResultLimit(_) => (StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded"),
            WorkError::Unavailable(_) | WorkError::Config(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "work_unavailable")
            }
        };
        ApiError::new(status, code, error.to_string())
    }
}
