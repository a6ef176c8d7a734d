//! Health, readiness and the sealstore ops API (`/sealstore/v1/...`).

use super::AppState;
use super::error::{Code, RpcError};
use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the KMS store answers, the metadata writer commits and the blob store
/// answers. Each failure is named (without detail that could hold a secret).
pub async fn readyz(State(app): State<AppState>) -> Response {
    let kms = app.kms.clone();
    let deadline = std::time::Duration::from_secs(5);
    let kms_ok = matches!(
        tokio::time::timeout(
            deadline,
            sealstore_core::request_id::spawn_blocking(move || kms.stored_secret("readyz-probe"))
        )
        .await,
        Ok(Ok(Ok(_)))
    );
    if !kms_ok {
        return RpcError::new(Code::Unavailable, "Not ready: the KMS store is not reachable.").into_response();
    }
    match tokio::time::timeout(deadline, app.storage.ready()).await {
        Ok(Ok(())) => "ready".into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            RpcError::new(
                Code::Unavailable,
                "Not ready: the metadata writer or the blob store does not answer.",
            )
            .into_response()
        }
        Err(_) => RpcError::new(Code::Unavailable, "Not ready: the storage checks timed out.").into_response(),
    }
}

/// `GET /metrics`: Prometheus text. In token mode it needs `sealstore.metrics.get` on the
/// server's own project (`roles/viewer` there grants it).
pub async fn metrics(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
) -> Response {
    let chain = vec![format!("projects/{}", sealstore_kms::GOOGLE_MANAGED_PROJECT)];
    if !app.allowed(&principal.0, "sealstore.metrics.get", &chain).await {
        return RpcError::new(
            Code::PermissionDenied,
            format!("Permission 'sealstore.metrics.get' denied on resource '{}'.", chain[0]),
        )
        .into_response();
    }
    let Some(handle) = sealstore_core::metrics::handle() else {
        return RpcError::new(Code::Unavailable, "Metrics are not available in this process.").into_response();
    };
    match app.storage.open_sessions().await {
        Ok(n) => metrics::gauge!("sealstore_upload_sessions_open").set(n as f64),
        Err(e) => tracing::warn!(error = %e, "could not count upload sessions"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// An unknown path under one of the reserved prefixes (other paths are the XML API's).
pub async fn not_found(method: Method, uri: Uri) -> Response {
    RpcError::new(Code::NotFound, format!("No such endpoint: {method} {}.", uri.path())).into_response()
}

pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    RpcError::new(Code::Internal, "Internal error.").into_response()
}

pub async fn handle(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    method: Method,
    uri: Uri,
    body: axum::body::Body,
) -> Response {
    let body = match crate::body::read_limited(body, app.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return RpcError::from(e).into_response(),
    };
    let path = uri.path().to_owned();
    if method == Method::POST && path == "/sealstore/v1/clock:advance" && app.fake_clock {
        // Moving time expires retention and destroys keys: in token mode only an owner of
        // the server's own project (`projects/_sealstore`) may.
        let chain = vec![format!("projects/{}", sealstore_kms::GOOGLE_MANAGED_PROJECT)];
        if !app.allowed(&principal.0, "sealstore.clock.advance", &chain).await {
            app.audit(
                &principal.0,
                "POST clock:advance",
                &chain[0],
                "sealstore.clock.advance",
                "DENIED",
            );
            return RpcError::new(
                Code::PermissionDenied,
                "Permission 'sealstore.clock.advance' denied: it needs roles/owner on projects/_sealstore.",
            )
            .into_response();
        }
        app.audit(
            &principal.0,
            "POST clock:advance",
            &chain[0],
            "sealstore.clock.advance",
            "OK",
        );
        return advance(app, &body).await;
    }
    if method == Method::GET
        && let Some(bucket) = path
            .strip_prefix("/sealstore/v1/b/")
            .and_then(|r| r.strip_suffix("/objectsByKey"))
    {
        let bucket = crate::query::percent_decode(bucket, false).unwrap_or_default();
        return objects_by_key(&app, &principal.0, &bucket, uri.query()).await;
    }
    if method == Method::GET
        && let Some(bucket) = path
            .strip_prefix("/sealstore/v1/b/")
            .and_then(|r| r.strip_suffix("/lifecycle:preview"))
    {
        let bucket = crate::query::percent_decode(bucket, false).unwrap_or_default();
        return crate::lifecycle_ops::preview(&app, &principal.0, &bucket, uri.query()).await;
    }
    if path.contains("/rekeyJobs") {
        return rekey(&app, &principal.0, &method, &path, &body).await;
    }
    if let Some(rest) = path.strip_prefix("/sealstore/v1/projects/")
        && let Some((project, verb)) = rest.split_once(':')
        && sealstore_kms::names::valid_project(project)
    {
        let resource = format!("projects/{project}");
        let (permission, set) = match (&method, verb) {
            (&Method::GET | &Method::POST, "getIamPolicy") => ("resourcemanager.projects.getIamPolicy", false),
            (&Method::POST, "setIamPolicy") => ("resourcemanager.projects.setIamPolicy", true),
            _ => return not_found(method, uri).await,
        };
        let chain = vec![resource.clone()];
        if !app.allowed(&principal.0, permission, &chain).await {
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
        let result = async {
            if set {
                let body = crate::kms::json::parse_body(&body)?;
                let o = crate::kms::json::Obj::new(&body);
                let policy = crate::kms::handlers::parse_policy(&o.obj("policy")?)?;
                let stored = app.policies.set(&resource, policy).await?;
                app.audit(&principal.0, &format!("POST {path}"), &resource, permission, "OK");
                Ok::<_, RpcError>(crate::kms::render::policy(&stored))
            } else {
                Ok(crate::kms::render::policy(&app.policies.get(&resource).await?))
            }
        }
        .await;
        return match result {
            Ok(v) => Json(v).into_response(),
            Err(e) => e.into_response(),
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
    let saved = app
        .settings
        .set_i64(sealstore_core::clock::FAKE_CLOCK_OFFSET, offset_ms)
        .await;
    if let Err(e) = &saved {
        tracing::error!(error = %e, "saving the fake clock's offset failed");
    }
    let applied = sealstore_core::request_id::spawn_blocking(move || kms.run_due()).await;
    if saved.is_err() || applied.is_err() {
        return RpcError::new(Code::Internal, "Applying due transitions failed.").into_response();
    }
    // Soft-deleted data whose time has come goes, and lifecycle actions that came due
    // are applied, before the reply.
    if let Err(e) = crate::lifecycle_ops::hard_deletes(&app, now).await {
        tracing::error!(error = %e, "hard delete pass failed");
        return RpcError::new(Code::Internal, "Hard-deleting soft-deleted data failed.").into_response();
    }
    // Incomplete multipart uploads: lifecycle rules, and the age limit.
    let ttl = chrono::TimeDelta::seconds(i64::try_from(app.multipart_ttl_secs).unwrap_or(i64::MAX / 2));
    let aborted = match app.storage.lifecycle_abort_uploads(now).await {
        Ok(_) => app.storage.abort_multipart_before(now - ttl).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = aborted {
        tracing::error!(error = %e, "aborting incomplete multipart uploads failed");
        return RpcError::new(Code::Internal, "Aborting incomplete multipart uploads failed.").into_response();
    }
    match app.storage.run_lifecycle(now).await {
        Ok(events) => crate::lifecycle_ops::audit_events(&app, &events),
        Err(e) => {
            tracing::error!(error = %e, "lifecycle pass failed");
            return RpcError::new(Code::Internal, "Applying due lifecycle actions failed.").into_response();
        }
    }
    Json(json!({"now": crate::kms::json::format_time(now)})).into_response()
}

/// `GET /sealstore/v1/b/{bucket}/objectsByKey?kmsKeyName=K[&keyVersion=N][&csekSha256=H]`:
/// the generations a key protects, so they can be rewritten before it is disabled.
async fn objects_by_key(app: &AppState, principal: &str, bucket: &str, raw_query: Option<&str>) -> Response {
    use sealstore_storage::KeyFilter;
    let gcs = |e: sealstore_storage::StorageError| crate::gcs::error::GcsError::from(e).into_response();
    let q = match crate::query::Query::parse(raw_query) {
        Ok(q) => q,
        Err(m) => return RpcError::invalid(m).into_response(),
    };
    let chain = crate::gcs::bucket_chain(app, bucket).await;
    if !app.allowed(principal, "storage.objects.list", &chain).await {
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
                    if let Some(t) = o.soft_delete_time {
                        // Soft-deleted generations still depend on their key version.
                        v["softDeleted"] = json!(true);
                        v["softDeleteTime"] = json!(crate::kms::json::format_time(t));
                    }
                    match o.envelope.kind {
                        sealstore_storage::model::KeyKind::Csek => {
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

fn job_json(j: &sealstore_storage::rekey::RekeyJob) -> serde_json::Value {
    let from = match &j.from {
        None => serde_json::Value::Null,
        Some(sealstore_storage::rekey::RekeyFrom::KmsKeyName(k)) => json!({"kmsKeyName": k}),
        Some(sealstore_storage::rekey::RekeyFrom::KmsKeyVersions(v)) => json!({"kmsKeyVersions": v}),
        Some(sealstore_storage::rekey::RekeyFrom::AllButPrimaryOf(k)) => json!({"allButPrimaryOf": k}),
    };
    let to = match &j.to {
        sealstore_storage::rekey::RekeyTo::KmsKeyName(k) => json!({"kmsKeyName": k}),
        sealstore_storage::rekey::RekeyTo::GoogleManaged => json!({"googleManaged": true}),
    };
    let state = match j.state {
        sealstore_storage::rekey::JobState::Running => "RUNNING",
        sealstore_storage::rekey::JobState::Succeeded => "SUCCEEDED",
        sealstore_storage::rekey::JobState::Failed => "FAILED",
        sealstore_storage::rekey::JobState::Cancelled => "CANCELLED",
    };
    json!({
        "name": j.name,
        "bucket": j.bucket,
        "prefix": j.prefix,
        "from": from,
        "to": to,
        "mode": match j.mode { sealstore_storage::rekey::RekeyMode::Rewrite => "rewrite", sealstore_storage::rekey::RekeyMode::Rewrap => "rewrap" },
        "state": state,
        "counters": {"scanned": j.counters.scanned, "rewritten": j.counters.rewritten, "skipped": j.counters.skipped, "failed": j.counters.failed, "bytes": j.counters.bytes},
        "skipped": j.skipped,
        "failures": j.failures.iter().map(|f| json!({"object": f.object, "generation": f.generation.to_string(), "reason": f.reason})).collect::<Vec<_>>(),
        "createTime": crate::kms::json::format_time(j.create_time),
        "updateTime": crate::kms::json::format_time(j.update_time),
    })
}

/// `POST /sealstore/v1/projects/{p}/rekeyJobs`, `GET /sealstore/v1/{name}`,
/// `POST /sealstore/v1/{name}:cancel`.
async fn rekey(app: &AppState, principal: &str, method: &Method, path: &str, body: &[u8]) -> Response {
    use sealstore_storage::rekey::{RekeyFrom, RekeyMode, RekeyTo};
    let gcs = |e: sealstore_storage::StorageError| crate::gcs::error::GcsError::from(e).into_response();
    let rest = path.trim_start_matches("/sealstore/v1/");
    let parts: Vec<&str> = rest.split('/').collect();
    let allowed = async |bucket: &str, chain_project: &str| {
        let chain = vec![crate::gcs::bucket_resource(bucket), format!("projects/{chain_project}")];
        app.allowed(principal, "storage.objects.update", &chain).await
    };
    match (method, parts.as_slice()) {
        (&Method::POST, ["projects", project, "rekeyJobs"]) => {
            let v: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return RpcError::invalid(format!("Invalid JSON payload: {e}")).into_response(),
            };
            let Some(bucket) = v.get("bucket").and_then(|b| b.as_str()) else {
                return RpcError::invalid("bucket is required.").into_response();
            };
            if !allowed(bucket, project).await {
                app.audit(principal, "POST rekeyJobs", bucket, "storage.objects.update", "DENIED");
                return RpcError::new(
                    Code::PermissionDenied,
                    format!("Permission 'storage.objects.update' denied on bucket '{bucket}'."),
                )
                .into_response();
            }
            let str_of = |x: &serde_json::Value, k: &str| x.get(k).and_then(|s| s.as_str()).map(str::to_owned);
            let from = match v.get("from") {
                None | Some(serde_json::Value::Null) => None,
                Some(f) => match (
                    str_of(f, "kmsKeyName"),
                    f.get("kmsKeyVersions"),
                    str_of(f, "allButPrimaryOf"),
                ) {
                    (Some(k), None, None) => Some(RekeyFrom::KmsKeyName(k)),
                    (None, Some(serde_json::Value::Array(vs)), None) => Some(RekeyFrom::KmsKeyVersions(
                        vs.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
                    )),
                    (None, None, Some(k)) => Some(RekeyFrom::AllButPrimaryOf(k)),
                    _ => {
                        return RpcError::invalid(
                            "from must be {kmsKeyName}, {kmsKeyVersions: [...]} or {allButPrimaryOf}.",
                        )
                        .into_response();
                    }
                },
            };
            let to = match v.get("to") {
                Some(t) if t.get("googleManaged").and_then(|g| g.as_bool()) == Some(true) => RekeyTo::GoogleManaged,
                Some(t) => match str_of(t, "kmsKeyName") {
                    Some(k) => RekeyTo::KmsKeyName(k),
                    None => {
                        return RpcError::invalid("to must be {kmsKeyName} or {googleManaged: true}.").into_response();
                    }
                },
                None => return RpcError::invalid("to is required.").into_response(),
            };
            let mode = match v.get("mode").and_then(|m| m.as_str()).unwrap_or("rewrite") {
                "rewrite" => RekeyMode::Rewrite,
                "rewrap" => RekeyMode::Rewrap,
                other => return RpcError::invalid(format!("mode {other:?} is not rewrite or rewrap.")).into_response(),
            };
            let prefix = str_of(&v, "prefix").unwrap_or_default();
            match app
                .storage
                .create_rekey_job(project, bucket, prefix, from, to, mode)
                .await
            {
                Ok(j) => {
                    app.audit(principal, "POST rekeyJobs", &j.name, "storage.objects.update", "OK");
                    Json(job_json(&j)).into_response()
                }
                Err(e) => gcs(e),
            }
        }
        (m, ["projects", project, "rekeyJobs", id]) => {
            let (id, cancel) = match id.split_once(':') {
                Some((i, "cancel")) if m == Method::POST => (i, true),
                None if m == Method::GET => (*id, false),
                _ => return not_found(m.clone(), path.parse().unwrap_or_default()).await,
            };
            let name = format!("projects/{project}/rekeyJobs/{id}");
            let verb = if cancel {
                "POST rekeyJobs:cancel"
            } else {
                "GET rekeyJobs"
            };
            let denied = || {
                app.audit(principal, verb, &name, "storage.objects.update", "DENIED");
                RpcError::new(
                    Code::PermissionDenied,
                    format!("Permission 'storage.objects.update' denied on '{name}'."),
                )
                .into_response()
            };
            let job = match app.storage.get_rekey_job(&name).await {
                Ok(j) => j,
                // Someone who could not see the job if it existed gets the same denial
                // whether or not it does: a 404 would tell them it does not.
                Err(e @ sealstore_storage::StorageError::NotFound(_)) => {
                    let project_chain = [format!("projects/{project}")];
                    if !app.allowed(principal, "storage.objects.update", &project_chain).await {
                        return denied();
                    }
                    return gcs(e);
                }
                Err(e) => return gcs(e),
            };
            if !allowed(&job.bucket, project).await {
                return denied();
            }
            if cancel {
                app.audit(principal, verb, &name, "storage.objects.update", "OK");
            }
            if !cancel {
                return Json(job_json(&job)).into_response();
            }
            match app.storage.cancel_rekey_job(&name).await {
                Ok(j) => Json(job_json(&j)).into_response(),
                Err(e) => gcs(e),
            }
        }
        _ => not_found(method.clone(), path.parse().unwrap_or_default()).await,
    }
}
