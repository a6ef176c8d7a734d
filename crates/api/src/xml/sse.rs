//! Server-side encryption headers of the XML API, onto the engine's key choices:
//! SSE-S3 (`AES256`) = Google-managed, SSE-KMS (`aws:kms` + key id, or
//! `x-goog-encryption-kms-key-name`) = CMEK, SSE-C (or GCS's `x-goog-encryption-*`) =
//! CSEK. The same rules as the JSON face apply: versioned key names are refused.

use super::XCtx;
use super::error::{S3Error, S3Result};
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::Digest;
use sealstore_storage::CustomerKey;
use sealstore_storage::model::{KeyKind, ObjectRecord};
use std::sync::Arc;

/// The key a write asks for.
#[derive(Default)]
pub struct WriteKey {
    pub kms_key_name: Option<String>,
    pub csek: Option<Arc<CustomerKey>>,
    /// `AES256`: Google-managed even where the bucket has a default KMS key.
    pub google_managed: bool,
    /// The SSE-C key's MD5 (base64), echoed in the response.
    pub csek_md5: Option<String>,
}

fn kms_name(name: &str) -> S3Result<String> {
    let name = name.trim();
    if name.contains("/cryptoKeyVersions/") {
        return Err(S3Error::new(
            400,
            "KMS.InvalidKeyUsageException",
            format!("Bad Cloud KMS crypto key: {name} (name a CryptoKey, not a version)."),
        ));
    }
    if !name.starts_with("projects/") {
        return Err(S3Error::invalid(format!(
            "The KMS key id must be a Cloud KMS CryptoKey resource name (projects/…/locations/…/keyRings/…/cryptoKeys/…), not \"{name}\"."
        )));
    }
    Ok(name.to_owned())
}

/// A customer key from SSE-C headers (`prefix` is `x-amz-server-side-encryption` or
/// `x-amz-copy-source-server-side-encryption`) or GCS's (`x-goog-encryption` /
/// `x-goog-copy-source-encryption`). Returns the key and its MD5 (base64).
pub fn customer_key(ctx: &XCtx, amz_prefix: &str, goog_prefix: &str) -> S3Result<Option<(Arc<CustomerKey>, String)>> {
    let h = |s: String| ctx.header(&s);
    let alg = h(format!("{amz_prefix}-customer-algorithm"));
    let key = h(format!("{amz_prefix}-customer-key"));
    let md5 = h(format!("{amz_prefix}-customer-key-md5"));
    if alg.is_some() || key.is_some() || md5.is_some() {
        if alg.map(str::trim) != Some("AES256") {
            return Err(S3Error::invalid(
                "The server-side encryption customer algorithm must be AES256.",
            ));
        }
        let raw = key
            .and_then(|k| STANDARD.decode(k.trim()).ok())
            .map(zeroize::Zeroizing::new)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                S3Error::invalid(
                    "The secret key was invalid for the specified algorithm: it must be 256 bits, base64-encoded.",
                )
            })?;
        let digest = md5::Md5::digest(&raw[..]);
        let claimed = md5.and_then(|m| STANDARD.decode(m.trim()).ok());
        if claimed.is_none_or(|c| aws_lc_rs::constant_time::verify_slices_are_equal(&c, &digest).is_err()) {
            return Err(S3Error::invalid(
                "The calculated MD5 hash of the key did not match the hash that was provided.",
            ));
        }
        let sha = STANDARD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &raw[..]));
        let key_b64 = zeroize::Zeroizing::new(STANDARD.encode(&raw[..]));
        let ck = CustomerKey::from_parts(Some("AES256"), Some(&key_b64), Some(&sha))?
            .ok_or_else(|| S3Error::invalid("Missing customer key."))?;
        return Ok(Some((Arc::new(ck), STANDARD.encode(digest))));
    }
    let galg = h(format!("{goog_prefix}-algorithm"));
    let gkey = h(format!("{goog_prefix}-key"));
    let gsha = h(format!("{goog_prefix}-key-sha256"));
    match CustomerKey::from_parts(galg, gkey, gsha)? {
        None => Ok(None),
        Some(ck) => {
            let md5 = gkey
                .and_then(|k| STANDARD.decode(k.trim()).ok())
                .map(|raw| STANDARD.encode(md5::Md5::digest(&raw)))
                .unwrap_or_default();
            Ok(Some((Arc::new(ck), md5)))
        }
    }
}

/// The key a write (PutObject, CopyObject's destination, CreateMultipartUpload) names.
pub fn write_key(ctx: &XCtx) -> S3Result<WriteKey> {
    let csek = customer_key(ctx, "x-amz-server-side-encryption", "x-goog-encryption")?;
    let sse = ctx.header("x-amz-server-side-encryption").map(str::trim);
    let amz_kms = ctx.header("x-amz-server-side-encryption-aws-kms-key-id");
    let goog_kms = ctx.header("x-goog-encryption-kms-key-name");
    if ctx.header("x-amz-server-side-encryption-context").is_some() {
        return Err(S3Error::not_implemented("An SSE-KMS encryption context"));
    }
    if ctx
        .header("x-amz-server-side-encryption-bucket-key-enabled")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err(S3Error::not_implemented("S3 Bucket Keys"));
    }
    let mut out = WriteKey::default();
    match (sse, amz_kms.or(goog_kms)) {
        (None, None) => {}
        (Some("AES256"), None) => out.google_managed = true,
        (Some("aws:kms"), Some(k)) | (None, Some(k)) => out.kms_key_name = Some(kms_name(k)?),
        // `aws:kms` without a key id: the bucket's default key, as S3 uses its default.
        (Some("aws:kms"), None) => {}
        (Some("aws:kms:dsse"), _) => return Err(S3Error::not_implemented("Dual-layer SSE-KMS (aws:kms:dsse)")),
        (Some("AES256"), Some(_)) => {
            return Err(S3Error::invalid(
                "A KMS key id is only valid with x-amz-server-side-encryption: aws:kms.",
            ));
        }
        (Some(other), _) => {
            return Err(S3Error::invalid(format!(
                "The encryption method specified is not supported: {other} (AES256 or aws:kms)."
            )));
        }
    }
    if let Some((ck, md5)) = csek {
        if sse.is_some() || out.kms_key_name.is_some() {
            return Err(S3Error::invalid(
                "Server-side encryption with a customer key cannot be combined with SSE-S3 or SSE-KMS.",
            ));
        }
        out.csek = Some(ck);
        out.csek_md5 = Some(md5);
    }
    Ok(out)
}

/// Encryption response headers for an object: what protects it, in both vocabularies.
pub fn response_headers(h: &mut HeaderMap, rec: &ObjectRecord, csek_md5: Option<&str>) {
    let mut set = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    match rec.envelope.kind {
        KeyKind::GoogleManaged => set("x-amz-server-side-encryption", "AES256"),
        KeyKind::Cmek => {
            let version = &rec.envelope.key_version;
            let key = version.split("/cryptoKeyVersions/").next().unwrap_or(version);
            set("x-amz-server-side-encryption", "aws:kms");
            set("x-amz-server-side-encryption-aws-kms-key-id", key);
            set("x-goog-encryption-kms-key-name", version);
        }
        KeyKind::Csek => {
            set("x-amz-server-side-encryption-customer-algorithm", "AES256");
            if let Some(m) = csek_md5 {
                set("x-amz-server-side-encryption-customer-key-md5", m);
            }
            set("x-goog-encryption-algorithm", "AES256");
            if let Some(s) = &rec.envelope.csek_sha256 {
                set("x-goog-encryption-key-sha256", s);
            }
        }
    }
}
