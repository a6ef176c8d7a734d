//! HMAC keys for the XML API, as GCS has them: each belongs to a service account of a
//! project, which is the principal its signed requests act as. The secret is shown once
//! at creation and stored sealed under the root key (bound to the access id), never in
//! plaintext; signature checks unseal it for the one request.

use super::IamError;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use sealstore_core::seal::Sealer;
use std::sync::Mutex;
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
    conn: Mutex<Connection>,
    sealer: Sealer,
    /// Verified lookups, kept for at most `CACHE_TTL`: a key deactivated or deleted by
    /// another process (the CLI) stops signing within that bound; through this store
    /// (the JSON API) at once.
    cache: Mutex<std::collections::HashMap<String, (std::time::Instant, std::sync::Arc<SigningSecret>)>>,
}

/// How long a looked-up key is trusted without reading the database again.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_CACHED: usize = 10_000;

fn seal_context(access_id: &str) -> String {
    format!("hmacKeys/{access_id}")
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
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

const COLUMNS: &str = "access_id, project, service_account, state, created, updated, etag";

fn row_meta(r: &rusqlite::Row<'_>) -> rusqlite::Result<HmacKeyMeta> {
    Ok(HmacKeyMeta {
        access_id: r.get(0)?,
        project: r.get(1)?,
        service_account_email: r.get(2)?,
        state: r.get(3)?,
        time_created: parse_time(&r.get::<_, String>(4)?),
        updated: parse_time(&r.get::<_, String>(5)?),
        etag: r.get(6)?,
    })
}

impl HmacKeyStore {
    pub fn new(conn: Connection, sealer: Sealer) -> Result<Self, IamError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS hmac_keys (access_id TEXT PRIMARY KEY, project TEXT NOT NULL,
               service_account TEXT NOT NULL, state TEXT NOT NULL, sealed_secret BLOB NOT NULL,
               created TEXT NOT NULL, updated TEXT NOT NULL, etag TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS hmac_keys_project ON hmac_keys (project, service_account);",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
            sealer,
            cache: Mutex::default(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a key for `service_account_email` in `project`. The secret is returned
    /// here once; afterwards only its sealed form exists.
    pub fn create(
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
        let meta = HmacKeyMeta {
            access_id,
            project: project.to_owned(),
            service_account_email: service_account_email.to_owned(),
            state: ACTIVE.to_owned(),
            time_created: now,
            updated: now,
            etag: new_etag()?,
        };
        self.conn().execute(
            "INSERT INTO hmac_keys (access_id, project, service_account, state, sealed_secret, created, updated, etag)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                meta.access_id,
                meta.project,
                meta.service_account_email,
                meta.state,
                sealed,
                now.to_rfc3339(),
                now.to_rfc3339(),
                meta.etag
            ],
        )?;
        Ok((meta, secret))
    }

    pub fn get(&self, project: &str, access_id: &str) -> Result<HmacKeyMeta, IamError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM hmac_keys WHERE access_id = ?1 AND project = ?2"),
                params![access_id, project],
                row_meta,
            )
            .optional()?
            .ok_or_else(|| IamError::NotFound(format!("Access ID not found in project {project}: {access_id}")))
    }

    /// Keys of a project, by access id; `DELETED` ones only when asked for.
    pub fn list(
        &self,
        project: &str,
        service_account: Option<&str>,
        show_deleted: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HmacKeyMeta>, IamError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM hmac_keys WHERE project = ?1 AND (?2 IS NULL OR service_account = ?2)
               AND (?3 OR state != 'DELETED') AND access_id > ?4 ORDER BY access_id LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![
                project,
                service_account,
                show_deleted,
                after.unwrap_or(""),
                limit as i64
            ],
            row_meta,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets `ACTIVE` or `INACTIVE`; a deleted key cannot change. `etag`, when given,
    /// must be the current one.
    pub fn set_state(
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM hmac_keys WHERE access_id = ?1 AND project = ?2"),
                params![access_id, project],
                row_meta,
            )
            .optional()?
            .ok_or_else(|| IamError::NotFound(format!("Access ID not found in project {project}: {access_id}")))?;
        if let Some(e) = etag
            && e != current.etag
        {
            return Err(IamError::Aborted(format!(
                "The etag \"{e}\" does not match the key's current etag."
            )));
        }
        if current.state == DELETED {
            return Err(IamError::FailedPrecondition(
                "A deleted HMAC key cannot be updated.".into(),
            ));
        }
        let etag = new_etag()?;
        tx.execute(
            "UPDATE hmac_keys SET state = ?1, updated = ?2, etag = ?3 WHERE access_id = ?4",
            params![state, now.to_rfc3339(), etag, access_id],
        )?;
        tx.commit()?;
        self.forget(access_id);
        Ok(HmacKeyMeta {
            state: state.to_owned(),
            updated: now,
            etag,
            ..current
        })
    }

    /// Deletes an `INACTIVE` key: it stays listed as `DELETED` (as on GCS), and its
    /// sealed secret is erased.
    pub fn delete(&self, project: &str, access_id: &str, now: DateTime<Utc>) -> Result<(), IamError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM hmac_keys WHERE access_id = ?1 AND project = ?2",
                params![access_id, project],
                |r| r.get(0),
            )
            .optional()?;
        match state.as_deref() {
            None | Some(DELETED) => Err(IamError::NotFound(format!(
                "Access ID not found in project {project}: {access_id}"
            ))),
            Some(ACTIVE) => Err(IamError::FailedPrecondition(
                "Cannot delete keys in 'ACTIVE' state: set the key INACTIVE first.".into(),
            )),
            Some(_) => {
                tx.execute(
                    "UPDATE hmac_keys SET state = 'DELETED', sealed_secret = x'', updated = ?1, etag = ?2
                     WHERE access_id = ?3",
                    params![now.to_rfc3339(), new_etag()?, access_id],
                )?;
                tx.commit()?;
                self.forget(access_id);
                Ok(())
            }
        }
    }

    fn forget(&self, access_id: &str) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(access_id);
    }

    /// A cached lookup younger than `CACHE_TTL`, without touching the database.
    pub fn fresh(&self, access_id: &str) -> Option<std::sync::Arc<SigningSecret>> {
        match self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(access_id) {
            Some((at, s)) if at.elapsed() < CACHE_TTL => Some(s.clone()),
            _ => None,
        }
    }

    /// As `signing_secret`, through the cache (at most `CACHE_TTL` old).
    pub fn cached_signing_secret(&self, access_id: &str) -> Result<Option<std::sync::Arc<SigningSecret>>, IamError> {
        if let Some((at, s)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(access_id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(Some(s.clone()));
        }
        let Some(found) = self.signing_secret(access_id)? else {
            self.forget(access_id);
            return Ok(None);
        };
        let found = std::sync::Arc::new(found);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(access_id.to_owned(), (std::time::Instant::now(), found.clone()));
        Ok(Some(found))
    }

    /// The secret of an `ACTIVE` key, for verifying one signature; `None` for an unknown,
    /// inactive or deleted key (the caller answers all three alike).
    pub fn signing_secret(&self, access_id: &str) -> Result<Option<SigningSecret>, IamError> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS}, sealed_secret FROM hmac_keys WHERE access_id = ?1"),
                [access_id],
                |r| Ok((row_meta(r)?, r.get::<_, Vec<u8>>(7)?)),
            )
            .optional()?;
        let Some((meta, sealed)) = row else { return Ok(None) };
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
    use sealstore_core::rootkey::RootKey;

    fn store() -> HmacKeyStore {
        HmacKeyStore::new(
            sealstore_core::db::open_in_memory().unwrap(),
            Sealer::new(&RootKey::generate()),
        )
        .unwrap()
    }

    #[test]
    fn lifecycle_of_a_key() {
        let s = store();
        let now = Utc::now();
        let (meta, secret) = s.create("p", "sa@p.iam.gserviceaccount.com", now).unwrap();
        assert!(meta.access_id.starts_with("GOOG1E"));
        assert_eq!(secret.len(), 40);
        let got = s.signing_secret(&meta.access_id).unwrap().unwrap();
        assert_eq!(got.secret.as_str(), secret.as_str());
        assert_eq!(got.meta.principal(), "serviceAccount:sa@p.iam.gserviceaccount.com");
        assert!(!format!("{got:?}").contains(secret.as_str()));
        // Active keys cannot be deleted; inactive ones stop signing at once.
        assert!(matches!(
            s.delete("p", &meta.access_id, now),
            Err(IamError::FailedPrecondition(_))
        ));
        assert!(matches!(
            s.set_state("p", &meta.access_id, INACTIVE, Some("stale"), now),
            Err(IamError::Aborted(_))
        ));
        let m = s
            .set_state("p", &meta.access_id, INACTIVE, Some(&meta.etag), now)
            .unwrap();
        assert_ne!(m.etag, meta.etag);
        assert!(s.signing_secret(&meta.access_id).unwrap().is_none());
        s.delete("p", &meta.access_id, now).unwrap();
        assert!(s.list("p", None, false, None, 10).unwrap().is_empty());
        assert_eq!(s.list("p", None, true, None, 10).unwrap()[0].state, DELETED);
        assert!(matches!(
            s.set_state("p", &meta.access_id, ACTIVE, None, now),
            Err(IamError::FailedPrecondition(_))
        ));
        // Another project does not see it.
        assert!(matches!(s.get("q", &meta.access_id), Err(IamError::NotFound(_))));
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }
}
