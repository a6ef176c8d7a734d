//! One suite for every `KmsStore` backend (SQLite on a file, PostgreSQL on a throwaway
//! cluster): atomic commits, the epoch check, erasure, racing writers, and two cores on
//! one database behaving as one key manager within the staleness bound.

use super::{KmsStore, PgKmsStore, Sealed, SqliteKmsStore, StoreError, Write};
use crate::core::{DAY, Kms, NewCryptoKey};
use crate::error::KmsError;
use crate::freshness::STALENESS_BOUND;
use crate::model::KeyRing;
use crate::names::{CryptoKeyName, LocationName};
use crate::types::{ProtectionLevel, Purpose, VersionState};
use sealstore_core::clock::ManualClock;
use sealstore_core::rootkey::RootKey;
use sealstore_core::seal::Sealer;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Two stores on one database, as two gateways would open it.
type Pair = (Arc<dyn KmsStore>, Arc<dyn KmsStore>);

fn sqlite_pair() -> (Pair, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sealstore-kms-store-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kms.db");
    let open =
        || -> Arc<dyn KmsStore> { Arc::new(SqliteKmsStore::new(sealstore_core::db::open(&path).unwrap()).unwrap()) };
    ((open(), open()), dir)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

async fn postgres_pair() -> Pair {
    let url = sealstore_testpg::fresh_database();
    let a = PgKmsStore::new(sealstore_core::pg::pool(&url, 8).unwrap())
        .await
        .unwrap();
    let b = PgKmsStore::new(sealstore_core::pg::pool(&url, 8).unwrap())
        .await
        .unwrap();
    (Arc::new(a), Arc::new(b))
}

fn ring(id: &str) -> KeyRing {
    KeyRing {
        name: LocationName::new("p", "us-east1").unwrap().key_ring(id).unwrap(),
        create_time: chrono::Utc::now(),
    }
}

fn spec() -> NewCryptoKey {
    NewCryptoKey {
        purpose: Purpose::ENCRYPT_DECRYPT,
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

/// Commits apply atomically, bump the epoch, and are refused from a stale epoch.
fn commits_and_epochs((a, b): &Pair) {
    let e0 = a.epoch().unwrap();
    assert_eq!(b.epoch().unwrap(), e0, "one database, one epoch");
    let e1 = a.commit(&[Write::KeyRing(&ring("r1"))], e0).unwrap();
    assert_eq!(e1, e0 + 1);
    assert_eq!(b.epoch().unwrap(), e1);
    // A writer that did not see e1 is refused, and nothing of its write is stored.
    let stale = b.commit(&[Write::KeyRing(&ring("r2")), Write::KeyRing(&ring("r3"))], e0);
    assert!(matches!(stale, Err(StoreError::Stale)), "{stale:?}");
    let snap = b.load().unwrap();
    assert_eq!(snap.epoch, e1);
    let names: Vec<String> = snap.key_rings.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(names, vec!["projects/p/locations/us-east1/keyRings/r1".to_owned()]);
}

/// Many writers from one epoch: exactly one commits.
fn racing_writers_one_wins((a, b): &Pair) {
    let e = a.epoch().unwrap();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || store.commit(&[Write::KeyRing(&ring(&format!("race{i}")))], e))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(
        results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::Stale))),
        "{results:?}"
    );
    let snap = a.load().unwrap();
    assert_eq!(snap.epoch, e + 1);
    assert_eq!(
        snap.key_rings
            .iter()
            .filter(|r| r.name.to_string().contains("race"))
            .count(),
        1
    );
}

/// Sealed secrets are set, kept and erased as the write says.
fn sealed_secrets((a, _): &Pair) {
    let root = RootKey::generate();
    let kms = Kms::open(a.clone(), Sealer::new(&root), Arc::new(ManualClock::new())).unwrap();
    let parent = LocationName::new("p", "us-east1").unwrap();
    let r = kms.create_key_ring(&parent, "sealed").unwrap().name;
    let key = kms.create_crypto_key(&r, "k", spec()).unwrap().key.name;
    let v1 = key.version(1);
    assert!(a.sealed_secret(&v1.to_string()).unwrap().is_some());
    let meta = kms.get_version(&v1).unwrap();
    let e = a.epoch().unwrap();
    a.commit(&[Write::Version(&meta, Sealed::Erase)], e).unwrap();
    assert!(a.sealed_secret(&v1.to_string()).unwrap().is_none(), "erased");
    assert!(a.sealed_secret("no/such/record").unwrap().is_none());
}

fn until(deadline: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Two cores on one database act as one key manager: a version disabled through one
/// stops working through the other within the bound, and mutations on either see the
/// other's changes first.
fn two_cores_one_key_manager((a, b): &Pair) {
    let root = RootKey::generate();
    let clock = Arc::new(ManualClock::new());
    let ka = Kms::open(a.clone(), Sealer::new(&root), clock.clone()).unwrap();
    let kb = Kms::open(b.clone(), Sealer::new(&root), clock).unwrap();
    let parent = LocationName::new("p", "us-east1").unwrap();
    let r = ka.create_key_ring(&parent, "shared").unwrap().name;
    let key: CryptoKeyName = ka.create_crypto_key(&r, "k", spec()).unwrap().key.name;
    let v1 = key.version(1);
    let bound = STALENESS_BOUND + Duration::from_millis(300);
    // B learns of the new key without a restart.
    until(bound, || kb.encrypt(&key, None, b"x", b"").is_ok()).expect("B sees the key A made");
    let ct = ka.encrypt(&key, None, b"secret", b"").unwrap().ciphertext;
    assert_eq!(kb.decrypt(&key, &ct, b"").unwrap().plaintext.as_slice(), b"secret");

    ka.set_version_state(&v1, VersionState::DISABLED).unwrap();
    let took = until(bound, || {
        matches!(kb.decrypt(&key, &ct, b""), Err(KmsError::NotEnabled { .. }))
    })
    .expect("B refuses a version A disabled");
    assert!(took <= bound, "{took:?}");

    // B's mutation starts from A's change (no lost update, no stale precondition).
    kb.set_version_state(&v1, VersionState::ENABLED).unwrap();
    until(bound, || ka.decrypt(&key, &ct, b"").is_ok()).expect("A serves the version B re-enabled");

    // A second version created through B is numbered after A's, never reusing an id.
    let v2 = kb.create_version(&key).unwrap().name;
    assert_eq!(v2.version, 2);
    let v3 = ka.create_version(&key).unwrap().name;
    assert_eq!(v3.version, 3, "A refreshed before creating");
}

fn suite(pair: &Pair) {
    commits_and_epochs(pair);
    racing_writers_one_wins(pair);
    sealed_secrets(pair);
    two_cores_one_key_manager(pair);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file() {
    let (pair, dir) = sqlite_pair();
    suite(&pair);
    drop(pair);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres() {
    let pair = postgres_pair().await;
    suite(&pair);
}
