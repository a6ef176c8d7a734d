//! The KMS core: resources, the version state machine, scheduled transitions and
//! cryptographic operations. State lives in memory and is written through the store
//! before any change becomes visible.

use super::ciphertext;
use super::error::{KmsError, KmsResult};
use super::listing::{Filter, ListOptions, Page, paginate};
use super::material::{Material, SignInput, spki_pem};
use super::model::{CryptoKey, CryptoKeyVersion, ImportJob, KeyRing};
use super::names::{CryptoKeyName, ImportJobName, KeyRingName, LocationName, VersionName};
use super::seal::Sealer;
use super::store::{KmsStore, Sealed, StoreError, Write};
use super::types::{Algorithm, ProtectionLevel, Purpose, VersionState};
use chrono::{DateTime, TimeDelta, Utc};
use sealstore_core::clock::Clock;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;
use zeroize::Zeroizing;

pub const DAY: Duration = Duration::from_secs(86_400);
const DEFAULT_DESTROY_SCHEDULED: Duration = Duration::from_secs(30 * 86_400);
const MAX_DESTROY_SCHEDULED: Duration = Duration::from_secs(120 * 86_400);
const MAX_ROTATION_PERIOD: Duration = Duration::from_secs(876_000 * 3_600);
pub const MAX_SOFTWARE_INPUT: usize = 64 * 1024;
pub const MAX_HSM_INPUT: usize = 8 * 1024;

/// Lets another layer veto the destruction of a version (storage implements it so
/// versions protecting retained objects cannot be destroyed). `Err` carries the reason.
pub trait DestroyGuard: Send + Sync {
    fn check_destroy(&self, version: &VersionName) -> Result<(), String>;
}

/// Receives the state changes the core makes on its own (scheduled destruction,
/// automatic rotation, import-job expiry, blocked destruction) so they can be audited.
pub trait EventSink: Send + Sync {
    fn event(&self, resource: &str, what: &str, outcome: &str);
}

pub(super) struct VersionEntry {
    pub(super) meta: CryptoKeyVersion,
    pub(super) material: Option<Arc<Material>>,
}

pub(super) struct KeyEntry {
    pub(super) key: CryptoKey,
    pub(super) versions: BTreeMap<u32, VersionEntry>,
}

pub(super) struct JobEntry {
    pub(super) job: ImportJob,
    pub(super) private_key: Option<Arc<super::wrapping::WrappingKey>>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) key_rings: BTreeMap<String, KeyRing>,
    pub(super) keys: BTreeMap<String, KeyEntry>,
    pub(super) jobs: BTreeMap<String, JobEntry>,
    /// Deleted keys' records, by retired-resource name.
    pub(super) retired: BTreeMap<String, super::model::RetiredResource>,
    /// Finished long-running operations, by name.
    pub(super) operations: BTreeMap<String, super::model::Operation>,
}

pub(super) struct Inner {
    pub(super) state: RwLock<State>,
    pub(super) store: Arc<dyn KmsStore>,
    pub(super) sealer: Sealer,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) guard: RwLock<Option<Arc<dyn DestroyGuard>>>,
    pub(super) pool: super::wrapping::WrappingKeyPool,
    pub(super) pool_started: std::sync::Once,
    /// Asymmetric versions waiting for key generation, served by one background thread.
    generation: Mutex<VecDeque<(VersionName, Algorithm)>>,
    generation_wake: Condvar,
    generation_started: std::sync::Once,
    /// What this process generates itself, and orphans it watches (`orphans.rs`).
    pub(super) adoption: Mutex<super::orphans::Adoption>,
    pub(super) quota: Mutex<Option<super::quota::Quota>>,
    events: RwLock<Option<Arc<dyn EventSink>>>,
    /// The store epoch `state` reflects (`store.rs`).
    pub(super) epoch: AtomicI64,
    pub(super) started: std::time::Instant,
    /// When `state` was last confirmed current, in ms since `started`.
    pub(super) validated_ms: AtomicU64,
    /// The staleness watchdog's verdict (`freshness.rs`); `true` sends `fresh` to the clock.
    pub(super) stale: std::sync::atomic::AtomicBool,
}

/// More asymmetric versions than this waiting for generation → RESOURCE_EXHAUSTED.
const MAX_PENDING_GENERATION: usize = 64;

/// The embedded KMS. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Kms {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").finish_non_exhaustive()
    }
}

/// A CryptoKey as returned to callers: the key and its primary version, if any.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub key: CryptoKey,
    pub primary: Option<CryptoKeyVersion>,
}

#[derive(Debug, Clone)]
pub struct NewCryptoKey {
    pub purpose: Purpose,
    pub protection_level: ProtectionLevel,
    pub algorithm: Option<Algorithm>,
    pub labels: BTreeMap<String, String>,
    pub import_only: bool,
    pub destroy_scheduled_duration: Option<Duration>,
    pub rotation_period: Option<Duration>,
    pub next_rotation_time: Option<DateTime<Utc>>,
    pub skip_initial_version_creation: bool,
}

/// The fields an `updateMask` names; `Some(None)` clears a field.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub labels: Option<BTreeMap<String, String>>,
    pub rotation_period: Option<Option<Duration>>,
    pub next_rotation_time: Option<Option<DateTime<Utc>>>,
    pub algorithm: Option<Algorithm>,
}

#[derive(Debug)]
pub struct EncryptOutput {
    pub version: VersionName,
    pub ciphertext: Vec<u8>,
    pub protection_level: ProtectionLevel,
}

/// Holds plaintext (possibly a data key): its `Debug` never prints it.
pub struct DecryptOutput {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub used_primary: bool,
    pub protection_level: ProtectionLevel,
}

impl std::fmt::Debug for DecryptOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptOutput")
            .field("used_primary", &self.used_primary)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct PublicKeyOutput {
    pub pem: String,
    pub der: Vec<u8>,
    pub algorithm: Algorithm,
    pub protection_level: ProtectionLevel,
}

pub(crate) fn not_found(kind: &str, name: &dyn std::fmt::Display) -> KmsError {
    KmsError::NotFound(format!("{kind} {name} not found."))
}

fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn check_rotation(
    key_name: &dyn std::fmt::Display,
    purpose: Purpose,
    import_only: bool,
    period: Option<Duration>,
    next: Option<DateTime<Utc>>,
) -> KmsResult<()> {
    if period.is_none() && next.is_none() {
        return Ok(());
    }
    if purpose != Purpose::ENCRYPT_DECRYPT {
        return Err(KmsError::InvalidArgument(format!(
            "{key_name}: rotationPeriod and nextRotationTime may only be set on ENCRYPT_DECRYPT keys."
        )));
    }
    if import_only {
        return Err(KmsError::InvalidArgument(format!(
            "{key_name}: an importOnly key cannot have a rotation schedule."
        )));
    }
    if let Some(p) = period {
        if p < DAY || p > MAX_ROTATION_PERIOD {
            return Err(KmsError::InvalidArgument(format!(
                "{key_name}: rotationPeriod must be between 1 day and 100 years, got {}s.",
                p.as_secs()
            )));
        }
        if next.is_none() {
            return Err(KmsError::InvalidArgument(format!(
                "{key_name}: nextRotationTime must be set when rotationPeriod is set."
            )));
        }
    }
    Ok(())
}

impl Kms {
    /// Builds the core from what the store holds, unsealing every live version's
    /// material, and resumes any generation a previous run left unfinished.
    /// The in-memory state a snapshot describes, with every live secret unsealed.
    pub(super) fn state_from(snap: super::store::Snapshot, sealer: &Sealer) -> KmsResult<State> {
        let mut state = State::default();
        for kr in snap.key_rings {
            state.key_rings.insert(kr.name.to_string(), kr);
        }
        for key in snap.keys {
            state.keys.insert(
                key.name.to_string(),
                KeyEntry {
                    key,
                    versions: BTreeMap::new(),
                },
            );
        }
        for (meta, sealed) in snap.versions {
            let material = match sealed {
                Some(s) => {
                    let raw = sealer.unseal(&meta.name.to_string(), &s)?;
                    Some(Arc::new(
                        Material::from_raw(meta.algorithm, raw).map_err(|e| KmsError::Internal(e.to_string()))?,
                    ))
                }
                None => None,
            };
            let entry = state
                .keys
                .get_mut(&meta.name.key.to_string())
                .ok_or_else(|| KmsError::Internal(format!("version {} has no key", meta.name)))?;
            entry
                .versions
                .insert(meta.name.version, VersionEntry { meta, material });
        }
        for (job, sealed) in snap.import_jobs {
            let private_key = match sealed {
                Some(s) => {
                    let raw = sealer.unseal(&job.name.to_string(), &s)?;
                    Some(Arc::new(super::wrapping::WrappingKey::from_pkcs8(&raw)?))
                }
                None => None,
            };
            state.jobs.insert(job.name.to_string(), JobEntry { job, private_key });
        }
        for r in snap.retired {
            state.retired.insert(r.name.clone(), r);
        }
        for o in snap.operations {
            state.operations.insert(o.name.clone(), o);
        }
        Ok(state)
    }

    pub fn open(store: Arc<dyn KmsStore>, sealer: Sealer, clock: Arc<dyn Clock>) -> KmsResult<Self> {
        let snap = store.load()?;
        let epoch = snap.epoch;
        let state = Self::state_from(snap, &sealer)?;
        let kms = Self {
            inner: Arc::new(Inner {
                state: RwLock::new(state),
                store,
                sealer,
                clock,
                guard: RwLock::new(None),
                pool: super::wrapping::WrappingKeyPool::new(),
                pool_started: std::sync::Once::new(),
                generation: Mutex::new(VecDeque::new()),
                generation_wake: Condvar::new(),
                generation_started: std::sync::Once::new(),
                adoption: Mutex::new(Default::default()),
                quota: Mutex::new(None),
                events: RwLock::new(None),
                epoch: AtomicI64::new(epoch),
                started: std::time::Instant::now(),
                validated_ms: AtomicU64::new(0),
                stale: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        kms.start_refresher();
        // Versions and import jobs left pending by an earlier process (or by another
        // gateway, which may still be generating them) are not resumed here: the
        // transitions lease holder adopts them (`orphans.rs`), so each is made once.
        Ok(kms)
    }

    pub fn set_event_sink(&self, sink: Arc<dyn EventSink>) {
        *self.inner.events.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    pub(super) fn emit(&self, resource: &str, what: &str, outcome: &str) {
        let sink = self.inner.events.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(s) = sink {
            s.event(resource, what, outcome);
        }
    }

    pub fn set_destroy_guard(&self, guard: Arc<dyn DestroyGuard>) {
        *self.inner.guard.write().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The state for a mutation, first brought up to date with the store, so checks
    /// run against what every process has committed; `commit` then refuses the write
    /// if another process committed in between (ABORTED, retryable).
    pub(super) fn write(&self) -> RwLockWriteGuard<'_, State> {
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        self.refresh_locked(&mut state);
        state
    }

    pub(super) fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }

    /// Persists `writes` (the caller holds the write lock from `write`).
    pub(super) fn commit(&self, writes: &[Write<'_>]) -> KmsResult<()> {
        let expected = self.inner.epoch.load(Ordering::SeqCst);
        match self.inner.store.commit(writes, expected) {
            Ok(epoch) => {
                self.inner.epoch.store(epoch, Ordering::SeqCst);
                self.mark_validated();
                Ok(())
            }
            Err(StoreError::Stale) => Err(KmsError::Aborted(
                "The key ring's state was changed concurrently by another gateway; retry the request.".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    // ---- key rings -------------------------------------------------------------

    pub fn create_key_ring(&self, parent: &LocationName, id: &str) -> KmsResult<KeyRing> {
        let name = parent.key_ring(id)?;
        let mut state = self.write();
        if state.key_rings.contains_key(&name.to_string()) {
            return Err(KmsError::AlreadyExists(format!("KeyRing {name} already exists.")));
        }
        let kr = KeyRing {
            name,
            create_time: self.now(),
        };
        self.commit(&[Write::KeyRing(&kr)])?;
        state.key_rings.insert(kr.name.to_string(), kr.clone());
        Ok(kr)
    }

    pub fn get_key_ring(&self, name: &KeyRingName) -> KmsResult<KeyRing> {
        self.read()
            .key_rings
            .get(&name.to_string())
            .cloned()
            .ok_or_else(|| not_found("KeyRing", name))
    }

    pub fn list_key_rings(&self, parent: &LocationName, opts: &ListOptions) -> KmsResult<Page<KeyRing>> {
        let filter = Filter::parse(opts.filter.as_deref().unwrap_or(""), &["name"])?;
        let prefix = format!("{parent}/keyRings/");
        let state = self.read();
        let items = state
            .key_rings
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| filter.matches(|_| k.to_string()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        paginate(items, opts)
    }

    // ---- crypto keys -----------------------------------------------------------

    pub(super) fn key_entry<'a>(state: &'a State, name: &CryptoKeyName) -> KmsResult<&'a KeyEntry> {
        state
            .keys
            .get(&name.to_string())
            .ok_or_else(|| not_found("CryptoKey", name))
    }

    pub(super) fn key_entry_mut<'a>(state: &'a mut State, name: &CryptoKeyName) -> KmsResult<&'a mut KeyEntry> {
        state
            .keys
            .get_mut(&name.to_string())
            .ok_or_else(|| not_found("CryptoKey", name))
    }

    pub(super) fn view(entry: &KeyEntry) -> KeyView {
        let primary = entry
            .key
            .primary
            .and_then(|id| entry.versions.get(&id))
            .map(|v| v.meta.clone());
        KeyView {
            key: entry.key.clone(),
            primary,
        }
    }

    pub fn create_crypto_key(&self, parent: &KeyRingName, id: &str, spec: NewCryptoKey) -> KmsResult<KeyView> {
        let name = parent.crypto_key(id)?;
        let algorithm = match (spec.algorithm, spec.purpose) {
            (Some(a), p) if a.purpose() != p => {
                return Err(KmsError::InvalidArgument(format!(
                    "Algorithm {a} is not valid for purpose {p}: it belongs to {}.",
                    a.purpose()
                )));
            }
            (Some(a), _) => a,
            (None, Purpose::ENCRYPT_DECRYPT) => Algorithm::GOOGLE_SYMMETRIC_ENCRYPTION,
            (None, p) => {
                return Err(KmsError::InvalidArgument(format!(
                    "versionTemplate.algorithm is required for purpose {p}."
                )));
            }
        };
        match spec.protection_level {
            ProtectionLevel::SOFTWARE | ProtectionLevel::HSM => {}
            other => {
                return Err(KmsError::Unimplemented(format!(
                    "Protection level {other} is not supported by sealstore (only SOFTWARE and HSM)."
                )));
            }
        }
        if spec.import_only && !spec.skip_initial_version_creation {
            return Err(KmsError::InvalidArgument(format!(
                "{name}: an importOnly key must be created with skipInitialVersionCreation=true."
            )));
        }
        check_rotation(
            &name,
            spec.purpose,
            spec.import_only,
            spec.rotation_period,
            spec.next_rotation_time,
        )?;
        let destroy = spec.destroy_scheduled_duration.unwrap_or(DEFAULT_DESTROY_SCHEDULED);
        if !(DAY..=MAX_DESTROY_SCHEDULED).contains(&destroy) {
            return Err(KmsError::InvalidArgument(format!(
                "{name}: destroyScheduledDuration must be between 24 hours and 120 days, got {}s.",
                destroy.as_secs()
            )));
        }
        let now = self.now();
        let mut key = CryptoKey {
            name: name.clone(),
            purpose: spec.purpose,
            create_time: now,
            primary: None,
            rotation_period: spec.rotation_period,
            next_rotation_time: spec.next_rotation_time,
            protection_level: spec.protection_level,
            algorithm,
            labels: spec.labels,
            import_only: spec.import_only,
            destroy_scheduled_duration: destroy,
            next_version_id: 1,
        };
        let mut state = self.write();
        if !state.key_rings.contains_key(&parent.to_string()) {
            return Err(not_found("KeyRing", parent));
        }
        if state.keys.contains_key(&name.to_string()) {
            return Err(KmsError::AlreadyExists(format!("CryptoKey {name} already exists.")));
        }
        let n = name.to_string();
        if state.retired.values().any(|r| r.original_resource == n) {
            return Err(KmsError::AlreadyExists(format!(
                "CryptoKey {name} was deleted; its name is retired and cannot be reused."
            )));
        }
        let mut entry = KeyEntry {
            key: key.clone(),
            versions: BTreeMap::new(),
        };
        if spec.skip_initial_version_creation {
            self.commit(&[Write::Key(&key)])?;
        } else {
            self.check_generation_capacity(algorithm)?;
            let (version, material) = self.new_version(&mut key, now)?;
            if spec.purpose == Purpose::ENCRYPT_DECRYPT {
                key.primary = Some(version.meta.name.version);
            }
            let sealed = material
                .as_ref()
                .map(|m| self.inner.sealer.seal(&version.meta.name.to_string(), m.raw()));
            self.commit(&[
                Write::Key(&key),
                Write::Version(&version.meta, sealed.as_deref().map_or(Sealed::Keep, Sealed::Set)),
            ])?;
            entry.key = key.clone();
            let pending = version.material.is_none().then(|| version.meta.name.clone());
            entry.versions.insert(version.meta.name.version, version);
            if let Some(v) = pending {
                self.spawn_generation(v, algorithm);
            }
        }
        let view = Self::view(&entry);
        state.keys.insert(name.to_string(), entry);
        Ok(view)
    }

    /// Makes the next version of `key` (advancing its id counter). Symmetric and MAC
    /// material is made here; asymmetric versions start PENDING_GENERATION with none.
    fn new_version(&self, key: &mut CryptoKey, now: DateTime<Utc>) -> KmsResult<(VersionEntry, Option<Arc<Material>>)> {
        let name = key.name.version(key.next_version_id);
        key.next_version_id += 1;
        let (state, material, generate_time) = if key.algorithm.is_asymmetric() {
            (VersionState::PENDING_GENERATION, None, None)
        } else {
            (
                VersionState::ENABLED,
                Some(Arc::new(Material::generate(key.algorithm)?)),
                Some(now),
            )
        };
        let meta = CryptoKeyVersion {
            name,
            state,
            protection_level: key.protection_level,
            algorithm: key.algorithm,
            create_time: now,
            generate_time,
            destroy_time: None,
            destroy_event_time: None,
            import_job: None,
            import_time: None,
            import_failure_reason: None,
            generation_failure_reason: None,
            imported: false,
            fingerprint: None,
        };
        Ok((
            VersionEntry {
                meta,
                material: material.clone(),
            },
            material,
        ))
    }

    fn generation_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(VersionName, Algorithm)>> {
        self.inner.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses new asymmetric versions while too many wait for generation.
    fn check_generation_capacity(&self, algorithm: Algorithm) -> KmsResult<()> {
        if algorithm.is_asymmetric() && self.generation_queue().len() >= MAX_PENDING_GENERATION {
            return Err(KmsError::ResourceExhausted(format!(
                "Too many key versions are waiting for generation ({MAX_PENDING_GENERATION}); retry later."
            )));
        }
        Ok(())
    }

    pub(super) fn spawn_generation(&self, version: VersionName, algorithm: Algorithm) {
        self.adoption().claim(&version.to_string());
        self.generation_queue().push_back((version, algorithm));
        self.inner.generation_wake.notify_one();
        let weak = Arc::downgrade(&self.inner);
        self.inner.generation_started.call_once(|| {
            if let Err(e) = std::thread::Builder::new()
                .name("key-generation".into())
                .spawn(move || generation_worker(weak))
            {
                tracing::error!(error = %e, "could not start the key generation thread");
            }
        });
    }

    /// Records generated material. `false` if it could not be persisted (retry later).
    fn finish_generation(&self, name: &VersionName, result: KmsResult<Material>) -> bool {
        let mut state = self.write();
        let Some(entry) = state.keys.get_mut(&name.key.to_string()) else {
            return true;
        };
        let Some(v) = entry.versions.get_mut(&name.version) else {
            return true;
        };
        if v.meta.state != VersionState::PENDING_GENERATION {
            return true;
        }
        let mut meta = v.meta.clone();
        let outcome = match result {
            Ok(material) => {
                meta.state = VersionState::ENABLED;
                meta.generate_time = Some(self.now());
                let sealed = self.inner.sealer.seal(&name.to_string(), material.raw());
                self.commit(&[Write::Version(&meta, Sealed::Set(&sealed))])
                    .map(|_| Some(Arc::new(material)))
            }
            Err(e) => {
                meta.state = VersionState::GENERATION_FAILED;
                meta.generation_failure_reason = Some(e.to_string());
                self.commit(&[Write::Version(&meta, Sealed::Erase)]).map(|_| None)
            }
        };
        match outcome {
            Ok(material) => {
                v.meta = meta;
                v.material = material;
                true
            }
            Err(e) => {
                tracing::error!(version = %name, error = %e, "could not record generated key material; will retry");
                false
            }
        }
    }

    pub fn get_crypto_key(&self, name: &CryptoKeyName) -> KmsResult<KeyView> {
        Ok(Self::view(Self::key_entry(&self.read(), name)?))
    }

    pub fn list_crypto_keys(&self, parent: &KeyRingName, opts: &ListOptions) -> KmsResult<Page<KeyView>> {
        let filter = Filter::parse(opts.filter.as_deref().unwrap_or(""), &["name", "purpose"])?;
        let state = self.read();
        if !state.key_rings.contains_key(&parent.to_string()) {
            return Err(not_found("KeyRing", parent));
        }
        let prefix = format!("{parent}/cryptoKeys/");
        let items = state
            .keys
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, e)| {
                filter.matches(|f| {
                    if f == "purpose" {
                        e.key.purpose.to_string()
                    } else {
                        k.to_string()
                    }
                })
            })
            .map(|(k, e)| (k.clone(), Self::view(e)))
            .collect();
        paginate(items, opts)
    }

    pub fn update_crypto_key(&self, name: &CryptoKeyName, patch: KeyPatch) -> KmsResult<KeyView> {
        let mut state = self.write();
        let entry = Self::key_entry_mut(&mut state, name)?;
        let mut key = entry.key.clone();
        if let Some(labels) = patch.labels {
            key.labels = labels;
        }
        if let Some(p) = patch.rotation_period {
            key.rotation_period = p;
        }
        if let Some(n) = patch.next_rotation_time {
            key.next_rotation_time = n;
        }
        if let Some(a) = patch.algorithm {
            if a.purpose() != key.purpose {
                return Err(KmsError::InvalidArgument(format!(
                    "Algorithm {a} is not valid for purpose {} of {name}.",
                    key.purpose
                )));
            }
            key.algorithm = a;
        }
        check_rotation(
            name,
            key.purpose,
            key.import_only,
            key.rotation_period,
            key.next_rotation_time,
        )?;
        self.commit(&[Write::Key(&key)])?;
        entry.key = key;
        Ok(Self::view(entry))
    }

    pub fn update_primary_version(&self, name: &CryptoKeyName, version_id: &str) -> KmsResult<KeyView> {
        let version = VersionName::parse_id(name, version_id)?;
        let mut state = self.write();
        let entry = Self::key_entry_mut(&mut state, name)?;
        if entry.key.purpose != Purpose::ENCRYPT_DECRYPT {
            return Err(KmsError::FailedPrecondition(format!(
                "{name} has purpose {}; only ENCRYPT_DECRYPT keys have a primary version.",
                entry.key.purpose
            )));
        }
        if !entry.versions.contains_key(&version.version) {
            return Err(not_found("CryptoKeyVersion", &version));
        }
        let mut key = entry.key.clone();
        key.primary = Some(version.version);
        self.commit(&[Write::Key(&key)])?;
        entry.key = key;
        Ok(Self::view(entry))
    }

    // ---- versions --------------------------------------------------------------

    pub fn create_version(&self, parent: &CryptoKeyName) -> KmsResult<CryptoKeyVersion> {
        let now = self.now();
        let mut state = self.write();
        let entry = Self::key_entry_mut(&mut state, parent)?;
        if entry.key.import_only {
            return Err(KmsError::FailedPrecondition(format!(
                "{parent} is importOnly: new versions can only be imported."
            )));
        }
        let mut key = entry.key.clone();
        self.check_generation_capacity(key.algorithm)?;
        let (version, material) = self.new_version(&mut key, now)?;
        let sealed = material
            .as_ref()
            .map(|m| self.inner.sealer.seal(&version.meta.name.to_string(), m.raw()));
        self.commit(&[
            Write::Key(&key),
            Write::Version(&version.meta, sealed.as_deref().map_or(Sealed::Keep, Sealed::Set)),
        ])?;
        entry.key = key;
        let meta = version.meta.clone();
        let pending = version.material.is_none();
        entry.versions.insert(meta.name.version, version);
        if pending {
            self.spawn_generation(meta.name.clone(), meta.algorithm);
        }
        Ok(meta)
    }

    pub fn get_version(&self, name: &VersionName) -> KmsResult<CryptoKeyVersion> {
        let state = self.read();
        let entry = Self::key_entry(&state, &name.key)?;
        entry
            .versions
            .get(&name.version)
            .map(|v| v.meta.clone())
            .ok_or_else(|| not_found("CryptoKeyVersion", name))
    }

    pub fn list_versions(&self, parent: &CryptoKeyName, opts: &ListOptions) -> KmsResult<Page<CryptoKeyVersion>> {
        let filter = Filter::parse(opts.filter.as_deref().unwrap_or(""), &["state", "algorithm", "name"])?;
        let state = self.read();
        let entry = Self::key_entry(&state, parent)?;
        let items = entry
            .versions
            .values()
            .filter(|v| {
                filter.matches(|f| match f {
                    "state" => v.meta.state.to_string(),
                    "algorithm" => v.meta.algorithm.to_string(),
                    _ => v.meta.name.to_string(),
                })
            })
            .map(|v| (format!("{:010}", v.meta.name.version), v.meta.clone()))
            .collect();
        paginate(items, opts)
    }

    /// Applies a change to one version's record (and material), persisting first.
    pub(super) fn change_version(
        &self,
        name: &VersionName,
        f: impl FnOnce(&mut CryptoKeyVersion, &CryptoKey) -> KmsResult<bool>,
    ) -> KmsResult<CryptoKeyVersion> {
        let mut state = self.write();
        let entry = Self::key_entry_mut(&mut state, &name.key)?;
        let key = entry.key.clone();
        let v = entry
            .versions
            .get_mut(&name.version)
            .ok_or_else(|| not_found("CryptoKeyVersion", name))?;
        let mut meta = v.meta.clone();
        let erase = f(&mut meta, &key)?;
        self.commit(&[Write::Version(&meta, if erase { Sealed::Erase } else { Sealed::Keep })])?;
        v.meta = meta.clone();
        if erase {
            v.material = None;
        }
        Ok(meta)
    }

    pub fn set_version_state(&self, name: &VersionName, target: VersionState) -> KmsResult<CryptoKeyVersion> {
        if !matches!(target, VersionState::ENABLED | VersionState::DISABLED) {
            return Err(KmsError::InvalidArgument(format!(
                "{name}: state can only be updated to ENABLED or DISABLED, not {target}."
            )));
        }
        self.change_version(name, |v, _| {
            if !matches!(v.state, VersionState::ENABLED | VersionState::DISABLED) {
                return Err(KmsError::FailedPrecondition(format!(
                    "{name} is in state {}; only ENABLED and DISABLED versions can be enabled or disabled.",
                    v.state
                )));
            }
            v.state = target;
            Ok(false)
        })
    }

    pub fn destroy_version(&self, name: &VersionName) -> KmsResult<CryptoKeyVersion> {
        self.check_guard(name)?;
        let now = self.now();
        self.change_version(name, |v, key| {
            if !matches!(v.state, VersionState::ENABLED | VersionState::DISABLED) {
                return Err(KmsError::FailedPrecondition(format!(
                    "{name} is in state {}; only ENABLED or DISABLED versions can be scheduled for destruction.",
                    v.state
                )));
            }
            v.state = VersionState::DESTROY_SCHEDULED;
            v.destroy_time = Some(now + to_delta(key.destroy_scheduled_duration));
            Ok(false)
        })
    }

    pub fn restore_version(&self, name: &VersionName) -> KmsResult<CryptoKeyVersion> {
        self.change_version(name, |v, _| {
            if v.state != VersionState::DESTROY_SCHEDULED {
                return Err(KmsError::FailedPrecondition(format!(
                    "{name} is in state {}; only DESTROY_SCHEDULED versions can be restored.",
                    v.state
                )));
            }
            v.state = VersionState::DISABLED;
            v.destroy_time = None;
            Ok(false)
        })
    }

    fn check_guard(&self, name: &VersionName) -> KmsResult<()> {
        let guard = self.inner.guard.read().unwrap_or_else(|e| e.into_inner()).clone();
        match guard {
            Some(g) => g.check_destroy(name).map_err(KmsError::FailedPrecondition),
            None => Ok(()),
        }
    }

    // ---- time-driven transitions -----------------------------------------------

    /// Applies every transition due at the clock's current time: scheduled
    /// destruction, automatic rotation and import-job expiry.
    pub fn run_due(&self) {
        let now = self.now();
        let due: Vec<VersionName> = self
            .read()
            .keys
            .values()
            .flat_map(|k| k.versions.values())
            .filter(|v| {
                v.meta.state == VersionState::DESTROY_SCHEDULED && v.meta.destroy_time.is_some_and(|t| t <= now)
            })
            .map(|v| v.meta.name.clone())
            .collect();
        for name in due {
            if let Err(reason) = self.check_guard(&name) {
                tracing::warn!(version = %name, %reason, "scheduled destruction blocked; will retry");
                self.emit(&name.to_string(), "DestroyCryptoKeyVersion (scheduled)", "BLOCKED");
                continue;
            }
            let r = self.change_version(&name, |v, _| {
                // Re-checked under the write lock: a restore + destroy in between
                // would have moved destroy_time into the future.
                if v.state != VersionState::DESTROY_SCHEDULED || v.destroy_time.is_none_or(|t| t > now) {
                    return Err(KmsError::FailedPrecondition("no longer due".into()));
                }
                v.state = VersionState::DESTROYED;
                v.destroy_time = None;
                v.destroy_event_time = Some(now);
                Ok(true)
            });
            match r {
                Ok(_) => {
                    tracing::info!(version = %name, "key version destroyed; material erased");
                    self.emit(&name.to_string(), "DestroyCryptoKeyVersion (scheduled)", "OK");
                }
                Err(e) => tracing::debug!(version = %name, error = %e, "destruction skipped"),
            }
        }
        let rotating: Vec<CryptoKeyName> = self
            .read()
            .keys
            .values()
            .filter(|e| e.key.rotation_period.is_some() && e.key.next_rotation_time.is_some_and(|t| t <= now))
            .map(|e| e.key.name.clone())
            .collect();
        for name in rotating {
            if let Err(e) = self.rotate(&name, now) {
                tracing::error!(key = %name, error = %e, "automatic rotation failed");
            }
        }
        self.expire_import_jobs(now);
        self.adopt_orphans();
    }

    fn rotate(&self, name: &CryptoKeyName, now: DateTime<Utc>) -> KmsResult<()> {
        let mut state = self.write();
        let entry = Self::key_entry_mut(&mut state, name)?;
        let (Some(period), Some(mut next)) = (entry.key.rotation_period, entry.key.next_rotation_time) else {
            return Ok(());
        };
        if next > now || entry.key.import_only {
            return Ok(());
        }
        let mut key = entry.key.clone();
        let (version, material) = self.new_version(&mut key, now)?;
        key.primary = Some(version.meta.name.version);
        while next <= now {
            next += to_delta(period);
        }
        key.next_rotation_time = Some(next);
        let sealed = material
            .as_ref()
            .map(|m| self.inner.sealer.seal(&version.meta.name.to_string(), m.raw()));
        self.commit(&[
            Write::Key(&key),
            Write::Version(&version.meta, sealed.as_deref().map_or(Sealed::Keep, Sealed::Set)),
        ])?;
        tracing::info!(key = %name, version = version.meta.name.version, "automatic rotation");
        self.emit(
            &version.meta.name.to_string(),
            "CreateCryptoKeyVersion (automatic rotation)",
            "OK",
        );
        entry.key = key;
        entry.versions.insert(version.meta.name.version, version);
        Ok(())
    }

    // ---- cryptographic operations ------------------------------------------------

    /// The material of an ENABLED version, or the Cloud KMS "is not enabled" error.
    pub(super) fn usable(entry: &KeyEntry, id: u32) -> KmsResult<(Arc<Material>, ProtectionLevel)> {
        let v = entry
            .versions
            .get(&id)
            .ok_or_else(|| not_found("CryptoKeyVersion", &entry.key.name.version(id)))?;
        if v.meta.state != VersionState::ENABLED {
            return Err(KmsError::NotEnabled {
                version: v.meta.name.to_string(),
                state: v.meta.state,
            });
        }
        let m = v
            .material
            .clone()
            .ok_or_else(|| KmsError::Internal(format!("{} has no material", v.meta.name)))?;
        Ok((m, v.meta.protection_level))
    }

    fn check_sizes(name: &dyn std::fmt::Display, level: ProtectionLevel, data: usize, aad: usize) -> KmsResult<()> {
        let ok = match level {
            ProtectionLevel::HSM => data + aad <= MAX_HSM_INPUT,
            _ => data <= MAX_SOFTWARE_INPUT && aad <= MAX_SOFTWARE_INPUT,
        };
        if ok {
            Ok(())
        } else if level == ProtectionLevel::HSM {
            Err(KmsError::InvalidArgument(format!(
                "{name}: the input and additional authenticated data together must be at most {MAX_HSM_INPUT} bytes for HSM keys."
            )))
        } else {
            Err(KmsError::InvalidArgument(format!(
                "{name}: the input and the additional authenticated data must each be at most {MAX_SOFTWARE_INPUT} bytes."
            )))
        }
    }

    /// `lengthBytes` (8 to 1024) random bytes from the system CSPRNG, for
    /// `locations.generateRandomBytes`. Cloud KMS serves these only at the HSM level; here
    /// the HSM level is software-backed like every other (see the README).
    pub fn generate_random_bytes(
        &self,
        _location: &LocationName,
        length: i64,
        level: ProtectionLevel,
    ) -> KmsResult<Zeroizing<Vec<u8>>> {
        use aws_lc_rs::rand::{SecureRandom, SystemRandom};
        if level != ProtectionLevel::HSM {
            return Err(KmsError::InvalidArgument(
                "Only the HSM protection level is supported for generateRandomBytes.".into(),
            ));
        }
        let Ok(len @ 8..=1024) = usize::try_from(length) else {
            return Err(KmsError::InvalidArgument(
                "length_bytes must be between 8 and 1024.".into(),
            ));
        };
        let mut out = Zeroizing::new(vec![0u8; len]);
        SystemRandom::new()
            .fill(&mut out)
            .map_err(|_| KmsError::Internal("the system random source failed".into()))?;
        Ok(out)
    }

    /// Encrypts with the key's primary version, or with `version` if given.
    pub fn encrypt(
        &self,
        key_name: &CryptoKeyName,
        version: Option<u32>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> KmsResult<EncryptOutput> {
        self.fresh()?;
        self.take_quota(&key_name.key_ring.project)?;
        let (material, level, id) = {
            let state = self.read();
            let entry = Self::key_entry(&state, key_name)?;
            if entry.key.purpose != Purpose::ENCRYPT_DECRYPT {
                return Err(KmsError::InvalidArgument(format!(
                    "{key_name} has purpose {}; encrypt requires ENCRYPT_DECRYPT.",
                    entry.key.purpose
                )));
            }
            let id = match version.or(entry.key.primary) {
                Some(id) => id,
                None => {
                    return Err(KmsError::FailedPrecondition(format!(
                        "{key_name} has no primary version and cannot be used to encrypt."
                    )));
                }
            };
            let (m, level) = Self::usable(entry, id)?;
            (m, level, id)
        };
        Self::check_sizes(key_name, level, plaintext.len(), aad.len())?;
        let aes = material
            .aes()
            .ok_or_else(|| KmsError::Internal("symmetric version without AES key".into()))?;
        let ciphertext = ciphertext::seal(aes, &key_name.to_string(), id, plaintext, aad);
        Ok(EncryptOutput {
            version: key_name.version(id),
            ciphertext,
            protection_level: level,
        })
    }

    pub fn decrypt(&self, key_name: &CryptoKeyName, ct: &[u8], aad: &[u8]) -> KmsResult<DecryptOutput> {
        if ct.len() > MAX_SOFTWARE_INPUT + ciphertext::OVERHEAD || aad.len() > MAX_SOFTWARE_INPUT {
            return Err(KmsError::InvalidArgument(format!(
                "{key_name}: the ciphertext must be at most {} bytes and the additional authenticated data at most {MAX_SOFTWARE_INPUT} bytes.",
                MAX_SOFTWARE_INPUT + ciphertext::OVERHEAD
            )));
        }
        self.fresh()?;
        self.take_quota(&key_name.key_ring.project)?;
        let (material, level, used_primary) = {
            let state = self.read();
            let entry = Self::key_entry(&state, key_name)?;
            if entry.key.purpose != Purpose::ENCRYPT_DECRYPT {
                return Err(KmsError::InvalidArgument(format!(
                    "{key_name} has purpose {}; decrypt requires ENCRYPT_DECRYPT.",
                    entry.key.purpose
                )));
            }
            let id = ciphertext::version_of(ct).ok_or(KmsError::DecryptionFailed)?;
            if !entry.versions.contains_key(&id) {
                return Err(KmsError::DecryptionFailed);
            }
            let (m, level) = Self::usable(entry, id)?;
            (m, level, entry.key.primary == Some(id))
        };
        let aes = material.aes().ok_or(KmsError::DecryptionFailed)?;
        let plaintext = ciphertext::open(aes, &key_name.to_string(), ct, aad).ok_or(KmsError::DecryptionFailed)?;
        Ok(DecryptOutput {
            plaintext,
            used_primary,
            protection_level: level,
        })
    }

    fn version_material(&self, name: &VersionName, purpose: Purpose) -> KmsResult<(Arc<Material>, ProtectionLevel)> {
        self.fresh()?;
        let state = self.read();
        let entry = Self::key_entry(&state, &name.key)?;
        if entry.key.purpose != purpose {
            return Err(KmsError::InvalidArgument(format!(
                "{} has purpose {}; this operation requires {purpose}.",
                name.key, entry.key.purpose
            )));
        }
        Self::usable(entry, name.version)
    }

    pub fn asymmetric_sign(&self, name: &VersionName, input: SignInput<'_>) -> KmsResult<(Vec<u8>, ProtectionLevel)> {
        let (m, level) = self.version_material(name, Purpose::ASYMMETRIC_SIGN)?;
        if let SignInput::Data(d) = input {
            Self::check_sizes(name, level, d.len(), 0)?;
        }
        Ok((m.sign(input)?, level))
    }

    pub fn asymmetric_decrypt(
        &self,
        name: &VersionName,
        ct: &[u8],
    ) -> KmsResult<(Zeroizing<Vec<u8>>, ProtectionLevel)> {
        let (m, level) = self.version_material(name, Purpose::ASYMMETRIC_DECRYPT)?;
        Ok((m.asymmetric_decrypt(ct)?, level))
    }

    pub fn mac_sign(&self, name: &VersionName, data: &[u8]) -> KmsResult<(Vec<u8>, ProtectionLevel)> {
        let (m, level) = self.version_material(name, Purpose::MAC)?;
        Self::check_sizes(name, level, data.len(), 0)?;
        Ok((
            m.mac_sign(data)
                .ok_or_else(|| KmsError::Internal("MAC key without HMAC".into()))?,
            level,
        ))
    }

    pub fn mac_verify(&self, name: &VersionName, data: &[u8], mac: &[u8]) -> KmsResult<(bool, ProtectionLevel)> {
        let (m, level) = self.version_material(name, Purpose::MAC)?;
        Self::check_sizes(name, level, data.len(), 0)?;
        Ok((
            m.mac_verify(data, mac)
                .ok_or_else(|| KmsError::Internal("MAC key without HMAC".into()))?,
            level,
        ))
    }

    pub fn get_public_key(&self, name: &VersionName) -> KmsResult<PublicKeyOutput> {
        self.fresh()?;
        let state = self.read();
        let entry = Self::key_entry(&state, &name.key)?;
        if !entry.key.algorithm.is_asymmetric() {
            return Err(KmsError::FailedPrecondition(format!(
                "{} has purpose {}; only asymmetric keys have a public key.",
                name.key, entry.key.purpose
            )));
        }
        let (m, level) = Self::usable(entry, name.version)?;
        let der = m
            .public_key_der()
            .ok_or_else(|| KmsError::Internal("asymmetric key without public key".into()))?;
        Ok(PublicKeyOutput {
            pem: spki_pem(der),
            der: der.to_vec(),
            algorithm: m.algorithm(),
            protection_level: level,
        })
    }

    /// The sealed bytes stored for a version or import job (tests prove erasure with it).
    pub fn stored_secret(&self, name: &str) -> KmsResult<Option<Vec<u8>>> {
        Ok(self.inner.store.sealed_secret(name)?)
    }

    pub(super) fn import_job_entry<'a>(state: &'a State, name: &ImportJobName) -> KmsResult<&'a JobEntry> {
        state
            .jobs
            .get(&name.to_string())
            .ok_or_else(|| not_found("ImportJob", name))
    }
}

/// Generates queued asymmetric material one version at a time, so a burst of
/// requests cannot start unbounded threads. Holds only a weak reference to the core.
fn generation_worker(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let kms = Kms { inner: strong };
        let next = kms.generation_queue().pop_front();
        let Some((name, algorithm)) = next else {
            let queue = kms.generation_queue();
            let _ = kms.inner.generation_wake.wait_timeout(queue, Duration::from_secs(1));
            continue;
        };
        let result = Material::generate(algorithm);
        if kms.finish_generation(&name, result) {
            kms.adoption().release(&name.to_string());
        } else {
            kms.generation_queue().push_back((name, algorithm));
            drop(kms);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
