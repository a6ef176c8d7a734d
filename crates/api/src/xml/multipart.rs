//! Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy,
//! CompleteMultipartUpload, AbortMultipartUpload, ListParts, ListMultipartUploads.

use super::error::{S3Error, S3Result};
use super::objects::{content_md5, copy_source, set, spec_for, write_preconditions};
use super::payload::{object_body, write_error};
use super::render::{El, document, iso};
use super::{XCtx, require, sse, xml_body};
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sealstore_storage::StorageError;
use sealstore_storage::multipart::MultipartUpload;
use serde::Deserialize;

fn upload_id(ctx: &XCtx) -> S3Result<String> {
    ctx.query
        .get("uploadId")
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| S3Error::invalid("uploadId is required."))
}

async fn upload(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<MultipartUpload> {
    let id = upload_id(ctx)?;
    ctx.app
        .storage
        .multipart(&id, bucket, key)
        .await
        .map_err(|e| S3Error::from(e).with_resource(format!("/{bucket}/{key}")))
}

pub async fn create(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.create", Some(bucket)).await?;
    super::buckets::refuse_acl(ctx)?;
    let choice = sse::write_key(ctx)?;
    let mut spec = spec_for(ctx, bucket, key, &choice).await?;
    if spec.expected_md5.is_some() {
        return Err(S3Error::invalid("Content-MD5 does not apply to CreateMultipartUpload."));
    }
    spec.preconditions = write_preconditions(ctx, bucket, key).await?;
    let u = ctx.app.storage.create_multipart(spec, &ctx.principal).await?;
    let mut resp = document(
        El::new("InitiateMultipartUploadResult")
            .child(El::text("Bucket", bucket))
            .child(El::text("Key", key))
            .child(El::text("UploadId", u.id.clone())),
    );
    let h = resp.headers_mut();
    if choice.csek.is_some() {
        set(h, "x-amz-server-side-encryption-customer-algorithm", "AES256");
        if let Some(m) = &choice.csek_md5 {
            set(h, "x-amz-server-side-encryption-customer-key-md5", m);
        }
    } else if let Some(k) = &choice.kms_key_name {
        set(h, "x-amz-server-side-encryption", "aws:kms");
        set(h, "x-amz-server-side-encryption-aws-kms-key-id", k);
    }
    Ok(resp)
}

fn part_number(ctx: &XCtx) -> S3Result<u32> {
    ctx.query
        .get("partNumber")
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| (1..=sealstore_storage::multipart::MAX_PART_NUMBER).contains(p))
        .ok_or_else(|| S3Error::invalid("Part number must be an integer between 1 and 10000, inclusive."))
}

/// `x-amz-copy-source-range: bytes=first-last` against a source of `size` bytes.
fn copy_range(ctx: &XCtx, size: u64) -> S3Result<(u64, u64)> {
    let Some(v) = ctx.amz_or_goog("copy-source-range") else {
        return Ok((0, size));
    };
    let bad = || {
        S3Error::invalid(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
        )
    };
    let (a, b) = v
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= size {
        return Err(S3Error::new(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
        ));
    }
    Ok((a, b + 1))
}

pub async fn upload_part(ctx: &XCtx, bucket: &str, key: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.objects.create", Some(bucket)).await?;
    let u = upload(ctx, bucket, key).await?;
    let n = part_number(ctx)?;
    let csek = sse::customer_key(ctx, "x-amz-server-side-encryption", "x-goog-encryption")?;
    let copy = ctx.amz_or_goog("copy-source").is_some();
    let part = if copy {
        let (sb, sk, sv) = copy_source(ctx)?;
        require(ctx, "storage.objects.get", Some(&sb)).await?;
        let src = super::objects::lookup(ctx, &sb, &sk, sv, &Default::default()).await?;
        let src_csek = sse::customer_key(
            ctx,
            "x-amz-copy-source-server-side-encryption",
            "x-goog-copy-source-encryption",
        )?;
        let opened = ctx.app.storage.open(src, src_csek.as_ref().map(|(k, _)| k.as_ref()))?;
        let (start, end) = copy_range(ctx, opened.record.size)?;
        let stream = ctx.app.storage.read_range(&opened, start, end);
        ctx.app
            .storage
            .upload_part(&u, n, csek.as_ref().map(|(k, _)| k.as_ref()), None, stream)
            .await?
    } else {
        let (stream, failure) = object_body(ctx, body)?;
        ctx.app
            .storage
            .upload_part(&u, n, csek.as_ref().map(|(k, _)| k.as_ref()), content_md5(ctx)?, stream)
            .await
            .map_err(|e| write_error(&failure, e))?
    };
    let etag = format!("\"{}\"", part.etag());
    let mut resp = if copy {
        document(
            El::new("CopyPartResult")
                .child(El::text("LastModified", iso(part.last_modified)))
                .child(El::text("ETag", etag.clone())),
        )
    } else {
        StatusCode::OK.into_response()
    };
    let h = resp.headers_mut();
    if !copy {
        set(h, "etag", &etag);
    }
    if let Some((_, md5)) = &csek {
        set(h, "x-amz-server-side-encryption-customer-algorithm", "AES256");
        set(h, "x-amz-server-side-encryption-customer-key-md5", md5);
    }
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CompleteRequest {
    #[serde(default)]
    part: Vec<CompletePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CompletePart {
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
    /// A part's CRC32C is stored, so it is checked; other per-part checksums are not
    /// kept (sealstore returns none from UploadPart, so clients do not send them back).
    #[serde(rename = "ChecksumCRC32C")]
    checksum_crc32c: Option<String>,
    #[serde(rename = "ChecksumCRC32")]
    checksum_crc32: Option<String>,
    #[serde(rename = "ChecksumSHA1")]
    checksum_sha1: Option<String>,
    #[serde(rename = "ChecksumSHA256")]
    checksum_sha256: Option<String>,
    #[serde(rename = "ChecksumCRC64NVME")]
    checksum_crc64nvme: Option<String>,
}

pub async fn complete(ctx: &XCtx, bucket: &str, key: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.objects.create", Some(bucket)).await?;
    let u = upload(ctx, bucket, key).await?;
    let req: CompleteRequest = xml_body(ctx, body).await?;
    if req.part.iter().any(|p| {
        p.checksum_crc32.is_some()
            || p.checksum_sha1.is_some()
            || p.checksum_sha256.is_some()
            || p.checksum_crc64nvme.is_some()
    }) {
        return Err(S3Error::not_implemented(
            "Per-part CRC32, SHA1, SHA256 and CRC64NVME checksums in CompleteMultipartUpload (CRC32C is checked)",
        ));
    }
    let parts =
        req.part
            .into_iter()
            .map(|p| {
                let crc = match p.checksum_crc32c.as_deref() {
                    None => None,
                    Some(c) => Some(sealstore_storage::hashing::parse_crc32c_b64(c).ok_or_else(|| {
                        S3Error::invalid(format!("Invalid ChecksumCRC32C for part {}.", p.part_number))
                    })?),
                };
                Ok(sealstore_storage::multipart::CompletedPart {
                    number: p.part_number,
                    etag: p.etag,
                    crc32c: crc,
                })
            })
            .collect::<S3Result<Vec<_>>>()?;
    let csek = sse::customer_key(ctx, "x-amz-server-side-encryption", "x-goog-encryption")?;
    let may_replace = crate::gcs::may_replace_for(&ctx.app, &ctx.principal, bucket).await;
    let (rec, hashes) = ctx
        .app
        .storage
        .complete_multipart(&u, &parts, csek.as_ref().map(|(k, _)| k.clone()), may_replace)
        .await?;
    let etag = super::objects::etag(&rec, Some(&hashes));
    let mut resp = document(
        El::new("CompleteMultipartUploadResult")
            .child(El::text(
                "Location",
                format!("{}/{bucket}/{}", ctx.base, super::sigv4::uri_encode(key, true)),
            ))
            .child(El::text("Bucket", bucket))
            .child(El::text("Key", key))
            .child(El::text("ETag", etag)),
    );
    let h = resp.headers_mut();
    set(h, "x-amz-version-id", &rec.generation.to_string());
    set(h, "x-goog-generation", &rec.generation.to_string());
    sse::response_headers(h, &rec, csek.as_ref().map(|(_, m)| m.as_str()));
    Ok(resp)
}

pub async fn abort(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.delete", Some(bucket)).await?;
    let u = upload(ctx, bucket, key).await?;
    ctx.app.storage.abort_multipart(&u.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn limit(ctx: &XCtx, param: &str) -> S3Result<usize> {
    match ctx.int(param)? {
        None => Ok(1000),
        Some(n) if n < 0 => Err(S3Error::invalid(format!("{param} cannot be negative"))),
        Some(n) => Ok(n.min(1000) as usize),
    }
}

fn initiator(u: &MultipartUpload) -> El {
    El::new("Initiator")
        .child(El::text("ID", u.initiator.clone()))
        .child(El::text("DisplayName", u.initiator.clone()))
}

pub async fn list_parts(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.list", Some(bucket)).await?;
    let u = upload(ctx, bucket, key).await?;
    let max = limit(ctx, "max-parts")?;
    let marker = match ctx.query.get("part-number-marker") {
        None | Some("") => 0,
        Some(m) => m
            .parse::<u32>()
            .map_err(|_| S3Error::invalid("Invalid part-number-marker"))?,
    };
    let mut parts = ctx.app.storage.list_parts(&u.id, marker, max + 1).await?;
    let truncated = parts.len() > max;
    parts.truncate(max);
    let mut doc = El::new("ListPartsResult")
        .child(El::text("Bucket", bucket))
        .child(El::text("Key", key))
        .child(El::text("UploadId", u.id.clone()))
        .child(initiator(&u))
        .child(El::text(
            "StorageClass",
            u.storage_class.clone().unwrap_or_else(|| "STANDARD".into()),
        ))
        .child(El::text("PartNumberMarker", marker.to_string()))
        .child(El::text("MaxParts", max.to_string()))
        .child(El::text("IsTruncated", truncated.to_string()));
    if truncated && let Some(last) = parts.last() {
        doc.add(El::text("NextPartNumberMarker", last.part_number.to_string()));
    }
    for p in &parts {
        doc.add(
            El::new("Part")
                .child(El::text("PartNumber", p.part_number.to_string()))
                .child(El::text("LastModified", iso(p.last_modified)))
                .child(El::text("ETag", format!("\"{}\"", p.etag())))
                .child(El::text("Size", p.size.to_string())),
        );
    }
    Ok(document(doc))
}

pub async fn list_uploads(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.list", Some(bucket)).await?;
    if ctx.query.get("delimiter").is_some_and(|d| !d.is_empty()) {
        return Err(S3Error::not_implemented("ListMultipartUploads with a delimiter"));
    }
    let max = limit(ctx, "max-uploads")?;
    let prefix = ctx.query.get("prefix").unwrap_or("").to_owned();
    let key_marker = ctx.query.get("key-marker").unwrap_or("").to_owned();
    let id_marker = ctx.query.get("upload-id-marker").unwrap_or("").to_owned();
    // Without an upload-id marker, S3 starts after every upload of the key marker.
    let after = if key_marker.is_empty() {
        None
    } else if id_marker.is_empty() {
        Some((key_marker.clone(), "\u{10FFFF}".to_owned()))
    } else {
        Some((key_marker.clone(), id_marker.clone()))
    };
    let mut uploads = ctx
        .app
        .storage
        .list_multipart(bucket, &prefix, after, max + 1)
        .await
        .map_err(|e| match e {
            StorageError::NotFound(m) => S3Error::new(404, "NoSuchBucket", m),
            e => e.into(),
        })?;
    let truncated = uploads.len() > max;
    uploads.truncate(max);
    let mut doc = El::new("ListMultipartUploadsResult")
        .child(El::text("Bucket", bucket))
        .child(El::text("KeyMarker", key_marker))
        .child(El::text("UploadIdMarker", id_marker))
        .child(El::text("Prefix", prefix))
        .child(El::text("MaxUploads", max.to_string()))
        .child(El::text("IsTruncated", truncated.to_string()));
    if truncated && let Some(last) = uploads.last() {
        doc.add(El::text("NextKeyMarker", last.name.clone()));
        doc.add(El::text("NextUploadIdMarker", last.id.clone()));
    }
    for u in &uploads {
        doc.add(
            El::new("Upload")
                .child(El::text("Key", u.name.clone()))
                .child(El::text("UploadId", u.id.clone()))
                .child(initiator(u))
                .child(El::text(
                    "StorageClass",
                    u.storage_class.clone().unwrap_or_else(|| "STANDARD".into()),
                ))
                .child(El::text("Initiated", iso(u.initiated))),
        );
    }
    Ok(document(doc))
}
