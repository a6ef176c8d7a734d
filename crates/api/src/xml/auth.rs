//! Who signed an XML API request: SigV4 (AWS4 or GOOG4) with an HMAC key, in the
//! `Authorization` header or a presigned query string. The key's service account is the
//! principal, checked by IAM like any other.

use super::error::S3Error;
use super::sigv4::Signed;
use crate::AppState;
use aws_lc_rs::hmac;
use std::sync::Arc;

/// A verified signature, kept for checking the body (payload hash, chunk signatures).
#[derive(Clone)]
pub struct Verified {
    pub signed: Arc<Signed>,
    pub key: hmac::Key,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("access_id", &self.signed.access_id)
            .finish_non_exhaustive()
    }
}

/// The project of the HMAC key that signed the request.
#[derive(Clone, Debug)]
pub struct KeyProject(pub String);

/// The principal of a signed request, or `None` when it carries no signature.
/// `path` is the path as the client sent it (before any virtual-host rewrite). Takes
/// the request's parts, not the request, so the future stays `Send`.
pub async fn authenticate(
    app: &AppState,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    path: String,
) -> Result<Option<(String, Verified, KeyProject)>, S3Error> {
    let Some(signed) = Signed::parse(headers, uri.query())? else {
        return Ok(None);
    };
    signed.check_time(app.clock.now()).map_err(|mut e| {
        e.extra.push((
            "ServerTime",
            app.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
        e
    })?;
    let internal = || {
        S3Error::new(
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    };
    // A key verified within the last second needs no database read (and no thread hop).
    let found = match app.hmac_keys.fresh(&signed.access_id) {
        Some(s) => Some(s),
        None => app
            .hmac_keys
            .cached_signing_secret(&signed.access_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "HMAC key lookup failed");
                internal()
            })?,
    };
    let Some(secret) = found else {
        return Err(S3Error::new(
            403,
            "InvalidAccessKeyId",
            "The access key Id you provided does not exist in our records, or it is not active.",
        ));
    };
    let key = signed.signing_key(&secret.secret);
    signed.verify(&key, method, &path, headers, uri.query())?;
    Ok(Some((
        secret.meta.principal(),
        Verified {
            signed: Arc::new(signed),
            key,
        },
        KeyProject(secret.meta.project.clone()),
    )))
}
