//! Buckets and object generations as the engine holds and persists them.

use super::error::{StorageError, StorageResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bytes persisted as base64 in the JSON metadata documents.
pub mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        STANDARD
            .decode(String::deserialize(d)?)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub name: String,
    pub project: String,
    /// Upper-case, as GCS returns it (`US-EAST1`, `US`, `NAM4`).
    pub location: String,
    /// `region`, `dual-region` or `multi-region`.
    pub location_type: String,
    /// The two regions of a configurable dual-region, if any.
    pub data_locations: Vec<String>,
    pub storage_class: String,
    pub time_created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub metageneration: i64,
    pub versioning: bool,
    pub labels: BTreeMap<String, String>,
    pub default_kms_key_name: Option<String>,
    #[serde(default)]
    pub retention_policy: Option<RetentionPolicy>,
    #[serde(default)]
    pub default_event_based_hold: bool,
    /// Created with `enableObjectRetention=true`: objects may carry their own retention.
    #[serde(default)]
    pub object_retention: bool,
    /// Which kinds of encryption new objects may use.
    #[serde(default)]
    pub encryption_enforcement: super::enforcement::EncryptionEnforcement,
    /// `iamConfiguration.publicAccessPrevention`: `inherited` or `enforced`.
    #[serde(default = "default_pap")]
    pub public_access_prevention: String,
    /// `rpo`: `DEFAULT` or `ASYNC_TURBO` (dual-regions); `None` on regions.
    #[serde(default)]
    pub rpo: Option<String>,
    /// `lifecycle.rule`, applied by the lifecycle worker.
    #[serde(default)]
    pub lifecycle: Vec<super::lifecycle::Rule>,
    /// `softDeletePolicy`; `None` (buckets from older builds) means off.
    #[serde(default)]
    pub soft_delete_policy: Option<SoftDeletePolicy>,
    /// Set while the bucket itself is soft-deleted.
    #[serde(default)]
    pub soft_delete_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub hard_delete_time: Option<DateTime<Utc>>,
}

impl Bucket {
    /// The bucket's `generation`: its creation time in microseconds, which tells one
    /// incarnation of a name from another.
    pub fn generation(&self) -> i64 {
        self.time_created.timestamp_micros()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftDeletePolicy {
    /// 0 (off) or 7 to 90 days, in seconds.
    pub retention_duration_seconds: i64,
    pub effective_time: DateTime<Utc>,
}

fn default_pap() -> String {
    "inherited".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Seconds.
    pub retention_period: i64,
    pub effective_time: DateTime<Utc>,
    pub is_locked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRetention {
    /// `Unlocked` or `Locked`.
    pub mode: String,
    pub retain_until: DateTime<Utc>,
}

/// How an object's data key is protected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyKind {
    /// Wrapped by the Google-managed service key held in the KMS core.
    GoogleManaged,
    /// Wrapped by a customer-managed KMS key.
    Cmek,
    /// Wrapped by a customer-supplied key (only its SHA-256 is stored).
    Csek,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The project whose storage service agent wrapped the DEK.
    pub project: String,
    pub kind: KeyKind,
    /// The full KMS version name that wrapped the DEK.
    pub key_version: String,
    #[serde(with = "b64")]
    pub wrapped_dek: Vec<u8>,
    /// For CSEK objects: base64 SHA-256 of the customer's key.
    #[serde(default)]
    pub csek_sha256: Option<String>,
    /// Random id naming the blob parts; never derived from bucket or object names.
    pub blob_id: String,
    #[serde(with = "b64")]
    pub nonce_prefix: Vec<u8>,
    /// Segments stored in each blob part, in order.
    pub parts: Vec<u64>,
    /// CRC32C ‖ MD5 of the plaintext, sealed under the DEK.
    #[serde(with = "b64")]
    pub sealed_hashes: Vec<u8>,
    /// The object's one sealed segment is stored in its metadata row, not in the blob
    /// store (objects up to one segment).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inline: bool,
    /// That sealed segment, when it was loaded with the row. Never part of the JSON
    /// document: the row keeps it in its own column.
    #[serde(skip)]
    pub inline_data: Option<InlineData>,
}

/// Sealed bytes of an inline object. `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineData(pub bytes::Bytes);

impl std::fmt::Debug for InlineData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InlineData({} bytes)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectMeta {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub custom_time: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub bucket: String,
    pub name: String,
    pub generation: i64,
    pub metageneration: i64,
    pub size: u64,
    pub meta: ObjectMeta,
    pub storage_class: String,
    pub time_created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Set for composite objects, which have no MD5.
    pub component_count: Option<u32>,
    pub envelope: Envelope,
    /// Set on objects completed from an XML API multipart upload: their S3 ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart_etag: Option<String>,
    #[serde(default)]
    pub temporary_hold: bool,
    #[serde(default)]
    pub event_based_hold: bool,
    /// When the bucket retention clock started: creation, or the release of an
    /// event-based hold.
    #[serde(default)]
    pub retention_base: Option<DateTime<Utc>>,
    #[serde(default)]
    pub retention: Option<ObjectRetention>,
    /// When this generation became noncurrent (`timeDeleted`); `None` while live.
    #[serde(default)]
    pub time_deleted: Option<DateTime<Utc>>,
    /// When lifecycle last changed the storage class (else the creation time).
    #[serde(default)]
    pub time_storage_class_updated: Option<DateTime<Utc>>,
    /// Set on soft-deleted generations: when they were deleted, and when they go for good.
    #[serde(default)]
    pub soft_delete_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub hard_delete_time: Option<DateTime<Utc>>,
}

impl ObjectRecord {
    /// When the bucket's retention policy stops protecting this object (none while an
    /// event-based hold is active).
    pub fn retention_expiration(&self, bucket: &Bucket) -> Option<DateTime<Utc>> {
        let p = bucket.retention_policy.as_ref()?;
        if self.event_based_hold {
            return None;
        }
        Some(self.retention_base.unwrap_or(self.time_created) + chrono::TimeDelta::seconds(p.retention_period))
    }

    /// Refuses deletion or replacement while a hold or an unexpired retention applies.
    pub fn check_removable(&self, bucket: &Bucket, now: DateTime<Utc>) -> StorageResult<()> {
        let id = format!("{}/{}", self.bucket, self.name);
        for (held, kind) in [
            (self.temporary_hold, "Temporary"),
            (self.event_based_hold, "Event-Based"),
        ] {
            if held {
                return Err(StorageError::Forbidden {
                    reason: "objectUnderActiveHold",
                    message: format!(
                        "Object '{id}' is under active {kind} hold and cannot be deleted, overwritten or archived until hold is removed."
                    ),
                });
            }
        }
        let until = [
            self.retention_expiration(bucket),
            self.retention.as_ref().map(|r| r.retain_until),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(t) = until
            && t > now
        {
            return Err(StorageError::Forbidden {
                reason: "retentionPolicyNotMet",
                message: format!(
                    "Object '{id}' is subject to bucket's retention policy or object retention and cannot be deleted or overwritten until {}.",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
            });
        }
        Ok(())
    }

    /// The record an `objects.move` makes of this one: a new generation under the new
    /// name, with the same data, envelope and metadata.
    pub fn moved_to(&self, name: &str, generation: i64, now: DateTime<Utc>) -> Self {
        Self {
            name: name.to_owned(),
            generation,
            metageneration: 1,
            time_created: now,
            updated: now,
            retention_base: None,
            time_deleted: None,
            time_storage_class_updated: None,
            soft_delete_time: None,
            hard_delete_time: None,
            ..self.clone()
        }
    }

    /// Whether this object keeps its key version from being destroyed: under a hold, or
    /// under a locked bucket policy or locked object retention that has not expired.
    pub fn pins_key_version(&self, bucket: &Bucket, now: DateTime<Utc>) -> bool {
        if self.temporary_hold || self.event_based_hold {
            return true;
        }
        let locked_policy = bucket.retention_policy.as_ref().is_some_and(|p| p.is_locked)
            && self.retention_expiration(bucket).is_some_and(|t| t > now);
        let locked_object = self
            .retention
            .as_ref()
            .is_some_and(|r| r.mode == "Locked" && r.retain_until > now);
        locked_policy || locked_object
    }
}

/// Holds and retention a new object starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteProtection {
    pub temporary_hold: bool,
    /// `None`: the bucket's `defaultEventBasedHold` decides.
    pub event_based_hold: Option<bool>,
    pub retention: Option<ObjectRetention>,
}

/// A resumable upload in progress. Everything needed to continue after a restart:
/// the wrapped DEK, the blob parts written so far and the running hash state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    pub id: String,
    pub bucket: String,
    pub name: String,
    pub meta: ObjectMeta,
    pub preconditions: Preconditions,
    /// From `x-upload-content-length`, when the client knew it.
    pub total: Option<u64>,
    pub expected_crc32c: Option<u32>,
    pub expected_md5: Option<[u8; 16]>,
    pub envelope: Envelope,
    #[serde(with = "b64")]
    pub hash_state: Vec<u8>,
    /// Bytes persisted so far (always a whole number of segments until the end).
    pub persisted: u64,
    pub created: DateTime<Utc>,
    /// Set once the upload completed: the generation it produced.
    pub completed_generation: Option<i64>,
    #[serde(default)]
    pub protection: WriteProtection,
    /// Whether the uploader may replace an existing object (checked at commit).
    #[serde(default)]
    pub may_replace: bool,
    /// The storage class the request asked for (`None`: the bucket's).
    #[serde(default)]
    pub storage_class: Option<String>,
}

/// The `if*Match` query parameters of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preconditions {
    pub if_generation_match: Option<i64>,
    pub if_generation_not_match: Option<i64>,
    pub if_metageneration_match: Option<i64>,
    pub if_metageneration_not_match: Option<i64>,
}

impl Preconditions {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks against the live object (`None` if there is none). `ifGenerationMatch=0`
    /// means "no live object"; a NotMatch fails when there is no live object. On reads,
    /// a failed NotMatch is 304 (`read = true`).
    pub fn check(&self, live: Option<(i64, i64)>, read: bool) -> StorageResult<()> {
        let failed = |what: &str| {
            StorageError::PreconditionFailed(format!(
                "At least one of the pre-conditions you specified did not hold ({what})."
            ))
        };
        let generation = live.map(|(g, _)| g);
        if let Some(want) = self.if_generation_match
            && generation.unwrap_or(0) != want
        {
            return Err(failed("ifGenerationMatch"));
        }
        if let Some(m) = self.if_metageneration_match
            && live.is_none_or(|(_, mg)| mg != m)
        {
            return Err(failed("ifMetagenerationMatch"));
        }
        let not_match = |x: Option<i64>, v: Option<i64>| match (x, v) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(x), Some(v)) => x != v,
        };
        if !not_match(
            self.if_generation_not_match,
            generation.or(Some(0)).filter(|_| live.is_some()),
        ) {
            return Err(if read {
                StorageError::NotModified
            } else {
                failed("ifGenerationNotMatch")
            });
        }
        if !not_match(self.if_metageneration_not_match, live.map(|(_, m)| m)) {
            return Err(if read {
                StorageError::NotModified
            } else {
                failed("ifMetagenerationNotMatch")
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precondition_semantics() {
        let p = |g, ng| Preconditions {
            if_generation_match: g,
            if_generation_not_match: ng,
            ..Default::default()
        };
        assert!(p(Some(0), None).check(None, false).is_ok());
        assert!(matches!(
            p(Some(0), None).check(Some((5, 1)), false),
            Err(StorageError::PreconditionFailed(_))
        ));
        assert!(p(Some(5), None).check(Some((5, 1)), false).is_ok());
        assert!(p(None, Some(0)).check(Some((5, 1)), false).is_ok());
        assert!(p(None, Some(0)).check(None, false).is_err());
        assert!(matches!(
            p(None, Some(5)).check(Some((5, 1)), true),
            Err(StorageError::NotModified)
        ));
        let m = Preconditions {
            if_metageneration_match: Some(2),
            ..Default::default()
        };
        assert!(m.check(Some((5, 2)), false).is_ok());
        assert!(m.check(Some((5, 1)), false).is_err());
        assert!(m.check(None, false).is_err());
    }
}
