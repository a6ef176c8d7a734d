//! The metadata store in plain Rust maps, for fast engine tests and
//! `--database memory://`: nothing is persisted. It mirrors the SQLite store row for
//! row (`sqlite.rs` is the reference): the maps are its tables, keyed by their primary
//! keys, so map order is listing order (byte order of names, then generation). One
//! mutex around every table plays SQLite's single writer: each mutation checks its
//! preconditions and makes all its changes under one lock. No SQL transaction rolls a
//! failure back here, so every mutation makes all its fallible checks before it
//! changes anything.

use super::{ListQuery, MetaStore, MoveSpec, ReplaceCheck, RestoreSpec};
use crate::error::{StorageError, StorageResult};
use crate::model::{Bucket, InlineData, ObjectRecord, Preconditions, UploadSession};
use crate::multipart::{MultipartUpload, Part};
use crate::rekey_job::{JobState, RekeyJob};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// `objects`' primary key: (bucket, name, generation).
pub(super) type ObjectKey = (String, String, i64);

/// A row of `objects`.
pub(super) struct ObjectRow {
    /// Live, or noncurrent (kept by versioning).
    pub(super) live: bool,
    /// As SQLite's JSON document holds it: never with inline data.
    pub(super) rec: ObjectRecord,
    /// An inline object's sealed segment: SQLite's `data` column, which outlives
    /// document rewrites (metadata updates, archiving).
    pub(super) data: Option<InlineData>,
}

/// Every table. The key and blob-id columns SQLite indexes are derived from the
/// records here: its writes keep them equal to the document's (updates rewrite the key
/// column; a blob id is bound into the DEK's AAD, so no update changes it).
#[derive(Default)]
pub(super) struct State {
    pub(super) buckets: BTreeMap<String, Bucket>,
    pub(super) objects: BTreeMap<ObjectKey, ObjectRow>,
    pub(super) soft_objects: BTreeMap<super::memory_soft::SoftKey, super::memory_soft::SoftRow>,
    /// (name, generation) → soft-deleted bucket.
    pub(super) soft_buckets: BTreeMap<(String, i64), super::memory_soft::SoftBucket>,
    rekey_jobs: BTreeMap<String, RekeyJob>,
    sessions: BTreeMap<String, UploadSession>,
    cursors: BTreeMap<String, String>,
    uploads: BTreeMap<String, MultipartUpload>,
    /// (upload id, part number) → part.
    parts: BTreeMap<(String, u32), Part>,
    /// The last generation handed out; a new store starts at 0 (nothing to continue).
    last_generation: i64,
}

#[derive(Default)]
pub struct MemoryMetaStore {
    state: Mutex<State>,
}

impl MemoryMetaStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The tables, locked. Never held across an `.await` (nothing here awaits). A panic
    /// while locked can only come from a caller's `ReplaceCheck`, which runs before the
    /// mutation changes anything, so a poisoned lock still guards consistent tables.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) fn okey(bucket: &str, name: &str, generation: i64) -> ObjectKey {
    (bucket.to_owned(), name.to_owned(), generation)
}

/// A record as stored: its inline data lives beside it, as in SQLite's `data` column.
pub(super) fn stored(rec: &ObjectRecord) -> ObjectRecord {
    let mut r = rec.clone();
    r.envelope.inline_data = None;
    r
}

/// A record with its inline data attached (what SQLite's `with_data` reads).
pub(super) fn with_data(rec: &ObjectRecord, data: &Option<InlineData>) -> ObjectRecord {
    let mut r = rec.clone();
    if r.envelope.inline {
        r.envelope.inline_data = data.clone();
    }
    r
}

/// The key column: the KMS version name, or `csek:<sha256>`.
pub(super) fn key_column(rec: &ObjectRecord) -> String {
    rec.envelope
        .csek_sha256
        .as_ref()
        .map_or_else(|| rec.envelope.key_version.clone(), |s| format!("csek:{s}"))
}

/// Whether (name, generation) lies after the listing cursor `after`.
fn is_after(after: &Option<(String, i64)>, name: &str, generation: i64) -> bool {
    after
        .as_ref()
        .is_none_or(|(n, g)| name > n.as_str() || (name == n && generation > *g))
}

/// Where a listing's (name, generation) range starts: at `start`, or just after
/// `after` when that lies at or beyond `start` (before it, `start` alone decides).
pub(super) fn list_from(q: &ListQuery) -> (String, i64, bool) {
    match &q.after {
        Some((n, g)) if n.as_str() >= q.start.as_str() => (n.clone(), *g, true),
        _ => (q.start.clone(), i64::MIN, false),
    }
}

fn no_bucket(name: &str) -> StorageError {
    StorageError::NotFound(format!("The specified bucket does not exist: {name}"))
}

fn not_found_object(bucket: &str, name: &str) -> StorageError {
    StorageError::NotFound(format!("No such object: {bucket}/{name}"))
}

/// The data column of a new row (SQLite's `insert_object` refuses the same).
fn inline_column(rec: &ObjectRecord) -> StorageResult<Option<InlineData>> {
    match (&rec.envelope.inline, &rec.envelope.inline_data) {
        (false, _) => Ok(None),
        (true, Some(d)) => Ok(Some(d.clone())),
        (true, None) => Err(StorageError::internal("an inline object without its data")),
    }
}

impl State {
    fn bucket(&self, name: &str) -> StorageResult<Bucket> {
        self.buckets.get(name).cloned().ok_or_else(|| no_bucket(name))
    }

    /// Every row of one object name, in generation order.
    fn generations<'a>(
        &'a self,
        bucket: &str,
        name: &str,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a ObjectRow)> + use<'a> {
        self.objects
            .range(okey(bucket, name, i64::MIN)..=okey(bucket, name, i64::MAX))
    }

    /// The live generation's record, without inline data (what writes check).
    fn live_of(&self, bucket: &str, name: &str) -> Option<ObjectRecord> {
        self.generations(bucket, name)
            .find(|(_, r)| r.live)
            .map(|(_, r)| r.rec.clone())
    }

    /// Refuses a row whose key is taken, as SQLite's primary key does, unless the
    /// taken row is `removed` (replaced, not archived) by the same mutation first.
    fn key_free(&self, bucket: &str, name: &str, generation: i64, removed: Option<i64>) -> StorageResult<()> {
        if removed != Some(generation) && self.objects.contains_key(&okey(bucket, name, generation)) {
            return Err(StorageError::Internal(format!(
                "metadata store: generation {generation} of {bucket}/{name} already exists"
            )));
        }
        Ok(())
    }

    /// Makes a live generation noncurrent as of `now` (`timeDeleted`, which
    /// lifecycle's noncurrent conditions count from).
    fn archive(&mut self, old: &ObjectRecord, now: DateTime<Utc>) {
        if let Some(row) = self.objects.get_mut(&okey(&old.bucket, &old.name, old.generation)) {
            row.live = false;
            row.rec = stored(old);
            row.rec.time_deleted = Some(now);
        }
    }

    /// Takes the live generation `old` out of the way of a new one: kept as noncurrent
    /// (`keep_previous`), else removed (soft-deleted when the bucket has soft delete).
    /// Returns the removed record when its blob must go. Fails only before it changes
    /// anything.
    fn replace_live(
        &mut self,
        bucket: &Bucket,
        old: &ObjectRecord,
        keep_previous: bool,
        now: DateTime<Utc>,
    ) -> StorageResult<Option<ObjectRecord>> {
        if keep_previous {
            self.archive(old, now);
            Ok(None)
        } else {
            self.remove_generation(bucket, old, now)
        }
    }

    /// Replaces a generation's record if its metageneration is still `expected`: the
    /// `objects` row, else (re-key jobs re-wrap those too) soft-deleted ones. As in
    /// SQLite, an `objects` row with another metageneration falls through to them.
    fn update_row(&mut self, rec: &ObjectRecord, expected: i64) -> StorageResult<()> {
        if let Some(row) = self.objects.get_mut(&okey(&rec.bucket, &rec.name, rec.generation))
            && row.rec.metageneration == expected
        {
            row.rec = stored(rec);
            return Ok(());
        }
        let mut n = 0;
        for (_, row) in self.soft_of_bucket_mut(&rec.bucket) {
            if row.rec.name == rec.name && row.rec.generation == rec.generation && row.rec.metageneration == expected {
                row.rec = stored(rec);
                n += 1;
            }
        }
        if n == 0 {
            return Err(StorageError::ConcurrentChange(
                "The object's metadata changed concurrently (metageneration); retry the request.".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl MetaStore for MemoryMetaStore {
    async fn insert_bucket(&self, b: &Bucket) -> StorageResult<()> {
        let mut st = self.state();
        if st.buckets.contains_key(&b.name) {
            return Err(StorageError::Conflict(format!(
                "Your previous request to create the named bucket succeeded and you already own it: {}",
                b.name
            )));
        }
        st.buckets.insert(b.name.clone(), b.clone());
        Ok(())
    }

    async fn get_bucket(&self, name: &str) -> StorageResult<Option<Bucket>> {
        Ok(self.state().buckets.get(name).cloned())
    }

    async fn list_buckets(
        &self,
        project: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Bucket>> {
        let st = self.state();
        // Names at or after the prefix and strictly after `after` (SQLite's `> ''` when
        // there is none); the prefix's names are one contiguous run from there.
        let after = after.unwrap_or("");
        let from = if after >= prefix {
            Bound::Excluded(after.to_owned())
        } else {
            Bound::Included(prefix.to_owned())
        };
        Ok(st
            .buckets
            .range((from, Bound::Unbounded))
            .map(|(_, b)| b)
            .take_while(|b| b.name.starts_with(prefix))
            .filter(|b| b.project == project)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn update_bucket(&self, b: &Bucket, expected: i64) -> StorageResult<()> {
        let mut st = self.state();
        let current = st.buckets.get_mut(&b.name).ok_or_else(|| no_bucket(&b.name))?;
        if current.metageneration != expected {
            return Err(StorageError::ConcurrentChange(
                "At least one of the pre-conditions you specified did not hold (metageneration).".into(),
            ));
        }
        *current = b.clone();
        Ok(())
    }

    async fn delete_bucket(
        &self,
        name: &str,
        if_metageneration_match: Option<i64>,
        now: DateTime<Utc>,
    ) -> StorageResult<Vec<ObjectRecord>> {
        let mut st = self.state();
        let b = st.bucket(name)?;
        if let Some(m) = if_metageneration_match
            && b.metageneration != m
        {
            return Err(StorageError::PreconditionFailed(
                "At least one of the pre-conditions you specified did not hold (ifMetagenerationMatch).".into(),
            ));
        }
        // Any generation, live or noncurrent, keeps the bucket.
        if st
            .objects
            .range(okey(name, "", i64::MIN)..)
            .next()
            .is_some_and(|(k, _)| k.0 == name)
        {
            return Err(StorageError::Conflict(format!(
                "The bucket you tried to delete is not empty: {name}"
            )));
        }
        st.delete_bucket(&b, now)
    }

    async fn get_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
    ) -> StorageResult<Option<ObjectRecord>> {
        let st = self.state();
        let row = match generation {
            None => st.generations(bucket, name).map(|(_, r)| r).find(|r| r.live),
            Some(g) => st.objects.get(&okey(bucket, name, g)),
        };
        Ok(row.map(|r| with_data(&r.rec, &r.data)))
    }

    async fn list_objects(&self, q: &ListQuery) -> StorageResult<Vec<ObjectRecord>> {
        let st = self.state();
        if q.soft_deleted {
            return Ok(st.list_soft(q));
        }
        let (name, generation, exclusive) = list_from(q);
        let from = okey(&q.bucket, &name, generation);
        let from = if exclusive {
            Bound::Excluded(from)
        } else {
            Bound::Included(from)
        };
        Ok(st
            .objects
            .range((from, Bound::Unbounded))
            .take_while(|(k, _)| k.0 == q.bucket && q.end.as_ref().is_none_or(|e| k.1 < *e))
            .filter(|(_, r)| q.versions || r.live)
            .take(q.limit)
            .map(|(_, r)| {
                let mut rec = r.rec.clone();
                if !r.live && rec.time_deleted.is_none() {
                    // As SQLite reads a noncurrent row that does not say when (here
                    // only a metadata update clearing it leaves one): its last update
                    // is the closest time known.
                    rec.time_deleted = Some(rec.updated);
                }
                rec
            })
            .collect())
    }

    async fn commit_object(
        &self,
        rec: &ObjectRecord,
        pre: &Preconditions,
        keep_previous: bool,
        check: ReplaceCheck,
    ) -> StorageResult<Option<ObjectRecord>> {
        let mut st = self.state();
        let bucket = st.bucket(&rec.bucket)?;
        let live = st.live_of(&rec.bucket, &rec.name);
        pre.check(live.as_ref().map(|l| (l.generation, l.metageneration)), false)?;
        if let Some(l) = &live {
            check(l)?;
        }
        let data = inline_column(rec)?;
        let removed = live.as_ref().filter(|_| !keep_previous).map(|l| l.generation);
        st.key_free(&rec.bucket, &rec.name, rec.generation, removed)?;
        let replaced = match live {
            Some(old) => st.replace_live(&bucket, &old, keep_previous, rec.time_created)?,
            None => None,
        };
        st.objects.insert(
            okey(&rec.bucket, &rec.name, rec.generation),
            ObjectRow {
                live: true,
                rec: stored(rec),
                data,
            },
        );
        Ok(replaced)
    }

    async fn update_object(&self, rec: &ObjectRecord, expected: i64) -> StorageResult<()> {
        self.state().update_row(rec, expected)
    }

    async fn update_objects(&self, updates: Vec<(ObjectRecord, i64)>) -> StorageResult<Vec<StorageResult<()>>> {
        // One lock for the batch; each row's own check failing is its result.
        let mut st = self.state();
        Ok(updates
            .iter()
            .map(|(rec, expected)| st.update_row(rec, *expected))
            .collect())
    }

    async fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        pre: &Preconditions,
        archive: bool,
        check: ReplaceCheck,
        now: DateTime<Utc>,
    ) -> StorageResult<Option<ObjectRecord>> {
        let mut st = self.state();
        let target = match generation {
            None => st.live_of(bucket, name),
            Some(g) => st.objects.get(&okey(bucket, name, g)).map(|r| r.rec.clone()),
        };
        let Some(target) = target else {
            return Err(not_found_object(bucket, name));
        };
        pre.check(Some((target.generation, target.metageneration)), false)?;
        check(&target)?;
        if archive && generation.is_none() {
            st.archive(&target, now);
            return Ok(None);
        }
        let b = st
            .buckets
            .get(bucket)
            .cloned()
            .ok_or_else(|| not_found_object(bucket, name))?;
        st.remove_generation(&b, &target, now)
    }

    async fn get_soft_object(
        &self,
        bucket: &str,
        bucket_gen: i64,
        name: &str,
        generation: i64,
    ) -> StorageResult<Option<ObjectRecord>> {
        Ok(self.state().get_soft(bucket, bucket_gen, name, generation))
    }

    async fn restore_object(
        &self,
        spec: &RestoreSpec,
        check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)> {
        let mut st = self.state();
        let bucket = st.bucket(&spec.bucket)?;
        let soft = st
            .get_soft(&spec.bucket, bucket.generation(), &spec.name, spec.generation)
            .ok_or_else(|| {
                StorageError::NotFound(format!(
                    "No soft-deleted object {}/{} with generation {}.",
                    spec.bucket, spec.name, spec.generation
                ))
            })?;
        let live = st.live_of(&spec.bucket, &spec.name);
        spec.pre
            .check(live.as_ref().map(|l| (l.generation, l.metageneration)), false)?;
        if let Some(old) = &live {
            check(old)?;
        }
        let removed = live.as_ref().filter(|_| !bucket.versioning).map(|l| l.generation);
        st.key_free(&spec.bucket, &spec.name, spec.new_generation, removed)?;
        let replaced = match live {
            Some(old) => st.replace_live(&bucket, &old, bucket.versioning, spec.now)?,
            None => None,
        };
        let restored = st.restore_row(&soft, bucket.generation(), spec.new_generation, spec.now);
        Ok((restored, replaced))
    }

    async fn take_hard_deletes(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StorageResult<(Vec<ObjectRecord>, Vec<(Bucket, Vec<ObjectRecord>)>)> {
        let mut st = self.state();
        let objects = st.take_due(now, limit);
        let buckets = st.take_due_buckets(now);
        Ok((objects, buckets))
    }

    async fn get_soft_bucket(&self, name: &str, generation: i64) -> StorageResult<Option<Bucket>> {
        Ok(self.state().get_soft_bucket(name, generation))
    }

    async fn list_soft_buckets(&self, project: &str, prefix: &str) -> StorageResult<Vec<Bucket>> {
        Ok(self.state().list_soft_buckets(project, prefix))
    }

    async fn restore_bucket(&self, name: &str, generation: i64, now: DateTime<Utc>) -> StorageResult<Bucket> {
        self.state().restore_bucket(name, generation, now)
    }

    async fn newer_generations(&self, bucket: &str, name: &str, generation: i64) -> StorageResult<u64> {
        let st = self.state();
        let n = st.generations(bucket, name).filter(|(k, _)| k.2 > generation).count();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    async fn buckets_with_lifecycle(&self) -> StorageResult<Vec<Bucket>> {
        let st = self.state();
        Ok(st
            .buckets
            .values()
            .filter(|b| !b.lifecycle.is_empty())
            .cloned()
            .collect())
    }

    async fn get_cursor(&self, worker: &str) -> StorageResult<Option<String>> {
        Ok(self.state().cursors.get(worker).cloned())
    }

    async fn put_cursor(&self, worker: &str, cursor: Option<&str>) -> StorageResult<()> {
        let mut st = self.state();
        match cursor {
            Some(v) => st.cursors.insert(worker.to_owned(), v.to_owned()),
            None => st.cursors.remove(worker),
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
        let mut st = self.state();
        let bucket = st.bucket(&mv.bucket)?;
        let src = st
            .live_of(&mv.bucket, &mv.src)
            .ok_or_else(|| not_found_object(&mv.bucket, &mv.src))?;
        mv.src_pre.check(Some((src.generation, src.metageneration)), false)?;
        src_check(&src)?;
        let live = st.live_of(&mv.bucket, &mv.dst);
        mv.dst_pre
            .check(live.as_ref().map(|l| (l.generation, l.metageneration)), false)?;
        if let Some(old) = &live {
            dst_check(old)?;
        }
        let removed = live.as_ref().filter(|_| !mv.keep_previous).map(|l| l.generation);
        st.key_free(&mv.bucket, &mv.dst, mv.generation, removed)?;
        let replaced = match live {
            Some(old) => st.replace_live(&bucket, &old, mv.keep_previous, mv.now)?,
            None => None,
        };
        let moved = src.moved_to(&mv.dst, mv.generation, mv.now);
        // The row itself moves, so an inline object's data goes with it.
        if let Some(row) = st.objects.remove(&okey(&src.bucket, &src.name, src.generation)) {
            st.objects.insert(
                okey(&moved.bucket, &moved.name, moved.generation),
                ObjectRow {
                    live: true,
                    rec: stored(&moved),
                    data: row.data,
                },
            );
        }
        Ok((moved, replaced))
    }

    async fn put_session(&self, s: &UploadSession) -> StorageResult<()> {
        let mut s = s.clone();
        // As a stored document holds it (inline data is never part of one).
        s.envelope.inline_data = None;
        self.state().sessions.insert(s.id.clone(), s);
        Ok(())
    }

    async fn get_session(&self, id: &str) -> StorageResult<Option<UploadSession>> {
        Ok(self.state().sessions.get(id).cloned())
    }

    async fn delete_session(&self, id: &str) -> StorageResult<()> {
        self.state().sessions.remove(id);
        Ok(())
    }

    async fn count_sessions(&self) -> StorageResult<u64> {
        Ok(u64::try_from(self.state().sessions.len()).unwrap_or(u64::MAX))
    }

    async fn ping(&self) -> StorageResult<()> {
        // Answering at all is the check: the lock is free to take.
        drop(self.state());
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
        let st = self.state();
        let wanted = |rec: &ObjectRecord| {
            let k = key_column(rec);
            k.as_str() >= lo && k.as_str() < hi && is_after(&after, &rec.name, rec.generation)
        };
        // Live and noncurrent rows, then soft-deleted ones of every incarnation (as
        // SQLite's UNION ALL), merged in (name, generation) order.
        let live = st
            .objects
            .range(okey(bucket, "", i64::MIN)..)
            .take_while(|(k, _)| k.0 == bucket)
            .map(|(_, r)| &r.rec);
        let soft = st.soft_of_bucket(bucket).map(|(_, r)| &r.rec);
        let mut out: Vec<ObjectRecord> = live.chain(soft).filter(|r| wanted(r)).cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.generation.cmp(&b.generation)));
        out.truncate(limit);
        Ok(out)
    }

    async fn objects_with_key_version(&self, version: &str) -> StorageResult<Vec<ObjectRecord>> {
        let st = self.state();
        Ok(st
            .objects
            .values()
            .filter(|r| key_column(&r.rec) == version)
            .map(|r| r.rec.clone())
            .collect())
    }

    async fn blob_ids(&self) -> StorageResult<HashMap<String, usize>> {
        let st = self.state();
        let mut out = HashMap::new();
        let envelopes = st
            .objects
            .values()
            .map(|r| &r.rec.envelope)
            .chain(st.sessions.values().map(|s| &s.envelope))
            .chain(st.soft_objects.values().map(|r| &r.rec.envelope))
            .chain(st.parts.values().map(|p| &p.envelope));
        for env in envelopes {
            let n = out.entry(env.blob_id.clone()).or_insert(0);
            *n = env.parts.len().max(*n);
        }
        Ok(out)
    }

    async fn put_rekey_job(&self, job: &RekeyJob) -> StorageResult<()> {
        self.state().rekey_jobs.insert(job.name.clone(), job.clone());
        Ok(())
    }

    async fn get_rekey_job(&self, name: &str) -> StorageResult<Option<RekeyJob>> {
        Ok(self.state().rekey_jobs.get(name).cloned())
    }

    async fn running_rekey_jobs(&self) -> StorageResult<Vec<RekeyJob>> {
        let st = self.state();
        Ok(st
            .rekey_jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .cloned()
            .collect())
    }

    async fn next_generation(&self, now_micros: i64) -> StorageResult<i64> {
        let mut st = self.state();
        let next = now_micros.max(
            st.last_generation
                .checked_add(1)
                .ok_or_else(|| StorageError::internal("generation overflow"))?,
        );
        st.last_generation = next;
        Ok(next)
    }

    async fn put_multipart(&self, u: &MultipartUpload) -> StorageResult<()> {
        let mut st = self.state();
        if st.uploads.contains_key(&u.id) {
            // A plain INSERT in SQLite: the primary key refuses a second one.
            return Err(StorageError::Internal(format!(
                "metadata store: multipart upload {} already exists",
                u.id
            )));
        }
        st.uploads.insert(u.id.clone(), u.clone());
        Ok(())
    }

    async fn get_multipart(&self, id: &str) -> StorageResult<Option<MultipartUpload>> {
        Ok(self.state().uploads.get(id).cloned())
    }

    async fn list_multipart(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> StorageResult<Vec<MultipartUpload>> {
        let st = self.state();
        let (an, ai) = after.unwrap_or_default();
        // Uploads are keyed by id; a bucket's are few, so sorting them is the index.
        let mut out: Vec<&MultipartUpload> = st
            .uploads
            .values()
            .filter(|u| u.bucket == bucket && u.name.starts_with(prefix))
            .filter(|u| u.name > an || (u.name == an && u.id > ai))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(out.into_iter().take(limit).cloned().collect())
    }

    async fn put_part(&self, p: &Part) -> StorageResult<Option<Part>> {
        let mut st = self.state();
        if !st.uploads.contains_key(&p.upload_id) {
            return Err(StorageError::Gone(format!(
                "The specified multipart upload does not exist: {}",
                p.upload_id
            )));
        }
        let mut p = p.clone();
        p.envelope.inline_data = None;
        Ok(st.parts.insert((p.upload_id.clone(), p.part_number), p))
    }

    async fn list_parts(&self, upload_id: &str, after: u32, limit: usize) -> StorageResult<Vec<Part>> {
        let st = self.state();
        let range = (
            Bound::Excluded((upload_id.to_owned(), after)),
            Bound::Included((upload_id.to_owned(), u32::MAX)),
        );
        Ok(st.parts.range(range).take(limit).map(|(_, p)| p.clone()).collect())
    }

    async fn delete_multipart(&self, id: &str) -> StorageResult<Option<Vec<Part>>> {
        let mut st = self.state();
        let upload = st.uploads.remove(id);
        // Parts go even without their upload, as SQLite's second DELETE does.
        let numbers: Vec<u32> = st
            .parts
            .range((id.to_owned(), 0)..=(id.to_owned(), u32::MAX))
            .map(|(k, _)| k.1)
            .collect();
        let parts: Vec<Part> = numbers
            .into_iter()
            .filter_map(|n| st.parts.remove(&(id.to_owned(), n)))
            .collect();
        Ok(upload.map(|_| parts))
    }

    async fn multipart_started_before(&self, before: DateTime<Utc>) -> StorageResult<Vec<String>> {
        let st = self.state();
        // Compared in microseconds, the resolution SQLite's `initiated` column keeps.
        let before = before.timestamp_micros();
        Ok(st
            .uploads
            .values()
            .filter(|u| u.initiated.timestamp_micros() < before)
            .map(|u| u.id.clone())
            .collect())
    }
}
