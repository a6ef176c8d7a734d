//! HMAC keys in the data dir's SQLite database (the table predates the backend split,
//! so existing data dirs open unchanged).

use super::HmacKeyMeta;
use super::backend::{self, HmacKeyBackend, ListQuery, StateChange};
use crate::IamError;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sealstore_core::blocking;
use std::sync::{Arc, Mutex};

pub struct SqliteHmacKeys {
    conn: Arc<Mutex<Connection>>,
}

const COLUMNS: &str = "access_id, project, service_account, state, created, updated, etag";

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

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

fn read(c: &Connection, project: &str, access_id: &str) -> Result<Option<HmacKeyMeta>, IamError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM hmac_keys WHERE access_id = ?1 AND project = ?2"
    ))?
    .query_row(params![access_id, project], row_meta)
    .optional()?)
}

impl SqliteHmacKeys {
    pub fn new(conn: Connection) -> Result<Self, IamError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS hmac_keys (access_id TEXT PRIMARY KEY, project TEXT NOT NULL,
               service_account TEXT NOT NULL, state TEXT NOT NULL, sealed_secret BLOB NOT NULL,
               created TEXT NOT NULL, updated TEXT NOT NULL, etag TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS hmac_keys_project ON hmac_keys (project, service_account);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, off the async runtime's worker threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, IamError> + Send + 'static,
    ) -> Result<T, IamError> {
        let conn = self.conn.clone();
        blocking::run(move || f(&mut conn.lock().unwrap_or_else(|e| e.into_inner()))).await
    }
}

#[async_trait::async_trait]
impl HmacKeyBackend for SqliteHmacKeys {
    async fn insert(&self, meta: &HmacKeyMeta, sealed: &[u8]) -> Result<(), IamError> {
        let (meta, sealed) = (meta.clone(), sealed.to_vec());
        self.with(move |c| {
            c.execute(
                "INSERT INTO hmac_keys (access_id, project, service_account, state, sealed_secret, created, updated, etag)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    meta.access_id,
                    meta.project,
                    meta.service_account_email,
                    meta.state,
                    sealed,
                    meta.time_created.to_rfc3339(),
                    meta.updated.to_rfc3339(),
                    meta.etag
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get(&self, project: &str, access_id: &str) -> Result<Option<HmacKeyMeta>, IamError> {
        let (project, access_id) = (project.to_owned(), access_id.to_owned());
        self.with(move |c| read(c, &project, &access_id)).await
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<HmacKeyMeta>, IamError> {
        let q = q.clone();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM hmac_keys WHERE project = ?1 AND (?2 IS NULL OR service_account = ?2)
                   AND (?3 OR state != 'DELETED') AND access_id > ?4 ORDER BY access_id LIMIT ?5"
            ))?;
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(
                params![q.project, q.service_account, q.show_deleted, q.after, limit],
                row_meta,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_state(&self, project: &str, access_id: &str, change: &StateChange) -> Result<HmacKeyMeta, IamError> {
        let (project, access_id, change) = (project.to_owned(), access_id.to_owned(), change.clone());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = read(&tx, &project, &access_id)?;
            let updated = backend::check_state_change(current, &project, &access_id, &change)?;
            tx.execute(
                "UPDATE hmac_keys SET state = ?1, updated = ?2, etag = ?3 WHERE access_id = ?4",
                params![updated.state, updated.updated.to_rfc3339(), updated.etag, access_id],
            )?;
            tx.commit()?;
            Ok(updated)
        })
        .await
    }

    async fn delete(&self, project: &str, access_id: &str, new_etag: &str, now: DateTime<Utc>) -> Result<(), IamError> {
        let (project, access_id, new_etag) = (project.to_owned(), access_id.to_owned(), new_etag.to_owned());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM hmac_keys WHERE access_id = ?1 AND project = ?2",
                    params![access_id, project],
                    |r| r.get(0),
                )
                .optional()?;
            backend::check_delete(state.as_deref(), &project, &access_id)?;
            tx.execute(
                "UPDATE hmac_keys SET state = 'DELETED', sealed_secret = x'', updated = ?1, etag = ?2
                 WHERE access_id = ?3",
                params![now.to_rfc3339(), new_etag, access_id],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn signing_row(&self, access_id: &str) -> Result<Option<(HmacKeyMeta, Vec<u8>)>, IamError> {
        let access_id = access_id.to_owned();
        self.with(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {COLUMNS}, sealed_secret FROM hmac_keys WHERE access_id = ?1"
            ))?
            .query_row([access_id], |r| Ok((row_meta(r)?, r.get::<_, Vec<u8>>(7)?)))
            .optional()?)
        })
        .await
    }
}
