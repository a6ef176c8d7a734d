//! One suite every `PolicyBackend` passes, through the `PolicyStore` front (its cache is
//! part of what is tested): SQLite, PostgreSQL (a throwaway cluster the test owns) and
//! memory run the same checks. `a` and `b` are two stores on the same database, as a
//! server and the `iam` CLI are.

use super::*;
use tokio::task::JoinSet;

fn binding(role: &str, members: &[&str]) -> Binding {
    Binding {
        role: role.into(),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        condition: None,
    }
}

fn policy(members: &[&str], etag: &[u8]) -> Policy {
    Policy {
        version: 1,
        bindings: vec![binding("roles/viewer", members)],
        etag: etag.to_vec(),
    }
}

async fn preconditions(a: &PolicyStore) {
    assert_eq!(a.get("r").await.unwrap(), Policy::empty());
    // A made-up etag on a resource with no policy is stale too, and stores nothing.
    let err = a.set("r", policy(&["user:a@x"], b"made-up")).await.unwrap_err();
    assert!(matches!(err, IamError::Aborted(_)), "{err:?}");
    assert_eq!(a.get("r").await.unwrap(), Policy::empty());
    let stored = a.set("r", policy(&["user:a@x"], EMPTY_ETAG)).await.unwrap();
    assert_ne!(stored.etag, EMPTY_ETAG);
    assert_eq!(a.get("r").await.unwrap(), stored);
    // The etag just used is stale now: refused, nothing stored.
    let err = a.set("r", policy(&["user:evil@x"], EMPTY_ETAG)).await.unwrap_err();
    assert!(matches!(err, IamError::Aborted(_)), "{err:?}");
    assert_eq!(a.get("r").await.unwrap(), stored);
    // An invalid policy is refused before the store sees it.
    let err = a.set("r", policy(&["nobody"], &stored.etag)).await.unwrap_err();
    assert!(matches!(err, IamError::InvalidArgument(_)), "{err:?}");
    // The current etag, or none at all (an unconditional write), is accepted.
    let next = a.set("r", policy(&["user:b@x"], &stored.etag)).await.unwrap();
    let last = a.set("r", policy(&["user:c@x"], b"")).await.unwrap();
    assert_ne!(next.etag, last.etag);
    assert_eq!(a.get("r").await.unwrap(), last);
}

/// A grant made through `b` is seen by `a`'s very next check; a revocation through `b`
/// by `b` at once and by `a` within `VERSION_TTL`.
async fn invalidation(a: &PolicyStore, b: &PolicyStore) {
    let chain = vec!["projects/p/buckets/k".to_owned(), "projects/p".to_owned()];
    let has_on = async |s: &PolicyStore, m: &str| {
        crate::has_permission(s, m, &chain, "storage.objects.get")
            .await
            .unwrap()
    };
    let has = async |m: &str| has_on(a, m).await;
    // Past the bound, `a` must have seen the revocation.
    let revoked = async |m: &str, what: &str| {
        assert!(!has_on(b, m).await, "{what}: through the writing store, at once");
        tokio::time::sleep(super::VERSION_TTL + std::time::Duration::from_millis(50)).await;
        assert!(!has(m).await, "{what}: through the other store, within VERSION_TTL");
    };
    assert!(!has("user:a@x").await);
    assert!(!has("user:a@x").await, "served from the cache");
    b.add_binding("projects/p", "roles/storage.objectViewer", "user:a@x")
        .await
        .unwrap();
    assert!(has("user:a@x").await, "an add through the other store");
    assert!(has("user:a@x").await, "a cached grant");
    b.rename("projects/p", "projects/gone").await.unwrap();
    revoked("user:a@x", "a rename away").await;
    b.rename("projects/gone", "projects/p/buckets/k").await.unwrap();
    assert!(has("user:a@x").await, "a rename onto a resource of the chain");
    let current = b.get("projects/p/buckets/k").await.unwrap();
    let mut replaced = current.clone();
    replaced.bindings = vec![binding("roles/storage.objectViewer", &["user:z@x"])];
    b.set("projects/p/buckets/k", replaced).await.unwrap();
    assert!(has("user:z@x").await, "a grant by set");
    revoked("user:a@x", "a set").await;
    b.remove("projects/p/buckets/k").await.unwrap();
    revoked("user:z@x", "a remove").await;
    assert_eq!(a.get("projects/p/buckets/k").await.unwrap(), Policy::empty());
    // A write through `a` itself is seen by `a` at once, cache or not.
    a.add_binding("projects/p", "roles/storage.objectViewer", "user:c@x")
        .await
        .unwrap();
    assert!(has("user:c@x").await);
    a.remove("projects/p").await.unwrap();
    assert!(!has("user:c@x").await, "a remove through the checking store");
    // Removing or renaming nothing is fine.
    b.remove("projects/none").await.unwrap();
    b.rename("projects/none", "projects/none2").await.unwrap();
}

async fn rename_replaces(a: &PolicyStore) {
    let from = a.set("from", policy(&["user:f@x"], b"")).await.unwrap();
    a.set("to", policy(&["user:t@x"], b"")).await.unwrap();
    a.rename("from", "to").await.unwrap();
    assert_eq!(a.get("to").await.unwrap(), from, "the moved policy replaces the old");
    assert_eq!(a.get("from").await.unwrap(), Policy::empty());
    // Its etag moved with it: a precondition on it holds at the new name.
    a.set("to", policy(&["user:g@x"], &from.etag)).await.unwrap();
}

async fn concurrent_writers(a: Arc<PolicyStore>, b: Arc<PolicyStore>) {
    // 32 setters racing with one etag, through both stores: exactly one wins.
    let base = a.set("race", policy(&["user:base@x"], b"")).await.unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let etag = base.etag.clone();
        tasks.spawn(async move {
            let m = format!("user:w{i}@x");
            s.set("race", policy(&[&m], &etag)).await
        });
    }
    let mut winners = vec![];
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(p) => winners.push(p),
            Err(IamError::Aborted(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(a.get("race").await.unwrap(), winners[0]);
    // 16 add_binding calls on one row, through both stores: no update is lost.
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move { s.add_binding("shared", "roles/viewer", &format!("user:m{i}@x")).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let stored = a.get("shared").await.unwrap();
    assert_eq!(stored.bindings.len(), 1);
    let mut members = stored.bindings[0].members.clone();
    members.sort();
    let mut expect: Vec<String> = (0..16).map(|i| format!("user:m{i}@x")).collect();
    expect.sort();
    assert_eq!(members, expect);
    // Adding a member already there changes nothing.
    let again = b.add_binding("shared", "roles/viewer", "user:m3@x").await.unwrap();
    assert_eq!(again, stored);
}

async fn suite(a: PolicyStore, b: PolicyStore) {
    preconditions(&a).await;
    invalidation(&a, &b).await;
    rename_replaces(&a).await;
    concurrent_writers(Arc::new(a), Arc::new(b)).await;
}

fn temp_db(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sealstore-policy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.db");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_conforms() {
    let shared = Arc::new(MemoryPolicies::default());
    suite(PolicyStore::new(shared.clone()), PolicyStore::new(shared)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let (dir, path) = temp_db("suite");
    let open = || PolicyStore::sqlite(sealstore_core::db::open(&path).unwrap()).unwrap();
    suite(open(), open()).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let url = sealstore_testpg::fresh_database();
    // Two pools: two gateways (or a gateway and the CLI) on one database.
    let a = PolicyStore::postgres(sealstore_core::pg::pool(&url, 8).unwrap())
        .await
        .unwrap();
    let b = PolicyStore::postgres(sealstore_core::pg::pool(&url, 8).unwrap())
        .await
        .unwrap();
    suite(a, b).await;
}

/// A data dir written before the backend split: its tables and documents are read as
/// they are, and its etags still hold as preconditions.
#[tokio::test]
async fn sqlite_rows_of_the_previous_layout_still_apply() {
    let (dir, path) = temp_db("old");
    let conn = sealstore_core::db::open(&path).unwrap();
    conn.execute_batch(
        r#"CREATE TABLE iam_policies (resource TEXT PRIMARY KEY, doc TEXT NOT NULL);
           CREATE TABLE iam_policy_version (id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER NOT NULL);
           INSERT INTO iam_policy_version (id, v) VALUES (1, 7);
           INSERT INTO iam_policies VALUES ('projects/old',
             '{"version":1,"bindings":[{"role":"roles/viewer","members":["user:old@x"],"condition":null}],"etag":[1,2,3,4,5,6,7,8]}');"#,
    )
    .unwrap();
    let store = PolicyStore::sqlite(conn).unwrap();
    let chain = vec!["projects/old".to_owned()];
    assert!(
        crate::has_permission(&store, "user:old@x", &chain, "storage.objects.get")
            .await
            .unwrap()
    );
    let p = store.get("projects/old").await.unwrap();
    assert_eq!(p.etag, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    store
        .set("projects/old", policy(&["user:new@x"], &p.etag))
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
