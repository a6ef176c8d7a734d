//! Blob I/O through `object_store`. Paths are `<random blob id>.<part>`: they never
//! contain bucket or object names.

use super::error::StorageResult;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};
use std::collections::HashSet;
use std::sync::Arc;

/// Upload buffer per part request; bounds memory per upload stream.
const CHUNK: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
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

/// Streams one part to the blob store. Parts smaller than one upload chunk (most
/// objects) are written with a single `put`; larger ones switch to a multipart upload
/// so memory stays bounded.
pub struct PartWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    state: WriterState,
}

enum WriterState {
    /// Segments held until the part is big enough to need a multipart upload.
    Buffered(Vec<Bytes>, usize),
    Streaming(WriteMultipart),
}

impl PartWriter {
    /// Takes ownership of a sealed segment: no copy on the way to the store.
    pub async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        match &mut self.state {
            WriterState::Buffered(parts, len) if *len + data.len() <= CHUNK => {
                *len += data.len();
                parts.push(data);
                Ok(())
            }
            WriterState::Buffered(parts, _) => {
                let upload = self.store.put_multipart(&self.path).await?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, CHUNK);
                for p in std::mem::take(parts) {
                    w.put(p);
                }
                w.wait_for_capacity(2).await?;
                w.put(data);
                self.state = WriterState::Streaming(w);
                Ok(())
            }
            WriterState::Streaming(w) => {
                w.wait_for_capacity(2).await?;
                w.put(data);
                Ok(())
            }
        }
    }

    pub async fn finish(self) -> StorageResult<()> {
        match self.state {
            WriterState::Buffered(parts, _) => {
                self.store.put(&self.path, parts.into_iter().collect()).await?;
            }
            WriterState::Streaming(w) => {
                w.finish().await?;
            }
        }
        Ok(())
    }

    pub async fn abort(self) {
        if let WriterState::Streaming(w) = self.state {
            let _ = w.abort().await;
        }
    }
}

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    pub async fn begin_part(&self, blob_id: &str, part: usize) -> StorageResult<PartWriter> {
        Ok(PartWriter {
            store: self.store.clone(),
            path: part_path(blob_id, part),
            state: WriterState::Buffered(Vec::new(), 0),
        })
    }

    pub async fn read(&self, blob_id: &str, part: usize, range: std::ops::Range<u64>) -> StorageResult<Bytes> {
        Ok(self.store.get_range(&part_path(blob_id, part), range).await?)
    }

    /// Deletes every part of a blob; missing parts are fine.
    pub async fn delete(&self, blob_id: &str, parts: usize) {
        for p in 0..parts.max(1) {
            match self.store.delete(&part_path(blob_id, p)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(blob = blob_id, error = %e, "could not delete blob part; the sweeper will retry")
                }
            }
        }
    }

    /// Removes blobs last written before `older_than` that no metadata row or session
    /// references (crash leftovers). Returns how many parts were removed.
    pub async fn sweep(
        &self,
        referenced: &HashSet<String>,
        older_than: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<usize> {
        let mut listing = self.store.list(None);
        let mut orphans = vec![];
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let id = meta.location.filename().and_then(|f| f.split('.').next()).unwrap_or("");
            if !referenced.contains(id) && meta.last_modified < older_than {
                orphans.push(meta.location);
            }
        }
        for p in &orphans {
            let _ = self.store.delete(p).await;
        }
        Ok(orphans.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conformance suite every blob backend must pass.
    async fn conformance(store: Arc<dyn ObjectStore>) {
        let blobs = BlobStore::new(store);
        let id = new_blob_id();
        assert_eq!(id.len(), 32);
        let mut w = blobs.begin_part(&id, 0).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        w.finish().await.unwrap();
        assert_eq!(&blobs.read(&id, 0, 6..11).await.unwrap()[..], b"world");
        // A part larger than one upload chunk streams through a multipart upload.
        let big = Bytes::from(vec![7u8; CHUNK + 1000]);
        let mut w = blobs.begin_part(&id, 1).await.unwrap();
        w.write(big.slice(..CHUNK / 2)).await.unwrap();
        w.write(big.slice(CHUNK / 2..)).await.unwrap();
        w.finish().await.unwrap();
        assert_eq!(blobs.read(&id, 1, 0..(CHUNK as u64 + 1000)).await.unwrap(), big);
        // An aborted part leaves nothing readable.
        let mut w = blobs.begin_part(&id, 2).await.unwrap();
        w.write(big.clone()).await.unwrap();
        w.write(big.clone()).await.unwrap();
        w.abort().await;
        assert!(blobs.read(&id, 2, 0..1).await.is_err());
        // The sweeper keeps referenced blobs and removes the others.
        let other = new_blob_id();
        let mut w = blobs.begin_part(&other, 0).await.unwrap();
        w.write(Bytes::from_static(b"orphan")).await.unwrap();
        w.finish().await.unwrap();
        let keep: HashSet<String> = [id.clone()].into();
        let future = chrono::Utc::now() + chrono::TimeDelta::days(1);
        assert_eq!(blobs.sweep(&keep, future).await.unwrap(), 1);
        assert!(blobs.read(&other, 0, 0..1).await.is_err());
        assert_eq!(&blobs.read(&id, 0, 0..5).await.unwrap()[..], b"hello");
        blobs.delete(&id, 2).await;
        assert!(blobs.read(&id, 0, 0..1).await.is_err());
    }

    #[tokio::test]
    async fn in_memory_backend() {
        conformance(Arc::new(object_store::memory::InMemory::new())).await;
    }

    #[tokio::test]
    async fn local_filesystem_backend() {
        let dir = std::env::temp_dir().join(format!("sealstore-blobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        conformance(Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(&dir).unwrap(),
        ))
        .await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
