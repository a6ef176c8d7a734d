//! The metadata store: buckets, object generations and resumable sessions, behind a
//! trait, with SQLite as the embedded implementation. Each mutation is one transaction,
//! and preconditions are checked inside it, so concurrent writers cannot interleave.

use super::{ListQuery, MetaStore, MoveSpec, ReplaceCheck, RestoreSpec};
use crate::error::{StorageError, StorageResult};
use crate::model::{Bucket, InlineData, ObjectRecord, Preconditions, UploadSession};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

/// The SQLite implementation, synchronous; `MetaStore` runs it through
/// `blocking::scoped` so no runtime worker stalls.
trait SyncMeta {
    fn insert_bucket(&self, b: &Bucket) -> StorageResult<()>;
    fn get_bucket(&self, name: &str) -> StorageResult<Option<Bucket>>;
    fn list_buckets(
        &self,
        project: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Bucket>>;
    /// Replaces the bucket if its stored metageneration is `expected`.
    fn update_bucket(&self, b: &Bucket, expected: i64) -> StorageResult<()>;
    /// Deletes an empty bucket (no generation at all, live or not).
    /// Returns the soft-deleted generations that went with it (for their blobs); with
    /// soft delete on, the bucket itself becomes soft-deleted instead.
    fn delete_bucket(
        &self,
        name: &str,
        if_metageneration_match: Option<i64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Vec<ObjectRecord>>;
    /// The live object, or the given generation.
    fn get_object(&self, bucket: &str, name: &str, generation: Option<i64>) -> StorageResult<Option<ObjectRecord>>;
    fn list_objects(&self, q: &ListQuery) -> StorageResult<Vec<ObjectRecord>>;
    /// Makes `rec` the live generation if `pre` holds against the current live one. The
    /// previous live generation is kept as noncurrent (`keep_previous`) or removed and
    /// returned, so the caller can delete its blob.
    fn commit_object(
        &self,
        rec: &ObjectRecord,
        pre: &Preconditions,
        keep_previous: bool,
        check: ReplaceCheck,
    ) -> StorageResult<Option<ObjectRecord>>;
    /// Replaces an object's metadata if its metageneration is `expected`.
    fn update_object(&self, rec: &ObjectRecord, expected: i64) -> StorageResult<()>;
    /// Applies many such replacements in one transaction; each succeeds or fails alone.
    fn update_objects(&self, updates: Vec<(ObjectRecord, i64)>) -> StorageResult<Vec<StorageResult<()>>>;
    /// Removes the live object (or a generation) if `pre` holds, returning it. With
    /// `archive`, the live object becomes noncurrent as of `now` instead.
    #[allow(clippy::too_many_arguments)]
    fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        pre: &Preconditions,
        archive: bool,
        check: ReplaceCheck,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Option<ObjectRecord>>;
    fn get_soft_object(
        &self,
        bucket: &str,
        bucket_gen: i64,
        name: &str,
        generation: i64,
    ) -> StorageResult<Option<ObjectRecord>>;
    /// Makes a soft-deleted generation live again as `spec.new_generation`; returns it
    /// and the live generation it replaced, if that one was removed (for its blob).
    fn restore_object(
        &self,
        spec: &RestoreSpec,
        check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)>;
    /// Hard-deletes soft-deleted generations (at most `limit`) and buckets whose time
    /// has come; returns what went, for blobs and policies.
    #[allow(clippy::type_complexity)]
    fn take_hard_deletes(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StorageResult<(Vec<ObjectRecord>, Vec<(Bucket, Vec<ObjectRecord>)>)>;
    fn get_soft_bucket(&self, name: &str, generation: i64) -> StorageResult<Option<Bucket>>;
    fn list_soft_buckets(&self, project: &str, prefix: &str) -> StorageResult<Vec<Bucket>>;
    fn restore_bucket(&self, name: &str, generation: i64, now: chrono::DateTime<chrono::Utc>) -> StorageResult<Bucket>;
    /// How many generations of `name` are newer than `generation` (live included).
    fn newer_generations(&self, bucket: &str, name: &str, generation: i64) -> StorageResult<u64>;
    /// Every bucket that has lifecycle rules, by name.
    fn buckets_with_lifecycle(&self) -> StorageResult<Vec<Bucket>>;
    /// A background worker's persisted cursor (`None`: none saved).
    fn get_cursor(&self, worker: &str) -> StorageResult<Option<String>>;
    /// Saves (or with `None` clears) a background worker's cursor.
    fn put_cursor(&self, worker: &str, cursor: Option<&str>) -> StorageResult<()>;
    /// Renames a live object within its bucket in one transaction: the source row
    /// becomes the destination's new live generation, data and envelope unchanged.
    /// Returns the new record and the destination generation it replaced, if that one
    /// was removed (so the caller can delete its blob).
    fn move_object(
        &self,
        mv: &MoveSpec,
        src_check: ReplaceCheck,
        dst_check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)>;
    fn put_session(&self, s: &UploadSession) -> StorageResult<()>;
    fn get_session(&self, id: &str) -> StorageResult<Option<UploadSession>>;
    fn delete_session(&self, id: &str) -> StorageResult<()>;
    /// Resumable upload sessions not yet finished or cancelled.
    fn count_sessions(&self) -> StorageResult<u64>;
    /// Whether the store answers reads and commits writes (readiness).
    fn ping(&self) -> StorageResult<()>;
    /// Generations of `bucket` whose key column lies in `[lo, hi)`, after (name, generation).
    fn objects_by_key(
        &self,
        bucket: &str,
        lo: &str,
        hi: &str,
        after: Option<(String, i64)>,
        limit: usize,
    ) -> StorageResult<Vec<ObjectRecord>>;
    /// Every generation (in every bucket) whose DEK is wrapped by this exact key version.
    fn objects_with_key_version(&self, version: &str) -> StorageResult<Vec<ObjectRecord>>;
    /// Every blob id referenced by an object or a session, with its number of parts.
    fn blob_ids(&self) -> StorageResult<HashMap<String, usize>>;
    fn put_rekey_job(&self, job: &crate::rekey_job::RekeyJob) -> StorageResult<()>;
    fn get_rekey_job(&self, name: &str) -> StorageResult<Option<crate::rekey_job::RekeyJob>>;
    fn running_rekey_jobs(&self) -> StorageResult<Vec<crate::rekey_job::RekeyJob>>;
    fn max_generation(&self) -> StorageResult<i64>;
    /// XML API multipart uploads and their parts (`storage::multipart`).
    fn put_multipart(&self, u: &crate::multipart::MultipartUpload) -> StorageResult<()>;
    fn get_multipart(&self, id: &str) -> StorageResult<Option<crate::multipart::MultipartUpload>>;
    /// Uploads of a bucket by (name, id) after `after`, names starting with `prefix`.
    fn list_multipart(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> StorageResult<Vec<crate::multipart::MultipartUpload>>;
    /// Stores a part, returning the one it replaced. Fails if the upload is gone.
    fn put_part(&self, p: &crate::multipart::Part) -> StorageResult<Option<crate::multipart::Part>>;
    fn list_parts(&self, upload_id: &str, after: u32, limit: usize) -> StorageResult<Vec<crate::multipart::Part>>;
    /// Removes an upload and its parts, returning the parts (their blobs are the
    /// caller's to delete). `None` if there was no such upload.
    fn delete_multipart(&self, id: &str) -> StorageResult<Option<Vec<crate::multipart::Part>>>;
    /// Ids of uploads started before `before`.
    fn multipart_started_before(&self, before: chrono::DateTime<chrono::Utc>) -> StorageResult<Vec<String>>;
}

pub struct SqliteMetaStore {
    _checkpointer: sealstore_core::db::Checkpointer,
    writer: sealstore_core::db::GroupWriter,
    readers: sealstore_core::db::ReadPool,
    last_generation: AtomicI64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, project TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, name TEXT NOT NULL, generation INTEGER NOT NULL, live INTEGER NOT NULL,
    blob_id TEXT NOT NULL, key_version TEXT NOT NULL, doc TEXT NOT NULL, data BLOB,
    PRIMARY KEY (bucket, name, generation));
CREATE INDEX IF NOT EXISTS objects_live ON objects (bucket, live, name);
CREATE INDEX IF NOT EXISTS objects_key_version ON objects (key_version);
CREATE INDEX IF NOT EXISTS objects_bucket_key ON objects (bucket, key_version, name, generation);
CREATE TABLE IF NOT EXISTS rekey_jobs (name TEXT PRIMARY KEY, state TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS upload_sessions (id TEXT PRIMARY KEY, blob_id TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS worker_cursors (worker TEXT PRIMARY KEY, cursor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS multipart_uploads (id TEXT PRIMARY KEY, bucket TEXT NOT NULL, name TEXT NOT NULL,
    initiated INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS multipart_uploads_name ON multipart_uploads (bucket, name, id);
CREATE TABLE IF NOT EXISTS multipart_parts (upload_id TEXT NOT NULL, part_number INTEGER NOT NULL,
    blob_id TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (upload_id, part_number));
";

impl SqliteMetaStore {
    /// Opens the store on the database file: one group-commit writer and a few readers.
    pub fn open(path: &std::path::Path) -> StorageResult<Self> {
        let w = sealstore_core::db::open(path)?;
        w.execute_batch(SCHEMA)?;
        w.execute_batch(super::sqlite_soft::SCHEMA)?;
        add_data_column(&w)?;
        let checkpointer = sealstore_core::db::Checkpointer::start(path, &w)?;
        let writer = sealstore_core::db::GroupWriter::start(w, "meta").map_err(StorageError::internal)?;
        let readers = (0..4)
            .map(|_| sealstore_core::db::open(path))
            .collect::<Result<Vec<_>, _>>()?;
        let store = Self {
            _checkpointer: checkpointer,
            writer,
            readers: sealstore_core::db::ReadPool::new(readers),
            last_generation: AtomicI64::new(0),
        };
        let last = SyncMeta::max_generation(&store)?;
        store.last_generation.store(last, Ordering::SeqCst);
        Ok(store)
    }

    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.readers.get()
    }

    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StorageResult<R> + Send + 'static,
    ) -> StorageResult<R> {
        self.writer.run(f)
    }
}

impl From<sealstore_core::db::CommitError> for StorageError {
    fn from(e: sealstore_core::db::CommitError) -> Self {
        StorageError::Internal(format!("metadata store: {e}"))
    }
}

/// Databases created before inline objects existed lack the `data` column.
fn add_data_column(c: &Connection) -> StorageResult<()> {
    let has: bool = c
        .prepare("SELECT 1 FROM pragma_table_info('objects') WHERE name = 'data'")?
        .exists([])?;
    if !has {
        c.execute_batch("ALTER TABLE objects ADD COLUMN data BLOB")?;
    }
    Ok(())
}

/// Makes a live generation noncurrent as of `now`: the row stays, its document records
/// when (`timeDeleted`, which lifecycle's noncurrent conditions count from).
fn archive_row(tx: &Connection, old: &ObjectRecord, now: chrono::DateTime<chrono::Utc>) -> StorageResult<()> {
    let mut doc = old.clone();
    doc.envelope.inline_data = None;
    doc.time_deleted = Some(now);
    tx.prepare_cached("UPDATE objects SET live = 0, doc = ?4 WHERE bucket = ?1 AND name = ?2 AND generation = ?3")?
        .execute(params![
            old.bucket,
            old.name,
            old.generation,
            serde_json::to_string(&doc)?
        ])?;
    Ok(())
}

/// Takes the live generation `old` out of the way of a new one: kept as noncurrent on
/// a versioned bucket (`keep_previous`), else removed (soft-deleted when the bucket has
/// soft delete). Returns the removed record when its blob must go.
fn replace_live(
    c: &Connection,
    bucket: &Bucket,
    old: &ObjectRecord,
    keep_previous: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> StorageResult<Option<ObjectRecord>> {
    if keep_previous {
        archive_row(c, old, now)?;
        Ok(None)
    } else {
        super::sqlite_soft::remove_generation(c, bucket, old, now)
    }
}

/// The live generation's record, without inline data (what write transactions check).
fn live_of(tx: &Connection, bucket: &str, name: &str) -> StorageResult<Option<ObjectRecord>> {
    let doc: Option<String> = tx
        .prepare_cached("SELECT doc FROM objects WHERE bucket = ?1 AND name = ?2 AND live = 1")?
        .query_row(params![bucket, name], |r| r.get(0))
        .optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

/// A record with its inline data attached (for the soft-delete store).
pub(super) fn record_with_data(doc: String, data: Option<Vec<u8>>) -> StorageResult<ObjectRecord> {
    with_data(doc, data)
}

/// A record with its inline data attached, from a `SELECT doc, data` row.
fn with_data(doc: String, data: Option<Vec<u8>>) -> StorageResult<ObjectRecord> {
    let mut rec: ObjectRecord = serde_json::from_str(&doc)?;
    if rec.envelope.inline {
        rec.envelope.inline_data = data.map(|d| InlineData(bytes::Bytes::from(d)));
    }
    Ok(rec)
}

/// The indexed key column: the KMS version name, or `csek:<sha256>`.
fn key_column(rec: &ObjectRecord) -> String {
    rec.envelope
        .csek_sha256
        .as_ref()
        .map_or_else(|| rec.envelope.key_version.clone(), |s| format!("csek:{s}"))
}

fn insert_object(tx: &Connection, rec: &ObjectRecord, live: bool) -> StorageResult<()> {
    let data = match (&rec.envelope.inline, &rec.envelope.inline_data) {
        (false, _) => None,
        (true, Some(d)) => Some(&d.0[..]),
        (true, None) => return Err(StorageError::internal("an inline object without its data")),
    };
    tx.prepare_cached(
        "INSERT INTO objects (bucket, name, generation, live, blob_id, key_version, doc, data)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        rec.bucket,
        rec.name,
        rec.generation,
        live,
        rec.envelope.blob_id,
        key_column(rec),
        serde_json::to_string(rec)?,
        data
    ])?;
    Ok(())
}

/// Replaces a generation's document if its metageneration is still `expected`. The
/// generation may be soft-deleted (re-key jobs re-wrap those too).
fn update_row(c: &Connection, rec: &ObjectRecord, expected: i64) -> StorageResult<()> {
    let doc = serde_json::to_string(rec)?;
    let key = key_column(rec);
    let mut n = 0;
    for table in ["objects", "soft_objects"] {
        n = c
            .prepare_cached(&format!(
                "UPDATE {table} SET doc = ?4, key_version = ?6 WHERE bucket = ?1 AND name = ?2 AND generation = ?3
                   AND json_extract(doc, '$.metageneration') = ?5"
            ))?
            .execute(params![rec.bucket, rec.name, rec.generation, doc, expected, key])?;
        if n > 0 {
            break;
        }
    }
    if n == 0 {
        return Err(StorageError::ConcurrentChange(
            "The object's metadata changed concurrently (metageneration); retry the request.".into(),
        ));
    }
    Ok(())
}

fn not_found_object(bucket: &str, name: &str) -> StorageError {
    StorageError::NotFound(format!("No such object: {bucket}/{name}"))
}

fn bucket_doc(c: &Connection, name: &str) -> StorageResult<Option<Bucket>> {
    let doc: Option<String> = c
        .query_row("SELECT doc FROM buckets WHERE name = ?1", [name], |r| r.get(0))
        .optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

fn generation_doc(c: &Connection, bucket: &str, name: &str, generation: i64) -> StorageResult<Option<ObjectRecord>> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM objects WHERE bucket = ?1 AND name = ?2 AND generation = ?3")?
        .query_row(params![bucket, name, generation], |r| r.get(0))
        .optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

impl SyncMeta for SqliteMetaStore {
    fn insert_bucket(&self, b: &Bucket) -> StorageResult<()> {
        let b = b.clone();
        self.write(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO buckets (name, project, doc) VALUES (?1, ?2, ?3)",
                params![b.name, b.project, serde_json::to_string(&b)?],
            )?;
            if n == 0 {
                return Err(StorageError::Conflict(format!(
                    "Your previous request to create the named bucket succeeded and you already own it: {}",
                    b.name
                )));
            }
            Ok(())
        })
    }

    fn get_bucket(&self, name: &str) -> StorageResult<Option<Bucket>> {
        bucket_doc(&self.read(), name)
    }

    fn list_buckets(
        &self,
        project: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Bucket>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT doc FROM buckets WHERE project = ?1 AND name >= ?2 AND name > ?3 ORDER BY name LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![project, prefix, after.unwrap_or(""), limit as i64], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = vec![];
        for doc in rows {
            let b: Bucket = serde_json::from_str(&doc?)?;
            if !b.name.starts_with(prefix) {
                break;
            }
            out.push(b);
        }
        Ok(out)
    }

    fn update_bucket(&self, b: &Bucket, expected: i64) -> StorageResult<()> {
        let b = b.clone();
        self.write(move |c| {
            let current = bucket_doc(c, &b.name)?
                .ok_or_else(|| StorageError::NotFound(format!("The specified bucket does not exist: {}", b.name)))?;
            if current.metageneration != expected {
                return Err(StorageError::ConcurrentChange(
                    "At least one of the pre-conditions you specified did not hold (metageneration).".into(),
                ));
            }
            c.execute(
                "UPDATE buckets SET doc = ?2 WHERE name = ?1",
                params![b.name, serde_json::to_string(&b)?],
            )?;
            Ok(())
        })
    }

    fn delete_bucket(
        &self,
        name: &str,
        if_metageneration_match: Option<i64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Vec<ObjectRecord>> {
        let name = name.to_owned();
        self.write(move |c| {
            let b = bucket_doc(c, &name)?
                .ok_or_else(|| StorageError::NotFound(format!("The specified bucket does not exist: {name}")))?;
            if let Some(m) = if_metageneration_match
                && b.metageneration != m
            {
                return Err(StorageError::PreconditionFailed(
                    "At least one of the pre-conditions you specified did not hold (ifMetagenerationMatch).".into(),
                ));
            }
            let any: Option<i64> = c
                .query_row("SELECT 1 FROM objects WHERE bucket = ?1 LIMIT 1", [&name], |r| r.get(0))
                .optional()?;
            if any.is_some() {
                return Err(StorageError::Conflict(format!(
                    "The bucket you tried to delete is not empty: {name}"
                )));
            }
            super::sqlite_soft::delete_bucket(c, &b, now)
        })
    }

    fn get_object(&self, bucket: &str, name: &str, generation: Option<i64>) -> StorageResult<Option<ObjectRecord>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT doc, data FROM objects WHERE bucket = ?1 AND name = ?2
               AND (live = 1 AND ?3 IS NULL OR generation = ?3)",
        )?;
        let row: Option<(String, Option<Vec<u8>>)> = stmt
            .query_row(params![bucket, name, generation], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(doc, data)| with_data(doc, data)).transpose()
    }

    fn list_objects(&self, q: &ListQuery) -> StorageResult<Vec<ObjectRecord>> {
        let conn = self.read();
        if q.soft_deleted {
            return super::sqlite_soft::list(&conn, q);
        }
        let (after_name, after_gen) = q.after.clone().unwrap_or_default();
        let has_after = q.after.is_some();
        let sql = format!(
            "SELECT doc, live FROM objects WHERE bucket = ?1 {} AND name >= ?2
               AND (?3 = 0 OR name > ?4 OR (name = ?4 AND generation > ?5))
               AND (?6 IS NULL OR name < ?6)
             ORDER BY name, generation LIMIT ?7",
            if q.versions { "" } else { "AND live = 1" }
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                q.bucket,
                q.start,
                has_after,
                after_name,
                after_gen,
                q.end,
                q.limit as i64
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
        )?;
        let mut out = vec![];
        for row in rows {
            let (doc, live) = row?;
            let mut rec: ObjectRecord = serde_json::from_str(&doc)?;
            if !live && rec.time_deleted.is_none() {
                // Made noncurrent by a build that did not record when: its last update
                // is the closest time known.
                rec.time_deleted = Some(rec.updated);
            }
            out.push(rec);
        }
        Ok(out)
    }

    fn get_soft_object(
        &self,
        bucket: &str,
        bucket_gen: i64,
        name: &str,
        generation: i64,
    ) -> StorageResult<Option<ObjectRecord>> {
        super::sqlite_soft::get(&self.read(), bucket, bucket_gen, name, generation)
    }

    fn restore_object(
        &self,
        spec: &RestoreSpec,
        check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)> {
        let spec = spec.clone();
        self.write(move |c| {
            let bucket = bucket_doc(c, &spec.bucket)?.ok_or_else(|| {
                StorageError::NotFound(format!("The specified bucket does not exist: {}", spec.bucket))
            })?;
            let soft = super::sqlite_soft::get(c, &spec.bucket, bucket.generation(), &spec.name, spec.generation)?
                .ok_or_else(|| {
                    StorageError::NotFound(format!(
                        "No soft-deleted object {}/{} with generation {}.",
                        spec.bucket, spec.name, spec.generation
                    ))
                })?;
            let live = live_of(c, &spec.bucket, &spec.name)?;
            spec.pre
                .check(live.as_ref().map(|l| (l.generation, l.metageneration)), false)?;
            let replaced = match live {
                Some(old) => {
                    check(&old)?;
                    replace_live(c, &bucket, &old, bucket.versioning, spec.now)?
                }
                None => None,
            };
            let restored =
                super::sqlite_soft::restore_row(c, &soft, bucket.generation(), spec.new_generation, spec.now)?;
            Ok((restored, replaced))
        })
    }

    fn take_hard_deletes(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StorageResult<(Vec<ObjectRecord>, Vec<(Bucket, Vec<ObjectRecord>)>)> {
        self.write(move |c| {
            let objects = super::sqlite_soft::take_due(c, now, limit)?;
            let buckets = super::sqlite_soft::take_due_buckets(c, now)?;
            Ok((objects, buckets))
        })
    }

    fn get_soft_bucket(&self, name: &str, generation: i64) -> StorageResult<Option<Bucket>> {
        super::sqlite_soft::get_bucket(&self.read(), name, generation)
    }

    fn list_soft_buckets(&self, project: &str, prefix: &str) -> StorageResult<Vec<Bucket>> {
        super::sqlite_soft::list_buckets(&self.read(), project, prefix)
    }

    fn restore_bucket(&self, name: &str, generation: i64, now: chrono::DateTime<chrono::Utc>) -> StorageResult<Bucket> {
        let name = name.to_owned();
        self.write(move |c| super::sqlite_soft::restore_bucket(c, &name, generation, now))
    }

    fn newer_generations(&self, bucket: &str, name: &str, generation: i64) -> StorageResult<u64> {
        let n: i64 = self.read().query_row(
            "SELECT COUNT(*) FROM objects WHERE bucket = ?1 AND name = ?2 AND generation > ?3",
            params![bucket, name, generation],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn buckets_with_lifecycle(&self) -> StorageResult<Vec<Bucket>> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached("SELECT doc FROM buckets WHERE json_array_length(doc, '$.lifecycle') > 0 ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = vec![];
        for doc in rows {
            out.push(serde_json::from_str(&doc?)?);
        }
        Ok(out)
    }

    fn get_cursor(&self, worker: &str) -> StorageResult<Option<String>> {
        Ok(self
            .read()
            .query_row("SELECT cursor FROM worker_cursors WHERE worker = ?1", [worker], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn put_cursor(&self, worker: &str, cursor: Option<&str>) -> StorageResult<()> {
        let (worker, cursor) = (worker.to_owned(), cursor.map(str::to_owned));
        self.write(move |c| {
            match cursor {
                Some(v) => c.execute(
                    "INSERT INTO worker_cursors (worker, cursor) VALUES (?1, ?2)
                       ON CONFLICT(worker) DO UPDATE SET cursor = excluded.cursor",
                    params![worker, v],
                )?,
                None => c.execute("DELETE FROM worker_cursors WHERE worker = ?1", [&worker])?,
            };
            Ok(())
        })
    }

    fn commit_object(
        &self,
        rec: &ObjectRecord,
        pre: &Preconditions,
        keep_previous: bool,
        check: ReplaceCheck,
    ) -> StorageResult<Option<ObjectRecord>> {
        let (rec, pre) = (rec.clone(), *pre);
        self.write(move |c| {
            let Some(bucket) = bucket_doc(c, &rec.bucket)? else {
                return Err(StorageError::NotFound(format!(
                    "The specified bucket does not exist: {}",
                    rec.bucket
                )));
            };
            let live = live_of(c, &rec.bucket, &rec.name)?;
            pre.check(live.as_ref().map(|l| (l.generation, l.metageneration)), false)?;
            if let Some(l) = &live {
                check(l)?;
            }
            let replaced = match live {
                Some(old) => replace_live(c, &bucket, &old, keep_previous, rec.time_created)?,
                None => None,
            };
            insert_object(c, &rec, true)?;
            Ok(replaced)
        })
    }

    fn update_object(&self, rec: &ObjectRecord, expected: i64) -> StorageResult<()> {
        let rec = rec.clone();
        self.write(move |c| update_row(c, &rec, expected))
    }

    fn update_objects(&self, updates: Vec<(ObjectRecord, i64)>) -> StorageResult<Vec<StorageResult<()>>> {
        // Each row's own failed check is its result; a database error fails the whole
        // write, as on PostgreSQL (whose transaction would refuse the rest anyway).
        self.write(move |c| {
            let mut out = Vec::with_capacity(updates.len());
            for (rec, expected) in &updates {
                match update_row(c, rec, *expected) {
                    Err(StorageError::ConcurrentChange(m)) => out.push(Err(StorageError::ConcurrentChange(m))),
                    r => out.push(Ok(r?)),
                }
            }
            Ok(out)
        })
    }

    fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        pre: &Preconditions,
        archive: bool,
        check: ReplaceCheck,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Option<ObjectRecord>> {
        let (bucket, name, pre) = (bucket.to_owned(), name.to_owned(), *pre);
        self.write(move |c| {
            let target = match generation {
                None => live_of(c, &bucket, &name)?,
                Some(g) => generation_doc(c, &bucket, &name, g)?,
            };
            let Some(target) = target else {
                return Err(not_found_object(&bucket, &name));
            };
            pre.check(Some((target.generation, target.metageneration)), false)?;
            check(&target)?;
            if archive && generation.is_none() {
                archive_row(c, &target, now)?;
                return Ok(None);
            }
            let b = bucket_doc(c, &bucket)?.ok_or_else(|| not_found_object(&bucket, &name))?;
            super::sqlite_soft::remove_generation(c, &b, &target, now)
        })
    }

    fn move_object(
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
        let mv = mv.clone();
        self.write(move |c| {
            let Some(bucket) = bucket_doc(c, &mv.bucket)? else {
                return Err(StorageError::NotFound(format!(
                    "The specified bucket does not exist: {}",
                    mv.bucket
                )));
            };
            let src = live_of(c, &mv.bucket, &mv.src)?.ok_or_else(|| not_found_object(&mv.bucket, &mv.src))?;
            mv.src_pre.check(Some((src.generation, src.metageneration)), false)?;
            src_check(&src)?;
            let live = live_of(c, &mv.bucket, &mv.dst)?;
            mv.dst_pre
                .check(live.as_ref().map(|l| (l.generation, l.metageneration)), false)?;
            let replaced = match live {
                Some(old) => {
                    dst_check(&old)?;
                    replace_live(c, &bucket, &old, mv.keep_previous, mv.now)?
                }
                None => None,
            };
            let moved = src.moved_to(&mv.dst, mv.generation, mv.now);
            // The row itself moves, so an inline object's data column goes with it and
            // the key index (key_version) keeps pointing at the data.
            c.prepare_cached(
                "UPDATE objects SET name = ?4, generation = ?5, live = 1, doc = ?6
                   WHERE bucket = ?1 AND name = ?2 AND generation = ?3",
            )?
            .execute(params![
                src.bucket,
                src.name,
                src.generation,
                moved.name,
                moved.generation,
                serde_json::to_string(&moved)?
            ])?;
            Ok((moved, replaced))
        })
    }

    fn put_session(&self, s: &UploadSession) -> StorageResult<()> {
        let s = s.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO upload_sessions (id, blob_id, doc) VALUES (?1, ?2, ?3)
                   ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                params![s.id, s.envelope.blob_id, serde_json::to_string(&s)?],
            )?;
            Ok(())
        })
    }

    fn get_session(&self, id: &str) -> StorageResult<Option<UploadSession>> {
        let doc: Option<String> = self
            .read()
            .query_row("SELECT doc FROM upload_sessions WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
    }

    fn count_sessions(&self) -> StorageResult<u64> {
        let n: i64 = self
            .read()
            .query_row("SELECT COUNT(*) FROM upload_sessions", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn ping(&self) -> StorageResult<()> {
        self.read().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(self.writer.ping()?)
    }

    fn delete_session(&self, id: &str) -> StorageResult<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute("DELETE FROM upload_sessions WHERE id = ?1", [&id])?;
            Ok(())
        })
    }

    fn objects_by_key(
        &self,
        bucket: &str,
        lo: &str,
        hi: &str,
        after: Option<(String, i64)>,
        limit: usize,
    ) -> StorageResult<Vec<ObjectRecord>> {
        let conn = self.read();
        let (an, ag) = after.clone().unwrap_or_default();
        let mut stmt = conn.prepare_cached(
            "SELECT doc, name, generation FROM objects WHERE bucket = ?1 AND key_version >= ?2 AND key_version < ?3
               AND (?4 = 0 OR name > ?5 OR (name = ?5 AND generation > ?6))
             UNION ALL
             SELECT doc, name, generation FROM soft_objects WHERE bucket = ?1 AND key_version >= ?2 AND key_version < ?3
               AND (?4 = 0 OR name > ?5 OR (name = ?5 AND generation > ?6))
             ORDER BY name, generation LIMIT ?7",
        )?;
        let rows = stmt.query_map(params![bucket, lo, hi, after.is_some(), an, ag, limit as i64], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = vec![];
        for doc in rows {
            out.push(serde_json::from_str(&doc?)?);
        }
        Ok(out)
    }

    fn objects_with_key_version(&self, version: &str) -> StorageResult<Vec<ObjectRecord>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT doc FROM objects WHERE key_version = ?1")?;
        let rows = stmt.query_map([version], |r| r.get::<_, String>(0))?;
        let mut out = vec![];
        for doc in rows {
            out.push(serde_json::from_str(&doc?)?);
        }
        Ok(out)
    }

    fn put_rekey_job(&self, job: &crate::rekey_job::RekeyJob) -> StorageResult<()> {
        let job = job.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO rekey_jobs (name, state, doc) VALUES (?1, ?2, ?3)
                   ON CONFLICT(name) DO UPDATE SET state = excluded.state, doc = excluded.doc",
                params![job.name, format!("{:?}", job.state), serde_json::to_string(&job)?],
            )?;
            Ok(())
        })
    }

    fn get_rekey_job(&self, name: &str) -> StorageResult<Option<crate::rekey_job::RekeyJob>> {
        let doc: Option<String> = self
            .read()
            .query_row("SELECT doc FROM rekey_jobs WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
    }

    fn running_rekey_jobs(&self) -> StorageResult<Vec<crate::rekey_job::RekeyJob>> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT doc FROM rekey_jobs WHERE state = 'Running'")?;
        let mut out = vec![];
        for doc in stmt.query_map([], |r| r.get::<_, String>(0))? {
            out.push(serde_json::from_str(&doc?)?);
        }
        Ok(out)
    }

    fn blob_ids(&self) -> StorageResult<HashMap<String, usize>> {
        let conn = self.read();
        let mut out = HashMap::new();
        for sql in [
            "SELECT blob_id, json_array_length(doc, '$.envelope.parts') FROM objects",
            "SELECT blob_id, json_array_length(doc, '$.envelope.parts') FROM upload_sessions",
            "SELECT blob_id, json_array_length(doc, '$.envelope.parts') FROM soft_objects",
            "SELECT blob_id, json_array_length(doc, '$.envelope.parts') FROM multipart_parts",
        ] {
            let mut stmt = conn.prepare(sql)?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))? {
                let (id, parts) = row?;
                let parts = usize::try_from(parts.unwrap_or(0)).unwrap_or(0);
                let n = out.entry(id).or_insert(0);
                *n = parts.max(*n);
            }
        }
        Ok(out)
    }

    fn put_multipart(&self, u: &crate::multipart::MultipartUpload) -> StorageResult<()> {
        let u = u.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO multipart_uploads (id, bucket, name, initiated, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    u.id,
                    u.bucket,
                    u.name,
                    u.initiated.timestamp_micros(),
                    serde_json::to_string(&u)?
                ],
            )?;
            Ok(())
        })
    }

    fn get_multipart(&self, id: &str) -> StorageResult<Option<crate::multipart::MultipartUpload>> {
        let doc: Option<String> = self
            .read()
            .query_row("SELECT doc FROM multipart_uploads WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
    }

    fn list_multipart(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> StorageResult<Vec<crate::multipart::MultipartUpload>> {
        let conn = self.read();
        let (an, ai) = after.unwrap_or_default();
        let mut stmt = conn.prepare(
            "SELECT doc FROM multipart_uploads WHERE bucket = ?1 AND name >= ?2 AND (name > ?3 OR (name = ?3 AND id > ?4))
               ORDER BY name, id LIMIT ?5",
        )?;
        let rows = stmt.query_map(params![bucket, prefix, an, ai, limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = vec![];
        for doc in rows {
            let u: crate::multipart::MultipartUpload = serde_json::from_str(&doc?)?;
            if !u.name.starts_with(prefix) {
                break;
            }
            out.push(u);
        }
        Ok(out)
    }

    fn put_part(&self, p: &crate::multipart::Part) -> StorageResult<Option<crate::multipart::Part>> {
        let p = p.clone();
        self.write(move |c| {
            let exists: Option<i64> = c
                .query_row("SELECT 1 FROM multipart_uploads WHERE id = ?1", [&p.upload_id], |r| {
                    r.get(0)
                })
                .optional()?;
            if exists.is_none() {
                return Err(StorageError::Gone(format!(
                    "The specified multipart upload does not exist: {}",
                    p.upload_id
                )));
            }
            let old: Option<String> = c
                .query_row(
                    "SELECT doc FROM multipart_parts WHERE upload_id = ?1 AND part_number = ?2",
                    params![p.upload_id, p.part_number],
                    |r| r.get(0),
                )
                .optional()?;
            c.execute(
                "INSERT INTO multipart_parts (upload_id, part_number, blob_id, doc) VALUES (?1, ?2, ?3, ?4)
                   ON CONFLICT(upload_id, part_number) DO UPDATE SET blob_id = excluded.blob_id, doc = excluded.doc",
                params![
                    p.upload_id,
                    p.part_number,
                    p.envelope.blob_id,
                    serde_json::to_string(&p)?
                ],
            )?;
            Ok(old.map(|d| serde_json::from_str(&d)).transpose()?)
        })
    }

    fn list_parts(&self, upload_id: &str, after: u32, limit: usize) -> StorageResult<Vec<crate::multipart::Part>> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT doc FROM multipart_parts WHERE upload_id = ?1 AND part_number > ?2 ORDER BY part_number LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![upload_id, after, limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = vec![];
        for doc in rows {
            out.push(serde_json::from_str(&doc?)?);
        }
        Ok(out)
    }

    fn delete_multipart(&self, id: &str) -> StorageResult<Option<Vec<crate::multipart::Part>>> {
        let id = id.to_owned();
        self.write(move |c| {
            let n = c.execute("DELETE FROM multipart_uploads WHERE id = ?1", [&id])?;
            let mut stmt = c.prepare("SELECT doc FROM multipart_parts WHERE upload_id = ?1")?;
            let docs: Vec<String> = stmt
                .query_map([&id], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            c.execute("DELETE FROM multipart_parts WHERE upload_id = ?1", [&id])?;
            if n == 0 {
                return Ok(None);
            }
            let parts = docs
                .iter()
                .map(|d| serde_json::from_str(d))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(parts))
        })
    }

    fn multipart_started_before(&self, before: chrono::DateTime<chrono::Utc>) -> StorageResult<Vec<String>> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT id FROM multipart_uploads WHERE initiated < ?1")?;
        let rows = stmt.query_map([before.timestamp_micros()], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn max_generation(&self) -> StorageResult<i64> {
        Ok(self
            .read()
            .query_row(
                "SELECT MAX(COALESCE((SELECT MAX(generation) FROM objects), 0), COALESCE((SELECT MAX(generation) FROM soft_objects), 0))",
                [],
                |r| r.get(0),
            )?)
    }
}

#[async_trait::async_trait]
impl MetaStore for SqliteMetaStore {
    async fn insert_bucket(&self, b: &Bucket) -> StorageResult<()> {
        sealstore_core::blocking::scoped(|| SyncMeta::insert_bucket(self, b))
    }

    async fn get_bucket(&self, name: &str) -> StorageResult<Option<Bucket>> {
        sealstore_core::blocking::scoped(|| SyncMeta::get_bucket(self, name))
    }

    async fn list_buckets(
        &self,
        project: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Bucket>> {
        sealstore_core::blocking::scoped(|| SyncMeta::list_buckets(self, project, prefix, after, limit))
    }

    async fn update_bucket(&self, b: &Bucket, expected: i64) -> StorageResult<()> {
        sealstore_core::blocking::scoped(|| SyncMeta::update_bucket(self, b, expected))
    }

    async fn delete_bucket(
        &self,
        name: &str,
        if_metageneration_match: Option<i64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Vec<ObjectRecord>> {
        sealstore_core::blocking::scoped(|| SyncMeta::delete_bucket(self, name, if_metageneration_match, now))
    }

    async fn get_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
    ) -> StorageResult<Option<ObjectRecord>> {
        sealstore_core::blocking::scoped(|| SyncMeta::get_object(self, bucket, name, generation))
    }

    async fn list_objects(&self, q: &ListQuery) -> StorageResult<Vec<ObjectRecord>> {
        sealstore_core::blocking::scoped(|| SyncMeta::list_objects(self, q))
    }

    async fn commit_object(
        &self,
        rec: &ObjectRecord,
        pre: &Preconditions,
        keep_previous: bool,
        check: ReplaceCheck,
    ) -> StorageResult<Option<ObjectRecord>> {
        sealstore_core::blocking::scoped(|| SyncMeta::commit_object(self, rec, pre, keep_previous, check))
    }

    async fn update_object(&self, rec: &ObjectRecord, expected: i64) -> StorageResult<()> {
        sealstore_core::blocking::scoped(|| SyncMeta::update_object(self, rec, expected))
    }

    async fn update_objects(&self, updates: Vec<(ObjectRecord, i64)>) -> StorageResult<Vec<StorageResult<()>>> {
        sealstore_core::blocking::scoped(|| SyncMeta::update_objects(self, updates))
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
        sealstore_core::blocking::scoped(|| {
            SyncMeta::delete_object(self, bucket, name, generation, pre, archive, check, now)
        })
    }

    async fn get_soft_object(
        &self,
        bucket: &str,
        bucket_gen: i64,
        name: &str,
        generation: i64,
    ) -> StorageResult<Option<ObjectRecord>> {
        sealstore_core::blocking::scoped(|| SyncMeta::get_soft_object(self, bucket, bucket_gen, name, generation))
    }

    async fn restore_object(
        &self,
        spec: &RestoreSpec,
        check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)> {
        sealstore_core::blocking::scoped(|| SyncMeta::restore_object(self, spec, check))
    }

    async fn take_hard_deletes(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StorageResult<(Vec<ObjectRecord>, Vec<(Bucket, Vec<ObjectRecord>)>)> {
        sealstore_core::blocking::scoped(|| SyncMeta::take_hard_deletes(self, now, limit))
    }

    async fn get_soft_bucket(&self, name: &str, generation: i64) -> StorageResult<Option<Bucket>> {
        sealstore_core::blocking::scoped(|| SyncMeta::get_soft_bucket(self, name, generation))
    }

    async fn list_soft_buckets(&self, project: &str, prefix: &str) -> StorageResult<Vec<Bucket>> {
        sealstore_core::blocking::scoped(|| SyncMeta::list_soft_buckets(self, project, prefix))
    }

    async fn restore_bucket(
        &self,
        name: &str,
        generation: i64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Bucket> {
        sealstore_core::blocking::scoped(|| SyncMeta::restore_bucket(self, name, generation, now))
    }

    async fn newer_generations(&self, bucket: &str, name: &str, generation: i64) -> StorageResult<u64> {
        sealstore_core::blocking::scoped(|| SyncMeta::newer_generations(self, bucket, name, generation))
    }

    async fn buckets_with_lifecycle(&self) -> StorageResult<Vec<Bucket>> {
        sealstore_core::blocking::scoped(|| SyncMeta::buckets_with_lifecycle(self))
    }

    async fn get_cursor(&self, worker: &str) -> StorageResult<Option<String>> {
        sealstore_core::blocking::scoped(|| SyncMeta::get_cursor(self, worker))
    }

    async fn put_cursor(&self, worker: &str, cursor: Option<&str>) -> StorageResult<()> {
        sealstore_core::blocking::scoped(|| SyncMeta::put_cursor(self, worker, cursor))
    }

    async fn move_object(
        &self,
        mv: &MoveSpec,
        src_check: ReplaceCheck,
        dst_check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)> {
        sealstore_core::blocking::scoped(|| SyncMeta::move_object(self, mv, src_check, dst_check))
    }

    async fn put_session(&self, s: &UploadSession) -> StorageResult<()> {
        sealstore_core::blocking::scoped(|| SyncMeta::put_session(self, s))
    }

    async fn get_session(&self, id: &str) -> StorageResult<Option<UploadSession>> {
        sealstore_core::blocking::scoped(|| SyncMeta::get_session(self, id))
    }

    async fn delete_session(&self, id: &str) -> StorageResult<()> {
        sealstore_core::blocking::scoped(|| SyncMeta::delete_session(self, id))
    }

    async fn count_sessions(&self) -> StorageResult<u64> {
        sealstore_core::blocking::scoped(|| SyncMeta::count_sessions(self))
    }

    async fn ping(&self) -> StorageResult<()> {
        sealstore_core::blocking::scoped(|| SyncMeta::ping(self))
    }

    async fn objects_by_key(
        &self,
        bucket: &str,
        lo: &str,
        hi: &str,
        after: Option<(String, i64)>,
        limit: usize,
    ) -> StorageResult<Vec<ObjectRecord>> {
        sealstore_core::blocking::scoped(|| SyncMeta::objects_by_key(self, bucket, lo, hi, after, limit))
    }

    async fn objects_with_key_version(&self, version: &str) -> StorageResult<Vec<ObjectRecord>> {
        sealstore_core::blocking::scoped(|| SyncMeta::objects_with_key_version(self, version))
    }

    async fn blob_ids(&self) -> StorageResult<HashMap<String, usize>> {
        sealstore_core::blocking::scoped(|| SyncMeta::blob_ids(self))
    }

    async fn put_rekey_job(&self, job: &crate::rekey_job::RekeyJob) -> StorageResult<()> {
        sealstore_core::blocking::scoped(|| SyncMeta::put_rekey_job(self, job))
    }

    async fn get_rekey_job(&self, name: &str) -> StorageResult<Option<crate::rekey_job::RekeyJob>> {
        sealstore_core::blocking::scoped(|| SyncMeta::get_rekey_job(self, name))
    }

    async fn running_rekey_jobs(&self) -> StorageResult<Vec<crate::rekey_job::RekeyJob>> {
        sealstore_core::blocking::scoped(|| SyncMeta::running_rekey_jobs(self))
    }

    async fn put_multipart(&self, u: &crate::multipart::MultipartUpload) -> StorageResult<()> {
        sealstore_core::blocking::scoped(|| SyncMeta::put_multipart(self, u))
    }

    async fn get_multipart(&self, id: &str) -> StorageResult<Option<crate::multipart::MultipartUpload>> {
        sealstore_core::blocking::scoped(|| SyncMeta::get_multipart(self, id))
    }

    async fn list_multipart(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> StorageResult<Vec<crate::multipart::MultipartUpload>> {
        sealstore_core::blocking::scoped(|| SyncMeta::list_multipart(self, bucket, prefix, after, limit))
    }

    async fn put_part(&self, p: &crate::multipart::Part) -> StorageResult<Option<crate::multipart::Part>> {
        sealstore_core::blocking::scoped(|| SyncMeta::put_part(self, p))
    }

    async fn list_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> StorageResult<Vec<crate::multipart::Part>> {
        sealstore_core::blocking::scoped(|| SyncMeta::list_parts(self, upload_id, after, limit))
    }

    async fn delete_multipart(&self, id: &str) -> StorageResult<Option<Vec<crate::multipart::Part>>> {
        sealstore_core::blocking::scoped(|| SyncMeta::delete_multipart(self, id))
    }

    async fn multipart_started_before(&self, before: chrono::DateTime<chrono::Utc>) -> StorageResult<Vec<String>> {
        sealstore_core::blocking::scoped(|| SyncMeta::multipart_started_before(self, before))
    }

    async fn next_generation(&self, now_micros: i64) -> StorageResult<i64> {
        // One process owns a SQLite store, so an atomic seeded from the database at
        // open is enough: no query per write.
        let mut prev = self.last_generation.load(Ordering::SeqCst);
        loop {
            let next = now_micros.max(
                prev.checked_add(1)
                    .ok_or_else(|| StorageError::internal("generation overflow"))?,
            );
            match self
                .last_generation
                .compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(next),
                Err(p) => prev = p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before inline objects existed gains the `data` column, and
    /// its rows stay readable.
    #[test]
    fn old_databases_gain_the_inline_data_column() {
        let dir = std::env::temp_dir().join(format!("sealstore-meta-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        let c = sealstore_core::db::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE objects (bucket TEXT NOT NULL, name TEXT NOT NULL, generation INTEGER NOT NULL,
               live INTEGER NOT NULL, blob_id TEXT NOT NULL, key_version TEXT NOT NULL, doc TEXT NOT NULL,
               PRIMARY KEY (bucket, name, generation));",
        )
        .unwrap();
        drop(c);
        let store = SqliteMetaStore::open(&path).unwrap();
        assert!(SyncMeta::get_object(&store, "b", "o", None).unwrap().is_none());
        let has: bool = store
            .read()
            .prepare("SELECT 1 FROM pragma_table_info('objects') WHERE name = 'data'")
            .unwrap()
            .exists([])
            .unwrap();
        assert!(has);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
