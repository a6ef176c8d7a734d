//! Tokens in the data dir's SQLite database (the table predates the backend split, so
//! existing data dirs open unchanged).

use super::TokenInfo;
use super::backend::{TokenBackend, duplicate};
use crate::IamError;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use sealstore_core::blocking;
use std::sync::{Arc, Mutex};

pub struct SqliteTokens {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteTokens {
    pub fn new(conn: Connection) -> Result<Self, IamError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS iam_tokens (id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE,
               principal TEXT NOT NULL, created TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, off the async runtime's worker threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, IamError> + Send + 'static,
    ) -> Result<T, IamError> {
        let conn = self.conn.clone();
        blocking::run(move || f(&conn.lock().unwrap_or_else(|e| e.into_inner()))).await
    }
}

#[async_trait::async_trait]
impl TokenBackend for SqliteTokens {
    async fn insert(&self, info: &TokenInfo, hash: &[u8]) -> Result<(), IamError> {
        let (info, hash) = (info.clone(), hash.to_vec());
        self.with(move |c| {
            match c.execute(
                "INSERT INTO iam_tokens (id, hash, principal, created) VALUES (?1, ?2, ?3, ?4)",
                params![info.id, hash, info.principal, info.created.to_rfc3339()],
            ) {
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                    Err(duplicate())
                }
                r => r.map(drop).map_err(Into::into),
            }
        })
        .await
    }

    async fn principal(&self, hash: &[u8]) -> Result<Option<String>, IamError> {
        let hash = hash.to_vec();
        self.with(move |c| {
            Ok(
                c.prepare_cached("SELECT principal FROM iam_tokens WHERE hash = ?1 AND revoked = 0")?
                    .query_row([hash], |r| r.get::<_, String>(0))
                    .optional()?,
            )
        })
        .await
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, IamError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT id, principal, created, revoked FROM iam_tokens")?;
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
            // Sorted here: the stored text's order is not always time order.
            out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
            Ok(out)
        })
        .await
    }

    async fn revoke(&self, id: &str) -> Result<bool, IamError> {
        let id = id.to_owned();
        self.with(move |c| Ok(c.execute("UPDATE iam_tokens SET revoked = 1 WHERE id = ?1", [id])? > 0))
            .await
    }
}
