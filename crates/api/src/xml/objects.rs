//! Object operations of the XML API: PutObject, GetObject/HeadObject, DeleteObject(s),
//! ListObjects v1/v2, ListObjectVersions, CopyObject, and Object Lock retention and
//! legal hold. `versionId` is the GCS generation.

use super::error::{S3Error, S3Result};
use super::payload::{object_body, write_error};
use super::render::{El, document, http_date, iso};
use super::sigv4::uri_encode;
use super::{XCtx, require, sse, xml_body};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use sealstore_storage::model::{KeyKind, ObjectMeta, ObjectRecord, ObjectRetention, Preconditions, WriteProtection};
use sealstore_storage::{ListSpec, ObjectHashes, ProtectionPatch, StorageError, WriteSpec};
use serde::Deserialize;

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The S3 ETag of a generation (quoted). The MD5 of the data where it may be shown
/// (Google-managed, single-part); a multipart upload's `…-N`; otherwise an opaque value
/// from the generation, as S3 gives SSE-KMS and SSE-C objects ETags that are no MD5.
pub fn etag(rec: &ObjectRecord, hashes: Option<&ObjectHashes>) -> String {
    if let Some(e) = &rec.multipart_etag {
        return format!("\"{e}\"");
    }
    match (rec.envelope.kind == KeyKind::GoogleManaged, hashes.and_then(|h| h.md5)) {
        (true, Some(md5)) => format!("\"{}\"", hex(&md5)),
        _ => format!("\"{:x}\"", rec.generation),
    }
}

/// The ETag without opening the object where it cannot matter: Google-managed objects
/// are opened (a local unwrap) for their MD5.
fn etag_for_listing(ctx: &XCtx, rec: &ObjectRecord) -> String {
    if rec.multipart_etag.is_none()
        && rec.envelope.kind == KeyKind::GoogleManaged
        && rec.component_count.is_none()
        && let Ok(o) = ctx.app.storage.open(rec.clone(), None)
    {
        return etag(rec, Some(&o.hashes));
    }
    etag(rec, None)
}

/// A generation of `bucket`/`key`; a missing one is S3's NoSuchKey naming it (a missing
/// bucket stays NoSuchBucket).
pub(super) async fn lookup(
    ctx: &XCtx,
    bucket: &str,
    key: &str,
    generation: Option<i64>,
    pre: &Preconditions,
) -> S3Result<ObjectRecord> {
    ctx.app
        .storage
        .get_object(bucket, key, generation, pre)
        .await
        .map_err(|e| {
            let e = S3Error::from(e);
            if e.code == "NoSuchKey" {
                S3Error::new(404, "NoSuchKey", "The specified key does not exist.")
                    .with_resource(format!("/{bucket}/{key}"))
            } else {
                e
            }
        })
}

fn version_id(ctx: &XCtx) -> S3Result<Option<i64>> {
    match ctx.query.get("versionId") {
        None | Some("") | Some("null") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|g| *g > 0)
            .map(Some)
            .ok_or_else(|| S3Error::invalid("Invalid version id specified")),
    }
}

fn header_i64(ctx: &XCtx, name: &str) -> S3Result<Option<i64>> {
    match ctx.header(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| S3Error::invalid(format!("Invalid value for {name}: {v}"))),
    }
}

/// GCS XML preconditions: `x-goog-if-generation-match` & co.
fn goog_preconditions(ctx: &XCtx) -> S3Result<Preconditions> {
    Ok(Preconditions {
        if_generation_match: header_i64(ctx, "x-goog-if-generation-match")?,
        if_metageneration_match: header_i64(ctx, "x-goog-if-metageneration-match")?,
        ..Default::default()
    })
}

fn parse_http_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|e| e == "*" || e == etag || e.trim_matches('"') == etag.trim_matches('"'))
}

/// `If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` (with
/// `prefix` = `x-amz-copy-source-` for a copy's source), as S3 evaluates them.
fn check_conditions(ctx: &XCtx, prefix: &str, rec: &ObjectRecord, etag: &str, read: bool) -> S3Result<()> {
    let h = |n: &str| ctx.header(&format!("{prefix}{n}"));
    let failed = || {
        S3Error::new(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        )
    };
    let modified = rec.updated.timestamp();
    let if_match = h("if-match");
    if let Some(m) = if_match
        && !etag_matches(m, etag)
    {
        return Err(failed());
    }
    if let Some(t) = h("if-unmodified-since").and_then(parse_http_date)
        && if_match.is_none()
        && modified > t.timestamp()
    {
        return Err(failed());
    }
    let if_none = h("if-none-match");
    if let Some(m) = if_none
        && etag_matches(m, etag)
    {
        return Err(if read {
            S3Error::new(304, "NotModified", "Not Modified")
        } else {
            failed()
        });
    }
    if let Some(t) = h("if-modified-since").and_then(parse_http_date)
        && if_none.is_none()
        && modified <= t.timestamp()
    {
        return Err(if read {
            S3Error::new(304, "NotModified", "Not Modified")
        } else {
            failed()
        });
    }
    Ok(())
}

/// Object metadata from request headers: content headers and `x-amz-meta-*` /
/// `x-goog-meta-*`. Headers sealstore cannot keep are refused, not dropped.
fn meta_from_headers(ctx: &XCtx) -> S3Result<ObjectMeta> {
    for (h, what) in [
        ("expires", "The Expires header on objects"),
        ("x-amz-website-redirect-location", "Website redirects"),
        ("x-amz-tagging", "Object tagging"),
        ("x-amz-request-payer", "Requester pays"),
    ] {
        if ctx.header(h).is_some() {
            return Err(S3Error::not_implemented(what));
        }
    }
    let mut m = ObjectMeta {
        content_type: Some(ctx.header("content-type").unwrap_or(DEFAULT_CONTENT_TYPE).to_owned()),
        ..Default::default()
    };
    let encodings: Vec<&str> = ctx
        .header("content-encoding")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
                .collect()
        })
        .unwrap_or_default();
    if !encodings.is_empty() {
        m.content_encoding = Some(encodings.join(", "));
    }
    m.content_disposition = ctx.header("content-disposition").map(str::to_owned);
    m.content_language = ctx.header("content-language").map(str::to_owned);
    m.cache_control = ctx.header("cache-control").map(str::to_owned);
    for (name, value) in &ctx.headers {
        let n = name.as_str();
        if let Some(k) = n.strip_prefix("x-amz-meta-").or_else(|| n.strip_prefix("x-goog-meta-")) {
            let v = value
                .to_str()
                .map_err(|_| S3Error::invalid(format!("The metadata value of {n} is not ASCII.")))?;
            m.metadata.insert(k.to_owned(), v.to_owned());
        }
    }
    Ok(m)
}

fn storage_class(ctx: &XCtx) -> S3Result<Option<String>> {
    match ctx.amz_or_goog("storage-class") {
        None => Ok(None),
        Some(c) => {
            let c = c.trim().to_ascii_uppercase();
            if sealstore_storage::engine::STORAGE_CLASSES.contains(&c.as_str()) {
                Ok(Some(c))
            } else {
                Err(S3Error::new(
                    400,
                    "InvalidStorageClass",
                    format!(
                        "The storage class you specified is not valid: {c} (use a GCS class: STANDARD, NEARLINE, COLDLINE, ARCHIVE)."
                    ),
                ))
            }
        }
    }
}

/// Object Lock headers on a write: a retention (GOVERNANCE = Unlocked, COMPLIANCE =
/// Locked) and a legal hold (a temporary hold).
fn write_protection(ctx: &XCtx) -> S3Result<WriteProtection> {
    let mode = ctx.header("x-amz-object-lock-mode");
    let until = ctx.header("x-amz-object-lock-retain-until-date");
    let retention = match (mode, until) {
        (None, None) => None,
        (Some(m), Some(u)) => Some(retention(m, u)?),
        _ => {
            return Err(S3Error::invalid(
                "x-amz-object-lock-mode and x-amz-object-lock-retain-until-date must be given together.",
            ));
        }
    };
    let hold = match ctx.header("x-amz-object-lock-legal-hold") {
        None | Some("OFF") => false,
        Some("ON") => true,
        Some(v) => return Err(S3Error::invalid(format!("Invalid legal hold status {v}: ON or OFF."))),
    };
    Ok(WriteProtection {
        temporary_hold: hold,
        event_based_hold: None,
        retention,
    })
}

fn retention(mode: &str, until: &str) -> S3Result<ObjectRetention> {
    let mode = match mode.trim() {
        "GOVERNANCE" => "Unlocked",
        "COMPLIANCE" => "Locked",
        m => {
            return Err(S3Error::invalid(format!(
                "Unknown object lock mode {m}: GOVERNANCE or COMPLIANCE."
            )));
        }
    };
    let retain_until = DateTime::parse_from_rfc3339(until.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| S3Error::invalid(format!("Invalid retain-until date {until}: use ISO 8601.")))?;
    Ok(ObjectRetention {
        mode: mode.into(),
        retain_until,
    })
}

pub(super) fn content_md5(ctx: &XCtx) -> S3Result<Option<[u8; 16]>> {
    match ctx.header("content-md5") {
        None => Ok(None),
        Some(v) => STANDARD
            .decode(v.trim())
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .map(Some)
            .ok_or_else(|| S3Error::new(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")),
    }
}

/// Preconditions of a write: GCS headers, `If-None-Match: *` (create only), and
/// `If-Match` against the live object's ETag, pinned to its generation.
pub(super) async fn write_preconditions(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<Preconditions> {
    let mut pre = goog_preconditions(ctx)?;
    if let Some(v) = ctx.header("if-none-match") {
        if v.trim() != "*" {
            return Err(S3Error::not_implemented(
                "If-None-Match with an ETag on writes (only * is)",
            ));
        }
        pre.if_generation_match = Some(0);
    }
    if let Some(v) = ctx.header("if-match") {
        let live = lookup(ctx, bucket, key, None, &Preconditions::default()).await?;
        if !etag_matches(v, &etag_for_listing(ctx, &live)) {
            return Err(S3Error::new(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            ));
        }
        pre.if_generation_match = Some(live.generation);
    }
    Ok(pre)
}

pub(super) async fn spec_for(ctx: &XCtx, bucket: &str, key: &str, key_choice: &sse::WriteKey) -> S3Result<WriteSpec> {
    Ok(WriteSpec {
        bucket: bucket.to_owned(),
        name: key.to_owned(),
        meta: meta_from_headers(ctx)?,
        storage_class: storage_class(ctx)?,
        preconditions: Preconditions::default(),
        expected_crc32c: None,
        expected_md5: content_md5(ctx)?,
        kms_key_name: key_choice.kms_key_name.clone(),
        component_count: None,
        protection: write_protection(ctx)?,
        force_google_managed: key_choice.google_managed,
        may_replace: crate::gcs::may_replace_for(&ctx.app, &ctx.principal, bucket).await,
        csek: key_choice.csek.clone(),
        multipart_etag: None,
    })
}

pub(super) fn set(h: &mut HeaderMap, k: &'static str, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(k, v);
    }
}

/// Headers every object response carries: ETag, version, GCS generation and hashes,
/// encryption.
fn object_headers(h: &mut HeaderMap, rec: &ObjectRecord, hashes: Option<&ObjectHashes>, csek_md5: Option<&str>) {
    set(h, "etag", &etag(rec, hashes));
    set(h, "x-amz-version-id", &rec.generation.to_string());
    set(h, "x-goog-generation", &rec.generation.to_string());
    set(h, "x-goog-metageneration", &rec.metageneration.to_string());
    if let Some(hs) = hashes {
        let mut v = format!("crc32c={}", sealstore_storage::hashing::crc32c_b64(hs.crc32c));
        if let Some(m) = &hs.md5 {
            v.push_str(&format!(",md5={}", sealstore_storage::hashing::md5_b64(m)));
        }
        set(h, "x-goog-hash", &v);
    }
    sse::response_headers(h, rec, csek_md5);
}

pub async fn put(ctx: &XCtx, bucket: &str, key: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.objects.create", Some(bucket)).await?;
    super::buckets::refuse_acl(ctx)?;
    let choice = sse::write_key(ctx)?;
    let mut spec = spec_for(ctx, bucket, key, &choice).await?;
    spec.preconditions = write_preconditions(ctx, bucket, key).await?;
    let (stream, failure) = object_body(ctx, body)?;
    let (rec, hashes) = ctx
        .app
        .storage
        .write(spec, stream)
        .await
        .map_err(|e| write_error(&failure, e))?;
    let mut resp = StatusCode::OK.into_response();
    object_headers(resp.headers_mut(), &rec, Some(&hashes), choice.csek_md5.as_deref());
    Ok(resp)
}

pub async fn get(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.get", Some(bucket)).await?;
    if ctx.has("partNumber") {
        return Err(S3Error::not_implemented("GetObject by partNumber"));
    }
    let head = ctx.method == Method::HEAD;
    let rec = lookup(ctx, bucket, key, version_id(ctx)?, &goog_preconditions(ctx)?).await?;
    let csek = sse::customer_key(ctx, "x-amz-server-side-encryption", "x-goog-encryption")?;
    let opened = ctx.app.storage.open(rec, csek.as_ref().map(|(k, _)| k.as_ref()))?;
    let tag = etag(&opened.record, Some(&opened.hashes));
    check_conditions(ctx, "", &opened.record, &tag, true)?;
    let size = opened.record.size;
    let range = crate::gcs::media::parse_range(ctx.header("range"), size)?;
    let (start, end) = range.unwrap_or((0, size));
    let mut resp = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from_stream(
            ctx.app.storage.open_range(&opened, start, end).await?,
        ))
    };
    let r = &opened.record;
    let h = resp.headers_mut();
    object_headers(h, r, Some(&opened.hashes), csek.as_ref().map(|(_, m)| m.as_str()));
    set(h, "content-length", &(end - start).to_string());
    set(h, "last-modified", &http_date(r.updated));
    set(h, "accept-ranges", "bytes");
    set(h, "x-goog-stored-content-length", &size.to_string());
    set(h, "x-goog-storage-class", &r.storage_class);
    if r.storage_class != "STANDARD" {
        set(h, "x-amz-storage-class", &r.storage_class);
    }
    if let Some(n) = r.component_count {
        set(h, "x-goog-component-count", &n.to_string());
    }
    let overrides = [
        (
            "content-type",
            r.meta.content_type.clone().or(Some(DEFAULT_CONTENT_TYPE.into())),
            "response-content-type",
        ),
        (
            "content-encoding",
            r.meta.content_encoding.clone(),
            "response-content-encoding",
        ),
        (
            "content-disposition",
            r.meta.content_disposition.clone(),
            "response-content-disposition",
        ),
        (
            "content-language",
            r.meta.content_language.clone(),
            "response-content-language",
        ),
        ("cache-control", r.meta.cache_control.clone(), "response-cache-control"),
        ("expires", None, "response-expires"),
    ];
    for (k, v, param) in overrides {
        if let Some(v) = ctx.query.get(param).map(str::to_owned).or(v) {
            set(h, k, &v);
        }
    }
    let mut missing = 0;
    for (k, v) in &r.meta.metadata {
        match (
            axum::http::HeaderName::from_bytes(format!("x-amz-meta-{}", k.to_ascii_lowercase()).as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(n), Ok(v)) => {
                h.insert(n, v);
            }
            _ => missing += 1,
        }
    }
    if missing > 0 {
        set(h, "x-amz-missing-meta", &missing.to_string());
    }
    if let Some(ret) = &r.retention {
        set(
            h,
            "x-amz-object-lock-mode",
            if ret.mode == "Locked" {
                "COMPLIANCE"
            } else {
                "GOVERNANCE"
            },
        );
        set(h, "x-amz-object-lock-retain-until-date", &iso(ret.retain_until));
    }
    if r.temporary_hold {
        set(h, "x-amz-object-lock-legal-hold", "ON");
    }
    if range.is_some() {
        set(
            h,
            "content-range",
            &format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        );
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}

/// Deletes one key (or version). A missing key is not an error, as on S3. With
/// `bypass`, an Unlocked (GOVERNANCE) retention is removed first.
async fn delete_one(ctx: &XCtx, bucket: &str, key: &str, generation: Option<i64>, bypass: bool) -> S3Result<()> {
    if bypass {
        let rec = match ctx
            .app
            .storage
            .get_object(bucket, key, generation, &Default::default())
            .await
        {
            Ok(r) => Some(r),
            Err(StorageError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if rec
            .as_ref()
            .and_then(|r| r.retention.as_ref())
            .is_some_and(|r| r.mode == "Unlocked")
        {
            require(ctx, "storage.objects.overrideUnlockedRetention", Some(bucket)).await?;
            let b = ctx.app.storage.get_bucket(bucket).await?;
            let now = ctx.app.storage.now();
            let p = ProtectionPatch {
                retention: Some(None),
                override_unlocked_retention: true,
                ..Default::default()
            };
            ctx.app
                .storage
                .update_object_meta(bucket, key, generation, &Default::default(), move |r| {
                    sealstore_storage::engine::apply_protection(r, &b, &p, now)
                })
                .await?;
        }
    }
    match ctx
        .app
        .storage
        .delete_object(bucket, key, generation, &goog_preconditions(ctx)?)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => match S3Error::from(e) {
            e if e.code == "NoSuchKey" => Ok(()),
            e => Err(e),
        },
    }
}

fn bypass(ctx: &XCtx) -> bool {
    ctx.header("x-amz-bypass-governance-retention")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

pub async fn delete(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.delete", Some(bucket)).await?;
    let generation = version_id(ctx)?;
    delete_one(ctx, bucket, key, generation, bypass(ctx)).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(g) = generation {
        set(resp.headers_mut(), "x-amz-version-id", &g.to_string());
    }
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteRequest {
    #[serde(default)]
    quiet: bool,
    #[serde(default)]
    object: Vec<DeleteEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteEntry {
    key: String,
    version_id: Option<String>,
}

pub async fn delete_many(ctx: &XCtx, bucket: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.objects.delete", Some(bucket)).await?;
    let req: DeleteRequest = xml_body(ctx, body).await?;
    if req.object.is_empty() || req.object.len() > 1000 {
        return Err(S3Error::malformed_xml("a Delete request names 1 to 1000 objects"));
    }
    let by = bypass(ctx);
    let mut result = El::new("DeleteResult");
    for o in req.object {
        let generation = match o.version_id.as_deref() {
            None | Some("null") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| S3Error::invalid("Invalid version id specified")),
        };
        let outcome = match generation {
            Ok(g) => delete_one(ctx, bucket, &o.key, g, by).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) if req.quiet => {}
            Ok(()) => result.add(
                El::new("Deleted")
                    .child(El::text("Key", o.key.clone()))
                    .opt("VersionId", o.version_id.clone()),
            ),
            Err(e) => result.add(
                El::new("Error")
                    .child(El::text("Key", o.key.clone()))
                    .opt("VersionId", o.version_id.clone())
                    .child(El::text("Code", e.code))
                    .child(El::text("Message", e.message.clone())),
            ),
        }
    }
    Ok(document(result))
}

/// `encoding-type=url`: names in the response are percent-encoded (boto3 asks for it).
struct Names {
    url: bool,
}

impl Names {
    fn new(ctx: &XCtx) -> S3Result<Self> {
        match ctx.query.get("encoding-type") {
            None => Ok(Self { url: false }),
            Some("url") => Ok(Self { url: true }),
            Some(v) => Err(S3Error::invalid(format!(
                "Invalid Encoding Method specified in Request: {v}"
            ))),
        }
    }
    fn n(&self, s: &str) -> String {
        if self.url { uri_encode(s, true) } else { s.to_owned() }
    }
}

fn max_keys(ctx: &XCtx) -> S3Result<usize> {
    match ctx.int("max-keys")? {
        None => Ok(1000),
        Some(n) if n < 0 => Err(S3Error::invalid("max-keys cannot be negative")),
        Some(n) => Ok(n.min(1000) as usize),
    }
}

/// The first name after every name that starts with `marker` when it is a common
/// prefix (ends with the delimiter), else the first name after `marker` itself.
fn after(marker: &str, delimiter: Option<&str>) -> String {
    if let Some(d) = delimiter.filter(|d| !d.is_empty())
        && marker.ends_with(d)
    {
        let mut chars: Vec<char> = marker.chars().collect();
        if let Some(last) = chars.pop()
            && let Some(next) = char::from_u32(last as u32 + 1)
        {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    format!("{marker}\u{0}")
}

fn contents(ctx: &XCtx, rec: &ObjectRecord, names: &Names, version: bool) -> El {
    let el = El::new(if version { "Version" } else { "Contents" }).child(El::text("Key", names.n(&rec.name)));
    let el = if version {
        el.child(El::text("VersionId", rec.generation.to_string()))
            .child(El::text("IsLatest", rec.time_deleted.is_none().to_string()))
    } else {
        el
    };
    el.child(El::text("LastModified", iso(rec.updated)))
        .child(El::text("ETag", etag_for_listing(ctx, rec)))
        .child(El::text("Size", rec.size.to_string()))
        .child(El::text("StorageClass", rec.storage_class.clone()))
}

/// One page of a listing; `max-keys=0` asks for none. A page token the engine cannot
/// read is the client's error, answered with `bad_token`.
async fn fetch_page(
    ctx: &XCtx,
    bucket: &str,
    spec: ListSpec,
    bad_token: &str,
) -> S3Result<sealstore_storage::ListPage> {
    if spec.max_results == Some(0) {
        return Ok(sealstore_storage::ListPage::default());
    }
    let from_token = spec.page_token.is_some();
    ctx.app.storage.list_objects(bucket, spec).await.map_err(|e| match e {
        StorageError::BadRequest { .. } if from_token => S3Error::invalid(bad_token),
        e => e.into(),
    })
}

pub async fn list(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.list", Some(bucket)).await?;
    let v2 = match ctx.query.get("list-type") {
        None => false,
        Some("2") => true,
        Some(v) => return Err(S3Error::invalid(format!("Invalid list-type {v}"))),
    };
    let names = Names::new(ctx)?;
    let prefix = ctx.query.get("prefix").unwrap_or("").to_owned();
    let delimiter = ctx.query.get("delimiter").filter(|d| !d.is_empty()).map(str::to_owned);
    let max = max_keys(ctx)?;
    let (start_offset, page_token) = if v2 {
        match ctx.query.get("continuation-token") {
            Some(t) => (None, Some(t.to_owned())),
            None => (ctx.query.get("start-after").map(|s| after(s, None)), None),
        }
    } else {
        (ctx.query.get("marker").map(|m| after(m, delimiter.as_deref())), None)
    };
    let spec = ListSpec {
        prefix: prefix.clone(),
        delimiter: delimiter.clone(),
        max_results: Some(max),
        page_token,
        start_offset,
        ..Default::default()
    };
    let bad_token = if v2 {
        "The continuation token provided is incorrect"
    } else {
        "Invalid marker"
    };
    let page = fetch_page(ctx, bucket, spec, bad_token).await?;
    let truncated = page.next_page_token.is_some();
    let mut doc = El::new("ListBucketResult")
        .child(El::text("Name", bucket))
        .child(El::text("Prefix", names.n(&prefix)))
        .opt("Delimiter", delimiter.as_deref().map(|d| names.n(d)))
        .child(El::text("MaxKeys", max.to_string()))
        .opt("EncodingType", names.url.then_some("url"))
        .child(El::text("IsTruncated", truncated.to_string()));
    if v2 {
        doc = doc
            .child(El::text(
                "KeyCount",
                (page.items.len() + page.prefixes.len()).to_string(),
            ))
            .opt("ContinuationToken", ctx.query.get("continuation-token"))
            .opt("NextContinuationToken", page.next_page_token.clone())
            .opt("StartAfter", ctx.query.get("start-after").map(|s| names.n(s)));
    } else {
        doc = doc.child(El::text("Marker", names.n(ctx.query.get("marker").unwrap_or(""))));
        if truncated {
            // The last name or prefix of the page: the next request starts after it.
            let last_item = page.items.last().map(|r| r.name.clone());
            let last_prefix = page.prefixes.last().cloned();
            let last = match (last_item, last_prefix) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            doc = doc.opt("NextMarker", last.map(|l| names.n(&l)));
        }
    }
    for rec in &page.items {
        doc.add(contents(ctx, rec, &names, false));
    }
    for p in &page.prefixes {
        doc.add(El::new("CommonPrefixes").child(El::text("Prefix", names.n(p))));
    }
    Ok(document(doc))
}

pub async fn list_versions(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.list", Some(bucket)).await?;
    let names = Names::new(ctx)?;
    let prefix = ctx.query.get("prefix").unwrap_or("").to_owned();
    let delimiter = ctx.query.get("delimiter").filter(|d| !d.is_empty()).map(str::to_owned);
    let max = max_keys(ctx)?;
    let key_marker = ctx.query.get("key-marker").filter(|k| !k.is_empty());
    // The version-id marker is the listing's own page token (sealstore returns it as
    // NextVersionIdMarker); a key marker alone starts after that key.
    let (start_offset, page_token) = match (key_marker, ctx.query.get("version-id-marker").filter(|v| !v.is_empty())) {
        (_, Some(t)) => (None, Some(t.to_owned())),
        (Some(k), None) => (Some(after(k, delimiter.as_deref())), None),
        (None, None) => (None, None),
    };
    let spec = ListSpec {
        prefix: prefix.clone(),
        delimiter: delimiter.clone(),
        versions: true,
        max_results: Some(max),
        page_token,
        start_offset,
        ..Default::default()
    };
    let page = fetch_page(ctx, bucket, spec, "Invalid version id marker").await?;
    let truncated = page.next_page_token.is_some();
    // S3 lists each key's versions newest first.
    let mut page = page;
    page.items
        .sort_by(|a, b| a.name.cmp(&b.name).then(b.generation.cmp(&a.generation)));
    let mut doc = El::new("ListVersionsResult")
        .child(El::text("Name", bucket))
        .child(El::text("Prefix", names.n(&prefix)))
        .child(El::text("KeyMarker", names.n(key_marker.unwrap_or(""))))
        .child(El::text(
            "VersionIdMarker",
            ctx.query.get("version-id-marker").unwrap_or("").to_owned(),
        ))
        .opt("Delimiter", delimiter.as_deref().map(|d| names.n(d)))
        .child(El::text("MaxKeys", max.to_string()))
        .opt("EncodingType", names.url.then_some("url"))
        .child(El::text("IsTruncated", truncated.to_string()));
    if let Some(t) = &page.next_page_token {
        let last = page.items.last().map(|r| r.name.clone()).unwrap_or_default();
        doc = doc
            .child(El::text("NextKeyMarker", names.n(&last)))
            .child(El::text("NextVersionIdMarker", t.clone()));
    }
    for rec in &page.items {
        doc.add(contents(ctx, rec, &names, true));
    }
    for p in &page.prefixes {
        doc.add(El::new("CommonPrefixes").child(El::text("Prefix", names.n(p))));
    }
    Ok(document(doc))
}

/// `x-amz-copy-source` / `x-goog-copy-source`: `[/]bucket/key[?versionId=N]`, encoded.
pub fn copy_source(ctx: &XCtx) -> S3Result<(String, String, Option<i64>)> {
    let raw = ctx.amz_or_goog("copy-source").ok_or_else(|| {
        S3Error::invalid("Copy Source must mention the source bucket and key: sourcebucket/sourcekey.")
    })?;
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    let version = match query.split('&').find_map(|kv| kv.strip_prefix("versionId=")) {
        None | Some("null") => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| S3Error::invalid("Invalid version id specified"))?,
        ),
    };
    let path = crate::query::percent_decode(path, false)
        .ok_or_else(|| S3Error::invalid("The copy source is not validly percent-encoded."))?;
    let path = path.strip_prefix('/').unwrap_or(&path);
    match path.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_owned(), k.to_owned(), version)),
        _ => Err(S3Error::invalid(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.",
        )),
    }
}

pub async fn copy(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<Response> {
    let (src_bucket, src_key, src_version) = copy_source(ctx)?;
    require(ctx, "storage.objects.get", Some(&src_bucket)).await?;
    require(ctx, "storage.objects.create", Some(bucket)).await?;
    super::buckets::refuse_acl(ctx)?;
    let directive = ctx
        .amz_or_goog("metadata-directive")
        .unwrap_or("COPY")
        .trim()
        .to_ascii_uppercase();
    let replace = match directive.as_str() {
        "COPY" => false,
        "REPLACE" => true,
        d => {
            return Err(S3Error::invalid(format!(
                "Unknown metadata directive {d}: COPY or REPLACE."
            )));
        }
    };
    if ctx.header("x-amz-tagging-directive").is_some() {
        return Err(S3Error::not_implemented("Object tagging"));
    }
    let src = lookup(ctx, &src_bucket, &src_key, src_version, &Default::default()).await?;
    let src_csek = sse::customer_key(
        ctx,
        "x-amz-copy-source-server-side-encryption",
        "x-goog-copy-source-encryption",
    )?;
    let opened = ctx
        .app
        .storage
        .open(src.clone(), src_csek.as_ref().map(|(k, _)| k.as_ref()))?;
    check_conditions(
        ctx,
        "x-amz-copy-source-",
        &src,
        &etag(&src, Some(&opened.hashes)),
        false,
    )?;
    let choice = sse::write_key(ctx)?;
    let mut spec = spec_for(ctx, bucket, key, &choice).await?;
    let new_class = spec.storage_class.is_some();
    let new_key = choice.kms_key_name.is_some() || choice.csek.is_some() || choice.google_managed;
    if src_bucket == bucket
        && src_key == key
        && src_version.is_none_or(|v| v == src.generation)
        && !replace
        && !new_class
        && !new_key
    {
        return Err(S3Error::invalid_request(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    spec.preconditions = write_preconditions(ctx, bucket, key).await?;
    // A copy without encryption headers takes the destination bucket's default, as
    // S3 and GCS rewrite do: a copy onto itself with a new key re-keys it.
    let meta = if replace { Some(spec.meta.clone()) } else { None };
    let src_generation = src.generation;
    let (rec, hashes) = ctx.app.storage.copy(opened, spec, meta).await?;
    let mut resp = document(
        El::new("CopyObjectResult")
            .child(El::text("LastModified", iso(rec.updated)))
            .child(El::text("ETag", etag(&rec, Some(&hashes)))),
    );
    let h = resp.headers_mut();
    object_headers(h, &rec, Some(&hashes), choice.csek_md5.as_deref());
    h.remove("etag");
    set(h, "x-amz-copy-source-version-id", &src_generation.to_string());
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RetentionDoc {
    mode: Option<String>,
    retain_until_date: Option<String>,
}

pub async fn put_retention(ctx: &XCtx, bucket: &str, key: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.objects.update", Some(bucket)).await?;
    let doc: RetentionDoc = xml_body(ctx, body).await?;
    let r = match (doc.mode.as_deref(), doc.retain_until_date.as_deref()) {
        (Some(m), Some(u)) => Some(retention(m, u)?),
        (None, None) => None,
        _ => return Err(S3Error::malformed_xml("Mode and RetainUntilDate go together")),
    };
    let by = bypass(ctx);
    if by {
        require(ctx, "storage.objects.overrideUnlockedRetention", Some(bucket)).await?;
    }
    let p = ProtectionPatch {
        retention: Some(r),
        override_unlocked_retention: by,
        ..Default::default()
    };
    protect(ctx, bucket, key, p).await
}

pub async fn put_legal_hold(ctx: &XCtx, bucket: &str, key: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.objects.update", Some(bucket)).await?;
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct LegalHold {
        status: String,
    }
    let doc: LegalHold = xml_body(ctx, body).await?;
    let on = match doc.status.as_str() {
        "ON" => true,
        "OFF" => false,
        s => return Err(S3Error::malformed_xml(format!("Status must be ON or OFF, not {s}"))),
    };
    let p = ProtectionPatch {
        temporary_hold: Some(on),
        ..Default::default()
    };
    protect(ctx, bucket, key, p).await
}

async fn protect(ctx: &XCtx, bucket: &str, key: &str, p: ProtectionPatch) -> S3Result<Response> {
    let b = ctx.app.storage.get_bucket(bucket).await?;
    if p.retention.is_some() && !b.object_retention {
        return Err(S3Error::new(
            400,
            "InvalidRequest",
            "Bucket is missing Object Lock Configuration",
        ));
    }
    let now = ctx.app.storage.now();
    ctx.app
        .storage
        .update_object_meta(bucket, key, version_id(ctx)?, &Default::default(), move |r| {
            sealstore_storage::engine::apply_protection(r, &b, &p, now)
        })
        .await?;
    Ok(StatusCode::OK.into_response())
}

pub async fn get_retention(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.get", Some(bucket)).await?;
    let rec = ctx
        .app
        .storage
        .get_object(bucket, key, version_id(ctx)?, &Default::default())
        .await?;
    let Some(r) = rec.retention else {
        return Err(S3Error::new(
            404,
            "NoSuchObjectLockConfiguration",
            "The specified object does not have a ObjectLock configuration",
        ));
    };
    Ok(document(
        El::new("Retention")
            .child(El::text(
                "Mode",
                if r.mode == "Locked" { "COMPLIANCE" } else { "GOVERNANCE" },
            ))
            .child(El::text("RetainUntilDate", iso(r.retain_until))),
    ))
}

pub async fn get_legal_hold(ctx: &XCtx, bucket: &str, key: &str) -> S3Result<Response> {
    require(ctx, "storage.objects.get", Some(bucket)).await?;
    let rec = ctx
        .app
        .storage
        .get_object(bucket, key, version_id(ctx)?, &Default::default())
        .await?;
    Ok(document(El::new("LegalHold").child(El::text(
        "Status",
        if rec.temporary_hold { "ON" } else { "OFF" },
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_skip_past_common_prefixes() {
        assert_eq!(after("a/", Some("/")), "a0");
        assert_eq!(after("a/b", Some("/")), "a/b\u{0}");
        assert_eq!(after("a", None), "a\u{0}");
    }

    #[test]
    fn etag_lists_match_quoted_or_not() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("abc", "\"abc\""));
        assert!(etag_matches("x, \"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
