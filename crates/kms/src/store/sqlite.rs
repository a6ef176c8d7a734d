//! KMS state in the embedded SQLite database (the default data dir).

use super::{KmsStore, Sealed, Snapshot, StoreError, Write};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Mutex;

pub struct SqliteKmsStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kms_key_rings (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kms_keys (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kms_versions (name TEXT PRIMARY KEY, doc TEXT NOT NULL, sealed BLOB);
CREATE TABLE IF NOT EXISTS kms_import_jobs (name TEXT PRIMARY KEY, doc TEXT NOT NULL, sealed BLOB);
CREATE TABLE IF NOT EXISTS kms_retired (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kms_operations (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kms_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER NOT NULL);
INSERT OR IGNORE INTO kms_epoch (id, v) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS kms_quota (name TEXT PRIMARY KEY, tokens REAL NOT NULL, at_ms INTEGER NOT NULL);
";

fn epoch_of(c: &Connection) -> rusqlite::Result<i64> {
    c.prepare_cached("SELECT v FROM kms_epoch WHERE id = 1")?
        .query_row([], |r| r.get(0))
}

impl SqliteKmsStore {
    pub fn new(conn: Connection) -> Result<Self, StoreError> {
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn upsert_doc(tx: &rusqlite::Transaction<'_>, table: &str, name: &str, doc: &str) -> rusqlite::Result<()> {
    tx.execute(
        &format!("INSERT INTO {table}(name, doc) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET doc = excluded.doc"),
        params![name, doc],
    )?;
    Ok(())
}

fn upsert_sealed(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    name: &str,
    doc: &str,
    sealed: Sealed<'_>,
) -> rusqlite::Result<()> {
    upsert_doc(tx, table, name, doc)?;
    match sealed {
        Sealed::Keep => {}
        Sealed::Set(bytes) => {
            tx.execute(
                &format!("UPDATE {table} SET sealed = ?2 WHERE name = ?1"),
                params![name, bytes],
            )?;
        }
        Sealed::Erase => {
            tx.execute(
                &format!("UPDATE {table} SET sealed = NULL WHERE name = ?1"),
                params![name],
            )?;
        }
    }
    Ok(())
}

impl KmsStore for SqliteKmsStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let mut conn = self.conn();
        // One read transaction: the records and the epoch agree.
        let conn = conn.transaction()?;
        let mut snap = Snapshot {
            epoch: epoch_of(&conn)?,
            ..Snapshot::default()
        };
        let mut stmt = conn.prepare("SELECT doc FROM kms_key_rings ORDER BY name")?;
        for doc in stmt.query_map([], |r| r.get::<_, String>(0))? {
            snap.key_rings.push(serde_json::from_str(&doc?)?);
        }
        let mut stmt = conn.prepare("SELECT doc FROM kms_keys ORDER BY name")?;
        for doc in stmt.query_map([], |r| r.get::<_, String>(0))? {
            snap.keys.push(serde_json::from_str(&doc?)?);
        }
        let mut stmt = conn.prepare("SELECT doc, sealed FROM kms_versions")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)))? {
            let (doc, sealed) = row?;
            snap.versions.push((serde_json::from_str(&doc)?, sealed));
        }
        let mut stmt = conn.prepare("SELECT doc, sealed FROM kms_import_jobs ORDER BY name")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)))? {
            let (doc, sealed) = row?;
            snap.import_jobs.push((serde_json::from_str(&doc)?, sealed));
        }
        let mut stmt = conn.prepare("SELECT doc FROM kms_retired ORDER BY name")?;
        for doc in stmt.query_map([], |r| r.get::<_, String>(0))? {
            snap.retired.push(serde_json::from_str(&doc?)?);
        }
        let mut stmt = conn.prepare("SELECT doc FROM kms_operations ORDER BY name")?;
        for doc in stmt.query_map([], |r| r.get::<_, String>(0))? {
            snap.operations.push(serde_json::from_str(&doc?)?);
        }
        Ok(snap)
    }

    fn epoch(&self) -> Result<i64, StoreError> {
        Ok(epoch_of(&self.conn())?)
    }

    fn commit(&self, writes: &[Write<'_>], expected: i64) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // IMMEDIATE holds the write lock from here, so the check and the bump are atomic.
        if epoch_of(&tx)? != expected {
            return Err(StoreError::Stale);
        }
        tx.execute("UPDATE kms_epoch SET v = v + 1 WHERE id = 1", [])?;
        for w in writes {
            match w {
                Write::KeyRing(kr) => {
                    upsert_doc(&tx, "kms_key_rings", &kr.name.to_string(), &serde_json::to_string(kr)?)?
                }
                Write::Key(k) => upsert_doc(&tx, "kms_keys", &k.name.to_string(), &serde_json::to_string(k)?)?,
                Write::Version(v, sealed) => upsert_sealed(
                    &tx,
                    "kms_versions",
                    &v.name.to_string(),
                    &serde_json::to_string(v)?,
                    *sealed,
                )?,
                Write::ImportJob(j, sealed) => upsert_sealed(
                    &tx,
                    "kms_import_jobs",
                    &j.name.to_string(),
                    &serde_json::to_string(j)?,
                    *sealed,
                )?,
                Write::DeleteKey(name) => {
                    tx.execute("DELETE FROM kms_keys WHERE name = ?1", [name])?;
                }
                Write::DeleteVersion(name) => {
                    tx.execute("DELETE FROM kms_versions WHERE name = ?1", [name])?;
                }
                Write::Retired(r) => upsert_doc(&tx, "kms_retired", &r.name, &serde_json::to_string(r)?)?,
                Write::Operation(o) => upsert_doc(&tx, "kms_operations", &o.name, &serde_json::to_string(o)?)?,
            }
        }
        tx.commit()?;
        // Erased material must leave the disk: the WAL still holds the old page
        // images until a checkpoint, so checkpoint and truncate it now.
        if writes.iter().any(|w| {
            matches!(
                w,
                Write::Version(_, Sealed::Erase) | Write::ImportJob(_, Sealed::Erase) | Write::DeleteVersion(_)
            )
        }) {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(expected + 1)
    }

    fn sealed_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn();
        for table in ["kms_versions", "kms_import_jobs"] {
            let found: Option<Option<Vec<u8>>> = conn
                .query_row(&format!("SELECT sealed FROM {table} WHERE name = ?1"), [name], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(sealed) = found {
                return Ok(sealed);
            }
        }
        Ok(None)
    }

    fn take_tokens(&self, name: &str, want: u32, per_minute: u32) -> Result<u32, StoreError> {
        let mut conn = self.conn();
        // IMMEDIATE: the read and the write below hold the write lock together.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = super::quota::now_ms();
        let row: Option<(f64, i64)> = tx
            .prepare_cached("SELECT tokens, at_ms FROM kms_quota WHERE name = ?1")?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (tokens, at) = row.unwrap_or((f64::from(per_minute), now));
        let elapsed_s = now.saturating_sub(at) as f64 / 1000.0;
        let (granted, left) = super::quota::take(tokens, elapsed_s, want, per_minute);
        tx.prepare_cached(
            "INSERT INTO kms_quota (name, tokens, at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET tokens = excluded.tokens, at_ms = excluded.at_ms",
        )?
        .execute(params![name, left, now])?;
        tx.commit()?;
        Ok(granted)
    }
}
