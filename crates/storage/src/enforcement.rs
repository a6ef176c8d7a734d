//! A bucket's encryption enforcement configs: which kinds of encryption new objects
//! may use (`encryption.{googleManaged,customerManaged,customerSupplied}EncryptionEnforcementConfig`).
//!
//! Checked wherever a new object gets its encryption: every upload, copy, rewrite,
//! compose, move destination and re-key target. Existing objects are not affected, as
//! on GCS.

use super::error::{StorageError, StorageResult};
use super::model::KeyKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestrictionMode {
    NotRestricted,
    FullyRestricted,
}

impl RestrictionMode {
    pub fn parse(s: &str) -> StorageResult<Self> {
        match s {
            "NotRestricted" => Ok(Self::NotRestricted),
            "FullyRestricted" => Ok(Self::FullyRestricted),
            other => Err(StorageError::invalid(format!(
                "Invalid restrictionMode \"{other}\": use NotRestricted or FullyRestricted."
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRestricted => "NotRestricted",
            Self::FullyRestricted => "FullyRestricted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcementConfig {
    pub restriction_mode: RestrictionMode,
    /// When this mode took effect: set by the server when the mode changes.
    pub effective_time: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionEnforcement {
    pub google_managed: Option<EnforcementConfig>,
    pub customer_managed: Option<EnforcementConfig>,
    pub customer_supplied: Option<EnforcementConfig>,
}

/// The three kinds, with their JSON field names and how errors name them.
pub const KINDS: [(KeyKind, &str, &str); 3] = [
    (
        KeyKind::GoogleManaged,
        "googleManagedEncryptionEnforcementConfig",
        "Google-managed encryption",
    ),
    (
        KeyKind::Cmek,
        "customerManagedEncryptionEnforcementConfig",
        "customer-managed encryption (CMEK)",
    ),
    (
        KeyKind::Csek,
        "customerSuppliedEncryptionEnforcementConfig",
        "customer-supplied encryption (CSEK)",
    ),
];

impl EncryptionEnforcement {
    pub fn get(&self, kind: &KeyKind) -> Option<&EnforcementConfig> {
        match kind {
            KeyKind::GoogleManaged => self.google_managed.as_ref(),
            KeyKind::Cmek => self.customer_managed.as_ref(),
            KeyKind::Csek => self.customer_supplied.as_ref(),
        }
    }

    pub fn slot(&mut self, kind: &KeyKind) -> &mut Option<EnforcementConfig> {
        match kind {
            KeyKind::GoogleManaged => &mut self.google_managed,
            KeyKind::Cmek => &mut self.customer_managed,
            KeyKind::Csek => &mut self.customer_supplied,
        }
    }

    /// Sets one kind's mode. The effective time moves only when the mode changes, so
    /// re-sending the same config keeps it.
    pub fn set(&mut self, kind: &KeyKind, mode: Option<RestrictionMode>, now: DateTime<Utc>) {
        let slot = self.slot(kind);
        *slot = match (mode, *slot) {
            (None, _) => None,
            (Some(m), Some(c)) if c.restriction_mode == m => Some(c),
            (Some(m), _) => Some(EnforcementConfig {
                restriction_mode: m,
                effective_time: now,
            }),
        };
    }

    /// A default KMS key needs customer-managed encryption allowed: every write without
    /// a key of its own would otherwise be refused.
    pub fn check_default_key(&self, default_key: Option<&str>) -> StorageResult<()> {
        let cmek_restricted = self
            .customer_managed
            .is_some_and(|c| c.restriction_mode == RestrictionMode::FullyRestricted);
        if default_key.is_some() && cmek_restricted {
            return Err(StorageError::invalid(
                "A bucket with a default Cloud KMS key (encryption.defaultKmsKeyName) must allow customer-managed encryption: customerManagedEncryptionEnforcementConfig cannot be FullyRestricted.",
            ));
        }
        Ok(())
    }

    /// Refuses a new object of `kind` in `bucket` if that kind is restricted.
    pub fn check(&self, bucket: &str, kind: &KeyKind) -> StorageResult<()> {
        let restricted = self
            .get(kind)
            .is_some_and(|c| c.restriction_mode == RestrictionMode::FullyRestricted);
        if !restricted {
            return Ok(());
        }
        let (_, field, what) = KINDS.iter().find(|(k, _, _)| k == kind).expect("every kind is listed");
        // 412, as GCS answers a write that its enforcement config forbids.
        Err(StorageError::PreconditionFailed(format!(
            "Bucket {bucket} does not allow new objects with {what}: its encryption.{field} is FullyRestricted."
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restriction_applies_to_its_kind_only() {
        let t0 = chrono::Utc::now();
        let mut e = EncryptionEnforcement::default();
        assert!(e.check("b", &KeyKind::Csek).is_ok());
        e.set(&KeyKind::Csek, Some(RestrictionMode::FullyRestricted), t0);
        assert!(e.check("b", &KeyKind::Csek).is_err());
        assert!(e.check("b", &KeyKind::Cmek).is_ok());
        assert!(e.check("b", &KeyKind::GoogleManaged).is_ok());
        // Same mode again: the effective time stays.
        e.set(
            &KeyKind::Csek,
            Some(RestrictionMode::FullyRestricted),
            t0 + chrono::TimeDelta::seconds(5),
        );
        assert_eq!(e.customer_supplied.unwrap().effective_time, t0);
        e.set(&KeyKind::Csek, Some(RestrictionMode::NotRestricted), t0);
        assert!(e.check("b", &KeyKind::Csek).is_ok());
        e.set(&KeyKind::Csek, None, t0);
        assert_eq!(e, EncryptionEnforcement::default());
        assert!(RestrictionMode::parse("Restricted").is_err());
    }
}
