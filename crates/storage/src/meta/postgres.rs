//! The metadata store in PostgreSQL (`--database postgres://…`), shared by every gateway
//! on the database. Same tables, columns and JSON documents as the SQLite store, so the
//! semantics carry over statement for statement; what SQLite gets from its one writer,
//! this gets from locks taken inside each mutation's transaction:
//!
//! - a per-object advisory lock (`lock_name`) serialises every transaction that decides
//!   on one (bucket, name), including one that creates the name, where no row exists
//!   to lock; the unique index on live rows is the backstop;
//! - the live row is read `FOR UPDATE`, so a metadata update cannot slip in between a
//!   writer's check and its replacement;
//! - writers hold the bucket row `FOR SHARE`, and a bucket delete takes it `FOR UPDATE`
//!   before it checks emptiness, so no object lands in a bucket being deleted.
//!
//! Documents stay TEXT holding the same JSON, not JSONB: rows are read whole and parsed
//! by serde anyway, TEXT keeps them byte-identical across backends and costs no
//! conversion on the write path. Nothing looks inside them in SQL: PostgreSQL's JSON
//! types and operators refuse `\u0000`, which user metadata may hold (the suite checks
//! it), so the few checks SQLite makes with `json_extract` are made on the parsed row.
//! Name columns use the "C" collation: listings are in byte order, as SQLite's and
//! GCS's, whatever the database's default collation.

use super::{ListQuery, MetaStore, MoveSpec, ReplaceCheck, RestoreSpec};
use crate::error::{StorageError, StorageResult};
use crate::model::{Bucket, InlineData, ObjectRecord, Preconditions, UploadSession};
use deadpool_postgres::GenericClient;
use sealstore_core::pg::{self, PgError, Pool};
use std::collections::HashMap;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS buckets (name TEXT COLLATE "C" PRIMARY KEY, project TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS buckets_project ON buckets (project, name);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL, generation BIGINT NOT NULL,
    live BOOLEAN NOT NULL, blob_id TEXT NOT NULL, key_version TEXT COLLATE "C" NOT NULL, doc TEXT NOT NULL,
    data BYTEA, PRIMARY KEY (bucket, name, generation));
-- At most one live generation per name, whatever a transaction does: the backstop
-- behind the per-object lock. It also serves live listings in name order.
CREATE UNIQUE INDEX IF NOT EXISTS objects_one_live ON objects (bucket, name) WHERE live;
CREATE INDEX IF NOT EXISTS objects_key_version ON objects (key_version);
CREATE INDEX IF NOT EXISTS objects_bucket_key ON objects (bucket, key_version, name, generation);
CREATE TABLE IF NOT EXISTS rekey_jobs (name TEXT PRIMARY KEY, state TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS upload_sessions (id TEXT PRIMARY KEY, blob_id TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS worker_cursors (worker TEXT PRIMARY KEY, cursor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS multipart_uploads (id TEXT COLLATE "C" PRIMARY KEY, bucket TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL, initiated BIGINT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS multipart_uploads_name ON multipart_uploads (bucket, name, id);
CREATE INDEX IF NOT EXISTS multipart_uploads_initiated ON multipart_uploads (initiated);
CREATE TABLE IF NOT EXISTS multipart_parts (upload_id TEXT NOT NULL, part_number BIGINT NOT NULL,
    blob_id TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (upload_id, part_number));
CREATE TABLE IF NOT EXISTS soft_objects (
    bucket TEXT COLLATE "C" NOT NULL, bucket_gen BIGINT NOT NULL, name TEXT COLLATE "C" NOT NULL,
    generation BIGINT NOT NULL, hard_delete_at BIGINT NOT NULL, blob_id TEXT NOT NULL,
    key_version TEXT COLLATE "C" NOT NULL, doc TEXT NOT NULL, data BYTEA,
    PRIMARY KEY (bucket, bucket_gen, name, generation));
CREATE INDEX IF NOT EXISTS soft_objects_due ON soft_objects (hard_delete_at);
CREATE INDEX IF NOT EXISTS soft_objects_key ON soft_objects (bucket, key_version, name, generation);
CREATE TABLE IF NOT EXISTS soft_buckets (
    name TEXT COLLATE "C" NOT NULL, generation BIGINT NOT NULL, project TEXT NOT NULL,
    hard_delete_at BIGINT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (name, generation));
CREATE INDEX IF NOT EXISTS soft_buckets_due ON soft_buckets (hard_delete_at);
-- The last generation number handed out, by any gateway (`next_generation`). Seeded
-- once from the rows already there, so a database filled by other means never
-- repeats a generation.
CREATE TABLE IF NOT EXISTS meta_generation (id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id), v BIGINT NOT NULL);
INSERT INTO meta_generation (id, v)
    SELECT TRUE, GREATEST(COALESCE((SELECT MAX(generation) FROM objects), 0),
                          COALESCE((SELECT MAX(generation) FROM soft_objects), 0))
    ON CONFLICT (id) DO NOTHING;
"#;

/// The class of the per-object advisory locks (two-key form, so it can never collide
/// with single-key locks such as the migration's).
const OBJECT_LOCK_CLASS: i32 = 0x6d65_7461; // "meta"

pub struct PgMetaStore {
    pool: Pool,
}

impl PgMetaStore {
    /// Creates the tables if they are missing (every gateway may call this at start).
    pub async fn new(pool: Pool) -> StorageResult<Self> {
        pg::migrate(&pool, DDL).await?;
        Ok(Self { pool })
    }

    async fn conn(&self) -> StorageResult<deadpool_postgres::Object> {
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }
}

pub(super) fn db(e: tokio_postgres::Error) -> StorageError {
    PgError::from(e).into()
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn query<C: GenericClient>(c: &C, sql: &str, p: Params<'_>) -> StorageResult<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db)?;
    c.query(&stmt, p).await.map_err(db)
}

pub(super) async fn query_opt<C: GenericClient>(c: &C, sql: &str, p: Params<'_>) -> StorageResult<Option<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db)?;
    c.query_opt(&stmt, p).await.map_err(db)
}

pub(super) async fn execute<C: GenericClient>(c: &C, sql: &str, p: Params<'_>) -> StorageResult<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(db)?;
    c.execute(&stmt, p).await.map_err(db)
}

/// Column `i` of a row; a type mismatch is a corrupt or foreign schema, not a panic.
pub(super) fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> StorageResult<T> {
    r.try_get(i)
        .map_err(|e| StorageError::Internal(format!("metadata store: column {i}: {e}")))
}

/// The documents in column 0 of `rows`, parsed.
pub(super) fn docs<T: serde::de::DeserializeOwned>(rows: &[Row]) -> StorageResult<Vec<T>> {
    rows.iter()
        .map(|r| Ok(serde_json::from_str(col::<&str>(r, 0)?)?))
        .collect()
}

fn doc_of<T: serde::de::DeserializeOwned>(row: Option<Row>) -> StorageResult<Option<T>> {
    row.map(|r| Ok(serde_json::from_str(col::<&str>(&r, 0)?)?)).transpose()
}

/// A `LIMIT` parameter: PostgreSQL's is a signed BIGINT (a huge `usize` means "all").
pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A record with its inline data attached, from a `SELECT doc, data` row.
pub(super) fn with_data(r: &Row) -> StorageResult<ObjectRecord> {
    let mut rec: ObjectRecord = serde_json::from_str(col::<&str>(r, 0)?)?;
    if rec.envelope.inline {
        let data: Option<Vec<u8>> = col(r, 1)?;
        rec.envelope.inline_data = data.map(|d| InlineData(bytes::Bytes::from(d)));
    }
    Ok(rec)
}

/// Serialises every transaction deciding on (bucket, name) until this one ends. Bucket
/// names cannot contain `/`, so the key text is unique per object; a hash collision
/// only serialises two unrelated names a little.
async fn lock_name<C: GenericClient>(c: &C, bucket: &str, name: &str) -> StorageResult<()> {
    execute(
        c,
        "SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))",
        &[&OBJECT_LOCK_CLASS, &bucket, &name],
    )
    .await?;
    Ok(())
}

/// `lock_name`, `bucket_for_share` and `live_of` in one round trip: the statements
/// are prepared first (from the connection's cache after its first use), so each
/// query's first poll writes it at once and they go out in this order; the server runs
/// a connection's queries in the order sent, so the name's lock is still taken first.
async fn lock_bucket_live(
    tx: &deadpool_postgres::Transaction<'_>,
    bucket: &str,
    name: &str,
) -> StorageResult<(Option<Bucket>, Option<ObjectRecord>)> {
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))")
        .await
        .map_err(db)?;
    let b = tx
        .prepare_cached("SELECT doc FROM buckets WHERE name = $1 FOR SHARE")
        .await
        .map_err(db)?;
    let l = tx
        .prepare_cached("SELECT doc FROM objects WHERE bucket = $1 AND name = $2 AND live FOR UPDATE")
        .await
        .map_err(db)?;
    let lock_params: [&(dyn ToSql + Sync); 3] = [&OBJECT_LOCK_CLASS, &bucket, &name];
    let bucket_params: [&(dyn ToSql + Sync); 1] = [&bucket];
    let live_params: [&(dyn ToSql + Sync); 2] = [&bucket, &name];
    let (_, b, l) = tokio::try_join!(
        tx.execute(&lock, &lock_params),
        tx.query_opt(&b, &bucket_params),
        tx.query_opt(&l, &live_params),
    )
    .map_err(db)?;
    Ok((doc_of(b)?, doc_of(l)?))
}

/// The bucket, held against deletion (or another transaction's change) until this
/// transaction ends.
async fn bucket_for_share<C: GenericClient>(c: &C, name: &str) -> StorageResult<Option<Bucket>> {
    doc_of(query_opt(c, "SELECT doc FROM buckets WHERE name = $1 FOR SHARE", &[&name]).await?)
}

fn no_bucket(name: &str) -> StorageError {
    StorageError::NotFound(format!("The specified bucket does not exist: {name}"))
}

fn not_found_object(bucket: &str, name: &str) -> StorageError {
    StorageError::NotFound(format!("No such object: {bucket}/{name}"))
}

/// The live generation's record, without inline data, locked for this transaction.
async fn live_of<C: GenericClient>(c: &C, bucket: &str, name: &str) -> StorageResult<Option<ObjectRecord>> {
    doc_of(
        query_opt(
            c,
            "SELECT doc FROM objects WHERE bucket = $1 AND name = $2 AND live FOR UPDATE",
            &[&bucket, &name],
        )
        .await?,
    )
}

/// The indexed key column: the KMS version name, or `csek:<sha256>`.
fn key_column(rec: &ObjectRecord) -> String {
    rec.envelope
        .csek_sha256
        .as_ref()
        .map_or_else(|| rec.envelope.key_version.clone(), |s| format!("csek:{s}"))
}

fn precondition_failed(what: &str) -> StorageError {
    StorageError::PreconditionFailed(format!(
        "At least one of the pre-conditions you specified did not hold ({what})."
    ))
}

async fn insert_object<C: GenericClient>(c: &C, rec: &ObjectRecord) -> StorageResult<()> {
    let data: Option<&[u8]> = match (&rec.envelope.inline, &rec.envelope.inline_data) {
        (false, _) => None,
        (true, Some(d)) => Some(&d.0[..]),
        (true, None) => return Err(StorageError::internal("an inline object without its data")),
    };
    let doc = serde_json::to_string(rec)?;
    let stmt = c
        .prepare_cached(
            "INSERT INTO objects (bucket, name, generation, live, blob_id, key_version, doc, data)
               VALUES ($1, $2, $3, TRUE, $4, $5, $6, $7)",
        )
        .await
        .map_err(db)?;
    let r = c
        .execute(
            &stmt,
            &[
                &rec.bucket,
                &rec.name,
                &rec.generation,
                &rec.envelope.blob_id,
                &key_column(rec),
                &doc,
                &data,
            ],
        )
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = PgError::from(e);
            // Under the per-object lock this cannot happen; if a path ever skipped the
            // lock, the loser fails as SQLite's serial order would have failed it.
            Err(if e.is_unique_violation() {
                precondition_failed("ifGenerationMatch")
            } else {
                e.into()
            })
        }
    }
}

/// Makes a live generation noncurrent as of `now` (see the SQLite store).
async fn archive_row<C: GenericClient>(
    c: &C,
    old: &ObjectRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> StorageResult<()> {
    let mut doc = old.clone();
    doc.envelope.inline_data = None;
    doc.time_deleted = Some(now);
    execute(
        c,
        "UPDATE objects SET live = FALSE, doc = $4 WHERE bucket = $1 AND name = $2 AND generation = $3",
        &[&old.bucket, &old.name, &old.generation, &serde_json::to_string(&doc)?],
    )
    .await?;
    Ok(())
}

/// Takes the live generation `old` out of the way of a new one: kept as noncurrent
/// (`keep_previous`), else removed (soft-deleted when the bucket has soft delete).
/// Returns the removed record when its blob must go.
async fn replace_live<C: GenericClient>(
    c: &C,
    bucket: &Bucket,
    old: &ObjectRecord,
    keep_previous: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> StorageResult<Option<ObjectRecord>> {
    if keep_previous {
        archive_row(c, old, now).await?;
        Ok(None)
    } else {
        super::postgres_soft::remove_generation(c, bucket, old, now).await
    }
}

/// The one member of a stored document that `update_row` compares.
#[derive(serde::Deserialize)]
struct Metageneration {
    metageneration: i64,
}

/// Replaces a generation's document if its metageneration is still `expected`; inside a
/// transaction, whose row lock makes the read and the write one step, so of many
/// racing writers exactly one matches. The comparison is made here, not in SQL:
/// PostgreSQL's JSON operators refuse documents holding `\u0000`, which user metadata
/// may.
async fn update_row<C: GenericClient>(c: &C, rec: &ObjectRecord, expected: i64) -> StorageResult<()> {
    let doc = serde_json::to_string(rec)?;
    let key = key_column(rec);
    let id: Params<'_> = &[&rec.bucket, &rec.name, &rec.generation];
    let live = query_opt(
        c,
        "SELECT doc FROM objects WHERE bucket = $1 AND name = $2 AND generation = $3 FOR UPDATE",
        id,
    )
    .await?;
    let mut n = 0;
    if let Some(row) = live {
        let stored: Metageneration = serde_json::from_str(col::<&str>(&row, 0)?)?;
        if stored.metageneration == expected {
            n = execute(
                c,
                "UPDATE objects SET doc = $4, key_version = $5 WHERE bucket = $1 AND name = $2 AND generation = $3",
                &[&rec.bucket, &rec.name, &rec.generation, &doc, &key],
            )
            .await?;
        }
    } else {
        // The generation may be soft-deleted (re-key jobs re-wrap those too).
        let rows = query(
            c,
            "SELECT bucket_gen, doc FROM soft_objects WHERE bucket = $1 AND name = $2 AND generation = $3 FOR UPDATE",
            id,
        )
        .await?;
        for row in &rows {
            let stored: Metageneration = serde_json::from_str(col::<&str>(row, 1)?)?;
            if stored.metageneration == expected {
                n += execute(
                    c,
                    "UPDATE soft_objects SET doc = $5, key_version = $6
                       WHERE bucket = $1 AND bucket_gen = $2 AND name = $3 AND generation = $4",
                    &[
                        &rec.bucket,
                        &col::<i64>(row, 0)?,
                        &rec.name,
                        &rec.generation,
                        &doc,
                        &key,
                    ],
                )
                .await?;
            }
        }
    }
    if n == 0 {
        return Err(StorageError::ConcurrentChange(
            "The object's metadata changed concurrently (metageneration); retry the request.".into(),
        ));
    }
    Ok(())
}

/// How many blob parts a stored document's envelope lists (0 if none).
fn envelope_parts(doc: &str) -> StorageResult<usize> {
    #[derive(serde::Deserialize)]
    struct Doc {
        envelope: Parts,
    }
    #[derive(serde::Deserialize)]
    struct Parts {
        #[serde(default)]
        parts: Vec<serde::de::IgnoredAny>,
    }
    Ok(serde_json::from_str::<Doc>(doc)?.envelope.parts.len())
}

/// PostgreSQL text cannot hold NUL, but callers use it in bounds: the S3 face asks for
/// names from `marker + "\0"` (the least name after the marker). No stored name holds a
/// NUL, so for `p + "\0" + rest`, "at or after" means "after `p`", and "before" means
/// "at or before `p`" (before `p + "\u{1}"`).
fn without_nul_bounds(q: &ListQuery) -> std::borrow::Cow<'_, ListQuery> {
    let cut = |s: &str| s.find('\0').map(|i| s[..i].to_owned());
    let start = cut(&q.start);
    let end = q.end.as_deref().and_then(cut);
    if start.is_none() && end.is_none() {
        return std::borrow::Cow::Borrowed(q);
    }
    let mut q = q.clone();
    if let Some(p) = start {
        // "Strictly after (p, any generation)", unless the cursor already lies past p.
        if q.after.as_ref().is_none_or(|(name, _)| *name <= p) {
            q.after = Some((p.clone(), i64::MAX));
        }
        q.start = p;
    }
    if let Some(p) = end {
        q.end = Some(format!("{p}\u{1}"));
    }
    std::borrow::Cow::Owned(q)
}

#[async_trait::async_trait]
impl MetaStore for PgMetaStore {
    async fn insert_bucket(&self, b: &Bucket) -> StorageResult<()> {
        let c = self.conn().await?;
        let n = execute(
            &c,
            "INSERT INTO buckets (name, project, doc) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            &[&b.name, &b.project, &serde_json::to_string(b)?],
        )
        .await?;
        if n == 0 {
            return Err(StorageError::Conflict(format!(
                "Your previous request to create the named bucket succeeded and you already own it: {}",
                b.name
            )));
        }
        Ok(())
    }

    async fn get_bucket(&self, name: &str) -> StorageResult<Option<Bucket>> {
        let c = self.conn().await?;
        doc_of(query_opt(&c, "SELECT doc FROM buckets WHERE name = $1", &[&name]).await?)
    }

    async fn list_buckets(
        &self,
        project: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Bucket>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT doc FROM buckets WHERE project = $1 AND name >= $2 AND name > $3 ORDER BY name LIMIT $4",
            &[&project, &prefix, &after.unwrap_or(""), &self::limit(limit)],
        )
        .await?;
        let mut out: Vec<Bucket> = docs(&rows)?;
        if let Some(i) = out.iter().position(|b| !b.name.starts_with(prefix)) {
            out.truncate(i);
        }
        Ok(out)
    }

    async fn update_bucket(&self, b: &Bucket, expected: i64) -> StorageResult<()> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        let current: Bucket =
            doc_of(query_opt(&tx, "SELECT doc FROM buckets WHERE name = $1 FOR UPDATE", &[&b.name]).await?)?
                .ok_or_else(|| no_bucket(&b.name))?;
        if current.metageneration != expected {
            return Err(StorageError::ConcurrentChange(
                "At least one of the pre-conditions you specified did not hold (metageneration).".into(),
            ));
        }
        execute(
            &tx,
            "UPDATE buckets SET doc = $2 WHERE name = $1",
            &[&b.name, &serde_json::to_string(b)?],
        )
        .await?;
        tx.commit().await.map_err(db)
    }

    async fn delete_bucket(
        &self,
        name: &str,
        if_metageneration_match: Option<i64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Vec<ObjectRecord>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        // FOR UPDATE waits for every writer holding the bucket FOR SHARE, so the
        // emptiness check below sees whatever they committed.
        let b: Bucket = doc_of(query_opt(&tx, "SELECT doc FROM buckets WHERE name = $1 FOR UPDATE", &[&name]).await?)?
            .ok_or_else(|| no_bucket(name))?;
        if let Some(m) = if_metageneration_match
            && b.metageneration != m
        {
            return Err(precondition_failed("ifMetagenerationMatch"));
        }
        if query_opt(&tx, "SELECT 1 FROM objects WHERE bucket = $1 LIMIT 1", &[&name])
            .await?
            .is_some()
        {
            return Err(StorageError::Conflict(format!(
                "The bucket you tried to delete is not empty: {name}"
            )));
        }
        let out = super::postgres_soft::delete_bucket(&tx, &b, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn get_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
    ) -> StorageResult<Option<ObjectRecord>> {
        let c = self.conn().await?;
        let row = match generation {
            None => {
                query_opt(
                    &c,
                    "SELECT doc, data FROM objects WHERE bucket = $1 AND name = $2 AND live",
                    &[&bucket, &name],
                )
                .await?
            }
            Some(g) => {
                query_opt(
                    &c,
                    "SELECT doc, data FROM objects WHERE bucket = $1 AND name = $2 AND generation = $3",
                    &[&bucket, &name, &g],
                )
                .await?
            }
        };
        row.as_ref().map(with_data).transpose()
    }

    async fn list_objects(&self, q: &ListQuery) -> StorageResult<Vec<ObjectRecord>> {
        let q = &without_nul_bounds(q);
        let c = self.conn().await?;
        if q.soft_deleted {
            return super::postgres_soft::list(&c, q).await;
        }
        let (after_name, after_gen) = q.after.clone().unwrap_or_default();
        let sql = if q.versions {
            "SELECT doc, live FROM objects WHERE bucket = $1 AND name >= $2
               AND (NOT $3 OR name > $4 OR (name = $4 AND generation > $5))
               AND ($6::text IS NULL OR name < $6)
             ORDER BY name, generation LIMIT $7"
        } else {
            "SELECT doc, live FROM objects WHERE bucket = $1 AND live AND name >= $2
               AND (NOT $3 OR name > $4 OR (name = $4 AND generation > $5))
               AND ($6::text IS NULL OR name < $6)
             ORDER BY name, generation LIMIT $7"
        };
        let rows = query(
            &c,
            sql,
            &[
                &q.bucket,
                &q.start,
                &q.after.is_some(),
                &after_name,
                &after_gen,
                &q.end,
                &limit(q.limit),
            ],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut rec: ObjectRecord = serde_json::from_str(col::<&str>(r, 0)?)?;
            if !col::<bool>(r, 1)? && rec.time_deleted.is_none() {
                // Made noncurrent without a record of when: its last update is the
                // closest time known (as the SQLite store does).
                rec.time_deleted = Some(rec.updated);
            }
            out.push(rec);
        }
        Ok(out)
    }

    async fn commit_object(
        &self,
        rec: &ObjectRecord,
        pre: &Preconditions,
        keep_previous: bool,
        check: ReplaceCheck,
    ) -> StorageResult<Option<ObjectRecord>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        let (bucket, live) = lock_bucket_live(&tx, &rec.bucket, &rec.name).await?;
        let bucket = bucket.ok_or_else(|| no_bucket(&rec.bucket))?;
        pre.check(live.as_ref().map(|l| (l.generation, l.metageneration)), false)?;
        if let Some(l) = &live {
            check(l)?;
        }
        let replaced = match live {
            Some(old) => replace_live(&tx, &bucket, &old, keep_previous, rec.time_created).await?,
            None => None,
        };
        insert_object(&tx, rec).await?;
        tx.commit().await.map_err(db)?;
        Ok(replaced)
    }

    async fn update_object(&self, rec: &ObjectRecord, expected: i64) -> StorageResult<()> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        update_row(&tx, rec, expected).await?;
        tx.commit().await.map_err(db)
    }

    async fn update_objects(&self, updates: Vec<(ObjectRecord, i64)>) -> StorageResult<Vec<StorageResult<()>>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        let mut out = Vec::with_capacity(updates.len());
        for (rec, expected) in &updates {
            // A row's own failed check is its result; a database error fails the
            // transaction (PostgreSQL would refuse the rest of it anyway).
            match update_row(&tx, rec, *expected).await {
                Err(StorageError::ConcurrentChange(m)) => out.push(Err(StorageError::ConcurrentChange(m))),
                r => out.push(Ok(r?)),
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        pre: &Preconditions,
        archive: bool,
        check: ReplaceCheck,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Option<ObjectRecord>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        lock_name(&tx, bucket, name).await?;
        let target = match generation {
            None => live_of(&tx, bucket, name).await?,
            Some(g) => doc_of(
                query_opt(
                    &tx,
                    "SELECT doc FROM objects WHERE bucket = $1 AND name = $2 AND generation = $3 FOR UPDATE",
                    &[&bucket, &name, &g],
                )
                .await?,
            )?,
        };
        let Some(target) = target else {
            return Err(not_found_object(bucket, name));
        };
        pre.check(Some((target.generation, target.metageneration)), false)?;
        check(&target)?;
        if archive && generation.is_none() {
            archive_row(&tx, &target, now).await?;
            tx.commit().await.map_err(db)?;
            return Ok(None);
        }
        let b = bucket_for_share(&tx, bucket)
            .await?
            .ok_or_else(|| not_found_object(bucket, name))?;
        let out = super::postgres_soft::remove_generation(&tx, &b, &target, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn get_soft_object(
        &self,
        bucket: &str,
        bucket_gen: i64,
        name: &str,
        generation: i64,
    ) -> StorageResult<Option<ObjectRecord>> {
        let c = self.conn().await?;
        super::postgres_soft::get(&c, bucket, bucket_gen, name, generation, false).await
    }

    async fn restore_object(
        &self,
        spec: &RestoreSpec,
        check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        lock_name(&tx, &spec.bucket, &spec.name).await?;
        let bucket = bucket_for_share(&tx, &spec.bucket)
            .await?
            .ok_or_else(|| no_bucket(&spec.bucket))?;
        // Locked too: a hard delete taking it meanwhile leaves nothing to restore.
        let soft = super::postgres_soft::get(
            &tx,
            &spec.bucket,
            bucket.generation(),
            &spec.name,
            spec.generation,
            true,
        )
        .await?
        .ok_or_else(|| {
            StorageError::NotFound(format!(
                "No soft-deleted object {}/{} with generation {}.",
                spec.bucket, spec.name, spec.generation
            ))
        })?;
        let live = live_of(&tx, &spec.bucket, &spec.name).await?;
        spec.pre
            .check(live.as_ref().map(|l| (l.generation, l.metageneration)), false)?;
        let replaced = match live {
            Some(old) => {
                check(&old)?;
                replace_live(&tx, &bucket, &old, bucket.versioning, spec.now).await?
            }
            None => None,
        };
        let restored =
            super::postgres_soft::restore_row(&tx, &soft, bucket.generation(), spec.new_generation, spec.now).await?;
        tx.commit().await.map_err(db)?;
        Ok((restored, replaced))
    }

    async fn take_hard_deletes(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StorageResult<(Vec<ObjectRecord>, Vec<(Bucket, Vec<ObjectRecord>)>)> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        let objects = super::postgres_soft::take_due(&tx, now, limit).await?;
        let buckets = super::postgres_soft::take_due_buckets(&tx, now).await?;
        tx.commit().await.map_err(db)?;
        Ok((objects, buckets))
    }

    async fn get_soft_bucket(&self, name: &str, generation: i64) -> StorageResult<Option<Bucket>> {
        let c = self.conn().await?;
        super::postgres_soft::get_bucket(&c, name, generation, false).await
    }

    async fn list_soft_buckets(&self, project: &str, prefix: &str) -> StorageResult<Vec<Bucket>> {
        let c = self.conn().await?;
        super::postgres_soft::list_buckets(&c, project, prefix).await
    }

    async fn restore_bucket(
        &self,
        name: &str,
        generation: i64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Bucket> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        let b = super::postgres_soft::restore_bucket(&tx, name, generation, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(b)
    }

    async fn newer_generations(&self, bucket: &str, name: &str, generation: i64) -> StorageResult<u64> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT COUNT(*) FROM objects WHERE bucket = $1 AND name = $2 AND generation > $3",
            &[&bucket, &name, &generation],
        )
        .await?;
        let n: i64 = rows.first().map(|r| col(r, 0)).transpose()?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn buckets_with_lifecycle(&self) -> StorageResult<Vec<Bucket>> {
        let c = self.conn().await?;
        // Filtered here, not with JSON operators in SQL (see `update_row`); buckets are few.
        let rows = query(&c, "SELECT doc FROM buckets ORDER BY name", &[]).await?;
        let mut all: Vec<Bucket> = docs(&rows)?;
        all.retain(|b| !b.lifecycle.is_empty());
        Ok(all)
    }

    async fn get_cursor(&self, worker: &str) -> StorageResult<Option<String>> {
        let c = self.conn().await?;
        query_opt(&c, "SELECT cursor FROM worker_cursors WHERE worker = $1", &[&worker])
            .await?
            .map(|r| col(&r, 0))
            .transpose()
    }

    async fn put_cursor(&self, worker: &str, cursor: Option<&str>) -> StorageResult<()> {
        let c = self.conn().await?;
        match cursor {
            Some(v) => {
                execute(
                    &c,
                    "INSERT INTO worker_cursors (worker, cursor) VALUES ($1, $2)
                       ON CONFLICT (worker) DO UPDATE SET cursor = excluded.cursor",
                    &[&worker, &v],
                )
                .await?
            }
            None => execute(&c, "DELETE FROM worker_cursors WHERE worker = $1", &[&worker]).await?,
        };
        Ok(())
    }

    async fn move_object(
        &self,
        mv: &MoveSpec,
        src_check: ReplaceCheck,
        dst_check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)> {
        if mv.src == mv.dst {
            // The row would replace itself (and, removed as the "replaced" destination,
            // have its blob deleted under the moved record).
            return Err(StorageError::invalid(
                "The source and destination object names must differ.",
            ));
        }
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        // Both names, always in the same order, so two opposite moves cannot deadlock.
        let (first, second) = if mv.src < mv.dst {
            (&mv.src, &mv.dst)
        } else {
            (&mv.dst, &mv.src)
        };
        lock_name(&tx, &mv.bucket, first).await?;
        lock_name(&tx, &mv.bucket, second).await?;
        let bucket = bucket_for_share(&tx, &mv.bucket)
            .await?
            .ok_or_else(|| no_bucket(&mv.bucket))?;
        let src = live_of(&tx, &mv.bucket, &mv.src)
            .await?
            .ok_or_else(|| not_found_object(&mv.bucket, &mv.src))?;
        mv.src_pre.check(Some((src.generation, src.metageneration)), false)?;
        src_check(&src)?;
        let live = live_of(&tx, &mv.bucket, &mv.dst).await?;
        mv.dst_pre
            .check(live.as_ref().map(|l| (l.generation, l.metageneration)), false)?;
        let replaced = match live {
            Some(old) => {
                dst_check(&old)?;
                replace_live(&tx, &bucket, &old, mv.keep_previous, mv.now).await?
            }
            None => None,
        };
        let moved = src.moved_to(&mv.dst, mv.generation, mv.now);
        // The row itself moves, so an inline object's data column goes with it and the
        // key index (key_version) keeps pointing at the data.
        let n = execute(
            &tx,
            "UPDATE objects SET name = $4, generation = $5, live = TRUE, doc = $6
               WHERE bucket = $1 AND name = $2 AND generation = $3",
            &[
                &src.bucket,
                &src.name,
                &src.generation,
                &moved.name,
                &moved.generation,
                &serde_json::to_string(&moved)?,
            ],
        )
        .await?;
        if n != 1 {
            return Err(StorageError::internal("the moved object's row disappeared"));
        }
        tx.commit().await.map_err(db)?;
        Ok((moved, replaced))
    }

    async fn put_session(&self, s: &UploadSession) -> StorageResult<()> {
        let c = self.conn().await?;
        execute(
            &c,
            "INSERT INTO upload_sessions (id, blob_id, doc) VALUES ($1, $2, $3)
               ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            &[&s.id, &s.envelope.blob_id, &serde_json::to_string(s)?],
        )
        .await?;
        Ok(())
    }

    async fn get_session(&self, id: &str) -> StorageResult<Option<UploadSession>> {
        let c = self.conn().await?;
        doc_of(query_opt(&c, "SELECT doc FROM upload_sessions WHERE id = $1", &[&id]).await?)
    }

    async fn delete_session(&self, id: &str) -> StorageResult<()> {
        let c = self.conn().await?;
        execute(&c, "DELETE FROM upload_sessions WHERE id = $1", &[&id]).await?;
        Ok(())
    }

    async fn count_sessions(&self) -> StorageResult<u64> {
        let c = self.conn().await?;
        let rows = query(&c, "SELECT COUNT(*) FROM upload_sessions", &[]).await?;
        let n: i64 = rows.first().map(|r| col(r, 0)).transpose()?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ping(&self) -> StorageResult<()> {
        let c = self.conn().await?;
        query(&c, "SELECT 1", &[]).await?;
        Ok(())
    }

    async fn objects_by_key(
        &self,
        bucket: &str,
        lo: &str,
        hi: &str,
        after: Option<(String, i64)>,
        limit: usize,
    ) -> StorageResult<Vec<ObjectRecord>> {
        let c = self.conn().await?;
        let has_after = after.is_some();
        let (an, ag) = after.unwrap_or_default();
        let rows = query(
            &c,
            "SELECT doc, name, generation FROM objects WHERE bucket = $1 AND key_version >= $2 AND key_version < $3
               AND (NOT $4 OR name > $5 OR (name = $5 AND generation > $6))
             UNION ALL
             SELECT doc, name, generation FROM soft_objects WHERE bucket = $1 AND key_version >= $2 AND key_version < $3
               AND (NOT $4 OR name > $5 OR (name = $5 AND generation > $6))
             ORDER BY name, generation LIMIT $7",
            &[&bucket, &lo, &hi, &has_after, &an, &ag, &self::limit(limit)],
        )
        .await?;
        docs(&rows)
    }

    async fn objects_with_key_version(&self, version: &str) -> StorageResult<Vec<ObjectRecord>> {
        let c = self.conn().await?;
        let rows = query(&c, "SELECT doc FROM objects WHERE key_version = $1", &[&version]).await?;
        docs(&rows)
    }

    async fn blob_ids(&self) -> StorageResult<HashMap<String, usize>> {
        let c = self.conn().await?;
        let mut out = HashMap::new();
        // Part counts are read from the documents here, not with JSON operators in SQL
        // (see `update_row`).
        for sql in [
            "SELECT blob_id, doc FROM objects",
            "SELECT blob_id, doc FROM upload_sessions",
            "SELECT blob_id, doc FROM soft_objects",
            "SELECT blob_id, doc FROM multipart_parts",
        ] {
            for r in query(&c, sql, &[]).await? {
                let id: String = col(&r, 0)?;
                let parts = envelope_parts(col(&r, 1)?)?;
                let n = out.entry(id).or_insert(0);
                *n = parts.max(*n);
            }
        }
        Ok(out)
    }

    async fn put_rekey_job(&self, job: &crate::rekey_job::RekeyJob) -> StorageResult<()> {
        let c = self.conn().await?;
        execute(
            &c,
            "INSERT INTO rekey_jobs (name, state, doc) VALUES ($1, $2, $3)
               ON CONFLICT (name) DO UPDATE SET state = excluded.state, doc = excluded.doc",
            &[&job.name, &format!("{:?}", job.state), &serde_json::to_string(job)?],
        )
        .await?;
        Ok(())
    }

    async fn get_rekey_job(&self, name: &str) -> StorageResult<Option<crate::rekey_job::RekeyJob>> {
        let c = self.conn().await?;
        doc_of(query_opt(&c, "SELECT doc FROM rekey_jobs WHERE name = $1", &[&name]).await?)
    }

    async fn running_rekey_jobs(&self) -> StorageResult<Vec<crate::rekey_job::RekeyJob>> {
        let c = self.conn().await?;
        docs(
            &query(
                &c,
                "SELECT doc FROM rekey_jobs WHERE state = 'Running' ORDER BY name",
                &[],
            )
            .await?,
        )
    }

    async fn next_generation(&self, now_micros: i64) -> StorageResult<i64> {
        // One row every gateway bumps: its row lock orders all callers. The bump commits
        // without waiting for the WAL flush (the lock is held only while the statement
        // runs, not through an fsync, which would cap writes at one per fsync): a
        // generation is only ever used by an object commit, whose own synchronous
        // commit flushes the WAL past this bump, so no durably used number can be
        // handed out again after a crash. One round trip: the simple-query protocol
        // runs the four statements in one message; `now_micros` is an integer, so
        // formatting it in is not an injection.
        let c = self.conn().await?;
        let sql = format!(
            "BEGIN; SET LOCAL synchronous_commit = off;
             UPDATE meta_generation SET v = GREATEST(v + 1, {now_micros}) RETURNING v; COMMIT"
        );
        let msgs = match c.simple_query(&sql).await {
            Ok(m) => m,
            Err(e) => {
                // A statement that failed (say, the counter overflowing) leaves the
                // explicit transaction open and aborted; end it before the connection
                // goes back to the pool. Best effort: a broken connection fails this
                // too, and is dropped on its next use.
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(db(e));
            }
        };
        let v = msgs.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        v.and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| StorageError::internal("metadata store: the generation counter row is missing"))
    }

    async fn put_multipart(&self, u: &crate::multipart::MultipartUpload) -> StorageResult<()> {
        let c = self.conn().await?;
        execute(
            &c,
            "INSERT INTO multipart_uploads (id, bucket, name, initiated, doc) VALUES ($1, $2, $3, $4, $5)",
            &[
                &u.id,
                &u.bucket,
                &u.name,
                &u.initiated.timestamp_micros(),
                &serde_json::to_string(u)?,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_multipart(&self, id: &str) -> StorageResult<Option<crate::multipart::MultipartUpload>> {
        let c = self.conn().await?;
        doc_of(query_opt(&c, "SELECT doc FROM multipart_uploads WHERE id = $1", &[&id]).await?)
    }

    async fn list_multipart(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> StorageResult<Vec<crate::multipart::MultipartUpload>> {
        let c = self.conn().await?;
        let (an, ai) = after.unwrap_or_default();
        let rows = query(
            &c,
            "SELECT doc FROM multipart_uploads WHERE bucket = $1 AND name >= $2 AND (name > $3 OR (name = $3 AND id > $4))
               ORDER BY name, id LIMIT $5",
            &[&bucket, &prefix, &an, &ai, &self::limit(limit)],
        )
        .await?;
        let mut out: Vec<crate::multipart::MultipartUpload> = docs(&rows)?;
        if let Some(i) = out.iter().position(|u| !u.name.starts_with(prefix)) {
            out.truncate(i);
        }
        Ok(out)
    }

    async fn put_part(&self, p: &crate::multipart::Part) -> StorageResult<Option<crate::multipart::Part>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        // The upload row, locked: an abort waits for this part (and then returns it),
        // and two uploads of one part number take turns, so each sees the part it
        // replaces and no replaced part's blob is forgotten.
        if query_opt(
            &tx,
            "SELECT 1 FROM multipart_uploads WHERE id = $1 FOR NO KEY UPDATE",
            &[&p.upload_id],
        )
        .await?
        .is_none()
        {
            return Err(StorageError::Gone(format!(
                "The specified multipart upload does not exist: {}",
                p.upload_id
            )));
        }
        let number = i64::from(p.part_number);
        let old = doc_of(
            query_opt(
                &tx,
                "SELECT doc FROM multipart_parts WHERE upload_id = $1 AND part_number = $2",
                &[&p.upload_id, &number],
            )
            .await?,
        )?;
        execute(
            &tx,
            "INSERT INTO multipart_parts (upload_id, part_number, blob_id, doc) VALUES ($1, $2, $3, $4)
               ON CONFLICT (upload_id, part_number) DO UPDATE SET blob_id = excluded.blob_id, doc = excluded.doc",
            &[&p.upload_id, &number, &p.envelope.blob_id, &serde_json::to_string(p)?],
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(old)
    }

    async fn list_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> StorageResult<Vec<crate::multipart::Part>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT doc FROM multipart_parts WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3",
            &[&upload_id, &i64::from(after), &self::limit(limit)],
        )
        .await?;
        docs(&rows)
    }

    async fn delete_multipart(&self, id: &str) -> StorageResult<Option<Vec<crate::multipart::Part>>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db)?;
        let n = execute(&tx, "DELETE FROM multipart_uploads WHERE id = $1", &[&id]).await?;
        let rows = query(
            &tx,
            "DELETE FROM multipart_parts WHERE upload_id = $1 RETURNING doc",
            &[&id],
        )
        .await?;
        tx.commit().await.map_err(db)?;
        if n == 0 {
            return Ok(None);
        }
        let mut parts: Vec<crate::multipart::Part> = docs(&rows)?;
        parts.sort_by_key(|p| p.part_number);
        Ok(Some(parts))
    }

    async fn multipart_started_before(&self, before: chrono::DateTime<chrono::Utc>) -> StorageResult<Vec<String>> {
        let c = self.conn().await?;
        query(
            &c,
            "SELECT id FROM multipart_uploads WHERE initiated < $1 ORDER BY id",
            &[&before.timestamp_micros()],
        )
        .await?
        .iter()
        .map(|r| col(r, 0))
        .collect()
    }
}
