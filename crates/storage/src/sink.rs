//! Encrypts a plaintext stream into sealed segments and stores them.
//!
//! Segments are grouped into blob parts of at most `PART_SEGMENTS` (about 8 MiB). A full
//! part is written and fsynced by a background task while the next one fills, so
//! writeback overlaps with the upload and only the last part's fsync is on the critical
//! path. An object that fits in one segment is not written to the blob store at all: it
//! is returned sealed, to be stored inline in its metadata row (committed, and made
//! durable, by the same transaction; no file create, rename or fsync per small object).

use super::blobs::{BlobLease, BlobStore};
use super::error::{StorageError, StorageResult};
use super::hashing::{HashPipeline, Hashes};
use super::segment::{ObjectCipher, SEGMENT, TAG};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Segments per blob part: 8 MiB of plaintext.
pub const PART_SEGMENTS: u64 = 128;
/// Parts being written and fsynced at once; bounds memory to about
/// `(MAX_IN_FLIGHT + 1) × 8 MiB` per upload.
const MAX_IN_FLIGHT: usize = 2;

/// Where a finished object's sealed segments are.
pub enum Stored {
    /// Written to the blob store: segments per part, in order.
    Parts(Vec<u64>),
    /// One sealed segment, to be kept in the metadata row.
    Inline(Bytes),
}

pub struct SegmentSink {
    cipher: Arc<ObjectCipher>,
    blobs: BlobStore,
    blob_id: String,
    /// Keeps the sweeper off the blob; every background part write holds it too, so it
    /// lasts until the last of them ends even if this sink is dropped mid-upload.
    lease: Arc<BlobLease>,
    /// Part number of the first part this sink writes (resumable chunks append parts).
    first_part: usize,
    /// Segment counts of the parts handed to the blob store so far.
    parts: Vec<u64>,
    /// Sealed segments of the part being filled.
    current: Vec<Bytes>,
    in_flight: VecDeque<JoinHandle<StorageResult<()>>>,
    pending: Vec<u8>,
    next_index: u32,
    hashes: HashPipeline,
}

impl SegmentSink {
    pub fn new(
        cipher: Arc<ObjectCipher>,
        blobs: BlobStore,
        lease: Arc<BlobLease>,
        blob_id: String,
        first_part: usize,
        first_index: u32,
        hashes: Hashes,
    ) -> Self {
        Self {
            cipher,
            blobs,
            lease,
            blob_id,
            first_part,
            parts: vec![],
            current: vec![],
            in_flight: VecDeque::new(),
            pending: Vec::with_capacity(SEGMENT + TAG),
            next_index: first_index,
            hashes: HashPipeline::new(hashes),
        }
    }

    /// Full segments are never the last one (the last holds the remainder, possibly
    /// empty), so each is sealed as soon as it is complete.
    pub async fn write(&mut self, bytes: Bytes) -> StorageResult<()> {
        let mut data = &bytes[..];
        self.hashes
            .update(bytes.clone())
            .await
            .map_err(StorageError::internal)?;
        while !data.is_empty() {
            let take = (SEGMENT - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == SEGMENT {
                self.seal_pending(false).await?;
            }
        }
        Ok(())
    }

    async fn seal_pending(&mut self, last: bool) -> StorageResult<()> {
        let mut seg = std::mem::replace(&mut self.pending, Vec::with_capacity(SEGMENT + TAG));
        self.cipher.seal_segment(self.next_index, last, &mut seg);
        self.next_index = self
            .next_index
            .checked_add(1)
            .ok_or_else(|| StorageError::PayloadTooLarge {
                message: "The object is too large.".into(),
            })?;
        self.current.push(Bytes::from(seg));
        if self.current.len() as u64 == PART_SEGMENTS {
            self.ship_part().await?;
        }
        Ok(())
    }

    /// Hands the current part to a background write-and-fsync task, first waiting for
    /// the oldest one if too many are in flight.
    async fn ship_part(&mut self) -> StorageResult<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(task) = self.in_flight.pop_front() {
                task.await.map_err(StorageError::internal)??;
            }
        }
        let segments = std::mem::take(&mut self.current);
        let part = self.first_part + self.parts.len();
        self.parts.push(segments.len() as u64);
        let (blobs, id, lease) = (self.blobs.clone(), self.blob_id.clone(), self.lease.clone());
        self.in_flight.push_back(tokio::spawn(async move {
            let written = blobs.put_part(&id, part, segments).await;
            drop(lease);
            written
        }));
        Ok(())
    }

    /// Waits until every shipped part is durable.
    async fn drain(&mut self) -> StorageResult<()> {
        let mut result = Ok(());
        while let Some(task) = self.in_flight.pop_front() {
            let r = task.await.map_err(StorageError::internal).and_then(|r| r);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Ends a part of an object (a resumable chunk): only whole segments may be pending.
    /// Returns the segment counts of the parts written, all of them durable.
    pub async fn finish_chunk(mut self) -> StorageResult<(Vec<u64>, Hashes)> {
        if !self.pending.is_empty() {
            self.abort().await;
            return Err(StorageError::internal("a non-final chunk must hold whole segments"));
        }
        self.finish_parts().await?;
        let hashes = self.settle().await?;
        Ok((self.parts, hashes))
    }

    /// Ends the object: the remainder becomes the last segment. An object of one segment
    /// with fewer than `inline_below` bytes comes back sealed instead of being written.
    pub async fn finish_object(mut self, inline_below: usize) -> StorageResult<(Stored, Hashes)> {
        let last_len = self.pending.len();
        if let Err(e) = self.seal_pending(true).await {
            self.abort().await;
            return Err(e);
        }
        if self.parts.is_empty() && self.current.len() == 1 && last_len < inline_below {
            let hashes = self.settle().await?;
            let segment = self.current.pop().unwrap_or_default();
            return Ok((Stored::Inline(segment), hashes));
        }
        self.finish_parts().await?;
        let hashes = self.settle().await?;
        Ok((Stored::Parts(self.parts), hashes))
    }

    /// The final hashes; if the hash worker failed, the parts written are removed.
    async fn settle(&mut self) -> StorageResult<Hashes> {
        let hashes = std::mem::replace(&mut self.hashes, HashPipeline::new(Hashes::default()));
        match hashes.settle().await {
            Ok(h) => Ok(h),
            Err(e) => {
                self.remove_written().await;
                Err(StorageError::internal(e))
            }
        }
    }

    async fn finish_parts(&mut self) -> StorageResult<()> {
        let shipped = self.ship_part().await;
        let drained = self.drain().await;
        if let Err(e) = shipped.and(drained) {
            self.remove_written().await;
            return Err(e);
        }
        Ok(())
    }

    /// Stops: parts already written by this sink are removed (earlier chunks' parts of a
    /// resumable upload stay).
    pub async fn abort(mut self) {
        let _ = self.drain().await;
        self.remove_written().await;
    }

    async fn remove_written(&mut self) {
        let range = self.first_part..self.first_part + self.parts.len();
        self.blobs.delete_parts(&self.blob_id, range).await;
        self.parts.clear();
    }
}
