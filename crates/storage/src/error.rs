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
    /// The metadata database could not be reached or went away mid-request: retryable
    /// (503). The detail is for logs; it never holds a connection string.
    #[error("unavailable: {0}")]
    Unavailable(String),
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

impl From<sealstore_core::pg::PgError> for StorageError {
    fn from(e: sealstore_core::pg::PgError) -> Self {
        use sealstore_core::pg::PgError;
        use tokio_postgres::error::SqlState;
        let code = match &e {
            PgError::Db(d) => d.code().cloned(),
            _ => None,
        };
        // Beyond a lost connection (no SQLSTATE), the server saying it is shutting down,
        // starting or out of connections is also "come back later".
        let server_unavailable = code.as_ref().is_some_and(|c| {
            c.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(c)
        });
        if e.is_unavailable() || server_unavailable {
            return StorageError::Unavailable(e.to_string());
        }
        match code {
            // The server aborted the transaction to break a lock cycle or a
            // serialisation conflict: nothing was written, the request may retry.
            Some(c) if c == SqlState::T_R_DEADLOCK_DETECTED || c == SqlState::T_R_SERIALIZATION_FAILURE => {
                StorageError::ConcurrentChange("The object changed concurrently; retry the request.".into())
            }
            // PostgreSQL text cannot hold NUL, which names may (SQLite stores them).
            Some(c) if c == SqlState::CHARACTER_NOT_IN_REPERTOIRE => {
                StorageError::invalid("Names and values stored by this gateway cannot contain NUL characters.")
            }
            // tokio-postgres shows a server error as just "db error": keep the server's
            // message (its `detail`, which can quote row values, stays out).
            _ => match &e {
                PgError::Db(d) if let Some(dbe) = d.as_db_error() => {
                    StorageError::Internal(format!("metadata store: {}: {}", dbe.code().code(), dbe.message()))
                }
                _ => StorageError::Internal(format!("metadata store: {e}")),
            },
        }
    }
}

/// The `store` names object_store's network backends give their errors.
const REMOTE_STORES: [&str; 3] = ["S3", "GCS", "MicrosoftAzure"];

impl From<object_store::Error> for StorageError {
    /// A remote blob store that fails (network, timeout, 5xx after the client's own
    /// retries, refused credentials) is "come back later": the write that needed it
    /// committed nothing. A missing blob a row references, a local disk error or a bad
    /// path are this gateway's own faults.
    fn from(e: object_store::Error) -> Self {
        use object_store::Error as E;
        match &e {
            E::Generic { store, .. } if REMOTE_STORES.contains(store) => {
                StorageError::Unavailable(format!("blob store: {e}"))
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                StorageError::Unavailable(format!("blob store: {e}"))
            }
            _ => StorageError::Internal(format!("blob store: {e}")),
        }
    }
}

impl From<serde_json::Error> for StorageError {
    fn from(e: serde_json::Error) -> Self {
        StorageError::Internal(format!("corrupt metadata record: {e}"))
    }
}

pub type StorageResult<T> = Result<T, StorageError>;
