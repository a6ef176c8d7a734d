//! The XML API: S3-compatible (and GCS XML) access to the same engine, keys and rules.
//! Path style (`/{bucket}/{key}`) on the same port as the other APIs, whose first path
//! segments are reserved; virtual-host style (`{bucket}.{domain}`) with `--xml-domain`.

pub mod auth;
mod buckets;
pub mod error;
mod multipart;
mod objects;
mod payload;
mod render;
pub mod sigv4;
mod sse;

use crate::AppState;
use crate::query::{Query, percent_decode};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use error::{S3Error, S3Result};

/// First path segments the JSON, upload, KMS and ops APIs own: never bucket names.
pub use sealstore_storage::names::RESERVED_BUCKET_NAMES as RESERVED;

/// Whether a path (after any virtual-host rewrite) belongs to the XML API.
pub fn is_xml_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    !RESERVED.contains(&first)
}

/// A virtual-host request, rewritten to path style: the path as the client sent it,
/// which its signature covers.
#[derive(Clone, Debug)]
pub struct OriginalPath(pub String);

/// `--xml-domain`: `{bucket}.{domain}` requests become `/{bucket}/…`, before routing.
pub async fn virtual_host(State(app): State<AppState>, mut req: Request, next: axum::middleware::Next) -> Response {
    if let Some(domain) = app.xml_domain.as_deref() {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| {
                h.rsplit_once(':').map_or(h, |(name, port)| {
                    if port.bytes().all(|b| b.is_ascii_digit()) {
                        name
                    } else {
                        h
                    }
                })
            })
            .map(str::to_ascii_lowercase);
        if let Some(bucket) = host
            .as_deref()
            .and_then(|h| h.strip_suffix(domain))
            .and_then(|b| b.strip_suffix('.'))
            && !bucket.is_empty()
        {
            let original = req.uri().path().to_owned();
            let pq = match req.uri().query() {
                Some(q) => format!("/{bucket}{original}?{q}"),
                None => format!("/{bucket}{original}"),
            };
            match pq.parse::<axum::http::Uri>() {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => return S3Error::invalid("The request path is not valid.").into_response(),
            }
            req.extensions_mut().insert(OriginalPath(original));
        }
    }
    next.run(req).await
}

/// Everything an XML handler needs about its request.
pub struct XCtx {
    pub app: AppState,
    pub principal: String,
    /// The project the caller's HMAC key belongs to, if signed with one.
    pub key_project: Option<String>,
    pub method: Method,
    pub query: Query,
    pub raw_query: Option<String>,
    pub headers: HeaderMap,
    pub base: String,
    pub signature: Option<auth::Verified>,
}

impl XCtx {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `x-amz-{suffix}` or, from GCS XML clients, `x-goog-{suffix}`.
    pub fn amz_or_goog(&self, suffix: &str) -> Option<&str> {
        self.header(&format!("x-amz-{suffix}"))
            .or_else(|| self.header(&format!("x-goog-{suffix}")))
    }

    pub fn has(&self, key: &str) -> bool {
        self.query.get(key).is_some()
    }

    /// The project for project-level requests (ListBuckets, CreateBucket):
    /// `x-goog-project-id`, else the HMAC key's project.
    pub fn project(&self) -> S3Result<String> {
        self.header("x-goog-project-id")
            .map(str::to_owned)
            .or_else(|| self.key_project.clone())
            .ok_or_else(|| {
                S3Error::invalid(
                    "No project: send x-goog-project-id, or sign the request with an HMAC key (its project is used).",
                )
            })
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.trim().parse().ok())
    }

    pub fn int(&self, key: &str) -> S3Result<Option<i64>> {
        self.query.i64(key).map_err(S3Error::invalid)
    }
}

/// Checks `permission` on a bucket (or the project) as the JSON API does; denials are
/// audited and answer AccessDenied.
pub async fn require(ctx: &XCtx, permission: &'static str, bucket: Option<&str>) -> S3Result<()> {
    let project = match bucket {
        // A bucket that does not exist is NoSuchBucket, as on S3: existence is not a
        // secret in a global namespace (creating it would tell anyway).
        Some(b) => match ctx.app.storage.get_bucket(b).await {
            Err(sealstore_storage::StorageError::NotFound(m)) => {
                return Err(S3Error::new(404, "NoSuchBucket", m).with_resource(format!("/{b}")));
            }
            _ => None,
        },
        None => Some(ctx.project()?),
    };
    crate::gcs::check_permission(
        &ctx.app,
        &ctx.principal,
        &ctx.method,
        permission,
        bucket,
        project.as_deref(),
    )
    .await
    .map_err(|m| {
        let mut e = S3Error::access_denied(m);
        if let Some(b) = bucket {
            e = e.with_resource(format!("/{b}"));
        }
        e
    })
}

/// The bucket and key of a path-style path, each percent-decoded once.
fn split_path(path: &str) -> S3Result<(Option<String>, Option<String>)> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    if rest.is_empty() {
        return Ok((None, None));
    }
    let (b, k) = rest.split_once('/').unwrap_or((rest, ""));
    let dec =
        |s: &str| percent_decode(s, false).ok_or_else(|| S3Error::invalid("Malformed path: bad percent-encoding."));
    let bucket = dec(b)?;
    let key = if k.is_empty() { None } else { Some(dec(k)?) };
    Ok((Some(bucket), key))
}

/// Subresources sealstore does not build: 501 naming them, never a silent default.
const NOT_BUILT: &[(&str, &str)] = &[
    (
        "acl",
        "ACLs (sealstore buckets use IAM with uniform bucket-level access)",
    ),
    ("policy", "Bucket policies (use IAM)"),
    ("cors", "CORS configuration"),
    (
        "lifecycle",
        "Lifecycle configuration over the XML API (use the JSON API's lifecycle)",
    ),
    ("website", "Static website configuration"),
    ("logging", "Access logging configuration"),
    ("notification", "Event notifications"),
    ("replication", "Replication"),
    ("requestPayment", "Requester pays"),
    ("accelerate", "Transfer acceleration"),
    ("ownershipControls", "Object ownership controls"),
    (
        "publicAccessBlock",
        "Public access block configuration (use iamConfiguration on the JSON API)",
    ),
    ("intelligent-tiering", "Intelligent-Tiering"),
    ("inventory", "Inventory"),
    ("metrics", "Request metrics configuration"),
    ("analytics", "Storage class analysis"),
    ("tagging", "Object and bucket tagging"),
    ("torrent", "BitTorrent"),
    ("select", "S3 Select"),
    ("restore", "Restoring archived objects"),
    ("attributes", "GetObjectAttributes"),
    ("object-lambda", "Object Lambda"),
    ("session", "S3 Express sessions"),
    ("metadataTable", "Metadata tables"),
];

/// The XML API's entry point (the router's fallback).
pub async fn handle(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    axum::Extension(base): axum::Extension<crate::observe::LinkBase>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if !is_xml_path(&path) {
        // `/{reserved}` alone is an S3 client addressing a bucket by that name.
        if path.trim_matches('/').split('/').count() == 1 {
            return reserved_bucket().await;
        }
        return crate::ops::not_found(parts.method, parts.uri).await;
    }
    let signature = parts.extensions.get::<auth::Verified>().cloned();
    let key_project = parts.extensions.get::<auth::KeyProject>().map(|k| k.0.clone());
    let result = async {
        let query = Query::parse(parts.uri.query()).map_err(S3Error::invalid)?;
        let ctx = XCtx {
            app,
            principal: principal.0,
            key_project,
            method: parts.method.clone(),
            query,
            raw_query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            base: base.0,
            signature,
        };
        let (bucket, key) = split_path(&path)?;
        if let Some((_, what)) = NOT_BUILT.iter().find(|(q, _)| ctx.has(q)) {
            return Err(S3Error::not_implemented(what));
        }
        dispatch(&ctx, bucket, key, body).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A request for a bucket whose name is one of the reserved path segments.
pub async fn reserved_bucket() -> Response {
    S3Error::new(
        400,
        "InvalidBucketName",
        "The specified bucket is not valid: the name is reserved (it is a path of the JSON, upload, KMS or ops API on this port).",
    )
    .into_response()
}

async fn dispatch(ctx: &XCtx, bucket: Option<String>, key: Option<String>, body: Body) -> S3Result<Response> {
    let m = &ctx.method;
    let Some(bucket) = bucket else {
        return match *m {
            Method::GET => {
                require(ctx, "storage.buckets.list", None).await?;
                buckets::list_buckets(ctx).await
            }
            _ => Err(method_not_allowed(m)),
        };
    };
    let Some(key) = key else {
        return match (m, ctx) {
            (&Method::PUT, c) if c.has("versioning") => buckets::put_versioning(ctx, &bucket, body).await,
            (&Method::PUT, c) if c.has("encryption") => buckets::put_encryption(ctx, &bucket, body).await,
            (&Method::PUT, c) if c.has("object-lock") => buckets::put_object_lock(ctx, &bucket, body).await,
            (&Method::PUT, _) => buckets::create(ctx, &bucket, body).await,
            (&Method::GET, c) if c.has("location") => buckets::location(ctx, &bucket).await,
            (&Method::GET, c) if c.has("versioning") => buckets::get_versioning(ctx, &bucket).await,
            (&Method::GET, c) if c.has("encryption") => buckets::get_encryption(ctx, &bucket).await,
            (&Method::GET, c) if c.has("object-lock") => buckets::get_object_lock(ctx, &bucket).await,
            (&Method::GET, c) if c.has("versions") => objects::list_versions(ctx, &bucket).await,
            (&Method::GET, c) if c.has("uploads") => multipart::list_uploads(ctx, &bucket).await,
            (&Method::GET, _) => objects::list(ctx, &bucket).await,
            (&Method::HEAD, _) => buckets::head(ctx, &bucket).await,
            (&Method::DELETE, c) if c.has("encryption") => buckets::delete_encryption(ctx, &bucket).await,
            (&Method::DELETE, _) => buckets::delete(ctx, &bucket).await,
            (&Method::POST, c) if c.has("delete") => objects::delete_many(ctx, &bucket, body).await,
            _ => Err(method_not_allowed(m)),
        };
    };
    match (m, ctx) {
        (&Method::PUT, c) if c.has("uploadId") => multipart::upload_part(ctx, &bucket, &key, body).await,
        (&Method::PUT, c) if c.has("retention") => objects::put_retention(ctx, &bucket, &key, body).await,
        (&Method::PUT, c) if c.has("legal-hold") => objects::put_legal_hold(ctx, &bucket, &key, body).await,
        (&Method::PUT, c) if c.amz_or_goog("copy-source").is_some() => objects::copy(ctx, &bucket, &key).await,
        (&Method::PUT, _) => objects::put(ctx, &bucket, &key, body).await,
        (&Method::GET, c) if c.has("uploadId") => multipart::list_parts(ctx, &bucket, &key).await,
        (&Method::GET, c) if c.has("retention") => objects::get_retention(ctx, &bucket, &key).await,
        (&Method::GET, c) if c.has("legal-hold") => objects::get_legal_hold(ctx, &bucket, &key).await,
        (&Method::GET | &Method::HEAD, _) => objects::get(ctx, &bucket, &key).await,
        (&Method::DELETE, c) if c.has("uploadId") => multipart::abort(ctx, &bucket, &key).await,
        (&Method::DELETE, _) => objects::delete(ctx, &bucket, &key).await,
        (&Method::POST, c) if c.has("uploads") => multipart::create(ctx, &bucket, &key).await,
        (&Method::POST, c) if c.has("uploadId") => multipart::complete(ctx, &bucket, &key, body).await,
        _ => Err(method_not_allowed(m)),
    }
}

fn method_not_allowed(m: &Method) -> S3Error {
    S3Error::new(
        405,
        "MethodNotAllowed",
        format!("The specified method ({m}) is not allowed against this resource."),
    )
}

/// A small XML request body (configuration documents), parsed with quick-xml.
pub async fn xml_body<T: serde::de::DeserializeOwned>(ctx: &XCtx, body: Body) -> S3Result<T> {
    let bytes = payload::read_small(ctx, body).await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| S3Error::malformed_xml("the body is not UTF-8"))?;
    quick_xml::de::from_str(text).map_err(S3Error::malformed_xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_bucket_and_key() {
        assert_eq!(split_path("/").unwrap(), (None, None));
        assert_eq!(split_path("/b").unwrap(), (Some("b".into()), None));
        assert_eq!(split_path("/b/").unwrap(), (Some("b".into()), None));
        assert_eq!(
            split_path("/b/dir/a%20b%2Fc").unwrap(),
            (Some("b".into()), Some("dir/a b/c".into()))
        );
        assert!(split_path("/b/%zz").is_err());
        assert!(!is_xml_path("/storage/v1/b"));
        assert!(is_xml_path("/bucket/storage"));
        assert!(is_xml_path("/"));
    }
}
