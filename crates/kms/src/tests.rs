//! Core-level tests of the state machine, scheduled transitions, the destroy guard,
//! import and persistence, driven by a manual clock.

use super::*;
use crate::names::{CryptoKeyName, KeyRingName, LocationName, VersionName};
use crate::store::SqliteKmsStore;
use crate::types::{Algorithm, ImportJobState, ImportMethod, ProtectionLevel, Purpose, VersionState};
use chrono::TimeDelta;
use sealstore_core::clock::{Clock, ManualClock};
use sealstore_core::rootkey::RootKey;
use sealstore_core::seal::Sealer;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Fixture {
    kms: Kms,
    clock: Arc<ManualClock>,
    ring: KeyRingName,
}

fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::new());
    let store = SqliteKmsStore::new(sealstore_core::db::open_in_memory().unwrap()).unwrap();
    let kms = Kms::open(Arc::new(store), Sealer::new(&RootKey::generate()), clock.clone()).unwrap();
    let ring = kms
        .create_key_ring(&LocationName::new("p", "us-east1").unwrap(), "r")
        .unwrap()
        .name;
    Fixture { kms, clock, ring }
}

fn spec(purpose: Purpose) -> NewCryptoKey {
    NewCryptoKey {
        purpose,
        protection_level: ProtectionLevel::SOFTWARE,
        algorithm: None,
        labels: Default::default(),
        import_only: false,
        destroy_scheduled_duration: Some(DAY),
        rotation_period: None,
        next_rotation_time: None,
        skip_initial_version_creation: false,
    }
}

fn advance(f: &Fixture, d: TimeDelta) {
    f.clock.advance(d).unwrap();
    f.kms.run_due();
}

fn symmetric(f: &Fixture, id: &str) -> CryptoKeyName {
    f.kms
        .create_crypto_key(&f.ring, id, spec(Purpose::ENCRYPT_DECRYPT))
        .unwrap()
        .key
        .name
}

#[test]
fn version_ids_are_sequential_and_never_reused() {
    let f = fixture();
    let k = symmetric(&f, "k");
    assert_eq!(f.kms.create_version(&k).unwrap().name.version, 2);
    f.kms.destroy_version(&k.version(2)).unwrap();
    advance(&f, TimeDelta::days(2));
    assert_eq!(f.kms.get_version(&k.version(2)).unwrap().state, VersionState::DESTROYED);
    assert_eq!(f.kms.create_version(&k).unwrap().name.version, 3);
}

#[test]
fn state_machine_and_fail_closed_use() {
    let f = fixture();
    let k = symmetric(&f, "k");
    let v1 = k.version(1);
    let ct = f.kms.encrypt(&k, None, b"x", b"").unwrap().ciphertext;
    f.kms.set_version_state(&v1, VersionState::DISABLED).unwrap();
    for err in [
        f.kms.encrypt(&k, None, b"x", b"").unwrap_err(),
        f.kms.decrypt(&k, &ct, b"").unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                KmsError::NotEnabled {
                    state: VersionState::DISABLED,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert!(matches!(
        f.kms.restore_version(&v1),
        Err(KmsError::FailedPrecondition(_))
    ));
    f.kms.destroy_version(&v1).unwrap();
    assert!(matches!(
        f.kms.set_version_state(&v1, VersionState::ENABLED),
        Err(KmsError::FailedPrecondition(_))
    ));
    assert!(matches!(
        f.kms.destroy_version(&v1),
        Err(KmsError::FailedPrecondition(_))
    ));
    assert_eq!(f.kms.restore_version(&v1).unwrap().state, VersionState::DISABLED);
    f.kms.set_version_state(&v1, VersionState::ENABLED).unwrap();
    assert_eq!(&f.kms.decrypt(&k, &ct, b"").unwrap().plaintext[..], b"x");
    assert!(matches!(
        f.kms.set_version_state(&v1, VersionState::DESTROYED),
        Err(KmsError::InvalidArgument(_))
    ));
}

#[test]
fn scheduled_destruction_erases_material() {
    let f = fixture();
    let k = symmetric(&f, "k");
    let v1 = k.version(1);
    assert!(f.kms.stored_secret(&v1.to_string()).unwrap().is_some());
    f.kms.destroy_version(&v1).unwrap();
    advance(&f, TimeDelta::hours(23));
    assert_eq!(f.kms.get_version(&v1).unwrap().state, VersionState::DESTROY_SCHEDULED);
    advance(&f, TimeDelta::hours(2));
    let v = f.kms.get_version(&v1).unwrap();
    assert_eq!(v.state, VersionState::DESTROYED);
    assert!(v.destroy_event_time.is_some() && v.destroy_time.is_none());
    assert!(f.kms.stored_secret(&v1.to_string()).unwrap().is_none());
}

struct Veto(std::sync::Mutex<bool>);
impl DestroyGuard for Veto {
    fn check_destroy(&self, v: &VersionName) -> Result<(), String> {
        if *self.0.lock().unwrap() {
            Err(format!("1 locked object uses {v}"))
        } else {
            Ok(())
        }
    }
}

#[test]
fn destroy_guard_vetoes_at_destroy_and_when_due() {
    let f = fixture();
    let k = symmetric(&f, "k");
    let v1 = k.version(1);
    let veto = Arc::new(Veto(std::sync::Mutex::new(true)));
    f.kms.set_destroy_guard(veto.clone());
    let err = f.kms.destroy_version(&v1).unwrap_err();
    assert!(
        matches!(&err, KmsError::FailedPrecondition(m) if m.contains("locked object")),
        "{err:?}"
    );
    assert_eq!(f.kms.get_version(&v1).unwrap().state, VersionState::ENABLED);
    *veto.0.lock().unwrap() = false;
    f.kms.destroy_version(&v1).unwrap();
    *veto.0.lock().unwrap() = true;
    advance(&f, TimeDelta::days(2));
    assert_eq!(
        f.kms.get_version(&v1).unwrap().state,
        VersionState::DESTROY_SCHEDULED,
        "blocked: stays scheduled"
    );
    *veto.0.lock().unwrap() = false;
    advance(&f, TimeDelta::seconds(1));
    assert_eq!(f.kms.get_version(&v1).unwrap().state, VersionState::DESTROYED);
}

#[test]
fn automatic_rotation_makes_a_new_primary_and_advances() {
    let f = fixture();
    let first = f.clock.now() + TimeDelta::days(1);
    let mut s = spec(Purpose::ENCRYPT_DECRYPT);
    s.rotation_period = Some(DAY);
    s.next_rotation_time = Some(first);
    let k = f.kms.create_crypto_key(&f.ring, "k", s).unwrap().key.name;
    let old = f.kms.encrypt(&k, None, b"old", b"").unwrap().ciphertext;
    advance(&f, TimeDelta::days(1) + TimeDelta::seconds(5));
    let view = f.kms.get_crypto_key(&k).unwrap();
    assert_eq!(view.primary.unwrap().name.version, 2);
    assert_eq!(view.key.next_rotation_time, Some(first + TimeDelta::days(1)));
    assert_eq!(f.kms.encrypt(&k, None, b"new", b"").unwrap().version.version, 2);
    assert!(!f.kms.decrypt(&k, &old, b"").unwrap().used_primary);
}

#[test]
fn rotation_and_import_only_rules() {
    let f = fixture();
    let mut s = spec(Purpose::ASYMMETRIC_SIGN);
    s.algorithm = Some(Algorithm::EC_SIGN_P256_SHA256);
    s.rotation_period = Some(DAY);
    s.next_rotation_time = Some(f.clock.now());
    assert!(matches!(
        f.kms.create_crypto_key(&f.ring, "a", s),
        Err(KmsError::InvalidArgument(_))
    ));
    let mut s = spec(Purpose::ENCRYPT_DECRYPT);
    s.import_only = true;
    assert!(matches!(
        f.kms.create_crypto_key(&f.ring, "b", s.clone()),
        Err(KmsError::InvalidArgument(_))
    ));
    s.skip_initial_version_creation = true;
    let k = f.kms.create_crypto_key(&f.ring, "b", s).unwrap().key.name;
    assert!(matches!(f.kms.create_version(&k), Err(KmsError::FailedPrecondition(_))));
    assert!(matches!(
        f.kms.encrypt(&k, None, b"x", b""),
        Err(KmsError::FailedPrecondition(_))
    ));
    let patch = KeyPatch {
        rotation_period: Some(Some(DAY)),
        next_rotation_time: Some(Some(f.clock.now())),
        ..Default::default()
    };
    assert!(matches!(
        f.kms.update_crypto_key(&k, patch),
        Err(KmsError::InvalidArgument(_))
    ));
    let mut s = spec(Purpose::ENCRYPT_DECRYPT);
    s.destroy_scheduled_duration = Some(Duration::from_secs(3600));
    assert!(matches!(
        f.kms.create_crypto_key(&f.ring, "c", s),
        Err(KmsError::InvalidArgument(_))
    ));
}

fn active_job(f: &Fixture, id: &str, method: ImportMethod) -> Vec<u8> {
    let name = f
        .kms
        .create_import_job(&f.ring, id, method, ProtectionLevel::SOFTWARE)
        .unwrap()
        .name;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = f.kms.get_import_job(&name).unwrap();
        if j.state == ImportJobState::ACTIVE {
            return j.public_key_der.unwrap();
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn import_reimport_and_job_expiry() {
    let f = fixture();
    let mut s = spec(Purpose::ENCRYPT_DECRYPT);
    s.skip_initial_version_creation = true;
    let k = f.kms.create_crypto_key(&f.ring, "k", s).unwrap().key.name;
    let method = ImportMethod::RSA_OAEP_3072_SHA256_AES_256;
    let public = active_job(&f, "j", method);
    let job = f.ring.import_job("j").unwrap();
    let req = |material: &[u8], version: Option<VersionName>| ImportRequest {
        parent: k.clone(),
        version,
        algorithm: Algorithm::GOOGLE_SYMMETRIC_ENCRYPTION,
        import_job: job.clone(),
        wrapped_key: crate::wrapping::wrap(method, &public, material).unwrap(),
    };
    let v = f.kms.import_version(req(&[1; 32], None)).unwrap();
    assert_eq!((v.state, v.imported), (VersionState::ENABLED, true));
    assert!(
        f.kms.get_crypto_key(&k).unwrap().primary.is_none(),
        "imports do not become primary"
    );
    let ct = f.kms.encrypt(&k, Some(1), b"data", b"").unwrap().ciphertext;

    let failed = f.kms.import_version(req(&[1; 31], None)).unwrap();
    assert_eq!(failed.state, VersionState::IMPORT_FAILED);
    assert!(failed.import_failure_reason.unwrap().contains("32-byte"));

    f.kms.destroy_version(&k.version(1)).unwrap();
    advance(&f, TimeDelta::days(1) + TimeDelta::seconds(1));
    let err = f.kms.import_version(req(&[2; 32], Some(k.version(1)))).unwrap_err();
    assert!(
        matches!(&err, KmsError::FailedPrecondition(m) if m.contains("does not match")),
        "{err:?}"
    );
    assert_eq!(f.kms.get_version(&k.version(1)).unwrap().state, VersionState::DESTROYED);
    let back = f.kms.import_version(req(&[1; 32], Some(k.version(1)))).unwrap();
    assert_eq!((back.name.version, back.state), (1, VersionState::ENABLED));
    assert_eq!(&f.kms.decrypt(&k, &ct, b"").unwrap().plaintext[..], b"data");
    // IMPORT_FAILED versions never held material: any material is accepted.
    assert_eq!(
        f.kms.import_version(req(&[3; 32], Some(k.version(2)))).unwrap().state,
        VersionState::ENABLED
    );

    advance(&f, TimeDelta::days(3));
    let j = f.kms.get_import_job(&job).unwrap();
    assert_eq!(j.state, ImportJobState::EXPIRED);
    assert!(j.public_key_der.is_none());
    assert!(f.kms.stored_secret(&job.to_string()).unwrap().is_none());
    let wrapped = crate::wrapping::wrap(method, &public, &[1; 32]).unwrap();
    let err = f
        .kms
        .import_version(ImportRequest {
            wrapped_key: wrapped,
            ..req(&[1; 32], None)
        })
        .unwrap_err();
    assert!(matches!(err, KmsError::FailedPrecondition(_)));
}

#[test]
fn state_survives_reopen_and_needs_the_same_root_key() {
    let dir = std::env::temp_dir().join(format!("sealstore-core-reopen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("db");
    let root = RootKey::generate();
    let open = |root: &RootKey| {
        let store = SqliteKmsStore::new(sealstore_core::db::open(&db).unwrap()).unwrap();
        Kms::open(Arc::new(store), Sealer::new(root), Arc::new(ManualClock::new()))
    };
    let kms = open(&root).unwrap();
    let ring = kms
        .create_key_ring(&LocationName::new("p", "eu").unwrap(), "r")
        .unwrap()
        .name;
    let k = kms
        .create_crypto_key(&ring, "k", spec(Purpose::ENCRYPT_DECRYPT))
        .unwrap()
        .key
        .name;
    let ct = kms.encrypt(&k, None, b"persist", b"aad").unwrap().ciphertext;
    drop(kms);
    let kms = open(&root).unwrap();
    assert_eq!(&kms.decrypt(&k, &ct, b"aad").unwrap().plaintext[..], b"persist");
    assert!(
        open(&RootKey::generate()).is_err(),
        "a different root key must not open the material"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The import vectors in `fixtures/import` were made by Python `cryptography` (OpenSSL),
/// an implementation independent of ours: every one must unwrap to its target and
/// parse for its algorithm; the bad ones must fail the way Cloud KMS reports.
#[test]
fn python_made_fixtures_unwrap_and_parse() {
    use crate::material::Material;
    use crate::wrapping::{UnwrapError, WrappingKey};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/import");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let k3072 = WrappingKey::from_pkcs8(&read("wrap3072.pk8.der")).unwrap();
    let k4096 = WrappingKey::from_pkcs8(&read("wrap4096.pk8.der")).unwrap();
    let targets = [
        ("sym32", Algorithm::GOOGLE_SYMMETRIC_ENCRYPTION, "sym32.bin"),
        ("ec_p256", Algorithm::EC_SIGN_P256_SHA256, "ec_p256.pk8.der"),
        ("ec_p384", Algorithm::EC_SIGN_P384_SHA384, "ec_p384.pk8.der"),
        ("rsa2048", Algorithm::RSA_SIGN_PKCS1_2048_SHA256, "rsa2048.pk8.der"),
    ];
    let mut checked = 0;
    for method in ImportMethod::ALL {
        let key = if method.rsa_bits() == 4096 { &k4096 } else { &k3072 };
        for (tag, alg, file) in targets {
            if !method.uses_aes_kwp() && tag == "rsa2048" {
                continue;
            }
            let blob = read(&format!("{}__{tag}.bin", method.name()));
            let target = key
                .unwrap(*method, &blob)
                .unwrap_or_else(|e| panic!("{method} {tag}: {e}"));
            assert_eq!(&target[..], &read(file)[..], "{method} {tag}");
            Material::from_raw(alg, target).unwrap_or_else(|e| panic!("{method} {tag}: {e}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * 4 + 2 * 3);
    let m = ImportMethod::RSA_OAEP_3072_SHA256_AES_256;
    assert_eq!(
        k3072.unwrap(m, &read("bad_truncated.bin")).unwrap_err(),
        UnwrapError::TooShort
    );
    assert_eq!(
        k3072.unwrap(m, &read("bad_kwp_not_multiple_of_8.bin")).unwrap_err(),
        UnwrapError::NotBlocks
    );
    assert_eq!(
        k3072.unwrap(m, &read("bad_rsa_block_length.bin")).unwrap_err(),
        UnwrapError::NotBlocks
    );
    let p384 = k3072.unwrap(m, &read("bad_ec_wrong_curve.bin")).unwrap();
    assert!(Material::from_raw(Algorithm::EC_SIGN_P256_SHA256, p384).is_err());
    let short = k3072.unwrap(m, &read("bad_sym31.bin")).unwrap();
    assert_eq!(short.len(), 31);
    assert!(Material::from_raw(Algorithm::GOOGLE_SYMMETRIC_ENCRYPTION, short).is_err());
    // The RSA private key cannot go through a direct method at all (too long).
    assert!(read("rsa2048.pk8.der").len() > 318);
}
