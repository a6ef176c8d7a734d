//! The KMS resources as the core holds and persists them (no wire shapes here).

use super::names::{CryptoKeyName, ImportJobName, KeyRingName, VersionName};
use super::types::{Algorithm, ImportJobState, ImportMethod, ProtectionLevel, Purpose, VersionState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRing {
    pub name: KeyRingName,
    pub create_time: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CryptoKey {
    pub name: CryptoKeyName,
    pub purpose: Purpose,
    pub create_time: DateTime<Utc>,
    /// Id of the primary version (ENCRYPT_DECRYPT keys only).
    pub primary: Option<u32>,
    pub rotation_period: Option<Duration>,
    pub next_rotation_time: Option<DateTime<Utc>>,
    pub protection_level: ProtectionLevel,
    pub algorithm: Algorithm,
    pub labels: BTreeMap<String, String>,
    pub import_only: bool,
    pub destroy_scheduled_duration: Duration,
    /// The id the next version gets. Ids are never reused.
    pub next_version_id: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CryptoKeyVersion {
    pub name: VersionName,
    pub state: VersionState,
    pub protection_level: ProtectionLevel,
    pub algorithm: Algorithm,
    pub create_time: DateTime<Utc>,
    pub generate_time: Option<DateTime<Utc>>,
    pub destroy_time: Option<DateTime<Utc>>,
    pub destroy_event_time: Option<DateTime<Utc>>,
    pub import_job: Option<ImportJobName>,
    pub import_time: Option<DateTime<Utc>>,
    pub import_failure_reason: Option<String>,
    pub generation_failure_reason: Option<String>,
    /// Created by import: such versions can be re-imported.
    pub imported: bool,
    /// Keyed HMAC of the imported material (see `Sealer::fingerprint`); kept after
    /// destruction so re-import can insist on the same material.
    pub fingerprint: Option<Vec<u8>>,
}

impl CryptoKeyVersion {
    pub fn reimport_eligible(&self) -> bool {
        self.imported
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportJob {
    pub name: ImportJobName,
    pub import_method: ImportMethod,
    pub protection_level: ProtectionLevel,
    pub create_time: DateTime<Utc>,
    pub generate_time: Option<DateTime<Utc>>,
    pub expire_time: DateTime<Utc>,
    pub expire_event_time: Option<DateTime<Utc>>,
    pub state: ImportJobState,
    /// SubjectPublicKeyInfo DER of the wrapping key, once it exists.
    pub public_key_der: Option<Vec<u8>>,
}

/// The record of a deleted CryptoKey: its name stays retired, never reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredResource {
    /// `projects/*/locations/*/retiredResources/*`.
    pub name: String,
    /// The deleted key's full name.
    pub original_resource: String,
    pub resource_type: String,
    pub delete_time: DateTime<Utc>,
}

/// A finished long-running operation (deletions complete at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// `projects/*/locations/*/operations/*`.
    pub name: String,
    pub kind: OperationKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationKind {
    DeleteCryptoKey { retired_resource: String },
    DeleteCryptoKeyVersion,
}
