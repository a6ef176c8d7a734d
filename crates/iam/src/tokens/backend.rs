//! Where token rows live. Every backend passes `conformance.rs`.

use super::TokenInfo;
use crate::IamError;

#[async_trait::async_trait]
pub trait TokenBackend: Send + Sync {
    /// Stores a new row. Ids and hashes are unique: a duplicate of either is refused with
    /// `IamError::Aborted` and stores nothing.
    async fn insert(&self, info: &TokenInfo, hash: &[u8]) -> Result<(), IamError>;
    /// The principal of the unrevoked row with this hash.
    async fn principal(&self, hash: &[u8]) -> Result<Option<String>, IamError>;
    /// Every row, by creation time then id.
    async fn list(&self) -> Result<Vec<TokenInfo>, IamError>;
    /// Marks the row revoked; whether it exists. Revoking twice is not an error.
    async fn revoke(&self, id: &str) -> Result<bool, IamError>;
}

pub(super) fn duplicate() -> IamError {
    IamError::Aborted("A token with this id or secret already exists.".into())
}
