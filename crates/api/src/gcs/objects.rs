//! Object metadata methods, listing, copy and compose.

use super::error::{GcsError, GcsResult};
use super::object_doc::{apply_meta, check_fields, check_unsupported, opt_bool, parse_retention};
use super::{Ctx, json_body, key_param, render};
use axum::Json;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sealstore_storage::glob::Glob;
use sealstore_storage::model::{KeyKind, ObjectMeta, ObjectRecord, Preconditions};
use sealstore_storage::{ListSpec, ObjectHashes, StorageError, WriteSpec};
use serde_json::{Value, json};

/// The hashes an object response may show. They are under the object's key: withheld
/// from listings of CMEK and CSEK objects, from CSEK objects read without their key, and
/// when the KMS key cannot be used; a wrong customer key is an error.
pub fn visible_hashes(ctx: &Ctx, rec: &ObjectRecord, listing: bool) -> GcsResult<Option<ObjectHashes>> {
    let csek = if listing { None } else { ctx.csek("x-goog-encryption")? };
    match (&rec.envelope.kind, listing, &csek) {
        (KeyKind::Cmek | KeyKind::Csek, true, _) | (KeyKind::Csek, false, None) => return Ok(None),
        _ => {}
    }
    match ctx.app.storage.open(rec.clone(), csek.as_deref()) {
        Ok(o) => Ok(Some(o.hashes)),
        Err(StorageError::Key(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn object_response(ctx: &Ctx, rec: &ObjectRecord, hashes: Option<&ObjectHashes>) -> Response {
    let bucket = ctx.app.storage.get_bucket(&rec.bucket).await.ok();
    Json(render::object_in(rec, hashes, &ctx.base, bucket.as_ref())).into_response()
}

pub async fn get(ctx: &Ctx, bucket: &str, name: &str) -> GcsResult<Response> {
    let rec = if ctx.flag("softDeleted")? {
        // A soft-deleted generation is addressed by its generation, as on GCS.
        let generation = ctx.required_int("generation", "generation is required with softDeleted=true.")?;
        ctx.app.storage.get_soft_object(bucket, name, generation).await?
    } else {
        ctx.app
            .storage
            .get_object(bucket, name, ctx.int("generation")?, &ctx.preconditions("")?)
            .await?
    };
    ctx.etags().check(&render::etag(&rec), true)?;
    let hashes = visible_hashes(ctx, &rec, false)?;
    Ok(object_response(ctx, &rec, hashes.as_ref()).await)
}

pub async fn list(ctx: &Ctx, bucket: &str) -> GcsResult<Response> {
    if ctx.flag("includeFoldersAsPrefixes")? {
        return Err(GcsError::new(
            StatusCode::NOT_IMPLEMENTED,
            "notImplemented",
            "includeFoldersAsPrefixes is not supported by sealstore (no hierarchical namespace).",
        ));
    }
    let soft_deleted = ctx.flag("softDeleted")?;
    let spec = ListSpec {
        soft_deleted,
        prefix: ctx.query.get("prefix").unwrap_or("").to_owned(),
        delimiter: ctx.query.get("delimiter").map(str::to_owned),
        // Every soft-deleted generation is listed, as with versions=true.
        versions: ctx.flag("versions")? || soft_deleted,
        max_results: ctx.max_results()?,
        page_token: ctx.query.get("pageToken").map(str::to_owned),
        start_offset: ctx
            .query
            .get("startOffset")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        end_offset: ctx.query.get("endOffset").filter(|s| !s.is_empty()).map(str::to_owned),
        include_trailing_delimiter: ctx.flag("includeTrailingDelimiter")?,
        match_glob: ctx
            .query
            .get("matchGlob")
            .filter(|g| !g.is_empty())
            .map(Glob::parse)
            .transpose()?
            .map(std::sync::Arc::new),
    };
    let page = ctx.app.storage.list_objects(bucket, spec).await?;
    let bucket_rec = ctx.app.storage.get_bucket(bucket).await.ok();
    let mut items = Vec::with_capacity(page.items.len());
    for rec in &page.items {
        let hashes = visible_hashes(ctx, rec, true)?;
        items.push(render::object_in(rec, hashes.as_ref(), &ctx.base, bucket_rec.as_ref()));
    }
    let mut v = json!({"kind": "storage#objects", "items": items});
    if !page.prefixes.is_empty() {
        v["prefixes"] = json!(page.prefixes);
    }
    if let Some(t) = page.next_page_token {
        v["nextPageToken"] = json!(t);
    }
    Ok(Json(v).into_response())
}

/// PATCH (`replace = false`) or PUT (`replace = true`) of an object's metadata.
pub async fn patch(ctx: &Ctx, bucket: &str, name: &str, body: Body, replace: bool) -> GcsResult<Response> {
    let body = json_body(body, ctx.app.limits.max_body_bytes).await?;
    check_fields(&body, super::acl::Target::Object)?;
    super::acl::refuse_predefined(ctx, super::acl::Target::Object)?;
    let requested_key = body.get("kmsKeyName").and_then(Value::as_str).map(str::to_owned);
    let protection = sealstore_storage::ProtectionPatch {
        temporary_hold: opt_bool(&body, "temporaryHold")?,
        event_based_hold: opt_bool(&body, "eventBasedHold")?,
        retention: parse_retention(&body)?,
        override_unlocked_retention: ctx.flag("overrideUnlockedRetention")?,
    };
    let bucket_rec = ctx.app.storage.get_bucket(bucket).await?;
    let now = ctx.app.storage.now();
    let storage_class = body.get("storageClass").and_then(Value::as_str).map(str::to_owned);
    let etags = ctx.etags();
    let rec = ctx
        .app
        .storage
        .update_object_meta(bucket, name, ctx.int("generation")?, &ctx.preconditions("")?, move |rec| {
            // Checked on the record the update is conditional on (its metageneration).
            etags.check(&render::etag(rec), false)?;
            // CMEK cannot be set or changed through metadata: rewrite the object instead.
            if let Some(k) = &requested_key {
                let current = &rec.envelope.key_version;
                let unversioned = current.split("/cryptoKeyVersions/").next().unwrap_or("");
                if rec.envelope.kind != KeyKind::Cmek || (k != current && k != unversioned) {
                    return Err(StorageError::BadRequest {
                        reason: "cloudKmsCannotChangeKeyName",
                        message: "The Cloud KMS key of an object cannot be set or changed by updating its metadata; rewrite the object with the new key.".into(),
                    });
                }
            }
            if let Some(c) = &storage_class
                && !c.eq_ignore_ascii_case(&rec.storage_class)
            {
                return Err(StorageError::invalid("The storage class of an object cannot be changed by a metadata update; rewrite it instead."));
            }
            rec.meta = apply_meta(&rec.meta, &body, replace).map_err(|e| StorageError::invalid(e.message))?;
            sealstore_storage::engine::apply_protection(rec, &bucket_rec, &protection, now)
        })
        .await?;
    let hashes = visible_hashes(ctx, &rec, false)?;
    Ok(object_response(ctx, &rec, hashes.as_ref()).await)
}

pub async fn delete(ctx: &Ctx, bucket: &str, name: &str) -> GcsResult<Response> {
    let generation = ctx.int("generation")?;
    let mut pre = ctx.preconditions("")?;
    let etags = ctx.etags();
    if !etags.is_empty() {
        // Checked on the current record, then pinned to its generation and
        // metageneration so the delete fails if it changed in between.
        let rec = ctx
            .app
            .storage
            .get_object(bucket, name, generation, &Default::default())
            .await?;
        etags.check(&render::etag(&rec), false)?;
        pre.if_generation_match.get_or_insert(rec.generation);
        pre.if_metageneration_match.get_or_insert(rec.metageneration);
    }
    ctx.app.storage.delete_object(bucket, name, generation, &pre).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `objects.move`: an atomic rename within a bucket, keeping data and encryption.
pub async fn move_object(ctx: &Ctx, bucket: &str, src: &str, dst: &str) -> GcsResult<Response> {
    let rec = ctx
        .app
        .storage
        .move_object(
            bucket,
            src,
            dst,
            ctx.preconditions("Source")?,
            ctx.preconditions("")?,
            super::may_replace(ctx, bucket).await,
        )
        .await?;
    let hashes = visible_hashes(ctx, &rec, false)?;
    Ok(object_response(ctx, &rec, hashes.as_ref()).await)
}

async fn dest_spec(ctx: &Ctx, bucket: &str, name: &str, key_field: &str) -> GcsResult<WriteSpec> {
    super::acl::refuse_predefined(ctx, super::acl::Target::NewObject)?;
    Ok(WriteSpec {
        bucket: bucket.to_owned(),
        name: name.to_owned(),
        meta: ObjectMeta::default(),
        storage_class: None,
        preconditions: ctx.preconditions("")?,
        expected_crc32c: None,
        expected_md5: None,
        kms_key_name: key_param(ctx, key_field)?,
        component_count: None,
        protection: Default::default(),
        force_google_managed: false,
        may_replace: super::may_replace(ctx, bucket).await,
        // Copy and compose use one customer key for sources and destination.
        csek: ctx.csek("x-goog-encryption")?,
        multipart_etag: None,
    })
}

pub async fn copy(
    ctx: &Ctx,
    src_bucket: &str,
    src: &str,
    dst_bucket: &str,
    dst: &str,
    body: Body,
) -> GcsResult<Response> {
    let body = json_body(body, ctx.app.limits.max_body_bytes).await?;
    check_unsupported(&body)?;
    let source = ctx
        .app
        .storage
        .get_object(src_bucket, src, ctx.int("sourceGeneration")?, &Preconditions::default())
        .await?;
    ctx.preconditions("Source")?
        .check(Some((source.generation, source.metageneration)), false)?;
    let opened = ctx
        .app
        .storage
        .open(source, ctx.csek("x-goog-encryption")?.as_deref())?;
    let mut spec = dest_spec(ctx, dst_bucket, dst, "destinationKmsKeyName").await?;
    let meta_given = body
        .as_object()
        .is_some_and(|m| m.keys().any(|k| k != "name" && k != "bucket" && k != "kmsKeyName"));
    let meta = if meta_given {
        Some(apply_meta(&opened.record.meta, &body, false)?)
    } else {
        None
    };
    if let Some(c) = body.get("storageClass").and_then(Value::as_str) {
        spec.storage_class = Some(c.to_owned());
    }
    let (rec, hashes) = ctx.app.storage.copy(opened, spec, meta).await?;
    Ok(object_response(ctx, &rec, Some(&hashes)).await)
}

pub async fn compose(ctx: &Ctx, bucket: &str, dest: &str, body: Body) -> GcsResult<Response> {
    let body = json_body(body, ctx.app.limits.max_body_bytes).await?;
    let sources = match body.get("sourceObjects") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(GcsError::new(
                StatusCode::BAD_REQUEST,
                "required",
                "Required field: sourceObjects.",
            ));
        }
    };
    if sources.len() > sealstore_storage::engine::MAX_COMPOSE_SOURCES {
        return Err(GcsError::invalid(format!(
            "The number of source components provided ({}) exceeds the maximum ({}).",
            sources.len(),
            sealstore_storage::engine::MAX_COMPOSE_SOURCES
        )));
    }
    let destination = body.get("destination").cloned().unwrap_or_else(|| json!({}));
    check_unsupported(&destination)?;
    let mut opened = Vec::with_capacity(sources.len());
    for s in sources {
        let name = s.get("name").and_then(Value::as_str).ok_or_else(|| {
            GcsError::new(
                StatusCode::BAD_REQUEST,
                "required",
                "Required field: sourceObjects[].name.",
            )
        })?;
        let generation = match s.get("generation") {
            None | Some(Value::Null) => None,
            Some(Value::String(g)) => Some(
                g.parse::<i64>()
                    .map_err(|_| GcsError::invalid("Invalid source generation."))?,
            ),
            Some(Value::Number(n)) => n.as_i64(),
            Some(_) => return Err(GcsError::invalid("Invalid source generation.")),
        };
        let if_match = match s.pointer("/objectPreconditions/ifGenerationMatch") {
            None | Some(Value::Null) => None,
            Some(Value::String(g)) => Some(
                g.parse::<i64>()
                    .map_err(|_| GcsError::invalid("Invalid ifGenerationMatch."))?,
            ),
            Some(Value::Number(n)) => n.as_i64(),
            Some(_) => return Err(GcsError::invalid("Invalid ifGenerationMatch.")),
        };
        let pre = Preconditions {
            if_generation_match: if_match,
            ..Default::default()
        };
        let rec = ctx
            .app
            .storage
            .get_object(bucket, name, generation, &Preconditions::default())
            .await?;
        pre.check(Some((rec.generation, rec.metageneration)), false)?;
        opened.push(ctx.app.storage.open(rec, ctx.csek("x-goog-encryption")?.as_deref())?);
    }
    let mut spec = dest_spec(ctx, bucket, dest, "kmsKeyName").await?;
    spec.meta = apply_meta(&ObjectMeta::default(), &destination, false)?;
    let (rec, hashes) = ctx.app.storage.compose(opened, spec).await?;
    Ok(object_response(ctx, &rec, Some(&hashes)).await)
}

/// What a rewrite token carries: the destination upload session and what the rewrite
/// is bound to (source generation and destination parameters).
#[derive(serde::Serialize, serde::Deserialize)]
struct RewriteToken {
    session: String,
    source_generation: i64,
    binding: String,
}

fn rewrite_binding(ctx: &Ctx, dst_bucket: &str, dst: &str, key: &Option<String>, max: u64) -> GcsResult<String> {
    let csek = ctx
        .csek("x-goog-encryption")?
        .map(|k| k.sha256_b64())
        .unwrap_or_default();
    let text = format!(
        "{dst_bucket}\n{dst}\n{}\n{csek}\n{max}",
        key.clone().unwrap_or_default()
    );
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())))
}

/// `objects.rewrite`: copies a generation to a destination, re-encrypting it under a
/// fresh DEK and the destination's key (CSEK headers, `destinationKmsKeyName`, the
/// destination bucket's default, else Google-managed). With `maxBytesRewrittenPerCall`
/// the work spans several calls; progress lives in a persisted upload session, so a
/// rewrite token survives a restart.
pub async fn rewrite(
    ctx: &Ctx,
    src_bucket: &str,
    src: &str,
    dst_bucket: &str,
    dst: &str,
    body: Body,
) -> GcsResult<Response> {
    let body = json_body(body, ctx.app.limits.max_body_bytes).await?;
    let source_key = ctx.csek("x-goog-copy-source-encryption")?;
    let dest_key_name = key_param(ctx, "destinationKmsKeyName")?;
    let max = match ctx.int("maxBytesRewrittenPerCall")? {
        None => None,
        Some(m) if m < 1 << 20 || m % (1 << 20) != 0 => {
            return Err(GcsError::invalid(
                "maxBytesRewrittenPerCall must be a positive multiple of 1048576.",
            ));
        }
        Some(m) => Some(m as u64),
    };
    let binding = rewrite_binding(ctx, dst_bucket, dst, &dest_key_name, max.unwrap_or(0))?;
    let token: Option<RewriteToken> = match ctx.query.get("rewriteToken").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(
            ctx.app
                .rewrite_tokens
                .open(t)
                .ok_or_else(|| GcsError::invalid("Invalid rewriteToken."))?,
        ),
    };
    let source_generation = match &token {
        Some(t) => Some(t.source_generation),
        None => ctx.int("sourceGeneration")?,
    };
    let source = match ctx
        .app
        .storage
        .get_object(src_bucket, src, source_generation, &Preconditions::default())
        .await
    {
        Ok(r) => r,
        Err(StorageError::NotFound(_)) if token.is_some() => {
            return Err(GcsError::new(
                StatusCode::PRECONDITION_FAILED,
                "conditionNotMet",
                "The source object changed during the rewrite.",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    ctx.preconditions("Source")?
        .check(Some((source.generation, source.metageneration)), false)?;
    let opened = ctx.app.storage.open(source, source_key.as_deref())?;
    let size = opened.record.size;
    let dest_csek = ctx.csek("x-goog-encryption")?;
    // Without a limit (or when it covers the rest), one call finishes the rewrite.
    let session = match &token {
        Some(t) => {
            if t.binding != binding {
                return Err(GcsError::invalid(
                    "The rewrite parameters differ from those of the first call.",
                ));
            }
            t.session.clone()
        }
        None => {
            check_unsupported(&body)?;
            let mut spec = dest_spec(ctx, dst_bucket, dst, "destinationKmsKeyName").await?;
            spec.meta = apply_meta(&opened.record.meta, &body, false)?;
            spec.storage_class = body
                .get("storageClass")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or(Some(opened.record.storage_class.clone()));
            ctx.app.storage.start_resumable(spec, Some(size)).await?
        }
    };
    // Where the destination session stands.
    let persisted = match ctx
        .app
        .storage
        .put_chunk(
            &session,
            sealstore_storage::ChunkRange::Query { total: None },
            None,
            None,
            None,
            futures::stream::empty::<Result<bytes::Bytes, StorageError>>(),
        )
        .await?
    {
        sealstore_storage::ChunkOutcome::Incomplete { persisted } => persisted,
        sealstore_storage::ChunkOutcome::Complete(rec, h) => {
            return Ok(rewrite_response(ctx, size, size, Some((&rec, &h)), None));
        }
    };
    let end = match max {
        Some(m) => (persisted + m).min(size),
        None => size,
    };
    let range = if size == 0 {
        sealstore_storage::ChunkRange::Query { total: Some(0) }
    } else {
        sealstore_storage::ChunkRange::Data {
            start: persisted,
            end: end - 1,
            total: if end == size { Some(size) } else { None },
        }
    };
    let data = ctx.app.storage.read_range(&opened, persisted, end);
    let outcome = ctx
        .app
        .storage
        .put_chunk(&session, range, None, None, dest_csek.as_deref(), data)
        .await?;
    match outcome {
        sealstore_storage::ChunkOutcome::Complete(rec, h) => {
            Ok(rewrite_response(ctx, end, size, Some((&rec, &h)), None))
        }
        sealstore_storage::ChunkOutcome::Incomplete { persisted } => {
            let t = RewriteToken {
                session,
                source_generation: opened.record.generation,
                binding,
            };
            let t = ctx.app.rewrite_tokens.seal(&t).map_err(StorageError::internal)?;
            Ok(rewrite_response(ctx, persisted, size, None, Some(t)))
        }
    }
}

fn rewrite_response(
    ctx: &Ctx,
    rewritten: u64,
    size: u64,
    done: Option<(&sealstore_storage::model::ObjectRecord, &ObjectHashes)>,
    token: Option<String>,
) -> Response {
    let mut v = json!({
        "kind": "storage#rewriteResponse",
        "totalBytesRewritten": rewritten.to_string(),
        "objectSize": size.to_string(),
        "done": done.is_some(),
    });
    if let Some((rec, h)) = done {
        v["resource"] = render::object(rec, Some(h), &ctx.base);
    }
    if let Some(t) = token {
        v["rewriteToken"] = json!(t);
    }
    Json(v).into_response()
}

/// `POST /storage/v1/b/{b}/o/{o}/restore?generation=G`: a soft-deleted generation becomes
/// the live object again (preconditions apply to the live object it replaces).
pub async fn restore(ctx: &Ctx, bucket: &str, name: &str) -> GcsResult<Response> {
    if ctx.flag("copySourceAcl")? {
        return Err(GcsError::invalid(
            "copySourceAcl=true: sealstore has no object ACLs to copy (uniform bucket-level access).",
        ));
    }
    let generation = ctx.required_int("generation", "Required parameter: generation")?;
    let rec = ctx
        .app
        .storage
        .restore_object(bucket, name, generation, &ctx.preconditions("")?)
        .await?;
    let hashes = visible_hashes(ctx, &rec, false)?;
    Ok(object_response(ctx, &rec, hashes.as_ref()).await)
}
