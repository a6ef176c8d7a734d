//! Blob I/O through `object_store`. Paths are `<random blob id>.<part>`: they never
//! contain bucket or object names. Each part is written with one `put` (parts are at
//! most `PART_SEGMENTS` segments, about 8 MiB) and, on the local file system, made
//! durable with fsync before the metadata row that references it commits.

use super::error::{StorageError, StorageResult};
use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The directory behind a `LocalFileSystem` store: written parts are fsynced there.
    /// `None` for stores with nothing to sync (in memory).
    local_root: Option<Arc<LocalRoot>>,
    activity: Arc<Mutex<Activity>>,
    /// Holds shared with the other gateways on one database (`with_shared_holds`).
    shared: Option<Arc<SharedHolds>>,
}

/// A write's hold on its blob, made visible to other gateways' sweeps: a lease row
/// `blob-write/ID`, taken only once a write has run for `after` (short writes, nearly
/// all of them, cost no database round trip) and renewed until the write ends. Other
/// gateways' sweeps otherwise rely on their one-hour grace, which a write that keeps
/// adding parts for longer than that would outlast.
struct SharedHolds {
    leases: Arc<sealstore_core::leases::Leases>,
    holder: String,
    after: std::time::Duration,
}

/// How long a hold lasts unless renewed (renewed every third of it).
const HOLD_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

fn hold_name(blob_id: &str) -> String {
    format!("blob-write/{blob_id}")
}

/// Which blobs are being written (and so must not be swept, whatever their files' age)
/// and which the sweeper is deleting from (and so must not be written meanwhile).
#[derive(Default)]
struct Activity {
    writing: HashMap<String, Writing>,
    sweeping: HashSet<String>,
}

/// The leases held on one blob in this process, and the task keeping its shared hold.
struct Writing {
    count: usize,
    holding: Option<tokio::task::JoinHandle<()>>,
    /// Whether the task took the shared hold (so it must be released).
    held: Arc<std::sync::atomic::AtomicBool>,
}

/// Held while a blob is being written: from before its first part until the row or
/// session that references the parts has committed (or the write was given up), and by
/// every background part write. The sweeper leaves the blob's files alone meanwhile.
pub struct BlobLease {
    activity: Arc<Mutex<Activity>>,
    blob_id: String,
    shared: Option<Arc<SharedHolds>>,
}

impl Drop for BlobLease {
    fn drop(&mut self) {
        let mut a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = a.writing.get_mut(&self.blob_id) else {
            return;
        };
        w.count -= 1;
        if w.count > 0 {
            return;
        }
        let Some(w) = a.writing.remove(&self.blob_id) else {
            return;
        };
        drop(a);
        if let Some(task) = w.holding {
            task.abort();
        }
        // Released at once when it was taken; otherwise (no runtime) it lapses.
        if w.held.load(std::sync::atomic::Ordering::SeqCst)
            && let Some(shared) = self.shared.clone()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let name = hold_name(&self.blob_id);
            rt.spawn(async move {
                if let Err(e) = shared.leases.release(&name, &shared.holder).await {
                    tracing::warn!(lease = %name, error = %e, "could not release a blob hold; it lapses");
                }
            });
        }
    }
}

struct LocalRoot {
    path: std::path::PathBuf,
    /// Fan-out directories whose entry in their parent is known durable: a directory
    /// needs its parent fsynced once after creation, not once per blob.
    durable_dirs: Mutex<HashSet<std::path::PathBuf>>,
}

/// How long a writer waits for earlier writes (or a sweep) on the same blob to end.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub fn new_blob_id() -> String {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 16];
    SystemRandom::new().fill(&mut b).expect("system RNG");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `ab/cd/abcd….N`: two levels of fan-out keep directories small, so concurrent
/// creates and renames do not queue on one directory lock.
fn part_path(blob_id: &str, part: usize) -> Path {
    let (a, b) = (blob_id.get(0..2).unwrap_or("00"), blob_id.get(2..4).unwrap_or("00"));
    Path::from(format!("{a}/{b}/{blob_id}.{part}"))
}

/// `(blob id, part)` of a blob file name; `None` for anything else (such as the staging
/// files `LocalFileSystem` writes before renaming).
fn parse_part(file_name: &str) -> Option<(&str, usize)> {
    let (id, part) = file_name.split_once('.')?;
    Some((id, part.parse().ok()?))
}

impl BlobStore {
    /// A store with nothing to fsync (in memory).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            local_root: None,
            activity: Arc::default(),
            shared: None,
        }
    }

    /// Makes writes that last longer than `after` visible to the sweeps of other
    /// processes sharing `leases` (gateways on one database and one blob store).
    pub fn with_shared_holds(
        mut self,
        leases: Arc<sealstore_core::leases::Leases>,
        holder: String,
        after: std::time::Duration,
    ) -> Self {
        self.shared = Some(Arc::new(SharedHolds { leases, holder, after }));
        self
    }

    /// A `LocalFileSystem` store rooted at `root`: parts are fsynced after they are written.
    pub fn local(store: Arc<dyn ObjectStore>, root: std::path::PathBuf) -> Self {
        Self {
            store,
            local_root: Some(Arc::new(LocalRoot {
                path: root,
                durable_dirs: Mutex::new(HashSet::new()),
            })),
            activity: Arc::default(),
            shared: None,
        }
    }

    /// Takes a lease on a blob for writing. With `exclusive`, first waits until no
    /// other lease on it is held: a resumable session's next chunk must not start while
    /// background writes of an abandoned earlier attempt (a dropped request) could
    /// still land on the part paths it is about to write. Also waits while the sweeper
    /// is deleting from the blob.
    pub async fn lease(&self, blob_id: &str, exclusive: bool) -> StorageResult<Arc<BlobLease>> {
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        loop {
            {
                let mut a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
                let busy = exclusive && a.writing.contains_key(blob_id);
                if !busy && !a.sweeping.contains(blob_id) {
                    let shared = self.shared.clone();
                    let w = a.writing.entry(blob_id.to_owned()).or_insert_with(|| {
                        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
                        Writing {
                            count: 0,
                            holding: shared.map(|s| tokio::spawn(keep_hold(s, hold_name(blob_id), held.clone()))),
                            held,
                        }
                    });
                    w.count += 1;
                    return Ok(Arc::new(BlobLease {
                        activity: self.activity.clone(),
                        blob_id: blob_id.to_owned(),
                        shared: self.shared.clone(),
                    }));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StorageError::Conflict(
                    "Writes of an earlier request to this upload are still in progress; retry later.".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Whether another process's write holds the blob (or, failing safe, whether that
    /// cannot be known now).
    async fn held_elsewhere(&self, blob_id: &str) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        if blob_id.is_empty() {
            return false;
        }
        match shared.leases.holder(&hold_name(blob_id)).await {
            Ok(holder) => holder.is_some(),
            Err(e) => {
                tracing::warn!(blob = blob_id, error = %e, "could not check a blob's write hold; keeping it");
                true
            }
        }
    }

    fn writing_now(&self) -> HashSet<String> {
        let a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        a.writing.keys().cloned().collect()
    }

    /// Marks a blob as being swept unless someone is writing it.
    fn begin_sweeping(&self, blob_id: &str) -> bool {
        let mut a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        if a.writing.contains_key(blob_id) {
            return false;
        }
        a.sweeping.insert(blob_id.to_owned());
        true
    }

    fn end_sweeping(&self, blob_id: &str) {
        let mut a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        a.sweeping.remove(blob_id);
    }

    /// Writes one part in a single `put` and makes it durable: after this returns, the
    /// part survives a crash or power loss, so a metadata row may reference it.
    /// Whether the backend answers: a metadata lookup of a name no blob has.
    pub async fn ping(&self) -> StorageResult<()> {
        match self
            .store
            .head(&object_store::path::Path::from("_sealstore_readyz_probe"))
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn put_part(&self, blob_id: &str, part: usize, segments: Vec<Bytes>) -> StorageResult<()> {
        let path = part_path(blob_id, part);
        match self.store.put(&path, segments.into_iter().collect()).await {
            Ok(_) => {}
            // A write can only miss the container itself (a bucket deleted or never made):
            // the backend's fault, retryable once it is fixed, not a missing blob.
            Err(object_store::Error::NotFound { path, source }) => {
                return Err(StorageError::Unavailable(format!(
                    "blob store: writing {path}: {source}"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(root) = self.local_root.clone() {
            tokio::task::spawn_blocking(move || root.sync(path.as_ref()))
                .await
                .map_err(StorageError::internal)?
                .map_err(|e| StorageError::Internal(format!("could not make a blob durable: {e}")))?;
        }
        Ok(())
    }

    pub async fn read(&self, blob_id: &str, part: usize, range: std::ops::Range<u64>) -> StorageResult<Bytes> {
        Ok(self.store.get_range(&part_path(blob_id, part), range).await?)
    }

    /// Deletes every part of a blob; missing parts are fine.
    pub async fn delete(&self, blob_id: &str, parts: usize) {
        self.delete_parts(blob_id, 0..parts.max(1)).await;
    }

    /// Deletes the given parts of a blob; missing parts are fine.
    pub async fn delete_parts(&self, blob_id: &str, parts: std::ops::Range<usize>) {
        for p in parts {
            match self.store.delete(&part_path(blob_id, p)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(blob = blob_id, error = %e, "could not delete blob part; the sweeper will retry")
                }
            }
        }
    }

    /// Removes files last written before `older_than` that no metadata row or session
    /// references (crash leftovers): parts of unreferenced blobs, parts past the count
    /// their row records, and stray files. `referenced` (blob id → parts) is read after
    /// the listing and after noting which blobs are being written, so a write that
    /// commits meanwhile is either seen as referenced or skipped as in progress; each
    /// file is re-checked just before its deletion, with writers of its blob held off.
    /// Returns how many files were removed.
    pub async fn sweep<F, Fut>(&self, older_than: chrono::DateTime<chrono::Utc>, referenced: F) -> StorageResult<usize>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = StorageResult<HashMap<String, usize>>>,
    {
        let mut listing = self.store.list(None);
        let mut old = vec![];
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            if meta.last_modified < older_than {
                old.push(meta);
            }
        }
        let writing = self.writing_now();
        let referenced = referenced().await?;
        let mut removed = 0;
        for meta in old {
            let part = meta.location.filename().and_then(parse_part);
            let id = part.map_or("", |(id, _)| id).to_owned();
            let keep = part.is_some_and(|(id, n)| referenced.get(id).is_some_and(|&count| n < count));
            if keep || writing.contains(&id) || self.held_elsewhere(&id).await || !self.begin_sweeping(&id) {
                continue;
            }
            // Unchanged since the listing: not rewritten by a write that came and went.
            let unchanged = self
                .store
                .head(&meta.location)
                .await
                .is_ok_and(|now| same_version(&now, &meta));
            if unchanged && self.store.delete(&meta.location).await.is_ok() {
                removed += 1;
            }
            self.end_sweeping(&id);
        }
        Ok(removed)
    }
}

/// Whether a `head` describes the same write as a listing entry. Cloud stores give an
/// entity tag that changes with every write, but quote it differently in listings and
/// headers (Azure lists `0x8D…` and heads `"0x8D…"`), and some list modification times
/// more coarsely than they head them: compare normalised tags when both have one.
fn same_version(now: &object_store::ObjectMeta, listed: &object_store::ObjectMeta) -> bool {
    let tag = |m: &object_store::ObjectMeta| {
        m.e_tag
            .as_deref()
            .map(|t| t.trim_start_matches("W/").trim_matches('"').to_owned())
    };
    if now.size != listed.size {
        return false;
    }
    match (tag(now), tag(listed)) {
        (Some(a), Some(b)) => a == b,
        _ => now.last_modified == listed.last_modified,
    }
}

/// Takes the shared hold once a write has run for `after`, and renews it until aborted.
async fn keep_hold(shared: Arc<SharedHolds>, name: String, held: Arc<std::sync::atomic::AtomicBool>) {
    tokio::time::sleep(shared.after).await;
    loop {
        match shared.leases.acquire(&name, &shared.holder, HOLD_TTL).await {
            Ok(true) => held.store(true, std::sync::atomic::Ordering::SeqCst),
            Ok(false) => tracing::warn!(lease = %name, "a blob being written is held by another process"),
            Err(e) => tracing::warn!(lease = %name, error = %e, "could not take a blob hold; retrying"),
        }
        tokio::time::sleep(HOLD_TTL / 3).await;
    }
}

impl LocalRoot {
    /// fsyncs a written file and the directory holding it, and makes sure each fan-out
    /// directory's own entry is durable (once per directory and process: they may have
    /// just been created).
    fn sync(&self, rel: &str) -> std::io::Result<()> {
        let file = self.path.join(rel);
        std::fs::File::open(&file)?.sync_all()?;
        let Some(dir) = file.parent() else {
            return Ok(());
        };
        std::fs::File::open(dir)?.sync_all()?;
        let mut d = dir;
        while d != self.path && d.starts_with(&self.path) {
            let Some(parent) = d.parent() else {
                break;
            };
            let known = self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner()).contains(d);
            if !known {
                std::fs::File::open(parent)?.sync_all()?;
                self.durable_dirs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(d.to_path_buf());
            }
            d = parent;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conformance suite every blob backend must pass.
    async fn conformance(blobs: BlobStore) {
        let id = new_blob_id();
        assert_eq!(id.len(), 32);
        let parts = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        blobs.put_part(&id, 0, parts).await.unwrap();
        assert_eq!(&blobs.read(&id, 0, 6..11).await.unwrap()[..], b"world");
        let big = Bytes::from(vec![7u8; 3 << 20]);
        blobs
            .put_part(&id, 1, vec![big.slice(..1 << 20), big.slice(1 << 20..)])
            .await
            .unwrap();
        assert_eq!(blobs.read(&id, 1, 0..(3 << 20)).await.unwrap(), big);
        // Parts past the count a row records are swept, as are unreferenced blobs.
        blobs.put_part(&id, 2, vec![big.clone()]).await.unwrap();
        let other = new_blob_id();
        blobs
            .put_part(&other, 0, vec![Bytes::from_static(b"orphan")])
            .await
            .unwrap();
        let keep: HashMap<String, usize> = [(id.clone(), 2)].into();
        let referenced = || async { Ok(keep.clone()) };
        let future = chrono::Utc::now() + chrono::TimeDelta::days(1);
        let past = chrono::Utc::now() - chrono::TimeDelta::days(1);
        assert_eq!(blobs.sweep(past, referenced).await.unwrap(), 0, "young files stay");
        // A blob being written is left alone however old its files are.
        let lease = blobs.lease(&other, false).await.unwrap();
        assert_eq!(blobs.sweep(future, referenced).await.unwrap(), 1);
        assert_eq!(&blobs.read(&other, 0, 0..6).await.unwrap()[..], b"orphan");
        drop(lease);
        assert_eq!(blobs.sweep(future, referenced).await.unwrap(), 1);
        assert!(blobs.read(&other, 0, 0..1).await.is_err());
        assert!(blobs.read(&id, 2, 0..1).await.is_err());
        assert_eq!(&blobs.read(&id, 0, 0..5).await.unwrap()[..], b"hello");
        blobs.delete_parts(&id, 1..2).await;
        assert!(blobs.read(&id, 1, 0..1).await.is_err());
        assert_eq!(&blobs.read(&id, 0, 0..5).await.unwrap()[..], b"hello");
        blobs.delete(&id, 2).await;
        assert!(blobs.read(&id, 0, 0..1).await.is_err());
    }

    #[test]
    fn versions_compare_by_normalised_tag() {
        let meta = |tag: Option<&str>, secs: i64, size: u64| object_store::ObjectMeta {
            location: Path::from("a"),
            last_modified: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
            size,
            e_tag: tag.map(str::to_owned),
            version: None,
        };
        assert!(same_version(&meta(Some("\"0x8D1\""), 5, 1), &meta(Some("0x8D1"), 4, 1)));
        assert!(!same_version(&meta(Some("0x8D2"), 5, 1), &meta(Some("0x8D1"), 5, 1)));
        assert!(!same_version(&meta(Some("t"), 5, 2), &meta(Some("t"), 5, 1)));
        assert!(same_version(&meta(None, 5, 1), &meta(None, 5, 1)));
        assert!(!same_version(&meta(None, 6, 1), &meta(Some("t"), 5, 1)));
    }

    #[test]
    fn part_names_parse() {
        assert_eq!(parse_part("abcd.3"), Some(("abcd", 3)));
        assert_eq!(parse_part("abcd.3#17"), None);
        assert_eq!(parse_part("abcd"), None);
    }

    /// An exclusive lease waits for the others (background writes of a dropped request);
    /// the sweeper keeps writers of a blob off while it deletes from it.
    #[tokio::test]
    async fn exclusive_leases_wait_for_earlier_writers() {
        let blobs = BlobStore::new(Arc::new(object_store::memory::InMemory::new()));
        let stale = blobs.lease("b1", false).await.unwrap();
        let waiting = tokio::spawn({
            let blobs = blobs.clone();
            async move { blobs.lease("b1", true).await.unwrap() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "an exclusive lease did not wait");
        assert!(!blobs.begin_sweeping("b1"), "the sweeper took a blob being written");
        drop(stale);
        let lease = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the exclusive lease never came")
            .unwrap();
        drop(lease);
        assert!(blobs.begin_sweeping("b1"));
        let writer = tokio::spawn({
            let blobs = blobs.clone();
            async move { blobs.lease("b1", false).await.unwrap() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "a writer started while the sweeper deleted");
        blobs.end_sweeping("b1");
        tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the writer never started")
            .unwrap();
    }

    /// Two processes on one blob store and one lease store: a write that has run past
    /// `after` is left alone by the other's sweep, and swept once it is given up.
    #[tokio::test]
    async fn long_writes_are_held_against_other_processes_sweeps() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let leases = Arc::new(sealstore_core::leases::Leases::memory());
        let after = std::time::Duration::from_millis(20);
        let a = BlobStore::new(store.clone()).with_shared_holds(leases.clone(), "a".into(), after);
        let b = BlobStore::new(store).with_shared_holds(leases.clone(), "b".into(), after);
        let future = chrono::Utc::now() + chrono::TimeDelta::days(1);
        let none = || async { Ok(HashMap::new()) };
        // A short write (given up before `after`) takes no hold.
        let quick = new_blob_id();
        let lease = a.lease(&quick, false).await.unwrap();
        a.put_part(&quick, 0, vec![Bytes::from_static(b"q")]).await.unwrap();
        drop(lease);
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        assert_eq!(leases.holder(&hold_name(&quick)).await.unwrap(), None);
        assert_eq!(b.sweep(future, none).await.unwrap(), 1);
        // A long one is held until it ends.
        let long = new_blob_id();
        let lease = a.lease(&long, false).await.unwrap();
        a.put_part(&long, 0, vec![Bytes::from_static(b"part 0")]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(leases.holder(&hold_name(&long)).await.unwrap().as_deref(), Some("a"));
        assert_eq!(
            b.sweep(future, none).await.unwrap(),
            0,
            "another process swept a held write"
        );
        assert_eq!(&a.read(&long, 0, 0..6).await.unwrap()[..], b"part 0");
        drop(lease);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while leases.holder(&hold_name(&long)).await.unwrap().is_some() {
            assert!(tokio::time::Instant::now() < deadline, "the hold was not released");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(b.sweep(future, none).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn in_memory_backend() {
        conformance(BlobStore::new(Arc::new(object_store::memory::InMemory::new()))).await;
    }

    #[tokio::test]
    async fn local_filesystem_backend() {
        let dir = std::env::temp_dir().join(format!("sealstore-blobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir).unwrap());
        let blobs = BlobStore::local(store, dir.clone());
        conformance(blobs.clone()).await;
        // Every fan-out directory written under was recorded as durable.
        let root = blobs.local_root.as_ref().unwrap();
        assert!(!root.durable_dirs.lock().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
