//! The metadata store: buckets, object generations, sessions, uploads and background
//! job state, behind one async trait. Each mutation is one transaction, and
//! preconditions are checked inside it, so concurrent writers (in one process or many)
//! cannot interleave. Backends: SQLite (embedded default; `:memory:` for fast tests),
//! PostgreSQL (many gateways) and plain in-memory maps (`memory://`: fast engine tests,
//! nothing persisted). Every backend passes `conformance.rs`.

#[cfg(test)]
mod conformance;
mod memory;
mod memory_soft;
mod postgres;
mod postgres_soft;
mod sqlite;
mod sqlite_soft;

use crate::error::StorageResult;
use crate::model::{Bucket, ObjectRecord, Preconditions, UploadSession};
use std::collections::HashMap;

pub use memory::MemoryMetaStore;
pub use postgres::PgMetaStore;
pub use sqlite::SqliteMetaStore;

/// One page of a raw object listing, in (name, generation) order.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub bucket: String,
    /// Only names at or after this one.
    pub start: String,
    /// Only entries strictly after this (name, generation).
    pub after: Option<(String, i64)>,
    /// Only names before this one.
    pub end: Option<String>,
    /// Every generation, not only live ones.
    pub versions: bool,
    pub limit: usize,
    /// Soft-deleted generations of bucket incarnation `bucket_gen` instead.
    pub soft_deleted: bool,
    pub bucket_gen: i64,
}

/// An `objects.move` within one bucket.
#[derive(Debug, Clone)]
pub struct MoveSpec {
    pub bucket: String,
    pub src: String,
    pub dst: String,
    /// The destination's new generation number.
    pub generation: i64,
    pub now: chrono::DateTime<chrono::Utc>,
    pub src_pre: Preconditions,
    pub dst_pre: Preconditions,
    /// Versioned bucket: a replaced destination stays as noncurrent.
    pub keep_previous: bool,
}

/// An `objects.restore`.
#[derive(Debug, Clone)]
pub struct RestoreSpec {
    pub bucket: String,
    pub name: String,
    /// The soft-deleted generation.
    pub generation: i64,
    pub new_generation: i64,
    pub now: chrono::DateTime<chrono::Utc>,
    /// Against the live generation the restore replaces.
    pub pre: Preconditions,
}

/// Checked inside the write transaction against the generation about to be replaced or
/// deleted (holds, retention, permission to replace), so nothing can slip in between.
pub type ReplaceCheck = Box<dyn Fn(&ObjectRecord) -> StorageResult<()> + Send>;

#[async_trait::async_trait]
pub trait MetaStore: Send + Sync {
    async fn insert_bucket(&self, b: &Bucket) -> StorageResult<()>;
    async fn get_bucket(&self, name: &str) -> StorageResult<Option<Bucket>>;
    async fn list_buckets(
        &self,
        project: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Bucket>>;
    /// Replaces the bucket if its stored metageneration is `expected`.
    async fn update_bucket(&self, b: &Bucket, expected: i64) -> StorageResult<()>;
    /// Deletes an empty bucket (no generation at all, live or not).
    /// Returns the soft-deleted generations that went with it (for their blobs); with
    /// soft delete on, the bucket itself becomes soft-deleted instead.
    async fn delete_bucket(
        &self,
        name: &str,
        if_metageneration_match: Option<i64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Vec<ObjectRecord>>;
    /// The live object, or the given generation.
    async fn get_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
    ) -> StorageResult<Option<ObjectRecord>>;
    async fn list_objects(&self, q: &ListQuery) -> StorageResult<Vec<ObjectRecord>>;
    /// Makes `rec` the live generation if `pre` holds against the current live one. The
    /// previous live generation is kept as noncurrent (`keep_previous`) or removed and
    /// returned, so the caller can delete its blob.
    async fn commit_object(
        &self,
        rec: &ObjectRecord,
        pre: &Preconditions,
        keep_previous: bool,
        check: ReplaceCheck,
    ) -> StorageResult<Option<ObjectRecord>>;
    /// Replaces an object's metadata if its metageneration is `expected`.
    async fn update_object(&self, rec: &ObjectRecord, expected: i64) -> StorageResult<()>;
    /// Applies many such replacements in one transaction; each succeeds or fails alone.
    async fn update_objects(&self, updates: Vec<(ObjectRecord, i64)>) -> StorageResult<Vec<StorageResult<()>>>;
    /// Removes the live object (or a generation) if `pre` holds, returning it. With
    /// `archive`, the live object becomes noncurrent as of `now` instead.
    #[allow(clippy::too_many_arguments)]
    async fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        pre: &Preconditions,
        archive: bool,
        check: ReplaceCheck,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Option<ObjectRecord>>;
    async fn get_soft_object(
        &self,
        bucket: &str,
        bucket_gen: i64,
        name: &str,
        generation: i64,
    ) -> StorageResult<Option<ObjectRecord>>;
    /// Makes a soft-deleted generation live again as `spec.new_generation`; returns it
    /// and the live generation it replaced, if that one was removed (for its blob).
    async fn restore_object(
        &self,
        spec: &RestoreSpec,
        check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)>;
    /// Hard-deletes soft-deleted generations (at most `limit`) and buckets whose time
    /// has come; returns what went, for blobs and policies.
    #[allow(clippy::type_complexity)]
    async fn take_hard_deletes(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StorageResult<(Vec<ObjectRecord>, Vec<(Bucket, Vec<ObjectRecord>)>)>;
    async fn get_soft_bucket(&self, name: &str, generation: i64) -> StorageResult<Option<Bucket>>;
    async fn list_soft_buckets(&self, project: &str, prefix: &str) -> StorageResult<Vec<Bucket>>;
    async fn restore_bucket(
        &self,
        name: &str,
        generation: i64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<Bucket>;
    /// How many generations of `name` are newer than `generation` (live included).
    async fn newer_generations(&self, bucket: &str, name: &str, generation: i64) -> StorageResult<u64>;
    /// Every bucket that has lifecycle rules, by name.
    async fn buckets_with_lifecycle(&self) -> StorageResult<Vec<Bucket>>;
    /// A background worker's persisted cursor (`None`: none saved).
    async fn get_cursor(&self, worker: &str) -> StorageResult<Option<String>>;
    /// Saves (or with `None` clears) a background worker's cursor.
    async fn put_cursor(&self, worker: &str, cursor: Option<&str>) -> StorageResult<()>;
    /// Renames a live object within its bucket in one transaction: the source row
    /// becomes the destination's new live generation, data and envelope unchanged.
    /// Returns the new record and the destination generation it replaced, if that one
    /// was removed (so the caller can delete its blob).
    async fn move_object(
        &self,
        mv: &MoveSpec,
        src_check: ReplaceCheck,
        dst_check: ReplaceCheck,
    ) -> StorageResult<(ObjectRecord, Option<ObjectRecord>)>;
    async fn put_session(&self, s: &UploadSession) -> StorageResult<()>;
    async fn get_session(&self, id: &str) -> StorageResult<Option<UploadSession>>;
    async fn delete_session(&self, id: &str) -> StorageResult<()>;
    /// Resumable upload sessions not yet finished or cancelled.
    async fn count_sessions(&self) -> StorageResult<u64>;
    /// Whether the store answers reads and commits writes (readiness).
    async fn ping(&self) -> StorageResult<()>;
    /// Generations of `bucket` whose key column lies in `[lo, hi)`, after (name, generation).
    async fn objects_by_key(
        &self,
        bucket: &str,
        lo: &str,
        hi: &str,
        after: Option<(String, i64)>,
        limit: usize,
    ) -> StorageResult<Vec<ObjectRecord>>;
    /// Every generation (in every bucket) whose DEK is wrapped by this exact key version.
    async fn objects_with_key_version(&self, version: &str) -> StorageResult<Vec<ObjectRecord>>;
    /// Every blob id referenced by an object or a session, with its number of parts.
    async fn blob_ids(&self) -> StorageResult<HashMap<String, usize>>;
    async fn put_rekey_job(&self, job: &crate::rekey_job::RekeyJob) -> StorageResult<()>;
    async fn get_rekey_job(&self, name: &str) -> StorageResult<Option<crate::rekey_job::RekeyJob>>;
    async fn running_rekey_jobs(&self) -> StorageResult<Vec<crate::rekey_job::RekeyJob>>;
    /// A new generation number: unique across every process on this store, greater than
    /// any before it, and at least `now_micros` (GCS generations are timestamps).
    async fn next_generation(&self, now_micros: i64) -> StorageResult<i64>;
    /// XML API multipart uploads and their parts (`storage::multipart`).
    async fn put_multipart(&self, u: &crate::multipart::MultipartUpload) -> StorageResult<()>;
    async fn get_multipart(&self, id: &str) -> StorageResult<Option<crate::multipart::MultipartUpload>>;
    /// Uploads of a bucket by (name, id) after `after`, names starting with `prefix`.
    async fn list_multipart(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> StorageResult<Vec<crate::multipart::MultipartUpload>>;
    /// Stores a part, returning the one it replaced. Fails if the upload is gone.
    async fn put_part(&self, p: &crate::multipart::Part) -> StorageResult<Option<crate::multipart::Part>>;
    async fn list_parts(&self, upload_id: &str, after: u32, limit: usize)
    -> StorageResult<Vec<crate::multipart::Part>>;
    /// Removes an upload and its parts, returning the parts (their blobs are the
    /// caller's to delete). `None` if there was no such upload.
    async fn delete_multipart(&self, id: &str) -> StorageResult<Option<Vec<crate::multipart::Part>>>;
    /// Ids of uploads started before `before`.
    async fn multipart_started_before(&self, before: chrono::DateTime<chrono::Utc>) -> StorageResult<Vec<String>>;
}
