//! The object engine: buckets, envelope-encrypted writes and reads, listing, copy and
//! compose. Blob first, then the metadata row in one transaction: a failed or rejected
//! write leaves nothing visible, and its blob is deleted (or swept after a crash).

use super::blobs::{BlobStore, new_blob_id};
use super::csek::CustomerKey;
use super::enforcement::RestrictionMode;
use super::error::{StorageError, StorageResult};
use super::hashing::Hashes;
use super::keys::{KeyChoice, KeyService, check_key_location};
use super::meta::{ListQuery, MetaStore};
use super::model::{
    Bucket, Envelope, InlineData, KeyKind, ObjectMeta, ObjectRecord, ObjectRetention, Preconditions, RetentionPolicy,
    SoftDeletePolicy, WriteProtection,
};
use super::names::{check_bucket_name, check_object_name};
use super::segment::{Dek, ObjectCipher, SEGMENT, TAG, random_prefix, segment_count, segment_plain_len};
use super::sink::{SegmentSink, Stored};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sealstore_core::clock::Clock;
use sealstore_core::locations::LocationKind;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "NEARLINE",
    "COLDLINE",
    "ARCHIVE",
    "MULTI_REGIONAL",
    "REGIONAL",
    "DURABLE_REDUCED_AVAILABILITY",
];
pub const MAX_COMPOSE_SOURCES: usize = 32;
/// Names a `matchGlob` listing may skip before it ends the page with a token.
const MAX_FILTERED_PER_PAGE: usize = 10_000;
/// Segments fetched per blob read while streaming a download (about 4 MiB).
const READ_BATCH: u64 = 64;
/// Batches of a download in flight at once (this one and the next).
const READ_AHEAD: usize = 2;
/// How long a cached bucket is used without reading it again: the bound on seeing a
/// bucket change made by another process.
pub const BUCKET_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Storage {
    /// Objects smaller than this many bytes are stored inline.
    inline_max: usize,
    /// The soft-delete duration new buckets get unless they ask otherwise (seconds).
    default_soft_delete: i64,
    pub(super) meta: Arc<dyn MetaStore>,
    pub(super) blobs: BlobStore,
    pub(super) keys: Arc<dyn KeyService>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) active_sessions: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Bucket metadata is read on every request and rarely changes: cached, updated by
    /// every bucket write through this process, and read again once older than
    /// `BUCKET_CACHE_TTL` (another gateway on the database, or the CLI, may change it).
    /// Decisions that need certainty (a bucket deleted, retention on delete) are checked
    /// inside the store's transaction.
    bucket_cache: std::sync::RwLock<std::collections::HashMap<String, (std::time::Instant, Bucket)>>,
    /// Cancel flags of the re-key jobs running in this process.
    pub(super) rekey_cancel: std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::atomic::AtomicBool>>>,
    /// Set at shutdown: running re-key jobs save their cursor and stop, staying RUNNING
    /// so the next start resumes them.
    pub(super) rekey_pause: std::sync::atomic::AtomicBool,
    /// Leases on re-key jobs, and this process's holder name: of all processes on one
    /// database, the holder of a job's lease runs it. `None`: this process runs them all.
    pub(super) job_leases: Option<(Arc<sealstore_core::leases::Leases>, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct NewBucket {
    pub name: String,
    pub location: Option<String>,
    pub data_locations: Vec<String>,
    pub storage_class: Option<String>,
    pub versioning: bool,
    pub labels: BTreeMap<String, String>,
    pub default_kms_key_name: Option<String>,
    pub retention_period: Option<i64>,
    pub default_event_based_hold: bool,
    pub object_retention: bool,
    /// Encryption enforcement modes to set (`None` mode: unset).
    pub enforcement: Vec<(KeyKind, Option<RestrictionMode>)>,
    /// `inherited` or `enforced` (validated by the API layer).
    pub public_access_prevention: Option<String>,
    pub rpo: Option<String>,
    pub lifecycle: Vec<super::lifecycle::Rule>,
    /// `softDeletePolicy.retentionDurationSeconds`; `None`: the server default.
    pub soft_delete_seconds: Option<i64>,
}

/// Which key an objects-by-key query looks for.
#[derive(Debug, Clone)]
pub enum KeyFilter {
    /// Any version of this (unversioned) KMS key.
    Key(String),
    /// One KMS key version.
    Version(String),
    /// A customer-supplied key, by its base64 SHA-256.
    Csek(String),
}

/// Fields a bucket patch names; `Some(None)` clears.
#[derive(Debug, Clone, Default)]
pub struct BucketPatch {
    pub versioning: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub storage_class: Option<String>,
    pub default_kms_key_name: Option<Option<String>>,
    /// Retention period in seconds; `Some(None)` removes the policy.
    pub retention_period: Option<Option<i64>>,
    pub default_event_based_hold: Option<bool>,
    pub enforcement: Vec<(KeyKind, Option<RestrictionMode>)>,
    pub public_access_prevention: Option<String>,
    /// `Some(None)` resets it to the location's default.
    pub rpo: Option<Option<String>>,
    /// `Some(vec![])` removes every rule.
    pub lifecycle: Option<Vec<super::lifecycle::Rule>>,
    /// A new soft-delete duration in seconds (0 turns it off).
    pub soft_delete_seconds: Option<i64>,
}

/// `rpo` values and where they apply: `ASYNC_TURBO` (turbo replication) only on
/// dual-regions; regions have none.
fn check_rpo(rpo: Option<&str>, location_type: &str) -> StorageResult<Option<String>> {
    match (rpo, location_type) {
        (None, "region") => Ok(None),
        (None, _) => Ok(Some("DEFAULT".into())),
        (Some("DEFAULT"), _) => Ok(Some("DEFAULT".into())),
        (Some("ASYNC_TURBO"), "dual-region") => Ok(Some("ASYNC_TURBO".into())),
        (Some("ASYNC_TURBO"), _) => Err(StorageError::invalid(
            "Invalid rpo ASYNC_TURBO: turbo replication is only available on dual-region buckets.",
        )),
        (Some(other), _) => Err(StorageError::invalid(format!(
            "Invalid rpo \"{other}\": use DEFAULT or ASYNC_TURBO."
        ))),
    }
}

/// Changes to an object's holds and retention (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct ProtectionPatch {
    pub temporary_hold: Option<bool>,
    pub event_based_hold: Option<bool>,
    /// `Some(None)` removes the object's retention.
    pub retention: Option<Option<ObjectRetention>>,
    pub override_unlocked_retention: bool,
}

/// GCS allows retention periods up to 100 years.
const MAX_RETENTION_SECS: i64 = 100 * 365 * 86_400;

fn check_period(p: i64) -> StorageResult<()> {
    if p <= 0 || p >= MAX_RETENTION_SECS {
        return Err(StorageError::invalid(format!(
            "Invalid retentionPeriod {p}: it must be between 1 second and 100 years."
        )));
    }
    Ok(())
}

fn check_retention_mode(r: &ObjectRetention) -> StorageResult<()> {
    if r.mode != "Unlocked" && r.mode != "Locked" {
        return Err(StorageError::invalid(format!(
            "Invalid object retention mode {:?}: use Unlocked or Locked.",
            r.mode
        )));
    }
    Ok(())
}

/// Everything about a new object generation except its data.
#[derive(Debug, Clone)]
pub struct WriteSpec {
    pub bucket: String,
    pub name: String,
    pub meta: ObjectMeta,
    pub storage_class: Option<String>,
    pub preconditions: Preconditions,
    pub expected_crc32c: Option<u32>,
    pub expected_md5: Option<[u8; 16]>,
    /// The key the request names (`kmsKeyName`); `None` falls back to the bucket default.
    pub kms_key_name: Option<String>,
    /// For composites: their component count. Composites have no MD5.
    pub component_count: Option<u32>,
    pub protection: WriteProtection,
    /// Use the Google-managed key even if the bucket has a default key (re-key jobs
    /// moving objects back to Google-managed encryption).
    pub force_google_managed: bool,
    /// The caller may replace an existing live object (`storage.objects.delete`).
    pub may_replace: bool,
    /// A customer-supplied key: it protects the object instead of any KMS key.
    pub csek: Option<Arc<CustomerKey>>,
    /// The S3 ETag of an object completed from a multipart upload (`…-N`).
    pub multipart_etag: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHashes {
    pub crc32c: u32,
    pub md5: Option<[u8; 16]>,
}

/// An object whose data key has been unwrapped: it can be read.
pub struct OpenObject {
    pub record: ObjectRecord,
    pub hashes: ObjectHashes,
    cipher: Arc<ObjectCipher>,
}

impl std::fmt::Debug for OpenObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenObject")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListSpec {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub versions: bool,
    pub max_results: Option<usize>,
    pub page_token: Option<String>,
    pub start_offset: Option<String>,
    pub end_offset: Option<String>,
    pub include_trailing_delimiter: bool,
    /// Only names matching this glob (before delimiter collapsing).
    pub match_glob: Option<Arc<super::glob::Glob>>,
    /// Soft-deleted generations instead of live (or noncurrent) ones.
    pub soft_deleted: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub items: Vec<ObjectRecord>,
    pub prefixes: Vec<String>,
    pub next_page_token: Option<String>,
}

/// Where a listing resumes: strictly after an entry, or at a name.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Cursor {
    After(String, i64),
    At(String),
}

fn encode_token(c: &Cursor) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).expect("cursor serializes"))
}

fn decode_token(t: &str) -> StorageResult<Cursor> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| StorageError::invalid(format!("Invalid pageToken: {t}")))
}

/// The smallest string greater than every string starting with `p`.
fn prefix_successor(p: &str) -> Option<String> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = char::from_u32(c as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// An inline object's sealed data, for a record that was read without it (listings).
async fn load_inline(meta: Arc<dyn MetaStore>, bucket: String, name: String, generation: i64) -> StorageResult<Bytes> {
    let rec = meta.get_object(&bucket, &name, Some(generation)).await?;
    rec.and_then(|r| r.envelope.inline_data)
        .map(|d| d.0)
        .ok_or_else(|| StorageError::NotFound("The object generation no longer exists.".into()))
}

fn dek_aad(blob_id: &str) -> Vec<u8> {
    let mut v = b"sealstore-dek-v1\0".to_vec();
    v.extend_from_slice(blob_id.as_bytes());
    v
}

impl Storage {
    pub fn new(
        meta: Arc<dyn MetaStore>,
        blobs: BlobStore,
        keys: Arc<dyn KeyService>,
        clock: Arc<dyn Clock>,
    ) -> StorageResult<Self> {
        Ok(Self {
            meta,
            blobs,
            keys,
            clock,
            active_sessions: Default::default(),
            bucket_cache: Default::default(),
            rekey_cancel: Default::default(),
            rekey_pause: Default::default(),
            job_leases: None,
            default_soft_delete: super::soft_delete::DEFAULT_SECONDS,
            inline_max: SEGMENT,
        })
    }

    /// Objects smaller than `bytes` (at most one segment, 65536) are stored inline in
    /// their metadata row; 0 sends every object to the blob store.
    pub fn with_inline_max(mut self, bytes: usize) -> Self {
        self.inline_max = bytes.min(SEGMENT);
        self
    }

    /// Runs a re-key job only while holding its lease in `leases` as `holder`.
    pub fn with_job_leases(mut self, leases: Arc<sealstore_core::leases::Leases>, holder: String) -> Self {
        self.job_leases = Some((leases, holder));
        self
    }

    /// The soft-delete duration for new buckets that do not set one (0: off).
    pub fn with_default_soft_delete(mut self, seconds: i64) -> StorageResult<Self> {
        super::soft_delete::check_duration(seconds)?;
        self.default_soft_delete = seconds;
        Ok(self)
    }

    /// The metadata store (for the destruction guard, which runs outside requests).
    pub fn meta(&self) -> Arc<dyn MetaStore> {
        self.meta.clone()
    }

    /// Generations of a bucket encrypted with a key (any version), one key version, or a
    /// customer key (`csek:<sha256>`): an indexed query, not a scan. Returns a page and
    /// the token of the next.
    pub async fn objects_by_key(
        &self,
        bucket: &str,
        filter: KeyFilter,
        page_token: Option<&str>,
        limit: usize,
    ) -> StorageResult<(Vec<ObjectRecord>, Option<String>)> {
        self.get_bucket(bucket).await?;
        let (lo, hi) = match filter {
            KeyFilter::Key(k) => (format!("{k}/cryptoKeyVersions/"), format!("{k}/cryptoKeyVersions0")),
            KeyFilter::Version(v) => (v.clone(), format!("{v}\u{1}")),
            KeyFilter::Csek(sha) => (format!("csek:{sha}"), format!("csek:{sha}\u{1}")),
        };
        let after = match page_token {
            None | Some("") => None,
            Some(t) => match decode_token(t)? {
                Cursor::After(n, g) => Some((n, g)),
                Cursor::At(_) => return Err(StorageError::invalid("Invalid pageToken.")),
            },
        };
        let (b, limit) = (bucket.to_owned(), limit.clamp(1, 1000));
        let mut items = self.meta.objects_by_key(&b, &lo, &hi, after, limit + 1).await?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|r| encode_token(&Cursor::After(r.name.clone(), r.generation)))
        } else {
            None
        };
        Ok((items, next))
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Generations are microsecond timestamps, strictly increasing, unique across
    /// every process on the metadata store.
    pub(super) async fn next_generation(&self) -> StorageResult<i64> {
        self.meta.next_generation(self.clock.now().timestamp_micros()).await
    }

    /// Readiness: the metadata store reads and its writer commits, and the blob store
    /// answers.
    pub async fn ready(&self) -> StorageResult<()> {
        self.meta.ping().await?;
        self.blobs.ping().await
    }

    /// Resumable sessions open now (a metrics gauge).
    pub async fn open_sessions(&self) -> StorageResult<u64> {
        self.meta.count_sessions().await
    }

    /// Deletes the blob parts of a generation that is gone (inline data went with its row).
    pub(super) async fn discard_blob(&self, env: &Envelope) {
        if !env.inline {
            self.blobs.delete(&env.blob_id, env.parts.len()).await;
        }
    }

    /// Removes unreferenced blob files older than `older_than` (all of them at start-up,
    /// before any request can be writing one). Blobs being written are left alone.
    pub async fn sweep(&self, older_than: chrono::DateTime<chrono::Utc>) -> StorageResult<usize> {
        self.blobs.sweep(older_than, || self.meta.blob_ids()).await
    }

    // ---- buckets -------------------------------------------------------------------

    pub async fn create_bucket(&self, project: &str, spec: NewBucket) -> StorageResult<Bucket> {
        check_bucket_name(&spec.name)?;
        let requested = spec.location.clone().unwrap_or_else(|| "US".into());
        let loc = sealstore_core::locations::find(&requested)
            .filter(|l| l.kind != LocationKind::Global)
            .ok_or_else(|| {
                StorageError::invalid(format!("The specified location constraint is not valid: {requested}."))
            })?;
        let mut location_type = match loc.kind {
            LocationKind::Region => "region",
            LocationKind::DualRegion => "dual-region",
            _ => "multi-region",
        };
        let mut data_locations = vec![];
        if !spec.data_locations.is_empty() {
            // A configurable dual-region: two regions inside the named multi-region.
            let regions: Vec<_> = spec
                .data_locations
                .iter()
                .map(|r| sealstore_core::locations::find(r))
                .collect();
            let valid = loc.kind == LocationKind::MultiRegion
                && regions.len() == 2
                && regions
                    .iter()
                    .all(|r| r.is_some_and(|r| r.kind == LocationKind::Region && r.multi_region == Some(loc.id)));
            if !valid {
                return Err(StorageError::invalid(format!(
                    "Invalid custom placement: dataLocations must be two regions within {}.",
                    requested.to_uppercase()
                )));
            }
            data_locations = spec.data_locations.iter().map(|r| r.to_uppercase()).collect();
            location_type = "dual-region";
        }
        let storage_class = spec
            .storage_class
            .clone()
            .unwrap_or_else(|| "STANDARD".into())
            .to_uppercase();
        if !STORAGE_CLASSES.contains(&storage_class.as_str()) {
            return Err(StorageError::invalid(format!(
                "Invalid storage class: {storage_class}."
            )));
        }
        let now = self.clock.now();
        let bucket = Bucket {
            name: spec.name,
            project: project.to_owned(),
            location: loc.id.to_uppercase(),
            location_type: location_type.into(),
            data_locations,
            storage_class,
            time_created: now,
            updated: now,
            metageneration: 1,
            versioning: spec.versioning,
            labels: spec.labels,
            default_kms_key_name: spec.default_kms_key_name,
            retention_policy: match spec.retention_period {
                Some(p) => {
                    check_period(p)?;
                    Some(RetentionPolicy {
                        retention_period: p,
                        effective_time: now,
                        is_locked: false,
                    })
                }
                None => None,
            },
            default_event_based_hold: spec.default_event_based_hold,
            object_retention: spec.object_retention,
            encryption_enforcement: Default::default(),
            public_access_prevention: spec.public_access_prevention.unwrap_or_else(|| "inherited".into()),
            rpo: check_rpo(spec.rpo.as_deref(), location_type)?,
            lifecycle: {
                super::lifecycle::validate(&spec.lifecycle, STORAGE_CLASSES)?;
                spec.lifecycle
            },
            soft_delete_policy: {
                let secs = spec.soft_delete_seconds.unwrap_or(self.default_soft_delete);
                super::soft_delete::check_duration(secs)?;
                Some(SoftDeletePolicy {
                    retention_duration_seconds: secs,
                    effective_time: now,
                })
            },
            soft_delete_time: None,
            hard_delete_time: None,
        };
        let mut bucket = bucket;
        for (kind, mode) in &spec.enforcement {
            bucket.encryption_enforcement.set(kind, *mode, now);
        }
        bucket
            .encryption_enforcement
            .check_default_key(bucket.default_kms_key_name.as_deref())?;
        if let Some(k) = &bucket.default_kms_key_name {
            self.validate_default_key(&bucket, k)?;
        }
        let b = bucket.clone();
        self.meta.insert_bucket(&b).await?;
        self.cache_bucket(&bucket);
        Ok(bucket)
    }

    /// A bucket's default key must be an unversioned, usable key in the right location.
    fn validate_default_key(&self, bucket: &Bucket, key: &str) -> StorageResult<()> {
        if key.contains("/cryptoKeyVersions/") {
            return Err(StorageError::invalid(format!("Bad Cloud KMS crypto key: {key}")));
        }
        check_key_location(bucket, key)?;
        Ok(self.keys.validate(&bucket.project, key)?)
    }

    pub async fn get_bucket(&self, name: &str) -> StorageResult<Bucket> {
        if let Some((at, b)) = self.bucket_cache.read().unwrap_or_else(|e| e.into_inner()).get(name)
            && at.elapsed() < BUCKET_CACHE_TTL
        {
            return Ok(b.clone());
        }
        // Timed from before the read: the bound holds from when the row was current.
        let at = std::time::Instant::now();
        let n = name.to_owned();
        let Some(b) = self.meta.get_bucket(&n).await? else {
            self.forget_bucket(name);
            return Err(StorageError::NotFound(format!(
                "The specified bucket does not exist: {name}"
            )));
        };
        self.bucket_cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(b.name.clone(), (at, b.clone()));
        Ok(b)
    }

    /// The project of a bucket this process has seen (no I/O).
    /// Whether public members (allUsers, allAuthenticatedUsers) may be granted access to
    /// a bucket: false once its public access prevention is enforced. A bucket not in the
    /// cache (it does not exist) grants nothing to anyone anyway.
    pub fn cached_bucket_public_ok(&self, name: &str) -> bool {
        self.bucket_cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .is_none_or(|(_, b)| b.public_access_prevention != "enforced")
    }

    pub fn cached_bucket_project(&self, name: &str) -> Option<String> {
        self.bucket_cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|(_, b)| b.project.clone())
    }

    fn cache_bucket(&self, b: &Bucket) {
        self.bucket_cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(b.name.clone(), (std::time::Instant::now(), b.clone()));
    }

    pub(super) fn forget_bucket(&self, name: &str) {
        self.bucket_cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    pub async fn list_buckets(
        &self,
        project: &str,
        prefix: &str,
        page_token: Option<&str>,
        max: Option<usize>,
    ) -> StorageResult<(Vec<Bucket>, Option<String>)> {
        let limit = max.unwrap_or(1000).clamp(1, 1000);
        let (p, pre, after) = (project.to_owned(), prefix.to_owned(), page_token.map(str::to_owned));
        let mut page = self.meta.list_buckets(&p, &pre, after.as_deref(), limit + 1).await?;
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|b| b.name.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    pub async fn patch_bucket(
        &self,
        name: &str,
        patch: BucketPatch,
        if_metageneration_match: Option<i64>,
    ) -> StorageResult<Bucket> {
        // Without a metageneration precondition a lost race is retried (see
        // `update_object_meta`).
        let mut attempt = 0u32;
        loop {
            match self
                .patch_bucket_once(name, patch.clone(), if_metageneration_match)
                .await
            {
                Err(StorageError::ConcurrentChange(_))
                    if if_metageneration_match.is_none() && attempt < METADATA_RACE_RETRIES =>
                {
                    attempt += 1;
                    race_backoff(attempt).await;
                }
                other => return other,
            }
        }
    }

    async fn patch_bucket_once(
        &self,
        name: &str,
        patch: BucketPatch,
        if_metageneration_match: Option<i64>,
    ) -> StorageResult<Bucket> {
        let mut b = self.get_bucket(name).await?;
        if let Some(m) = if_metageneration_match
            && m != b.metageneration
        {
            return Err(StorageError::PreconditionFailed(
                "At least one of the pre-conditions you specified did not hold (ifMetagenerationMatch).".into(),
            ));
        }
        let expected = b.metageneration;
        if let Some(v) = patch.versioning {
            b.versioning = v;
        }
        if let Some(l) = patch.labels {
            b.labels = l;
        }
        if let Some(c) = patch.storage_class {
            let c = c.to_uppercase();
            if !STORAGE_CLASSES.contains(&c.as_str()) {
                return Err(StorageError::invalid(format!("Invalid storage class: {c}.")));
            }
            b.storage_class = c;
        }
        if let Some(k) = patch.default_kms_key_name {
            if let Some(name) = &k {
                self.validate_default_key(&b, name)?;
            }
            b.default_kms_key_name = k;
        }
        if let Some(h) = patch.default_event_based_hold {
            b.default_event_based_hold = h;
        }
        let now = self.clock.now();
        for (kind, mode) in &patch.enforcement {
            b.encryption_enforcement.set(kind, *mode, now);
        }
        if let Some(p) = patch.public_access_prevention {
            b.public_access_prevention = p;
        }
        if let Some(r) = patch.rpo {
            b.rpo = check_rpo(r.as_deref(), &b.location_type)?;
        }
        if let Some(rules) = patch.lifecycle {
            super::lifecycle::validate(&rules, STORAGE_CLASSES)?;
            b.lifecycle = rules;
        }
        if let Some(secs) = patch.soft_delete_seconds {
            super::soft_delete::check_duration(secs)?;
            if b.soft_delete_policy.as_ref().map(|p| p.retention_duration_seconds) != Some(secs) {
                b.soft_delete_policy = Some(SoftDeletePolicy {
                    retention_duration_seconds: secs,
                    effective_time: now,
                });
            }
        }
        b.encryption_enforcement
            .check_default_key(b.default_kms_key_name.as_deref())?;
        if let Some(change) = patch.retention_period {
            let now = self.clock.now();
            b.retention_policy = match (b.retention_policy.take(), change) {
                (Some(p), None) if p.is_locked => {
                    return Err(StorageError::Forbidden {
                        reason: "retentionPolicyNotMet",
                        message: format!(
                            "Bucket '{}' has a locked Retention Policy which cannot be removed.",
                            b.name
                        ),
                    });
                }
                (_, None) => None,
                (Some(p), Some(new)) if p.is_locked && new < p.retention_period => {
                    return Err(StorageError::BadRequest {
                        reason: "badRequest",
                        message: "The retention period on a locked bucket cannot be reduced.".into(),
                    });
                }
                (Some(p), Some(new)) => {
                    check_period(new)?;
                    Some(RetentionPolicy {
                        retention_period: new,
                        ..p
                    })
                }
                (None, Some(new)) => {
                    check_period(new)?;
                    Some(RetentionPolicy {
                        retention_period: new,
                        effective_time: now,
                        is_locked: false,
                    })
                }
            };
        }
        b.metageneration += 1;
        b.updated = self.clock.now();
        let nb = b.clone();
        let result = self.meta.update_bucket(&nb, expected).await;
        // On failure the cached copy may be stale: drop it either way, then re-cache.
        self.forget_bucket(name);
        result?;
        self.cache_bucket(&b);
        Ok(b)
    }

    /// Locks the bucket's retention policy for good (`ifMetagenerationMatch` required).
    pub async fn lock_retention_policy(
        &self,
        name: &str,
        if_metageneration_match: Option<i64>,
    ) -> StorageResult<Bucket> {
        let Some(m) = if_metageneration_match else {
            return Err(StorageError::BadRequest {
                reason: "required",
                message: "Required parameter: ifMetagenerationMatch".into(),
            });
        };
        let mut b = self.get_bucket(name).await?;
        if b.metageneration != m {
            return Err(StorageError::PreconditionFailed(
                "At least one of the pre-conditions you specified did not hold (ifMetagenerationMatch).".into(),
            ));
        }
        match b.retention_policy.as_mut() {
            None => {
                return Err(StorageError::BadRequest {
                    reason: "badRequest",
                    message: format!("Bucket '{name}' has no retention policy to lock."),
                });
            }
            Some(p) => p.is_locked = true,
        }
        b.metageneration += 1;
        b.updated = self.clock.now();
        let nb = b.clone();
        let result = self.meta.update_bucket(&nb, m).await;
        self.forget_bucket(name);
        result?;
        self.cache_bucket(&b);
        Ok(b)
    }

    /// Deletes an empty bucket. Returns its generation when it became soft-deleted
    /// (its soft delete policy is on), so the caller can keep its IAM policy with it.
    pub async fn delete_bucket(&self, name: &str, if_metageneration_match: Option<i64>) -> StorageResult<Option<i64>> {
        let b = self.get_bucket(name).await?;
        let soft = b
            .soft_delete_policy
            .as_ref()
            .is_some_and(|p| p.retention_duration_seconds > 0)
            .then(|| b.generation());
        let (n, now) = (name.to_owned(), self.clock.now());
        let result = self.meta.delete_bucket(&n, if_metageneration_match, now).await;
        self.forget_bucket(name);
        for r in result? {
            self.discard_blob(&r.envelope).await;
        }
        Ok(soft)
    }

    // ---- writes ----------------------------------------------------------------------

    /// Seals a fresh DEK for a new object of `bucket`. Precedence: a customer-supplied
    /// key, else the request's KMS key, else the bucket default, else the Google-managed
    /// key. A CSEK together with an explicit KMS key is refused.
    pub(super) fn new_envelope(
        &self,
        bucket: &Bucket,
        kms_key_name: Option<&str>,
        csek: Option<&CustomerKey>,
    ) -> StorageResult<(Envelope, Arc<ObjectCipher>)> {
        let dek = Dek::generate();
        let blob_id = new_blob_id();
        let prefix = random_prefix();
        let aad = dek_aad(&blob_id);
        let (kind, key_version, wrapped_dek, csek_sha256) = match (csek, kms_key_name) {
            (Some(_), Some(_)) => {
                return Err(StorageError::invalid(
                    "A customer-supplied encryption key and a Cloud KMS key cannot both be used for one object.",
                ));
            }
            (Some(k), None) => {
                bucket.encryption_enforcement.check(&bucket.name, &KeyKind::Csek)?;
                (
                    KeyKind::Csek,
                    String::new(),
                    k.wrap(dek.bytes(), &aad),
                    Some(k.sha256_b64()),
                )
            }
            (None, requested) => {
                let choice = match requested.or(bucket.default_kms_key_name.as_deref()) {
                    Some(k) => {
                        check_key_location(bucket, k)?;
                        KeyChoice::Cmek(k.to_owned())
                    }
                    None => KeyChoice::GoogleManaged,
                };
                let kind = if choice == KeyChoice::GoogleManaged {
                    KeyKind::GoogleManaged
                } else {
                    KeyKind::Cmek
                };
                // Refused before the key is used: a forbidden write makes no KMS call.
                bucket.encryption_enforcement.check(&bucket.name, &kind)?;
                let wrapped = self.keys.wrap(&bucket.project, &choice, dek.bytes(), &aad)?;
                (kind, wrapped.key_version, wrapped.ciphertext, None)
            }
        };
        let cipher = Arc::new(ObjectCipher::new(&dek, prefix, &blob_id));
        let envelope = Envelope {
            project: bucket.project.clone(),
            kind,
            key_version,
            wrapped_dek,
            csek_sha256,
            blob_id,
            nonce_prefix: prefix.to_vec(),
            parts: vec![],
            sealed_hashes: vec![],
            inline: false,
            inline_data: None,
        };
        Ok((envelope, cipher))
    }

    /// A fresh DEK under the Google-managed key, whatever the bucket default.
    pub(super) fn google_managed_envelope(&self, bucket: &Bucket) -> StorageResult<(Envelope, Arc<ObjectCipher>)> {
        let mut b = bucket.clone();
        b.default_kms_key_name = None;
        self.new_envelope(&b, None, None)
    }

    /// Wraps an existing object's DEK again under another key: metadata only, the data
    /// and generation stay (re-key jobs' `rewrap` mode).
    pub(super) fn rewrap_envelope(
        &self,
        opened: &OpenObject,
        bucket: &Bucket,
        to: Option<&str>,
    ) -> StorageResult<Envelope> {
        let env = &opened.record.envelope;
        let dek = self.unwrap_dek_bytes(env)?;
        let choice = match to {
            Some(k) => {
                check_key_location(bucket, k)?;
                KeyChoice::Cmek(k.to_owned())
            }
            None => KeyChoice::GoogleManaged,
        };
        let kind = if to.is_some() {
            KeyKind::Cmek
        } else {
            KeyKind::GoogleManaged
        };
        // A re-key target is a new encryption for the object: the bucket must allow it.
        bucket.encryption_enforcement.check(&bucket.name, &kind)?;
        let wrapped = self.keys.wrap(&bucket.project, &choice, &dek, &dek_aad(&env.blob_id))?;
        Ok(Envelope {
            kind,
            key_version: wrapped.key_version,
            wrapped_dek: wrapped.ciphertext,
            ..env.clone()
        })
    }

    fn unwrap_dek_bytes(&self, env: &Envelope) -> StorageResult<zeroize::Zeroizing<Vec<u8>>> {
        Ok(self
            .keys
            .unwrap(&env.project, &env.key_version, &env.wrapped_dek, &dek_aad(&env.blob_id))?)
    }

    /// Recovers an object's DEK: through the KMS (which checks the version is usable and
    /// the service agent may use it) or with the customer-supplied key, which must be
    /// the one the object was written with.
    pub(super) fn unwrap_dek(&self, env: &Envelope, csek: Option<&CustomerKey>) -> StorageResult<Arc<ObjectCipher>> {
        let aad = dek_aad(&env.blob_id);
        let dek_bytes = match (&env.kind, csek) {
            (KeyKind::Csek, None) => {
                return Err(StorageError::BadRequest {
                    reason: "resourceIsEncryptedWithCustomerEncryptionKey",
                    message: "The target object is encrypted by a customer-supplied encryption key.".into(),
                });
            }
            (KeyKind::Csek, Some(k)) => {
                if !env.csek_sha256.as_deref().is_some_and(|s| k.matches(s)) {
                    return Err(StorageError::BadRequest {
                        reason: "customerEncryptionKeyIsIncorrect",
                        message: "The provided encryption key is incorrect.".into(),
                    });
                }
                k.unwrap(&env.wrapped_dek, &aad)?
            }
            (_, Some(_)) => {
                return Err(StorageError::BadRequest {
                    reason: "resourceNotEncryptedWithCustomerEncryptionKey",
                    message: "The target object is not encrypted by a customer-supplied encryption key.".into(),
                });
            }
            (_, None) => self
                .keys
                .unwrap(&env.project, &env.key_version, &env.wrapped_dek, &aad)?,
        };
        let dek =
            Dek::from_bytes(&dek_bytes).ok_or_else(|| StorageError::internal("unwrapped DEK has the wrong length"))?;
        let prefix: [u8; 7] = env
            .nonce_prefix
            .as_slice()
            .try_into()
            .map_err(|_| StorageError::internal("bad nonce prefix"))?;
        Ok(Arc::new(ObjectCipher::new(&dek, prefix, &env.blob_id)))
    }

    /// Unwraps an object's DEK and its hashes, so it can be read.
    pub fn open(&self, record: ObjectRecord, csek: Option<&CustomerKey>) -> StorageResult<OpenObject> {
        let cipher = self.unwrap_dek(&record.envelope, csek)?;
        let (crc32c, md5) = cipher
            .open_hashes(&record.envelope.sealed_hashes)
            .map_err(|_| StorageError::internal("sealed hashes failed to open"))?;
        Ok(OpenObject {
            record,
            hashes: ObjectHashes { crc32c, md5 },
            cipher,
        })
    }

    pub(super) fn check_expected(spec: &WriteSpec, crc: u32, md5: &[u8; 16]) -> StorageResult<()> {
        use super::hashing::{crc32c_b64, md5_b64};
        if let Some(want) = spec.expected_crc32c
            && want != crc
        {
            return Err(StorageError::invalid(format!(
                "Provided CRC32C \"{}\" doesn't match calculated CRC32C \"{}\".",
                crc32c_b64(want),
                crc32c_b64(crc)
            )));
        }
        if let Some(want) = spec.expected_md5
            && &want != md5
        {
            return Err(StorageError::invalid(format!(
                "Provided MD5 hash \"{}\" doesn't match calculated MD5 hash \"{}\".",
                md5_b64(&want),
                md5_b64(md5)
            )));
        }
        Ok(())
    }

    /// Checks names, bucket and preconditions before any data is read, so doomed
    /// uploads fail fast.
    pub(super) async fn prepare_write(&self, spec: &WriteSpec) -> StorageResult<Bucket> {
        check_object_name(&spec.name)?;
        let bucket = self.get_bucket(&spec.bucket).await?;
        if let Some(c) = &spec.storage_class
            && !STORAGE_CLASSES.contains(&c.to_uppercase().as_str())
        {
            return Err(StorageError::invalid(format!("Invalid storage class: {c}.")));
        }
        if spec.protection.retention.is_some() && !bucket.object_retention {
            return Err(StorageError::invalid(format!(
                "Object retention is not enabled on bucket {}: create it with enableObjectRetention=true.",
                bucket.name
            )));
        }
        if let Some(r) = &spec.protection.retention {
            check_retention_mode(r)?;
        }
        // The commit transaction checks preconditions, holds, retention and the right to
        // replace authoritatively; checking early only saves streaming a doomed upload,
        // which is worth a metadata read when the request has preconditions or the bucket
        // can protect objects.
        let protective =
            bucket.retention_policy.is_some() || bucket.default_event_based_hold || bucket.object_retention;
        if spec.preconditions.is_empty() && spec.may_replace && !protective {
            return Ok(bucket);
        }
        let (b, n) = (spec.bucket.clone(), spec.name.clone());
        let live = self.meta.get_object(&b, &n, None).await?;
        spec.preconditions
            .check(live.as_ref().map(|r| (r.generation, r.metageneration)), false)?;
        if let Some(l) = &live {
            // An overwrite replaces the live generation: it needs the right to, and holds
            // and retention forbid it. (Checked again inside the commit.)
            replace_check(bucket.clone(), self.clock.now(), spec.may_replace)(l)?;
        }
        Ok(bucket)
    }

    /// Commits a fully written generation, or deletes its blob if the commit fails.
    pub(super) async fn commit(
        &self,
        bucket: &Bucket,
        record: ObjectRecord,
        pre: Preconditions,
        may_replace: bool,
    ) -> StorageResult<ObjectRecord> {
        let rec = record.clone();
        let keep = bucket.versioning;
        // Checked inside the commit transaction: holds or retention that appeared while
        // the data streamed, and the caller's right to replace what is there.
        let check = replace_check(bucket.clone(), self.clock.now(), may_replace);
        match self.meta.commit_object(&rec, &pre, keep, check).await {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    self.discard_blob(&old.envelope).await;
                }
                Ok(record)
            }
            Err(e) => {
                self.discard_blob(&record.envelope).await;
                Err(e)
            }
        }
    }

    pub(super) async fn new_record(
        &self,
        spec: &WriteSpec,
        bucket: &Bucket,
        envelope: Envelope,
        size: u64,
        component_count: Option<u32>,
    ) -> StorageResult<ObjectRecord> {
        let now = self.clock.now();
        let generation = self.next_generation().await?;
        Ok(ObjectRecord {
            bucket: spec.bucket.clone(),
            name: spec.name.clone(),
            generation,
            metageneration: 1,
            size,
            meta: spec.meta.clone(),
            storage_class: spec
                .storage_class
                .clone()
                .map_or_else(|| bucket.storage_class.clone(), |c| c.to_uppercase()),
            time_created: now,
            updated: now,
            component_count,
            envelope,
            multipart_etag: spec.multipart_etag.clone(),
            temporary_hold: spec.protection.temporary_hold,
            event_based_hold: spec
                .protection
                .event_based_hold
                .unwrap_or(bucket.default_event_based_hold),
            retention_base: None,
            retention: spec.protection.retention.clone(),
            time_deleted: None,
            time_storage_class_updated: None,
            soft_delete_time: None,
            hard_delete_time: None,
        })
    }

    /// Encrypts a plaintext stream into `envelope`'s blob parts (or inline, below
    /// `inline_max` bytes). The returned lease keeps the sweeper off the blob until the
    /// row that references it is committed.
    pub(super) async fn store_data<S, E>(
        &self,
        envelope: &mut Envelope,
        cipher: &Arc<ObjectCipher>,
        body: S,
        inline_max: usize,
    ) -> StorageResult<(Arc<super::blobs::BlobLease>, Hashes)>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<StorageError>,
    {
        // Held until the row is committed (or the write given up): the sweeper must not
        // take the parts of an upload in progress, however long it runs.
        let lease = self.blobs.lease(&envelope.blob_id, false).await?;
        let mut sink = SegmentSink::new(
            cipher.clone(),
            self.blobs.clone(),
            lease.clone(),
            envelope.blob_id.clone(),
            0,
            0,
            Hashes::default(),
        );
        futures::pin_mut!(body);
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(data) => {
                    if let Err(e) = sink.write(data).await {
                        sink.abort().await;
                        return Err(e);
                    }
                }
                Err(e) => {
                    sink.abort().await;
                    return Err(e.into());
                }
            }
        }
        let (stored, hashes) = sink.finish_object(inline_max).await?;
        match stored {
            Stored::Parts(parts) => envelope.parts = parts,
            Stored::Inline(sealed) => {
                envelope.parts = vec![1];
                envelope.inline = true;
                envelope.inline_data = Some(InlineData(sealed));
            }
        }
        Ok((lease, hashes))
    }

    /// Writes a new generation from a plaintext stream (media, multipart, copy, compose).
    pub async fn write<S, E>(&self, spec: WriteSpec, body: S) -> StorageResult<(ObjectRecord, ObjectHashes)>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<StorageError>,
    {
        let bucket = self.prepare_write(&spec).await?;
        let (mut envelope, cipher) = if spec.force_google_managed {
            self.google_managed_envelope(&bucket)?
        } else {
            self.new_envelope(&bucket, spec.kms_key_name.as_deref(), spec.csek.as_deref())?
        };
        let (lease, hashes) = self.store_data(&mut envelope, &cipher, body, self.inline_max).await?;
        let (crc, md5, size) = hashes.finish();
        if let Err(e) = Self::check_expected(&spec, crc, &md5) {
            self.discard_blob(&envelope).await;
            return Err(e);
        }
        let md5 = if spec.component_count.is_some() {
            None
        } else {
            Some(md5)
        };
        envelope.sealed_hashes = cipher.seal_hashes(crc, md5);
        let record = self
            .new_record(&spec, &bucket, envelope, size, spec.component_count)
            .await?;
        let record = self
            .commit(&bucket, record, spec.preconditions, spec.may_replace)
            .await?;
        drop(lease);
        Ok((record, ObjectHashes { crc32c: crc, md5 }))
    }

    // ---- reads -----------------------------------------------------------------------

    pub async fn get_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        pre: &Preconditions,
    ) -> StorageResult<ObjectRecord> {
        let (b, n) = (bucket.to_owned(), name.to_owned());
        let rec = self.meta.get_object(&b, &n, generation).await?;
        let Some(rec) = rec else {
            // Distinguish a missing bucket from a missing object.
            self.get_bucket(bucket).await?;
            return Err(StorageError::NotFound(format!("No such object: {bucket}/{name}")));
        };
        pre.check(Some((rec.generation, rec.metageneration)), true)?;
        Ok(rec)
    }

    /// [`Self::read_range`], with its first batch already read: a blob store that
    /// cannot serve fails the request before any response header is sent (a 503 the
    /// client retries), instead of a 200 cut short.
    pub async fn open_range(
        &self,
        obj: &OpenObject,
        start: u64,
        end: u64,
    ) -> StorageResult<impl Stream<Item = StorageResult<Bytes>> + Send + 'static> {
        let mut rest = Box::pin(self.read_range(obj, start, end));
        let first = rest.next().await.transpose()?;
        Ok(futures::stream::iter(first.map(Ok)).chain(rest))
    }

    /// Decrypts `range` (`[start, end)`) of an opened object as a stream. Only the
    /// segments the range touches are read.
    pub fn read_range(
        &self,
        obj: &OpenObject,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = StorageResult<Bytes>> + Send + 'static {
        let size = obj.record.size;
        let env = obj.record.envelope.clone();
        let cipher = obj.cipher.clone();
        let blobs = self.blobs.clone();
        let meta = self.meta.clone();
        let (bucket, name, generation) = (
            obj.record.bucket.clone(),
            obj.record.name.clone(),
            obj.record.generation,
        );
        let count = segment_count(size);
        let first = if end > start { start / SEGMENT as u64 } else { count };
        let last_needed = if end > start { (end - 1) / SEGMENT as u64 } else { 0 };
        // The batches to read, each within one blob part: (first segment, end, part,
        // the part's first segment).
        let mut plan: Vec<StorageResult<(u64, u64, usize, u64)>> = vec![];
        let mut seg = first;
        while seg <= last_needed && seg < count {
            let mut base = 0u64;
            let mut located = None;
            for (i, n) in env.parts.iter().enumerate() {
                if seg < base + n {
                    located = Some((i, base + n));
                    break;
                }
                base += n;
            }
            let Some((part, part_end)) = located else {
                plan.push(Err(StorageError::internal("blob parts do not cover the object")));
                break;
            };
            let batch_end = (seg + READ_BATCH).min(last_needed + 1).min(part_end);
            plan.push(Ok((seg, batch_end, part, base)));
            seg = batch_end;
        }
        futures::stream::iter(plan)
            .map(move |batch| {
                let (env, cipher, blobs, meta) = (env.clone(), cipher.clone(), blobs.clone(), meta.clone());
                let (bucket, name) = (bucket.clone(), name.clone());
                async move {
                    let (seg, batch_end, part, base) = batch?;
                    let stride = (SEGMENT + TAG) as u64;
                    let from = (seg - base) * stride;
                    let to =
                        (batch_end - 1 - base) * stride + segment_plain_len(size, batch_end - 1) as u64 + TAG as u64;
                    let data = if env.inline {
                        let sealed = match env.inline_data {
                            Some(d) => d.0,
                            None => load_inline(meta, bucket, name, generation).await?,
                        };
                        let range =
                            usize::try_from(from).unwrap_or(usize::MAX)..usize::try_from(to).unwrap_or(usize::MAX);
                        sealed
                            .get(range.clone())
                            .map(|_| sealed.slice(range))
                            .ok_or_else(|| StorageError::internal("short inline data"))?
                    } else {
                        blobs.read(&env.blob_id, part, from..to).await?
                    };
                    // Decrypt in place and compact the plaintext to the front of the
                    // buffer: no per-segment copies.
                    let mut buf = bytes::BytesMut::from(data);
                    let mut read_off = 0usize;
                    let mut out_len = 0usize;
                    for s in seg..batch_end {
                        let len = segment_plain_len(size, s) + TAG;
                        if read_off + len > buf.len() {
                            return Err(StorageError::internal("short blob read"));
                        }
                        let index = u32::try_from(s).map_err(StorageError::internal)?;
                        let n = cipher
                            .open_segment(index, s + 1 == count, &mut buf[read_off..read_off + len])
                            .map_err(|e| StorageError::Internal(format!("object data failed authentication: {e}")))?;
                        let seg_start = s * SEGMENT as u64;
                        let lo = start.saturating_sub(seg_start) as usize;
                        let hi = (end - seg_start).min(n as u64) as usize;
                        if lo < hi {
                            buf.copy_within(read_off + lo..read_off + hi, out_len);
                            out_len += hi - lo;
                        }
                        read_off += len;
                    }
                    buf.truncate(out_len);
                    Ok(buf.freeze())
                }
            })
            // One batch read ahead: a remote blob store's per-request latency overlaps
            // the client's receiving of the previous batch.
            .buffered(READ_AHEAD)
    }

    // ---- metadata ------------------------------------------------------------------

    pub async fn list_objects(&self, bucket: &str, spec: ListSpec) -> StorageResult<ListPage> {
        let bucket_gen = self.get_bucket(bucket).await?.generation();
        let max = spec.max_results.unwrap_or(1000).clamp(1, 1000);
        let mut cursor = match spec.page_token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => decode_token(t)?,
            None => Cursor::At(String::new()),
        };
        let floor = spec.prefix.clone().max(spec.start_offset.clone().unwrap_or_default());
        let mut page = ListPage::default();
        let delim = spec.delimiter.clone().filter(|d| !d.is_empty());
        let mut filtered_out = 0usize;
        // Rows fetched per query. With a delimiter, a batch may end at its first row (a
        // prefix, then a jump past it): batches start small after each jump and double
        // while names keep coming, so a root listing of many prefixes reads a few rows
        // per prefix instead of a full page each.
        let full = (max + 1) * 2;
        let mut limit = if delim.is_some() { 16.min(full) } else { full };
        loop {
            let (start, after) = match &cursor {
                Cursor::At(s) => (s.clone().max(floor.clone()), None),
                Cursor::After(n, g) => (floor.clone(), Some((n.clone(), *g))),
            };
            let q = ListQuery {
                bucket: bucket.to_owned(),
                start,
                after,
                end: spec.end_offset.clone(),
                versions: spec.versions,
                limit,
                soft_deleted: spec.soft_deleted,
                bucket_gen,
            };
            let glob = spec.match_glob.as_ref();
            let batch: Vec<_> = self
                .meta
                .list_objects(&q)
                .await?
                .into_iter()
                .map(|r| {
                    let wanted = glob.is_none_or(|g| g.matches(&r.name));
                    (r, wanted)
                })
                .collect();
            let exhausted = batch.len() < limit;
            let mut jumped = false;
            for (rec, wanted) in batch {
                if !rec.name.starts_with(&spec.prefix) {
                    return Ok(page);
                }
                if page.items.len() + page.prefixes.len() == max {
                    page.next_page_token = Some(encode_token(&cursor));
                    return Ok(page);
                }
                if !wanted {
                    cursor = Cursor::After(rec.name.clone(), rec.generation);
                    // A glob matching little must not turn one request into a scan of
                    // the whole bucket: past a bound, the page ends (perhaps empty)
                    // with a token to go on from, as GCS does.
                    filtered_out += 1;
                    if filtered_out >= MAX_FILTERED_PER_PAGE {
                        page.next_page_token = Some(encode_token(&cursor));
                        return Ok(page);
                    }
                    continue;
                }
                if let Some(d) = &delim {
                    let rest = &rec.name[spec.prefix.len()..];
                    if let Some(i) = rest.find(d.as_str()) {
                        let p = format!("{}{}", spec.prefix, &rest[..i + d.len()]);
                        if spec.include_trailing_delimiter && rec.name == p {
                            page.items.push(rec.clone());
                        }
                        page.prefixes.push(p.clone());
                        match prefix_successor(&p) {
                            Some(next) => cursor = Cursor::At(next),
                            None => return Ok(page),
                        }
                        jumped = true;
                        break;
                    }
                }
                cursor = Cursor::After(rec.name.clone(), rec.generation);
                page.items.push(rec);
            }
            if !jumped && exhausted {
                return Ok(page);
            }
            limit = if jumped { 16.min(full) } else { (limit * 2).min(full) };
        }
    }

    /// Applies a metadata change to a generation, incrementing its metageneration.
    pub async fn update_object_meta(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        pre: &Preconditions,
        change: impl Fn(&mut ObjectRecord) -> StorageResult<()> + Send,
    ) -> StorageResult<ObjectRecord> {
        // The write is conditional on the metageneration read. A request that set no
        // metageneration precondition did not ask to lose a race with another writer:
        // it re-reads and re-applies its change, as GCS serialises such updates.
        let retry = pre.if_metageneration_match.is_none() && pre.if_metageneration_not_match.is_none();
        let mut attempt = 0u32;
        loop {
            let mut rec = self
                .get_object(bucket, name, generation, &Preconditions::default())
                .await?;
            pre.check(Some((rec.generation, rec.metageneration)), false)?;
            let expected = rec.metageneration;
            change(&mut rec)?;
            rec.metageneration += 1;
            rec.updated = self.clock.now();
            let r = rec.clone();
            match self.meta.update_object(&r, expected).await {
                Ok(()) => return Ok(rec),
                Err(StorageError::ConcurrentChange(_)) if retry && attempt < METADATA_RACE_RETRIES => {
                    attempt += 1;
                    race_backoff(attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        pre: &Preconditions,
    ) -> StorageResult<()> {
        // On a versioned bucket, deleting the live object keeps it as noncurrent.
        let b = self.get_bucket(bucket).await?;
        let versioned = b.versioning;
        // Holds and retention are checked inside the delete transaction.
        let now = self.clock.now();
        let check = replace_check(b.clone(), now, true);
        let (b, n, p) = (bucket.to_owned(), name.to_owned(), *pre);
        let removed = self
            .meta
            .delete_object(&b, &n, generation, &p, versioned, check, now)
            .await?;
        if let Some(r) = removed {
            self.discard_blob(&r.envelope).await;
        }
        Ok(())
    }

    /// `objects.move`: renames a live object within its bucket, atomically. The data
    /// and its encryption move as they are (no re-encryption); the destination is a new
    /// generation and the source is gone (on a versioned bucket too: its data now
    /// belongs to the destination, so no noncurrent copy of the source can share it).
    /// Holds and retention on the source refuse the move, as they refuse a delete.
    pub async fn move_object(
        &self,
        bucket: &str,
        src: &str,
        dst: &str,
        src_pre: Preconditions,
        dst_pre: Preconditions,
        may_replace: bool,
    ) -> StorageResult<ObjectRecord> {
        check_object_name(dst)?;
        if src == dst {
            return Err(StorageError::invalid(
                "The source and destination of a move must be different objects.",
            ));
        }
        let b = self.get_bucket(bucket).await?;
        let now = self.clock.now();
        let mv = super::meta::MoveSpec {
            bucket: bucket.to_owned(),
            src: src.to_owned(),
            dst: dst.to_owned(),
            generation: self.next_generation().await?,
            now,
            src_pre,
            dst_pre,
            keep_previous: b.versioning,
        };
        // Checked on the source row the move takes: holds and retention, and whether the
        // bucket still allows new objects with its kind of encryption.
        let removable = replace_check(b.clone(), now, true);
        let enforcement = b.encryption_enforcement;
        let name = b.name.clone();
        let src_check: super::meta::ReplaceCheck = Box::new(move |r: &ObjectRecord| {
            removable(r)?;
            enforcement.check(&name, &r.envelope.kind)
        });
        let dst_check = replace_check(b.clone(), now, may_replace);
        let (moved, replaced) = self.meta.move_object(&mv, src_check, dst_check).await?;
        if let Some(old) = replaced {
            self.discard_blob(&old.envelope).await;
        }
        Ok(moved)
    }

    // ---- copy and compose --------------------------------------------------------------

    /// Copies a generation to a new object, re-encrypting it under a fresh DEK (and the
    /// destination's key). `meta` overrides the source's metadata when given.
    pub async fn copy(
        &self,
        source: OpenObject,
        mut spec: WriteSpec,
        meta: Option<ObjectMeta>,
    ) -> StorageResult<(ObjectRecord, ObjectHashes)> {
        spec.meta = meta.unwrap_or_else(|| source.record.meta.clone());
        if spec.storage_class.is_none() {
            spec.storage_class = Some(source.record.storage_class.clone());
        }
        // A copy of a composite stays composite: no MD5, same component count, and the
        // same data keeps its multipart ETag.
        spec.component_count = source.record.component_count;
        spec.multipart_etag = source.record.multipart_etag.clone();
        let stream = self.read_range(&source, 0, source.record.size);
        self.write(spec, stream).await
    }

    /// Concatenates up to 32 sources of the same bucket. The composite CRC32C is
    /// combined from the sources' CRC32Cs (and checked against the data written);
    /// composites have no MD5.
    pub async fn compose(
        &self,
        sources: Vec<OpenObject>,
        spec: WriteSpec,
    ) -> StorageResult<(ObjectRecord, ObjectHashes)> {
        if sources.is_empty() || sources.len() > MAX_COMPOSE_SOURCES {
            return Err(StorageError::invalid(format!(
                "The number of source components provided ({}) must be between 1 and {MAX_COMPOSE_SOURCES}.",
                sources.len()
            )));
        }
        let mut combined = 0u32;
        let mut components = 0u32;
        for s in &sources {
            combined = crc32c::crc32c_combine(combined, s.hashes.crc32c, s.record.size as usize);
            components = components.saturating_add(s.record.component_count.unwrap_or(1));
        }
        let streams: Vec<_> = sources.iter().map(|s| self.read_range(s, 0, s.record.size)).collect();
        let body = futures::stream::iter(streams).flatten();
        // The data re-read for re-encryption must agree with the combined CRC32C.
        let spec = WriteSpec {
            component_count: Some(components),
            expected_crc32c: Some(combined),
            expected_md5: None,
            ..spec
        };
        self.write(spec, body).await
    }
}

/// The in-transaction check before a generation is replaced or deleted.
/// The check an overwrite makes (holds, retention), for a restore onto a live name.
pub(super) fn replace_check_for(bucket: Bucket, now: chrono::DateTime<chrono::Utc>) -> super::meta::ReplaceCheck {
    replace_check(bucket, now, true)
}

fn replace_check(bucket: Bucket, now: chrono::DateTime<chrono::Utc>, may_replace: bool) -> super::meta::ReplaceCheck {
    Box::new(move |existing: &ObjectRecord| {
        if !may_replace {
            return Err(StorageError::Forbidden {
                reason: "forbidden",
                message: format!(
                    "Replacing {}/{} needs storage.objects.delete on bucket {}.",
                    existing.bucket, existing.name, existing.bucket
                ),
            });
        }
        existing.check_removable(&bucket, now)
    })
}

/// Applies hold and retention changes to an object, with GCS's rules: releasing an
/// event-based hold restarts the bucket retention clock; an Unlocked retention can be
/// shortened, removed or locked only with `overrideUnlockedRetention`; a Locked one can
/// only be extended.
pub fn apply_protection(
    rec: &mut ObjectRecord,
    bucket: &Bucket,
    p: &ProtectionPatch,
    now: chrono::DateTime<chrono::Utc>,
) -> StorageResult<()> {
    if let Some(h) = p.temporary_hold {
        rec.temporary_hold = h;
    }
    if let Some(h) = p.event_based_hold {
        if rec.event_based_hold && !h {
            rec.retention_base = Some(now);
        }
        rec.event_based_hold = h;
    }
    if let Some(change) = &p.retention {
        if !bucket.object_retention {
            return Err(StorageError::invalid(format!(
                "Object retention is not enabled on bucket {}: create it with enableObjectRetention=true.",
                bucket.name
            )));
        }
        let forbidden = |m: &str| StorageError::Forbidden {
            reason: "forbidden",
            message: m.to_owned(),
        };
        match (&rec.retention, change) {
            (Some(cur), None) if cur.mode == "Locked" => {
                return Err(forbidden("A Locked object retention cannot be removed."));
            }
            (Some(_), None) if !p.override_unlocked_retention => {
                return Err(forbidden(
                    "Removing an Unlocked object retention requires overrideUnlockedRetention=true.",
                ));
            }
            (Some(cur), Some(new))
                if cur.mode == "Locked" && (new.mode != "Locked" || new.retain_until < cur.retain_until) =>
            {
                return Err(forbidden("A Locked object retention can only be extended."));
            }
            (Some(cur), Some(new))
                if cur.mode == "Unlocked"
                    && (new.retain_until < cur.retain_until || new.mode == "Locked")
                    && !p.override_unlocked_retention =>
            {
                return Err(forbidden(
                    "Shortening or locking an Unlocked object retention requires overrideUnlockedRetention=true.",
                ));
            }
            _ => {}
        }
        if let Some(r) = change {
            check_retention_mode(r)?;
        }
        rec.retention = change.clone();
    }
    Ok(())
}

/// How often a metadata update without a metageneration precondition re-applies itself
/// after losing a race with a concurrent writer.
const METADATA_RACE_RETRIES: u32 = 64;

/// A short, growing, jittered pause so racing writers stop colliding in lock-step.
async fn race_backoff(attempt: u32) {
    let jitter = u64::from(rand_u8()) % 4;
    let ms = u64::from(attempt.min(10)) + jitter;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

fn rand_u8() -> u8 {
    let mut b = [0u8; 1];
    // Jitter only: a failed draw just means no jitter.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_orders_after_every_extension() {
        assert_eq!(prefix_successor("a/").as_deref(), Some("a0"));
        assert!("a/zzz" < "a0");
        let t = encode_token(&Cursor::After("x".into(), 5));
        assert!(matches!(decode_token(&t).unwrap(), Cursor::After(n, 5) if n == "x"));
        assert!(decode_token("!!").is_err());
    }
}
