//! Google API error bodies. This module alone turns core errors into HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sealstore_iam::IamError;
use sealstore_kms::KmsError;
use serde_json::{Value, json};

/// `google.rpc.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    FailedPrecondition,
    OutOfRange,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    Aborted,
    AlreadyExists,
    ResourceExhausted,
    Cancelled,
    Internal,
    Unimplemented,
    Unavailable,
    /// An over-long request body: HTTP 413, reported as INVALID_ARGUMENT as Google's
    /// front ends report it.
    PayloadTooLarge,
    /// A request body that stopped arriving: HTTP 408.
    RequestTimeout,
}

impl Code {
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Aborted | Code::AlreadyExists => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::NotFound => "NOT_FOUND",
            Code::Aborted => "ABORTED",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Cancelled => "CANCELLED",
            Code::Internal => "INTERNAL",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Unavailable => "UNAVAILABLE",
            Code::PayloadTooLarge => "INVALID_ARGUMENT",
            Code::RequestTimeout => "DEADLINE_EXCEEDED",
        }
    }
}

/// An error in the Cloud APIs' JSON format (`{"error":{"code","message","status","details"}}`).
#[derive(Debug)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
    pub details: Vec<Value>,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: vec![],
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// Makes a bad-input message name the resource it concerns, unless it already
    /// does. Cloud KMS's fixed decryption-failure text is kept word for word.
    pub fn naming(mut self, resource: &str) -> Self {
        if self.code == Code::InvalidArgument
            && !self.message.contains(resource)
            && !self.message.starts_with("Decryption failed")
        {
            self.message = format!("{resource}: {}", self.message);
        }
        self
    }
}

impl From<KmsError> for RpcError {
    fn from(e: KmsError) -> Self {
        let message = e.to_string();
        match e {
            KmsError::InvalidArgument(_) | KmsError::DecryptionFailed => Self::new(Code::InvalidArgument, message),
            KmsError::NotFound(_) => Self::new(Code::NotFound, message),
            KmsError::AlreadyExists(_) => Self::new(Code::AlreadyExists, message),
            KmsError::FailedPrecondition(_) => Self::new(Code::FailedPrecondition, message),
            KmsError::NotEnabled { version, state } => Self {
                code: Code::FailedPrecondition,
                message,
                details: vec![json!({
                    "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                    "violations": [{"type": format!("KEY_{state}"), "subject": version, "description": ""}],
                })],
            },
            KmsError::Unimplemented(_) => Self::new(Code::Unimplemented, message),
            KmsError::ResourceExhausted(_) => Self::new(Code::ResourceExhausted, message),
            KmsError::PermissionDenied(_) => Self::new(Code::PermissionDenied, message),
            KmsError::Aborted(_) => Self::new(Code::Aborted, message),
            KmsError::Unavailable(_) => Self::new(Code::Unavailable, message),
            KmsError::Internal(detail) => {
                tracing::error!(error = %detail, "internal KMS error");
                Self::new(Code::Internal, "Internal error.")
            }
        }
    }
}

impl From<IamError> for RpcError {
    fn from(e: IamError) -> Self {
        match e {
            IamError::InvalidArgument(m) => Self::new(Code::InvalidArgument, m),
            IamError::Aborted(m) => Self::new(Code::Aborted, m),
            IamError::NotFound(m) => Self::new(Code::NotFound, m),
            IamError::FailedPrecondition(m) => Self::new(Code::FailedPrecondition, m),
            IamError::Database(ref d) if d.is_unavailable() => {
                tracing::warn!(error = %e, "IAM store unavailable");
                Self::new(Code::Unavailable, "The database is unavailable; retry.")
            }
            IamError::Store(_) | IamError::Corrupt(_) | IamError::Database(_) => {
                tracing::error!(error = %e, "internal IAM error");
                Self::new(Code::Internal, "Internal error.")
            }
        }
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut error = json!({"code": status.as_u16(), "message": self.message, "status": self.code.name()});
        if !self.details.is_empty() {
            error["details"] = Value::Array(self.details);
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<crate::body::BodyError> for RpcError {
    fn from(e: crate::body::BodyError) -> Self {
        use crate::body::BodyError;
        let message = e.to_string();
        match e {
            BodyError::TooLarge(_) => Self::new(Code::PayloadTooLarge, message),
            BodyError::TimedOut => Self::new(Code::RequestTimeout, message),
            BodyError::Unreadable(_) => Self::new(Code::InvalidArgument, message),
        }
    }
}
