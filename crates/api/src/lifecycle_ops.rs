//! Lifecycle on the ops face: auditing what the worker did, and the dry run
//! (`GET /sealstore/v1/b/{bucket}/lifecycle:preview`) that shows what the rules would
//! act on at a given time without acting.

use super::AppState;
use super::error::{Code, RpcError};
use axum::Json;
use axum::response::{IntoResponse, Response};
use sealstore_storage::lifecycle_run::LifecycleEvent;
use serde_json::{Value, json};

/// Ends the soft-deleted generations and buckets whose hard-delete time has come; a
/// hard-deleted bucket's kept IAM policy goes with it.
pub async fn hard_deletes(
    app: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sealstore_storage::StorageError> {
    for b in app.storage.hard_delete_due(now).await? {
        let resource = crate::gcs::soft_bucket_resource(&b.name, b.generation());
        if let Err(e) = app.policies.remove(&resource).await {
            tracing::warn!(error = %e, bucket = %b.name, "could not remove a hard-deleted bucket's policy");
        }
        app.audit(
            "system:sealstore",
            "soft delete: hard-delete bucket",
            &format!("b/{}#{}", b.name, b.generation()),
            "",
            "OK",
        );
    }
    Ok(())
}

/// Audits each lifecycle action carried out, as the bucket's storage service agent,
/// naming the rule. Actions a hold or retention blocked are not actions: they are
/// retried by every pass (the preview shows them, with what blocks them).
pub fn audit_events(app: &AppState, events: &[LifecycleEvent]) {
    for e in events.iter().filter(|e| e.outcome.is_ok()) {
        let agent = sealstore_iam::roles::storage_service_agent(&e.project);
        let what = match &e.storage_class {
            Some(sc) => format!("lifecycle: {} {sc} (rule {})", e.action.as_str(), e.rule),
            None => format!("lifecycle: {} (rule {})", e.action.as_str(), e.rule),
        };
        let resource = format!("b/{}/o/{}#{}", e.bucket, e.object, e.generation);
        app.audit(&agent, &what, &resource, "", "OK");
    }
}

fn event_json(e: &LifecycleEvent) -> Value {
    let mut v = json!({
        "name": e.object,
        "generation": e.generation.to_string(),
        "live": e.live,
        "action": e.action.as_str(),
        "rule": e.rule,
    });
    if let Some(sc) = &e.storage_class {
        v["storageClass"] = json!(sc);
    }
    if let Err(why) = &e.outcome {
        v["blockedBy"] = json!(why);
    }
    v
}

/// The dry run: `atTime` (RFC 3339, default now), `maxResults` (default and cap 1000).
pub async fn preview(app: &AppState, principal: &str, bucket: &str, raw_query: Option<&str>) -> Response {
    let q = match crate::query::Query::parse(raw_query) {
        Ok(q) => q,
        Err(m) => return RpcError::invalid(m).into_response(),
    };
    let chain = crate::gcs::bucket_chain(app, bucket).await;
    if !app.allowed(principal, "storage.objects.list", &chain).await {
        return RpcError::new(
            Code::PermissionDenied,
            format!("Permission 'storage.objects.list' denied on resource '{}'.", chain[0]),
        )
        .into_response();
    }
    let at = match q.get("atTime") {
        None => app.clock.now(),
        Some(t) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => t.with_timezone(&chrono::Utc),
            Err(_) => return RpcError::invalid(format!("Invalid atTime \"{t}\": expected RFC 3339.")).into_response(),
        },
    };
    let limit = q.i64("maxResults").ok().flatten().unwrap_or(1000).clamp(1, 1000) as usize;
    let gcs = |e: sealstore_storage::StorageError| crate::gcs::error::GcsError::from(e).into_response();
    let b = match app.storage.get_bucket(bucket).await {
        Ok(b) => b,
        Err(e) => return gcs(e),
    };
    let mut items = vec![];
    let mut after = None;
    loop {
        let (events, next) = match app.storage.lifecycle_page(&b, after, at, false).await {
            Ok(r) => r,
            Err(e) => return gcs(e),
        };
        items.extend(events.iter().map(event_json));
        match next {
            Some(n) if items.len() < limit => after = Some(n),
            _ => break,
        }
    }
    let truncated = items.len() > limit;
    items.truncate(limit);
    Json(json!({
        "atTime": crate::kms::json::format_time(at),
        "actions": items,
        "truncated": truncated,
    }))
    .into_response()
}
