//! Cloud KMS resources as proto3 JSON. Default values are left out, as the proto3
//! JSON mapping does; enums are names, or integers when the client asked for them.

use super::json::{b64, format_duration, format_time};
use sealstore_iam::Policy;
use sealstore_kms::KeyView;
use sealstore_kms::model::{CryptoKeyVersion, ImportJob, KeyRing};
use serde_json::{Map, Value, json};

/// How enums are rendered (`$alt=json;enum-encoding=int` asks for integers).
#[derive(Debug, Clone, Copy)]
pub struct Enc {
    pub ints: bool,
}

impl Enc {
    pub fn e(self, name: &str, number: i64) -> Value {
        if self.ints { json!(number) } else { json!(name) }
    }
}

macro_rules! enum_value {
    ($enc:expr, $v:expr) => {
        $enc.e($v.name(), $v.number())
    };
}

pub fn key_ring(kr: &KeyRing) -> Value {
    json!({"name": kr.name.to_string(), "createTime": format_time(kr.create_time)})
}

pub fn version(v: &CryptoKeyVersion, enc: Enc) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(v.name.to_string()));
    m.insert("state".into(), enum_value!(enc, v.state));
    m.insert("protectionLevel".into(), enum_value!(enc, v.protection_level));
    m.insert("algorithm".into(), enum_value!(enc, v.algorithm));
    m.insert("createTime".into(), json!(format_time(v.create_time)));
    let times = [
        ("generateTime", v.generate_time),
        ("destroyTime", v.destroy_time),
        ("destroyEventTime", v.destroy_event_time),
        ("importTime", v.import_time),
    ];
    for (k, t) in times {
        if let Some(t) = t {
            m.insert(k.into(), json!(format_time(t)));
        }
    }
    if let Some(j) = &v.import_job {
        m.insert("importJob".into(), json!(j.to_string()));
    }
    if let Some(r) = &v.import_failure_reason {
        m.insert("importFailureReason".into(), json!(r));
    }
    if let Some(r) = &v.generation_failure_reason {
        m.insert("generationFailureReason".into(), json!(r));
    }
    if v.reimport_eligible() {
        m.insert("reimportEligible".into(), json!(true));
    }
    Value::Object(m)
}

pub fn crypto_key(view: &KeyView, enc: Enc) -> Value {
    let k = &view.key;
    let mut m = Map::new();
    m.insert("name".into(), json!(k.name.to_string()));
    if let Some(p) = &view.primary {
        m.insert("primary".into(), version(p, enc));
    }
    m.insert("purpose".into(), enum_value!(enc, k.purpose));
    m.insert("createTime".into(), json!(format_time(k.create_time)));
    if let Some(t) = k.next_rotation_time {
        m.insert("nextRotationTime".into(), json!(format_time(t)));
    }
    if let Some(p) = k.rotation_period {
        m.insert("rotationPeriod".into(), json!(format_duration(p)));
    }
    m.insert(
        "versionTemplate".into(),
        json!({"protectionLevel": enum_value!(enc, k.protection_level), "algorithm": enum_value!(enc, k.algorithm)}),
    );
    if !k.labels.is_empty() {
        m.insert("labels".into(), json!(k.labels));
    }
    if k.import_only {
        m.insert("importOnly".into(), json!(true));
    }
    m.insert(
        "destroyScheduledDuration".into(),
        json!(format_duration(k.destroy_scheduled_duration)),
    );
    Value::Object(m)
}

pub fn import_job(j: &ImportJob, enc: Enc) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(j.name.to_string()));
    m.insert("importMethod".into(), enum_value!(enc, j.import_method));
    m.insert("protectionLevel".into(), enum_value!(enc, j.protection_level));
    m.insert("createTime".into(), json!(format_time(j.create_time)));
    if let Some(t) = j.generate_time {
        m.insert("generateTime".into(), json!(format_time(t)));
    }
    m.insert("expireTime".into(), json!(format_time(j.expire_time)));
    if let Some(t) = j.expire_event_time {
        m.insert("expireEventTime".into(), json!(format_time(t)));
    }
    m.insert("state".into(), enum_value!(enc, j.state));
    if j.state == sealstore_kms::types::ImportJobState::ACTIVE
        && let Some(der) = &j.public_key_der
    {
        m.insert(
            "publicKey".into(),
            json!({"pem": sealstore_kms::material::spki_pem(der)}),
        );
    }
    Value::Object(m)
}

/// `google.iam.v1.Policy`, with exactly its fields: the client parses it strictly.
pub fn policy(p: &Policy) -> Value {
    let bindings: Vec<Value> = p
        .bindings
        .iter()
        .map(|b| {
            let mut o = json!({"role": b.role, "members": b.members});
            if let Some(c) = &b.condition {
                let mut cond = Map::new();
                for (k, v) in [
                    ("expression", &c.expression),
                    ("title", &c.title),
                    ("description", &c.description),
                    ("location", &c.location),
                ] {
                    if !v.is_empty() {
                        cond.insert(k.into(), json!(v));
                    }
                }
                o["condition"] = Value::Object(cond);
            }
            o
        })
        .collect();
    let mut m = Map::new();
    m.insert("version".into(), json!(p.version));
    if !bindings.is_empty() {
        m.insert("bindings".into(), Value::Array(bindings));
    }
    m.insert("etag".into(), json!(b64(&p.etag)));
    Value::Object(m)
}

pub fn crc(data: &[u8]) -> Value {
    json!(crc32c::crc32c(data).to_string())
}

/// A finished long-running operation, as the official clients' operation polling reads it.
pub fn operation(op: &sealstore_kms::model::Operation) -> Value {
    use sealstore_kms::model::OperationKind;
    let metadata = match &op.kind {
        OperationKind::DeleteCryptoKey { retired_resource } => json!({
            "@type": "type.googleapis.com/google.cloud.kms.v1.DeleteCryptoKeyMetadata",
            "retiredResource": retired_resource,
        }),
        OperationKind::DeleteCryptoKeyVersion => json!({
            "@type": "type.googleapis.com/google.cloud.kms.v1.DeleteCryptoKeyVersionMetadata",
        }),
    };
    json!({
        "name": op.name,
        "metadata": metadata,
        "done": true,
        "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
    })
}

pub fn retired_resource(r: &sealstore_kms::model::RetiredResource) -> Value {
    json!({
        "name": r.name,
        "originalResource": r.original_resource,
        "resourceType": r.resource_type,
        "deleteTime": format_time(r.delete_time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_has_only_proto_fields() {
        let v = policy(&Policy::empty());
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["etag", "version"]);
        assert_eq!(v["etag"], "ACAB");
    }
}
