//! Health, readiness and the sealstore ops API (`/sealstore/v1/...`).

use super::AppState;
use super::error::{Code, RpcError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the KMS store answers.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let kms = app.kms.clone();
    match tokio::task::spawn_blocking(move || kms.stored_secret("readyz-probe")).await {
        Ok(Ok(_)) => "ready".into_response(),
        _ => RpcError::new(Code::Unavailable, "The metadata store is not reachable.").into_response(),
    }
}

pub async fn not_found(method: Method, uri: Uri) -> Response {
    RpcError::new(Code::NotFound, format!("No such endpoint: {method} {}.", uri.path())).into_response()
}

pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    RpcError::new(Code::Internal, "Internal error.").into_response()
}

pub async fn handle(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::api::auth::Principal>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if method == Method::POST && path == "/sealstore/v1/clock:advance" && app.fake_clock {
        return advance(app, &body).await;
    }
    if method == Method::GET
        && let Some(bucket) = path
            .strip_prefix("/sealstore/v1/b/")
            .and_then(|r| r.strip_suffix("/objectsByKey"))
    {
        let bucket = crate::api::query::percent_decode(bucket, false).unwrap_or_default();
        return objects_by_key(&app, &principal.0, &bucket, uri.query()).await;
    }
    if let Some(rest) = path.strip_prefix("/sealstore/v1/projects/")
        && let Some((project, verb)) = rest.split_once(':')
        && crate::kms::names::valid_project(project)
    {
        let resource = format!("projects/{project}");
        let (permission, set) = match (&method, verb) {
            (&Method::GET | &Method::POST, "getIamPolicy") => ("resourcemanager.projects.getIamPolicy", false),
            (&Method::POST, "setIamPolicy") => ("resourcemanager.projects.setIamPolicy", true),
            _ => return not_found(method, uri).await,
        };
        let chain = vec![resource.clone()];
        if !app.allowed(&principal.0, permission, &chain) {
            app.audit(
                &principal.0,
                &format!("{method} {path}"),
                &resource,
                permission,
                "DENIED",
            );
            return RpcError::new(
                Code::PermissionDenied,
                format!("Permission '{permission}' denied on resource '{resource}' (or it may not exist)."),
            )
            .into_response();
        }
        let result = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, RpcError> {
            if set {
                let body = crate::api::kms::json::parse_body(&body)?;
                let o = crate::api::kms::json::Obj::new(&body);
                let policy = crate::api::kms::handlers::parse_policy(&o.obj("policy")?)?;
                let stored = app.policies.set(&resource, policy)?;
                app.audit(&principal.0, &format!("POST {path}"), &resource, permission, "OK");
                Ok(crate::api::kms::render::policy(&stored))
            } else {
                Ok(crate::api::kms::render::policy(&app.policies.get(&resource)?))
            }
        })
        .await;
        return match result {
            Ok(Ok(v)) => Json(v).into_response(),
            Ok(Err(e)) => e.into_response(),
            Err(_) => RpcError::new(Code::Internal, "Internal error.").into_response(),
        };
    }
    not_found(method, uri).await
}

/// Moves the fake clock and applies every transition that came due before replying,
/// so a client reading right after sees the new states.
async fn advance(app: AppState, body: &[u8]) -> Response {
    let seconds = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| {
        v.get("seconds")
            .and_then(|s| s.as_i64().or_else(|| s.as_str().and_then(|s| s.parse().ok())))
    });
    let Some(seconds) = seconds.filter(|s| (0..=100 * 365 * 86_400).contains(s)) else {
        return RpcError::invalid("Body must be {\"seconds\": N} with 0 <= N <= 100 years.").into_response();
    };
    let now = match app.clock.advance(chrono::TimeDelta::seconds(seconds)) {
        Ok(now) => now,
        Err(why) => return RpcError::invalid(why).into_response(),
    };
    let kms = app.kms.clone();
    let offset_ms = app.clock.offset().num_milliseconds();
    let settings = app.settings.clone();
    let applied = tokio::task::spawn_blocking(move || {
        settings.set_i64(crate::server::FAKE_CLOCK_OFFSET, offset_ms)?;
        kms.run_due();
        Ok::<_, rusqlite::Error>(())
    })
    .await;
    if !matches!(applied, Ok(Ok(()))) {
        return RpcError::new(Code::Internal, "Applying due transitions failed.").into_response();
    }
    Json(json!({"now": crate::api::kms::json::format_time(now)})).into_response()
}

/// `GET /sealstore/v1/b/{bucket}/objectsByKey?kmsKeyName=K[&keyVersion=N][&csekSha256=H]`:
/// the generations a key protects, so they can be rewritten before it is disabled.
async fn objects_by_key(app: &AppState, principal: &str, bucket: &str, raw_query: Option<&str>) -> Response {
    use crate::storage::KeyFilter;
    let gcs = |e: crate::storage::StorageError| crate::api::gcs::error::GcsError::from(e).into_response();
    let q = match crate::api::query::Query::parse(raw_query) {
        Ok(q) => q,
        Err(m) => return RpcError::invalid(m).into_response(),
    };
    let chain = vec![crate::api::gcs::bucket_resource(bucket)];
    let mut chain = chain;
    if let Ok(b) = app.storage.get_bucket(bucket).await {
        chain.push(format!("projects/{}", b.project));
    }
    if !app.allowed(principal, "storage.objects.list", &chain) {
        app.audit(
            principal,
            "GET objectsByKey",
            &chain[0],
            "storage.objects.list",
            "DENIED",
        );
        return RpcError::new(
            Code::PermissionDenied,
            format!("Permission 'storage.objects.list' denied on resource '{}'.", chain[0]),
        )
        .into_response();
    }
    let filter = match (q.get("kmsKeyName"), q.get("keyVersion"), q.get("csekSha256")) {
        (Some(k), None, None) if !k.contains("/cryptoKeyVersions/") => KeyFilter::Key(k.to_owned()),
        (Some(k), Some(v), None) if v.parse::<u32>().is_ok() => {
            KeyFilter::Version(format!("{k}/cryptoKeyVersions/{v}"))
        }
        (None, None, Some(h)) => KeyFilter::Csek(h.to_owned()),
        _ => {
            return RpcError::invalid("Give kmsKeyName (unversioned), kmsKeyName with keyVersion, or csekSha256.")
                .into_response();
        }
    };
    let limit = q.i64("maxResults").ok().flatten().unwrap_or(1000).clamp(1, 1000) as usize;
    match app
        .storage
        .objects_by_key(bucket, filter, q.get("pageToken"), limit)
        .await
    {
        Ok((items, next)) => {
            let items: Vec<serde_json::Value> = items
                .iter()
                .map(|o| {
                    let mut v = json!({"name": o.name, "generation": o.generation.to_string()});
                    match o.envelope.kind {
                        crate::storage::model::KeyKind::Csek => {
                            v["customerEncryption"] =
                                json!({"encryptionAlgorithm": "AES256", "keySha256": o.envelope.csek_sha256});
                        }
                        _ => v["kmsKeyName"] = json!(o.envelope.key_version),
                    }
                    v
                })
                .collect();
            let mut v = json!({"items": items});
            if let Some(t) = next {
                v["nextPageToken"] = json!(t);
            }
            Json(v).into_response()
        }
        Err(e) => gcs(e),
    }
}
