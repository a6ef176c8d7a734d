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
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<super::store::StoreError> for KmsError {
    fn from(e: super::store::StoreError) -> Self {
        KmsError::Internal(e.to_string())
    }
}

impl From<super::seal::UnsealError> for KmsError {
    fn from(e: super::seal::UnsealError) -> Self {
        KmsError::Internal(e.to_string())
    }
}

pub type KmsResult<T> = Result<T, KmsError>;
