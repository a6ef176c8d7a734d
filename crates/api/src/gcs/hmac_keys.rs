//! `projects/{p}/hmacKeys`: HMAC keys for the XML API (create, list, get, update,
//! delete), as the GCS JSON API has them. Permissions are checked on the project.

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

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, sealstore_iam::IamError> + Send + 'static,
) -> GcsResult<R> {
    sealstore_core::request_id::spawn_blocking(f)
        .await
        .map_err(sealstore_storage::StorageError::internal)?
        .map_err(super::buckets::iam_error)
}

/// `access_id` is `None` for the collection.
pub async fn endpoint(ctx: &Ctx, project: &str, access_id: Option<&str>, body: Body) -> GcsResult<Response> {
    let store = ctx.app.hmac_keys.clone();
    let (p, now) = (project.to_owned(), ctx.app.clock.now());
    let chain = [format!("projects/{project}")];
    let need = |perm: &'static str| -> GcsResult<()> {
        if ctx.app.allowed(&ctx.principal, perm, &chain) {
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
    };
    match (&ctx.method, access_id) {
        (&Method::POST, None) => {
            need("storage.hmacKeys.create")?;
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
            let (meta, secret) = blocking(move || store.create(&p, &email, now)).await?;
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
            need("storage.hmacKeys.list")?;
            let max = ctx.max_results()?.unwrap_or(1000);
            let sa = ctx.query.get("serviceAccountEmail").map(str::to_owned);
            let show_deleted = ctx.flag("showDeletedKeys")?;
            let after = ctx.query.get("pageToken").map(str::to_owned);
            let mut items =
                blocking(move || store.list(&p, sa.as_deref(), show_deleted, after.as_deref(), max + 1)).await?;
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
            need("storage.hmacKeys.get")?;
            let id = id.to_owned();
            let meta = blocking(move || store.get(&p, &id)).await?;
            Ok(Json(metadata(&meta, &ctx.base)).into_response())
        }
        (&Method::PUT | &Method::PATCH, Some(id)) => {
            need("storage.hmacKeys.update")?;
            let doc = json_body(body, ctx.app.limits.max_body_bytes).await?;
            let state = doc
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| GcsError::new(StatusCode::BAD_REQUEST, "required", "Required field: state"))?
                .to_owned();
            let etag = doc.get("etag").and_then(Value::as_str).map(str::to_owned);
            let id = id.to_owned();
            let meta = blocking(move || store.set_state(&p, &id, &state, etag.as_deref(), now)).await?;
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
            need("storage.hmacKeys.delete")?;
            let id_owned = id.to_owned();
            blocking(move || store.delete(&p, &id_owned, now)).await?;
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
