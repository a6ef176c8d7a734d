//! Running CRC32C and MD5 of an upload's plaintext. The state serializes, so a
//! resumable session survives a restart without re-reading what was uploaded.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::Digest;
use md5::digest::common::hazmat::SerializableState;

pub struct Hashes {
    crc: u32,
    md5: md5::Md5,
    len: u64,
}

impl Default for Hashes {
    fn default() -> Self {
        Self {
            crc: 0,
            md5: md5::Md5::new(),
            len: 0,
        }
    }
}

impl Hashes {
    pub fn update(&mut self, data: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.md5.update(data);
        self.len += data.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn crc32c(&self) -> u32 {
        self.crc
    }

    pub fn finish(self) -> (u32, [u8; 16], u64) {
        (self.crc, self.md5.finalize().into(), self.len)
    }

    /// crc(4) ‖ len(8) ‖ md5 state.
    pub fn to_state(&self) -> Vec<u8> {
        let mut v = self.crc.to_be_bytes().to_vec();
        v.extend_from_slice(&self.len.to_be_bytes());
        v.extend_from_slice(&self.md5.serialize());
        v
    }

    pub fn from_state(b: &[u8]) -> Option<Self> {
        if b.len() < 12 {
            return None;
        }
        let crc = u32::from_be_bytes(b[..4].try_into().ok()?);
        let len = u64::from_be_bytes(b[4..12].try_into().ok()?);
        let md5 = md5::Md5::deserialize(b[12..].try_into().ok()?).ok()?;
        Some(Self { crc, md5, len })
    }
}

/// Above this many bytes, an upload's MD5 moves to its own thread: MD5 is the slowest
/// step on the write path (about 6× AES-GCM), so one stream then runs at MD5 speed
/// while encryption and I/O proceed on the other core.
const OFFLOAD_AFTER: u64 = 1 << 20;

/// Bytes queued for the MD5 worker at most. Deep enough that the worker (the slowest
/// stage) keeps hashing through the encrypting side's pauses (a blob part's write and
/// fsync), small enough to bound memory per upload.
const MD5_QUEUE_BYTES: usize = 8 << 20;

struct Md5Worker {
    tx: tokio::sync::mpsc::UnboundedSender<bytes::Bytes>,
    /// One permit per queued byte: the queue is bounded in bytes, not chunks.
    room: std::sync::Arc<tokio::sync::Semaphore>,
    done: tokio::sync::oneshot::Receiver<md5::Md5>,
}

/// Hashes an upload as it streams: CRC32C inline, MD5 inline for small objects and on
/// a worker thread for large ones.
pub struct HashPipeline {
    inline: Hashes,
    worker: Option<Md5Worker>,
}

#[derive(Debug, thiserror::Error)]
#[error("the MD5 worker stopped unexpectedly")]
pub struct HashWorkerGone;

impl HashPipeline {
    pub fn new(h: Hashes) -> Self {
        Self {
            inline: h,
            worker: None,
        }
    }

    pub async fn update(&mut self, data: bytes::Bytes) -> Result<(), HashWorkerGone> {
        self.inline.crc = crc32c::crc32c_append(self.inline.crc, &data);
        self.inline.len += data.len() as u64;
        if self.worker.is_none() && self.inline.len > OFFLOAD_AFTER {
            let md5 = std::mem::replace(&mut self.inline.md5, md5::Md5::new());
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
            let room = std::sync::Arc::new(tokio::sync::Semaphore::new(MD5_QUEUE_BYTES));
            let (done_tx, done) = tokio::sync::oneshot::channel();
            let worker_room = room.clone();
            let spawned = std::thread::Builder::new().name("md5".into()).spawn(move || {
                let mut md5 = md5;
                while let Some(b) = rx.blocking_recv() {
                    md5.update(&b);
                    worker_room.add_permits(b.len().min(MD5_QUEUE_BYTES));
                }
                let _ = done_tx.send(md5);
            });
            if spawned.is_err() {
                return Err(HashWorkerGone);
            }
            self.worker = Some(Md5Worker { tx, room, done });
        }
        match &self.worker {
            Some(w) => {
                // A chunk larger than the whole queue waits for an empty queue.
                let need = u32::try_from(data.len().min(MD5_QUEUE_BYTES)).map_err(|_| HashWorkerGone)?;
                w.room.acquire_many(need).await.map_err(|_| HashWorkerGone)?.forget();
                w.tx.send(data).map_err(|_| HashWorkerGone)
            }
            None => {
                self.inline.md5.update(&data);
                Ok(())
            }
        }
    }

    /// Waits for the MD5 worker, if any, and returns the complete state.
    pub async fn settle(mut self) -> Result<Hashes, HashWorkerGone> {
        if let Some(w) = self.worker.take() {
            drop(w.tx);
            self.inline.md5 = w.done.await.map_err(|_| HashWorkerGone)?;
        }
        Ok(self.inline)
    }
}

/// GCS encodes CRC32C as base64 of the big-endian u32.
pub fn crc32c_b64(crc: u32) -> String {
    STANDARD.encode(crc.to_be_bytes())
}

pub fn md5_b64(md5: &[u8; 16]) -> String {
    STANDARD.encode(md5)
}

pub fn parse_crc32c_b64(s: &str) -> Option<u32> {
    let b = STANDARD.decode(s.trim()).ok()?;
    Some(u32::from_be_bytes(b.as_slice().try_into().ok()?))
}

pub fn parse_md5_b64(s: &str) -> Option<[u8; 16]> {
    STANDARD.decode(s.trim()).ok()?.as_slice().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipeline_matches_inline_hashing_across_the_offload() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        let mut p = HashPipeline::new(Hashes::default());
        for c in data.chunks(70_001) {
            p.update(bytes::Bytes::copy_from_slice(c)).await.unwrap();
        }
        let mut inline = Hashes::default();
        inline.update(&data);
        assert_eq!(p.settle().await.unwrap().finish(), inline.finish());
    }

    #[test]
    fn state_round_trips_midway() {
        let mut a = Hashes::default();
        a.update(&[1u8; 262_144]);
        let mut b = Hashes::from_state(&a.to_state()).unwrap();
        a.update(b"tail");
        b.update(b"tail");
        assert_eq!(a.finish(), b.finish());
        let mut h = Hashes::default();
        h.update(b"hello world");
        let (crc, md5, len) = h.finish();
        assert_eq!(len, 11);
        assert_eq!(crc32c_b64(crc), "yZRlqg==");
        assert_eq!(md5_b64(&md5), "XrY7u+Ae7tCTyyK7j1rNww==");
        assert_eq!(parse_crc32c_b64("yZRlqg=="), Some(crc));
    }
}
