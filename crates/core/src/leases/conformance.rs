//! One suite every `LeaseBackend` passes: SQLite (a temp file), PostgreSQL (a
//! throwaway cluster the test owns) and memory run the same checks, each check a test
//! of its own per backend. The checks on two stores over one database (as two gateways
//! would open it) run on SQLite and PostgreSQL; a memory store is one process's only.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Long enough never to expire during a check.
const LONG: Duration = Duration::from_secs(60);
/// Short enough to expire during a check: `SHORT` then a sleep of `PAST_SHORT`.
const SHORT: Duration = Duration::from_millis(150);
const PAST_SHORT: Duration = Duration::from_millis(300);

/// A fresh, empty lease database: `a`, and on shared backends `b`, a second store on
/// the same database.
struct Db {
    a: Arc<Leases>,
    b: Option<Arc<Leases>>,
    _dir: Option<TempDir>,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn memory() -> Db {
    Db {
        a: Arc::new(Leases::memory()),
        b: None,
        _dir: None,
    }
}

async fn sqlite() -> Db {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sealstore-leases-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("l.db");
    let open = || Arc::new(Leases::sqlite(crate::db::open(&path).unwrap()).unwrap());
    Db {
        a: open(),
        b: Some(open()),
        _dir: Some(TempDir(dir)),
    }
}

async fn postgres() -> Db {
    let url = sealstore_testpg::fresh_database();
    let open = async || Arc::new(Leases::postgres(crate::pg::pool(&url, 4).unwrap()).await.unwrap());
    Db {
        a: open().await,
        b: Some(open().await),
        _dir: None,
    }
}

/// `holder` holds `name`, as seen by `s`, if its `SHORT` lease taken at `taken` has
/// not yet expired (a machine too slow to look in time proves nothing, and fails nothing).
async fn held_while_fresh(s: &Leases, name: &str, holder: &str, taken: Instant) {
    let seen = s.holder(name).await.unwrap();
    if taken.elapsed() < SHORT {
        assert_eq!(seen.as_deref(), Some(holder));
    }
}

async fn free_lease_is_acquired(db: &Db) {
    let s = &db.a;
    assert_eq!(s.holder("l").await.unwrap(), None);
    assert!(s.acquire("l", "a", LONG).await.unwrap());
    assert_eq!(s.holder("l").await.unwrap().as_deref(), Some("a"));
    assert_eq!(s.holder("other").await.unwrap(), None, "leases stay apart");
}

async fn second_holder_refused_while_valid(db: &Db) {
    let s = &db.a;
    assert!(s.acquire("l", "a", LONG).await.unwrap());
    assert!(!s.acquire("l", "b", LONG).await.unwrap());
    assert!(!s.acquire("l", "b", SHORT).await.unwrap(), "whatever ttl it asks for");
    assert_eq!(
        s.holder("l").await.unwrap().as_deref(),
        Some("a"),
        "the refusal changed nothing"
    );
    // Another lease is free for the refused holder.
    assert!(s.acquire("m", "b", LONG).await.unwrap());
}

async fn same_holder_renews(db: &Db) {
    let s = &db.a;
    assert!(s.acquire("l", "a", SHORT).await.unwrap());
    assert!(s.acquire("l", "a", LONG).await.unwrap(), "renewed");
    tokio::time::sleep(PAST_SHORT).await;
    // Past the first expiry, within the renewed one: still a's.
    assert_eq!(s.holder("l").await.unwrap().as_deref(), Some("a"));
    assert!(!s.acquire("l", "b", LONG).await.unwrap());
}

async fn expired_lease_is_taken_over(db: &Db) {
    let s = &db.a;
    let taken = Instant::now();
    assert!(s.acquire("l", "a", SHORT).await.unwrap());
    held_while_fresh(s, "l", "a", taken).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(s.holder("l").await.unwrap(), None, "expired");
    assert!(s.acquire("l", "b", LONG).await.unwrap(), "taken over");
    assert_eq!(s.holder("l").await.unwrap().as_deref(), Some("b"));
    assert!(
        !s.acquire("l", "a", LONG).await.unwrap(),
        "the first holder is refused now"
    );
    // A holder may take its own expired lease back.
    assert!(s.acquire("m", "a", SHORT).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    assert!(s.acquire("m", "a", LONG).await.unwrap());
    assert_eq!(s.holder("m").await.unwrap().as_deref(), Some("a"));
}

async fn release_frees_at_once(db: &Db) {
    let s = &db.a;
    assert!(s.acquire("l", "a", LONG).await.unwrap());
    s.release("l", "a").await.unwrap();
    assert_eq!(s.holder("l").await.unwrap(), None);
    assert!(s.acquire("l", "b", LONG).await.unwrap());
    assert_eq!(s.holder("l").await.unwrap().as_deref(), Some("b"));
    // Releasing twice, or a lease never taken, is no error.
    s.release("l", "a").await.unwrap();
    s.release("never", "a").await.unwrap();
}

async fn release_by_non_holder_does_nothing(db: &Db) {
    let s = &db.a;
    assert!(s.acquire("l", "a", LONG).await.unwrap());
    s.release("l", "b").await.unwrap();
    assert_eq!(s.holder("l").await.unwrap().as_deref(), Some("a"));
    assert!(!s.acquire("l", "b", LONG).await.unwrap());
}

/// 32 tasks, each its own holder, race for one free lease: exactly one gets it.
async fn race(stores: &[Arc<Leases>], name: &'static str) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let s = stores[i % stores.len()].clone();
        tasks.spawn(async move {
            let holder = format!("h{i}");
            s.acquire(name, &holder, LONG).await.map(|won| won.then_some(holder))
        });
    }
    let mut winners = Vec::new();
    while let Some(r) = tasks.join_next().await {
        winners.extend(r.unwrap().unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    for s in stores {
        assert_eq!(s.holder(name).await.unwrap().as_ref(), Some(&winners[0]));
    }
}

async fn racing_acquirers_one_wins(db: &Db) {
    race(std::slice::from_ref(&db.a), "race").await;
}

/// A ttl past `MAX_TTL` is cut, not an overflow.
async fn huge_ttl_is_capped(db: &Db) {
    let s = &db.a;
    assert!(s.acquire("l", "a", Duration::MAX).await.unwrap());
    assert_eq!(s.holder("l").await.unwrap().as_deref(), Some("a"));
    assert!(s.acquire("l", "a", Duration::MAX).await.unwrap(), "renewed");
    assert!(!s.acquire("l", "b", Duration::MAX).await.unwrap());
    // A zero ttl expires at once: the next holder takes the lease.
    assert!(s.acquire("z", "a", Duration::ZERO).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(s.acquire("z", "b", LONG).await.unwrap());
}

/// Two stores on one database see each other's leases at once.
async fn two_stores_agree(db: &Db) {
    let (a, b) = (&db.a, db.b.as_ref().expect("a shared backend"));
    assert!(a.acquire("l", "ga", LONG).await.unwrap());
    assert_eq!(b.holder("l").await.unwrap().as_deref(), Some("ga"));
    assert!(!b.acquire("l", "gb", LONG).await.unwrap());
    // The holder renews through either store.
    assert!(b.acquire("l", "ga", LONG).await.unwrap());
    b.release("l", "gb").await.unwrap();
    assert_eq!(a.holder("l").await.unwrap().as_deref(), Some("ga"));
    b.release("l", "ga").await.unwrap();
    assert_eq!(a.holder("l").await.unwrap(), None);
    let taken = Instant::now();
    assert!(b.acquire("l", "gb", SHORT).await.unwrap());
    held_while_fresh(a, "l", "gb", taken).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert!(
        a.acquire("l", "ga", LONG).await.unwrap(),
        "taken over from the other store"
    );
    assert!(!b.acquire("l", "gb", LONG).await.unwrap());
    // Racers split across both stores: still exactly one winner.
    race(&[a.clone(), b.clone()], "race").await;
}

/// Each check, as a test of its own on `$backend`.
macro_rules! checks {
    ($backend:ident: $($check:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = super::$backend().await;
                    super::$check(&db).await;
                }
            )*
        }
    };
}

macro_rules! conformance {
    (every: [$($check:ident),* $(,)?], shared: [$($shared:ident),* $(,)?] $(,)?) => {
        checks!(memory: $($check),*);
        checks!(sqlite: $($check,)* $($shared),*);
        checks!(postgres: $($check,)* $($shared),*);
    };
}

conformance! {
    every: [
        free_lease_is_acquired,
        second_holder_refused_while_valid,
        same_holder_renews,
        expired_lease_is_taken_over,
        release_frees_at_once,
        release_by_non_holder_does_nothing,
        racing_acquirers_one_wins,
        huge_ttl_is_capped,
    ],
    shared: [two_stores_agree],
}

/// A database that is not there is "unavailable", and the error names no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_is_unavailable() {
    // A port nothing listens on: bind one, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pool = crate::pg::pool(&format!("postgres://u:sekrit@127.0.0.1:{port}/db"), 2).unwrap();
    let err = match Leases::postgres(pool).await {
        Ok(_) => panic!("a store on no database"),
        Err(e) => e,
    };
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.to_string().contains("sekrit"), "{err}");
    assert!(!format!("{err:?}").contains("sekrit"), "{err:?}");
}

/// SQLite failures are not "unavailable": nothing retry can fix.
#[tokio::test]
async fn sqlite_errors_are_not_unavailable() {
    let conn = crate::db::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE leases (name TEXT PRIMARY KEY);")
        .unwrap();
    let s = Leases::sqlite(conn).unwrap();
    let err = s.acquire("l", "a", LONG).await.unwrap_err();
    assert!(!err.is_unavailable(), "{err:?}");
}
