//! The one error type of the IAM layer (policies, tokens, HMAC keys), whatever backend
//! stores them.

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller's etag is stale: someone changed the policy since they read it.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("iam store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("iam store: {0}")]
    Database(#[from] sealstore_core::pg::PgError),
    #[error("iam store: corrupt policy: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl From<tokio_postgres::Error> for IamError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.into())
    }
}
