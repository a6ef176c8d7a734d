//! Import jobs (with a pool of pre-generated RSA wrapping keys, so creating a job never
//! waits on RSA key generation) and `cryptoKeyVersions:import`, including re-import.

use super::core::{Inner, JobEntry, Kms, VersionEntry, not_found};
use super::error::{KmsError, KmsResult};
use super::listing::{Filter, ListOptions, Page, paginate};
use super::material::{Material, MaterialError};
use super::model::{CryptoKeyVersion, ImportJob};
use super::names::{CryptoKeyName, ImportJobName, KeyRingName, VersionName};
use super::store::{Sealed, Write};
use super::types::{Algorithm, ImportJobState, ImportMethod, ProtectionLevel, VersionState};
pub use super::wrapping::WrappingKey;
use super::wrapping::{MAX_WRAPPED_KEY, UnwrapError};
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// "An ImportJob expires 3 days after it is created."
pub const IMPORT_JOB_LIFETIME: TimeDelta = TimeDelta::days(3);

/// Background worker: first serves jobs waiting in PENDING_GENERATION, then tops the
/// pool up. Holds only a weak reference so a dropped core stops it.
fn start_pool_worker(inner: Weak<Inner>) {
    let started = std::thread::Builder::new()
        .name("wrapping-key-pool".into())
        .spawn(move || {
            loop {
                let Some(strong) = inner.upgrade() else { return };
                let kms = Kms { inner: strong };
                let pending = kms.oldest_pending_job();
                let bits = pending
                    .as_ref()
                    .map(|(_, bits)| *bits)
                    .or_else(|| kms.inner.pool.wanted());
                let Some(bits) = bits else {
                    let pool = Arc::clone(&kms.inner);
                    drop(kms);
                    pool.pool.wait(Duration::from_secs(1));
                    continue;
                };
                drop(kms);
                let Ok(key) = WrappingKey::generate(bits) else { continue };
                let Some(strong) = inner.upgrade() else { return };
                let kms = Kms { inner: strong };
                match pending {
                    Some((job, _)) => {
                        if let Some(unused) = kms.activate_job(&job, key) {
                            kms.inner.pool.put(unused);
                        }
                    }
                    None => kms.inner.pool.put(key),
                }
            }
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "could not start the wrapping-key pool thread");
    }
}

#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub parent: CryptoKeyName,
    pub version: Option<VersionName>,
    pub algorithm: Algorithm,
    pub import_job: ImportJobName,
    pub wrapped_key: Vec<u8>,
}

impl Kms {
    /// Starts the background thread that keeps RSA wrapping keys ready for import
    /// jobs. The server calls it at start-up; it is also started by the first job.
    pub fn start_wrapping_key_pool(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.pool_started.call_once(|| start_pool_worker(weak));
    }

    pub fn create_import_job(
        &self,
        parent: &KeyRingName,
        id: &str,
        method: ImportMethod,
        level: ProtectionLevel,
    ) -> KmsResult<ImportJob> {
        let name = parent.import_job(id)?;
        self.start_wrapping_key_pool();
        if !matches!(level, ProtectionLevel::SOFTWARE | ProtectionLevel::HSM) {
            return Err(KmsError::InvalidArgument(format!(
                "Import jobs with protection level {level} are not supported: key material can only be imported at SOFTWARE or HSM."
            )));
        }
        let now = self.now();
        let mut state = self.write();
        if !state.key_rings.contains_key(&parent.to_string()) {
            return Err(not_found("KeyRing", parent));
        }
        if state.jobs.contains_key(&name.to_string()) {
            return Err(KmsError::AlreadyExists(format!("ImportJob {name} already exists.")));
        }
        let key = self.inner.pool.take(method.rsa_bits());
        let job = ImportJob {
            name: name.clone(),
            import_method: method,
            protection_level: level,
            create_time: now,
            generate_time: key.as_ref().map(|_| now),
            expire_time: now + IMPORT_JOB_LIFETIME,
            expire_event_time: None,
            state: if key.is_some() {
                ImportJobState::ACTIVE
            } else {
                ImportJobState::PENDING_GENERATION
            },
            public_key_der: key.as_ref().map(|k| k.public_key_der().to_vec()),
        };
        let sealed = key.as_ref().map(|k| self.sealer().seal(&name.to_string(), k.pkcs8()));
        self.commit(&[Write::ImportJob(
            &job,
            sealed.as_deref().map_or(Sealed::Keep, Sealed::Set),
        )])?;
        if job.state == ImportJobState::PENDING_GENERATION {
            // Claimed under the state lock, so an adopting round never sees it unclaimed.
            self.adoption().claim(&name.to_string());
        }
        state.jobs.insert(
            name.to_string(),
            JobEntry {
                job: job.clone(),
                private_key: key.map(Arc::new),
            },
        );
        Ok(job)
    }

    /// The oldest pending job this process serves: its own, or one it adopted.
    fn oldest_pending_job(&self) -> Option<(ImportJobName, usize)> {
        let state = self.read();
        let adoption = self.adoption();
        state
            .jobs
            .iter()
            .filter(|(n, j)| j.job.state == ImportJobState::PENDING_GENERATION && adoption.owns(n))
            .map(|(_, j)| j)
            .min_by_key(|j| j.job.create_time)
            .map(|j| (j.job.name.clone(), j.job.import_method.rsa_bits()))
    }

    /// Gives a freshly generated key to a waiting job; hands the key back if the job
    /// no longer needs it.
    fn activate_job(&self, name: &ImportJobName, key: WrappingKey) -> Option<WrappingKey> {
        let now = self.now();
        let mut state = self.write();
        let Some(entry) = state.jobs.get_mut(&name.to_string()) else {
            self.adoption().release(&name.to_string());
            return Some(key);
        };
        if entry.job.state != ImportJobState::PENDING_GENERATION {
            self.adoption().release(&name.to_string());
            return Some(key);
        }
        let mut job = entry.job.clone();
        job.state = ImportJobState::ACTIVE;
        job.generate_time = Some(now);
        job.public_key_der = Some(key.public_key_der().to_vec());
        let sealed = self.sealer().seal(&name.to_string(), key.pkcs8());
        if let Err(e) = self.commit(&[Write::ImportJob(&job, Sealed::Set(&sealed))]) {
            tracing::error!(job = %name, error = %e, "could not activate import job");
            return Some(key);
        }
        entry.job = job;
        entry.private_key = Some(Arc::new(key));
        self.adoption().release(&name.to_string());
        None
    }

    pub fn get_import_job(&self, name: &ImportJobName) -> KmsResult<ImportJob> {
        Ok(Self::import_job_entry(&self.read(), name)?.job.clone())
    }

    pub fn list_import_jobs(&self, parent: &KeyRingName, opts: &ListOptions) -> KmsResult<Page<ImportJob>> {
        let filter = Filter::parse(opts.filter.as_deref().unwrap_or(""), &["state", "name"])?;
        let state = self.read();
        if !state.key_rings.contains_key(&parent.to_string()) {
            return Err(not_found("KeyRing", parent));
        }
        let prefix = format!("{parent}/importJobs/");
        let items = state
            .jobs
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, j)| {
                filter.matches(|f| {
                    if f == "state" {
                        j.job.state.to_string()
                    } else {
                        k.to_string()
                    }
                })
            })
            .map(|(k, j)| (k.clone(), j.job.clone()))
            .collect();
        paginate(items, opts)
    }

    /// Expires jobs past their `expireTime` and erases their private wrapping keys.
    pub(super) fn expire_import_jobs(&self, now: DateTime<Utc>) {
        let mut state = self.write();
        for entry in state.jobs.values_mut() {
            if entry.job.state == ImportJobState::EXPIRED || entry.job.expire_time > now {
                continue;
            }
            let mut job = entry.job.clone();
            job.state = ImportJobState::EXPIRED;
            job.expire_event_time = Some(now);
            job.public_key_der = None;
            match self.commit(&[Write::ImportJob(&job, Sealed::Erase)]) {
                Ok(()) => {
                    tracing::info!(job = %job.name, "import job expired; wrapping key erased");
                    self.emit(&job.name.to_string(), "ExpireImportJob", "OK");
                    entry.job = job;
                    entry.private_key = None;
                }
                Err(e) => tracing::error!(job = %job.name, error = %e, "could not expire import job"),
            }
        }
    }

    /// `cryptoKeyVersions:import`. Problems with the request itself are errors; key
    /// material that does not unwrap or parse yields an IMPORT_FAILED version (for a
    /// new version) or a rejection that leaves the version untouched (re-import).
    pub fn import_version(&self, req: ImportRequest) -> KmsResult<CryptoKeyVersion> {
        if req.wrapped_key.is_empty() {
            return Err(KmsError::InvalidArgument(
                "An argument to the import operation was malformed: wrappedKey is empty.".into(),
            ));
        }
        if req.wrapped_key.len() > MAX_WRAPPED_KEY {
            return Err(KmsError::InvalidArgument(format!(
                "An argument to the import operation was malformed: wrappedKey is larger than {MAX_WRAPPED_KEY} bytes."
            )));
        }
        let (method, wrapping_key) = self.check_import(&req)?;
        let unwrapped = wrapping_key.unwrap(method, &req.wrapped_key);
        let parsed: Result<(Material, Vec<u8>), String> = match unwrapped {
            Err(e) => Err(e.to_string()),
            Ok(raw) => {
                let fp = self.sealer().fingerprint(req.algorithm.name(), &raw);
                Material::from_raw(req.algorithm, raw)
                    .map(|m| (m, fp))
                    .map_err(|e: MaterialError| e.to_string())
            }
        };
        let now = self.now();
        let mut state = self.write();
        // The job may have expired while the key was being unwrapped.
        Self::check_job_usable(&Self::import_job_entry(&state, &req.import_job)?.job, now)?;
        let entry = Self::key_entry_mut(&mut state, &req.parent)?;
        match &req.version {
            Some(target) => {
                let v = entry
                    .versions
                    .get_mut(&target.version)
                    .ok_or_else(|| not_found("CryptoKeyVersion", target))?;
                Self::check_reimport_target(&v.meta, req.algorithm)?;
                let (material, fp) = parsed.map_err(|reason| {
                    KmsError::FailedPrecondition(format!("Re-import into {target} failed: {reason}."))
                })?;
                if let Some(expected) = &v.meta.fingerprint
                    && !self
                        .sealer()
                        .fingerprint_matches(expected, req.algorithm.name(), material.raw())
                {
                    return Err(KmsError::FailedPrecondition(format!(
                        "The key material does not match the original key material of {target}."
                    )));
                }
                let mut meta = v.meta.clone();
                meta.state = VersionState::ENABLED;
                meta.import_job = Some(req.import_job.clone());
                meta.import_time = Some(now);
                meta.import_failure_reason = None;
                meta.destroy_event_time = None;
                meta.destroy_time = None;
                meta.fingerprint = Some(fp);
                let sealed = self.sealer().seal(&target.to_string(), material.raw());
                self.commit(&[Write::Version(&meta, Sealed::Set(&sealed))])?;
                v.meta = meta.clone();
                v.material = Some(Arc::new(material));
                Ok(meta)
            }
            None => {
                let mut key = entry.key.clone();
                let name = key.name.version(key.next_version_id);
                key.next_version_id += 1;
                let mut meta = CryptoKeyVersion {
                    name: name.clone(),
                    state: VersionState::ENABLED,
                    protection_level: key.protection_level,
                    algorithm: req.algorithm,
                    create_time: now,
                    generate_time: None,
                    destroy_time: None,
                    destroy_event_time: None,
                    import_job: Some(req.import_job.clone()),
                    import_time: Some(now),
                    import_failure_reason: None,
                    generation_failure_reason: None,
                    imported: true,
                    fingerprint: None,
                };
                let material = match parsed {
                    Ok((material, fp)) => {
                        meta.fingerprint = Some(fp);
                        Some(material)
                    }
                    Err(reason) => {
                        meta.state = VersionState::IMPORT_FAILED;
                        meta.import_failure_reason = Some(reason);
                        None
                    }
                };
                let sealed = material
                    .as_ref()
                    .map(|m| self.sealer().seal(&name.to_string(), m.raw()));
                self.commit(&[
                    Write::Key(&key),
                    Write::Version(&meta, sealed.as_deref().map_or(Sealed::Keep, Sealed::Set)),
                ])?;
                entry.key = key;
                entry.versions.insert(
                    name.version,
                    VersionEntry {
                        meta: meta.clone(),
                        material: material.map(Arc::new),
                    },
                );
                Ok(meta)
            }
        }
    }

    /// Request-level checks: key, algorithm, job and (for re-import) target version.
    fn check_import(&self, req: &ImportRequest) -> KmsResult<(ImportMethod, Arc<WrappingKey>)> {
        let state = self.read();
        let entry = Self::key_entry(&state, &req.parent)?;
        if req.algorithm.purpose() != entry.key.purpose {
            return Err(KmsError::InvalidArgument(format!(
                "Algorithm {} does not match the purpose {} of {}.",
                req.algorithm, entry.key.purpose, req.parent
            )));
        }
        let job = Self::import_job_entry(&state, &req.import_job)?;
        if job.job.name.key_ring != req.parent.key_ring {
            return Err(KmsError::InvalidArgument(format!(
                "ImportJob {} is not in the key ring of {}.",
                req.import_job, req.parent
            )));
        }
        Self::check_job_usable(&job.job, self.now())?;
        if job.job.protection_level != entry.key.protection_level {
            return Err(KmsError::FailedPrecondition(format!(
                "ImportJob {} has protection level {} but {} has {}.",
                req.import_job, job.job.protection_level, req.parent, entry.key.protection_level
            )));
        }
        let method = job.job.import_method;
        if !method.uses_aes_kwp()
            && matches!(
                req.algorithm.kind(),
                super::types::AlgorithmKind::RsaSignPss { .. }
                    | super::types::AlgorithmKind::RsaSignPkcs1 { .. }
                    | super::types::AlgorithmKind::RsaDecryptOaep { .. }
            )
        {
            return Err(KmsError::InvalidArgument(format!(
                "Import method {method} cannot be used to import RSA keys; use an RSA_OAEP_*_AES_256 method."
            )));
        }
        if let Some(target) = &req.version {
            if target.key != req.parent {
                return Err(KmsError::InvalidArgument(format!(
                    "cryptoKeyVersion {target} is not a version of {}.",
                    req.parent
                )));
            }
            let v = entry
                .versions
                .get(&target.version)
                .ok_or_else(|| not_found("CryptoKeyVersion", target))?;
            Self::check_reimport_target(&v.meta, req.algorithm)?;
        }
        let key = job
            .private_key
            .clone()
            .ok_or_else(|| KmsError::Internal(format!("ImportJob {} has no wrapping key", req.import_job)))?;
        Ok((method, key))
    }

    /// ACTIVE and not past `expireTime` (expiry is applied by a ticker, so a job can
    /// be due a moment before its state says EXPIRED).
    fn check_job_usable(job: &ImportJob, now: DateTime<Utc>) -> KmsResult<()> {
        let state = if job.state == ImportJobState::ACTIVE && job.expire_time <= now {
            ImportJobState::EXPIRED
        } else {
            job.state
        };
        if state != ImportJobState::ACTIVE {
            return Err(KmsError::FailedPrecondition(format!(
                "ImportJob {} is not active, current state is: {state}.",
                job.name
            )));
        }
        Ok(())
    }

    fn check_reimport_target(v: &CryptoKeyVersion, algorithm: Algorithm) -> KmsResult<()> {
        if !v.imported {
            return Err(KmsError::FailedPrecondition(format!(
                "{} was not created by import and is not eligible for re-import.",
                v.name
            )));
        }
        if !matches!(v.state, VersionState::DESTROYED | VersionState::IMPORT_FAILED) {
            return Err(KmsError::FailedPrecondition(format!(
                "{} is in state {}; only DESTROYED or IMPORT_FAILED versions can be re-imported.",
                v.name, v.state
            )));
        }
        if v.algorithm != algorithm {
            return Err(KmsError::FailedPrecondition(format!(
                "Re-import into {} must use its original algorithm {}, not {algorithm}.",
                v.name, v.algorithm
            )));
        }
        Ok(())
    }
}

impl From<UnwrapError> for KmsError {
    fn from(e: UnwrapError) -> Self {
        KmsError::InvalidArgument(e.to_string())
    }
}

impl From<super::wrapping::BadWrappingKey> for KmsError {
    fn from(e: super::wrapping::BadWrappingKey) -> Self {
        KmsError::Internal(e.to_string())
    }
}
