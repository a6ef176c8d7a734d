//! Settings in PostgreSQL (`--database postgres://…`), shared by every gateway on it.

use super::{SettingsBackend, SettingsError};
use crate::pg::{self, PgError, Pool};

const DDL: &str = "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BIGINT NOT NULL);";

pub struct PgSettings {
    pool: Pool,
}

impl PgSettings {
    /// Creates the table if it is missing.
    pub async fn new(pool: Pool) -> Result<Self, SettingsError> {
        pg::migrate(&pool, DDL).await?;
        Ok(Self { pool })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, SettingsError> {
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }
}

#[async_trait::async_trait]
impl SettingsBackend for PgSettings {
    async fn get_i64(&self, key: &str) -> Result<Option<i64>, SettingsError> {
        let c = self.conn().await?;
        let row = c
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set_i64(&self, key: &str, value: i64) -> Result<(), SettingsError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .await?;
        Ok(())
    }
}
