//! One suite every `TokenBackend` passes: SQLite, PostgreSQL (a throwaway cluster the
//! test owns) and memory run the same checks.

use super::*;
use chrono::TimeDelta;

fn row(id: &str, principal: &str, created: DateTime<Utc>) -> TokenInfo {
    TokenInfo {
        id: id.to_owned(),
        principal: principal.to_owned(),
        created: created.trunc_subsecs(6),
        revoked: false,
    }
}

async fn suite(b: Arc<dyn TokenBackend>) {
    let t0 = Utc::now();
    let a = row("a1", "user:a@x", t0);
    // Listed by creation time, not by id or insertion order.
    let z = row("00", "user:z@x", t0 - TimeDelta::seconds(5));
    b.insert(&a, b"hash-a").await.unwrap();
    b.insert(&z, b"hash-z").await.unwrap();
    assert_eq!(b.principal(b"hash-a").await.unwrap().as_deref(), Some("user:a@x"));
    assert_eq!(b.principal(b"hash-none").await.unwrap(), None);
    assert_eq!(b.list().await.unwrap(), vec![z.clone(), a.clone()]);

    // A duplicate id or hash is refused and changes nothing.
    for (id, hash) in [("a1", &b"hash-new"[..]), ("b2", &b"hash-a"[..])] {
        let err = b.insert(&row(id, "user:evil@x", t0), hash).await.unwrap_err();
        assert!(matches!(err, IamError::Aborted(_)), "{id}: {err:?}");
    }
    assert_eq!(b.principal(b"hash-a").await.unwrap().as_deref(), Some("user:a@x"));
    assert_eq!(b.principal(b"hash-new").await.unwrap(), None);
    assert_eq!(b.list().await.unwrap().len(), 2);

    // Revocation takes effect on the next lookup, is idempotent, and names only its row.
    assert!(b.revoke("a1").await.unwrap());
    assert!(b.revoke("a1").await.unwrap());
    assert!(!b.revoke("missing").await.unwrap());
    assert_eq!(b.principal(b"hash-a").await.unwrap(), None);
    assert_eq!(b.principal(b"hash-z").await.unwrap().as_deref(), Some("user:z@x"));
    let listed = b.list().await.unwrap();
    assert!(listed[1].revoked && !listed[0].revoked, "{listed:?}");

    // Many writers at once: 32 concurrent inserts all land; 16 concurrent revokers of one
    // row all see it exist and leave it revoked.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let b = b.clone();
        tasks.spawn(async move {
            let r = row(&format!("c{i:02}"), "user:c@x", t0 + TimeDelta::milliseconds(i));
            b.insert(&r, format!("hash-c{i}").as_bytes()).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let mut revokers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let b = b.clone();
        revokers.spawn(async move { b.revoke("c07").await });
    }
    while let Some(r) = revokers.join_next().await {
        assert!(r.unwrap().unwrap());
    }
    // 32 writers racing one id: exactly one wins.
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..32 {
        let b = b.clone();
        racers.spawn(async move {
            b.insert(
                &row("race", &format!("user:r{i}@x"), t0 - TimeDelta::seconds(1)),
                format!("hash-r{i}").as_bytes(),
            )
            .await
        });
    }
    let mut wins = 0;
    while let Some(r) = racers.join_next().await {
        match r.unwrap() {
            Ok(()) => wins += 1,
            Err(IamError::Aborted(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(wins, 1);
    let listed = b.list().await.unwrap();
    assert_eq!(listed.len(), 2 + 32 + 1);
    let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
    let expect: Vec<String> = (0..32).map(|i| format!("c{i:02}")).collect();
    assert_eq!(ids[0], "00");
    assert_eq!(&ids[3..], expect.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(listed.iter().find(|t| t.id == "c07").unwrap().revoked);
    assert_eq!(b.principal(b"hash-c7").await.unwrap(), None);
    assert_eq!(b.principal(b"hash-c8").await.unwrap().as_deref(), Some("user:c@x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_conforms() {
    suite(Arc::new(MemoryTokens::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let dir = std::env::temp_dir().join(format!("sealstore-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens.db");
    let _ = std::fs::remove_file(&path);
    suite(Arc::new(
        SqliteTokens::new(sealstore_core::db::open(&path).unwrap()).unwrap(),
    ))
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let url = sealstore_testpg::fresh_database();
    let pool = sealstore_core::pg::pool(&url, 8).unwrap();
    suite(Arc::new(PgTokens::new(pool.clone()).await.unwrap())).await;
    // A second gateway starting on the same database migrates to the same table and
    // sees the same rows.
    let again = PgTokens::new(pool).await.unwrap();
    assert_eq!(again.list().await.unwrap().len(), 35);
}

/// The front over a SQLite data dir written before the backend split: tokens made then
/// still authenticate (same table, same hash key derivation).
#[tokio::test]
async fn sqlite_rows_of_the_previous_layout_still_authenticate() {
    let root = RootKey::generate();
    let conn = sealstore_core::db::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE iam_tokens (id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE,
           principal TEXT NOT NULL, created TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);",
    )
    .unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &root.derive(b"sealstore token hash v1")[..]);
    let hash = hmac::sign(&key, b"sst_old").as_ref().to_vec();
    conn.execute(
        "INSERT INTO iam_tokens (id, hash, principal, created) VALUES ('old', ?1, 'user:old@x', '2026-01-02T03:04:05.123456789+00:00')",
        [hash],
    )
    .unwrap();
    let store = TokenStore::sqlite(conn, &root).unwrap();
    assert_eq!(
        store.authenticate("sst_old").await.unwrap().as_deref(),
        Some("user:old@x")
    );
    assert_eq!(store.list().await.unwrap()[0].id, "old");
}
