//! Uploads (media, multipart, resumable) and downloads (`alt=media`, ranges).

use super::error::{GcsError, GcsResult};
use super::key_param;
use super::object_doc::{apply_meta, check_unsupported, write_protection};
use super::{Ctx, body_stream, json_body, render};
use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use sealstore_storage::hashing::{crc32c_b64, md5_b64, parse_crc32c_b64, parse_md5_b64};
use sealstore_storage::model::ObjectMeta;
use sealstore_storage::{ChunkOutcome, ObjectHashes, StorageError, WriteSpec};
use serde_json::Value;

/// What an upload without a content type is stored as, as on GCS.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The KMS key of an upload: `kmsKeyName` in the query, or in the metadata document
/// (apitools puts it there). Both, and different, is an error.
fn body_or_query_key(ctx: &Ctx, meta_doc: &Value) -> GcsResult<Option<String>> {
    let query = key_param(ctx, "kmsKeyName")?;
    let body = match meta_doc.get("kmsKeyName") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if k.is_empty() => None,
        Some(Value::String(k)) if k.contains("/cryptoKeyVersions/") => {
            return Err(GcsError::invalid(format!("Bad Cloud KMS crypto key: {k}")));
        }
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(GcsError::invalid("Invalid value for kmsKeyName: expected a string.")),
    };
    match (query, body) {
        (Some(q), Some(b)) if q != b => Err(GcsError::invalid(
            "kmsKeyName in the query and in the object metadata name different keys.",
        )),
        (q, b) => Ok(q.or(b)),
    }
}

/// The write spec from a JSON metadata document plus the query.
async fn spec_from(ctx: &Ctx, bucket: &str, meta_doc: &Value, name_hint: Option<&str>) -> GcsResult<WriteSpec> {
    check_unsupported(meta_doc)?;
    super::acl::refuse_predefined(ctx, super::acl::Target::NewObject)?;
    let name = meta_doc
        .get("name")
        .and_then(Value::as_str)
        .or(name_hint)
        .ok_or_else(|| GcsError::new(StatusCode::BAD_REQUEST, "required", "Required parameter: name"))?;
    let expected_crc32c = match meta_doc.get("crc32c").and_then(Value::as_str) {
        None => None,
        Some(s) => {
            Some(parse_crc32c_b64(s).ok_or_else(|| GcsError::invalid(format!("Invalid crc32c value \"{s}\".")))?)
        }
    };
    let expected_md5 = match meta_doc.get("md5Hash").and_then(Value::as_str) {
        None => None,
        Some(s) => Some(parse_md5_b64(s).ok_or_else(|| GcsError::invalid(format!("Invalid md5Hash value \"{s}\".")))?),
    };
    Ok(WriteSpec {
        bucket: bucket.to_owned(),
        name: name.to_owned(),
        meta: apply_meta(&ObjectMeta::default(), meta_doc, false)?,
        storage_class: meta_doc.get("storageClass").and_then(Value::as_str).map(str::to_owned),
        preconditions: ctx.preconditions("")?,
        expected_crc32c,
        expected_md5,
        kms_key_name: body_or_query_key(ctx, meta_doc)?,
        component_count: None,
        csek: ctx.csek("x-goog-encryption")?,
        protection: write_protection(meta_doc)?,
        force_google_managed: false,
        may_replace: super::may_replace(ctx, bucket).await,
        multipart_etag: None,
    })
}

async fn object_json(ctx: &Ctx, rec: &sealstore_storage::model::ObjectRecord, h: &ObjectHashes) -> Response {
    let bucket = ctx.app.storage.get_bucket(&rec.bucket).await.ok();
    Json(render::object_in(rec, Some(h), &ctx.base, bucket.as_ref())).into_response()
}

/// `x-goog-hash: crc32c=…,md5=…` (one or several headers).
fn goog_hash(ctx: &Ctx) -> GcsResult<(Option<u32>, Option<[u8; 16]>)> {
    let (mut crc, mut md5) = (None, None);
    for v in ctx.headers.get_all("x-goog-hash") {
        let v = v
            .to_str()
            .map_err(|_| GcsError::invalid("Invalid x-goog-hash header."))?;
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some(("crc32c", b)) => {
                    crc = Some(parse_crc32c_b64(b).ok_or_else(|| GcsError::invalid("Invalid crc32c in x-goog-hash."))?)
                }
                Some(("md5", b)) => {
                    md5 = Some(parse_md5_b64(b).ok_or_else(|| GcsError::invalid("Invalid md5 in x-goog-hash."))?)
                }
                _ => return Err(GcsError::invalid(format!("Invalid x-goog-hash entry \"{item}\"."))),
            }
        }
    }
    Ok((crc, md5))
}

/// The largest metadata part of a multipart upload.
const MAX_METADATA_PART: usize = 1024 * 1024;

pub async fn upload(ctx: &Ctx, bucket: &str, body: Body) -> GcsResult<Response> {
    // A request naming a session works on that session only: it never starts another
    // one, and its body is data, never metadata. gcsfs sends chunks with POST.
    if let Some(id) = ctx.query.get("upload_id") {
        return match ctx.method {
            Method::PUT | Method::POST => put_chunk(ctx, id, body).await,
            Method::DELETE => {
                ctx.app.storage.cancel_resumable(id).await?;
                Ok(StatusCode::from_u16(499)
                    .map(IntoResponse::into_response)
                    .unwrap_or_else(|_| StatusCode::OK.into_response()))
            }
            ref m => Err(GcsError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "methodNotAllowed",
                format!("Method {m} is not allowed on an upload session."),
            )),
        };
    }
    let upload_type = ctx.query.get("uploadType").unwrap_or("");
    match (&ctx.method, upload_type) {
        (&Method::POST, "media") => {
            let mut spec = spec_from(ctx, bucket, &serde_json::json!({}), ctx.query.get("name")).await?;
            spec.meta.content_type = Some(ctx.header("content-type").unwrap_or(DEFAULT_CONTENT_TYPE).to_owned());
            let (crc, md5) = goog_hash(ctx)?;
            spec.expected_crc32c = crc;
            spec.expected_md5 = md5;
            let (rec, h) = ctx
                .app
                .storage
                .write(spec, body_stream(body, ctx.content_length()))
                .await?;
            Ok(object_json(ctx, &rec, &h).await)
        }
        (&Method::POST, "multipart") => multipart(ctx, bucket, body).await,
        (&Method::POST, "resumable") => start_resumable(ctx, bucket, body).await,
        (&Method::PUT | &Method::DELETE, "resumable") => Err(GcsError::invalid("upload_id is required.")),
        (_, "") => Err(GcsError::new(
            StatusCode::BAD_REQUEST,
            "required",
            "Required parameter: uploadType",
        )),
        (_, other) => Err(GcsError::new(
            StatusCode::BAD_REQUEST,
            "invalidParameter",
            format!("Invalid value for uploadType: \"{other}\" (media, multipart or resumable)."),
        )),
    }
}

/// The boundary of a `multipart/related` Content-Type, with quotes stripped.
fn boundary(content_type: Option<&str>) -> GcsResult<String> {
    let ct =
        content_type.ok_or_else(|| GcsError::invalid("A multipart upload needs a Content-Type with a boundary."))?;
    let (mime, params) = ct.split_once(';').unwrap_or((ct, ""));
    if !mime.trim().eq_ignore_ascii_case("multipart/related") {
        return Err(GcsError::invalid(format!(
            "Multipart uploads must be multipart/related, not {}.",
            mime.trim()
        )));
    }
    for p in params.split(';') {
        if let Some((k, v)) = p.trim().split_once('=')
            && k.trim().eq_ignore_ascii_case("boundary")
        {
            // apitools quotes the boundary with single quotes.
            let b = v.trim().trim_matches(|c| c == '"' || c == '\'');
            if !b.is_empty() {
                return Ok(b.to_owned());
            }
        }
    }
    Err(GcsError::invalid("The multipart/related Content-Type has no boundary."))
}

async fn multipart(ctx: &Ctx, bucket: &str, body: Body) -> GcsResult<Response> {
    let boundary = boundary(ctx.header("content-type"))?;
    // A forwarder task reads the whole request body (checking Content-Length) and feeds
    // multer through a channel. The upload commits only once the entire body arrived:
    // bytes after the closing boundary still count.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, StorageError>>(4);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), StorageError>>();
    let mut raw_body = Box::pin(body_stream(body, ctx.content_length()));
    tokio::spawn(async move {
        let mut forwarding = true;
        let outcome = loop {
            match raw_body.next().await {
                None => break Ok(()),
                Some(Err(e)) => {
                    let msg = e.to_string();
                    if forwarding {
                        let _ = tx.send(Err(StorageError::invalid(msg.clone()))).await;
                    }
                    break Err(StorageError::invalid(msg));
                }
                Some(Ok(b)) => {
                    if forwarding && tx.send(Ok(b)).await.is_err() {
                        forwarding = false;
                    }
                }
            }
        };
        drop(tx);
        let _ = done_tx.send(outcome);
    });
    let input = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let input = super::line_endings::normalize(&boundary, Box::pin(input));
    let mut mp = multer::Multipart::new(input, boundary);
    let bad = |e: multer::Error| GcsError::invalid(format!("Malformed multipart body: {e}"));
    let meta_field = mp
        .next_field()
        .await
        .map_err(bad)?
        .ok_or_else(|| GcsError::invalid("The multipart body has no metadata part."))?;
    // Read chunk by chunk so an endless metadata part is refused, not buffered.
    let mut meta_field = meta_field;
    let mut meta_bytes = Vec::new();
    while let Some(chunk) = meta_field.chunk().await.map_err(bad)? {
        if meta_bytes.len() + chunk.len() > MAX_METADATA_PART {
            return Err(GcsError::invalid("The metadata part is larger than 1 MiB."));
        }
        meta_bytes.extend_from_slice(&chunk);
    }
    // The field holds multer's state lock until dropped: release it for the next part.
    drop(meta_field);
    let meta_doc: Value = if meta_bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&meta_bytes).map_err(|e| {
            GcsError::new(
                StatusCode::BAD_REQUEST,
                "parseError",
                format!("The metadata part is not valid JSON: {e}"),
            )
        })?
    };
    let mut spec = spec_from(ctx, bucket, &meta_doc, ctx.query.get("name")).await?;
    let data = mp
        .next_field()
        .await
        .map_err(bad)?
        .ok_or_else(|| GcsError::invalid("The multipart body has no media part."))?;
    if spec.meta.content_type.is_none() {
        spec.meta.content_type = Some(
            data.content_type()
                .map_or_else(|| DEFAULT_CONTENT_TYPE.to_owned(), |m| m.to_string()),
        );
    }
    let stream = futures::stream::try_unfold(Some((data, mp, done_rx)), |state| async move {
        let Some((mut field, mut mp, done)) = state else {
            return Ok(None);
        };
        match field.chunk().await {
            Ok(Some(b)) => Ok(Some((b, Some((field, mp, done))))),
            Ok(None) => {
                drop(field);
                match mp.next_field().await {
                    Ok(None) => {}
                    Ok(Some(_)) => return Err(StorageError::invalid("A multipart upload has exactly two parts.")),
                    Err(e) => return Err(StorageError::invalid(format!("Malformed multipart body: {e}"))),
                }
                drop(mp);
                match done.await {
                    Ok(Ok(())) => Ok(None),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(StorageError::invalid("The request body ended unexpectedly.")),
                }
            }
            Err(e) => Err(StorageError::invalid(format!("Malformed multipart body: {e}"))),
        }
    });
    let (rec, h) = ctx.app.storage.write(spec, stream).await?;
    Ok(object_json(ctx, &rec, &h).await)
}

async fn start_resumable(ctx: &Ctx, bucket: &str, body: Body) -> GcsResult<Response> {
    let doc = json_body(body, ctx.app.limits.max_body_bytes).await?;
    let mut spec = spec_from(ctx, bucket, &doc, ctx.query.get("name")).await?;
    if spec.meta.content_type.is_none() {
        spec.meta.content_type = Some(
            ctx.header("x-upload-content-type")
                .unwrap_or(DEFAULT_CONTENT_TYPE)
                .to_owned(),
        );
    }
    let total = match ctx.header("x-upload-content-length") {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .map_err(|_| GcsError::invalid("Invalid x-upload-content-length."))?,
        ),
    };
    let id = ctx.app.storage.start_resumable(spec, total).await?;
    let location = format!(
        "{}/upload/storage/v1/b/{}/o?uploadType=resumable&upload_id={id}",
        ctx.base,
        render::quote(bucket)
    );
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|_| GcsError::invalid("bad Host header"))?,
    );
    h.insert(
        "x-guploader-uploadid",
        HeaderValue::from_str(&id).map_err(|_| GcsError::invalid("bad id"))?,
    );
    Ok(resp)
}

async fn put_chunk(ctx: &Ctx, id: &str, body: Body) -> GcsResult<Response> {
    let len = ctx.header("content-length").and_then(|v| v.parse::<u64>().ok());
    let range = super::content_range::parse(ctx.header("content-range"), len)?;
    let (crc, md5) = goog_hash(ctx)?;
    match ctx
        .app
        .storage
        .put_chunk(
            id,
            range,
            crc,
            md5,
            ctx.csek("x-goog-encryption")?.as_deref(),
            body_stream(body, len),
        )
        .await?
    {
        ChunkOutcome::Complete(rec, h) => Ok(object_json(ctx, &rec, &h).await),
        ChunkOutcome::Incomplete { persisted } => {
            let mut resp = StatusCode::PERMANENT_REDIRECT.into_response();
            if persisted > 0
                && let Ok(v) = HeaderValue::from_str(&format!("bytes=0-{}", persisted - 1))
            {
                resp.headers_mut().insert(header::RANGE, v);
            }
            Ok(resp)
        }
    }
}

/// A parsed `Range: bytes=…` against an object of `size` bytes: `Ok(None)` for the
/// whole object, `Err` for 416.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, StorageError> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: serve the whole object
    }
    let Some((s, e)) = spec.split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = || StorageError::RangeNotSatisfiable { size };
    let (s, e) = (s.trim(), e.trim());
    if s.is_empty() {
        let n: u64 = match e.parse() {
            Ok(n) => n,
            Err(_) => return Ok(None),
        };
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        return Ok(Some((size.saturating_sub(n), size)));
    }
    let Ok(start) = s.parse::<u64>() else { return Ok(None) };
    let end = if e.is_empty() {
        size
    } else {
        match e.parse::<u64>() {
            Ok(v) if v >= start => v.saturating_add(1).min(size),
            _ => return Ok(None),
        }
    };
    if start >= size {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

pub async fn download(ctx: &Ctx, bucket: &str, name: &str) -> GcsResult<Response> {
    let rec = ctx
        .app
        .storage
        .get_object(bucket, name, ctx.int("generation")?, &ctx.preconditions("")?)
        .await?;
    ctx.etags().check(&render::etag(&rec), true)?;
    let size = rec.size;
    let range = parse_range(ctx.header("range"), size)?;
    let opened = ctx.app.storage.open(rec, ctx.csek("x-goog-encryption")?.as_deref())?;
    let (start, end) = range.unwrap_or((0, size));
    let mut resp = if ctx.method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from_stream(
            ctx.app.storage.open_range(&opened, start, end).await?,
        ))
    };
    let r = &opened.record;
    let h = resp.headers_mut();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(
        "content-type",
        r.meta
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
    );
    set("content-length", (end - start).to_string());
    let mut hash = format!("crc32c={}", crc32c_b64(opened.hashes.crc32c));
    if let Some(m) = &opened.hashes.md5 {
        hash.push_str(&format!(",md5={}", md5_b64(m)));
    }
    set("x-goog-hash", hash);
    set("x-goog-generation", r.generation.to_string());
    set("x-goog-metageneration", r.metageneration.to_string());
    set("x-goog-stored-content-length", size.to_string());
    set(
        "x-goog-stored-content-encoding",
        r.meta.content_encoding.clone().unwrap_or_else(|| "identity".into()),
    );
    set("x-goog-storage-class", r.storage_class.clone());
    set("etag", render::etag(r));
    set("accept-ranges", "bytes".into());
    for (k, v) in [
        ("content-encoding", &r.meta.content_encoding),
        ("cache-control", &r.meta.cache_control),
        ("content-disposition", &r.meta.content_disposition),
        ("content-language", &r.meta.content_language),
    ] {
        if let Some(v) = v {
            set(k, v.clone());
        }
    }
    if range.is_some() {
        set(
            "content-range",
            format!("bytes {}-{}/{size}", start, end.saturating_sub(1)),
        );
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(Some("bytes=2-5"), 10).unwrap(), Some((2, 6)));
        assert_eq!(parse_range(Some("bytes=2-"), 10).unwrap(), Some((2, 10)));
        assert_eq!(parse_range(Some("bytes=-3"), 10).unwrap(), Some((7, 10)));
        assert_eq!(parse_range(Some("bytes=5-100"), 10).unwrap(), Some((5, 10)));
        assert!(parse_range(Some("bytes=10-"), 10).is_err());
        assert!(parse_range(Some("bytes=0-"), 0).is_err());
        assert_eq!(parse_range(Some("items=1-2"), 10).unwrap(), None);
        assert_eq!(parse_range(None, 10).unwrap(), None);
    }

    #[test]
    fn boundaries_are_unquoted() {
        assert_eq!(
            boundary(Some("multipart/related; boundary=\"===1==\"")).unwrap(),
            "===1=="
        );
        assert_eq!(
            boundary(Some("multipart/related; boundary='===2=='")).unwrap(),
            "===2=="
        );
        assert!(boundary(Some("multipart/form-data; boundary=x")).is_err());
        assert!(boundary(Some("multipart/related")).is_err());
    }

    proptest::proptest! {
        /// Fuzz: any Range header against any size yields the whole object, a range
        /// inside it, or 416, never a panic or an out-of-bounds range.
        #[test]
        fn range_headers_stay_in_bounds(
            h in proptest::prop_oneof![
                proptest::string::string_regex("bytes=[0-9]{0,21}-[0-9]{0,21}").unwrap(),
                proptest::string::string_regex("bytes=[0-9, -]{0,30}").unwrap(),
                proptest::prelude::any::<String>(),
            ],
            size in proptest::prop_oneof![0u64..4096, proptest::prelude::any::<u64>()],
        ) {
            if let Ok(Some((start, end))) = parse_range(Some(&h), size) {
                proptest::prop_assert!(start < end || size == 0, "{h:?} {size}: {start}..{end}");
                proptest::prop_assert!(end <= size);
            }
        }
    }
}
