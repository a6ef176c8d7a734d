//! S3/GCS XML error documents: `<Error><Code>…</Code><Message>…</Message>…</Error>`,
//! with the codes and statuses S3 uses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealstore_storage::{KeyError, StorageError};

#[derive(Debug, Clone)]
pub struct S3Error {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The bucket or key the error is about (`<Resource>`).
    pub resource: Option<String>,
    /// Further elements some errors carry (`<ServerTime>`, `<Expires>`, …).
    pub extra: Vec<(&'static str, String)>,
}

pub type S3Result<T> = Result<T, S3Error>;

impl S3Error {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            resource: None,
            extra: vec![],
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidArgument", message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequest", message)
    }

    pub fn malformed_xml(detail: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            "MalformedXML",
            format!(
                "The XML you provided was not well-formed or did not validate against our published schema: {detail}"
            ),
        )
    }

    pub fn not_implemented(what: &str) -> Self {
        Self::new(501, "NotImplemented", format!("{what} is not supported by sealstore."))
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(403, "AccessDenied", message)
    }

    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub fn body(&self, request_id: &str) -> String {
        use super::render::El;
        let mut root = El::new("Error")
            .child(El::text("Code", self.code))
            .child(El::text("Message", self.message.clone()))
            .opt("Resource", self.resource.clone());
        for (k, v) in &self.extra {
            root.add(El::text(k, v.clone()));
        }
        root.child(El::text("RequestId", request_id)).to_xml_ns(false)
    }
}

impl IntoResponse for S3Error {
    fn into_response(self) -> Response {
        let id = sealstore_core::request_id::current().unwrap_or_default();
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, self.body(&id)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        resp
    }
}

impl From<StorageError> for S3Error {
    fn from(e: StorageError) -> Self {
        let message = e.to_string();
        match e {
            StorageError::BadRequest { reason, .. } => match reason {
                // SSE-C, as S3 answers it: a missing key, or a key the object does not use.
                "resourceIsEncryptedWithCustomerEncryptionKey" => Self::invalid_request(
                    "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
                ),
                "resourceNotEncryptedWithCustomerEncryptionKey" => {
                    Self::invalid_request("The encryption parameters are not applicable to this object.")
                }
                // A wrong SSE-C key is AccessDenied on S3.
                "customerEncryptionKeyIsIncorrect" => Self::access_denied(
                    "The provided customer encryption key does not match the key the object was stored with.",
                ),
                "invalidPart" => Self::new(400, "InvalidPart", message),
                "invalidPartOrder" => Self::new(400, "InvalidPartOrder", message),
                "entityTooSmall" => Self::new(400, "EntityTooSmall", message),
                "malformedXML" => Self::new(400, "MalformedXML", message),
                "required" | "invalid" | "badRequest" => Self::invalid(message),
                _ => Self::invalid(message),
            },
            StorageError::Forbidden { reason, .. } => match reason {
                "customerEncryptionKeyIsIncorrect" => Self::access_denied(
                    "The provided customer encryption key does not match the key the object was stored with.",
                ),
                "objectUnderActiveHold" | "retentionPolicyNotMet" => Self::access_denied(format!(
                    "Access Denied because object protected by object lock: {message}"
                )),
                _ => Self::access_denied(message),
            },
            StorageError::NotFound(m) if m.starts_with("The specified bucket does not exist") => {
                Self::new(404, "NoSuchBucket", m)
            }
            StorageError::NotFound(m) => Self::new(404, "NoSuchKey", m),
            StorageError::Conflict(m) if m.starts_with("The bucket you tried to delete is not empty") => {
                Self::new(409, "BucketNotEmpty", m)
            }
            StorageError::Conflict(m) if m.contains("you already own it") => {
                Self::new(409, "BucketAlreadyOwnedByYou", m)
            }
            StorageError::Conflict(m) => Self::new(409, "Conflict", m),
            // Encryption enforcement (S3's BlockedEncryptionTypes): AccessDenied, as S3.
            StorageError::PreconditionFailed(m) if m.contains("does not allow new objects with") => {
                Self::access_denied(m)
            }
            StorageError::PreconditionFailed(_) | StorageError::ConcurrentChange(_) => Self::new(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            ),
            StorageError::NotModified => Self::new(304, "NotModified", "Not Modified"),
            StorageError::RangeNotSatisfiable { size } => Self {
                extra: vec![("ActualObjectSize", size.to_string())],
                ..Self::new(416, "InvalidRange", "The requested range is not satisfiable")
            },
            StorageError::Gone(m) => Self::new(404, "NoSuchUpload", m),
            StorageError::PayloadTooLarge { message } => Self::new(400, "EntityTooLarge", message),
            StorageError::Unimplemented(m) => Self::new(501, "NotImplemented", m),
            StorageError::Key(k) => match k {
                KeyError::Disabled(_) => Self::new(400, "KMS.DisabledException", message),
                KeyError::NotFound(_) => Self::new(400, "KMS.NotFoundException", message),
                KeyError::Bad(_) => Self::invalid(message),
                KeyError::PermissionDenied => Self::access_denied(message),
                KeyError::Exhausted(_) => Self::new(503, "SlowDown", message),
                KeyError::Unavailable(_) => Self::new(503, "ServiceUnavailable", message),
                KeyError::Internal(detail) => {
                    tracing::error!(error = %detail, "key service failure");
                    Self::new(
                        500,
                        "InternalError",
                        "We encountered an internal error. Please try again.",
                    )
                }
            },
            StorageError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "a backing store is unavailable");
                Self::new(
                    503,
                    "ServiceUnavailable",
                    "Service is unable to handle request; please retry.",
                )
            }
            StorageError::Internal(detail) => {
                tracing::error!(error = %detail, "internal storage error");
                Self::new(
                    500,
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                )
            }
        }
    }
}
