//! One suite every `HmacKeyBackend` passes, through the `HmacKeyStore` front (sealing
//! and the lookup cache are part of what is tested): SQLite, PostgreSQL (a throwaway
//! cluster the test owns) and memory run the same checks. `a` and `b` are two stores on
//! the same database, as a server and the `iam` CLI are.

use super::*;
use sealstore_core::rootkey::RootKey;
use tokio::task::JoinSet;

const SA: &str = "sa@p.iam.gserviceaccount.com";

async fn lifecycle(a: &HmacKeyStore) {
    let now = Utc::now();
    let (meta, secret) = a.create("p", SA, now).await.unwrap();
    assert!(meta.access_id.starts_with("GOOG1E"));
    assert_eq!(secret.len(), 40);
    assert_eq!(a.get("p", &meta.access_id).await.unwrap(), meta);
    let got = a.signing_secret(&meta.access_id).await.unwrap().unwrap();
    assert_eq!(got.secret.as_str(), secret.as_str());
    assert_eq!(got.meta, meta);
    assert_eq!(got.meta.principal(), format!("serviceAccount:{SA}"));
    assert!(!format!("{got:?}").contains(secret.as_str()));
    // Bad input is refused before the backend sees it.
    assert!(matches!(
        a.create("p", "not an email", now).await,
        Err(IamError::InvalidArgument(_))
    ));
    assert!(matches!(
        a.create("p/q", SA, now).await,
        Err(IamError::InvalidArgument(_))
    ));
    assert!(matches!(
        a.set_state("p", &meta.access_id, DELETED, None, now).await,
        Err(IamError::InvalidArgument(_))
    ));
    // Another project does not see the key, nor can it change it.
    assert!(matches!(a.get("q", &meta.access_id).await, Err(IamError::NotFound(_))));
    assert!(matches!(
        a.set_state("q", &meta.access_id, INACTIVE, None, now).await,
        Err(IamError::NotFound(_))
    ));
    assert!(matches!(
        a.delete("q", &meta.access_id, now).await,
        Err(IamError::NotFound(_))
    ));
    // An active key cannot be deleted; a stale etag changes nothing.
    assert!(matches!(
        a.delete("p", &meta.access_id, now).await,
        Err(IamError::FailedPrecondition(_))
    ));
    assert!(matches!(
        a.set_state("p", &meta.access_id, INACTIVE, Some("stale"), now).await,
        Err(IamError::Aborted(_))
    ));
    assert_eq!(a.get("p", &meta.access_id).await.unwrap(), meta);
    let later = now + chrono::TimeDelta::seconds(3);
    let m = a
        .set_state("p", &meta.access_id, INACTIVE, Some(&meta.etag), later)
        .await
        .unwrap();
    assert_ne!(m.etag, meta.etag);
    assert_eq!((m.state.as_str(), m.time_created), (INACTIVE, meta.time_created));
    assert_eq!(a.get("p", &meta.access_id).await.unwrap(), m);
    // Inactive keys stop signing at once through the store that changed them.
    assert!(a.signing_secret(&meta.access_id).await.unwrap().is_none());
    assert!(a.cached_signing_secret(&meta.access_id).await.unwrap().is_none());
    a.delete("p", &meta.access_id, later).await.unwrap();
    assert!(matches!(
        a.delete("p", &meta.access_id, later).await,
        Err(IamError::NotFound(_))
    ));
    assert!(matches!(
        a.set_state("p", &meta.access_id, ACTIVE, None, later).await,
        Err(IamError::FailedPrecondition(_))
    ));
    let deleted = a.get("p", &meta.access_id).await.unwrap();
    assert_eq!(deleted.state, DELETED);
    assert!(a.signing_secret(&meta.access_id).await.unwrap().is_none());
    assert!(a.list("p", None, false, None, 10).await.unwrap().is_empty());
    assert_eq!(a.list("p", None, true, None, 10).await.unwrap(), vec![deleted]);
}

async fn pagination(a: &HmacKeyStore) {
    let now = Utc::now();
    let mut made = vec![];
    for i in 0..7 {
        let sa = if i % 2 == 0 {
            SA.to_owned()
        } else {
            format!("other{i}@p.iam.gserviceaccount.com")
        };
        made.push(a.create("pages", &sa, now).await.unwrap().0);
    }
    a.create("elsewhere", SA, now).await.unwrap();
    made.sort_by(|x, y| x.access_id.cmp(&y.access_id));
    // Pages of 3 by access id, each after the last one seen, cover every key once.
    let mut seen = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = a.list("pages", None, false, after.as_deref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.access_id.clone());
        seen.extend(page);
    }
    assert_eq!(seen, made);
    let by_sa = a.list("pages", Some(SA), false, None, 100).await.unwrap();
    assert_eq!(by_sa.len(), 4);
    assert!(by_sa.iter().all(|m| m.service_account_email == SA));
    assert!(
        a.list("pages", None, false, Some(&made[6].access_id), 3)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A change made through `b` stops `a`'s cached lookups within `CACHE_TTL`.
async fn invalidation(a: &HmacKeyStore, b: &HmacKeyStore) {
    let now = Utc::now();
    let (meta, secret) = a.create("p", SA, now).await.unwrap();
    // `b` reads what `a` wrote, and unseals it (same root key).
    let via_b = b.cached_signing_secret(&meta.access_id).await.unwrap().unwrap();
    assert_eq!(via_b.secret.as_str(), secret.as_str());
    assert!(a.cached_signing_secret(&meta.access_id).await.unwrap().is_some());
    assert!(a.fresh(&meta.access_id).is_some());
    b.set_state("p", &meta.access_id, INACTIVE, None, now).await.unwrap();
    tokio::time::sleep(CACHE_TTL + std::time::Duration::from_millis(50)).await;
    assert!(a.fresh(&meta.access_id).is_none());
    assert!(a.cached_signing_secret(&meta.access_id).await.unwrap().is_none());
    // Reactivated through `b`: `a` signs again within the bound, too.
    b.set_state("p", &meta.access_id, ACTIVE, None, now).await.unwrap();
    assert!(a.cached_signing_secret(&meta.access_id).await.unwrap().is_some());
}

async fn concurrent_writers(a: Arc<HmacKeyStore>, b: Arc<HmacKeyStore>) {
    let now = Utc::now();
    let (meta, _) = a.create("p", SA, now).await.unwrap();
    // 32 updaters racing with one etag, through both stores: exactly one wins.
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (id, etag) = (meta.access_id.clone(), meta.etag.clone());
        tasks.spawn(async move {
            let state = if i % 3 == 0 { ACTIVE } else { INACTIVE };
            s.set_state("p", &id, state, Some(&etag), Utc::now()).await
        });
    }
    let mut winners = vec![];
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(m) => winners.push(m),
            Err(IamError::Aborted(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(a.get("p", &meta.access_id).await.unwrap(), winners[0]);
    // 16 unconditional updaters: all succeed, and the key ends in a state one of them set.
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = meta.access_id.clone();
        tasks.spawn(async move { s.set_state("p", &id, INACTIVE, None, Utc::now()).await });
    }
    let mut etags = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        etags.insert(r.unwrap().unwrap().etag);
    }
    assert_eq!(etags.len(), 16, "every update made its own etag");
    assert!(etags.contains(&a.get("p", &meta.access_id).await.unwrap().etag));
    // 16 deleters racing: exactly one deletes, the rest find it gone.
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = meta.access_id.clone();
        tasks.spawn(async move { s.delete("p", &id, Utc::now()).await });
    }
    let mut deleted = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => deleted += 1,
            Err(IamError::NotFound(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(deleted, 1);
}

async fn suite(a: HmacKeyStore, b: HmacKeyStore) {
    lifecycle(&a).await;
    pagination(&a).await;
    invalidation(&a, &b).await;
    concurrent_writers(Arc::new(a), Arc::new(b)).await;
}

fn temp_db(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sealstore-hmac-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("h.db");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_conforms() {
    let root = RootKey::generate();
    let shared = Arc::new(MemoryHmacKeys::default());
    suite(
        HmacKeyStore::new(shared.clone(), Sealer::new(&root)),
        HmacKeyStore::new(shared, Sealer::new(&root)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let root = RootKey::generate();
    let (dir, path) = temp_db("suite");
    let open = || HmacKeyStore::sqlite(sealstore_core::db::open(&path).unwrap(), Sealer::new(&root)).unwrap();
    suite(open(), open()).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let root = RootKey::generate();
    let url = sealstore_testpg::fresh_database();
    // Two pools: two gateways (or a gateway and the CLI) on one database.
    let open = async || {
        HmacKeyStore::postgres(sealstore_core::pg::pool(&url, 8).unwrap(), Sealer::new(&root))
            .await
            .unwrap()
    };
    suite(open().await, open().await).await;
}

/// A data dir written before the backend split: a key stored then still signs, and
/// its etag still holds as a precondition.
#[tokio::test]
async fn sqlite_rows_of_the_previous_layout_still_sign() {
    let root = RootKey::generate();
    let (dir, path) = temp_db("old");
    let conn = sealstore_core::db::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE hmac_keys (access_id TEXT PRIMARY KEY, project TEXT NOT NULL,
           service_account TEXT NOT NULL, state TEXT NOT NULL, sealed_secret BLOB NOT NULL,
           created TEXT NOT NULL, updated TEXT NOT NULL, etag TEXT NOT NULL);
         CREATE INDEX hmac_keys_project ON hmac_keys (project, service_account);",
    )
    .unwrap();
    let sealed = Sealer::new(&root).seal("hmacKeys/GOOG1EOLD", b"old-secret");
    conn.execute(
        "INSERT INTO hmac_keys VALUES ('GOOG1EOLD', 'p', ?1, 'ACTIVE', ?2,
           '2026-01-02T03:04:05.123456789+00:00', '2026-01-02T03:04:05.123456789+00:00', 'etag0')",
        rusqlite::params![SA, sealed],
    )
    .unwrap();
    let store = HmacKeyStore::sqlite(conn, Sealer::new(&root)).unwrap();
    let got = store.cached_signing_secret("GOOG1EOLD").await.unwrap().unwrap();
    assert_eq!(got.secret.as_str(), "old-secret");
    assert_eq!(got.meta.time_created.timestamp(), 1_767_323_045);
    store
        .set_state("p", "GOOG1EOLD", INACTIVE, Some("etag0"), Utc::now())
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
