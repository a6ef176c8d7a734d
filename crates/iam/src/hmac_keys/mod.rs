//! HMAC keys for the XML API, as GCS has them: each belongs to a service account of a
//! project, which is the principal its signed requests act as. The secret is shown once
//! at creation and stored sealed under the root key (bound to the access id), never in
//! plaintext; signature checks unseal it for the one request.

//!
//! `HmacKeyStore` holds the secrets' side (generation, sealing, the lookup cache); where
//! rows live is an `HmacKeyBackend`: SQLite (the embedded default), PostgreSQL, or memory.

mod backend;
mod memory;
mod postgres;
mod sqlite;

#[cfg(test)]
mod conformance;

pub use backend::{HmacKeyBackend, ListQuery, StateChange};
pub use memory::MemoryHmacKeys;
pub use postgres::PgHmacKeys;
pub use sqlite::SqliteHmacKeys;

use super::IamError;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SubsecRound, Utc};
use sealstore_core::seal::Sealer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use zeroize::Zeroizing;

pub const ACTIVE: &str = "ACTIVE";
pub const INACTIVE: &str = "INACTIVE";
pub const DELETED: &str = "DELETED";

/// An HMAC key's metadata (`storage#hmacKeyMetadata`); the secret is not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacKeyMeta {
    pub access_id: String,
    pub project: String,
    pub service_account_email: String,
    /// `ACTIVE`, `INACTIVE` or `DELETED`.
    pub state: String,
    pub time_created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Changes with every update (optimistic concurrency for `update`).
    pub etag: String,
}

impl HmacKeyMeta {
    /// The IAM member that signed requests with this key act as.
    pub fn principal(&self) -> String {
        format!("serviceAccount:{}", self.service_account_email)
    }
}

/// A verified lookup: who the key is, and its secret for one signature check.
pub struct SigningSecret {
    pub meta: HmacKeyMeta,
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret")
            .field("meta", &self.meta)
            .field("secret", &"<redacted>")
            .finish()
    }
}

pub struct HmacKeyStore {
    backend: Arc<dyn HmacKeyBackend>,
    sealer: Sealer,
    /// Verified lookups, kept for at most `CACHE_TTL`: a key deactivated or deleted by
    /// another process (the CLI) stops signing within that bound; through this store
    /// (the JSON API) at once.
    cache: Mutex<HashMap<String, (Instant, Arc<SigningSecret>)>>,
}

/// How long a looked-up key is trusted without reading the database again.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_CACHED: usize = 10_000;

fn seal_context(access_id: &str) -> String {
    format!("hmacKeys/{access_id}")
}

fn random<const N: usize>() -> Result<[u8; N], IamError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| IamError::InvalidArgument("rng failure".into()))?;
    Ok(b)
}

/// A service account email, as GCS accepts them (`name@project.iam.gserviceaccount.com`
/// and the like): one `@`, no spaces or control characters.
fn check_email(email: &str) -> Result<(), IamError> {
    let ok = email.len() <= 254
        && email.split('@').count() == 2
        && email.split('@').all(|p| !p.is_empty())
        && email.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(IamError::InvalidArgument(format!(
            "Invalid service account email \"{email}\"."
        )))
    }
}

impl HmacKeyStore {
    pub fn new(backend: Arc<dyn HmacKeyBackend>, sealer: Sealer) -> Self {
        Self {
            backend,
            sealer,
            cache: Mutex::default(),
        }
    }

    /// Keys in the SQLite database of a data dir.
    pub fn sqlite(conn: rusqlite::Connection, sealer: Sealer) -> Result<Self, IamError> {
        Ok(Self::new(Arc::new(SqliteHmacKeys::new(conn)?), sealer))
    }

    /// Keys in PostgreSQL, shared by every gateway on it (the table created if missing).
    pub async fn postgres(pool: sealstore_core::pg::Pool, sealer: Sealer) -> Result<Self, IamError> {
        Ok(Self::new(Arc::new(PgHmacKeys::new(pool).await?), sealer))
    }

    /// Keys in process memory: for tests, and for runs that keep nothing.
    pub fn memory(sealer: Sealer) -> Self {
        Self::new(Arc::new(MemoryHmacKeys::default()), sealer)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<SigningSecret>)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a key for `service_account_email` in `project`. The secret is returned
    /// here once; afterwards only its sealed form exists.
    pub async fn create(
        &self,
        project: &str,
        service_account_email: &str,
        now: DateTime<Utc>,
    ) -> Result<(HmacKeyMeta, Zeroizing<String>), IamError> {
        check_email(service_account_email)?;
        if project.is_empty() || project.contains('/') {
            return Err(IamError::InvalidArgument(format!("Invalid project \"{project}\".")));
        }
        // GCS access ids are `GOOG1E` and upper-case letters and digits; 20 random
        // bytes in base32 (32 characters) make them unguessable, and S3 clients accept them.
        let id_bytes = random::<20>()?;
        let access_id = format!("GOOG1E{}", base32(&id_bytes));
        let secret = Zeroizing::new(STANDARD.encode(random::<30>()?));
        let sealed = self.sealer.seal(&seal_context(&access_id), secret.as_bytes());
        // Microseconds: the finest every backend stores (PostgreSQL's timestamptz).
        let now = now.trunc_subsecs(6);
        let meta = HmacKeyMeta {
            access_id,
            project: project.to_owned(),
            service_account_email: service_account_email.to_owned(),
            state: ACTIVE.to_owned(),
            time_created: now,
            updated: now,
            etag: new_etag()?,
        };
        self.backend.insert(&meta, &sealed).await?;
        Ok((meta, secret))
    }

    pub async fn get(&self, project: &str, access_id: &str) -> Result<HmacKeyMeta, IamError> {
        self.backend
            .get(project, access_id)
            .await?
            .ok_or_else(|| backend::not_found(project, access_id))
    }

    /// Keys of a project, by access id; `DELETED` ones only when asked for.
    pub async fn list(
        &self,
        project: &str,
        service_account: Option<&str>,
        show_deleted: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HmacKeyMeta>, IamError> {
        self.backend
            .list(&ListQuery {
                project: project.to_owned(),
                service_account: service_account.map(str::to_owned),
                show_deleted,
                after: after.unwrap_or("").to_owned(),
                limit,
            })
            .await
    }

    /// Sets `ACTIVE` or `INACTIVE`; a deleted key cannot change. `etag`, when given,
    /// must be the current one (checked in the backend's transaction).
    pub async fn set_state(
        &self,
        project: &str,
        access_id: &str,
        state: &str,
        etag: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<HmacKeyMeta, IamError> {
        if state != ACTIVE && state != INACTIVE {
            return Err(IamError::InvalidArgument(format!(
                "Invalid state \"{state}\": an HMAC key's state can be set to ACTIVE or INACTIVE."
            )));
        }
        let change = backend::StateChange {
            state: state.to_owned(),
            expected_etag: etag.map(str::to_owned),
            new_etag: new_etag()?,
            now: now.trunc_subsecs(6),
        };
        let meta = self.backend.set_state(project, access_id, &change).await?;
        self.forget(access_id);
        Ok(meta)
    }

    /// Deletes an `INACTIVE` key: it stays listed as `DELETED` (as on GCS), and its
    /// sealed secret is erased.
    pub async fn delete(&self, project: &str, access_id: &str, now: DateTime<Utc>) -> Result<(), IamError> {
        self.backend
            .delete(project, access_id, &new_etag()?, now.trunc_subsecs(6))
            .await?;
        self.forget(access_id);
        Ok(())
    }

    fn forget(&self, access_id: &str) {
        self.cache().remove(access_id);
    }

    /// A cached lookup younger than `CACHE_TTL`, without touching the database.
    pub fn fresh(&self, access_id: &str) -> Option<Arc<SigningSecret>> {
        match self.cache().get(access_id) {
            Some((at, s)) if at.elapsed() < CACHE_TTL => Some(s.clone()),
            _ => None,
        }
    }

    /// As `signing_secret`, through the cache (at most `CACHE_TTL` old).
    pub async fn cached_signing_secret(&self, access_id: &str) -> Result<Option<Arc<SigningSecret>>, IamError> {
        if let Some(s) = self.fresh(access_id) {
            return Ok(Some(s));
        }
        // Timed from before the read: the bound holds from when the row was current.
        let read_at = Instant::now();
        let Some(found) = self.signing_secret(access_id).await? else {
            self.forget(access_id);
            return Ok(None);
        };
        let found = Arc::new(found);
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(access_id.to_owned(), (read_at, found.clone()));
        Ok(Some(found))
    }

    /// The secret of an `ACTIVE` key, for verifying one signature; `None` for an unknown,
    /// inactive or deleted key (the caller answers all three alike).
    pub async fn signing_secret(&self, access_id: &str) -> Result<Option<SigningSecret>, IamError> {
        let Some((meta, sealed)) = self.backend.signing_row(access_id).await? else {
            return Ok(None);
        };
        if meta.state != ACTIVE {
            return Ok(None);
        }
        let plain = self
            .sealer
            .unseal(&seal_context(access_id), &sealed)
            .map_err(|e| IamError::InvalidArgument(format!("HMAC key {access_id}: {e}")))?;
        let secret = String::from_utf8(plain.to_vec())
            .map_err(|_| IamError::InvalidArgument(format!("HMAC key {access_id}: corrupt secret")))?;
        Ok(Some(SigningSecret {
            meta,
            secret: Zeroizing::new(secret),
        }))
    }
}

fn new_etag() -> Result<String, IamError> {
    Ok(STANDARD.encode(random::<9>()?))
}

/// RFC 4648 base32 without padding (upper-case letters and digits 2-7).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }
}
