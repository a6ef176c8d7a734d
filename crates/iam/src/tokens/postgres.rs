//! Tokens in PostgreSQL (`--database postgres://…`), shared by every gateway on it.

use super::TokenInfo;
use super::backend::{TokenBackend, duplicate};
use crate::IamError;
use sealstore_core::pg::{self, PgError, Pool};

const DDL: &str = "CREATE TABLE IF NOT EXISTS iam_tokens (
    id TEXT PRIMARY KEY,
    hash BYTEA NOT NULL UNIQUE,
    principal TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE);";

pub struct PgTokens {
    pool: Pool,
}

impl PgTokens {
    /// Creates the table if it is missing.
    pub async fn new(pool: Pool) -> Result<Self, IamError> {
        pg::migrate(&pool, DDL).await?;
        Ok(Self { pool })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, IamError> {
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }
}

fn db(e: tokio_postgres::Error) -> IamError {
    IamError::Database(e.into())
}

#[async_trait::async_trait]
impl TokenBackend for PgTokens {
    async fn insert(&self, info: &TokenInfo, hash: &[u8]) -> Result<(), IamError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("INSERT INTO iam_tokens (id, hash, principal, created) VALUES ($1, $2, $3, $4)")
            .await
            .map_err(db)?;
        match c
            .execute(&stmt, &[&info.id, &hash, &info.principal, &info.created])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = PgError::from(e);
                Err(if e.is_unique_violation() { duplicate() } else { e.into() })
            }
        }
    }

    async fn principal(&self, hash: &[u8]) -> Result<Option<String>, IamError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("SELECT principal FROM iam_tokens WHERE hash = $1 AND NOT revoked")
            .await
            .map_err(db)?;
        Ok(c.query_opt(&stmt, &[&hash]).await.map_err(db)?.map(|r| r.get(0)))
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, IamError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, principal, created, revoked FROM iam_tokens ORDER BY created, id",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| TokenInfo {
                id: r.get(0),
                principal: r.get(1),
                created: r.get(2),
                revoked: r.get(3),
            })
            .collect())
    }

    async fn revoke(&self, id: &str) -> Result<bool, IamError> {
        let c = self.conn().await?;
        let n = c
            .execute("UPDATE iam_tokens SET revoked = TRUE WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        Ok(n > 0)
    }
}
