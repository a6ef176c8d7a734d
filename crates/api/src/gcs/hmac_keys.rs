//! `projects/{p}/hmacKeys`: HMAC keys for the XML API (create, list, get, update,
//! delete), as the GCS JSON API has them. Permissions are checked on the project.

use super::buckets::iam_error;
use super::error::{GcsError, GcsResult};
use super::{Ctx, json_body, render};
use axum::Json;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sealstore_iam::hmac_keys::HmacKeyMeta;
use serde_json::{Value, json};

pub fn metadata(m: &HmacKeyMeta, base: &str) -> Value {
    json!({
        "kind": "storage#hmacKeyMetadata",
        "id": format!("{}/{}", m.project, m.access_id),
        "selfLink": format!("{base}/storage/v1/projects/{}/hmacKeys/{}", render::quote(&m.project), m.access_id),
        "accessId": m.access_id,
        "projectId": m.project,
        "serviceAccountEmail": m.service_account_email,
        "state": m.state,
        "timeCreated": render::time(m.time_created),
        "updated": render::time(m.updated),
        "etag": m.etag,
    })
}

/// The caller's `perm` on the project (`chain`), or the denial to answer (audited).
async fn need(ctx: &Ctx, chain: &[String], perm: &'static str) -> GcsResult<()> {
    if ctx.app.allowed(&ctx.principal, perm, chain).await {
        return Ok(());
    }
    ctx.app.audit(
        &ctx.principal,
        &format!("{} {}", ctx.method, chain[0]),
        &chain[0],
        perm,
        "DENIED",
    );
    Err(GcsError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("The caller does not have {perm} access to {}.", chain[0]),
    ))
}

/// `access_id` is `None` for the collection.
pub async fn endpoint(ctx: &Ctx, project: &str, access_id: Option<&str>, body: Body) -> GcsResult<Response> {
    let store = &ctx.app.hmac_keys;
    let now = ctx.app.clock.now();
    let chain = [format!("projects/{project}")];
    let need = |perm| need(ctx, &chain, perm);
    match (&ctx.method, access_id) {
        (&Method::POST, None) => {
            need("storage.hmacKeys.create").await?;
            let email = ctx
                .query
                .get("serviceAccountEmail")
                .filter(|e| !e.is_empty())
                .ok_or_else(|| {
                    GcsError::new(
                        StatusCode::BAD_REQUEST,
                        "required",
                        "Required parameter: serviceAccountEmail",
                    )
                })?
                .to_owned();
            let (meta, secret) = store.create(project, &email, now).await.map_err(iam_error)?;
            ctx.app.audit(
                &ctx.principal,
                "storage.hmacKeys.create",
                &format!("projects/{project}/hmacKeys/{}", meta.access_id),
                "storage.hmacKeys.create",
                "OK",
            );
            Ok(Json(json!({
                "kind": "storage#hmacKey",
                "metadata": metadata(&meta, &ctx.base),
                "secret": secret.as_str(),
            }))
            .into_response())
        }
        (&Method::GET, None) => {
            need("storage.hmacKeys.list").await?;
            let max = ctx.max_results()?.unwrap_or(1000);
            let sa = ctx.query.get("serviceAccountEmail");
            let show_deleted = ctx.flag("showDeletedKeys")?;
            let after = ctx.query.get("pageToken");
            let mut items = store
                .list(project, sa, show_deleted, after, max + 1)
                .await
                .map_err(iam_error)?;
            let next = (items.len() > max).then(|| {
                items.truncate(max);
                items.last().map(|m| m.access_id.clone()).unwrap_or_default()
            });
            let mut v = json!({
                "kind": "storage#hmacKeysMetadata",
                "items": items.iter().map(|m| metadata(m, &ctx.base)).collect::<Vec<_>>(),
            });
            if let Some(t) = next {
                v["nextPageToken"] = json!(t);
            }
            Ok(Json(v).into_response())
        }
        (&Method::GET, Some(id)) => {
            need("storage.hmacKeys.get").await?;
            let meta = store.get(project, id).await.map_err(iam_error)?;
            Ok(Json(metadata(&meta, &ctx.base)).into_response())
        }
        (&Method::PUT | &Method::PATCH, Some(id)) => {
            need("storage.hmacKeys.update").await?;
            let doc = json_body(body, ctx.app.limits.max_body_bytes).await?;
            let state = doc
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| GcsError::new(StatusCode::BAD_REQUEST, "required", "Required field: state"))?
                .to_owned();
            let etag = doc.get("etag").and_then(Value::as_str);
            let meta = store
                .set_state(project, id, &state, etag, now)
                .await
                .map_err(iam_error)?;
            ctx.app.audit(
                &ctx.principal,
                "storage.hmacKeys.update",
                &format!("projects/{project}/hmacKeys/{}", meta.access_id),
                "storage.hmacKeys.update",
                "OK",
            );
            Ok(Json(metadata(&meta, &ctx.base)).into_response())
        }
        (&Method::DELETE, Some(id)) => {
            need("storage.hmacKeys.delete").await?;
            store.delete(project, id, now).await.map_err(iam_error)?;
            ctx.app.audit(
                &ctx.principal,
                "storage.hmacKeys.delete",
                &format!("projects/{project}/hmacKeys/{id}"),
                "storage.hmacKeys.delete",
                "OK",
            );
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (m, _) => Err(GcsError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "methodNotAllowed",
            format!("Method {m} is not allowed on HMAC keys."),
        )),
    }
}
