//! Leases in the data dir's SQLite database. Expiry is judged by this machine's wall
//! clock (milliseconds since the Unix epoch), which every process on the file shares.

use super::{LeaseBackend, LeaseError};
use crate::blocking;
use rusqlite::{Connection, OptionalExtension};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DDL: &str =
    "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_ms INTEGER NOT NULL);";

pub struct SqliteLeases {
    conn: Arc<Mutex<Connection>>,
}

/// Now, in milliseconds since the Unix epoch (0 for a clock set before 1970).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl SqliteLeases {
    pub fn new(conn: Connection) -> Result<Self, LeaseError> {
        conn.execute_batch(DDL)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, off the async runtime's worker threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LeaseError> {
        let conn = self.conn.clone();
        Ok(blocking::run(move || f(&conn.lock().unwrap_or_else(|e| e.into_inner()))).await?)
    }
}

#[async_trait::async_trait]
impl LeaseBackend for SqliteLeases {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, LeaseError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.with(move |c| {
            // One statement, so one write transaction: the check and the take are atomic
            // against every other connection. No row comes back when the WHERE refuses.
            let now = now_ms();
            c.prepare_cached(
                "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms
                 WHERE leases.holder = excluded.holder OR leases.expires_ms < ?4
                 RETURNING holder",
            )?
            .query_row(rusqlite::params![name, holder, now.saturating_add(ttl_ms), now], |_| {
                Ok(())
            })
            .optional()
            .map(|taken| taken.is_some())
        })
        .await
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.with(move |c| {
            c.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?
                .execute([name, holder])
                .map(drop)
        })
        .await
    }

    async fn holder(&self, name: &str) -> Result<Option<String>, LeaseError> {
        let name = name.to_owned();
        self.with(move |c| {
            c.prepare_cached("SELECT holder FROM leases WHERE name = ?1 AND expires_ms >= ?2")?
                .query_row(rusqlite::params![name, now_ms()], |r| r.get(0))
                .optional()
        })
        .await
    }
}
