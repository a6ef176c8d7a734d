//! GCS JSON API error bodies: `{"error":{"code","message","errors":[{"domain","reason","message"}]}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealstore_storage::{KeyError, StorageError};
use serde_json::json;

#[derive(Debug)]
pub struct GcsError {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
    /// For 416: the object size, sent as `Content-Range: bytes */SIZE`.
    pub range_size: Option<u64>,
}

impl GcsError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            range_size: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "notFound", message)
    }
}

impl From<StorageError> for GcsError {
    fn from(e: StorageError) -> Self {
        let message = e.to_string();
        match e {
            StorageError::BadRequest { reason, .. } => Self::new(StatusCode::BAD_REQUEST, reason, message),
            StorageError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "notFound", message),
            StorageError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            StorageError::PreconditionFailed(_) | StorageError::ConcurrentChange(_) => {
                Self::new(StatusCode::PRECONDITION_FAILED, "conditionNotMet", message)
            }
            StorageError::NotModified => Self::new(StatusCode::NOT_MODIFIED, "notModified", message),
            StorageError::RangeNotSatisfiable { size } => Self {
                range_size: Some(size),
                ..Self::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "requestedRangeNotSatisfiable",
                    message,
                )
            },
            StorageError::Gone(_) => Self::new(StatusCode::GONE, "gone", message),
            StorageError::Forbidden { reason, .. } => Self::new(StatusCode::FORBIDDEN, reason, message),
            StorageError::PayloadTooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "uploadTooLarge", message),
            StorageError::Unimplemented(_) => Self::new(StatusCode::NOT_IMPLEMENTED, "notImplemented", message),
            StorageError::Key(k) => match k {
                KeyError::Disabled(_) => Self::new(StatusCode::BAD_REQUEST, "cloudKmsDisabledKey", message),
                KeyError::NotFound(_) => Self::new(StatusCode::BAD_REQUEST, "cloudKmsEncryptionKeyNotFound", message),
                KeyError::Bad(_) => Self::new(StatusCode::BAD_REQUEST, "invalid", message),
                KeyError::PermissionDenied => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
                KeyError::Exhausted(_) => Self::new(StatusCode::TOO_MANY_REQUESTS, "rateLimitExceeded", message),
                KeyError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "backendError", message),
                KeyError::Internal(detail) => {
                    tracing::error!(error = %detail, "key service failure");
                    Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internalError", "Internal error.")
                }
            },
            StorageError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "a backing store is unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backendError",
                    "A backing store (database or blob store) is unavailable; retry the request.",
                )
            }
            StorageError::Internal(detail) => {
                tracing::error!(error = %detail, "internal storage error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internalError", "Internal error.")
            }
        }
    }
}

impl GcsError {
    /// The error as the media endpoints (uploads, `alt=media` downloads) send it: the
    /// same status and message, as plain text, as GCS does there.
    pub fn into_plain_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return self.status.into_response();
        }
        // The reason GCS would put in a JSON body goes in a header, so tools and
        // operators can still tell errors apart without parsing the text.
        let mut resp = (
            self.status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::HeaderName::from_static("x-sealstore-error-reason"), self.reason),
            ],
            self.message,
        )
            .into_response();
        if let Some(size) = self.range_size
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}

impl IntoResponse for GcsError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return self.status.into_response();
        }
        let body = json!({"error": {
            "code": self.status.as_u16(),
            "message": self.message,
            "errors": [{"domain": "global", "reason": self.reason, "message": self.message}],
        }});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(size) = self.range_size
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}

pub type GcsResult<T> = Result<T, GcsError>;

impl From<crate::body::BodyError> for GcsError {
    fn from(e: crate::body::BodyError) -> Self {
        use crate::body::BodyError;
        let message = e.to_string();
        match e {
            BodyError::TooLarge(_) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "uploadTooLarge", message),
            BodyError::TimedOut => Self::new(StatusCode::REQUEST_TIMEOUT, "requestTimeout", message),
            BodyError::Unreadable(_) => Self::new(StatusCode::BAD_REQUEST, "invalid", message),
        }
    }
}
