//! The persisted record of a re-key job: what it moves, from which key to which, and
//! how far it got. The metadata store keeps it; `rekey` runs it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RekeyFrom {
    /// Any version of this key.
    KmsKeyName(String),
    /// These exact versions.
    KmsKeyVersions(Vec<String>),
    /// Every version of this key except its current primary.
    AllButPrimaryOf(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RekeyTo {
    /// This key's primary version.
    KmsKeyName(String),
    GoogleManaged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RekeyMode {
    Rewrite,
    Rewrap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub scanned: u64,
    pub rewritten: u64,
    pub skipped: u64,
    pub failed: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub object: String,
    pub generation: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyJob {
    pub name: String,
    pub bucket: String,
    pub prefix: String,
    pub from: Option<RekeyFrom>,
    pub to: RekeyTo,
    pub mode: RekeyMode,
    pub state: JobState,
    pub counters: Counters,
    pub skipped: BTreeMap<String, u64>,
    pub failures: Vec<Failure>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    /// The last object handled, so a restarted job continues after it.
    pub cursor: Option<String>,
    /// Past the live and noncurrent generations: now on the soft-deleted ones, which
    /// use key versions too (always re-wrapped; a rewrite would make them live).
    #[serde(default)]
    pub soft_phase: bool,
}
