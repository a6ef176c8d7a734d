//! Opening the SQLite database shared by every layer's store (`DIR/sealstore.db`).

pub use rusqlite::Connection;
use std::path::Path;

/// WAL for concurrent readers; `synchronous=FULL` so an acknowledged write survives a
/// crash; `secure_delete` so erased key material is overwritten, not left in free pages.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    // Created 0600 first: SQLite gives its WAL and shm files the database file's mode.
    crate::files::private_file(path).map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("creating {}: {e}", path.display())),
        )
    })?;
    let conn = Connection::open(path)?;
    configure(&conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(conn)
}

pub fn open_in_memory() -> rusqlite::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Checkpoints a database's WAL from a thread of its own, so that a busy writer's
/// commits fsync only the WAL. With SQLite's automatic checkpoint the committing
/// connection copies the WAL into the database file (and fsyncs it) inside a commit
/// every ~1000 pages; once the indexes' hot pages outgrow a checkpoint's worth (about
/// 100k objects) that cost a fifth of the small-PUT rate. A PASSIVE checkpoint never
/// waits for the writer or readers. Stops when dropped.
///
/// Once a second, not more often: a checkpoint writes every page changed since the last
/// one, and in a big bucket each PUT dirties a different leaf of each name-ordered
/// index. At 250 ms a million-object bucket's checkpoints rewrote about one leaf per
/// index per PUT (PUTs at 0.70-0.77x of the 10k-object rate); a second lets successive
/// inserts at the same place share one write (1.01x). The WAL holds about a second
/// of commits, which crash recovery replays.
pub struct Checkpointer {
    _stop: std::sync::mpsc::Sender<()>,
}

impl Checkpointer {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(1000);

    /// Turns `writer`'s automatic checkpoints off and checkpoints `path` instead.
    pub fn start(path: &Path, writer: &Connection) -> rusqlite::Result<Self> {
        let conn = open(path)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Self::EVERY) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread the writer must checkpoint for itself again.
            writer.pragma_update(None, "wal_autocheckpoint", 1000)?;
            tracing::error!(error = %e, "could not start the WAL checkpoint thread");
        }
        Ok(Self { _stop: stop })
    }
}

/// The writer thread failed to commit a group; every write in it failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("commit failed: {0}")]
pub struct CommitError(pub String);

type Reply = Box<dyn FnOnce(Result<(), CommitError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

/// A single SQLite writer with group commit: concurrent writes queue up, the writer
/// thread runs every queued write in one transaction (each in its own savepoint, so a
/// failed write does not disturb the others) and commits once. Callers get their result
/// only after that commit, so an acknowledged write is durable, and N concurrent writes
/// cost one fsync instead of N.
pub struct GroupWriter {
    jobs: std::sync::mpsc::Sender<Job>,
}

const MAX_GROUP: usize = 256;

/// The writer's page cache, in KiB (a negative `cache_size` is KiB, not pages).
const WRITER_CACHE_KIB: i64 = -65_536;

impl GroupWriter {
    pub fn start(conn: Connection, name: &str) -> std::io::Result<Self> {
        // Every write passes through this one connection, so its page cache holds the
        // indexes' hot pages. SQLite's default 2 MiB is ~500 pages, fewer than the
        // insertion points of a million-object bucket's three name-ordered indexes: each
        // insert then re-read its leaf and interior pages through the WAL index.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .map_err(std::io::Error::other)?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("{name}-writer"))
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let started = std::time::Instant::now();
                    metrics::histogram!("sealstore_metadata_commit_batch_size").record(jobs.len() as f64);
                    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                        let err = CommitError(e.to_string());
                        for job in jobs {
                            // The job runs outside a transaction only to hand back its
                            // reply; its caller gets the error, not its result.
                            if let Some((_, reply)) = run_guarded(job, &conn) {
                                reply(Err(err.clone()));
                            }
                        }
                        continue;
                    }
                    let mut replies = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        let saved = conn.execute_batch("SAVEPOINT job");
                        // A panicking job is rolled back alone; its caller sees the
                        // writer's error (its reply channel closes) and the thread lives on.
                        let outcome = run_guarded(job, &conn);
                        let ok = matches!(outcome, Some((true, _)));
                        let undo = if ok {
                            "RELEASE job"
                        } else {
                            "ROLLBACK TO job; RELEASE job"
                        };
                        if saved.is_ok() && conn.execute_batch(undo).is_err() {
                            tracing::error!("could not close a write savepoint");
                        }
                        if let Some((_, reply)) = outcome {
                            replies.push(reply);
                        }
                    }
                    let outcome = conn.execute_batch("COMMIT").map_err(|e| {
                        let _ = conn.execute_batch("ROLLBACK");
                        CommitError(e.to_string())
                    });
                    metrics::histogram!("sealstore_metadata_commit_seconds").record(started.elapsed().as_secs_f64());
                    if outcome.is_err() {
                        metrics::counter!("sealstore_metadata_commit_failures_total").increment(1);
                    }
                    for reply in replies {
                        reply(outcome.clone());
                    }
                }
            })?;
        Ok(Self { jobs: tx })
    }

    /// Whether the writer thread is alive and commits: a no-op write through it.
    pub fn ping(&self) -> Result<(), CommitError> {
        self.run(|c| -> Result<(), CommitError> { c.execute_batch("SELECT 1").map_err(|e| CommitError(e.to_string())) })
    }

    /// Runs `f` inside the next group transaction and returns its result once the group
    /// has committed. An `Err` from `f` rolls back only `f`'s own changes.
    pub fn run<R, E>(&self, f: impl FnOnce(&Connection) -> Result<R, E> + Send + 'static) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<CommitError> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<R, E>>(1);
        let job: Job = Box::new(move |conn| {
            let r = f(conn);
            let ok = r.is_ok();
            let reply: Reply = Box::new(move |committed| {
                let _ = tx.send(match committed {
                    Ok(()) => r,
                    Err(e) => Err(E::from(e)),
                });
            });
            (ok, reply)
        });
        if self.jobs.send(job).is_err() {
            return Err(E::from(CommitError("the writer thread has stopped".into())));
        }
        rx.recv()
            .unwrap_or_else(|_| Err(E::from(CommitError("the writer thread has stopped".into()))))
    }
}

/// Runs one queued write, catching a panic in it (`None`), so one bad write cannot stop
/// the writer for everyone.
fn run_guarded(job: Job, conn: &Connection) -> Option<(bool, Reply)> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))) {
        Ok(r) => Some(r),
        Err(_) => {
            tracing::error!("a metadata write panicked; it was rolled back and the writer goes on");
            metrics::counter!("sealstore_metadata_write_panics_total").increment(1);
            None
        }
    }
}

/// A few read connections, used round-robin (WAL lets them read while the writer writes).
pub struct ReadPool {
    conns: Vec<std::sync::Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

impl ReadPool {
    pub fn new(conns: Vec<Connection>) -> Self {
        assert!(!conns.is_empty(), "a read pool needs a connection");
        Self {
            conns: conns.into_iter().map(std::sync::Mutex::new).collect(),
            next: Default::default(),
        }
    }

    pub fn get(&self) -> std::sync::MutexGuard<'_, Connection> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..n {
            if let Ok(c) = self.conns[(start + i) % n].try_lock() {
                return c;
            }
        }
        self.conns[start % n].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl From<CommitError> for String {
    fn from(e: CommitError) -> Self {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_writer_isolates_failures_and_commits() {
        let dir = std::env::temp_dir().join(format!("sealstore-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.db");
        let _ = std::fs::remove_file(&path);
        let setup = open(&path).unwrap();
        setup.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap();
        let w = std::sync::Arc::new(GroupWriter::start(open(&path).unwrap(), "test").unwrap());
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let w = w.clone();
                std::thread::spawn(move || {
                    w.run(move |c| -> Result<(), String> {
                        c.execute("INSERT INTO t (k) VALUES (?1)", [i % 16])
                            .map_err(|e| e.to_string())?;
                        Ok(())
                    })
                })
            })
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(
            handles.iter().filter(|r| r.is_ok()).count(),
            16,
            "duplicates fail alone"
        );
        let n: i64 = setup.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 16);
        // A job that panics fails alone; the writer keeps committing.
        let r = w.run(|_| -> Result<(), String> { panic!("boom") });
        assert!(r.is_err());
        w.ping().unwrap();
        w.run(|c| -> Result<(), String> {
            c.execute("INSERT INTO t (k) VALUES (100)", [])
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .unwrap();
        let n: i64 = setup.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 17);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
