//! Soft delete in the SQLite metadata store. A soft-deleted generation leaves the
//! `objects` table for `soft_objects`, so no query of live or noncurrent data has to
//! know about it; its blob stays until its hard-delete time. A soft-deleted bucket
//! moves to `soft_buckets`. Rows are tied to the bucket *incarnation* (its generation,
//! the creation time in microseconds), so a new bucket of the same name never sees an
//! older one's soft-deleted objects.

use crate::error::{StorageError, StorageResult};
use crate::model::{Bucket, ObjectRecord};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS soft_objects (
    bucket TEXT NOT NULL, bucket_gen INTEGER NOT NULL, name TEXT NOT NULL, generation INTEGER NOT NULL,
    hard_delete_at INTEGER NOT NULL, blob_id TEXT NOT NULL, key_version TEXT NOT NULL, doc TEXT NOT NULL, data BLOB,
    PRIMARY KEY (bucket, bucket_gen, name, generation));
CREATE INDEX IF NOT EXISTS soft_objects_due ON soft_objects (hard_delete_at);
CREATE INDEX IF NOT EXISTS soft_objects_key ON soft_objects (bucket, key_version, name, generation);
CREATE TABLE IF NOT EXISTS soft_buckets (
    name TEXT NOT NULL, generation INTEGER NOT NULL, project TEXT NOT NULL, hard_delete_at INTEGER NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (name, generation));
CREATE INDEX IF NOT EXISTS soft_buckets_due ON soft_buckets (hard_delete_at);
";

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The soft-delete duration of `bucket` in seconds, if soft delete is on.
fn retention(bucket: &Bucket) -> Option<i64> {
    bucket
        .soft_delete_policy
        .as_ref()
        .map(|p| p.retention_duration_seconds)
        .filter(|s| *s > 0)
}

/// Takes generation `old` out of the live table as of `now`: with the bucket's soft
/// delete on it moves to `soft_objects` (its blob stays, so `None`); otherwise the row
/// is deleted and returned so the caller can delete its blob.
pub fn remove_generation(
    c: &Connection,
    bucket: &Bucket,
    old: &ObjectRecord,
    now: DateTime<Utc>,
) -> StorageResult<Option<ObjectRecord>> {
    if let Some(secs) = retention(bucket) {
        let hard = now
            .checked_add_signed(chrono::TimeDelta::seconds(secs))
            .ok_or_else(|| StorageError::internal("soft delete time overflow"))?;
        let mut doc = old.clone();
        doc.envelope.inline_data = None;
        doc.soft_delete_time = Some(now);
        doc.hard_delete_time = Some(hard);
        c.prepare_cached(
            "INSERT OR REPLACE INTO soft_objects (bucket, bucket_gen, name, generation, hard_delete_at, blob_id, key_version, doc, data)
               SELECT bucket, ?4, name, generation, ?5, blob_id, key_version, ?6, data FROM objects
               WHERE bucket = ?1 AND name = ?2 AND generation = ?3",
        )?
        .execute(params![
            old.bucket,
            old.name,
            old.generation,
            bucket.generation(),
            ms(hard),
            serde_json::to_string(&doc)?
        ])?;
    }
    c.prepare_cached("DELETE FROM objects WHERE bucket = ?1 AND name = ?2 AND generation = ?3")?
        .execute(params![old.bucket, old.name, old.generation])?;
    // A soft-deleted generation keeps its blob; a removed one's blob goes next.
    Ok(retention(bucket).is_none().then(|| old.clone()))
}

/// A soft-deleted generation of the bucket incarnation `bucket_gen`, with its data.
pub fn get(
    c: &Connection,
    bucket: &str,
    bucket_gen: i64,
    name: &str,
    generation: i64,
) -> StorageResult<Option<ObjectRecord>> {
    let row: Option<(String, Option<Vec<u8>>)> = c
        .prepare_cached(
            "SELECT doc, data FROM soft_objects WHERE bucket = ?1 AND bucket_gen = ?2 AND name = ?3 AND generation = ?4",
        )?
        .query_row(params![bucket, bucket_gen, name, generation], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(doc, data)| super::sqlite::record_with_data(doc, data))
        .transpose()
}

/// One page of soft-deleted generations in (name, generation) order.
pub fn list(c: &Connection, q: &super::ListQuery) -> StorageResult<Vec<ObjectRecord>> {
    let (after_name, after_gen) = q.after.clone().unwrap_or_default();
    let mut stmt = c.prepare_cached(
        "SELECT doc FROM soft_objects WHERE bucket = ?1 AND bucket_gen = ?8 AND name >= ?2
           AND (?3 = 0 OR name > ?4 OR (name = ?4 AND generation > ?5))
           AND (?6 IS NULL OR name < ?6)
         ORDER BY name, generation LIMIT ?7",
    )?;
    let rows = stmt.query_map(
        params![
            q.bucket,
            q.start,
            q.after.is_some(),
            after_name,
            after_gen,
            q.end,
            q.limit as i64,
            q.bucket_gen
        ],
        |r| r.get::<_, String>(0),
    )?;
    let mut out = vec![];
    for doc in rows {
        out.push(serde_json::from_str(&doc?)?);
    }
    Ok(out)
}

/// Moves a soft-deleted generation back as the live generation `new_generation`. The
/// caller has dealt with the current live one.
pub fn restore_row(
    c: &Connection,
    soft: &ObjectRecord,
    bucket_gen: i64,
    new_generation: i64,
    now: DateTime<Utc>,
) -> StorageResult<ObjectRecord> {
    let mut rec = soft.clone();
    rec.envelope.inline_data = None;
    rec.generation = new_generation;
    rec.metageneration = 1;
    rec.time_created = now;
    rec.updated = now;
    rec.soft_delete_time = None;
    rec.hard_delete_time = None;
    rec.time_deleted = None;
    rec.retention_base = None;
    rec.temporary_hold = false;
    c.prepare_cached(
        "INSERT INTO objects (bucket, name, generation, live, blob_id, key_version, doc, data)
           SELECT bucket, name, ?5, 1, blob_id, key_version, ?6, data FROM soft_objects
           WHERE bucket = ?1 AND bucket_gen = ?2 AND name = ?3 AND generation = ?4",
    )?
    .execute(params![
        soft.bucket,
        bucket_gen,
        soft.name,
        soft.generation,
        new_generation,
        serde_json::to_string(&rec)?
    ])?;
    c.prepare_cached(
        "DELETE FROM soft_objects WHERE bucket = ?1 AND bucket_gen = ?2 AND name = ?3 AND generation = ?4",
    )?
    .execute(params![soft.bucket, bucket_gen, soft.name, soft.generation])?;
    Ok(rec)
}

/// Deletes up to `limit` soft-deleted generations whose hard-delete time has come, and
/// returns them (their blobs go next).
pub fn take_due(c: &Connection, now: DateTime<Utc>, limit: usize) -> StorageResult<Vec<ObjectRecord>> {
    let mut stmt = c.prepare_cached(
        "SELECT bucket, bucket_gen, name, generation, doc FROM soft_objects WHERE hard_delete_at <= ?1
         ORDER BY hard_delete_at LIMIT ?2",
    )?;
    let rows: Vec<(String, i64, String, i64, String)> = stmt
        .query_map(params![ms(now), limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (b, bg, n, g, doc) in rows {
        c.prepare_cached(
            "DELETE FROM soft_objects WHERE bucket = ?1 AND bucket_gen = ?2 AND name = ?3 AND generation = ?4",
        )?
        .execute(params![b, bg, n, g])?;
        out.push(serde_json::from_str(&doc)?);
    }
    Ok(out)
}

/// Every soft-deleted generation of one bucket incarnation, removed (a bucket hard delete).
pub fn take_bucket(c: &Connection, bucket: &str, bucket_gen: i64) -> StorageResult<Vec<ObjectRecord>> {
    let docs: Vec<String> = c
        .prepare_cached("SELECT doc FROM soft_objects WHERE bucket = ?1 AND bucket_gen = ?2")?
        .query_map(params![bucket, bucket_gen], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    c.prepare_cached("DELETE FROM soft_objects WHERE bucket = ?1 AND bucket_gen = ?2")?
        .execute(params![bucket, bucket_gen])?;
    docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
}

/// Deletes `b` (already checked empty of live and noncurrent data). With soft delete on
/// it becomes a soft-deleted bucket kept until the later of its own hard-delete time and
/// its last soft-deleted object's; otherwise its soft-deleted objects go with it and are
/// returned for their blobs.
pub fn delete_bucket(c: &Connection, b: &Bucket, now: DateTime<Utc>) -> StorageResult<Vec<ObjectRecord>> {
    c.execute("DELETE FROM buckets WHERE name = ?1", [&b.name])?;
    let Some(secs) = retention(b) else {
        return take_bucket(c, &b.name, b.generation());
    };
    let own = now
        .checked_add_signed(chrono::TimeDelta::seconds(secs))
        .ok_or_else(|| StorageError::internal("soft delete time overflow"))?;
    let last: Option<i64> = c.query_row(
        "SELECT MAX(hard_delete_at) FROM soft_objects WHERE bucket = ?1 AND bucket_gen = ?2",
        params![b.name, b.generation()],
        |r| r.get(0),
    )?;
    let hard = match last.and_then(DateTime::from_timestamp_millis) {
        Some(t) if t > own => t,
        _ => own,
    };
    let mut doc = b.clone();
    doc.soft_delete_time = Some(now);
    doc.hard_delete_time = Some(hard);
    c.execute(
        "INSERT OR REPLACE INTO soft_buckets (name, generation, project, hard_delete_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![b.name, b.generation(), b.project, ms(hard), serde_json::to_string(&doc)?],
    )?;
    Ok(vec![])
}

pub fn get_bucket(c: &Connection, name: &str, generation: i64) -> StorageResult<Option<Bucket>> {
    let doc: Option<String> = c
        .query_row(
            "SELECT doc FROM soft_buckets WHERE name = ?1 AND generation = ?2",
            params![name, generation],
            |r| r.get(0),
        )
        .optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

pub fn list_buckets(c: &Connection, project: &str, prefix: &str) -> StorageResult<Vec<Bucket>> {
    let docs: Vec<String> = c
        .prepare_cached("SELECT doc FROM soft_buckets WHERE project = ?1 AND name >= ?2 ORDER BY name, generation")?
        .query_map(params![project, prefix], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = vec![];
    for d in docs {
        let b: Bucket = serde_json::from_str(&d)?;
        if !b.name.starts_with(prefix) {
            break;
        }
        out.push(b);
    }
    Ok(out)
}

/// Brings a soft-deleted bucket back (its soft-deleted objects were never moved away
/// from its incarnation, so they come back with it).
pub fn restore_bucket(c: &Connection, name: &str, generation: i64, now: DateTime<Utc>) -> StorageResult<Bucket> {
    let Some(mut b) = get_bucket(c, name, generation)? else {
        return Err(StorageError::NotFound(format!(
            "No soft-deleted bucket {name} with generation {generation}."
        )));
    };
    let live: Option<i64> = c
        .query_row("SELECT 1 FROM buckets WHERE name = ?1", [name], |r| r.get(0))
        .optional()?;
    if live.is_some() {
        return Err(StorageError::Conflict(format!(
            "A live bucket named {name} exists: a soft-deleted bucket can only be restored while its name is free."
        )));
    }
    b.soft_delete_time = None;
    b.hard_delete_time = None;
    b.updated = now;
    b.metageneration = b
        .metageneration
        .checked_add(1)
        .ok_or_else(|| StorageError::internal("bucket metageneration overflow"))?;
    c.execute(
        "INSERT INTO buckets (name, project, doc) VALUES (?1, ?2, ?3)",
        params![b.name, b.project, serde_json::to_string(&b)?],
    )?;
    c.execute(
        "DELETE FROM soft_buckets WHERE name = ?1 AND generation = ?2",
        params![name, generation],
    )?;
    Ok(b)
}

/// Soft-deleted buckets whose hard-delete time has come, removed with what is left of
/// their soft-deleted objects.
pub fn take_due_buckets(c: &Connection, now: DateTime<Utc>) -> StorageResult<Vec<(Bucket, Vec<ObjectRecord>)>> {
    let docs: Vec<String> = c
        .prepare_cached("SELECT doc FROM soft_buckets WHERE hard_delete_at <= ?1")?
        .query_map([ms(now)], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = vec![];
    for d in docs {
        let b: Bucket = serde_json::from_str(&d)?;
        c.execute(
            "DELETE FROM soft_buckets WHERE name = ?1 AND generation = ?2",
            params![b.name, b.generation()],
        )?;
        let objects = take_bucket(c, &b.name, b.generation())?;
        out.push((b, objects));
    }
    Ok(out)
}
