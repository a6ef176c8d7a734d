//! Small persistent settings (e.g. the fake clock's offset), one key/value table.
//!
//! `Settings` is the front; where values live is a `SettingsBackend`: SQLite (the
//! embedded default), PostgreSQL, or memory.

mod memory;
mod postgres;
mod sqlite;

#[cfg(test)]
mod conformance;

pub use memory::MemorySettings;
pub use postgres::PgSettings;
pub use sqlite::SqliteSettings;

use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("settings store: {0}")]
    Database(#[from] crate::pg::PgError),
}

impl From<tokio_postgres::Error> for SettingsError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.into())
    }
}

/// Where settings live. Every backend passes `conformance.rs`.
#[async_trait::async_trait]
pub trait SettingsBackend: Send + Sync {
    async fn get_i64(&self, key: &str) -> Result<Option<i64>, SettingsError>;
    /// Sets `key` to `value`, replacing any value (last writer wins).
    async fn set_i64(&self, key: &str, value: i64) -> Result<(), SettingsError>;
}

pub struct Settings {
    backend: Arc<dyn SettingsBackend>,
}

impl Settings {
    pub fn new(backend: Arc<dyn SettingsBackend>) -> Self {
        Self { backend }
    }

    /// Settings in the SQLite database of a data dir.
    pub fn sqlite(conn: rusqlite::Connection) -> Result<Self, SettingsError> {
        Ok(Self::new(Arc::new(SqliteSettings::new(conn)?)))
    }

    /// Settings in PostgreSQL, shared by every gateway on it (the table created if missing).
    pub async fn postgres(pool: crate::pg::Pool) -> Result<Self, SettingsError> {
        Ok(Self::new(Arc::new(PgSettings::new(pool).await?)))
    }

    /// Settings in process memory: for tests, and for runs that keep nothing.
    pub fn memory() -> Self {
        Self::new(Arc::new(MemorySettings::default()))
    }

    pub async fn get_i64(&self, key: &str) -> Result<Option<i64>, SettingsError> {
        self.backend.get_i64(key).await
    }

    pub async fn set_i64(&self, key: &str, value: i64) -> Result<(), SettingsError> {
        self.backend.set_i64(key, value).await
    }
}
