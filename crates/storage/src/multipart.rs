//! Multipart uploads (the XML API's): parts are encrypted like every other object byte,
//! each under its own data key wrapped by the key the upload names (or the bucket's
//! default). Completion streams the parts, in order, into one new generation under a
//! fresh data key: its CRC32C is combined from the parts' and checked against the data,
//! its ETag is S3's `md5(part md5s)-N`. Parts of uploads never completed are removed by
//! `abort`, by the sweep after a documented age, or by a lifecycle rule.

use super::csek::CustomerKey;
use super::engine::{ObjectHashes, Storage, WriteSpec};
use super::error::{StorageError, StorageResult};
use super::model::{Envelope, KeyKind, ObjectMeta, ObjectRecord, Preconditions, WriteProtection};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use md5::Digest;
use serde::{Deserialize, Serialize};

/// S3's limits: part numbers 1–10,000, parts of 5 MiB or more except the last.
pub const MAX_PART_NUMBER: u32 = 10_000;
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultipartUpload {
    pub id: String,
    pub bucket: String,
    pub name: String,
    pub meta: ObjectMeta,
    pub storage_class: Option<String>,
    pub kms_key_name: Option<String>,
    /// SSE-C: the SHA-256 of the key every part (and completion) must present.
    pub csek_sha256: Option<String>,
    pub force_google_managed: bool,
    pub protection: WriteProtection,
    pub preconditions: Preconditions,
    pub initiated: DateTime<Utc>,
    /// The principal that started it (ListMultipartUploads' Initiator).
    pub initiator: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub upload_id: String,
    pub part_number: u32,
    pub size: u64,
    pub crc32c: u32,
    #[serde(with = "hex16")]
    pub md5: [u8; 16],
    pub last_modified: DateTime<Utc>,
    pub envelope: Envelope,
}

mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let v: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        v.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
            .ok_or_else(|| serde::de::Error::custom("bad md5"))
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Part {
    /// The part's ETag (its MD5 in hex, unquoted).
    pub fn etag(&self) -> String {
        hex(&self.md5)
    }
}

/// A part as CompleteMultipartUpload names it.
#[derive(Debug, Clone)]
pub struct CompletedPart {
    pub number: u32,
    pub etag: String,
    /// The part's CRC32C, if the client asserts it.
    pub crc32c: Option<u32>,
}

fn bad(reason: &'static str, message: impl Into<String>) -> StorageError {
    StorageError::BadRequest {
        reason,
        message: message.into(),
    }
}

fn no_upload(id: &str) -> StorageError {
    StorageError::Gone(format!(
        "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed: {id}"
    ))
}

impl Storage {
    /// Starts an upload: the name, bucket, key and preconditions are checked now, so a
    /// doomed upload fails before any part is sent.
    pub async fn create_multipart(&self, spec: WriteSpec, initiator: &str) -> StorageResult<MultipartUpload> {
        let bucket = self.prepare_write(&spec).await?;
        // The key must be usable now (location, enforcement, the agent's permission).
        if !spec.force_google_managed {
            self.new_envelope(&bucket, spec.kms_key_name.as_deref(), spec.csek.as_deref())?;
        }
        let u = MultipartUpload {
            id: super::blobs::new_blob_id(),
            bucket: spec.bucket,
            name: spec.name,
            meta: spec.meta,
            storage_class: spec.storage_class,
            kms_key_name: spec.kms_key_name,
            csek_sha256: spec.csek.as_ref().map(|k| k.sha256_b64()),
            force_google_managed: spec.force_google_managed,
            protection: spec.protection,
            preconditions: spec.preconditions,
            initiated: self.clock.now(),
            initiator: initiator.to_owned(),
        };
        let stored = u.clone();
        self.meta.put_multipart(&stored).await?;
        Ok(u)
    }

    /// The upload `id`, which must be for `bucket`/`name`.
    pub async fn multipart(&self, id: &str, bucket: &str, name: &str) -> StorageResult<MultipartUpload> {
        let i = id.to_owned();
        let u = self.meta.get_multipart(&i).await?.ok_or_else(|| no_upload(id))?;
        if u.bucket != bucket || u.name != name {
            return Err(no_upload(id));
        }
        Ok(u)
    }

    fn check_upload_key(u: &MultipartUpload, csek: Option<&CustomerKey>) -> StorageResult<()> {
        match (&u.csek_sha256, csek) {
            (None, None) => Ok(()),
            (Some(sha), Some(k)) if k.matches(sha) => Ok(()),
            (Some(_), Some(_)) => Err(StorageError::Forbidden {
                reason: "customerEncryptionKeyIsIncorrect",
                message: "The provided customer key does not match the key the multipart upload was started with."
                    .into(),
            }),
            (Some(_), None) => Err(bad(
                "resourceIsEncryptedWithCustomerEncryptionKey",
                "The multipart upload was started with a customer-supplied key: send it with every part.",
            )),
            (None, Some(_)) => Err(bad(
                "resourceNotEncryptedWithCustomerEncryptionKey",
                "The multipart upload was not started with a customer-supplied key.",
            )),
        }
    }

    /// Stores one part (replacing an earlier part of that number).
    pub async fn upload_part<S, E>(
        &self,
        upload: &MultipartUpload,
        part_number: u32,
        csek: Option<&CustomerKey>,
        expected_md5: Option<[u8; 16]>,
        body: S,
    ) -> StorageResult<Part>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<StorageError>,
    {
        if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(bad(
                "invalid",
                format!("Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive."),
            ));
        }
        Self::check_upload_key(upload, csek)?;
        let bucket = self.get_bucket(&upload.bucket).await?;
        let (mut envelope, cipher) = if upload.force_google_managed {
            self.google_managed_envelope(&bucket)?
        } else {
            self.new_envelope(&bucket, upload.kms_key_name.as_deref(), csek)?
        };
        // Parts always go to the blob store: their rows stay small.
        let (lease, hashes) = self.store_data(&mut envelope, &cipher, body, 0).await?;
        let (crc, md5, size) = hashes.finish();
        if let Some(want) = expected_md5
            && want != md5
        {
            self.discard_blob(&envelope).await;
            return Err(bad(
                "invalid",
                format!(
                    "Provided MD5 hash \"{}\" doesn't match calculated MD5 hash \"{}\".",
                    super::hashing::md5_b64(&want),
                    super::hashing::md5_b64(&md5)
                ),
            ));
        }
        envelope.sealed_hashes = cipher.seal_hashes(crc, Some(md5));
        let part = Part {
            upload_id: upload.id.clone(),
            part_number,
            size,
            crc32c: crc,
            md5,
            last_modified: self.clock.now(),
            envelope,
        };
        let p = part.clone();
        match self.meta.put_part(&p).await {
            Ok(Some(old)) => self.discard_blob(&old.envelope).await,
            Ok(None) => {}
            Err(e) => {
                self.discard_blob(&part.envelope).await;
                return Err(e);
            }
        }
        drop(lease);
        Ok(part)
    }

    pub async fn list_parts(&self, upload_id: &str, after: u32, limit: usize) -> StorageResult<Vec<Part>> {
        let id = upload_id.to_owned();
        self.meta.list_parts(&id, after, limit).await
    }

    pub async fn list_multipart(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> StorageResult<Vec<MultipartUpload>> {
        self.get_bucket(bucket).await?;
        let (b, p) = (bucket.to_owned(), prefix.to_owned());
        self.meta.list_multipart(&b, &p, after, limit).await
    }

    /// Removes an upload and the blobs of its parts.
    pub async fn abort_multipart(&self, id: &str) -> StorageResult<()> {
        let i = id.to_owned();
        let parts = self.meta.delete_multipart(&i).await?.ok_or_else(|| no_upload(id))?;
        for p in parts {
            self.discard_blob(&p.envelope).await;
        }
        Ok(())
    }

    /// Aborts uploads started before `before` (the sweep, and lifecycle's
    /// AbortIncompleteMultipartUpload). Returns how many.
    pub async fn abort_multipart_before(&self, before: DateTime<Utc>) -> StorageResult<usize> {
        let ids = self.meta.multipart_started_before(before).await?;
        let mut n = 0;
        for id in ids {
            match self.abort_multipart(&id).await {
                Ok(()) => n += 1,
                Err(StorageError::Gone(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Lifecycle's AbortIncompleteMultipartUpload: in each bucket with such rules, the
    /// uploads older than the rule's age (in days) whose names match its prefixes and
    /// suffixes are aborted. Returns how many.
    pub async fn lifecycle_abort_uploads(&self, now: DateTime<Utc>) -> StorageResult<usize> {
        use super::lifecycle::ActionKind;
        let mut n = 0;
        for b in self.lifecycle_buckets().await? {
            let rules: Vec<_> = b
                .lifecycle
                .iter()
                .filter(|r| r.action.kind == ActionKind::AbortIncompleteMultipartUpload)
                .cloned()
                .collect();
            if rules.is_empty() {
                continue;
            }
            let mut after = None;
            loop {
                let page = self.list_multipart(&b.name, "", after.clone(), 1000).await?;
                let Some(last) = page.last() else { break };
                after = Some((last.name.clone(), last.id.clone()));
                for u in &page {
                    let due = rules.iter().any(|r| {
                        let c = &r.condition;
                        c.age.is_none_or(|d| now - u.initiated >= chrono::TimeDelta::days(d))
                            && c.matches_prefix
                                .as_ref()
                                .is_none_or(|p| p.iter().any(|p| u.name.starts_with(p)))
                            && c.matches_suffix
                                .as_ref()
                                .is_none_or(|s| s.iter().any(|s| u.name.ends_with(s)))
                    });
                    if due {
                        match self.abort_multipart(&u.id).await {
                            Ok(()) => n += 1,
                            Err(StorageError::Gone(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        Ok(n)
    }

    /// Opens a part for reading, as if it were an object.
    fn open_part(
        &self,
        u: &MultipartUpload,
        p: &Part,
        csek: Option<&CustomerKey>,
    ) -> StorageResult<super::engine::OpenObject> {
        let now = p.last_modified;
        let rec = ObjectRecord {
            bucket: u.bucket.clone(),
            name: u.name.clone(),
            generation: 0,
            metageneration: 1,
            size: p.size,
            meta: ObjectMeta::default(),
            storage_class: String::new(),
            time_created: now,
            updated: now,
            component_count: None,
            envelope: p.envelope.clone(),
            multipart_etag: None,
            temporary_hold: false,
            event_based_hold: false,
            retention_base: None,
            retention: None,
            time_deleted: None,
            time_storage_class_updated: None,
            soft_delete_time: None,
            hard_delete_time: None,
        };
        self.open(rec, csek)
    }

    /// Completes an upload from `parts` (number, ETag), which must be in ascending order
    /// and name stored parts; all but the last must be at least 5 MiB.
    pub async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
        csek: Option<std::sync::Arc<CustomerKey>>,
        may_replace: bool,
    ) -> StorageResult<(ObjectRecord, ObjectHashes)> {
        Self::check_upload_key(upload, csek.as_deref())?;
        if parts.is_empty() {
            return Err(bad("malformedXML", "You must specify at least one part."));
        }
        if parts.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(bad(
                "invalidPartOrder",
                "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
            ));
        }
        let stored = self.list_parts(&upload.id, 0, MAX_PART_NUMBER as usize).await?;
        let mut chosen = Vec::with_capacity(parts.len());
        for (i, want) in parts.iter().enumerate() {
            let n = &want.number;
            let p = stored
                .iter()
                .find(|p| p.part_number == *n)
                .filter(|p| p.etag() == want.etag.trim_matches('"'))
                .filter(|p| want.crc32c.is_none_or(|c| c == p.crc32c))
                .ok_or_else(|| {
                    bad(
                        "invalidPart",
                        format!("One or more of the specified parts could not be found, or its ETag or checksum did not match (part {n})."),
                    )
                })?;
            if i + 1 < parts.len() && p.size < MIN_PART_SIZE {
                return Err(bad(
                    "entityTooSmall",
                    format!(
                        "Your proposed upload is smaller than the minimum allowed size: part {n} has {} bytes; every part but the last needs 5 MiB.",
                        p.size
                    ),
                ));
            }
            chosen.push(p.clone());
        }
        let mut md5s = Vec::with_capacity(chosen.len() * 16);
        let mut combined = 0u32;
        let mut opened = Vec::with_capacity(chosen.len());
        for p in &chosen {
            md5s.extend_from_slice(&p.md5);
            combined = crc32c::crc32c_combine(combined, p.crc32c, p.size as usize);
            opened.push(self.open_part(upload, p, csek.as_deref())?);
        }
        // Google-managed objects show S3's ETag; under customer keys a random one, so
        // the ETag confirms nothing about the plaintext (as S3 does for SSE-KMS/SSE-C).
        let bucket = self.get_bucket(&upload.bucket).await?;
        let google_managed = csek.is_none()
            && (upload.force_google_managed
                || (upload.kms_key_name.is_none() && bucket.default_kms_key_name.is_none()));
        let tag = if google_managed {
            hex(&md5::Md5::digest(&md5s))
        } else {
            let mut r = [0u8; 16];
            aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut r)
                .map_err(|_| StorageError::internal("rng failure"))?;
            hex(&r)
        };
        let etag = format!("{tag}-{}", chosen.len());
        let streams: Vec<_> = opened.iter().map(|o| self.read_range(o, 0, o.record.size)).collect();
        let body = futures::stream::iter(streams).flatten();
        let spec = WriteSpec {
            bucket: upload.bucket.clone(),
            name: upload.name.clone(),
            meta: upload.meta.clone(),
            storage_class: upload.storage_class.clone(),
            preconditions: upload.preconditions,
            expected_crc32c: Some(combined),
            expected_md5: None,
            kms_key_name: upload.kms_key_name.clone(),
            component_count: Some(u32::try_from(chosen.len()).unwrap_or(u32::MAX)),
            protection: upload.protection.clone(),
            force_google_managed: upload.force_google_managed,
            may_replace,
            csek,
            multipart_etag: Some(etag),
        };
        let (rec, hashes) = self.write(spec, body).await?;
        debug_assert!(rec.envelope.kind != KeyKind::Csek || upload.csek_sha256.is_some());
        // The object is committed; the parts are no longer needed.
        let _ = self.abort_multipart(&upload.id).await;
        Ok((rec, hashes))
    }
}
