//! Service and bucket operations of the XML API: ListBuckets, CreateBucket, HeadBucket,
//! DeleteBucket, GetBucketLocation, versioning, default encryption and Object Lock
//! configuration, each mapped onto the bucket's GCS fields.

use super::error::{S3Error, S3Result};
use super::render::{El, document, iso};
use super::{XCtx, require, xml_body};
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sealstore_storage::enforcement::RestrictionMode;
use sealstore_storage::model::KeyKind;
use sealstore_storage::{BucketPatch, NewBucket};
use serde::Deserialize;

pub async fn list_buckets(ctx: &XCtx) -> S3Result<Response> {
    let project = ctx.project()?;
    let mut buckets = El::new("Buckets");
    let mut token: Option<String> = None;
    loop {
        let (page, next) = ctx
            .app
            .storage
            .list_buckets(
                &project,
                ctx.query.get("prefix").unwrap_or(""),
                token.as_deref(),
                Some(1000),
            )
            .await?;
        for b in page {
            buckets.add(
                El::new("Bucket")
                    .child(El::text("Name", b.name.clone()))
                    .child(El::text("CreationDate", iso(b.time_created)))
                    .child(El::text("BucketRegion", b.location.clone())),
            );
        }
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(document(
        El::new("ListAllMyBucketsResult")
            .child(
                El::new("Owner")
                    .child(El::text("ID", format!("projects/{project}")))
                    .child(El::text("DisplayName", project.clone())),
            )
            .child(buckets),
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct CreateBucketConfiguration {
    location_constraint: Option<String>,
    /// GCS XML: `<StorageClass>`.
    storage_class: Option<String>,
}

/// `x-amz-acl` / `x-goog-acl`: only `private` (which is what every sealstore bucket and
/// object is, under IAM) is accepted; any grant is refused, not dropped.
pub fn refuse_acl(ctx: &XCtx) -> S3Result<()> {
    for h in ["x-amz-acl", "x-goog-acl"] {
        if let Some(v) = ctx.header(h)
            && !v.trim().eq_ignore_ascii_case("private")
        {
            return Err(S3Error::not_implemented(&format!(
                "The canned ACL \"{v}\" (buckets use IAM with uniform bucket-level access; only private is accepted)"
            )));
        }
    }
    for h in [
        "x-amz-grant-read",
        "x-amz-grant-write",
        "x-amz-grant-read-acp",
        "x-amz-grant-write-acp",
        "x-amz-grant-full-control",
    ] {
        if ctx.header(h).is_some() {
            return Err(S3Error::not_implemented("ACL grants (use IAM)"));
        }
    }
    Ok(())
}

pub async fn create(ctx: &XCtx, bucket: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.buckets.create", None).await?;
    refuse_acl(ctx)?;
    let project = ctx.project()?;
    let bytes = super::payload::read_small(ctx, body).await?;
    let config: CreateBucketConfiguration = if bytes.iter().all(u8::is_ascii_whitespace) {
        CreateBucketConfiguration::default()
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|_| S3Error::malformed_xml("the body is not UTF-8"))?;
        quick_xml::de::from_str(text).map_err(S3Error::malformed_xml)?
    };
    // S3 clients name AWS regions; `us-east-1` is S3's default (sent as no constraint).
    let location = config
        .location_constraint
        .filter(|l| !l.is_empty() && l != "us-east-1" && !l.eq_ignore_ascii_case("auto"));
    let object_lock = ctx
        .header("x-amz-bucket-object-lock-enabled")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let spec = NewBucket {
        name: bucket.to_owned(),
        location: location.clone(),
        storage_class: config.storage_class,
        // S3 Object Lock needs versioning; on GCS it is object retention.
        versioning: object_lock,
        object_retention: object_lock,
        ..Default::default()
    };
    match ctx.app.storage.create_bucket(&project, spec).await {
        Ok(_) => {}
        Err(sealstore_storage::StorageError::Conflict(m)) => {
            let existing = ctx.app.storage.get_bucket(bucket).await.ok();
            return Err(match existing {
                Some(b) if b.project == project => S3Error::new(409, "BucketAlreadyOwnedByYou", m),
                _ => S3Error::new(
                    409,
                    "BucketAlreadyExists",
                    "The requested bucket name is not available. The bucket namespace is shared by all users of the system.",
                ),
            }
            .with_resource(format!("/{bucket}")));
        }
        Err(sealstore_storage::StorageError::BadRequest { message, .. })
            if message.starts_with("Invalid bucket name") =>
        {
            return Err(S3Error::new(400, "InvalidBucketName", message).with_resource(format!("/{bucket}")));
        }
        Err(sealstore_storage::StorageError::BadRequest { message, .. })
            if message.starts_with("The specified location constraint") =>
        {
            return Err(S3Error::new(400, "InvalidLocationConstraint", message));
        }
        Err(e) => return Err(e.into()),
    }
    let mut resp = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/{bucket}")) {
        resp.headers_mut().insert("location", v);
    }
    Ok(resp)
}

pub async fn head(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.buckets.get", Some(bucket)).await?;
    let b = ctx.app.storage.get_bucket(bucket).await?;
    let mut resp = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&b.location) {
        resp.headers_mut().insert("x-amz-bucket-region", v);
    }
    Ok(resp)
}

pub async fn delete(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.buckets.delete", Some(bucket)).await?;
    ctx.app
        .storage
        .delete_bucket(bucket, None)
        .await
        .map_err(|e| S3Error::from(e).with_resource(format!("/{bucket}")))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn location(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.buckets.get", Some(bucket)).await?;
    let b = ctx.app.storage.get_bucket(bucket).await?;
    Ok(document(El::text("LocationConstraint", b.location)))
}

pub async fn get_versioning(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.buckets.get", Some(bucket)).await?;
    let b = ctx.app.storage.get_bucket(bucket).await?;
    // GCS versioning is on or off; off answers as a bucket that never had it.
    let doc = El::new("VersioningConfiguration").opt("Status", b.versioning.then_some("Enabled"));
    Ok(document(doc))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VersioningConfiguration {
    status: Option<String>,
    mfa_delete: Option<String>,
}

pub async fn put_versioning(ctx: &XCtx, bucket: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.buckets.update", Some(bucket)).await?;
    let cfg: VersioningConfiguration = xml_body(ctx, body).await?;
    if cfg.mfa_delete.as_deref().is_some_and(|m| m == "Enabled") {
        return Err(S3Error::not_implemented("MFA delete"));
    }
    let on = match cfg.status.as_deref() {
        Some("Enabled") => true,
        Some("Suspended") => false,
        other => {
            return Err(S3Error::malformed_xml(format!(
                "Status must be Enabled or Suspended, not {other:?}"
            )));
        }
    };
    let patch = BucketPatch {
        versioning: Some(on),
        ..Default::default()
    };
    ctx.app.storage.patch_bucket(bucket, patch, None).await?;
    Ok(StatusCode::OK.into_response())
}

pub async fn get_encryption(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.buckets.get", Some(bucket)).await?;
    let b = ctx.app.storage.get_bucket(bucket).await?;
    let default = match &b.default_kms_key_name {
        Some(k) => El::new("ApplyServerSideEncryptionByDefault")
            .child(El::text("SSEAlgorithm", "aws:kms"))
            .child(El::text("KMSMasterKeyID", k.clone())),
        None => El::new("ApplyServerSideEncryptionByDefault").child(El::text("SSEAlgorithm", "AES256")),
    };
    let mut rule = El::new("Rule")
        .child(default)
        .child(El::text("BucketKeyEnabled", "false"));
    // S3's BlockedEncryptionTypes (SSE-C) is GCS's customer-supplied enforcement.
    if b.encryption_enforcement
        .get(&KeyKind::Csek)
        .is_some_and(|c| c.restriction_mode == RestrictionMode::FullyRestricted)
    {
        rule.add(El::new("BlockedEncryptionTypes").child(El::text("EncryptionType", "SSE-C")));
    }
    Ok(document(El::new("ServerSideEncryptionConfiguration").child(rule)))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptionConfig {
    #[serde(default)]
    rule: Vec<EncryptionRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptionRule {
    apply_server_side_encryption_by_default: Option<SseDefault>,
    bucket_key_enabled: Option<bool>,
    blocked_encryption_types: Option<BlockedTypes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlockedTypes {
    #[serde(default)]
    encryption_type: Vec<String>,
}

#[derive(Deserialize)]
struct SseDefault {
    #[serde(rename = "SSEAlgorithm")]
    sse_algorithm: String,
    #[serde(rename = "KMSMasterKeyID")]
    kms_master_key_id: Option<String>,
}

pub async fn put_encryption(ctx: &XCtx, bucket: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.buckets.update", Some(bucket)).await?;
    let cfg: EncryptionConfig = xml_body(ctx, body).await?;
    let [rule] = cfg.rule.as_slice() else {
        return Err(S3Error::malformed_xml("exactly one Rule is expected"));
    };
    if rule.bucket_key_enabled == Some(true) {
        return Err(S3Error::not_implemented("S3 Bucket Keys"));
    }
    let d = rule
        .apply_server_side_encryption_by_default
        .as_ref()
        .ok_or_else(|| S3Error::malformed_xml("ApplyServerSideEncryptionByDefault is required"))?;
    let key = match (d.sse_algorithm.as_str(), d.kms_master_key_id.as_deref()) {
        ("AES256", None) => None,
        ("aws:kms", Some(k)) if k.contains("/cryptoKeyVersions/") => {
            return Err(S3Error::invalid(format!(
                "Bad Cloud KMS crypto key: {k} (name a CryptoKey, not a version)."
            )));
        }
        ("aws:kms", Some(k)) => Some(k.trim().to_owned()),
        ("aws:kms", None) => {
            return Err(S3Error::invalid(
                "sealstore needs KMSMasterKeyID (a Cloud KMS CryptoKey name) with aws:kms.",
            ));
        }
        ("AES256", Some(_)) => return Err(S3Error::invalid("KMSMasterKeyID is only valid with aws:kms.")),
        (other, _) => {
            return Err(S3Error::invalid(format!(
                "The encryption method specified is not supported: {other}."
            )));
        }
    };
    // BlockedEncryptionTypes: SSE-C blocked = customer-supplied keys FullyRestricted;
    // absent or NONE = not restricted.
    let mut csek_blocked = false;
    for t in rule
        .blocked_encryption_types
        .iter()
        .flat_map(|b| b.encryption_type.iter())
    {
        match t.as_str() {
            "SSE-C" => csek_blocked = true,
            "NONE" => {}
            other => {
                return Err(S3Error::invalid(format!(
                    "Unknown blocked encryption type {other}: SSE-C or NONE."
                )));
            }
        }
    }
    apply_encryption(ctx, bucket, key, csek_blocked).await
}

/// Sets the default key and the SSE-C block. The configuration replaces the previous
/// one: a block it no longer names is lifted; an enforcement never set stays unset.
async fn apply_encryption(ctx: &XCtx, bucket: &str, key: Option<String>, csek_blocked: bool) -> S3Result<Response> {
    let was_blocked = ctx
        .app
        .storage
        .get_bucket(bucket)
        .await?
        .encryption_enforcement
        .get(&KeyKind::Csek)
        .is_some_and(|c| c.restriction_mode == RestrictionMode::FullyRestricted);
    let enforcement = match (csek_blocked, was_blocked) {
        (true, _) => vec![(KeyKind::Csek, Some(RestrictionMode::FullyRestricted))],
        (false, true) => vec![(KeyKind::Csek, Some(RestrictionMode::NotRestricted))],
        (false, false) => vec![],
    };
    let patch = BucketPatch {
        default_kms_key_name: Some(key),
        enforcement,
        ..Default::default()
    };
    ctx.app.storage.patch_bucket(bucket, patch, None).await?;
    Ok(StatusCode::OK.into_response())
}

pub async fn delete_encryption(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.buckets.update", Some(bucket)).await?;
    apply_encryption(ctx, bucket, None, false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn get_object_lock(ctx: &XCtx, bucket: &str) -> S3Result<Response> {
    require(ctx, "storage.buckets.get", Some(bucket)).await?;
    let b = ctx.app.storage.get_bucket(bucket).await?;
    if !b.object_retention && b.retention_policy.is_none() {
        return Err(S3Error::new(
            404,
            "ObjectLockConfigurationNotFoundError",
            "Object Lock configuration does not exist for this bucket",
        )
        .with_resource(format!("/{bucket}")));
    }
    let mut doc = El::new("ObjectLockConfiguration").child(El::text("ObjectLockEnabled", "Enabled"));
    if let Some(p) = &b.retention_policy {
        // A locked GCS retention policy cannot be shortened or removed: COMPLIANCE.
        let mode = if p.is_locked { "COMPLIANCE" } else { "GOVERNANCE" };
        let period = if p.retention_period % 86_400 == 0 {
            El::text("Days", (p.retention_period / 86_400).to_string())
        } else {
            return Err(S3Error::invalid(format!(
                "The bucket's retention period ({} s) is not a whole number of days: read it with the JSON API.",
                p.retention_period
            )));
        };
        doc.add(El::new("Rule").child(El::new("DefaultRetention").child(El::text("Mode", mode)).child(period)));
    }
    Ok(document(doc))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ObjectLockConfiguration {
    object_lock_enabled: Option<String>,
    rule: Option<LockRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LockRule {
    default_retention: DefaultRetention,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DefaultRetention {
    mode: String,
    days: Option<i64>,
    years: Option<i64>,
}

/// A default retention is the bucket's retention policy: `GOVERNANCE` an unlocked one,
/// `COMPLIANCE` a locked one (GCS's irreversible lock).
pub async fn put_object_lock(ctx: &XCtx, bucket: &str, body: Body) -> S3Result<Response> {
    require(ctx, "storage.buckets.update", Some(bucket)).await?;
    let cfg: ObjectLockConfiguration = xml_body(ctx, body).await?;
    if cfg.object_lock_enabled.as_deref() != Some("Enabled") {
        return Err(S3Error::malformed_xml("ObjectLockEnabled must be Enabled"));
    }
    let Some(rule) = cfg.rule else {
        let b = ctx.app.storage.get_bucket(bucket).await?;
        if b.retention_policy.as_ref().is_some_and(|p| p.is_locked) {
            return Err(S3Error::access_denied(
                "The bucket's COMPLIANCE default retention is locked.",
            ));
        }
        let patch = BucketPatch {
            retention_period: Some(None),
            ..Default::default()
        };
        ctx.app.storage.patch_bucket(bucket, patch, None).await?;
        return Ok(StatusCode::OK.into_response());
    };
    let d = rule.default_retention;
    let days = match (d.days, d.years) {
        (Some(n), None) if n > 0 => n,
        (None, Some(y)) if y > 0 => y
            .checked_mul(365)
            .ok_or_else(|| S3Error::invalid("Years is too large."))?,
        _ => {
            return Err(S3Error::malformed_xml(
                "DefaultRetention needs a positive Days or Years (not both)",
            ));
        }
    };
    let seconds = days
        .checked_mul(86_400)
        .ok_or_else(|| S3Error::invalid("The retention period is too long."))?;
    let lock = match d.mode.as_str() {
        "GOVERNANCE" => false,
        "COMPLIANCE" => true,
        m => {
            return Err(S3Error::malformed_xml(format!(
                "Mode must be GOVERNANCE or COMPLIANCE, not {m}"
            )));
        }
    };
    let patch = BucketPatch {
        retention_period: Some(Some(seconds)),
        ..Default::default()
    };
    let b = ctx.app.storage.patch_bucket(bucket, patch, None).await?;
    if lock {
        ctx.app
            .storage
            .lock_retention_policy(bucket, Some(b.metageneration))
            .await?;
    }
    Ok(StatusCode::OK.into_response())
}
