//! Wires storage's `KeyService` to the embedded KMS: object DEKs are wrapped by the
//! Google-managed service key (its own project and key ring, rotated every 90 days),
//! or by a customer-managed key.

use crate::kms::names::{CryptoKeyName, LocationName, ResourceName};
use crate::kms::types::{Purpose, VersionState};
use crate::kms::{DAY, Kms, KmsError, NewCryptoKey};
use crate::storage::{KeyChoice, KeyError, KeyService, WrappedDek};
use zeroize::Zeroizing;

pub use crate::kms::GOOGLE_MANAGED_PROJECT;
const GOOGLE_MANAGED_RING: &str = "google-managed";
const GOOGLE_MANAGED_KEY: &str = "objects";

pub struct KmsKeyService {
    kms: Kms,
    google: CryptoKeyName,
    policies: std::sync::Arc<crate::iam::PolicyStore>,
    audit: std::sync::Arc<crate::audit::AuditLog>,
}

const USE_TO_ENCRYPT: &str = "cloudkms.cryptoKeyVersions.useToEncrypt";
const USE_TO_DECRYPT: &str = "cloudkms.cryptoKeyVersions.useToDecrypt";

fn key_error(e: KmsError, key: &str) -> KeyError {
    match e {
        KmsError::NotEnabled { version, .. } => KeyError::Disabled(version),
        KmsError::NotFound(_) => KeyError::NotFound(key.to_owned()),
        KmsError::InvalidArgument(_) | KmsError::FailedPrecondition(_) => KeyError::Bad(key.to_owned()),
        KmsError::PermissionDenied(_) => KeyError::PermissionDenied,
        KmsError::ResourceExhausted(m) => KeyError::Exhausted(m),
        KmsError::Unavailable(m) | KmsError::Aborted(m) => KeyError::Unavailable(m),
        KmsError::DecryptionFailed => KeyError::Internal(format!("a data key wrapped by {key} failed to unwrap")),
        KmsError::AlreadyExists(m) | KmsError::Unimplemented(m) | KmsError::Internal(m) => KeyError::Internal(m),
    }
}

impl KmsKeyService {
    /// Creates the Google-managed key on first start.
    pub fn new(
        kms: Kms,
        policies: std::sync::Arc<crate::iam::PolicyStore>,
        audit: std::sync::Arc<crate::audit::AuditLog>,
    ) -> Result<Self, KmsError> {
        let loc = LocationName::new(GOOGLE_MANAGED_PROJECT, "global")?;
        let ring = loc.key_ring(GOOGLE_MANAGED_RING)?;
        let google = ring.crypto_key(GOOGLE_MANAGED_KEY)?;
        if kms.get_key_ring(&ring).is_err() {
            kms.create_key_ring(&loc, GOOGLE_MANAGED_RING)?;
        }
        if kms.get_crypto_key(&google).is_err() {
            let period = 90 * DAY;
            kms.create_crypto_key(
                &ring,
                GOOGLE_MANAGED_KEY,
                NewCryptoKey {
                    purpose: Purpose::ENCRYPT_DECRYPT,
                    protection_level: crate::kms::types::ProtectionLevel::SOFTWARE,
                    algorithm: None,
                    labels: Default::default(),
                    import_only: false,
                    destroy_scheduled_duration: None,
                    rotation_period: Some(period),
                    next_rotation_time: Some(kms.now() + chrono::TimeDelta::from_std(period).unwrap_or_default()),
                    skip_initial_version_creation: false,
                },
            )?;
        }
        Ok(Self {
            kms,
            google,
            policies,
            audit,
        })
    }

    /// Storage uses customer keys as the project's service agent: the agent, not the
    /// caller, needs `permission` on the key (directly, or via its key ring or project).
    fn check_agent(&self, project: &str, key: &CryptoKeyName, permission: &str) -> Result<(), KeyError> {
        let agent = crate::iam::roles::storage_service_agent(project);
        let chain = [
            key.to_string(),
            key.key_ring.to_string(),
            format!("projects/{}", key.key_ring.project),
        ];
        // `KeyService` is synchronous and runs on runtime workers and the blocking pool
        // alike: `wait` handles both.
        let allowed =
            sealstore_core::blocking::wait(crate::iam::has_permission(&self.policies, &agent, &chain, permission));
        let (result, outcome) = match allowed {
            Ok(true) => (Ok(()), "OK"),
            Ok(false) => {
                let op = if permission == USE_TO_ENCRYPT { "wrap" } else { "unwrap" };
                metrics::counter!("sealstore_cmek_denied_total", "operation" => op).increment(1);
                (Err(KeyError::PermissionDenied), "DENIED")
            }
            Err(e) => (Err(KeyError::Internal(e.to_string())), "INTERNAL"),
        };
        // Every use of a customer key by storage is a key use: audited.
        let method = if permission == USE_TO_ENCRYPT {
            "storage: wrap data key"
        } else {
            "storage: unwrap data key"
        };
        self.audit
            .record(self.kms.now(), &agent, method, &key.to_string(), permission, outcome);
        result
    }

    /// A customer-managed key named on a request: unversioned, and a real
    /// ENCRYPT_DECRYPT key.
    fn cmek(&self, name: &str) -> Result<CryptoKeyName, KeyError> {
        let key = ResourceName::parse_key(name).map_err(|_| KeyError::Bad(name.to_owned()))?;
        let view = self
            .kms
            .retry_not_found(|| self.kms.get_crypto_key(&key))
            .map_err(|e| key_error(e, name))?;
        if view.key.purpose != Purpose::ENCRYPT_DECRYPT {
            return Err(KeyError::Bad(name.to_owned()));
        }
        match view.primary {
            None => Err(KeyError::Bad(name.to_owned())),
            Some(p) if p.state != VersionState::ENABLED => Err(KeyError::Disabled(p.name.to_string())),
            Some(_) => Ok(key),
        }
    }
}

impl KeyService for KmsKeyService {
    fn validate(&self, project: &str, key_name: &str) -> Result<(), KeyError> {
        let key = self.cmek(key_name)?;
        self.check_agent(project, &key, USE_TO_ENCRYPT)
    }

    fn primary_version(&self, key_name: &str) -> Result<String, KeyError> {
        let key = ResourceName::parse_key(key_name).map_err(|_| KeyError::Bad(key_name.to_owned()))?;
        let view = self
            .kms
            .retry_not_found(|| self.kms.get_crypto_key(&key))
            .map_err(|e| key_error(e, key_name))?;
        view.primary
            .map(|p| p.name.to_string())
            .ok_or_else(|| KeyError::Bad(key_name.to_owned()))
    }

    fn wrap(&self, project: &str, choice: &KeyChoice, dek: &[u8], aad: &[u8]) -> Result<WrappedDek, KeyError> {
        let (key, label) = match choice {
            KeyChoice::GoogleManaged => (self.google.clone(), self.google.to_string()),
            KeyChoice::Cmek(name) => {
                let key = self.cmek(name)?;
                self.check_agent(project, &key, USE_TO_ENCRYPT)?;
                (key, name.clone())
            }
        };
        let out = self.kms.encrypt(&key, None, dek, aad);
        crate::metrics::kms_op("storage", "wrap", "ENCRYPT_DECRYPT", outcome_of(&out));
        let out = out.map_err(|e| key_error(e, &label))?;
        Ok(WrappedDek {
            key_version: out.version.to_string(),
            ciphertext: out.ciphertext,
        })
    }

    fn unwrap(
        &self,
        project: &str,
        key_version: &str,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let version = ResourceName::parse_version(key_version).map_err(|_| KeyError::Bad(key_version.to_owned()))?;
        if version.key != self.google {
            self.check_agent(project, &version.key, USE_TO_DECRYPT)?;
        }
        let out = self
            .kms
            .retry_not_found(|| self.kms.decrypt(&version.key, wrapped, aad));
        crate::metrics::kms_op("storage", "unwrap", "ENCRYPT_DECRYPT", outcome_of(&out));
        let out = out.map_err(|e| key_error(e, key_version))?;
        Ok(out.plaintext)
    }
}

/// The metrics outcome label of a KMS call.
fn outcome_of<T>(r: &Result<T, crate::kms::KmsError>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(e) => e.status_name(),
    }
}
