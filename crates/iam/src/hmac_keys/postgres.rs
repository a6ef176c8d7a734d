//! HMAC keys in PostgreSQL (`--database postgres://…`), shared by every gateway on it.

use super::HmacKeyMeta;
use super::backend::{self, HmacKeyBackend, ListQuery, StateChange};
use crate::IamError;
use chrono::{DateTime, Utc};
use sealstore_core::pg::{self, PgError, Pool};

/// `COLLATE "C"`: listing pages by access id in byte order, as SQLite does, whatever
/// the database's locale.
const DDL: &str = r#"CREATE TABLE IF NOT EXISTS hmac_keys (
    access_id TEXT COLLATE "C" PRIMARY KEY,
    project TEXT NOT NULL,
    service_account TEXT NOT NULL,
    state TEXT NOT NULL,
    sealed_secret BYTEA NOT NULL,
    created TIMESTAMPTZ NOT NULL,
    updated TIMESTAMPTZ NOT NULL,
    etag TEXT NOT NULL);
  CREATE INDEX IF NOT EXISTS hmac_keys_project ON hmac_keys (project, service_account);"#;

const COLUMNS: &str = "access_id, project, service_account, state, created, updated, etag";

pub struct PgHmacKeys {
    pool: Pool,
}

impl PgHmacKeys {
    /// Creates the table if it is missing.
    pub async fn new(pool: Pool) -> Result<Self, IamError> {
        pg::migrate(&pool, DDL).await?;
        Ok(Self { pool })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, IamError> {
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }
}

fn row_meta(r: &tokio_postgres::Row) -> HmacKeyMeta {
    HmacKeyMeta {
        access_id: r.get(0),
        project: r.get(1),
        service_account_email: r.get(2),
        state: r.get(3),
        time_created: r.get(4),
        updated: r.get(5),
        etag: r.get(6),
    }
}

#[async_trait::async_trait]
impl HmacKeyBackend for PgHmacKeys {
    async fn insert(&self, meta: &HmacKeyMeta, sealed: &[u8]) -> Result<(), IamError> {
        let c = self.conn().await?;
        let result = c
            .execute(
                "INSERT INTO hmac_keys (access_id, project, service_account, state, sealed_secret, created, updated, etag)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &meta.access_id,
                    &meta.project,
                    &meta.service_account_email,
                    &meta.state,
                    &sealed,
                    &meta.time_created,
                    &meta.updated,
                    &meta.etag,
                ],
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = PgError::from(e);
                Err(if e.is_unique_violation() {
                    IamError::Aborted("An HMAC key with this access id already exists.".into())
                } else {
                    e.into()
                })
            }
        }
    }

    async fn get(&self, project: &str, access_id: &str) -> Result<Option<HmacKeyMeta>, IamError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!("SELECT {COLUMNS} FROM hmac_keys WHERE access_id = $1 AND project = $2"),
                &[&access_id, &project],
            )
            .await?;
        Ok(row.as_ref().map(row_meta))
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<HmacKeyMeta>, IamError> {
        let c = self.conn().await?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM hmac_keys WHERE project = $1
                       AND ($2::TEXT IS NULL OR service_account = $2)
                       AND ($3 OR state <> 'DELETED') AND access_id > $4 ORDER BY access_id LIMIT $5"
                ),
                &[&q.project, &q.service_account, &q.show_deleted, &q.after, &limit],
            )
            .await?;
        Ok(rows.iter().map(row_meta).collect())
    }

    async fn set_state(&self, project: &str, access_id: &str, change: &StateChange) -> Result<HmacKeyMeta, IamError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // FOR UPDATE: concurrent updaters queue on the row, so each checks the etag the
        // previous one left.
        let current = tx
            .query_opt(
                &format!("SELECT {COLUMNS} FROM hmac_keys WHERE access_id = $1 AND project = $2 FOR UPDATE"),
                &[&access_id, &project],
            )
            .await?;
        let updated = backend::check_state_change(current.as_ref().map(row_meta), project, access_id, change)?;
        tx.execute(
            "UPDATE hmac_keys SET state = $1, updated = $2, etag = $3 WHERE access_id = $4",
            &[&updated.state, &updated.updated, &updated.etag, &access_id],
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn delete(&self, project: &str, access_id: &str, new_etag: &str, now: DateTime<Utc>) -> Result<(), IamError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let state: Option<String> = tx
            .query_opt(
                "SELECT state FROM hmac_keys WHERE access_id = $1 AND project = $2 FOR UPDATE",
                &[&access_id, &project],
            )
            .await?
            .map(|r| r.get(0));
        backend::check_delete(state.as_deref(), project, access_id)?;
        tx.execute(
            "UPDATE hmac_keys SET state = 'DELETED', sealed_secret = ''::BYTEA, updated = $1, etag = $2
             WHERE access_id = $3",
            &[&now, &new_etag, &access_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn signing_row(&self, access_id: &str) -> Result<Option<(HmacKeyMeta, Vec<u8>)>, IamError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, sealed_secret FROM hmac_keys WHERE access_id = $1"
            ))
            .await?;
        let row = c.query_opt(&stmt, &[&access_id]).await?;
        Ok(row.map(|r| (row_meta(&r), r.get(7))))
    }
}
