//! Soft delete in the in-memory metadata store: the tables and rules of
//! `sqlite_soft.rs`. A soft-deleted generation leaves `objects` for `soft_objects`; a
//! soft-deleted bucket moves to `soft_buckets`. Rows are tied to the bucket
//! *incarnation* (its generation), so a new bucket of the same name never sees an older
//! one's soft-deleted objects. Every function runs under the caller's lock; those that
//! can fail do so before they change anything.

use super::ListQuery;
use super::memory::{State, list_from, okey, stored, with_data};
use crate::error::{StorageError, StorageResult};
use crate::model::{Bucket, InlineData, ObjectRecord};
use chrono::{DateTime, Utc};
use std::ops::Bound;

/// `soft_objects`' primary key: (bucket, bucket generation, name, generation).
pub(super) type SoftKey = (String, i64, String, i64);

pub(super) struct SoftRow {
    /// In milliseconds, as SQLite's `hard_delete_at` column (what due times compare).
    hard_delete_at: i64,
    pub(super) rec: ObjectRecord,
    data: Option<InlineData>,
}

pub(super) struct SoftBucket {
    hard_delete_at: i64,
    doc: Bucket,
}

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

fn skey(bucket: &str, bucket_gen: i64, name: &str, generation: i64) -> SoftKey {
    (bucket.to_owned(), bucket_gen, name.to_owned(), generation)
}

impl State {
    /// Every soft-deleted row of a bucket name, all incarnations.
    pub(super) fn soft_of_bucket<'a>(
        &'a self,
        bucket: &str,
    ) -> impl Iterator<Item = (&'a SoftKey, &'a SoftRow)> + use<'a> {
        let bucket = bucket.to_owned();
        self.soft_objects
            .range(skey(&bucket, i64::MIN, "", i64::MIN)..)
            .take_while(move |(k, _)| k.0 == bucket)
    }

    pub(super) fn soft_of_bucket_mut<'a>(
        &'a mut self,
        bucket: &str,
    ) -> impl Iterator<Item = (&'a SoftKey, &'a mut SoftRow)> + use<'a> {
        let bucket = bucket.to_owned();
        self.soft_objects
            .range_mut(skey(&bucket, i64::MIN, "", i64::MIN)..)
            .take_while(move |(k, _)| k.0 == bucket)
    }

    /// Takes generation `old` out of `objects` as of `now`: with the bucket's soft
    /// delete on it moves to `soft_objects` (its blob stays, so `None`), replacing any
    /// row there of the same key; otherwise it is removed and returned so the caller
    /// can delete its blob.
    pub(super) fn remove_generation(
        &mut self,
        bucket: &Bucket,
        old: &ObjectRecord,
        now: DateTime<Utc>,
    ) -> StorageResult<Option<ObjectRecord>> {
        let hard = retention(bucket).map(|secs| hard_delete_time(now, secs)).transpose()?;
        let row = self.objects.remove(&okey(&old.bucket, &old.name, old.generation));
        let Some(hard) = hard else {
            return Ok(Some(old.clone()));
        };
        if let Some(row) = row {
            let mut rec = stored(old);
            rec.soft_delete_time = Some(now);
            rec.hard_delete_time = Some(hard);
            self.soft_objects.insert(
                skey(&old.bucket, bucket.generation(), &old.name, old.generation),
                SoftRow {
                    hard_delete_at: ms(hard),
                    rec,
                    data: row.data,
                },
            );
        }
        Ok(None)
    }

    /// A soft-deleted generation of the bucket incarnation `bucket_gen`, with its data.
    pub(super) fn get_soft(&self, bucket: &str, bucket_gen: i64, name: &str, generation: i64) -> Option<ObjectRecord> {
        self.soft_objects
            .get(&skey(bucket, bucket_gen, name, generation))
            .map(|r| with_data(&r.rec, &r.data))
    }

    /// One page of soft-deleted generations in (name, generation) order.
    pub(super) fn list_soft(&self, q: &ListQuery) -> Vec<ObjectRecord> {
        let (name, generation, exclusive) = list_from(q);
        let from = skey(&q.bucket, q.bucket_gen, &name, generation);
        let from = if exclusive {
            Bound::Excluded(from)
        } else {
            Bound::Included(from)
        };
        self.soft_objects
            .range((from, Bound::Unbounded))
            .take_while(|(k, _)| k.0 == q.bucket && k.1 == q.bucket_gen && q.end.as_ref().is_none_or(|e| k.2 < *e))
            .take(q.limit)
            .map(|(_, r)| r.rec.clone())
            .collect()
    }

    /// Moves a soft-deleted generation back as the live generation `new_generation`.
    /// The caller has dealt with the current live one and checked the new key is free.
    pub(super) fn restore_row(
        &mut self,
        soft: &ObjectRecord,
        bucket_gen: i64,
        new_generation: i64,
        now: DateTime<Utc>,
    ) -> ObjectRecord {
        let mut rec = stored(soft);
        rec.generation = new_generation;
        rec.metageneration = 1;
        rec.time_created = now;
        rec.updated = now;
        rec.soft_delete_time = None;
        rec.hard_delete_time = None;
        rec.time_deleted = None;
        rec.retention_base = None;
        rec.temporary_hold = false;
        if let Some(row) = self
            .soft_objects
            .remove(&skey(&soft.bucket, bucket_gen, &soft.name, soft.generation))
        {
            self.objects.insert(
                okey(&rec.bucket, &rec.name, new_generation),
                super::memory::ObjectRow {
                    live: true,
                    rec: rec.clone(),
                    data: row.data,
                },
            );
        }
        rec
    }

    /// Removes up to `limit` soft-deleted generations whose hard-delete time has come,
    /// earliest first, and returns them (their blobs go next).
    pub(super) fn take_due(&mut self, now: DateTime<Utc>, limit: usize) -> Vec<ObjectRecord> {
        let now = ms(now);
        let mut due: Vec<(i64, &SoftKey)> = self
            .soft_objects
            .iter()
            .filter(|(_, r)| r.hard_delete_at <= now)
            .map(|(k, r)| (r.hard_delete_at, k))
            .collect();
        // Stable: equal due times stay in key order.
        due.sort_by_key(|(t, _)| *t);
        let keys: Vec<SoftKey> = due.into_iter().take(limit).map(|(_, k)| k.clone()).collect();
        keys.iter()
            .filter_map(|k| self.soft_objects.remove(k))
            .map(|r| r.rec)
            .collect()
    }

    /// Every soft-deleted generation of one bucket incarnation, removed (a bucket hard
    /// delete).
    fn take_bucket(&mut self, bucket: &str, bucket_gen: i64) -> Vec<ObjectRecord> {
        let keys: Vec<SoftKey> = self
            .soft_objects
            .range(skey(bucket, bucket_gen, "", i64::MIN)..)
            .take_while(|(k, _)| k.0 == bucket && k.1 == bucket_gen)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter()
            .filter_map(|k| self.soft_objects.remove(k))
            .map(|r| r.rec)
            .collect()
    }

    /// Deletes `b` (already checked empty of live and noncurrent data). With soft
    /// delete on it becomes a soft-deleted bucket kept until the later of its own
    /// hard-delete time and its last soft-deleted object's; otherwise its soft-deleted
    /// objects go with it and are returned for their blobs.
    pub(super) fn delete_bucket(&mut self, b: &Bucket, now: DateTime<Utc>) -> StorageResult<Vec<ObjectRecord>> {
        let Some(secs) = retention(b) else {
            self.buckets.remove(&b.name);
            return Ok(self.take_bucket(&b.name, b.generation()));
        };
        let own = hard_delete_time(now, secs)?;
        self.buckets.remove(&b.name);
        let last = self
            .soft_objects
            .range(skey(&b.name, b.generation(), "", i64::MIN)..)
            .take_while(|(k, _)| k.0 == b.name && k.1 == b.generation())
            .map(|(_, r)| r.hard_delete_at)
            .max();
        // The objects' due times are whole milliseconds, as SQLite reads them back.
        let hard = match last.and_then(DateTime::from_timestamp_millis) {
            Some(t) if t > own => t,
            _ => own,
        };
        let mut doc = b.clone();
        doc.soft_delete_time = Some(now);
        doc.hard_delete_time = Some(hard);
        self.soft_buckets.insert(
            (b.name.clone(), b.generation()),
            SoftBucket {
                hard_delete_at: ms(hard),
                doc,
            },
        );
        Ok(vec![])
    }

    pub(super) fn get_soft_bucket(&self, name: &str, generation: i64) -> Option<Bucket> {
        self.soft_buckets
            .get(&(name.to_owned(), generation))
            .map(|s| s.doc.clone())
    }

    /// A project's soft-deleted buckets under `prefix`, by (name, generation).
    pub(super) fn list_soft_buckets(&self, project: &str, prefix: &str) -> Vec<Bucket> {
        self.soft_buckets
            .range((prefix.to_owned(), i64::MIN)..)
            .map(|(_, s)| &s.doc)
            .take_while(|b| b.name.starts_with(prefix))
            .filter(|b| b.project == project)
            .cloned()
            .collect()
    }

    /// Brings a soft-deleted bucket back (its soft-deleted objects were never moved
    /// away from its incarnation, so they come back with it).
    pub(super) fn restore_bucket(&mut self, name: &str, generation: i64, now: DateTime<Utc>) -> StorageResult<Bucket> {
        let key = (name.to_owned(), generation);
        let Some(soft) = self.soft_buckets.get(&key) else {
            return Err(StorageError::NotFound(format!(
                "No soft-deleted bucket {name} with generation {generation}."
            )));
        };
        if self.buckets.contains_key(name) {
            return Err(StorageError::Conflict(format!(
                "A live bucket named {name} exists: a soft-deleted bucket can only be restored while its name is free."
            )));
        }
        let mut b = soft.doc.clone();
        b.soft_delete_time = None;
        b.hard_delete_time = None;
        b.updated = now;
        b.metageneration = b
            .metageneration
            .checked_add(1)
            .ok_or_else(|| StorageError::internal("bucket metageneration overflow"))?;
        self.soft_buckets.remove(&key);
        self.buckets.insert(b.name.clone(), b.clone());
        Ok(b)
    }

    /// Soft-deleted buckets whose hard-delete time has come, removed (earliest first)
    /// with what is left of their soft-deleted objects.
    pub(super) fn take_due_buckets(&mut self, now: DateTime<Utc>) -> Vec<(Bucket, Vec<ObjectRecord>)> {
        let now = ms(now);
        let mut due: Vec<(i64, (String, i64))> = self
            .soft_buckets
            .iter()
            .filter(|(_, s)| s.hard_delete_at <= now)
            .map(|(k, s)| (s.hard_delete_at, k.clone()))
            .collect();
        due.sort_by_key(|(t, _)| *t);
        let mut out = vec![];
        for (_, key) in due {
            if let Some(s) = self.soft_buckets.remove(&key) {
                let objects = self.take_bucket(&key.0, key.1);
                out.push((s.doc, objects));
            }
        }
        out
    }
}
