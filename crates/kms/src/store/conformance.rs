//! One suite for every `KmsStore` backend (SQLite on a file, PostgreSQL on a throwaway
//! cluster, memory shared by two cores as one database): atomic commits, the epoch
//! check, erasure, racing writers, and two cores on one database behaving as one key
//! manager within the staleness bound. Then every `Write` variant, applied alike by
//! every backend.

use super::{KmsStore, MemoryKmsStore, PgKmsStore, Sealed, Snapshot, SqliteKmsStore, StoreError, Write};
use crate::core::{DAY, Kms, NewCryptoKey};
use crate::error::KmsError;
use crate::freshness::STALENESS_BOUND;
use crate::model::{CryptoKey, CryptoKeyVersion, ImportJob, KeyRing, Operation, OperationKind, RetiredResource};
use crate::names::{CryptoKeyName, KeyRingName, LocationName};
use crate::types::{Algorithm, ImportJobState, ImportMethod, ProtectionLevel, Purpose, VersionState};
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

/// One store as both: two cores sharing one `Arc<MemoryKmsStore>` share its state.
fn memory_pair() -> Pair {
    let s = Arc::new(MemoryKmsStore::new());
    (s.clone(), s)
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
/// other's changes first; they count one quota per project.
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

    // They share each project's quota.
    ka.set_quota(5, &[]);
    kb.set_quota(5, &[]);
    let mut admitted = 0;
    for i in 0..12 {
        let core = if i % 2 == 0 { &ka } else { &kb };
        match core.encrypt(&key, None, b"m", b"") {
            Ok(_) => admitted += 1,
            Err(KmsError::ResourceExhausted(msg)) => assert!(msg.contains("project p:"), "{msg}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(admitted, 5, "one quota of 5 for the project, whichever core serves it");
}

/// The quota bucket is one per name for every process on the database: a new bucket
/// is full, grants never exceed what it holds, and it refills at its rate.
fn quota_buckets((a, b): &Pair) {
    assert_eq!(a.take_tokens("t/fresh", 3, 5).unwrap(), 3);
    assert_eq!(b.take_tokens("t/fresh", 3, 5).unwrap(), 2, "B sees what A took");
    assert_eq!(a.take_tokens("t/fresh", 1, 5).unwrap(), 0, "empty (one token in 12 s)");
    assert_eq!(
        b.take_tokens("t/other", 9, 5).unwrap(),
        5,
        "buckets are per name, capped at the quota"
    );

    // Refill: 60,000 a minute is one token a millisecond.
    assert_eq!(a.take_tokens("t/refill", 60_000, 60_000).unwrap(), 60_000);
    std::thread::sleep(Duration::from_millis(200));
    let refilled = b.take_tokens("t/refill", 60_000, 60_000).unwrap();
    assert!((150..=5_000).contains(&refilled), "{refilled}");

    // Many takers on both handles at once: exactly what the bucket held, plus at most
    // what it refilled meanwhile (40 a minute: under one a second).
    let start = Instant::now();
    let granted: u32 = std::thread::scope(|s| {
        let takers: Vec<_> = (0..16)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                s.spawn(move || (0..6).map(|_| store.take_tokens("t/race", 1, 40).unwrap()).sum::<u32>())
            })
            .collect();
        takers.into_iter().map(|t| t.join().unwrap()).sum()
    });
    let refill_bound = (start.elapsed().as_secs_f64() * 40.0 / 60.0).ceil() as u32;
    assert!(
        granted >= 40 && granted <= 40 + refill_bound,
        "{granted} (refill bound {refill_bound})"
    );
}

fn suite(pair: &Pair) {
    commits_and_epochs(pair);
    racing_writers_one_wins(pair);
    sealed_secrets(pair);
    two_cores_one_key_manager(pair);
    quota_buckets(pair);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory() {
    suite(&memory_pair());
}

fn at() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap()
}

fn ring_name() -> KeyRingName {
    LocationName::new("p", "us-east1").unwrap().key_ring("w").unwrap()
}

fn key(id: &str, next_version_id: u32) -> CryptoKey {
    CryptoKey {
        name: ring_name().crypto_key(id).unwrap(),
        purpose: Purpose::ENCRYPT_DECRYPT,
        create_time: at(),
        primary: Some(1),
        rotation_period: None,
        next_rotation_time: None,
        protection_level: ProtectionLevel::SOFTWARE,
        algorithm: Algorithm::GOOGLE_SYMMETRIC_ENCRYPTION,
        labels: [("a".to_owned(), "b".to_owned())].into(),
        import_only: false,
        destroy_scheduled_duration: DAY,
        next_version_id,
    }
}

fn version(key: &CryptoKey, id: u32, state: VersionState) -> CryptoKeyVersion {
    CryptoKeyVersion {
        name: key.name.version(id),
        state,
        protection_level: ProtectionLevel::SOFTWARE,
        algorithm: Algorithm::GOOGLE_SYMMETRIC_ENCRYPTION,
        create_time: at(),
        generate_time: Some(at()),
        destroy_time: None,
        destroy_event_time: None,
        import_job: None,
        import_time: None,
        import_failure_reason: None,
        generation_failure_reason: None,
        imported: false,
        fingerprint: Some(vec![9; 4]),
    }
}

fn job(state: ImportJobState, public_key_der: Option<Vec<u8>>) -> ImportJob {
    ImportJob {
        name: ring_name().import_job("j").unwrap(),
        import_method: ImportMethod::RSA_OAEP_3072_SHA256,
        protection_level: ProtectionLevel::SOFTWARE,
        create_time: at(),
        generate_time: None,
        expire_time: at(),
        expire_event_time: None,
        state,
        public_key_der,
    }
}

/// A snapshot as JSON, versions in name order (SQLite lists them in insertion order).
fn canonical(mut snap: Snapshot) -> serde_json::Value {
    snap.versions.sort_by_key(|(v, _)| v.name.to_string());
    serde_json::json!({
        "key_rings": snap.key_rings,
        "keys": snap.keys,
        "versions": snap.versions,
        "import_jobs": snap.import_jobs,
        "retired": snap.retired,
        "operations": snap.operations,
    })
}

/// Every `Write` variant and `Sealed` action on a fresh store, checked as it goes;
/// returns the end state for comparison across backends.
fn every_write(s: &dyn KmsStore) -> serde_json::Value {
    let e0 = s.epoch().unwrap();
    let commit = |writes: &[Write<'_>]| {
        let e = s.epoch().unwrap();
        assert_eq!(s.commit(writes, e).unwrap(), e + 1);
    };
    let sealed = |name: &CryptoKeyVersion| s.sealed_secret(&name.name.to_string()).unwrap();
    let kr = KeyRing {
        name: ring_name(),
        create_time: at(),
    };
    let (k, gone) = (key("k", 3), key("gone", 2));
    let (v1, v2, gv) = (
        version(&k, 1, VersionState::ENABLED),
        version(&k, 2, VersionState::ENABLED),
        version(&gone, 1, VersionState::ENABLED),
    );
    commit(&[
        Write::KeyRing(&kr),
        Write::Key(&k),
        Write::Key(&gone),
        Write::Version(&v1, Sealed::Set(b"m1")),
        Write::Version(&v2, Sealed::Keep),
        Write::Version(&gv, Sealed::Set(b"g1")),
    ]);
    assert_eq!(sealed(&v1).as_deref(), Some(&b"m1"[..]));
    assert_eq!(sealed(&v2), None, "a new record kept nothing");
    assert_eq!(sealed(&gv).as_deref(), Some(&b"g1"[..]));

    // Keep: the document is replaced, the secret stays.
    let v1_off = version(&k, 1, VersionState::DISABLED);
    commit(&[Write::Version(&v1_off, Sealed::Keep)]);
    assert_eq!(sealed(&v1).as_deref(), Some(&b"m1"[..]));
    // Set replaces the secret; Erase clears it and keeps the record.
    commit(&[Write::Version(&v2, Sealed::Set(b"m2"))]);
    assert_eq!(sealed(&v2).as_deref(), Some(&b"m2"[..]));
    let v2_gone = version(&k, 2, VersionState::DESTROYED);
    commit(&[Write::Version(&v2_gone, Sealed::Erase)]);
    assert_eq!(sealed(&v2), None, "erased");

    // The same for import jobs' private keys.
    let j = job(ImportJobState::PENDING_GENERATION, None);
    let jname = j.name.to_string();
    commit(&[Write::ImportJob(&j, Sealed::Set(b"pk"))]);
    assert_eq!(s.sealed_secret(&jname).unwrap().as_deref(), Some(&b"pk"[..]));
    let j_active = job(ImportJobState::ACTIVE, Some(vec![1, 2, 3]));
    commit(&[Write::ImportJob(&j_active, Sealed::Keep)]);
    assert_eq!(s.sealed_secret(&jname).unwrap().as_deref(), Some(&b"pk"[..]));
    let j_expired = job(ImportJobState::EXPIRED, Some(vec![1, 2, 3]));
    commit(&[Write::ImportJob(&j_expired, Sealed::Erase)]);
    assert_eq!(s.sealed_secret(&jname).unwrap(), None);

    // Retired resources and operations upsert by name; the later of two writes of one
    // record in one commit wins.
    let retired = RetiredResource {
        name: "projects/p/locations/us-east1/retiredResources/1".into(),
        original_resource: gone.name.to_string(),
        resource_type: "CryptoKey".into(),
        delete_time: at(),
    };
    let op = |kind| Operation {
        name: "projects/p/locations/us-east1/operations/1".into(),
        kind,
    };
    let (op1, op2) = (
        op(OperationKind::DeleteCryptoKeyVersion),
        op(OperationKind::DeleteCryptoKey {
            retired_resource: retired.name.clone(),
        }),
    );
    let k_renumbered = key("k", 7);
    commit(&[
        Write::Retired(&retired),
        Write::Operation(&op1),
        Write::Operation(&op2),
        Write::Key(&k_renumbered),
        Write::Key(&k),
    ]);

    // DeleteKey removes the key record only; DeleteVersion the version and its secret.
    // Deleting what is not there is no error.
    commit(&[
        Write::DeleteKey(&gone.name.to_string()),
        Write::DeleteVersion(&gv.name.to_string()),
        Write::DeleteVersion("no/such/version"),
        Write::DeleteKey("no/such/key"),
    ]);
    assert_eq!(sealed(&gv), None);
    // An empty commit still bumps the epoch.
    commit(&[]);
    assert_eq!(s.epoch().unwrap(), e0 + 10);

    let snap = s.load().unwrap();
    assert_eq!(snap.epoch, e0 + 10);
    let end = canonical(snap);
    let expect = canonical(Snapshot {
        key_rings: vec![kr.clone()],
        keys: vec![k.clone()],
        versions: vec![(v1_off, Some(b"m1".to_vec())), (v2_gone, None)],
        import_jobs: vec![(j_expired, None)],
        retired: vec![retired],
        operations: vec![op2],
        epoch: 0,
    });
    assert_eq!(end, expect);
    // A stale commit of every variant changes nothing.
    let stale = s.commit(
        &[
            Write::KeyRing(&kr),
            Write::Version(&v1, Sealed::Erase),
            Write::DeleteKey(&k.name.to_string()),
        ],
        e0,
    );
    assert!(matches!(stale, Err(StoreError::Stale)), "{stale:?}");
    assert_eq!(canonical(s.load().unwrap()), end);
    assert_eq!(sealed(&v1).as_deref(), Some(&b"m1"[..]));
    end
}

/// Memory and PostgreSQL end every write exactly where SQLite does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_write_applies_alike() {
    let ((sqlite, _), dir) = sqlite_pair();
    let reference = every_write(sqlite.as_ref());
    assert_eq!(every_write(&MemoryKmsStore::new()), reference, "memory");
    let (pg, _) = postgres_pair().await;
    assert_eq!(every_write(pg.as_ref()), reference, "postgres");
    drop(sqlite);
    std::fs::remove_dir_all(dir).unwrap();
}
