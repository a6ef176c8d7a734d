//! Deleting keys and versions (Cloud KMS's DeleteCryptoKey and DeleteCryptoKeyVersion),
//! and the retired names deleted keys leave behind.
//!
//! Only what no longer holds key material can go: a version that is DESTROYED, or that
//! never had material (IMPORT_FAILED, GENERATION_FAILED, PENDING_IMPORT). A key goes
//! once each of its versions can: those still listed are deleted with it (Cloud KMS
//! asks for them to be deleted first; doing it in the same call changes nothing a
//! client can observe except the number of requests). Data wrapped by a deleted key's
//! versions was unreadable already, since those versions were destroyed; the objects
//! keep naming the key. Both calls finish at once and return a finished operation,
//! which stays readable through the operations endpoint.

use super::core::{Kms, not_found};
use super::error::{KmsError, KmsResult};
use super::listing::{ListOptions, Page, paginate};
use super::model::{Operation, OperationKind, RetiredResource};
use super::names::{CryptoKeyName, LocationName, VersionName};
use super::store::Write;
use super::types::VersionState;

/// The resource type a retired CryptoKey reports.
pub const CRYPTO_KEY_TYPE: &str = "cloudkms.googleapis.com/CryptoKey";

fn deletable(state: VersionState) -> bool {
    matches!(
        state,
        VersionState::DESTROYED
            | VersionState::IMPORT_FAILED
            | VersionState::GENERATION_FAILED
            | VersionState::PENDING_IMPORT
    )
}

/// A fresh id for an operation or retired resource: 16 random bytes, hex.
fn new_id() -> KmsResult<String> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| KmsError::Internal("no randomness".into()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn location_of(key: &CryptoKeyName) -> String {
    format!("projects/{}/locations/{}", key.key_ring.project, key.key_ring.location)
}

impl Kms {
    pub fn delete_version(&self, name: &VersionName) -> KmsResult<Operation> {
        let mut state = self.write();
        let entry = Self::key_entry_mut(&mut state, &name.key)?;
        let v = entry
            .versions
            .get(&name.version)
            .ok_or_else(|| not_found("CryptoKeyVersion", name))?;
        if !deletable(v.meta.state) {
            return Err(KmsError::FailedPrecondition(format!(
                "{name} is in state {}; only DESTROYED versions and versions that never had key material (IMPORT_FAILED, GENERATION_FAILED) can be deleted.",
                v.meta.state
            )));
        }
        let mut key = entry.key.clone();
        if key.primary == Some(name.version) {
            key.primary = None;
        }
        let op = Operation {
            name: format!("{}/operations/{}", location_of(&name.key), new_id()?),
            kind: OperationKind::DeleteCryptoKeyVersion,
        };
        let vname = name.to_string();
        self.commit(&[Write::DeleteVersion(&vname), Write::Key(&key), Write::Operation(&op)])?;
        entry.versions.remove(&name.version);
        entry.key = key;
        state.operations.insert(op.name.clone(), op.clone());
        Ok(op)
    }

    pub fn delete_crypto_key(&self, name: &CryptoKeyName) -> KmsResult<Operation> {
        let now = self.now();
        let mut state = self.write();
        let entry = Self::key_entry_mut(&mut state, name)?;
        if let Some(v) = entry.versions.values().find(|v| !deletable(v.meta.state)) {
            return Err(KmsError::FailedPrecondition(format!(
                "{name} cannot be deleted: its version {} is {}. Destroy every version first (and wait for DESTROYED).",
                v.meta.name, v.meta.state
            )));
        }
        let location = location_of(name);
        let retired = RetiredResource {
            name: format!("{location}/retiredResources/{}", new_id()?),
            original_resource: name.to_string(),
            resource_type: CRYPTO_KEY_TYPE.to_owned(),
            delete_time: now,
        };
        let op = Operation {
            name: format!("{location}/operations/{}", new_id()?),
            kind: OperationKind::DeleteCryptoKey {
                retired_resource: retired.name.clone(),
            },
        };
        let versions: Vec<String> = entry.versions.values().map(|v| v.meta.name.to_string()).collect();
        let key_name = name.to_string();
        let mut writes: Vec<Write<'_>> = versions.iter().map(|v| Write::DeleteVersion(v)).collect();
        writes.push(Write::DeleteKey(&key_name));
        writes.push(Write::Retired(&retired));
        writes.push(Write::Operation(&op));
        self.commit(&writes)?;
        state.keys.remove(&key_name);
        state.retired.insert(retired.name.clone(), retired);
        state.operations.insert(op.name.clone(), op.clone());
        Ok(op)
    }

    /// Whether `name` was a key that has been deleted (its name cannot be reused).
    pub fn is_retired(&self, name: &CryptoKeyName) -> bool {
        let n = name.to_string();
        self.read().retired.values().any(|r| r.original_resource == n)
    }

    pub fn get_operation(&self, name: &str) -> KmsResult<Operation> {
        self.read()
            .operations
            .get(name)
            .cloned()
            .ok_or_else(|| KmsError::NotFound(format!("Operation {name} not found.")))
    }

    pub fn get_retired_resource(&self, name: &str) -> KmsResult<RetiredResource> {
        self.read()
            .retired
            .get(name)
            .cloned()
            .ok_or_else(|| KmsError::NotFound(format!("RetiredResource {name} not found.")))
    }

    pub fn list_retired_resources(
        &self,
        parent: &LocationName,
        opts: &ListOptions,
    ) -> KmsResult<Page<RetiredResource>> {
        let prefix = format!("{parent}/retiredResources/");
        let items: Vec<(String, RetiredResource)> = self
            .read()
            .retired
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        paginate(items, opts)
    }
}
