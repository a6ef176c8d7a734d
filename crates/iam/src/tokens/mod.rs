//! Bearer tokens for `--auth token`. Only a keyed hash (HMAC-SHA256 under a key derived
//! from the root key) is stored, and tokens are looked up by that hash, so checking a
//! token never compares secrets byte by byte.
//!
//! `TokenStore` holds the secrets' side (generation and hashing); where rows live is a
//! `TokenBackend`: SQLite (the embedded default), PostgreSQL, or memory.

mod backend;
mod memory;
mod postgres;
mod sqlite;

#[cfg(test)]
mod conformance;

pub use backend::TokenBackend;
pub use memory::MemoryTokens;
pub use postgres::PgTokens;
pub use sqlite::SqliteTokens;

use super::IamError;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SubsecRound, Utc};
use sealstore_core::rootkey::RootKey;
use std::sync::Arc;

pub struct TokenStore {
    backend: Arc<dyn TokenBackend>,
    key: hmac::Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub principal: String,
    pub created: DateTime<Utc>,
    pub revoked: bool,
}

const MEMBER_TYPES: &[&str] = &["user", "serviceAccount", "group"];

/// `user:…`, `serviceAccount:…` or `group:…`.
pub fn check_principal(p: &str) -> Result<(), IamError> {
    match p.split_once(':') {
        Some((t, id)) if MEMBER_TYPES.contains(&t) && !id.is_empty() => Ok(()),
        _ => Err(IamError::InvalidArgument(format!(
            "Principal \"{p}\" must be user:ID, serviceAccount:ID or group:ID."
        ))),
    }
}

impl TokenStore {
    pub fn new(backend: Arc<dyn TokenBackend>, root: &RootKey) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &root.derive(b"sealstore token hash v1")[..]);
        Self { backend, key }
    }

    /// Tokens in the SQLite database of a data dir.
    pub fn sqlite(conn: rusqlite::Connection, root: &RootKey) -> Result<Self, IamError> {
        Ok(Self::new(Arc::new(SqliteTokens::new(conn)?), root))
    }

    fn hash(&self, token: &str) -> Vec<u8> {
        hmac::sign(&self.key, token.as_bytes()).as_ref().to_vec()
    }

    /// Makes a new token for `principal`; the token itself is returned once and never stored.
    pub async fn create(&self, principal: &str, now: DateTime<Utc>) -> Result<(TokenInfo, String), IamError> {
        check_principal(principal)?;
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| IamError::InvalidArgument("rng failure".into()))?;
        let mut idb = [0u8; 8];
        SystemRandom::new()
            .fill(&mut idb)
            .map_err(|_| IamError::InvalidArgument("rng failure".into()))?;
        let token = format!("sst_{}", URL_SAFE_NO_PAD.encode(secret));
        let info = TokenInfo {
            id: idb.iter().map(|b| format!("{b:02x}")).collect(),
            principal: principal.to_owned(),
            // Microseconds: the finest every backend stores (PostgreSQL's timestamptz).
            created: now.trunc_subsecs(6),
            revoked: false,
        };
        self.backend.insert(&info, &self.hash(&token)).await?;
        Ok((info, token))
    }

    /// The principal of a valid, unrevoked token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<String>, IamError> {
        self.backend.principal(&self.hash(token)).await
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, IamError> {
        self.backend.list().await
    }

    /// Whether a token with this id exists (it is revoked now, if it was not already).
    pub async fn revoke(&self, id: &str) -> Result<bool, IamError> {
        self.backend.revoke(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_authenticate_revoke() {
        let store = TokenStore::new(Arc::new(MemoryTokens::default()), &RootKey::generate());
        let (info, token) = store.create("user:alice@example.com", Utc::now()).await.unwrap();
        assert_eq!(
            store.authenticate(&token).await.unwrap().as_deref(),
            Some("user:alice@example.com")
        );
        assert_eq!(store.authenticate("sst_wrong").await.unwrap(), None);
        assert!(store.revoke(&info.id).await.unwrap());
        assert_eq!(store.authenticate(&token).await.unwrap(), None);
        assert!(store.create("alice", Utc::now()).await.is_err());
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked);
        // A store under another root key does not accept the token.
        let other = TokenStore::new(Arc::new(MemoryTokens::default()), &RootKey::generate());
        assert_eq!(other.authenticate(&token).await.unwrap(), None);
    }
}
