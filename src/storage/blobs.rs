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
}

struct LocalRoot {
    path: std::path::PathBuf,
    /// Fan-out directories whose entry in their parent is known durable: a directory
    /// needs its parent fsynced once after creation, not once per blob.
    durable_dirs: Mutex<HashSet<std::path::PathBuf>>,
}

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
        }
    }

    /// A `LocalFileSystem` store rooted at `root`: parts are fsynced after they are written.
    pub fn local(store: Arc<dyn ObjectStore>, root: std::path::PathBuf) -> Self {
        Self {
            store,
            local_root: Some(Arc::new(LocalRoot {
                path: root,
                durable_dirs: Mutex::new(HashSet::new()),
            })),
        }
    }

    /// Writes one part in a single `put` and makes it durable: after this returns, the
    /// part survives a crash or power loss, so a metadata row may reference it.
    pub async fn put_part(&self, blob_id: &str, part: usize, segments: Vec<Bytes>) -> StorageResult<()> {
        let path = part_path(blob_id, part);
        self.store.put(&path, segments.into_iter().collect()).await?;
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
    /// their row records (`referenced` maps blob id → parts), and stray files. Returns
    /// how many files were removed.
    pub async fn sweep(
        &self,
        referenced: &HashMap<String, usize>,
        older_than: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<usize> {
        let mut listing = self.store.list(None);
        let mut orphans = vec![];
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let keep = meta
                .location
                .filename()
                .and_then(parse_part)
                .is_some_and(|(id, part)| referenced.get(id).is_some_and(|&n| part < n));
            if !keep && meta.last_modified < older_than {
                orphans.push(meta.location);
            }
        }
        for p in &orphans {
            let _ = self.store.delete(p).await;
        }
        Ok(orphans.len())
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
        let future = chrono::Utc::now() + chrono::TimeDelta::days(1);
        assert_eq!(
            blobs
                .sweep(&keep, chrono::Utc::now() - chrono::TimeDelta::days(1))
                .await
                .unwrap(),
            0
        );
        assert_eq!(blobs.sweep(&keep, future).await.unwrap(), 2);
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
    fn part_names_parse() {
        assert_eq!(parse_part("abcd.3"), Some(("abcd", 3)));
        assert_eq!(parse_part("abcd.3#17"), None);
        assert_eq!(parse_part("abcd"), None);
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
