//! The object resource a client writes (JSON metadata of an upload, a patch, a copy or
//! compose destination): which fields it may carry, and applying them to stored
//! metadata. Shared by the media and the metadata handlers.

use super::buckets::merge_map;
use super::error::{GcsError, GcsResult};
use axum::http::StatusCode;
use sealstore_storage::model::ObjectMeta;
use serde_json::{Value, json};

/// Object features sealstore does not implement yet: refused, never stored and ignored.
const UNSUPPORTED: &[&str] = &["contexts"];

/// Object fields a request may carry: the writable ones sealstore implements, and the
/// ones the server sets (clients send back what they read; ignored, as on GCS).
const KNOWN: &[&str] = &[
    // writable
    "name",
    "bucket",
    "contentType",
    "contentEncoding",
    "contentDisposition",
    "contentLanguage",
    "cacheControl",
    "customTime",
    "metadata",
    "storageClass",
    "kmsKeyName",
    "temporaryHold",
    "eventBasedHold",
    "retention",
    "crc32c",
    "md5Hash",
    "acl",
    // set by the server
    "kind",
    "id",
    "selfLink",
    "mediaLink",
    "generation",
    "metageneration",
    "size",
    "etag",
    "timeCreated",
    "updated",
    "timeDeleted",
    "timeFinalized",
    "timeStorageClassUpdated",
    "componentCount",
    "customerEncryption",
    "owner",
    "retentionExpirationTime",
    "softDeleteTime",
    "hardDeleteTime",
    "restoreToken",
];

/// `retention` in a request body: `None` if absent, `Some(None)` to remove.
pub fn parse_retention(body: &Value) -> GcsResult<Option<Option<sealstore_storage::model::ObjectRetention>>> {
    let Some(r) = body.get("retention") else {
        return Ok(None);
    };
    if r.is_null() {
        return Ok(Some(None));
    }
    let mode = r.get("mode").and_then(Value::as_str);
    let until = r.get("retainUntilTime").and_then(Value::as_str);
    match (mode, until) {
        (None, None) => Ok(Some(None)),
        (Some(m), Some(t)) => {
            let t = chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| GcsError::invalid(format!("Invalid retainUntilTime \"{t}\".")))?
                .with_timezone(&chrono::Utc);
            Ok(Some(Some(sealstore_storage::model::ObjectRetention {
                mode: m.to_owned(),
                retain_until: t,
            })))
        }
        _ => Err(GcsError::invalid(
            "Object retention needs both mode and retainUntilTime.",
        )),
    }
}

pub fn opt_bool(body: &Value, k: &str) -> GcsResult<Option<bool>> {
    match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(GcsError::invalid(format!("Invalid value for {k}: expected a boolean."))),
    }
}

/// Holds and retention for a new object, from its metadata document.
pub fn write_protection(body: &Value) -> GcsResult<sealstore_storage::model::WriteProtection> {
    Ok(sealstore_storage::model::WriteProtection {
        temporary_hold: opt_bool(body, "temporaryHold")?.unwrap_or(false),
        event_based_hold: opt_bool(body, "eventBasedHold")?,
        retention: parse_retention(body)?.flatten(),
    })
}

pub fn check_unsupported(body: &Value) -> GcsResult<()> {
    check_fields(body, super::acl::Target::NewObject)
}

/// Refuses unknown fields, unsupported features and ACLs in an object document.
pub fn check_fields(body: &Value, target: super::acl::Target) -> GcsResult<()> {
    if let Some(map) = body.as_object() {
        for k in map.keys() {
            if !KNOWN.contains(&k.as_str()) && !UNSUPPORTED.contains(&k.as_str()) {
                return Err(GcsError::invalid(format!("Unknown object field \"{k}\".")));
            }
        }
    }
    super::acl::refuse_acl_fields(body, target)?;
    for k in UNSUPPORTED {
        if body
            .get(k)
            .is_some_and(|v| !v.is_null() && v != &json!(false) && v != &json!([]))
        {
            return Err(GcsError::new(
                StatusCode::NOT_IMPLEMENTED,
                "notImplemented",
                format!("The object field {k} is not supported by sealstore yet."),
            ));
        }
    }
    Ok(())
}

fn opt_str(body: &Value, k: &str) -> GcsResult<Option<Option<String>>> {
    match body.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(GcsError::invalid(format!("Invalid value for {k}: expected a string."))),
    }
}

/// Applies the writable metadata fields of `body` to `meta`: PATCH semantics (absent
/// fields kept, null clears, `metadata` merges) or PUT semantics (`replace`).
pub fn apply_meta(meta: &ObjectMeta, body: &Value, replace: bool) -> GcsResult<ObjectMeta> {
    let mut m = if replace { ObjectMeta::default() } else { meta.clone() };
    let fields: [(&str, &mut Option<String>); 6] = [
        ("contentType", &mut m.content_type),
        ("contentEncoding", &mut m.content_encoding),
        ("contentDisposition", &mut m.content_disposition),
        ("contentLanguage", &mut m.content_language),
        ("cacheControl", &mut m.cache_control),
        ("customTime", &mut m.custom_time),
    ];
    for (k, slot) in fields {
        if let Some(v) = opt_str(body, k)? {
            *slot = v;
        }
    }
    if let Some(t) = &m.custom_time
        && chrono::DateTime::parse_from_rfc3339(t).is_err()
    {
        return Err(GcsError::invalid(format!(
            "Invalid value for customTime: \"{t}\" is not an RFC 3339 timestamp."
        )));
    }
    match body.get("metadata") {
        None => {}
        Some(Value::Null) => m.metadata.clear(),
        Some(Value::Object(map)) => {
            let mut change = std::collections::BTreeMap::new();
            for (k, v) in map {
                let v = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                change.insert(k.clone(), v);
            }
            m.metadata = merge_map(&m.metadata, change, replace);
        }
        Some(_) => return Err(GcsError::invalid("Invalid value for metadata: expected an object.")),
    }
    Ok(m)
}
