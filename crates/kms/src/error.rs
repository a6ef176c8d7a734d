//! The KMS core's error type. It names gRPC-style categories, never HTTP: the API
//! layer alone maps them to status codes and Google error bodies.

use super::types::VersionState;

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A version that must be ENABLED is not. Rendered with a `PreconditionFailure`
    /// whose violation type is `KEY_<STATE>`, as Cloud KMS does.
    #[error("{version} is not enabled, current state is: {state}.")]
    NotEnabled { version: String, state: VersionState },
    /// The same text for every reason a ciphertext does not open (tampering, wrong AAD,
    /// wrong key), so the error does not reveal which check failed.
    #[error("Decryption failed: verify that 'name' refers to the correct CryptoKey.")]
    DecryptionFailed,
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A concurrent change by another process (retryable).
    #[error("{0}")]
    Aborted(String),
    /// The database cannot be reached, or the state cannot be confirmed (retryable).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl KmsError {
    /// The canonical status name (`google.rpc.Code`) this error answers with, for
    /// metrics labels; the API layer maps it to HTTP.
    pub fn status_name(&self) -> &'static str {
        match self {
            KmsError::InvalidArgument(_) | KmsError::DecryptionFailed => "INVALID_ARGUMENT",
            KmsError::NotFound(_) => "NOT_FOUND",
            KmsError::AlreadyExists(_) => "ALREADY_EXISTS",
            KmsError::FailedPrecondition(_) | KmsError::NotEnabled { .. } => "FAILED_PRECONDITION",
            KmsError::Unimplemented(_) => "UNIMPLEMENTED",
            KmsError::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
            KmsError::PermissionDenied(_) => "PERMISSION_DENIED",
            KmsError::Aborted(_) => "ABORTED",
            KmsError::Unavailable(_) => "UNAVAILABLE",
            KmsError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<super::store::StoreError> for KmsError {
    fn from(e: super::store::StoreError) -> Self {
        if e.is_unavailable() {
            KmsError::Unavailable("The key manager's database is unreachable; retry later.".into())
        } else {
            KmsError::Internal(e.to_string())
        }
    }
}

impl From<super::seal::UnsealError> for KmsError {
    fn from(e: super::seal::UnsealError) -> Self {
        KmsError::Internal(e.to_string())
    }
}

pub type KmsResult<T> = Result<T, KmsError>;
