//! Soft delete, engine side: the policy's validation, reading and restoring
//! soft-deleted generations and buckets, and the hard deletion that ends them.

use super::engine::{Storage, replace_check_for};
use super::error::{StorageError, StorageResult};
use super::meta::RestoreSpec;
use super::model::{Bucket, ObjectRecord, Preconditions};
use chrono::{DateTime, Utc};

/// GCS's default for new buckets: 7 days.
pub const DEFAULT_SECONDS: i64 = 7 * 86_400;
const MIN_SECONDS: i64 = 7 * 86_400;
const MAX_SECONDS: i64 = 90 * 86_400;

/// 0 (off) or 7 to 90 days, as GCS validates `retentionDurationSeconds`.
pub fn check_duration(seconds: i64) -> StorageResult<()> {
    if seconds == 0 || (MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        Ok(())
    } else {
        Err(StorageError::invalid(format!(
            "Invalid softDeletePolicy.retentionDurationSeconds {seconds}: use 0 (off) or 604800 to 7776000 (7 to 90 days)."
        )))
    }
}

/// Soft-deleted generations hard-deleted per call of the worker.
const HARD_DELETE_BATCH: usize = 1000;

impl Storage {
    pub async fn get_soft_object(&self, bucket: &str, name: &str, generation: i64) -> StorageResult<ObjectRecord> {
        let b = self.get_bucket(bucket).await?;
        let (bn, n, bg) = (bucket.to_owned(), name.to_owned(), b.generation());
        self.meta
            .get_soft_object(&bn, bg, &n, generation)
            .await?
            .ok_or_else(|| {
                StorageError::NotFound(format!(
                    "No soft-deleted object {bucket}/{name} with generation {generation}."
                ))
            })
    }

    /// `objects.restore`: the soft-deleted generation becomes the live object again, as
    /// a new generation with its data and encryption exactly as they were. A live object
    /// it replaces is treated as an overwrite would treat it (holds and retention
    /// refuse; on a versioned bucket it becomes noncurrent, else soft-deleted itself).
    pub async fn restore_object(
        &self,
        bucket: &str,
        name: &str,
        generation: i64,
        pre: &Preconditions,
    ) -> StorageResult<ObjectRecord> {
        let b = self.get_bucket(bucket).await?;
        let spec = RestoreSpec {
            bucket: bucket.to_owned(),
            name: name.to_owned(),
            generation,
            new_generation: self.next_generation().await?,
            now: self.now(),
            pre: *pre,
        };
        let check = replace_check_for(b, spec.now);
        let (restored, replaced) = self.meta.restore_object(&spec, check).await?;
        if let Some(r) = replaced {
            self.discard_blob(&r.envelope).await;
        }
        Ok(restored)
    }

    /// Ends soft-deleted generations and buckets whose hard-delete time has come:
    /// their rows go, then their blobs. Returns the buckets that went (for their IAM
    /// policies).
    pub async fn hard_delete_due(&self, now: DateTime<Utc>) -> StorageResult<Vec<Bucket>> {
        let mut gone_buckets = vec![];
        loop {
            let (objects, buckets) = self.meta.take_hard_deletes(now, HARD_DELETE_BATCH).await?;
            let more = objects.len() == HARD_DELETE_BATCH;
            for r in &objects {
                self.discard_blob(&r.envelope).await;
            }
            for (b, objects) in buckets {
                for r in &objects {
                    self.discard_blob(&r.envelope).await;
                }
                gone_buckets.push(b);
            }
            if !more {
                return Ok(gone_buckets);
            }
        }
    }

    pub async fn list_soft_buckets(&self, project: &str, prefix: &str) -> StorageResult<Vec<Bucket>> {
        let (p, x) = (project.to_owned(), prefix.to_owned());
        self.meta.list_soft_buckets(&p, &x).await
    }

    pub async fn get_soft_bucket(&self, name: &str, generation: i64) -> StorageResult<Bucket> {
        let n = name.to_owned();
        self.meta.get_soft_bucket(&n, generation).await?.ok_or_else(|| {
            StorageError::NotFound(format!("No soft-deleted bucket {name} with generation {generation}."))
        })
    }

    pub async fn restore_bucket(&self, name: &str, generation: i64) -> StorageResult<Bucket> {
        let (n, now) = (name.to_owned(), self.now());
        let b = self.meta.restore_bucket(&n, generation, now).await?;
        self.forget_bucket(name);
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for ok in [0, 604_800, 7_776_000, 1_000_000] {
            assert!(check_duration(ok).is_ok(), "{ok}");
        }
        for bad in [-1, 1, 604_799, 7_776_001, i64::MAX] {
            assert!(check_duration(bad).is_err(), "{bad}");
        }
    }
}
