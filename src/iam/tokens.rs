//! Bearer tokens for `--auth token`. Only a keyed hash (HMAC-SHA256 under a key derived
//! from the root key) is stored, and tokens are looked up by that hash, so checking a
//! token never compares secrets byte by byte.

use super::IamError;
use crate::rootkey::RootKey;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Mutex;

pub struct TokenStore {
    conn: Mutex<Connection>,
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
    pub fn new(conn: Connection, root: &RootKey) -> Result<Self, IamError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS iam_tokens (id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE,
               principal TEXT NOT NULL, created TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);",
        )?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &root.derive(b"sealstore token hash v1")[..]);
        Ok(Self {
            conn: Mutex::new(conn),
            key,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hash(&self, token: &str) -> Vec<u8> {
        hmac::sign(&self.key, token.as_bytes()).as_ref().to_vec()
    }

    /// Makes a new token for `principal`; the token itself is returned once and never stored.
    pub fn create(&self, principal: &str, now: DateTime<Utc>) -> Result<(TokenInfo, String), IamError> {
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
        let id: String = idb.iter().map(|b| format!("{b:02x}")).collect();
        self.conn().execute(
            "INSERT INTO iam_tokens (id, hash, principal, created) VALUES (?1, ?2, ?3, ?4)",
            params![id, self.hash(&token), principal, now.to_rfc3339()],
        )?;
        Ok((
            TokenInfo {
                id,
                principal: principal.to_owned(),
                created: now,
                revoked: false,
            },
            token,
        ))
    }

    /// The principal of a valid, unrevoked token.
    pub fn authenticate(&self, token: &str) -> Result<Option<String>, IamError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT principal FROM iam_tokens WHERE hash = ?1 AND revoked = 0")?
            .query_row([self.hash(token)], |r| r.get::<_, String>(0))
            .optional()?)
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>, IamError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, principal, created, revoked FROM iam_tokens ORDER BY created, id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        let mut out = vec![];
        for row in rows {
            let (id, principal, created, revoked) = row?;
            let created = DateTime::parse_from_rfc3339(&created)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default();
            out.push(TokenInfo {
                id,
                principal,
                created,
                revoked,
            });
        }
        Ok(out)
    }

    pub fn revoke(&self, id: &str) -> Result<bool, IamError> {
        Ok(self
            .conn()
            .execute("UPDATE iam_tokens SET revoked = 1 WHERE id = ?1", [id])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_revoke() {
        let store = TokenStore::new(crate::db::open_in_memory().unwrap(), &RootKey::generate()).unwrap();
        let (info, token) = store.create("user:alice@example.com", Utc::now()).unwrap();
        assert_eq!(
            store.authenticate(&token).unwrap().as_deref(),
            Some("user:alice@example.com")
        );
        assert_eq!(store.authenticate("sst_wrong").unwrap(), None);
        assert!(store.revoke(&info.id).unwrap());
        assert_eq!(store.authenticate(&token).unwrap(), None);
        assert!(store.create("alice", Utc::now()).is_err());
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked);
        // A store under another root key does not accept the token.
        let other = TokenStore::new(crate::db::open_in_memory().unwrap(), &RootKey::generate()).unwrap();
        assert_eq!(other.authenticate(&token).unwrap(), None);
    }
}
