//! ACLs. sealstore has IAM only, so every bucket behaves as a GCS bucket with uniform
//! bucket-level access: ACL endpoints and ACL fields answer as GCS answers for such a
//! bucket (400, pointing at IAM), never 404 and never silently accepted.

use super::Ctx;
use super::error::{GcsError, GcsResult};
use axum::http::StatusCode;
use serde_json::{Value, json};

const UBLA_DOC: &str = "Read more at https://cloud.google.com/storage/docs/uniform-bucket-level-access";

/// GCS's wording for each refusal on a uniform bucket-level access bucket.
fn ubla_error(message: &str) -> GcsError {
    GcsError::new(StatusCode::BAD_REQUEST, "invalid", format!("{message} {UBLA_DOC}"))
}

const BUCKET_ACL_READ: &str = "Cannot get legacy ACL for a bucket that has uniform bucket-level access.";
const BUCKET_ACL_WRITE: &str =
    "Cannot use ACL API to update bucket policy when uniform bucket-level access is enabled.";
const OBJECT_ACL_READ: &str = "Cannot get legacy ACL for an object when uniform bucket-level access is enabled.";
const OBJECT_ACL_WRITE: &str =
    "Cannot update access control for an object when uniform bucket-level access is enabled.";
const OBJECT_ACL_INSERT: &str = "Cannot insert legacy ACL for an object when uniform bucket-level access is enabled.";

/// Which document carries the ACL fields being refused.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Bucket,
    /// A new object (upload, copy, rewrite, compose).
    NewObject,
    /// An object metadata update.
    Object,
}

/// `acl` / `defaultObjectAcl` in a bucket or object body: refused unless empty.
pub fn refuse_acl_fields(body: &Value, target: Target) -> GcsResult<()> {
    for k in ["acl", "defaultObjectAcl"] {
        if body.get(k).is_some_and(|v| !v.is_null() && v != &json!([])) {
            return Err(ubla_error(match target {
                Target::Bucket => BUCKET_ACL_WRITE,
                Target::NewObject => OBJECT_ACL_INSERT,
                Target::Object => OBJECT_ACL_WRITE,
            }));
        }
    }
    Ok(())
}

/// `predefinedAcl` / `predefinedDefaultObjectAcl` / `destinationPredefinedAcl`: refused
/// whatever the value, `private` included, as on a GCS uniform-access bucket.
pub fn refuse_predefined(ctx: &Ctx, target: Target) -> GcsResult<()> {
    for k in [
        "predefinedAcl",
        "predefinedDefaultObjectAcl",
        "destinationPredefinedAcl",
    ] {
        if ctx.query.get(k).is_some_and(|v| !v.is_empty()) {
            return Err(ubla_error(match target {
                Target::Bucket => BUCKET_ACL_WRITE,
                Target::NewObject => OBJECT_ACL_INSERT,
                Target::Object => OBJECT_ACL_WRITE,
            }));
        }
    }
    Ok(())
}

/// Any request to an ACL endpoint of an existing bucket: `object` for `/o/{o}/acl`.
pub async fn endpoint(ctx: &Ctx, bucket: &str, object: bool) -> GcsResult<axum::response::Response> {
    ctx.app.storage.get_bucket(bucket).await?;
    let read = ctx.method == axum::http::Method::GET;
    Err(ubla_error(match (object, read) {
        (false, true) => BUCKET_ACL_READ,
        (false, false) => BUCKET_ACL_WRITE,
        (true, true) => OBJECT_ACL_READ,
        (true, false) => OBJECT_ACL_WRITE,
    }))
}
