//! How storage reaches keys: only through this trait. The server wires it to the
//! embedded KMS; storage never sees KMS types.

use super::error::KeyError;
use zeroize::Zeroizing;

/// Which key protects a new object's DEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChoice {
    /// The Google-managed service key.
    GoogleManaged,
    /// A customer-managed KMS key, by its unversioned name.
    Cmek(String),
}

/// A DEK wrapped by a KMS key version.
#[derive(Debug, Clone)]
pub struct WrappedDek {
    /// The full version name that wrapped it (`…/cryptoKeyVersions/N`).
    pub key_version: String,
    pub ciphertext: Vec<u8>,
}

pub trait KeyService: Send + Sync {
    /// Checks that a customer-managed key can encrypt new objects of `project` now
    /// (it exists, is ENCRYPT_DECRYPT, has an enabled primary, and the project's service
    /// agent may use it).
    fn validate(&self, project: &str, key_name: &str) -> Result<(), KeyError>;
    /// The full name of a key's current primary version.
    fn primary_version(&self, key_name: &str) -> Result<String, KeyError>;
    /// Wraps `dek` for an object of `project`, binding `aad`.
    fn wrap(&self, project: &str, key: &KeyChoice, dek: &[u8], aad: &[u8]) -> Result<WrappedDek, KeyError>;
    /// Unwraps a DEK; fails closed if the version is not usable.
    fn unwrap(
        &self,
        project: &str,
        key_version: &str,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError>;
}

/// The seed's location rule: the key ring must be where the data is. A region bucket
/// needs a key ring in that region; a multi-region bucket the same multi-region; a
/// configurable dual-region the multi-region containing both regions; a predefined
/// dual-region (ASIA1, EUR4, NAM4) the same dual-region. `global` key rings never fit.
pub fn check_key_location(bucket: &super::model::Bucket, key_name: &str) -> super::StorageResult<()> {
    let key_loc = key_name.split('/').nth(3).unwrap_or("");
    let expected = bucket.location.to_lowercase();
    if key_loc == expected && key_loc != "global" {
        return Ok(());
    }
    let detail = if key_loc == "global" {
        "a global key ring cannot protect bucket data".to_owned()
    } else {
        format!("the key ring must be in {expected}")
    };
    Err(super::StorageError::BadRequest {
        reason: "cloudKmsKeyLocationNotAllowed",
        message: format!(
            "Cloud KMS key {key_name} is in location {key_loc}, which cannot be used for bucket {} in location {}: {detail}.",
            bucket.name, bucket.location
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Bucket;

    fn bucket(location: &str, data_locations: &[&str]) -> Bucket {
        Bucket {
            name: "b".into(),
            project: "p".into(),
            location: location.into(),
            location_type: String::new(),
            data_locations: data_locations.iter().map(|s| (*s).to_owned()).collect(),
            storage_class: "STANDARD".into(),
            time_created: chrono::Utc::now(),
            updated: chrono::Utc::now(),
            metageneration: 1,
            versioning: false,
            labels: Default::default(),
            default_kms_key_name: None,
            retention_policy: None,
            default_event_based_hold: false,
            object_retention: false,
            encryption_enforcement: Default::default(),
            public_access_prevention: "inherited".into(),
            rpo: None,
            lifecycle: vec![],
            soft_delete_policy: None,
            soft_delete_time: None,
            hard_delete_time: None,
        }
    }

    #[test]
    fn location_rule_table() {
        let key = |loc: &str| format!("projects/p/locations/{loc}/keyRings/r/cryptoKeys/k");
        let table: &[(&str, &[&str], &str, bool)] = &[
            ("US-EAST1", &[], "us-east1", true),
            ("US-EAST1", &[], "us", false),
            ("US-EAST1", &[], "us-west1", false),
            ("EUROPE-WEST1", &[], "europe-west1", true),
            ("US", &[], "us", true),
            ("US", &[], "us-east1", false),
            ("EU", &[], "eu", true),
            ("EU", &[], "us", false),
            ("ASIA", &[], "asia", true),
            ("US", &["US-EAST1", "US-WEST1"], "us", true),
            ("US", &["US-EAST1", "US-WEST1"], "us-east1", false),
            ("NAM4", &[], "nam4", true),
            ("NAM4", &[], "us", false),
            ("EUR4", &[], "eur4", true),
            ("EUR4", &[], "eu", false),
            ("ASIA1", &[], "asia1", true),
            ("ASIA1", &[], "asia", false),
            ("US-EAST1", &[], "global", false),
            ("US", &[], "global", false),
        ];
        for (loc, data, key_loc, ok) in table {
            let r = check_key_location(&bucket(loc, data), &key(key_loc));
            assert_eq!(r.is_ok(), *ok, "bucket {loc} {data:?} with key ring in {key_loc}");
            if let Err(crate::StorageError::BadRequest { reason, message }) = r {
                assert_eq!(reason, "cloudKmsKeyLocationNotAllowed");
                assert!(message.contains(key_loc) && message.contains(loc), "{message}");
            }
        }
    }
}
