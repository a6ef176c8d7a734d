//! The embedded key management core: behaves like Cloud KMS, knows nothing of HTTP
//! or storage.

mod ciphertext;
mod core;
mod deletion;
pub mod error;
pub mod freshness;
mod import;
pub mod listing;
pub mod material;
pub use material::SignInput;
pub mod model;
pub mod names;
mod orphans;
mod quota;
pub use sealstore_core::seal;
pub mod store;
pub mod types;
pub mod wrapping;

pub use self::core::{
    DAY, DecryptOutput, DestroyGuard, EncryptOutput, EventSink, KeyPatch, KeyView, Kms, MAX_HSM_INPUT,
    MAX_SOFTWARE_INPUT, NewCryptoKey, PublicKeyOutput,
};
pub use error::{KmsError, KmsResult};
pub use import::{IMPORT_JOB_LIFETIME, ImportRequest};

/// Where the Google-managed service key lives. The leading underscore keeps it apart
/// from user projects.
pub const GOOGLE_MANAGED_PROJECT: &str = "_sealstore";

#[cfg(test)]
mod tests;
