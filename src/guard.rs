//! Storage's veto on key-version destruction (the seed's last rule): a version that
//! wraps the DEK of an object under a hold, or under a locked bucket policy or locked
//! object retention that has not expired, cannot be destroyed. The check reads the
//! key-version index, not the blobs.

use crate::clock::Clock;
use crate::kms::names::VersionName;
use crate::storage::meta::MetaStore;
use std::sync::Arc;

pub struct RetentionGuard {
    meta: Arc<dyn MetaStore>,
    clock: Arc<dyn Clock>,
}

impl RetentionGuard {
    pub fn new(meta: Arc<dyn MetaStore>, clock: Arc<dyn Clock>) -> Self {
        Self { meta, clock }
    }
}

impl crate::kms::DestroyGuard for RetentionGuard {
    /// The KMS core asks synchronously (from the blocking pool or its ticker); the store
    /// is async, so this waits for it without stalling a runtime worker. Failing to ask
    /// refuses the destruction (fail closed).
    fn check_destroy(&self, version: &VersionName) -> Result<(), String> {
        sealstore_core::blocking::wait(self.check(version))
    }
}

impl RetentionGuard {
    async fn check(&self, version: &VersionName) -> Result<(), String> {
        let objects = self
            .meta
            .objects_with_key_version(&version.to_string())
            .await
            .map_err(|e| format!("could not check objects encrypted with {version}: {e}"))?;
        let now = self.clock.now();
        let mut blocking = vec![];
        let mut buckets = std::collections::HashMap::new();
        for o in &objects {
            let bucket = match buckets.get(&o.bucket) {
                Some(b) => b,
                None => {
                    let b = self
                        .meta
                        .get_bucket(&o.bucket)
                        .await
                        .map_err(|e| format!("could not read bucket {}: {e}", o.bucket))?;
                    let Some(b) = b else { continue };
                    buckets.entry(o.bucket.clone()).or_insert(b)
                }
            };
            if o.pins_key_version(bucket, now) {
                blocking.push(format!("{}/{}#{}", o.bucket, o.name, o.generation));
            }
        }
        match blocking.first() {
            None => Ok(()),
            Some(example) => Err(format!(
                "{version} cannot be destroyed: it encrypts {} object(s) under a hold or an unexpired locked retention (for example {example}). Release the holds and wait for retention to expire, or rewrite the objects under another key first.",
                blocking.len()
            )),
        }
    }
}
