//! Opening the SQLite database shared by every layer's store (`DIR/sealstore.db`).

use rusqlite::Connection;
use std::path::Path;

/// WAL for concurrent readers; `synchronous=FULL` so an acknowledged write survives a
/// crash; `secure_delete` so erased key material is overwritten, not left in free pages.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(conn)
}

pub fn open_in_memory() -> rusqlite::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Small persistent settings (e.g. the fake clock's offset), one table of key/value.
pub struct Settings {
    conn: std::sync::Mutex<Connection>,
}

impl Settings {
    pub fn new(conn: Connection) -> rusqlite::Result<Self> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL);")?;
        Ok(Self {
            conn: std::sync::Mutex::new(conn),
        })
    }

    pub fn get_i64(&self, key: &str) -> rusqlite::Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    pub fn set_i64(&self, key: &str, value: i64) -> rusqlite::Result<()> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            rusqlite::params![key, value],
        )?;
        Ok(())
    }
}
