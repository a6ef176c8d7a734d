//! Bucket methods.

use super::error::{GcsError, GcsResult};
use super::{Ctx, json_body, render};
use axum::Json;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sealstore_storage::enforcement::{KINDS as ENFORCEMENT_KINDS, RestrictionMode};
use sealstore_storage::model::KeyKind;
use sealstore_storage::{BucketPatch, NewBucket};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Bucket features sealstore does not implement: refused rather than stored and ignored.
const UNSUPPORTED: &[&str] = &[
    "cors",
    "website",
    "logging",
    "billing",
    "autoclass",
    "hierarchicalNamespace",
    "ipFilter",
];

/// Fields the server sets: accepted in a request (clients send back what they read)
/// and ignored, as GCS ignores them.
const OUTPUT_ONLY: &[&str] = &[
    "kind",
    "id",
    "selfLink",
    "projectNumber",
    "timeCreated",
    "updated",
    "metageneration",
    "etag",
    "locationType",
    "owner",
    "satisfiesPZS",
    "satisfiesPZI",
    "generation",
    "softDeleteTime",
    "hardDeleteTime",
    "objectRetention",
];

/// Fields this module reads.
const IMPLEMENTED: &[&str] = &[
    "name",
    "location",
    "customPlacementConfig",
    "storageClass",
    "versioning",
    "labels",
    "encryption",
    "retentionPolicy",
    "defaultEventBasedHold",
    "iamConfiguration",
    "rpo",
    "lifecycle",
    "softDeletePolicy",
    "acl",
    "defaultObjectAcl",
];

fn unsupported(body: &Value) -> GcsResult<()> {
    for k in UNSUPPORTED {
        if body
            .get(k)
            .is_some_and(|v| !v.is_null() && v != &json!([]) && v != &json!({}))
        {
            return Err(GcsError::new(
                StatusCode::NOT_IMPLEMENTED,
                "notImplemented",
                format!("The bucket field {k} is not supported by sealstore."),
            ));
        }
    }
    if let Some(map) = body.as_object() {
        for k in map.keys() {
            if !UNSUPPORTED.contains(&k.as_str())
                && !OUTPUT_ONLY.contains(&k.as_str())
                && !IMPLEMENTED.contains(&k.as_str())
            {
                return Err(GcsError::invalid(format!("Unknown bucket field \"{k}\".")));
            }
        }
    }
    super::acl::refuse_acl_fields(body, super::acl::Target::Bucket)?;
    Ok(())
}

/// `encryption`: the default key and the enforcement configs. Fields inside merge as in
/// any PATCH (absent keeps, null clears); `encryption: null` or `{}` clears it all, and
/// a PUT (`replace`) clears what it does not name.
#[derive(Default)]
struct EncryptionChange {
    default_key: Option<Option<String>>,
    enforcement: Vec<(KeyKind, Option<RestrictionMode>)>,
}

fn encryption_change(body: &Value, replace: bool) -> GcsResult<EncryptionChange> {
    let clear_all = || EncryptionChange {
        default_key: Some(None),
        enforcement: ENFORCEMENT_KINDS.iter().map(|(k, _, _)| (k.clone(), None)).collect(),
    };
    let e = match body.get("encryption") {
        None if replace => return Ok(clear_all()),
        None => return Ok(EncryptionChange::default()),
        Some(Value::Null) => return Ok(clear_all()),
        Some(Value::Object(m)) if m.is_empty() => return Ok(clear_all()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(GcsError::invalid("Invalid value for encryption: expected an object.")),
    };
    for k in e.keys() {
        if k != "defaultKmsKeyName" && !ENFORCEMENT_KINDS.iter().any(|(_, f, _)| f == k) {
            return Err(GcsError::new(
                StatusCode::NOT_IMPLEMENTED,
                "notImplemented",
                format!("The bucket field encryption.{k} is not supported by sealstore."),
            ));
        }
    }
    let mut change = EncryptionChange {
        default_key: match e.get("defaultKmsKeyName") {
            None if replace => Some(None),
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.is_empty() => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(_) => return Err(GcsError::invalid("Invalid value for encryption.defaultKmsKeyName.")),
        },
        enforcement: vec![],
    };
    for (kind, field, _) in ENFORCEMENT_KINDS.iter() {
        let mode = match e.get(*field) {
            None if replace => None,
            None => continue,
            Some(Value::Null) => None,
            Some(Value::Object(c)) => match c.get("restrictionMode") {
                None | Some(Value::Null) => None,
                Some(Value::String(m)) => Some(RestrictionMode::parse(m)?),
                Some(_) => {
                    return Err(GcsError::invalid(format!(
                        "Invalid value for encryption.{field}.restrictionMode."
                    )));
                }
            },
            Some(_) => return Err(GcsError::invalid(format!("Invalid value for encryption.{field}."))),
        };
        change.enforcement.push((kind.clone(), mode));
    }
    Ok(change)
}

/// `iamConfiguration`: uniform bucket-level access is always on (there are no ACLs);
/// `publicAccessPrevention` is `inherited` or `enforced`.
fn iam_configuration(body: &Value) -> GcsResult<Option<String>> {
    let Some(c) = body.get("iamConfiguration").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(m) = c.as_object() else {
        return Err(GcsError::invalid(
            "Invalid value for iamConfiguration: expected an object.",
        ));
    };
    for (k, v) in m {
        match k.as_str() {
            "uniformBucketLevelAccess" | "bucketPolicyOnly" => {
                if v.get("enabled") == Some(&json!(false)) {
                    return Err(GcsError::invalid(format!(
                        "iamConfiguration.{k}.enabled cannot be false: sealstore has no ACLs, so every bucket uses uniform bucket-level access (IAM only)."
                    )));
                }
            }
            "publicAccessPrevention" => {}
            other => {
                return Err(GcsError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "notImplemented",
                    format!("The bucket field iamConfiguration.{other} is not supported by sealstore."),
                ));
            }
        }
    }
    match m.get("publicAccessPrevention") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "enforced" => Ok(Some("enforced".into())),
            // `unspecified` is the older name of `inherited`.
            "inherited" | "unspecified" => Ok(Some("inherited".into())),
            other => Err(GcsError::invalid(format!(
                "Invalid value for iamConfiguration.publicAccessPrevention: \"{other}\" (inherited or enforced)."
            ))),
        },
        Some(_) => Err(GcsError::invalid(
            "Invalid value for iamConfiguration.publicAccessPrevention.",
        )),
    }
}

/// `rpo`: `Some(None)` resets it.
fn rpo(body: &Value) -> GcsResult<Option<Option<String>>> {
    match body.get("rpo") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(GcsError::invalid("Invalid value for rpo: expected a string.")),
    }
}

fn string_map(v: Option<&Value>, field: &str) -> GcsResult<Option<BTreeMap<String, Option<String>>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), Some(s.clone()))),
                Value::Null => Ok((k.clone(), None)),
                _ => Err(GcsError::invalid(format!(
                    "Invalid value for {field}.{k}: expected a string."
                ))),
            })
            .collect::<GcsResult<_>>()
            .map(Some),
        Some(_) => Err(GcsError::invalid(format!(
            "Invalid value for {field}: expected an object."
        ))),
    }
}

/// Applies a PATCH-style map change (null deletes) or a PUT-style replacement.
pub fn merge_map(
    current: &BTreeMap<String, String>,
    change: BTreeMap<String, Option<String>>,
    replace: bool,
) -> BTreeMap<String, String> {
    let mut out = if replace { BTreeMap::new() } else { current.clone() };
    for (k, v) in change {
        match v {
            Some(v) => {
                out.insert(k, v);
            }
            None => {
                out.remove(&k);
            }
        }
    }
    out
}

fn str_field<'a>(body: &'a Value, k: &str) -> GcsResult<Option<&'a str>> {
    match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(GcsError::invalid(format!("Invalid value for {k}: expected a string."))),
    }
}

/// `retentionPolicy.retentionPeriod` (a string or number of seconds): `Some(None)`
/// removes the policy.
fn retention_period(body: &Value) -> GcsResult<Option<Option<i64>>> {
    match body.get("retentionPolicy") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(p) => match p.get("retentionPeriod") {
            None | Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => s
                .parse()
                .map(|v| Some(Some(v)))
                .map_err(|_| GcsError::invalid(format!("Invalid retentionPeriod \"{s}\"."))),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(|v| Some(Some(v)))
                .ok_or_else(|| GcsError::invalid("Invalid retentionPeriod.")),
            Some(_) => Err(GcsError::invalid("Invalid retentionPeriod.")),
        },
    }
}

pub async fn create(ctx: &Ctx, body: Body) -> GcsResult<Response> {
    let body = json_body(body, ctx.app.limits.max_body_bytes).await?;
    unsupported(&body)?;
    super::acl::refuse_predefined(ctx, super::acl::Target::Bucket)?;
    let name = str_field(&body, "name")?
        .ok_or_else(|| GcsError::new(StatusCode::BAD_REQUEST, "required", "Required field: name."))?;
    let encryption = encryption_change(&body, false)?;
    let data_locations = match body.pointer("/customPlacementConfig/dataLocations") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Some(_) => return Err(GcsError::invalid("customPlacementConfig.dataLocations must be a list.")),
    };
    let spec = NewBucket {
        name: name.to_owned(),
        location: str_field(&body, "location")?.map(str::to_owned),
        data_locations,
        storage_class: str_field(&body, "storageClass")?.map(str::to_owned),
        versioning: body
            .pointer("/versioning/enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        labels: merge_map(
            &BTreeMap::new(),
            string_map(body.get("labels"), "labels")?.unwrap_or_default(),
            true,
        ),
        default_kms_key_name: encryption.default_key.flatten(),
        retention_period: retention_period(&body)?.flatten(),
        default_event_based_hold: body
            .get("defaultEventBasedHold")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        object_retention: ctx.flag("enableObjectRetention")?,
        enforcement: encryption.enforcement,
        public_access_prevention: iam_configuration(&body)?,
        rpo: rpo(&body)?.flatten(),
        lifecycle: super::lifecycle::parse(&body)?.unwrap_or_default(),
        soft_delete_seconds: soft_delete_seconds(&body)?,
    };
    let b = ctx.app.storage.create_bucket(&ctx.project(), spec).await?;
    // A new bucket starts with no policy of its own, whatever an earlier bucket of the
    // same name had.
    ctx.app
        .policies
        .remove(&super::bucket_resource(name))
        .await
        .map_err(iam_error)?;
    Ok(Json(render::bucket(&b, &ctx.base)).into_response())
}

pub async fn get(ctx: &Ctx, name: &str) -> GcsResult<Response> {
    if ctx.flag("softDeleted")? {
        let generation = ctx.required_int("generation", "generation is required with softDeleted=true.")?;
        let b = ctx.app.storage.get_soft_bucket(name, generation).await?;
        return Ok(Json(render::bucket(&b, &ctx.base)).into_response());
    }
    let b = ctx.app.storage.get_bucket(name).await?;
    let mg = b.metageneration;
    if ctx.int("ifMetagenerationMatch")?.is_some_and(|m| m != mg) {
        return Err(
            sealstore_storage::StorageError::PreconditionFailed("ifMetagenerationMatch did not hold.".into()).into(),
        );
    }
    if ctx.int("ifMetagenerationNotMatch")?.is_some_and(|m| m == mg) {
        return Err(sealstore_storage::StorageError::NotModified.into());
    }
    ctx.etags().check(&render::bucket_etag(&b), true)?;
    Ok(Json(render::bucket(&b, &ctx.base)).into_response())
}

pub async fn list(ctx: &Ctx) -> GcsResult<Response> {
    if ctx.flag("softDeleted")? {
        let items = ctx
            .app
            .storage
            .list_soft_buckets(&ctx.project(), ctx.query.get("prefix").unwrap_or(""))
            .await?;
        return Ok(Json(json!({
            "kind": "storage#buckets",
            "items": items.iter().map(|b| render::bucket(b, &ctx.base)).collect::<Vec<_>>(),
        }))
        .into_response());
    }
    let max = ctx.max_results()?;
    let (items, next) = ctx
        .app
        .storage
        .list_buckets(
            &ctx.project(),
            ctx.query.get("prefix").unwrap_or(""),
            ctx.query.get("pageToken"),
            max,
        )
        .await?;
    let mut v = json!({"kind": "storage#buckets", "items": items.iter().map(|b| render::bucket(b, &ctx.base)).collect::<Vec<_>>()});
    if let Some(t) = next {
        v["nextPageToken"] = json!(t);
    }
    Ok(Json(v).into_response())
}

/// PATCH (`replace = false`) or PUT (`replace = true`).
pub async fn patch(ctx: &Ctx, name: &str, body: Body, replace: bool) -> GcsResult<Response> {
    let body = json_body(body, ctx.app.limits.max_body_bytes).await?;
    unsupported(&body)?;
    super::acl::refuse_predefined(ctx, super::acl::Target::Bucket)?;
    let current = ctx.app.storage.get_bucket(name).await?;
    let mut p = BucketPatch::default();
    if replace || body.get("versioning").is_some() {
        p.versioning = Some(
            body.pointer("/versioning/enabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        );
    }
    if let Some(change) = string_map(body.get("labels"), "labels")? {
        p.labels = Some(merge_map(&current.labels, change, replace));
    } else if replace || body.get("labels").is_some_and(Value::is_null) {
        p.labels = Some(BTreeMap::new());
    }
    if let Some(c) = str_field(&body, "storageClass")? {
        p.storage_class = Some(c.to_owned());
    }
    let encryption = encryption_change(&body, replace)?;
    p.default_kms_key_name = encryption.default_key;
    p.enforcement = encryption.enforcement;
    p.public_access_prevention = match iam_configuration(&body)? {
        Some(pap) => Some(pap),
        None if replace => Some("inherited".into()),
        None => None,
    };
    p.rpo = match rpo(&body)? {
        Some(r) => Some(r),
        None if replace => Some(None),
        None => None,
    };
    p.soft_delete_seconds = soft_delete_seconds(&body)?;
    p.lifecycle = match super::lifecycle::parse(&body)? {
        Some(rules) => Some(rules),
        None if replace => Some(vec![]),
        None => None,
    };
    p.retention_period = match retention_period(&body)? {
        Some(r) => Some(r),
        None if replace => Some(None),
        None => None,
    };
    p.default_event_based_hold = match body.get("defaultEventBasedHold") {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Null) => Some(false),
        None if replace => Some(false),
        None => None,
        Some(_) => return Err(GcsError::invalid("Invalid value for defaultEventBasedHold.")),
    };
    if let Some(loc) = str_field(&body, "location")?
        && !loc.eq_ignore_ascii_case(&current.location)
    {
        return Err(GcsError::invalid("A bucket's location cannot be changed."));
    }
    let guard = ctx.bucket_write_guard(name).await?;
    let b = ctx.app.storage.patch_bucket(name, p, guard).await?;
    Ok(Json(render::bucket(&b, &ctx.base)).into_response())
}

pub async fn lock_retention(ctx: &Ctx, name: &str) -> GcsResult<Response> {
    let b = ctx
        .app
        .storage
        .lock_retention_policy(name, ctx.int("ifMetagenerationMatch")?)
        .await?;
    Ok(Json(render::bucket(&b, &ctx.base)).into_response())
}

pub async fn delete(ctx: &Ctx, name: &str) -> GcsResult<Response> {
    let guard = ctx.bucket_write_guard(name).await?;
    let soft = ctx.app.storage.delete_bucket(name, guard).await?;
    // A soft-deleted bucket keeps its policy for a restore; otherwise it goes, so a new
    // bucket of the same name starts clean either way.
    let live = super::bucket_resource(name);
    match soft {
        Some(generation) => {
            ctx.app
                .policies
                .rename(&live, &super::soft_bucket_resource(name, generation))
                .await
        }
        None => ctx.app.policies.remove(&live).await,
    }
    .map_err(iam_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /storage/v1/b/{b}/restore?generation=G`: only while no live bucket has the name.
pub async fn restore(ctx: &Ctx, name: &str) -> GcsResult<Response> {
    let generation = ctx.required_int("generation", "Required parameter: generation")?;
    let b = ctx.app.storage.restore_bucket(name, generation).await?;
    ctx.app
        .policies
        .rename(
            &super::soft_bucket_resource(name, generation),
            &super::bucket_resource(name),
        )
        .await
        .map_err(iam_error)?;
    Ok(Json(render::bucket(&b, &ctx.base)).into_response())
}

/// `softDeletePolicy`: absent → unchanged, `null` → off, else its
/// `retentionDurationSeconds` (a number or a decimal string).
fn soft_delete_seconds(body: &Value) -> GcsResult<Option<i64>> {
    match body.get("softDeletePolicy") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(0)),
        Some(Value::Object(p)) => {
            if let Some(k) = p
                .keys()
                .find(|k| !matches!(k.as_str(), "retentionDurationSeconds" | "effectiveTime"))
            {
                return Err(GcsError::invalid(format!("Unknown softDeletePolicy field \"{k}\".")));
            }
            match p.get("retentionDurationSeconds") {
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| GcsError::invalid("Invalid softDeletePolicy.retentionDurationSeconds.")),
                Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
                    GcsError::invalid(format!("Invalid softDeletePolicy.retentionDurationSeconds \"{s}\"."))
                }),
                None => Err(GcsError::new(
                    StatusCode::BAD_REQUEST,
                    "required",
                    "Required field: softDeletePolicy.retentionDurationSeconds.",
                )),
                Some(_) => Err(GcsError::invalid("Invalid softDeletePolicy.retentionDurationSeconds.")),
            }
        }
        Some(_) => Err(GcsError::invalid(
            "Invalid value for softDeletePolicy: expected an object.",
        )),
    }
}

fn policy_json(bucket: &str, p: &sealstore_iam::Policy) -> Value {
    let mut v = crate::kms::render::policy(p);
    v["kind"] = json!("storage#policy");
    v["resourceId"] = json!(super::bucket_resource(bucket));
    if v.get("bindings").is_none() {
        v["bindings"] = json!([]);
    }
    v
}

pub(super) fn iam_error(e: sealstore_iam::IamError) -> GcsError {
    use sealstore_iam::IamError;
    match e {
        IamError::InvalidArgument(m) => GcsError::invalid(m),
        IamError::Aborted(m) => GcsError::new(StatusCode::PRECONDITION_FAILED, "conditionNotMet", m),
        IamError::NotFound(m) => GcsError::not_found(m),
        IamError::FailedPrecondition(m) => GcsError::invalid(m),
        other => sealstore_storage::StorageError::internal(other).into(),
    }
}

pub async fn get_iam(ctx: &Ctx, bucket: &str) -> GcsResult<Response> {
    ctx.app.storage.get_bucket(bucket).await?;
    let p = ctx
        .app
        .policies
        .get(&super::bucket_resource(bucket))
        .await
        .map_err(iam_error)?;
    Ok(Json(policy_json(bucket, &p)).into_response())
}

pub async fn set_iam(ctx: &Ctx, bucket: &str, body: Body) -> GcsResult<Response> {
    let b = ctx.app.storage.get_bucket(bucket).await?;
    let body = json_body(body, ctx.app.limits.max_body_bytes).await?;
    let policy = crate::kms::handlers::parse_policy(&crate::kms::json::Obj::new(&body))
        .map_err(|e| GcsError::invalid(e.message))?;
    if b.public_access_prevention == "enforced"
        && let Some(m) = policy
            .bindings
            .iter()
            .flat_map(|b| &b.members)
            .find(|m| sealstore_iam::is_public_member(m))
    {
        return Err(GcsError::new(
            StatusCode::PRECONDITION_FAILED,
            "conditionNotMet",
            format!(
                "The member bindings allUsers and allAuthenticatedUsers are not allowed since public access prevention is enforced ({m} on bucket {bucket})."
            ),
        ));
    }
    let resource = super::bucket_resource(bucket);
    let stored = ctx.app.policies.set(&resource, policy).await.map_err(iam_error)?;
    ctx.app.audit(
        &ctx.principal,
        &format!("PUT {resource}/iam"),
        &resource,
        "storage.buckets.setIamPolicy",
        "OK",
    );
    Ok(Json(policy_json(bucket, &stored)).into_response())
}

/// `permissions` may repeat in the query: every value is tested.
pub async fn test_iam(ctx: &Ctx, bucket: &str, raw_query: Option<&str>) -> GcsResult<Response> {
    let b = ctx.app.storage.get_bucket(bucket).await?;
    let chain = vec![super::bucket_resource(bucket), format!("projects/{}", b.project)];
    let asked = raw_query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "permissions")
        .filter_map(|(_, v)| crate::query::percent_decode(v, true))
        .filter(|p| sealstore_iam::roles::STORAGE_PERMISSIONS.contains(&p.as_str()));
    let mut held: Vec<String> = vec![];
    for p in asked {
        if ctx.app.allowed(&ctx.principal, &p, &chain).await {
            held.push(p);
        }
    }
    Ok(Json(json!({"kind": "storage#testIamPermissionsResponse", "permissions": held})).into_response())
}
