//! Resumable uploads. Each chunk becomes one blob part of whole segments (chunks are
//! multiples of 256 KiB), and the session (wrapped DEK, parts, running hash state) is
//! persisted after every chunk, so an upload survives a server restart.

use super::csek::CustomerKey;
use super::engine::{ObjectHashes, Storage, WriteSpec};
use super::error::{StorageError, StorageResult};
use super::hashing::Hashes;
use super::model::{ObjectRecord, UploadSession};
use super::sink::{SegmentSink, Stored};
use bytes::Bytes;
use futures::{Stream, StreamExt};

/// Non-final chunks must be multiples of this.
pub const CHUNK_GRANULARITY: u64 = 256 * 1024;

/// Which bytes of the object a chunk PUT carries (the api layer parses it from the
/// request's `Content-Range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkRange {
    /// `bytes S-E/T` or `bytes S-E/*`.
    Data { start: u64, end: u64, total: Option<u64> },
    /// `bytes S-*/*` or `bytes S-*/T`: the rest of the object in this one request, of a
    /// length known only at the end of the body (Node's single-request upload).
    Rest { start: u64, total: Option<u64> },
    /// `bytes */T` (no data; the total is now known) or `bytes */*` (a status query).
    Query { total: Option<u64> },
}

#[derive(Debug)]
pub enum ChunkOutcome {
    /// 308: bytes `0..persisted` are stored.
    Incomplete {
        persisted: u64,
    },
    Complete(Box<ObjectRecord>, ObjectHashes),
}

/// Releases the per-session write lock on drop.
struct SessionGuard<'a> {
    storage: &'a Storage,
    id: String,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.storage
            .active_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

fn gone(id: &str) -> StorageError {
    StorageError::Gone(format!("The upload session {id} does not exist or has expired."))
}

/// Reads a body to its end without keeping it, returning its length.
async fn drain<S, E>(body: S) -> StorageResult<u64>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<StorageError>,
{
    futures::pin_mut!(body);
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        n = n.saturating_add(chunk.map_err(Into::into)?.len() as u64);
    }
    Ok(n)
}

impl Storage {
    pub async fn start_resumable(&self, spec: WriteSpec, total: Option<u64>) -> StorageResult<String> {
        let bucket = self.prepare_write(&spec).await?;
        let (envelope, _) = self.new_envelope(&bucket, spec.kms_key_name.as_deref(), spec.csek.as_deref())?;
        let session = UploadSession {
            id: super::blobs::new_blob_id(),
            bucket: spec.bucket,
            name: spec.name,
            meta: spec.meta,
            preconditions: spec.preconditions,
            total,
            expected_crc32c: spec.expected_crc32c,
            expected_md5: spec.expected_md5,
            envelope,
            hash_state: Hashes::default().to_state(),
            persisted: 0,
            created: self.clock.now(),
            completed_generation: None,
            protection: spec.protection.clone(),
            may_replace: spec.may_replace,
            storage_class: spec.storage_class.clone(),
        };
        let id = session.id.clone();
        let s = session.clone();
        self.meta.put_session(&s).await?;
        Ok(id)
    }

    fn lock_session(&self, id: &str) -> StorageResult<SessionGuard<'_>> {
        let mut active = self.active_sessions.lock().unwrap_or_else(|e| e.into_inner());
        if !active.insert(id.to_owned()) {
            return Err(StorageError::Conflict(format!(
                "Another request is writing to upload session {id}."
            )));
        }
        Ok(SessionGuard {
            storage: self,
            id: id.to_owned(),
        })
    }

    async fn session(&self, id: &str) -> StorageResult<UploadSession> {
        let i = id.to_owned();
        self.meta.get_session(&i).await?.ok_or_else(|| gone(id))
    }

    async fn completed(
        &self,
        s: &UploadSession,
        generation: i64,
        csek: Option<&CustomerKey>,
    ) -> StorageResult<ChunkOutcome> {
        let rec = self
            .get_object(&s.bucket, &s.name, Some(generation), &Default::default())
            .await?;
        let opened = self.open(rec, csek)?;
        Ok(ChunkOutcome::Complete(Box::new(opened.record.clone()), opened.hashes))
    }

    /// Handles one PUT to a session: a data chunk, or a status query.
    pub async fn put_chunk<S, E>(
        &self,
        id: &str,
        range: ChunkRange,
        final_crc32c: Option<u32>,
        final_md5: Option<[u8; 16]>,
        csek: Option<&CustomerKey>,
        body: S,
    ) -> StorageResult<ChunkOutcome>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<StorageError>,
    {
        let _guard = self.lock_session(id)?;
        let mut s = self.session(id).await?;
        if let Some(g) = s.completed_generation {
            return self.completed(&s, g, csek).await;
        }
        // `end` is exclusive; `None` for a `Rest` chunk until its body has ended.
        let (start, end, total) = match range {
            ChunkRange::Query { total: None } => return Ok(ChunkOutcome::Incomplete { persisted: s.persisted }),
            ChunkRange::Query { total: Some(t) } => {
                if t != s.persisted {
                    return Err(StorageError::invalid(format!(
                        "The upload has {} bytes, but the request says the total is {t}.",
                        s.persisted
                    )));
                }
                (s.persisted, Some(s.persisted), Some(t))
            }
            ChunkRange::Data { start, end, total } => {
                let end = end
                    .checked_add(1)
                    .ok_or_else(|| StorageError::invalid("The Content-Range end is too large."))?;
                (start, Some(end), total)
            }
            ChunkRange::Rest { start, total } => (start, None, total),
        };
        if let (Some(t), Some(declared)) = (total, s.total)
            && t != declared
        {
            return Err(StorageError::invalid(format!(
                "The total size {t} differs from x-upload-content-length {declared}."
            )));
        }
        if start > s.persisted {
            return Err(StorageError::invalid(format!(
                "The chunk starts at byte {start}, but only {} bytes have been persisted.",
                s.persisted
            )));
        }
        // A chunk is final when it reaches the declared total, or is the rest of the body.
        let is_final = end.is_none() || total.is_some_and(|t| end == Some(t));
        if let Some(e) = end
            && e < s.persisted
            && is_final
        {
            return Err(StorageError::invalid(format!(
                "The upload declares a total of {e} bytes, but {} bytes are already stored.",
                s.persisted
            )));
        }
        if let Some(e) = end
            && e <= s.persisted
            && !is_final
        {
            // Everything in this chunk is stored already: read it, change nothing. The
            // persisted offset never moves backwards.
            let received = drain(body).await?;
            if received != e - start {
                return Err(StorageError::invalid(format!(
                    "The request body has {received} bytes but its Content-Range covers {}.",
                    e - start
                )));
            }
            return Ok(ChunkOutcome::Incomplete { persisted: s.persisted });
        }
        // Bytes the client re-sends that are already stored are skipped.
        let mut skip = s.persisted - start;
        if let Some(e) = end {
            let new_bytes = e - s.persisted;
            if !is_final && new_bytes % CHUNK_GRANULARITY != 0 {
                return Err(StorageError::invalid(format!(
                    "Invalid request.  The number of bytes uploaded is required to be equal or greater than {CHUNK_GRANULARITY}, except for the final request (it's recommended to be the exact multiple of {CHUNK_GRANULARITY}).  The received request contained {new_bytes} bytes, which does not meet this requirement."
                )));
            }
        }
        let cipher = self.unwrap_dek(&s.envelope, csek)?;
        let hashes = Hashes::from_state(&s.hash_state).ok_or_else(|| StorageError::internal("bad hash state"))?;
        let first_segment: u64 = s.envelope.parts.iter().sum();
        let part_no = s.envelope.parts.len();
        // Exclusive: background part writes of an earlier attempt at this chunk (its
        // request dropped) must have ended before this one writes the same part paths.
        // Held until the session row (or the object) has committed.
        let lease = self.blobs.lease(&s.envelope.blob_id, true).await?;
        let mut sink = SegmentSink::new(
            cipher.clone(),
            self.blobs.clone(),
            lease.clone(),
            s.envelope.blob_id.clone(),
            part_no,
            u32::try_from(first_segment).map_err(StorageError::internal)?,
            hashes,
        );
        let limit = match (end, total) {
            (Some(e), _) => Some(e - start),
            (None, Some(t)) => Some(t - start),
            (None, None) => None,
        };
        let mut received = 0u64;
        futures::pin_mut!(body);
        while let Some(chunk) = body.next().await {
            let data = match chunk {
                Ok(d) => d,
                Err(e) => {
                    sink.abort().await;
                    return Err(e.into());
                }
            };
            received = received.saturating_add(data.len() as u64);
            if limit.is_some_and(|l| received > l) {
                sink.abort().await;
                return Err(StorageError::invalid(
                    "The request body is longer than its Content-Range.",
                ));
            }
            let k = skip.min(data.len() as u64) as usize;
            skip -= k as u64;
            if let Err(e) = sink.write(data.slice(k..)).await {
                sink.abort().await;
                return Err(e);
            }
        }
        let end = match end {
            Some(e) => e,
            None => start + received,
        };
        if received != end - start || limit.is_some_and(|l| received != l) || end < s.persisted {
            sink.abort().await;
            return Err(StorageError::invalid(format!(
                "The request body has {received} bytes, which does not match its Content-Range (from byte {start}{}; {} bytes stored).",
                total.map(|t| format!(", total {t}")).unwrap_or_default(),
                s.persisted
            )));
        }
        if !is_final {
            let (parts, hashes) = sink.finish_chunk().await?;
            s.envelope.parts.extend(parts);
            s.hash_state = hashes.to_state();
            s.persisted = end;
            let sess = s.clone();
            self.meta.put_session(&sess).await?;
            return Ok(ChunkOutcome::Incomplete { persisted: s.persisted });
        }
        // A session's earlier chunks are files already, so its data never goes inline.
        let (Stored::Parts(parts), hashes) = sink.finish_object(0).await? else {
            return Err(StorageError::internal("a resumable upload produced inline data"));
        };
        s.envelope.parts.extend(parts);
        let (crc, md5, size) = hashes.finish();
        let spec = WriteSpec {
            bucket: s.bucket.clone(),
            name: s.name.clone(),
            meta: s.meta.clone(),
            storage_class: s.storage_class.clone(),
            preconditions: s.preconditions,
            expected_crc32c: s.expected_crc32c,
            expected_md5: s.expected_md5,
            kms_key_name: None,
            component_count: None,
            csek: None,
            protection: s.protection.clone(),
            force_google_managed: false,
            may_replace: s.may_replace,
            multipart_etag: None,
        };
        // Both the initiate body's checksums and the last chunk's x-goog-hash must hold.
        let final_spec = WriteSpec {
            expected_crc32c: final_crc32c,
            expected_md5: final_md5,
            ..spec.clone()
        };
        if let Err(e) =
            Self::check_expected(&spec, crc, &md5).and_then(|()| Self::check_expected(&final_spec, crc, &md5))
        {
            // The session is unusable after a checksum failure: nothing is stored.
            self.cancel_resumable_inner(&s).await?;
            return Err(e);
        }
        let bucket = self.get_bucket(&s.bucket).await?;
        s.envelope.sealed_hashes = cipher.seal_hashes(crc, Some(md5));
        let record = self.new_record(&spec, &bucket, s.envelope.clone(), size, None).await?;
        let record = match self.commit(&bucket, record, spec.preconditions, s.may_replace).await {
            Ok(r) => r,
            Err(e) => {
                let id = s.id.clone();
                self.meta.delete_session(&id).await?;
                return Err(e);
            }
        };
        s.completed_generation = Some(record.generation);
        s.persisted = size;
        let sess = s.clone();
        self.meta.put_session(&sess).await?;
        Ok(ChunkOutcome::Complete(
            Box::new(record),
            ObjectHashes {
                crc32c: crc,
                md5: Some(md5),
            },
        ))
    }

    async fn cancel_resumable_inner(&self, s: &UploadSession) -> StorageResult<()> {
        self.discard_blob(&s.envelope).await;
        let id = s.id.clone();
        self.meta.delete_session(&id).await
    }

    /// The bucket and object name an upload session writes.
    pub async fn session_target(&self, id: &str) -> StorageResult<(String, String)> {
        let s = self.session(id).await?;
        Ok((s.bucket, s.name))
    }

    /// DELETE on a session: its parts are removed and the session is gone.
    pub async fn cancel_resumable(&self, id: &str) -> StorageResult<()> {
        let _guard = self.lock_session(id)?;
        let s = self.session(id).await?;
        if s.completed_generation.is_some() {
            return Err(StorageError::invalid("The upload already completed."));
        }
        self.cancel_resumable_inner(&s).await
    }
}
