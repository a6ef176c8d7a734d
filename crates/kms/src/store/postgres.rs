//! KMS state in PostgreSQL (`--database postgres://…`), shared by every gateway on it.
//! Records are the same JSON documents as in SQLite; sealed secrets stay sealed under
//! the root key, so the database never holds key material in the clear.

use super::{KmsStore, Sealed, Snapshot, StoreError, Write};
use sealstore_core::blocking::wait_on;
use sealstore_core::pg::{self, PgError, Pool};

const DDL: &str = "
CREATE TABLE IF NOT EXISTS kms_key_rings (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kms_keys (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kms_versions (name TEXT PRIMARY KEY, doc TEXT NOT NULL, sealed BYTEA);
CREATE TABLE IF NOT EXISTS kms_import_jobs (name TEXT PRIMARY KEY, doc TEXT NOT NULL, sealed BYTEA);
CREATE TABLE IF NOT EXISTS kms_retired (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kms_operations (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kms_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), v BIGINT NOT NULL);
INSERT INTO kms_epoch (id, v) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS kms_quota (
    name TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, at TIMESTAMPTZ NOT NULL,
    granted DOUBLE PRECISION NOT NULL);
";

/// `quota::take` in one statement (the conflicting row's lock makes it atomic), timed
/// by the database's clock so that gateways whose clocks disagree share one bucket
/// fairly. Every SET expression reads the row as it was, so `refilled` is spelled out
/// twice. $1 name, $2 per_minute, $3 want.
const TAKE_TOKENS: &str = "
INSERT INTO kms_quota AS q (name, tokens, at, granted)
VALUES ($1, $2::float8 - LEAST($3::float8, $2::float8), now(), LEAST($3::float8, $2::float8))
ON CONFLICT (name) DO UPDATE SET
    granted = LEAST($3::float8, FLOOR(LEAST($2::float8,
        q.tokens + GREATEST(0, EXTRACT(EPOCH FROM now() - q.at)::float8) * $2::float8 / 60))),
    tokens = LEAST($2::float8,
        q.tokens + GREATEST(0, EXTRACT(EPOCH FROM now() - q.at)::float8) * $2::float8 / 60)
      - LEAST($3::float8, FLOOR(LEAST($2::float8,
        q.tokens + GREATEST(0, EXTRACT(EPOCH FROM now() - q.at)::float8) * $2::float8 / 60))),
    at = now()
RETURNING granted";

pub struct PgKmsStore {
    pool: Pool,
    /// The runtime the pool's connections run on; the synchronous core waits there.
    runtime: tokio::runtime::Handle,
    /// Set by `connect`: the store's own runtime, stopped when the store goes.
    _own: Option<OwnRuntime>,
}

/// A runtime that is shut down without waiting (dropping a runtime from async code
/// would panic).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl PgKmsStore {
    /// The store on a pool of its own whose connections run on a runtime of its own.
    /// The core holds its state lock across a commit and request threads wait on that
    /// lock synchronously; if the connections ran on the request runtime, a connection
    /// task queued behind such a waiting thread could never run, and the commit would
    /// wait forever.
    pub async fn connect(url: &str, size: usize) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kms-db")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Postgres(PgError::Runtime(e.to_string())))?;
        let pool = pg::pool(url, size)?;
        let store = rt
            .spawn(Self::new(pool))
            .await
            .map_err(|e| StoreError::Postgres(PgError::Runtime(e.to_string())))??;
        Ok(Self {
            _own: Some(OwnRuntime(Some(rt))),
            ..store
        })
    }

    /// Creates the tables if they are missing.
    pub async fn new(pool: Pool) -> Result<Self, StoreError> {
        pg::migrate(&pool, DDL).await?;
        Ok(Self {
            pool,
            runtime: tokio::runtime::Handle::current(),
            _own: None,
        })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(e.into())
}

async fn docs<T: serde::de::DeserializeOwned>(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
) -> Result<Vec<T>, StoreError> {
    let rows = tx
        .query(&format!("SELECT doc FROM {table} ORDER BY name"), &[])
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
        .collect()
}

async fn sealed_docs<T: serde::de::DeserializeOwned>(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
) -> Result<Vec<(T, Option<Vec<u8>>)>, StoreError> {
    let rows = tx
        .query(&format!("SELECT doc, sealed FROM {table} ORDER BY name"), &[])
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| Ok((serde_json::from_str(r.get::<_, &str>(0))?, r.get(1))))
        .collect()
}

async fn upsert(tx: &deadpool_postgres::Transaction<'_>, table: &str, name: &str, doc: &str) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO {table} (name, doc) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET doc = EXCLUDED.doc"
        ))
        .await
        .map_err(db)?;
    tx.execute(&stmt, &[&name, &doc]).await.map_err(db)?;
    Ok(())
}

async fn upsert_sealed(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    name: &str,
    doc: &str,
    sealed: Sealed<'_>,
) -> Result<(), StoreError> {
    upsert(tx, table, name, doc).await?;
    match sealed {
        Sealed::Keep => {}
        Sealed::Set(bytes) => {
            tx.execute(
                &format!("UPDATE {table} SET sealed = $2 WHERE name = $1"),
                &[&name, &bytes],
            )
            .await
            .map_err(db)?;
        }
        Sealed::Erase => {
            tx.execute(&format!("UPDATE {table} SET sealed = NULL WHERE name = $1"), &[&name])
                .await
                .map_err(db)?;
        }
    }
    Ok(())
}

impl KmsStore for PgKmsStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        wait_on(&self.runtime, async {
            let mut c = self.conn().await?;
            // REPEATABLE READ: every table and the epoch from one snapshot.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db)?;
            let epoch: i64 = tx
                .query_one("SELECT v FROM kms_epoch WHERE id = 1", &[])
                .await
                .map_err(db)?
                .get(0);
            let snap = Snapshot {
                key_rings: docs(&tx, "kms_key_rings").await?,
                keys: docs(&tx, "kms_keys").await?,
                versions: sealed_docs(&tx, "kms_versions").await?,
                import_jobs: sealed_docs(&tx, "kms_import_jobs").await?,
                retired: docs(&tx, "kms_retired").await?,
                operations: docs(&tx, "kms_operations").await?,
                epoch,
            };
            tx.commit().await.map_err(db)?;
            Ok(snap)
        })?
    }

    fn epoch(&self) -> Result<i64, StoreError> {
        wait_on(&self.runtime, async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached("SELECT v FROM kms_epoch WHERE id = 1")
                .await
                .map_err(db)?;
            Ok(c.query_one(&stmt, &[]).await.map_err(db)?.get(0))
        })?
    }

    fn commit(&self, writes: &[Write<'_>], expected: i64) -> Result<i64, StoreError> {
        wait_on(&self.runtime, async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db)?;
            // The conditional bump takes the epoch row's lock until commit, so two
            // gateways committing from the same epoch cannot both succeed.
            let bumped = tx
                .query_opt(
                    "UPDATE kms_epoch SET v = v + 1 WHERE id = 1 AND v = $1 RETURNING v",
                    &[&expected],
                )
                .await
                .map_err(db)?;
            let Some(row) = bumped else {
                return Err(StoreError::Stale);
            };
            let epoch: i64 = row.get(0);
            for w in writes {
                match w {
                    Write::KeyRing(kr) => {
                        upsert(&tx, "kms_key_rings", &kr.name.to_string(), &serde_json::to_string(kr)?).await?
                    }
                    Write::Key(k) => upsert(&tx, "kms_keys", &k.name.to_string(), &serde_json::to_string(k)?).await?,
                    Write::Version(v, sealed) => {
                        upsert_sealed(
                            &tx,
                            "kms_versions",
                            &v.name.to_string(),
                            &serde_json::to_string(v)?,
                            *sealed,
                        )
                        .await?
                    }
                    Write::ImportJob(j, sealed) => {
                        upsert_sealed(
                            &tx,
                            "kms_import_jobs",
                            &j.name.to_string(),
                            &serde_json::to_string(j)?,
                            *sealed,
                        )
                        .await?
                    }
                    Write::DeleteKey(name) => {
                        tx.execute("DELETE FROM kms_keys WHERE name = $1", &[name])
                            .await
                            .map_err(db)?;
                    }
                    Write::DeleteVersion(name) => {
                        tx.execute("DELETE FROM kms_versions WHERE name = $1", &[name])
                            .await
                            .map_err(db)?;
                    }
                    Write::Retired(r) => upsert(&tx, "kms_retired", &r.name, &serde_json::to_string(r)?).await?,
                    Write::Operation(o) => upsert(&tx, "kms_operations", &o.name, &serde_json::to_string(o)?).await?,
                }
            }
            tx.commit().await.map_err(db)?;
            let erased = writes.iter().any(|w| {
                matches!(
                    w,
                    Write::Version(_, Sealed::Erase) | Write::ImportJob(_, Sealed::Erase) | Write::DeleteVersion(_)
                )
            });
            if erased {
                // The old row versions still hold the sealed bytes until vacuumed:
                // reclaim them now rather than at autovacuum's leisure. (The WAL keeps
                // them until its segments recycle; see the README.)
                if let Err(e) = c.batch_execute("VACUUM kms_versions, kms_import_jobs").await {
                    tracing::warn!(error = %e, "could not vacuum erased key material");
                }
            }
            Ok(epoch)
        })?
    }

    fn sealed_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        wait_on(&self.runtime, async {
            let c = self.conn().await?;
            for table in ["kms_versions", "kms_import_jobs"] {
                if let Some(row) = c
                    .query_opt(&format!("SELECT sealed FROM {table} WHERE name = $1"), &[&name])
                    .await
                    .map_err(db)?
                {
                    return Ok(row.get(0));
                }
            }
            Ok(None)
        })?
    }

    fn take_tokens(&self, name: &str, want: u32, per_minute: u32) -> Result<u32, StoreError> {
        wait_on(&self.runtime, async {
            let c = self.conn().await?;
            let stmt = c.prepare_cached(TAKE_TOKENS).await.map_err(db)?;
            let granted: f64 = c
                .query_one(&stmt, &[&name, &f64::from(per_minute), &f64::from(want)])
                .await
                .map_err(db)?
                .get(0);
            // A whole number in 0..=want by construction.
            Ok(granted.clamp(0.0, f64::from(want)) as u32)
        })?
    }
}
