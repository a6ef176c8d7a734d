//! Re-key jobs: find every object of a bucket (under a prefix) protected by a key or
//! some of its versions, and move it to another key — `rewrite` (new DEK, data
//! re-encrypted, a new generation) or `rewrap` (the same DEK wrapped again; metadata
//! only). Jobs run in the background, persist a cursor so they resume after a restart,
//! check the target state per object (idempotent), never clobber a concurrent writer
//! (generation / metageneration preconditions), skip CSEK objects, and never disable or
//! destroy anything.

use super::engine::{ListSpec, Storage, WriteSpec};
use super::error::{StorageError, StorageResult};
use super::model::{KeyKind, ObjectRecord, Preconditions};

use futures::StreamExt;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use super::rekey_job::{Counters, Failure, JobState, RekeyFrom, RekeyJob, RekeyMode, RekeyTo};

/// Keeps at most this many failures in a job record.
const MAX_FAILURES: usize = 100;
/// Objects a job works on at once.
const JOB_CONCURRENCY: usize = 32;
/// A re-key job's lease: renewed before every page, so a gateway that dies hands its
/// jobs over after this long (another resumes from the last checkpoint).
pub const JOB_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// What happened to one object of a job.
enum Outcome {
    Skipped(&'static str),
    /// Rewritten to a new generation.
    Done,
    /// Re-wrapped: this record replaces the one read, if its metageneration is still
    /// the given one.
    Rewrap(Box<ObjectRecord>, i64),
}
/// Persist the job's progress at least this often (objects).
const CHECKPOINT_EVERY: u64 = 200;

impl Storage {
    pub async fn create_rekey_job(
        self: &Arc<Self>,
        project: &str,
        bucket: &str,
        prefix: String,
        from: Option<RekeyFrom>,
        to: RekeyTo,
        mode: RekeyMode,
    ) -> StorageResult<RekeyJob> {
        let b = self.get_bucket(bucket).await?;
        if b.project != project {
            return Err(StorageError::invalid(format!(
                "Bucket {bucket} does not belong to project {project}."
            )));
        }
        if let RekeyTo::KmsKeyName(k) = &to {
            if k.contains("/cryptoKeyVersions/") {
                return Err(StorageError::invalid(format!("Bad Cloud KMS crypto key: {k}")));
            }
            super::keys::check_key_location(&b, k)?;
            self.keys.validate(&b.project, k)?;
        }
        let now = self.now();
        let id = super::blobs::new_blob_id();
        let job = RekeyJob {
            name: format!("projects/{project}/rekeyJobs/{}", &id[..16]),
            bucket: bucket.to_owned(),
            prefix,
            from,
            to,
            mode,
            state: JobState::Running,
            counters: Counters::default(),
            skipped: BTreeMap::new(),
            failures: vec![],
            create_time: now,
            update_time: now,
            cursor: None,
            soft_phase: false,
        };
        self.save_job(&job).await?;
        self.spawn_job(job.clone());
        Ok(job)
    }

    async fn save_job(&self, job: &RekeyJob) -> StorageResult<()> {
        let j = job.clone();
        self.meta.put_rekey_job(&j).await
    }

    pub async fn get_rekey_job(&self, name: &str) -> StorageResult<RekeyJob> {
        let n = name.to_owned();
        self.meta
            .get_rekey_job(&n)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("Re-key job {name} not found.")))
    }

    /// Asks a running job to stop after the object it is on.
    pub async fn cancel_rekey_job(&self, name: &str) -> StorageResult<RekeyJob> {
        let job = self.get_rekey_job(name).await?;
        if job.state != JobState::Running {
            return Err(StorageError::invalid(format!(
                "Re-key job {name} is not running (state {:?}).",
                job.state
            )));
        }
        if let Some(flag) = self.rekey_cancel.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            flag.store(true, Ordering::SeqCst);
        }
        let mut job = job;
        job.state = JobState::Cancelled;
        job.update_time = self.now();
        self.save_job(&job).await?;
        Ok(job)
    }

    /// Shutdown: asks running jobs to stop at their next checkpoint (they stay RUNNING and
    /// resume on the next start) and waits up to `deadline` for them. Returns how many
    /// were still running at the deadline.
    pub async fn pause_rekey_jobs(&self, deadline: std::time::Duration) -> usize {
        self.rekey_pause.store(true, Ordering::SeqCst);
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let running = self.rekey_cancel.lock().unwrap_or_else(|e| e.into_inner()).len();
            if running == 0 || tokio::time::Instant::now() >= until {
                return running;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Starts the RUNNING jobs this process does not run yet: those a previous run left,
    /// and (called again periodically) those whose gateway died. Each starts only if its
    /// lease is free. Returns how many were started here.
    pub async fn resume_rekey_jobs(self: &Arc<Self>) -> StorageResult<usize> {
        let jobs = self.meta.running_rekey_jobs().await?;
        let mut n = 0;
        for j in jobs {
            let mine = self
                .rekey_cancel
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&j.name);
            if !mine && self.hold_job(&j.name).await {
                self.spawn_job(j);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Takes or renews the job's lease (always true without leases; an unreachable
    /// database means "not held").
    async fn hold_job(&self, name: &str) -> bool {
        let Some((leases, holder)) = &self.job_leases else {
            return true;
        };
        leases.hold(&format!("rekey-job/{name}"), holder, JOB_LEASE_TTL).await
    }

    async fn release_job(&self, name: &str) {
        if let Some((leases, holder)) = &self.job_leases
            && let Err(e) = leases.release(&format!("rekey-job/{name}"), holder).await
        {
            tracing::warn!(job = %name, error = %e, "could not release the re-key job's lease; it lapses");
        }
    }

    fn spawn_job(self: &Arc<Self>, job: RekeyJob) {
        let flag = Arc::new(AtomicBool::new(false));
        self.rekey_cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.name.clone(), flag.clone());
        let storage = self.clone();
        tokio::spawn(async move {
            let name = job.name.clone();
            let running = metrics::gauge!("sealstore_rekey_jobs_running");
            running.increment(1.0);
            let result = storage.run_job(job, &flag).await;
            running.decrement(1.0);
            // Paused, finished or failed: another process may take it at once.
            storage.release_job(&name).await;
            if let Err(e) = result {
                tracing::error!(job = %name, error = %e, "re-key job failed");
                if let Ok(mut j) = storage.get_rekey_job(&name).await
                    && j.state == JobState::Running
                {
                    j.state = JobState::Failed;
                    j.failures.push(Failure {
                        object: String::new(),
                        generation: 0,
                        reason: e.to_string(),
                    });
                    j.update_time = storage.now();
                    let _ = storage.save_job(&j).await;
                }
            }
            storage
                .rekey_cancel
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        });
    }

    /// The version a `to` target means now (its primary), or `None` for Google-managed.
    fn target_version(&self, to: &RekeyTo) -> StorageResult<Option<String>> {
        match to {
            RekeyTo::GoogleManaged => Ok(None),
            RekeyTo::KmsKeyName(k) => Ok(Some(self.keys.primary_version(k)?)),
        }
    }

    fn selected(&self, from: &Option<RekeyFrom>, rec: &ObjectRecord) -> StorageResult<bool> {
        let v = &rec.envelope.key_version;
        Ok(match from {
            None => true,
            Some(RekeyFrom::KmsKeyName(k)) => {
                rec.envelope.kind == KeyKind::Cmek && v.starts_with(&format!("{k}/cryptoKeyVersions/"))
            }
            Some(RekeyFrom::KmsKeyVersions(vs)) => vs.iter().any(|x| x == v),
            Some(RekeyFrom::AllButPrimaryOf(k)) => {
                rec.envelope.kind == KeyKind::Cmek
                    && v.starts_with(&format!("{k}/cryptoKeyVersions/"))
                    && *v != self.keys.primary_version(k)?
            }
        })
    }

    async fn run_job(self: &Arc<Self>, mut job: RekeyJob, cancel: &AtomicBool) -> StorageResult<()> {
        let mut since_checkpoint = 0u64;
        loop {
            if !self.hold_job(&job.name).await {
                // Another process holds it now (this one stalled past the lease): it
                // continues from the last checkpoint; this one stops without writing.
                tracing::warn!(job = %job.name, "lost the re-key job's lease; another gateway continues it");
                return Ok(());
            }
            let spec = ListSpec {
                prefix: job.prefix.clone(),
                // Noncurrent generations are protected by the key too.
                versions: true,
                max_results: Some(500),
                page_token: job.cursor.clone(),
                soft_deleted: job.soft_phase,
                ..Default::default()
            };
            let page = self.list_objects(&job.bucket, spec).await?;
            let bucket = self.get_bucket(&job.bucket).await?;
            // The job belongs to the bucket of its project: a bucket of the same name
            // recreated elsewhere is not its business.
            let project = job.name.split('/').nth(1).unwrap_or("");
            if bucket.project != project || bucket.time_created > job.create_time {
                return Err(StorageError::invalid(format!(
                    "Bucket {} is no longer the bucket this job was created for.",
                    job.bucket
                )));
            }
            if cancel.load(Ordering::SeqCst) {
                return Ok(());
            }
            if self.rekey_pause.load(Ordering::SeqCst) {
                // Shutdown: the cursor names the next page, so this is a checkpoint.
                job.update_time = self.now();
                self.save_job(&job).await?;
                tracing::info!(job = %job.name, "re-key job paused at a checkpoint for shutdown");
                return Ok(());
            }
            // Objects are independent: several in flight let the metadata writer commit
            // their updates as one group.
            let (shared_job, shared_bucket) = (Arc::new(job.clone()), Arc::new(bucket.clone()));
            let outcomes: Vec<(ObjectRecord, StorageResult<Outcome>)> =
                // Generations written after the job started (its own rewrites among them)
                // already use current keys: not part of the job.
                futures::stream::iter(page.items.iter().filter(|r| r.time_created <= job.create_time).cloned().collect::<Vec<_>>())
                    .map(|rec| {
                        let (this, job, bucket) = (self.clone(), shared_job.clone(), shared_bucket.clone());
                        async move {
                            let r = this.rekey_one(&job, &bucket, &rec).await;
                            (rec, r)
                        }
                    })
                    .buffer_unordered(JOB_CONCURRENCY)
                    .collect()
                    .await;
            let outcomes = self.apply_rewraps(outcomes).await?;
            for (rec, outcome) in &outcomes {
                job.counters.scanned += 1;
                match outcome {
                    Ok(Outcome::Done | Outcome::Rewrap(..)) => {
                        job.counters.rewritten += 1;
                        job.counters.bytes += rec.size;
                        metrics::counter!("sealstore_rekey_objects_total", "result" => "rewritten").increment(1);
                        metrics::counter!("sealstore_rekey_bytes_total").increment(rec.size);
                    }
                    Ok(Outcome::Skipped(reason)) => {
                        metrics::counter!("sealstore_rekey_objects_total", "result" => "skipped").increment(1);
                        job.counters.skipped += 1;
                        *job.skipped.entry((*reason).to_owned()).or_default() += 1;
                    }
                    Err(e) => {
                        metrics::counter!("sealstore_rekey_objects_total", "result" => "failed").increment(1);
                        job.counters.failed += 1;
                        if job.failures.len() < MAX_FAILURES {
                            job.failures.push(Failure {
                                object: rec.name.clone(),
                                generation: rec.generation,
                                reason: e.to_string(),
                            });
                        }
                    }
                }
                since_checkpoint += 1;
            }
            job.cursor = page.next_page_token.clone();
            if job.cursor.is_none() && !job.soft_phase {
                job.soft_phase = true;
                continue;
            }
            if since_checkpoint >= CHECKPOINT_EVERY || job.cursor.is_none() {
                since_checkpoint = 0;
                if job.cursor.is_none() {
                    job.state = if job.counters.failed > 0 {
                        JobState::Failed
                    } else {
                        JobState::Succeeded
                    };
                }
                job.update_time = self.now();
                // A cancel recorded meanwhile wins.
                if self.get_rekey_job(&job.name).await?.state == JobState::Cancelled {
                    return Ok(());
                }
                self.save_job(&job).await?;
            }
            if job.cursor.is_none() {
                return Ok(());
            }
        }
    }

    /// Commits the re-wrapped records of a page in one transaction (each still checked
    /// against its metageneration, so a concurrent metadata change wins), instead of one
    /// metadata round trip per object.
    async fn apply_rewraps(
        &self,
        mut outcomes: Vec<(ObjectRecord, StorageResult<Outcome>)>,
    ) -> StorageResult<Vec<(ObjectRecord, StorageResult<Outcome>)>> {
        let updates: Vec<(ObjectRecord, i64)> = outcomes
            .iter()
            .filter_map(|(_, o)| match o {
                Ok(Outcome::Rewrap(updated, expected)) => Some(((**updated).clone(), *expected)),
                _ => None,
            })
            .collect();
        if updates.is_empty() {
            return Ok(outcomes);
        }
        // A failure of the whole transaction fails each of its re-wraps, not the job.
        let mut results = match self.meta.update_objects(updates).await {
            Ok(r) => r.into_iter(),
            Err(e) => {
                for (_, outcome) in outcomes.iter_mut() {
                    if matches!(outcome, Ok(Outcome::Rewrap(..))) {
                        *outcome = Err(StorageError::Internal(e.to_string()));
                    }
                }
                return Ok(outcomes);
            }
        };
        for (_, outcome) in outcomes.iter_mut() {
            if matches!(outcome, Ok(Outcome::Rewrap(..))) {
                let r = results
                    .next()
                    .unwrap_or_else(|| Err(StorageError::internal("a re-wrap was not applied")));
                if let Err(e) = r {
                    *outcome = Err(e);
                }
            }
        }
        Ok(outcomes)
    }

    /// Moves one object, or says why it was skipped. A re-wrap comes back as the
    /// updated record, for `apply_rewraps`.
    async fn rekey_one(
        &self,
        job: &RekeyJob,
        bucket: &super::model::Bucket,
        rec: &ObjectRecord,
    ) -> StorageResult<Outcome> {
        // With `from`, only its objects are candidates (CSEK objects never are); without
        // it, every object not already under `to` is, and CSEK objects are skipped.
        if job.from.is_some() && !self.selected(&job.from, rec)? {
            return Ok(Outcome::Skipped("notSelected"));
        }
        if rec.envelope.kind == KeyKind::Csek {
            return Ok(Outcome::Skipped("csek"));
        }
        let target = self.target_version(&job.to)?;
        let already = match &target {
            None => rec.envelope.kind == KeyKind::GoogleManaged,
            Some(v) => rec.envelope.kind == KeyKind::Cmek && rec.envelope.key_version == *v,
        };
        if already {
            return Ok(Outcome::Skipped("alreadyTarget"));
        }
        let to_key = match &job.to {
            RekeyTo::KmsKeyName(k) => Some(k.as_str()),
            RekeyTo::GoogleManaged => None,
        };
        let opened = self.open(rec.clone(), None)?;
        // A rewrite makes a new live generation, so a noncurrent generation is re-wrapped
        // in place instead (its data keeps its DEK; the DEK moves to the new key).
        let mode = match job.mode {
            RekeyMode::Rewrap => RekeyMode::Rewrap,
            RekeyMode::Rewrite => {
                let (b, n) = (rec.bucket.clone(), rec.name.clone());
                let live = self.meta.get_object(&b, &n, None).await?;
                if live.is_some_and(|l| l.generation == rec.generation) {
                    RekeyMode::Rewrite
                } else {
                    RekeyMode::Rewrap
                }
            }
        };
        match mode {
            RekeyMode::Rewrap => {
                let mut updated = rec.clone();
                updated.envelope = self.rewrap_envelope(&opened, bucket, to_key)?;
                // The key is metadata: a new metageneration, so a concurrent metadata patch
                // (which writes back the record it read) fails its check instead of
                // restoring the old wrapped key.
                updated.metageneration += 1;
                updated.updated = self.now();
                return Ok(Outcome::Rewrap(Box::new(updated), rec.metageneration));
            }
            RekeyMode::Rewrite => {
                let spec = WriteSpec {
                    bucket: rec.bucket.clone(),
                    name: rec.name.clone(),
                    meta: rec.meta.clone(),
                    storage_class: Some(rec.storage_class.clone()),
                    // Never clobber a concurrent writer.
                    preconditions: Preconditions {
                        if_generation_match: Some(rec.generation),
                        ..Default::default()
                    },
                    expected_crc32c: Some(opened.hashes.crc32c),
                    expected_md5: opened.hashes.md5,
                    kms_key_name: to_key.map(str::to_owned),
                    component_count: rec.component_count,
                    csek: None,
                    protection: super::model::WriteProtection {
                        temporary_hold: rec.temporary_hold,
                        event_based_hold: Some(rec.event_based_hold),
                        retention: rec.retention.clone(),
                    },
                    multipart_etag: rec.multipart_etag.clone(),
                    force_google_managed: to_key.is_none(),
                    // The job replaces the generation it read (guarded by ifGenerationMatch).
                    may_replace: true,
                };
                let size = rec.size;
                let body = self.read_range(&opened, 0, size);
                self.write(spec, body).await?;
            }
        }
        Ok(Outcome::Done)
    }
}
