//! Soft delete in the PostgreSQL metadata store: the same tables and rules as
//! `sqlite_soft.rs` (soft-deleted generations in `soft_objects`, buckets in
//! `soft_buckets`, both tied to the bucket incarnation). Every function runs inside the
//! caller's transaction.

use super::postgres::{col, docs, execute, limit, query, query_opt, with_data};
use crate::error::{StorageError, StorageResult};
use crate::model::{Bucket, ObjectRecord};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

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

fn hard_delete_time(now: DateTime<Utc>, secs: i64) -> StorageResult<DateTime<Utc>> {
    now.checked_add_signed(chrono::TimeDelta::seconds(secs))
        .ok_or_else(|| StorageError::internal("soft delete time overflow"))
}

/// Takes generation `old` out of `objects` as of `now`: with the bucket's soft delete on
/// it moves to `soft_objects` (its blob stays, so `None`); otherwise the row is deleted
/// and returned so the caller can delete its blob.
pub async fn remove_generation<C: GenericClient>(
    c: &C,
    bucket: &Bucket,
    old: &ObjectRecord,
    now: DateTime<Utc>,
) -> StorageResult<Option<ObjectRecord>> {
    let secs = retention(bucket);
    if let Some(secs) = secs {
        let hard = hard_delete_time(now, secs)?;
        let mut doc = old.clone();
        doc.envelope.inline_data = None;
        doc.soft_delete_time = Some(now);
        doc.hard_delete_time = Some(hard);
        execute(
            c,
            "INSERT INTO soft_objects (bucket, bucket_gen, name, generation, hard_delete_at, blob_id, key_version, doc, data)
               SELECT bucket, $4, name, generation, $5, blob_id, key_version, $6, data FROM objects
               WHERE bucket = $1 AND name = $2 AND generation = $3
             ON CONFLICT (bucket, bucket_gen, name, generation) DO UPDATE SET hard_delete_at = excluded.hard_delete_at,
               blob_id = excluded.blob_id, key_version = excluded.key_version, doc = excluded.doc, data = excluded.data",
            &[
                &old.bucket,
                &old.name,
                &old.generation,
                &bucket.generation(),
                &ms(hard),
                &serde_json::to_string(&doc)?,
            ],
        )
        .await?;
    }
    execute(
        c,
        "DELETE FROM objects WHERE bucket = $1 AND name = $2 AND generation = $3",
        &[&old.bucket, &old.name, &old.generation],
    )
    .await?;
    // A soft-deleted generation keeps its blob; a removed one's blob goes next.
    Ok(secs.is_none().then(|| old.clone()))
}

/// A soft-deleted generation of the bucket incarnation `bucket_gen`, with its data;
/// locked until the transaction ends with `lock`.
pub async fn get<C: GenericClient>(
    c: &C,
    bucket: &str,
    bucket_gen: i64,
    name: &str,
    generation: i64,
    lock: bool,
) -> StorageResult<Option<ObjectRecord>> {
    let sql = if lock {
        "SELECT doc, data FROM soft_objects WHERE bucket = $1 AND bucket_gen = $2 AND name = $3 AND generation = $4
           FOR UPDATE"
    } else {
        "SELECT doc, data FROM soft_objects WHERE bucket = $1 AND bucket_gen = $2 AND name = $3 AND generation = $4"
    };
    query_opt(c, sql, &[&bucket, &bucket_gen, &name, &generation])
        .await?
        .as_ref()
        .map(with_data)
        .transpose()
}

/// One page of soft-deleted generations in (name, generation) order.
pub async fn list<C: GenericClient>(c: &C, q: &super::ListQuery) -> StorageResult<Vec<ObjectRecord>> {
    let (after_name, after_gen) = q.after.clone().unwrap_or_default();
    let rows = query(
        c,
        "SELECT doc FROM soft_objects WHERE bucket = $1 AND bucket_gen = $8 AND name >= $2
           AND (NOT $3 OR name > $4 OR (name = $4 AND generation > $5))
           AND ($6::text IS NULL OR name < $6)
         ORDER BY name, generation LIMIT $7",
        &[
            &q.bucket,
            &q.start,
            &q.after.is_some(),
            &after_name,
            &after_gen,
            &q.end,
            &limit(q.limit),
            &q.bucket_gen,
        ],
    )
    .await?;
    docs(&rows)
}

/// Moves a soft-deleted generation back as the live generation `new_generation`. The
/// caller has dealt with the current live one.
pub async fn restore_row<C: GenericClient>(
    c: &C,
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
    execute(
        c,
        "INSERT INTO objects (bucket, name, generation, live, blob_id, key_version, doc, data)
           SELECT bucket, name, $5, TRUE, blob_id, key_version, $6, data FROM soft_objects
           WHERE bucket = $1 AND bucket_gen = $2 AND name = $3 AND generation = $4",
        &[
            &soft.bucket,
            &bucket_gen,
            &soft.name,
            &soft.generation,
            &new_generation,
            &serde_json::to_string(&rec)?,
        ],
    )
    .await?;
    execute(
        c,
        "DELETE FROM soft_objects WHERE bucket = $1 AND bucket_gen = $2 AND name = $3 AND generation = $4",
        &[&soft.bucket, &bucket_gen, &soft.name, &soft.generation],
    )
    .await?;
    Ok(rec)
}

/// Deletes up to `limit` soft-deleted generations whose hard-delete time has come, and
/// returns them (their blobs go next). Rows another gateway is taking right now are
/// skipped, so two workers never both return (and delete the blob of) one generation.
pub async fn take_due<C: GenericClient>(c: &C, now: DateTime<Utc>, n: usize) -> StorageResult<Vec<ObjectRecord>> {
    let rows = query(
        c,
        "DELETE FROM soft_objects WHERE (bucket, bucket_gen, name, generation) IN (
             SELECT bucket, bucket_gen, name, generation FROM soft_objects WHERE hard_delete_at <= $1
             ORDER BY hard_delete_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING doc, hard_delete_at",
        &[&ms(now), &limit(n)],
    )
    .await?;
    let mut due: Vec<(i64, ObjectRecord)> = rows
        .iter()
        .map(|r| Ok((col::<i64>(r, 1)?, serde_json::from_str(col::<&str>(r, 0)?)?)))
        .collect::<StorageResult<_>>()?;
    // RETURNING has no order; the SQLite store's is by due time.
    due.sort_by_key(|(t, _)| *t);
    Ok(due.into_iter().map(|(_, r)| r).collect())
}

/// Every soft-deleted generation of one bucket incarnation, removed (a bucket hard delete).
async fn take_bucket<C: GenericClient>(c: &C, bucket: &str, bucket_gen: i64) -> StorageResult<Vec<ObjectRecord>> {
    let rows = query(
        c,
        "DELETE FROM soft_objects WHERE bucket = $1 AND bucket_gen = $2 RETURNING doc",
        &[&bucket, &bucket_gen],
    )
    .await?;
    docs(&rows)
}

/// Deletes `b` (already checked empty of live and noncurrent data). With soft delete on
/// it becomes a soft-deleted bucket kept until the later of its own hard-delete time and
/// its last soft-deleted object's; otherwise its soft-deleted objects go with it and are
/// returned for their blobs.
pub async fn delete_bucket<C: GenericClient>(
    c: &C,
    b: &Bucket,
    now: DateTime<Utc>,
) -> StorageResult<Vec<ObjectRecord>> {
    execute(c, "DELETE FROM buckets WHERE name = $1", &[&b.name]).await?;
    let Some(secs) = retention(b) else {
        return take_bucket(c, &b.name, b.generation()).await;
    };
    let own = hard_delete_time(now, secs)?;
    let rows = query(
        c,
        "SELECT MAX(hard_delete_at) FROM soft_objects WHERE bucket = $1 AND bucket_gen = $2",
        &[&b.name, &b.generation()],
    )
    .await?;
    let last: Option<i64> = rows.first().map(|r| col(r, 0)).transpose()?.flatten();
    let hard = match last.and_then(DateTime::from_timestamp_millis) {
        Some(t) if t > own => t,
        _ => own,
    };
    let mut doc = b.clone();
    doc.soft_delete_time = Some(now);
    doc.hard_delete_time = Some(hard);
    execute(
        c,
        "INSERT INTO soft_buckets (name, generation, project, hard_delete_at, doc) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (name, generation) DO UPDATE SET project = excluded.project,
             hard_delete_at = excluded.hard_delete_at, doc = excluded.doc",
        &[
            &b.name,
            &b.generation(),
            &b.project,
            &ms(hard),
            &serde_json::to_string(&doc)?,
        ],
    )
    .await?;
    Ok(vec![])
}

pub async fn get_bucket<C: GenericClient>(
    c: &C,
    name: &str,
    generation: i64,
    lock: bool,
) -> StorageResult<Option<Bucket>> {
    let sql = if lock {
        "SELECT doc FROM soft_buckets WHERE name = $1 AND generation = $2 FOR UPDATE"
    } else {
        "SELECT doc FROM soft_buckets WHERE name = $1 AND generation = $2"
    };
    let rows = query(c, sql, &[&name, &generation]).await?;
    Ok(docs(&rows)?.into_iter().next())
}

pub async fn list_buckets<C: GenericClient>(c: &C, project: &str, prefix: &str) -> StorageResult<Vec<Bucket>> {
    let rows = query(
        c,
        "SELECT doc FROM soft_buckets WHERE project = $1 AND name >= $2 ORDER BY name, generation",
        &[&project, &prefix],
    )
    .await?;
    let mut out: Vec<Bucket> = docs(&rows)?;
    if let Some(i) = out.iter().position(|b| !b.name.starts_with(prefix)) {
        out.truncate(i);
    }
    Ok(out)
}

/// Brings a soft-deleted bucket back (its soft-deleted objects were never moved away
/// from its incarnation, so they come back with it).
pub async fn restore_bucket<C: GenericClient>(
    c: &C,
    name: &str,
    generation: i64,
    now: DateTime<Utc>,
) -> StorageResult<Bucket> {
    let Some(mut b) = get_bucket(c, name, generation, true).await? else {
        return Err(StorageError::NotFound(format!(
            "No soft-deleted bucket {name} with generation {generation}."
        )));
    };
    let taken = || {
        StorageError::Conflict(format!(
            "A live bucket named {name} exists: a soft-deleted bucket can only be restored while its name is free."
        ))
    };
    b.soft_delete_time = None;
    b.hard_delete_time = None;
    b.updated = now;
    b.metageneration = b
        .metageneration
        .checked_add(1)
        .ok_or_else(|| StorageError::internal("bucket metageneration overflow"))?;
    // Inserted only if the name is free: a bucket created meanwhile by another gateway
    // makes the insert do nothing, and the restore the same Conflict as a name taken
    // before it started.
    let n = execute(
        c,
        "INSERT INTO buckets (name, project, doc) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        &[&b.name, &b.project, &serde_json::to_string(&b)?],
    )
    .await?;
    if n == 0 {
        return Err(taken());
    }
    execute(
        c,
        "DELETE FROM soft_buckets WHERE name = $1 AND generation = $2",
        &[&name, &generation],
    )
    .await?;
    Ok(b)
}

/// Soft-deleted buckets whose hard-delete time has come, removed with what is left of
/// their soft-deleted objects.
pub async fn take_due_buckets<C: GenericClient>(
    c: &C,
    now: DateTime<Utc>,
) -> StorageResult<Vec<(Bucket, Vec<ObjectRecord>)>> {
    let rows = query(
        c,
        "DELETE FROM soft_buckets WHERE (name, generation) IN (
             SELECT name, generation FROM soft_buckets WHERE hard_delete_at <= $1 FOR UPDATE SKIP LOCKED)
         RETURNING doc",
        &[&ms(now)],
    )
    .await?;
    let mut out = vec![];
    for b in docs::<Bucket>(&rows)? {
        let objects = take_bucket(c, &b.name, b.generation()).await?;
        out.push((b, objects));
    }
    Ok(out)
}
