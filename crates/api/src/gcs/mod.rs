//! The GCS JSON API face: `/storage/v1`, `/upload/storage/v1` and
//! `/download/storage/v1`. Paths are routed on the raw, still-encoded path so an object
//! name (`/` arrives as `%2F`) is exactly one segment, decoded once.

mod acl;
mod buckets;
pub mod content_range;
pub mod error;
mod etag;
mod hmac_keys;
mod lifecycle;
mod line_endings;
pub mod media;
mod object_doc;
mod objects;
pub mod render;
pub mod rewrite_token;

use crate::AppState;
use crate::query::{Query, percent_decode};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use error::{GcsError, GcsResult};
use futures::{Stream, TryStreamExt};
use sealstore_storage::StorageError;
use sealstore_storage::model::Preconditions;

/// What a `/storage/v1/...` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Buckets,
    Bucket(String),
    Objects(String),
    Object(String, String),
    Compose(String, String),
    CopyTo {
        src_bucket: String,
        src: String,
        dst_bucket: String,
        dst: String,
    },
    RewriteTo {
        src_bucket: String,
        src: String,
        dst_bucket: String,
        dst: String,
    },
    MoveTo {
        bucket: String,
        src: String,
        dst: String,
    },
    ServiceAccount(String),
    /// `/acl`, `/defaultObjectAcl` (bucket) or `/o/{o}/acl` (`true`).
    Acl(String, bool),
    /// A GCS endpoint sealstore does not build: 501 naming it.
    NotBuilt(&'static str),
    BucketIam(String),
    BucketIamTest(String),
    LockRetention(String),
    RestoreObject(String, String),
    RestoreBucket(String),
    /// `projects/{p}/hmacKeys[/{accessId}]`.
    HmacKeys(String, Option<String>),
}

fn seg(s: &str) -> GcsResult<String> {
    percent_decode(s, false).ok_or_else(|| GcsError::invalid(format!("Malformed path segment \"{s}\".")))
}

pub fn parse_route(rest: &str) -> GcsResult<Route> {
    let parts: Vec<&str> = rest.split('/').collect();
    let nf = || GcsError::not_found(format!("Not Found: /{rest}"));
    Ok(match parts.as_slice() {
        // `POST /storage/v1/b/?project=…` creates a bucket too, as on GCS.
        ["b"] | ["b", ""] => Route::Buckets,
        ["b", b] => Route::Bucket(seg(b)?),
        ["b", b, "o"] => Route::Objects(seg(b)?),
        ["b", b, "o", o] => Route::Object(seg(b)?, seg(o)?),
        ["b", b, "o", o, "compose"] => Route::Compose(seg(b)?, seg(o)?),
        ["b", sb, "o", so, "copyTo", "b", db, "o", d] => Route::CopyTo {
            src_bucket: seg(sb)?,
            src: seg(so)?,
            dst_bucket: seg(db)?,
            dst: seg(d)?,
        },
        ["b", sb, "o", so, "rewriteTo", "b", db, "o", d] => Route::RewriteTo {
            src_bucket: seg(sb)?,
            src: seg(so)?,
            dst_bucket: seg(db)?,
            dst: seg(d)?,
        },
        ["b", b, "o", so, "moveTo", "o", d] => Route::MoveTo {
            bucket: seg(b)?,
            src: seg(so)?,
            dst: seg(d)?,
        },
        ["projects", p, "serviceAccount"] => Route::ServiceAccount(seg(p)?),
        ["b", b, "iam"] => Route::BucketIam(seg(b)?),
        ["b", b, "lockRetentionPolicy"] => Route::LockRetention(seg(b)?),
        ["b", b, "iam", "testPermissions"] => Route::BucketIamTest(seg(b)?),
        ["b", b, "acl", ..] | ["b", b, "defaultObjectAcl", ..] => Route::Acl(seg(b)?, false),
        ["b", b, "o", _, "acl", ..] => Route::Acl(seg(b)?, true),
        ["b", _, "managedFolders", ..] => Route::NotBuilt("managed folders"),
        ["b", _, "anywhereCaches", ..] => Route::NotBuilt("Anywhere Cache"),
        ["b", _, "folders", ..] => Route::NotBuilt("folders (hierarchical namespace)"),
        ["b", _, "notificationConfigs", ..] => Route::NotBuilt("Pub/Sub notifications"),
        ["b", _, "operations", ..] => Route::NotBuilt("long-running bucket operations"),
        ["channels", "stop"] => Route::NotBuilt("object change notification channels"),
        ["b", b, "o", o, "restore"] => Route::RestoreObject(seg(b)?, seg(o)?),
        ["b", b, "restore"] => Route::RestoreBucket(seg(b)?),
        ["projects", p, "hmacKeys"] => Route::HmacKeys(seg(p)?, None),
        ["projects", p, "hmacKeys", id] => Route::HmacKeys(seg(p)?, Some(seg(id)?)),
        _ => return Err(nf()),
    })
}

/// The parts of a request every handler needs.
pub struct Ctx {
    pub app: AppState,
    pub principal: String,
    pub method: Method,
    pub query: Query,
    pub headers: HeaderMap,
    /// This server's origin as the client reached it, for selfLink / mediaLink.
    pub base: String,
}

impl Ctx {
    fn new(
        app: AppState,
        principal: String,
        method: Method,
        uri: &Uri,
        headers: HeaderMap,
        base: String,
    ) -> GcsResult<Self> {
        let query = Query::parse(uri.query()).map_err(GcsError::invalid)?;
        if let Some(alt) = query.get("alt")
            && alt != "json"
            && alt != "media"
        {
            return Err(GcsError::new(
                StatusCode::BAD_REQUEST,
                "invalidAltValue",
                format!("Invalid value for alt: {alt}"),
            ));
        }
        if let Some(p) = query.get("projection")
            && p != "full"
            && p != "noAcl"
        {
            return Err(GcsError::new(
                StatusCode::BAD_REQUEST,
                "invalidParameter",
                format!("Invalid value for projection: {p}"),
            ));
        }
        Ok(Self {
            app,
            principal,
            method,
            query,
            headers,
            base,
        })
    }

    pub fn int(&self, key: &str) -> GcsResult<Option<i64>> {
        self.query
            .i64(key)
            .map_err(|m| GcsError::new(StatusCode::BAD_REQUEST, "invalidParameter", m))
    }

    /// An integer parameter the request cannot do without: 400 `required` with `message`.
    pub fn required_int(&self, key: &str, message: &str) -> GcsResult<i64> {
        self.int(key)?
            .ok_or_else(|| GcsError::new(StatusCode::BAD_REQUEST, "required", message))
    }

    pub fn flag(&self, key: &str) -> GcsResult<bool> {
        self.query
            .bool(key)
            .map_err(|m| GcsError::new(StatusCode::BAD_REQUEST, "invalidParameter", m))
    }

    /// `If-Match` / `If-None-Match` of this request.
    pub fn etags(&self) -> etag::EtagConditions {
        etag::EtagConditions::from_headers(&self.headers)
    }

    /// A bucket's `ifMetagenerationMatch` for a write, with the ETag conditions checked
    /// against `current` and then pinned to its metageneration, so the write fails if the
    /// bucket changed after the check.
    pub async fn bucket_write_guard(&self, bucket: &str) -> GcsResult<Option<i64>> {
        let query = self.int("ifMetagenerationMatch")?;
        let etags = self.etags();
        if etags.is_empty() {
            return Ok(query);
        }
        let current = self.app.storage.get_bucket(bucket).await?;
        etags.check(&render::bucket_etag(&current), false)?;
        Ok(query.or(Some(current.metageneration)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `ifGenerationMatch` & co (`prefix` = "Source" for copy sources). The Python
    /// client spells one of them `ifMetaGenerationNotMatch`.
    pub fn preconditions(&self, prefix: &str) -> GcsResult<Preconditions> {
        let k = |s: &str| format!("if{prefix}{s}");
        Ok(Preconditions {
            if_generation_match: self.int(&k("GenerationMatch"))?,
            if_generation_not_match: self.int(&k("GenerationNotMatch"))?,
            if_metageneration_match: self.int(&k("MetagenerationMatch"))?,
            if_metageneration_not_match: match self.int(&k("MetagenerationNotMatch"))? {
                Some(v) => Some(v),
                None => self.int(&k("MetaGenerationNotMatch"))?,
            },
        })
    }

    /// `maxResults`: 1 or more (capped at 1000 by the engine).
    pub fn max_results(&self) -> GcsResult<Option<usize>> {
        match self.int("maxResults")? {
            Some(m) if m < 1 => Err(GcsError::new(
                StatusCode::BAD_REQUEST,
                "invalidParameter",
                format!("Invalid value for maxResults: {m}"),
            )),
            Some(m) => Ok(Some(m.min(1000) as usize)),
            None => Ok(None),
        }
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.trim().parse().ok())
    }

    /// The customer-supplied key in `{prefix}-algorithm/-key/-key-sha256` headers
    /// (`x-goog-encryption` or `x-goog-copy-source-encryption`), if any.
    pub fn csek(&self, prefix: &str) -> GcsResult<Option<std::sync::Arc<sealstore_storage::CustomerKey>>> {
        let h = |suffix: &str| self.header(&format!("{prefix}-{suffix}"));
        Ok(
            sealstore_storage::CustomerKey::from_parts(h("algorithm"), h("key"), h("key-sha256"))?
                .map(std::sync::Arc::new),
        )
    }

    pub fn project(&self) -> String {
        self.query.get("project").unwrap_or("<none>").to_owned()
    }
}

/// A request body as a stream for the storage engine. If the request declared a
/// `Content-Length`, a body that ends early is an error, so a truncated upload never
/// becomes an object.
pub fn body_stream(body: Body, content_length: Option<u64>) -> impl Stream<Item = Result<Bytes, StorageError>> + Send {
    let inner = body
        .into_data_stream()
        .map_err(|e| StorageError::invalid(format!("The request body could not be read: {e}")));
    futures::stream::unfold(
        (Box::pin(inner), 0u64, false),
        move |(mut inner, seen, done)| async move {
            use futures::StreamExt;
            if done {
                return None;
            }
            match inner.next().await {
                Some(Ok(b)) => {
                    let seen = seen + b.len() as u64;
                    Some((Ok(b), (inner, seen, false)))
                }
                Some(Err(e)) => Some((Err(e), (inner, seen, true))),
                None => match content_length {
                    Some(want) if seen != want => Some((
                        Err(StorageError::invalid(format!(
                            "The request body ended after {seen} bytes, but Content-Length declared {want}."
                        ))),
                        (inner, seen, true),
                    )),
                    _ => None,
                },
            }
        },
    )
}

/// Reads a small JSON body (metadata); empty means `{}`.
pub async fn json_body(body: Body, limit: usize) -> GcsResult<serde_json::Value> {
    let bytes = crate::body::read_limited(body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::json!({}));
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| GcsError::new(StatusCode::BAD_REQUEST, "parseError", format!("Parse Error: {e}")))?;
    if !v.is_object() {
        return Err(GcsError::new(
            StatusCode::BAD_REQUEST,
            "parseError",
            "The request body must be a JSON object.",
        ));
    }
    Ok(v)
}

fn respond(r: GcsResult<Response>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Media endpoints answer errors in plain text, as GCS does.
fn respond_media(r: GcsResult<Response>) -> Response {
    r.unwrap_or_else(GcsError::into_plain_response)
}

/// The IAM resource name of a bucket's policy.
pub fn bucket_resource(bucket: &str) -> String {
    format!("projects/_/buckets/{bucket}")
}

/// Where a soft-deleted bucket's IAM policy waits for a restore: a name no request
/// can address (`#` never appears in a bucket name).
pub fn soft_bucket_resource(bucket: &str, generation: i64) -> String {
    format!("projects/_/buckets/{bucket}#{generation}")
}

/// The resources whose policies apply to a bucket: its own, then its project's.
pub async fn bucket_chain(app: &AppState, bucket: &str) -> Vec<String> {
    let mut chain = vec![bucket_resource(bucket)];
    if let Ok(b) = app.storage.get_bucket(bucket).await {
        chain.push(format!("projects/{}", b.project));
    }
    chain
}

/// Checks `permission` for the caller on a bucket (its policy, then its project's) or,
/// without a bucket, on the request's project. Denials are audited.
pub async fn require(ctx: &Ctx, permission: &'static str, bucket: Option<&str>) -> GcsResult<()> {
    let project = ctx.project();
    check_permission(
        &ctx.app,
        &ctx.principal,
        &ctx.method,
        permission,
        bucket,
        Some(&project),
    )
    .await
    .map_err(|m| GcsError::new(StatusCode::FORBIDDEN, "forbidden", m))
}

/// The permission check both storage APIs make: `permission` on `bucket` (its policy,
/// then its project's) or, without a bucket, on `project`. A denial is audited and
/// comes back as the message to answer with.
pub async fn check_permission(
    app: &AppState,
    principal: &str,
    method: &Method,
    permission: &'static str,
    bucket: Option<&str>,
    project: Option<&str>,
) -> Result<(), String> {
    if app.is_dev_owner(principal) {
        return Ok(());
    }
    let (chain, public_ok) = match bucket {
        // Public access prevention: grants to allUsers/allAuthenticatedUsers do not
        // reach an enforced bucket or its objects.
        Some(b) => (bucket_chain(app, b).await, app.storage.cached_bucket_public_ok(b)),
        None => (vec![format!("projects/{}", project.unwrap_or("<none>"))], true),
    };
    if app.allowed_where(principal, permission, &chain, public_ok).await {
        return Ok(());
    }
    app.audit(
        principal,
        &format!("{method} {}", chain[0]),
        &chain[0],
        permission,
        "DENIED",
    );
    let who = principal.split_once(':').map_or(principal, |(_, id)| id);
    Err(format!("{who} does not have {permission} access to {}.", chain[0]))
}

/// Whether the caller may replace existing objects in `bucket` (GCS requires
/// `storage.objects.delete` for an overwrite, beyond `storage.objects.create`).
pub async fn may_replace(ctx: &Ctx, bucket: &str) -> bool {
    may_replace_for(&ctx.app, &ctx.principal, bucket).await
}

/// `may_replace` for any API's caller.
pub async fn may_replace_for(app: &AppState, principal: &str, bucket: &str) -> bool {
    if app.is_dev_owner(principal) {
        return true;
    }
    let mut chain = vec![bucket_resource(bucket)];
    // `require` has just loaded this bucket, so its project is cached.
    if let Some(p) = app.storage.cached_bucket_project(bucket) {
        chain.push(format!("projects/{p}"));
    }
    app.allowed_where(
        principal,
        "storage.objects.delete",
        &chain,
        app.storage.cached_bucket_public_ok(bucket),
    )
    .await
}

/// `/storage/v1/...`: the JSON API (and `alt=media` downloads).
pub async fn json_api(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    axum::Extension(base): axum::Extension<crate::observe::LinkBase>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "alt=media"));
    let respond = if media { respond_media } else { respond };
    respond(
        async {
            let ctx = Ctx::new(app, principal.0, method, &uri, headers, base.0)?;
            let rest = uri.path().strip_prefix("/storage/v1/").unwrap_or("");
            let route = parse_route(rest)?;
            let m = ctx.method.clone();
            match (&m, route) {
                (&Method::GET, Route::Buckets) => {
                    require(&ctx, "storage.buckets.list", None).await?;
                    buckets::list(&ctx).await
                }
                (&Method::POST, Route::Buckets) => {
                    require(&ctx, "storage.buckets.create", None).await?;
                    buckets::create(&ctx, body).await
                }
                (&Method::GET | &Method::HEAD, Route::Bucket(b)) => {
                    require(&ctx, "storage.buckets.get", Some(&b)).await?;
                    buckets::get(&ctx, &b).await
                }
                (&Method::PATCH | &Method::PUT, Route::Bucket(b)) => {
                    require(&ctx, "storage.buckets.update", Some(&b)).await?;
                    buckets::patch(&ctx, &b, body, m == Method::PUT).await
                }
                (&Method::POST, Route::LockRetention(b)) => {
                    require(&ctx, "storage.buckets.update", Some(&b)).await?;
                    buckets::lock_retention(&ctx, &b).await
                }
                (&Method::POST, Route::RestoreBucket(b)) => {
                    require(&ctx, "storage.buckets.restore", None).await?;
                    buckets::restore(&ctx, &b).await
                }
                (&Method::POST, Route::RestoreObject(b, o)) => {
                    require(&ctx, "storage.objects.restore", Some(&b)).await?;
                    require(&ctx, "storage.objects.create", Some(&b)).await?;
                    objects::restore(&ctx, &b, &o).await
                }
                (&Method::DELETE, Route::Bucket(b)) => {
                    require(&ctx, "storage.buckets.delete", Some(&b)).await?;
                    buckets::delete(&ctx, &b).await
                }
                (&Method::GET, Route::BucketIam(b)) => {
                    require(&ctx, "storage.buckets.getIamPolicy", Some(&b)).await?;
                    buckets::get_iam(&ctx, &b).await
                }
                (&Method::PUT, Route::BucketIam(b)) => {
                    require(&ctx, "storage.buckets.setIamPolicy", Some(&b)).await?;
                    buckets::set_iam(&ctx, &b, body).await
                }
                (&Method::GET, Route::BucketIamTest(b)) => buckets::test_iam(&ctx, &b, uri.query()).await,
                (&Method::GET, Route::Objects(b)) => {
                    require(&ctx, "storage.objects.list", Some(&b)).await?;
                    objects::list(&ctx, &b).await
                }
                (&Method::GET | &Method::HEAD, Route::Object(b, o)) => {
                    require(&ctx, "storage.objects.get", Some(&b)).await?;
                    if ctx.query.get("alt") == Some("media") {
                        media::download(&ctx, &b, &o).await
                    } else {
                        objects::get(&ctx, &b, &o).await
                    }
                }
                (&Method::PATCH | &Method::PUT, Route::Object(b, o)) => {
                    require(&ctx, "storage.objects.update", Some(&b)).await?;
                    objects::patch(&ctx, &b, &o, body, m == Method::PUT).await
                }
                (&Method::DELETE, Route::Object(b, o)) => {
                    require(&ctx, "storage.objects.delete", Some(&b)).await?;
                    objects::delete(&ctx, &b, &o).await
                }
                (&Method::POST, Route::Compose(b, o)) => {
                    require(&ctx, "storage.objects.get", Some(&b)).await?;
                    require(&ctx, "storage.objects.create", Some(&b)).await?;
                    objects::compose(&ctx, &b, &o, body).await
                }
                (
                    &Method::POST,
                    Route::CopyTo {
                        src_bucket,
                        src,
                        dst_bucket,
                        dst,
                    },
                ) => {
                    require(&ctx, "storage.objects.get", Some(&src_bucket)).await?;
                    require(&ctx, "storage.objects.create", Some(&dst_bucket)).await?;
                    objects::copy(&ctx, &src_bucket, &src, &dst_bucket, &dst, body).await
                }
                (
                    &Method::POST,
                    Route::RewriteTo {
                        src_bucket,
                        src,
                        dst_bucket,
                        dst,
                    },
                ) => {
                    require(&ctx, "storage.objects.get", Some(&src_bucket)).await?;
                    require(&ctx, "storage.objects.create", Some(&dst_bucket)).await?;
                    objects::rewrite(&ctx, &src_bucket, &src, &dst_bucket, &dst, body).await
                }
                (&Method::POST, Route::MoveTo { bucket, src, dst }) => {
                    // A move reads the source, deletes it and creates the destination.
                    for p in [
                        "storage.objects.get",
                        "storage.objects.delete",
                        "storage.objects.create",
                    ] {
                        require(&ctx, p, Some(&bucket)).await?;
                    }
                    objects::move_object(&ctx, &bucket, &src, &dst).await
                }
                // `o/watch` and `o/bulkRestore` look like object names; only POST means them.
                (&Method::POST, Route::Object(_, o)) if o == "watch" || o == "bulkRestore" => Err(GcsError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "notImplemented",
                    format!("objects.{o} is not supported by sealstore."),
                )),
                (_, Route::HmacKeys(p, id)) => hmac_keys::endpoint(&ctx, &p, id.as_deref(), body).await,
                (_, Route::Acl(b, object)) => {
                    require(&ctx, "storage.buckets.get", Some(&b)).await?;
                    acl::endpoint(&ctx, &b, object).await
                }
                (_, Route::NotBuilt(what)) => Err(GcsError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "notImplemented",
                    format!("{what} are not supported by sealstore."),
                )),
                // The project may be named by id or by number: both give one agent.
                (&Method::GET, Route::ServiceAccount(p)) => Ok(axum::Json(serde_json::json!({
                    "kind": "storage#serviceAccount",
                    "email_address": sealstore_iam::roles::storage_service_agent_email(&p),
                }))
                .into_response()),
                (m, r) => Err(GcsError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "methodNotAllowed",
                    format!("Method {m} is not allowed on {r:?}."),
                )),
            }
        }
        .await,
    )
}

/// `/upload/storage/v1/b/{bucket}/o`: media, multipart and resumable uploads.
pub async fn upload_api(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    axum::Extension(base): axum::Extension<crate::observe::LinkBase>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Metadata and policy errors on uploads are JSON, as on GCS; errors of the
    // resumable data protocol (a request on a session) are plain text.
    let chunk = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("upload_id=")));
    let respond = if chunk { respond_media } else { respond };
    respond(
        async {
            let ctx = Ctx::new(app, principal.0, method, &uri, headers, base.0)?;
            // apitools (gsutil) starts large uploads under `/resumable/upload/...`.
            let path = uri.path();
            let rest = path
                .strip_prefix("/upload/storage/v1/")
                .or_else(|| path.strip_prefix("/resumable/upload/storage/v1/"))
                .unwrap_or("");
            let Route::Objects(bucket) = parse_route(rest)? else {
                return Err(GcsError::not_found(format!("Not Found: {path}")));
            };
            // A session is bound to the bucket it was started for: the URL cannot move
            // it, and the permission check is made on the session's own bucket.
            if let Some(id) = ctx.query.get("upload_id") {
                let (session_bucket, _) = ctx.app.storage.session_target(id).await?;
                if session_bucket != bucket {
                    return Err(GcsError::invalid(format!(
                        "The upload session was started for bucket {session_bucket}, not {bucket}."
                    )));
                }
            }
            require(&ctx, "storage.objects.create", Some(&bucket)).await?;
            media::upload(&ctx, &bucket, body).await
        }
        .await,
    )
}

/// `/download/storage/v1/b/{bucket}/o/{object}?alt=media`.
pub async fn download_api(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    axum::Extension(base): axum::Extension<crate::observe::LinkBase>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    respond_media(
        async {
            let ctx = Ctx::new(app, principal.0, method, &uri, headers, base.0)?;
            let rest = uri.path().strip_prefix("/download/storage/v1/").unwrap_or("");
            match parse_route(rest)? {
                Route::Object(b, o) if ctx.method == Method::GET || ctx.method == Method::HEAD => {
                    require(&ctx, "storage.objects.get", Some(&b)).await?;
                    media::download(&ctx, &b, &o).await
                }
                _ => Err(GcsError::not_found(format!("Not Found: {}", uri.path()))),
            }
        }
        .await,
    )
}

/// `kmsKeyName` / `destinationKmsKeyName`: a versioned name is refused, as GCS does.
pub fn key_param(ctx: &Ctx, param: &str) -> GcsResult<Option<String>> {
    match ctx.query.get(param).filter(|k| !k.is_empty()) {
        None => Ok(None),
        Some(k) if k.contains("/cryptoKeyVersions/") => {
            Err(GcsError::invalid(format!("Bad Cloud KMS crypto key: {k}")))
        }
        Some(k) => Ok(Some(k.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_object_names_once() {
        assert_eq!(
            parse_route("b/bkt/o/dir%2Fa%20b.txt").unwrap(),
            Route::Object("bkt".into(), "dir/a b.txt".into())
        );
        assert_eq!(
            parse_route("b/bkt/o/a%252F").unwrap(),
            Route::Object("bkt".into(), "a%2F".into())
        );
        assert!(matches!(
            parse_route("b/s/o/x/copyTo/b/d/o/y").unwrap(),
            Route::CopyTo { .. }
        ));
        assert_eq!(
            parse_route("b/bkt/o/a%2Fb/moveTo/o/c%2Fd").unwrap(),
            Route::MoveTo {
                bucket: "bkt".into(),
                src: "a/b".into(),
                dst: "c/d".into()
            }
        );
        assert_eq!(parse_route("b/").unwrap(), Route::Buckets);
        assert!(parse_route("b/bkt/x").is_err());
    }
}
