//! Where policy rows live. Every backend passes `conformance.rs`.

use super::Policy;
use crate::IamError;

#[async_trait::async_trait]
pub trait PolicyBackend: Send + Sync {
    /// A number that grows with every change to any policy (by any store on the same
    /// database): the cache's validity check, so it must be one small read.
    async fn version(&self) -> Result<i64, IamError>;
    /// The stored policy of each of `resources`, in order (`None`: never set or removed).
    async fn get_many(&self, resources: &[String]) -> Result<Vec<Option<Policy>>, IamError>;
    /// Stores `policy` for `resource` and bumps the version, in one transaction, if
    /// `expected` is `None` or equals the current etag (`EMPTY_ETAG` for no policy).
    /// `false` (nothing stored) when it does not; concurrent writers with the same
    /// `expected` etag: exactly one gets `true`.
    async fn put(&self, resource: &str, policy: &Policy, expected: Option<&[u8]>) -> Result<bool, IamError>;
    /// Moves `from`'s policy to `to`, replacing any there; bumps the version.
    async fn rename(&self, from: &str, to: &str) -> Result<(), IamError>;
    /// Deletes `resource`'s policy, if any; bumps the version.
    async fn remove(&self, resource: &str) -> Result<(), IamError>;
}

/// The etag a stored policy (or its absence) answers preconditions with.
pub(super) fn current_etag(current: Option<&Policy>) -> &[u8] {
    current.map_or(super::EMPTY_ETAG, |p| &p.etag)
}
