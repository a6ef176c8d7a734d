//! How storage reaches keys: only through this trait. The server wires it to the
//! embedded KMS; storage never sees KMS types.

use super::error::KeyError;
use zeroize::Zeroizing;

/// Which key protects a new object's DEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChoice {
    /// The Google-managed service key.
    GoogleManaged,
    /// A customer-managed KMS key, by its unversioned name.
    Cmek(String),
}

/// A DEK wrapped by a KMS key version.
#[derive(Debug, Clone)]
pub struct WrappedDek {
    /// The full version name that wrapped it (`…/cryptoKeyVersions/N`).
    pub key_version: String,
    pub ciphertext: Vec<u8>,
}

pub trait KeyService: Send + Sync {
    /// Wraps `dek` for an object of `project`, binding `aad`.
    fn wrap(&self, project: &str, key: &KeyChoice, dek: &[u8], aad: &[u8]) -> Result<WrappedDek, KeyError>;
    /// Unwraps a DEK; fails closed if the version is not usable.
    fn unwrap(
        &self,
        project: &str,
        key_version: &str,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError>;
}
