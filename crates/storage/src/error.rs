//! The storage engine's error type: GCS-style categories and reasons, never HTTP.

/// Why a KMS key could not be used for an object's data key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The key or version is disabled, destroyed or scheduled for destruction.
    #[error("Cloud KMS key is disabled, destroyed, or scheduled to be destroyed: {0}")]
    Disabled(String),
    #[error("Cloud KMS key not found: {0}")]
    NotFound(String),
    /// Malformed key name, wrong purpose, no primary, wrong location.
    #[error("Bad Cloud KMS crypto key: {0}")]
    Bad(String),
    #[error(
        "Permission denied on Cloud KMS key. Please ensure that your Cloud Storage service account has been authorized to use this key."
    )]
    PermissionDenied,
    #[error("Cloud KMS quota exceeded: {0}")]
    Exhausted(String),
    /// The key manager cannot serve now (its database is unreachable); retryable.
    #[error("Cloud KMS is unavailable: {0}")]
    Unavailable(String),
    #[error("key service failure: {0}")]
    Internal(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// 400 with a GCS reason (`invalid`, `required`, `customerEncryptionKeyIsIncorrect`, …).
    #[error("{message}")]
    BadRequest { reason: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    /// A conditional write lost a race: the row changed since it was read. Callers that
    /// set no precondition of their own retry; otherwise it is a failed precondition.
    #[error("{0}")]
    ConcurrentChange(String),
    /// A failed NotMatch precondition on a read.
    #[error("Not Modified")]
    NotModified,
    #[error("Request range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    /// A resumable session or rewrite token that no longer exists.
    #[error("{0}")]
    Gone(String),
    #[error("{message}")]
    Forbidden { reason: &'static str, message: String },
    #[error("{message}")]
    PayloadTooLarge { message: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Unimplemented(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl StorageError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::BadRequest {
            reason: "invalid",
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Internal(format!("metadata store: {e}"))
    }
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        StorageError::Internal(format!("blob store: {e}"))
    }
}

impl From<serde_json::Error> for StorageError {
    fn from(e: serde_json::Error) -> Self {
        StorageError::Internal(format!("corrupt metadata record: {e}"))
    }
}

pub type StorageResult<T> = Result<T, StorageError>;
