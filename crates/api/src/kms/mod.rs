//! The Cloud KMS REST v1 face. Paths are parsed by hand into a typed target plus an
//! optional `:verb`, because resource names and custom verbs share path segments.

pub(crate) mod authz;
pub(crate) mod handlers;
pub mod json;
pub mod render;

use crate::AppState;
use crate::error::RpcError;
use crate::query::{Query, percent_decode};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use render::Enc;
use sealstore_kms::names::{CryptoKeyName, ImportJobName, KeyRingName, LocationName, VersionName};

/// What a `/v1/...` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Locations(String),
    Location(LocationName),
    KeyRings(LocationName),
    KeyRing(KeyRingName),
    CryptoKeys(KeyRingName),
    CryptoKey(CryptoKeyName),
    Versions(CryptoKeyName),
    Version(VersionName),
    PublicKey(VersionName),
    ImportJobs(KeyRingName),
    ImportJob(ImportJobName),
    Operation(String),
    RetiredResources(LocationName),
    RetiredResource(String),
}

impl Target {
    /// The resource name the request is about.
    pub fn resource(&self) -> String {
        match self {
            Target::Locations(p) => format!("projects/{p}"),
            Target::Location(l) | Target::KeyRings(l) => l.to_string(),
            Target::KeyRing(k) | Target::CryptoKeys(k) | Target::ImportJobs(k) => k.to_string(),
            Target::CryptoKey(k) | Target::Versions(k) => k.to_string(),
            Target::Version(v) | Target::PublicKey(v) => v.to_string(),
            Target::ImportJob(j) => j.to_string(),
            Target::Operation(o) | Target::RetiredResource(o) => o.clone(),
            Target::RetiredResources(l) => l.to_string(),
        }
    }
}

/// Splits `/v1/<segments>[:verb]` and parses the segments into a `Target`.
pub fn parse_path(path: &str) -> Result<(Target, Option<String>), RpcError> {
    let rest = path
        .strip_prefix("/v1/")
        .ok_or_else(|| RpcError::invalid(format!("Unknown path {path}.")))?;
    let mut segs: Vec<String> = rest
        .split('/')
        .map(|s| percent_decode(s, false).ok_or_else(|| RpcError::invalid(format!("Malformed path {path}."))))
        .collect::<Result<_, _>>()?;
    let mut verb = None;
    if let Some(last) = segs.last_mut()
        && let Some((head, v)) = last.split_once(':')
    {
        verb = Some(v.to_owned());
        *last = head.to_owned();
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let not_found = || RpcError::new(crate::error::Code::NotFound, format!("Unknown Cloud KMS path {path}."));
    let loc = |p: &str, l: &str| LocationName::new(p, l).map_err(RpcError::from);
    let target = match s.as_slice() {
        ["projects", p, "locations"] => Target::Locations((*p).to_owned()),
        ["projects", p, "locations", l] => Target::Location(loc(p, l)?),
        ["projects", p, "locations", l, "keyRings"] => Target::KeyRings(loc(p, l)?),
        ["projects", p, "locations", l, "operations", op] => {
            Target::Operation(format!("{}/operations/{op}", loc(p, l)?))
        }
        ["projects", p, "locations", l, "retiredResources"] => Target::RetiredResources(loc(p, l)?),
        ["projects", p, "locations", l, "retiredResources", r] => {
            Target::RetiredResource(format!("{}/retiredResources/{r}", loc(p, l)?))
        }
        ["projects", p, "locations", l, "keyRings", kr, tail @ ..] => {
            let kr = loc(p, l)?.key_ring(kr)?;
            match tail {
                [] => Target::KeyRing(kr),
                ["cryptoKeys"] => Target::CryptoKeys(kr),
                ["importJobs"] => Target::ImportJobs(kr),
                ["importJobs", j] => Target::ImportJob(kr.import_job(j)?),
                ["cryptoKeys", k, rest @ ..] => {
                    let key = kr.crypto_key(k)?;
                    match rest {
                        [] => Target::CryptoKey(key),
                        ["cryptoKeyVersions"] => Target::Versions(key),
                        ["cryptoKeyVersions", v] => Target::Version(VersionName::parse_id(&key, v)?),
                        ["cryptoKeyVersions", v, "publicKey"] => Target::PublicKey(VersionName::parse_id(&key, v)?),
                        _ => return Err(not_found()),
                    }
                }
                _ => return Err(not_found()),
            }
        }
        _ => return Err(not_found()),
    };
    Ok((target, verb))
}

/// A parsed request, handed to the handlers on a blocking thread (the core uses
/// SQLite synchronously). Clone: a request that found nothing runs once more after the
/// core caught up with the store.
#[derive(Clone)]
pub struct Request {
    pub principal: String,
    pub method: Method,
    pub target: Target,
    pub verb: Option<String>,
    pub query: Query,
    pub body: Bytes,
    pub enc: Enc,
}

pub async fn handle(
    State(app): State<AppState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    deferred: Option<axum::Extension<crate::auth::DeferredToken>>,
    method: Method,
    uri: Uri,
    body: axum::body::Body,
) -> Response {
    // Authentication left either a principal or a bearer token to resolve here.
    let (principal, token) = match (principal, deferred) {
        (Some(axum::Extension(p)), _) => (p.0, None),
        (None, Some(axum::Extension(t))) => (String::new(), Some(t.0)),
        (None, None) => return RpcError::new(crate::error::Code::Internal, "Internal error.").into_response(),
    };
    let body = match crate::body::read_limited(body, app.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return RpcError::from(e).into_response(),
    };
    let parsed = (|| {
        let query = Query::parse(uri.query()).map_err(RpcError::invalid)?;
        let (target, verb) = parse_path(uri.path())?;
        let enc = Enc {
            ints: query.get("$alt").is_some_and(|a| a.contains("enum-encoding=int")),
        };
        Ok::<_, RpcError>(Request {
            principal,
            method,
            target,
            verb,
            query,
            body,
            enc,
        })
    })();
    match sealstore_core::request_id::spawn_blocking(move || {
        // The token first: an unauthenticated caller learns nothing about paths.
        let req = match token {
            Some(token) => {
                let principal = crate::auth::resolve_deferred(&app, &token)?;
                let mut req = parsed?;
                req.principal = principal;
                req
            }
            None => parsed?,
        };
        let resource = req.target.resource();
        let method_name = format!(
            "{} {}{}",
            req.method,
            resource,
            req.verb.as_deref().map(|v| format!(":{v}")).unwrap_or_default()
        );
        for (permission, chain) in authz::requirements(&req) {
            if !app.allowed_blocking(&req.principal, permission, &chain) {
                app.audit(&req.principal, &method_name, &chain[0], permission, "DENIED");
                return Err(RpcError::new(
                    crate::error::Code::PermissionDenied,
                    format!(
                        "Permission '{permission}' denied on resource '{}' (or it may not exist).",
                        chain[0]
                    ),
                ));
            }
        }
        let audited = authz::audited(&req);
        let principal = req.principal.clone();
        let permission = authz::requirements(&req).first().map(|(p, _)| *p).unwrap_or("");
        let op = req.verb.as_deref().and_then(sealstore_core::metrics::kms_operation);
        let mut result = handlers::dispatch(&app, req.clone());
        if matches!(&result, Err(e) if e.code == crate::error::Code::NotFound) && app.kms.catch_up() {
            result = handlers::dispatch(&app, req);
        }
        let result = result.map_err(|e| e.naming(&resource));
        if let Some((operation, purpose)) = op {
            let outcome = match &result {
                Ok(_) => "OK",
                Err(e) => e.code.name(),
            };
            sealstore_core::metrics::kms_op("api", operation, purpose, outcome);
        }
        if audited {
            let outcome = match &result {
                Ok(_) => "OK".to_owned(),
                Err(e) => e.code.name().to_owned(),
            };
            app.audit(&principal, &method_name, &resource, permission, &outcome);
        }
        result
    })
    .await
    {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(join) => {
            tracing::error!(error = %join, "KMS handler panicked");
            RpcError::new(crate::error::Code::Internal, "Internal error.").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_verbs_and_collections() {
        let (t, v) = parse_path("/v1/projects/p/locations/us-east1/keyRings/kr/cryptoKeys/k:encrypt").unwrap();
        assert!(matches!(t, Target::CryptoKey(_)));
        assert_eq!(v.as_deref(), Some("encrypt"));
        let (t, v) =
            parse_path("/v1/projects/p/locations/us-east1/keyRings/kr/cryptoKeys/k/cryptoKeyVersions:import").unwrap();
        assert!(matches!(t, Target::Versions(_)));
        assert_eq!(v.as_deref(), Some("import"));
        let (t, _) =
            parse_path("/v1/projects/p/locations/us-east1/keyRings/kr/cryptoKeys/k/cryptoKeyVersions/3/publicKey")
                .unwrap();
        assert!(matches!(t, Target::PublicKey(ref n) if n.version == 3));
        assert!(parse_path("/v1/projects/p/locations/us-east1/keyRings/bad!/cryptoKeys").is_err());
        assert!(parse_path("/v1/projects/p/locations/us-east1/keyRings/kr/nope").is_err());
    }
}
