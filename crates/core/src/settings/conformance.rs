//! One suite every `SettingsBackend` passes: SQLite, PostgreSQL (a throwaway cluster
//! the test owns) and memory run the same checks. `a` and `b` are two stores on the
//! same database.

use super::*;

async fn suite(a: Arc<Settings>, b: Arc<Settings>) {
    assert_eq!(a.get_i64("k").await.unwrap(), None);
    a.set_i64("k", 5).await.unwrap();
    assert_eq!(a.get_i64("k").await.unwrap(), Some(5));
    // Replaced, not added; seen at once by the other store; keys stay apart.
    b.set_i64("k", -7).await.unwrap();
    assert_eq!(a.get_i64("k").await.unwrap(), Some(-7));
    assert_eq!(a.get_i64("other").await.unwrap(), None);
    a.set_i64("big", i64::MIN).await.unwrap();
    assert_eq!(b.get_i64("big").await.unwrap(), Some(i64::MIN));
    // 32 concurrent writers of one key: all succeed and one of their values stays.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move { s.set_i64("race", i).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let v = a.get_i64("race").await.unwrap().unwrap();
    assert!((0..32).contains(&v), "{v}");
    assert_eq!(b.get_i64("race").await.unwrap(), Some(v));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_conforms() {
    let shared = Arc::new(MemorySettings::default());
    suite(Arc::new(Settings::new(shared.clone())), Arc::new(Settings::new(shared))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let dir = std::env::temp_dir().join(format!("sealstore-settings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.db");
    let open = || Arc::new(Settings::sqlite(crate::db::open(&path).unwrap()).unwrap());
    suite(open(), open()).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let url = sealstore_testpg::fresh_database();
    let open = async || Arc::new(Settings::postgres(crate::pg::pool(&url, 4).unwrap()).await.unwrap());
    suite(open().await, open().await).await;
}

/// A data dir written before the backend split: its value is read as it is.
#[tokio::test]
async fn sqlite_rows_of_the_previous_layout_still_read() {
    let conn = crate::db::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         INSERT INTO settings VALUES ('fake_clock_offset_ms', 86400000);",
    )
    .unwrap();
    let s = Settings::sqlite(conn).unwrap();
    assert_eq!(s.get_i64("fake_clock_offset_ms").await.unwrap(), Some(86_400_000));
}
