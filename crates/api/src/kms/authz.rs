//! The permission each Cloud KMS method needs, and on which resource chain (the
//! resource, then its ancestors up to the project, whose policies all apply).

use super::{Request, Target};
use axum::http::Method;
use sealstore_kms::names::{CryptoKeyName, ImportJobName, KeyRingName, ResourceName};

pub fn project_chain(project: &str) -> Vec<String> {
    vec![format!("projects/{project}")]
}

pub fn ring_chain(kr: &KeyRingName) -> Vec<String> {
    vec![kr.to_string(), format!("projects/{}", kr.project)]
}

pub fn key_chain(k: &CryptoKeyName) -> Vec<String> {
    let mut c = vec![k.to_string()];
    c.extend(ring_chain(&k.key_ring));
    c
}

pub fn job_chain(j: &ImportJobName) -> Vec<String> {
    let mut c = vec![j.to_string()];
    c.extend(ring_chain(&j.key_ring));
    c
}

/// The chain a resource's own IAM policy sits at the head of.
pub fn target_chain(t: &Target) -> Vec<String> {
    match t {
        Target::Locations(p) => project_chain(p),
        Target::Location(l) | Target::KeyRings(l) => project_chain(&l.project),
        Target::KeyRing(k) | Target::CryptoKeys(k) | Target::ImportJobs(k) => ring_chain(k),
        Target::CryptoKey(k) | Target::Versions(k) => key_chain(k),
        Target::Version(v) | Target::PublicKey(v) => key_chain(&v.key),
        Target::ImportJob(j) => job_chain(j),
        Target::Operation(o) | Target::RetiredResource(o) => project_chain(o.split('/').nth(1).unwrap_or("")),
        Target::RetiredResources(l) => project_chain(&l.project),
    }
}

/// What the request needs: `(permission, chain)` pairs, all of which must hold.
/// `None` means no permission is needed (testIamPermissions answers for the caller).
pub fn requirements(req: &Request) -> Vec<(&'static str, Vec<String>)> {
    let chain = target_chain(&req.target);
    let m = &req.method;
    let one = |p: &'static str| vec![(p, chain.clone())];
    let iam_kind = match &req.target {
        Target::KeyRing(_) => "keyRings",
        Target::ImportJob(_) => "importJobs",
        _ => "cryptoKeys",
    };
    match (&req.target, req.verb.as_deref()) {
        (_, Some("testIamPermissions")) => vec![],
        (_, Some("getIamPolicy")) => vec![(leak(format!("cloudkms.{iam_kind}.getIamPolicy")), chain)],
        (_, Some("setIamPolicy")) => vec![(leak(format!("cloudkms.{iam_kind}.setIamPolicy")), chain)],
        (Target::Locations(_), _) => one("cloudkms.locations.list"),
        (Target::Location(_), Some("generateRandomBytes")) => one("cloudkms.locations.generateRandomBytes"),
        (Target::Location(_), _) => one("cloudkms.locations.get"),
        (Target::KeyRings(_), _) if m == Method::POST => one("cloudkms.keyRings.create"),
        (Target::KeyRings(_), _) => one("cloudkms.keyRings.list"),
        (Target::KeyRing(_), _) => one("cloudkms.keyRings.get"),
        (Target::CryptoKeys(_), _) if m == Method::POST => one("cloudkms.cryptoKeys.create"),
        (Target::CryptoKeys(_), _) => one("cloudkms.cryptoKeys.list"),
        (Target::CryptoKey(_) | Target::Version(_), Some("encrypt")) => one("cloudkms.cryptoKeyVersions.useToEncrypt"),
        (Target::CryptoKey(_), Some("decrypt")) => one("cloudkms.cryptoKeyVersions.useToDecrypt"),
        (Target::CryptoKey(_), Some("updatePrimaryVersion")) => one("cloudkms.cryptoKeys.update"),
        (Target::CryptoKey(_), _) if m == Method::GET => one("cloudkms.cryptoKeys.get"),
        (Target::CryptoKey(_), None) if m == Method::DELETE => one("cloudkms.cryptoKeys.delete"),
        (Target::CryptoKey(_), _) => one("cloudkms.cryptoKeys.update"),
        (Target::Versions(_), Some("import")) => import_requirements(req, chain),
        (Target::Versions(_), _) if m == Method::POST => one("cloudkms.cryptoKeyVersions.create"),
        (Target::Versions(_), _) => one("cloudkms.cryptoKeyVersions.list"),
        (Target::Version(_), Some("destroy")) => one("cloudkms.cryptoKeyVersions.destroy"),
        (Target::Version(_), Some("restore")) => one("cloudkms.cryptoKeyVersions.restore"),
        (Target::Version(_), Some("asymmetricSign" | "macSign")) => one("cloudkms.cryptoKeyVersions.useToSign"),
        (Target::Version(_), Some("macVerify")) => one("cloudkms.cryptoKeyVersions.useToVerify"),
        (Target::Version(_), Some("asymmetricDecrypt")) => one("cloudkms.cryptoKeyVersions.useToDecrypt"),
        (Target::Version(_), _) if m == Method::GET => one("cloudkms.cryptoKeyVersions.get"),
        (Target::Version(_), None) if m == Method::DELETE => one("cloudkms.cryptoKeyVersions.delete"),
        (Target::Version(_), _) => one("cloudkms.cryptoKeyVersions.update"),
        (Target::PublicKey(_), _) => one("cloudkms.cryptoKeyVersions.viewPublicKey"),
        (Target::ImportJobs(_), _) if m == Method::POST => one("cloudkms.importJobs.create"),
        (Target::ImportJobs(_), _) => one("cloudkms.importJobs.list"),
        (Target::ImportJob(_), _) => one("cloudkms.importJobs.get"),
        (Target::Operation(_), _) => one("cloudkms.locations.get"),
        (Target::RetiredResources(_), _) => one("cloudkms.retiredResources.list"),
        (Target::RetiredResource(_), _) => one("cloudkms.retiredResources.get"),
    }
}

/// Import: `useToImport` on the job, plus `cryptoKeyVersions.create` on the key for a
/// new version or `cryptoKeyVersions.update` for a re-import (the seed's separation of
/// duties: importers need not be able to create jobs).
fn import_requirements(req: &Request, key_chain: Vec<String>) -> Vec<(&'static str, Vec<String>)> {
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let field = |camel: &str, snake: &str| {
        body.get(camel)
            .or_else(|| body.get(snake))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let mut out = vec![];
    if let Some(job) = field("importJob", "import_job").and_then(|j| ResourceName::parse_import_job(&j).ok()) {
        out.push(("cloudkms.importJobs.useToImport", job_chain(&job)));
    }
    let reimport = field("cryptoKeyVersion", "crypto_key_version").is_some();
    out.push((
        if reimport {
            "cloudkms.cryptoKeyVersions.update"
        } else {
            "cloudkms.cryptoKeyVersions.create"
        },
        key_chain,
    ));
    out
}

/// Permission names are few and static; interning the computed IAM ones keeps the
/// requirement type simple.
fn leak(s: String) -> &'static str {
    sealstore_iam::roles::KMS_PERMISSIONS
        .iter()
        .copied()
        .find(|p| *p == s)
        .unwrap_or("cloudkms.unknown")
}

/// Methods whose successful calls are audited (key use and state changes).
pub fn audited(req: &Request) -> bool {
    req.method != Method::GET && !matches!(req.verb.as_deref(), Some("testIamPermissions" | "getIamPolicy"))
}
