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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct TokenStore {
    backend: Arc<dyn TokenBackend>,
    key: hmac::Key,
    /// Tokens found valid, by hash, with when the row was read: trusted for `CACHE_TTL`,
    /// so a request costs no database read. Unknown tokens are never cached, so a token
    /// made by the CLI works at once; one revoked elsewhere stops within `CACHE_TTL`
    /// (through this store: at once).
    cache: Mutex<TokenCache>,
}

/// Token hash → (when its row was read, its principal).
type TokenCache = HashMap<Vec<u8>, (Instant, Arc<str>)>;

/// How long a valid token is trusted without reading the database again.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_CACHED: usize = 10_000;

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
        Self {
            backend,
            key,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Tokens in the SQLite database of a data dir.
    pub fn sqlite(conn: rusqlite::Connection, root: &RootKey) -> Result<Self, IamError> {
        Ok(Self::new(Arc::new(SqliteTokens::new(conn)?), root))
    }

    /// Tokens in a PostgreSQL database shared by every gateway on it.
    pub async fn postgres(pool: sealstore_core::pg::Pool, root: &RootKey) -> Result<Self, IamError> {
        Ok(Self::new(Arc::new(PgTokens::new(pool).await?), root))
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

    fn cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The principal of a valid, unrevoked token, as of at most `CACHE_TTL` ago.
    pub async fn authenticate(&self, token: &str) -> Result<Option<String>, IamError> {
        let hash = self.hash(token);
        if let Some((at, p)) = self.cache().get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(Some(p.to_string()));
        }
        self.lookup(hash).await
    }

    /// The principal of a valid, unrevoked token, read from the database now (for
    /// handing out a new access token, where no staleness is acceptable).
    pub async fn authenticate_fresh(&self, token: &str) -> Result<Option<String>, IamError> {
        self.lookup(self.hash(token)).await
    }

    async fn lookup(&self, hash: Vec<u8>) -> Result<Option<String>, IamError> {
        // Timed from before the read: the bound holds from when the row was current.
        let at = Instant::now();
        let found = self.backend.principal(&hash).await?;
        let mut cache = self.cache();
        match &found {
            Some(p) => {
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(hash, (at, Arc::from(p.as_str())));
            }
            None => {
                cache.remove(&hash);
            }
        }
        Ok(found)
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, IamError> {
        self.backend.list().await
    }

    /// Whether a token with this id exists (it is revoked now, if it was not already).
    pub async fn revoke(&self, id: &str) -> Result<bool, IamError> {
        let r = self.backend.revoke(id).await;
        // Only the hash is cached, not the id: forget them all (revocations are rare).
        self.cache().clear();
        r
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

    /// Two stores on one backend (two gateways, or the server and the CLI): a token made
    /// through one works on the other at once; one revoked through one stops on the
    /// other within `CACHE_TTL`, and on `authenticate_fresh` at once.
    #[tokio::test]
    async fn revocation_elsewhere_is_seen_within_the_cache_bound() {
        let backend: Arc<dyn TokenBackend> = Arc::new(MemoryTokens::default());
        let root = RootKey::generate();
        let (a, b) = (TokenStore::new(backend.clone(), &root), TokenStore::new(backend, &root));
        let (info, token) = b.create("user:bob@example.com", Utc::now()).await.unwrap();
        assert!(a.authenticate(&token).await.unwrap().is_some(), "new token: at once");
        assert!(b.revoke(&info.id).await.unwrap());
        assert_eq!(
            b.authenticate(&token).await.unwrap(),
            None,
            "through the revoking store"
        );
        assert_eq!(a.authenticate_fresh(&token).await.unwrap(), None);
        let (info, token) = b.create("user:carol@example.com", Utc::now()).await.unwrap();
        assert!(a.authenticate(&token).await.unwrap().is_some());
        assert!(b.revoke(&info.id).await.unwrap());
        tokio::time::sleep(CACHE_TTL + std::time::Duration::from_millis(50)).await;
        assert_eq!(a.authenticate(&token).await.unwrap(), None, "within CACHE_TTL");
    }
}
