//! Buckets and objects as GCS JSON resources. int64 values are strings; timestamps
//! have milliseconds.

use crate::query::percent_decode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use sealstore_storage::ObjectHashes;
use sealstore_storage::model::{Bucket, KeyKind, ObjectRecord};
use serde_json::{Map, Value, json};

pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Percent-encodes a path segment (`/` included), as the Python client does.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    debug_assert_eq!(percent_decode(&out, false).as_deref(), Some(s));
    out
}

pub fn bucket(b: &Bucket, base: &str) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!("storage#bucket"));
    m.insert("id".into(), json!(b.name));
    m.insert("selfLink".into(), json!(format!("{base}/storage/v1/b/{}", b.name)));
    m.insert("name".into(), json!(b.name));
    m.insert(
        "projectNumber".into(),
        json!(sealstore_iam::roles::project_number(&b.project).to_string()),
    );
    m.insert("timeCreated".into(), json!(time(b.time_created)));
    m.insert("updated".into(), json!(time(b.updated)));
    m.insert("metageneration".into(), json!(b.metageneration.to_string()));
    m.insert("location".into(), json!(b.location));
    m.insert("locationType".into(), json!(b.location_type));
    m.insert("storageClass".into(), json!(b.storage_class));
    m.insert("etag".into(), json!(bucket_etag(b)));
    m.insert("versioning".into(), json!({"enabled": b.versioning}));
    if !b.labels.is_empty() {
        m.insert("labels".into(), json!(b.labels));
    }
    let mut enc = Map::new();
    if let Some(k) = &b.default_kms_key_name {
        enc.insert("defaultKmsKeyName".into(), json!(k));
    }
    for (kind, field, _) in sealstore_storage::enforcement::KINDS.iter() {
        if let Some(c) = b.encryption_enforcement.get(kind) {
            enc.insert(
                (*field).into(),
                json!({"restrictionMode": c.restriction_mode.as_str(), "effectiveTime": time(c.effective_time)}),
            );
        }
    }
    if !enc.is_empty() {
        m.insert("encryption".into(), Value::Object(enc));
    }
    // IAM only, no ACLs: uniform bucket-level access is on, and locked, from creation.
    let ubla = json!({"enabled": true, "lockedTime": time(b.time_created)});
    m.insert(
        "iamConfiguration".into(),
        json!({
            "uniformBucketLevelAccess": ubla,
            "bucketPolicyOnly": ubla,
            "publicAccessPrevention": b.public_access_prevention,
        }),
    );
    m.insert("generation".into(), json!(b.generation().to_string()));
    if let Some(p) = &b.soft_delete_policy {
        m.insert(
            "softDeletePolicy".into(),
            json!({
                "retentionDurationSeconds": p.retention_duration_seconds.to_string(),
                "effectiveTime": time(p.effective_time),
            }),
        );
    }
    if let (Some(s), Some(h)) = (b.soft_delete_time, b.hard_delete_time) {
        m.insert("softDeleteTime".into(), json!(time(s)));
        m.insert("hardDeleteTime".into(), json!(time(h)));
    }
    if !b.lifecycle.is_empty() {
        m.insert("lifecycle".into(), super::lifecycle::render(&b.lifecycle));
    }
    if let Some(r) = &b.rpo {
        m.insert("rpo".into(), json!(r));
    }
    if !b.data_locations.is_empty() {
        m.insert(
            "customPlacementConfig".into(),
            json!({"dataLocations": b.data_locations}),
        );
    }
    if let Some(p) = &b.retention_policy {
        let mut rp =
            json!({"retentionPeriod": p.retention_period.to_string(), "effectiveTime": time(p.effective_time)});
        if p.is_locked {
            rp["isLocked"] = json!(true);
        }
        m.insert("retentionPolicy".into(), rp);
    }
    if b.default_event_based_hold {
        m.insert("defaultEventBasedHold".into(), json!(true));
    }
    if b.object_retention {
        m.insert("objectRetention".into(), json!({"mode": "Enabled"}));
    }
    Value::Object(m)
}

/// An object resource. `hashes` is `None` when they must be withheld (listings of
/// CMEK objects, or an unusable key).
pub fn object(o: &ObjectRecord, hashes: Option<&ObjectHashes>, base: &str) -> Value {
    object_in(o, hashes, base, None)
}

/// An object resource, with `retentionExpirationTime` when its bucket is known.
pub fn object_in(o: &ObjectRecord, hashes: Option<&ObjectHashes>, base: &str, bucket: Option<&Bucket>) -> Value {
    let mut m = Map::new();
    let quoted = quote(&o.name);
    m.insert("kind".into(), json!("storage#object"));
    m.insert("id".into(), json!(format!("{}/{}/{}", o.bucket, o.name, o.generation)));
    m.insert(
        "selfLink".into(),
        json!(format!("{base}/storage/v1/b/{}/o/{quoted}", o.bucket)),
    );
    m.insert(
        "mediaLink".into(),
        json!(format!(
            "{base}/download/storage/v1/b/{}/o/{quoted}?generation={}&alt=media",
            o.bucket, o.generation
        )),
    );
    m.insert("name".into(), json!(o.name));
    m.insert("bucket".into(), json!(o.bucket));
    m.insert("generation".into(), json!(o.generation.to_string()));
    m.insert("metageneration".into(), json!(o.metageneration.to_string()));
    // Unset stays unset (a compose without contentType); uploads default it when written.
    for (k, v) in [
        ("contentType", &o.meta.content_type),
        ("contentEncoding", &o.meta.content_encoding),
        ("contentDisposition", &o.meta.content_disposition),
        ("contentLanguage", &o.meta.content_language),
        ("cacheControl", &o.meta.cache_control),
        ("customTime", &o.meta.custom_time),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    m.insert("storageClass".into(), json!(o.storage_class));
    m.insert("size".into(), json!(o.size.to_string()));
    m.insert("timeCreated".into(), json!(time(o.time_created)));
    m.insert("updated".into(), json!(time(o.updated)));
    m.insert(
        "timeStorageClassUpdated".into(),
        json!(time(o.time_storage_class_updated.unwrap_or(o.time_created))),
    );
    if let Some(t) = o.time_deleted {
        m.insert("timeDeleted".into(), json!(time(t)));
    }
    if let (Some(s), Some(h)) = (o.soft_delete_time, o.hard_delete_time) {
        m.insert("softDeleteTime".into(), json!(time(s)));
        m.insert("hardDeleteTime".into(), json!(time(h)));
    }
    m.insert("etag".into(), json!(etag(o)));
    if !o.meta.metadata.is_empty() {
        m.insert("metadata".into(), json!(o.meta.metadata));
    }
    if let Some(c) = o.component_count {
        m.insert("componentCount".into(), json!(c));
    }
    match o.envelope.kind {
        KeyKind::Cmek => {
            m.insert("kmsKeyName".into(), json!(o.envelope.key_version));
        }
        KeyKind::Csek => {
            m.insert(
                "customerEncryption".into(),
                json!({"encryptionAlgorithm": "AES256", "keySha256": o.envelope.csek_sha256.clone().unwrap_or_default()}),
            );
        }
        KeyKind::GoogleManaged => {}
    }
    if o.temporary_hold {
        m.insert("temporaryHold".into(), json!(true));
    }
    if o.event_based_hold {
        m.insert("eventBasedHold".into(), json!(true));
    }
    if let Some(t) = bucket.and_then(|b| o.retention_expiration(b)) {
        m.insert("retentionExpirationTime".into(), json!(time(t)));
    }
    if let Some(r) = &o.retention {
        m.insert(
            "retention".into(),
            json!({"mode": r.mode, "retainUntilTime": time(r.retain_until)}),
        );
    }
    if let Some(h) = hashes {
        m.insert("crc32c".into(), json!(sealstore_storage::hashing::crc32c_b64(h.crc32c)));
        if let Some(md5) = &h.md5 {
            m.insert("md5Hash".into(), json!(sealstore_storage::hashing::md5_b64(md5)));
        }
    }
    Value::Object(m)
}

/// A bucket's ETag: it changes with every metadata change.
pub fn bucket_etag(b: &Bucket) -> String {
    STANDARD.encode(b.metageneration.to_be_bytes())
}

/// An object's ETag: generation and metageneration.
pub fn etag(o: &ObjectRecord) -> String {
    let mut b = o.generation.to_be_bytes().to_vec();
    b.extend_from_slice(&o.metageneration.to_be_bytes());
    STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_the_python_client() {
        assert_eq!(quote("dir/a b.txt"), "dir%2Fa%20b.txt");
        assert_eq!(quote("ü~"), "%C3%BC~");
    }
}
