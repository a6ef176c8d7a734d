//! Settings in the data dir's SQLite database (the table predates the backend split,
//! so existing data dirs open unchanged).

use super::{SettingsBackend, SettingsError};
use crate::blocking;
use rusqlite::{Connection, OptionalExtension};
use std::sync::{Arc, Mutex};

pub struct SqliteSettings {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteSettings {
    pub fn new(conn: Connection) -> Result<Self, SettingsError> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL);")?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, off the async runtime's worker threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, SettingsError> {
        let conn = self.conn.clone();
        Ok(blocking::run(move || f(&conn.lock().unwrap_or_else(|e| e.into_inner()))).await?)
    }
}

#[async_trait::async_trait]
impl SettingsBackend for SqliteSettings {
    async fn get_i64(&self, key: &str) -> Result<Option<i64>, SettingsError> {
        let key = key.to_owned();
        self.with(move |c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn set_i64(&self, key: &str, value: i64) -> Result<(), SettingsError> {
        let key = key.to_owned();
        self.with(move |c| {
            c.execute(
                "INSERT INTO settings(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                rusqlite::params![key, value],
            )
            .map(drop)
        })
        .await
    }
}
