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

fn part_path(blob_id: &str, part: usize) -> Path {
    Path::from(format!("{blob_id}.{part}"))
}

/// Streams one part to the blob store.
pub struct PartWriter {
    upload: WriteMultipart,
}

impl PartWriter {
    pub async fn write(&mut self, data: &[u8]) -> StorageResult<()> {
        self.upload.wait_for_capacity(2).await?;
        self.upload.write(data);
        Ok(())
    }

    pub async fn finish(self) -> StorageResult<()> {
        self.upload.finish().await?;
        Ok(())
    }

    pub async fn abort(self) {
        let _ = self.upload.abort().await;
    }
}

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    pub async fn begin_part(&self, blob_id: &str, part: usize) -> StorageResult<PartWriter> {
        let upload = self.store.put_multipart(&part_path(blob_id, part)).await?;
        Ok(PartWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, CHUNK),
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
            let name = meta.location.to_string();
            let id = name.split('.').next().unwrap_or("");
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
