//! Leases in PostgreSQL (`--database postgres://…`), shared by every gateway on it.
//! Expiry is judged by the database's clock (`clock_timestamp()`), never a gateway's,
//! so gateways whose clocks disagree still agree on who holds a lease.

use super::{LeaseBackend, LeaseError};
use crate::pg::{self, PgError, Pool};
use std::time::Duration;

const DDL: &str =
    "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires TIMESTAMPTZ NOT NULL);";

pub struct PgLeases {
    pool: Pool,
}

impl PgLeases {
    /// Creates the table if it is missing.
    pub async fn new(pool: Pool) -> Result<Self, LeaseError> {
        pg::migrate(&pool, DDL).await?;
        Ok(Self { pool })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, LeaseError> {
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }
}

#[async_trait::async_trait]
impl LeaseBackend for PgLeases {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, LeaseError> {
        // `MAX_TTL` keeps this well inside both i64 and PostgreSQL's interval range.
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let c = self.conn().await?;
        // One statement: racing inserters of a free lease wait on the first, then take
        // the conflict path against its committed row, whose holder differs; so exactly
        // one wins. No row comes back when the WHERE refuses.
        let stmt = c
            .prepare_cached(
                "INSERT INTO leases (name, holder, expires)
                 VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 microsecond')
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires
                 WHERE leases.holder = EXCLUDED.holder OR leases.expires < clock_timestamp()
                 RETURNING holder",
            )
            .await?;
        Ok(c.query_opt(&stmt, &[&name, &holder, &ttl_us]).await?.is_some())
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .await?;
        c.execute(&stmt, &[&name, &holder]).await?;
        Ok(())
    }

    async fn holder(&self, name: &str) -> Result<Option<String>, LeaseError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("SELECT holder FROM leases WHERE name = $1 AND expires >= clock_timestamp()")
            .await?;
        Ok(c.query_opt(&stmt, &[&name]).await?.map(|r| r.get(0)))
    }
}
