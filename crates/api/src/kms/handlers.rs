//! One function per Cloud KMS method: parse the typed input, call the core, render.

use super::json::{Obj, b64, parse_body, verify_crc};
use super::render::{self, crc};
use super::{Request, Target};
use crate::AppState;
use crate::error::{Code, RpcError};
use axum::http::Method;
use sealstore_iam::{Binding, Condition, Policy};
use sealstore_kms::listing::ListOptions;
use sealstore_kms::names::ResourceName;
use sealstore_kms::types::{Algorithm, Hash, ImportMethod, ProtectionLevel, Purpose, VersionState};
use sealstore_kms::{ImportRequest, KeyPatch, NewCryptoKey, SignInput};
use serde_json::{Value, json};

type Result<T> = std::result::Result<T, RpcError>;

/// `f`'s result, from the blocking-pool thread the KMS face does its request's work on
/// (where a SQLite store runs inline, without a second thread hop).
fn blocking_wait<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    sealstore_core::blocking::wait(f)
}

fn unsupported(req: &Request) -> RpcError {
    let verb = req.verb.as_deref().map(|v| format!(":{v}")).unwrap_or_default();
    RpcError::new(
        Code::NotFound,
        format!(
            "Method {} {:?}{verb} is not part of the Cloud KMS API.",
            req.method, req.target
        ),
    )
}

pub fn dispatch(app: &AppState, req: Request) -> Result<Value> {
    let verb = req.verb.as_deref();
    let m = &req.method;
    match (&req.target, verb) {
        (_, Some("getIamPolicy" | "setIamPolicy" | "testIamPermissions")) => iam(app, &req),
        (Target::Locations(p), None) if m == Method::GET => list_locations(p),
        (Target::Location(l), None) if m == Method::GET => Ok(location(&l.project, l.location.as_str())),
        (Target::Location(l), Some("generateRandomBytes")) if m == Method::POST => generate_random_bytes(app, &req, l),
        (Target::KeyRings(parent), None) if m == Method::GET => {
            let page = app.kms.list_key_rings(parent, &list_options(&req)?)?;
            Ok(page_json(
                "keyRings",
                page.items.iter().map(render::key_ring).collect(),
                page.next_page_token,
                page.total_size,
            ))
        }
        (Target::KeyRings(parent), None) if m == Method::POST => {
            let id = required_query(&req, "keyRingId")?;
            Ok(render::key_ring(&app.kms.create_key_ring(parent, id)?))
        }
        (Target::KeyRing(name), None) if m == Method::GET => Ok(render::key_ring(&app.kms.get_key_ring(name)?)),
        (Target::CryptoKeys(parent), None) if m == Method::GET => {
            let page = app.kms.list_crypto_keys(parent, &list_options(&req)?)?;
            let items = page.items.iter().map(|k| render::crypto_key(k, req.enc)).collect();
            Ok(page_json("cryptoKeys", items, page.next_page_token, page.total_size))
        }
        (Target::CryptoKeys(parent), None) if m == Method::POST => create_crypto_key(app, &req, parent),
        (Target::CryptoKey(name), None) if m == Method::GET => {
            Ok(render::crypto_key(&app.kms.get_crypto_key(name)?, req.enc))
        }
        (Target::CryptoKey(name), None) if m == Method::PATCH => update_crypto_key(app, &req, name),
        (Target::CryptoKey(name), None) if m == Method::DELETE => {
            let op = app.kms.delete_crypto_key(name)?;
            // The key's own policy goes with it: a later key can never reuse the name.
            blocking_wait(app.policies.remove(&name.to_string()))?;
            Ok(render::operation(&op))
        }
        (Target::CryptoKey(name), Some("updatePrimaryVersion")) if m == Method::POST => {
            let body = parse_body(&req.body)?;
            let id = Obj::new(&body)
                .str("cryptoKeyVersionId")?
                .ok_or_else(|| RpcError::invalid("cryptoKeyVersionId is required."))?;
            Ok(render::crypto_key(&app.kms.update_primary_version(name, id)?, req.enc))
        }
        (Target::CryptoKey(name), Some("encrypt")) if m == Method::POST => encrypt(app, &req, name, None),
        (Target::Version(v), Some("encrypt")) if m == Method::POST => encrypt(app, &req, &v.key, Some(v.version)),
        (Target::CryptoKey(name), Some("decrypt")) if m == Method::POST => decrypt(app, &req, name),
        (Target::Versions(parent), None) if m == Method::GET => {
            let page = app.kms.list_versions(parent, &list_options(&req)?)?;
            let items = page.items.iter().map(|v| render::version(v, req.enc)).collect();
            Ok(page_json(
                "cryptoKeyVersions",
                items,
                page.next_page_token,
                page.total_size,
            ))
        }
        (Target::Versions(parent), None) if m == Method::POST => {
            let body = parse_body(&req.body)?;
            if let Some(s) = Obj::new(&body).enumeration("state", VersionState::from_name, VersionState::from_number)?
                && s != VersionState::ENABLED
            {
                return Err(RpcError::invalid("A new CryptoKeyVersion can only be created ENABLED."));
            }
            Ok(render::version(&app.kms.create_version(parent)?, req.enc))
        }
        (Target::Versions(parent), Some("import")) if m == Method::POST => import(app, &req, parent),
        (Target::Version(name), None) if m == Method::GET => Ok(render::version(&app.kms.get_version(name)?, req.enc)),
        (Target::Version(name), None) if m == Method::PATCH => {
            let body = parse_body(&req.body)?;
            let mask = required_query(&req, "updateMask")?;
            if mask.split(',').any(|p| p.trim() != "state") {
                return Err(RpcError::invalid(format!(
                    "updateMask \"{mask}\": only \"state\" can be updated on a CryptoKeyVersion."
                )));
            }
            let state = Obj::new(&body)
                .enumeration("state", VersionState::from_name, VersionState::from_number)?
                .ok_or_else(|| RpcError::invalid("cryptoKeyVersion.state is required by the update mask."))?;
            Ok(render::version(&app.kms.set_version_state(name, state)?, req.enc))
        }
        (Target::Version(name), None) if m == Method::DELETE => Ok(render::operation(&app.kms.delete_version(name)?)),
        (Target::Version(name), Some("destroy")) if m == Method::POST => {
            Ok(render::version(&app.kms.destroy_version(name)?, req.enc))
        }
        (Target::Version(name), Some("restore")) if m == Method::POST => {
            Ok(render::version(&app.kms.restore_version(name)?, req.enc))
        }
        (Target::Version(name), Some("asymmetricSign")) if m == Method::POST => asymmetric_sign(app, &req, name),
        (Target::Version(name), Some("asymmetricDecrypt")) if m == Method::POST => asymmetric_decrypt(app, &req, name),
        (Target::Version(name), Some("macSign")) if m == Method::POST => mac_sign(app, &req, name),
        (Target::Version(name), Some("macVerify")) if m == Method::POST => mac_verify(app, &req, name),
        (Target::PublicKey(name), None) if m == Method::GET => public_key(app, &req, name),
        (Target::ImportJobs(parent), None) if m == Method::GET => {
            let page = app.kms.list_import_jobs(parent, &list_options(&req)?)?;
            let items = page.items.iter().map(|j| render::import_job(j, req.enc)).collect();
            Ok(page_json("importJobs", items, page.next_page_token, page.total_size))
        }
        (Target::ImportJobs(parent), None) if m == Method::POST => {
            let id = required_query(&req, "importJobId")?;
            let body = parse_body(&req.body)?;
            let o = Obj::new(&body);
            let method = o
                .enumeration("importMethod", ImportMethod::from_name, ImportMethod::from_number)?
                .ok_or_else(|| RpcError::invalid("importMethod is required."))?;
            let level = o
                .enumeration(
                    "protectionLevel",
                    ProtectionLevel::from_name,
                    ProtectionLevel::from_number,
                )?
                .ok_or_else(|| RpcError::invalid("protectionLevel is required."))?;
            Ok(render::import_job(
                &app.kms.create_import_job(parent, id, method, level)?,
                req.enc,
            ))
        }
        (Target::ImportJob(name), None) if m == Method::GET => {
            Ok(render::import_job(&app.kms.get_import_job(name)?, req.enc))
        }
        (Target::Operation(name), None) if m == Method::GET => Ok(render::operation(&app.kms.get_operation(name)?)),
        (Target::RetiredResources(parent), None) if m == Method::GET => {
            let page = app.kms.list_retired_resources(parent, &list_options(&req)?)?;
            Ok(page_json(
                "retiredResources",
                page.items.iter().map(render::retired_resource).collect(),
                page.next_page_token,
                page.total_size,
            ))
        }
        (Target::RetiredResource(name), None) if m == Method::GET => {
            Ok(render::retired_resource(&app.kms.get_retired_resource(name)?))
        }
        _ => Err(unsupported(&req)),
    }
}

fn required_query<'a>(req: &'a Request, key: &str) -> Result<&'a str> {
    req.query
        .get(key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| RpcError::invalid(format!("The query parameter {key} is required.")))
}

fn list_options(req: &Request) -> Result<ListOptions> {
    Ok(ListOptions {
        page_size: req.query.i64("pageSize").map_err(RpcError::invalid)?,
        page_token: req.query.get("pageToken").map(str::to_owned),
        filter: req.query.get("filter").map(str::to_owned),
        order_by: req.query.get("orderBy").map(str::to_owned),
    })
}

fn page_json(field: &str, items: Vec<Value>, next: Option<String>, total: usize) -> Value {
    let mut v = json!({ field: items, "totalSize": total });
    if let Some(t) = next {
        v["nextPageToken"] = json!(t);
    }
    v
}

/// `google.cloud.location.Location` with exactly its proto fields (strict parsing).
fn location(project: &str, id: &str) -> Value {
    let display = sealstore_core::locations::find(id).map_or(id, |l| l.display_name);
    json!({"name": format!("projects/{project}/locations/{id}"), "locationId": id, "displayName": display, "labels": {}})
}

fn list_locations(project: &str) -> Result<Value> {
    if !sealstore_kms::names::valid_project(project) {
        return Err(RpcError::invalid(format!("Invalid project \"{project}\".")));
    }
    let locations: Vec<Value> = sealstore_core::locations::CATALOG
        .iter()
        .map(|l| location(project, l.id))
        .collect();
    Ok(json!({ "locations": locations }))
}

fn create_crypto_key(app: &AppState, req: &Request, parent: &sealstore_kms::names::KeyRingName) -> Result<Value> {
    let id = required_query(req, "cryptoKeyId")?;
    let skip = req
        .query
        .bool("skipInitialVersionCreation")
        .map_err(RpcError::invalid)?;
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let purpose = o
        .enumeration("purpose", Purpose::from_name, Purpose::from_number)?
        .ok_or_else(|| RpcError::invalid("CryptoKey.purpose is required."))?;
    let template = o.obj("versionTemplate")?;
    let spec = NewCryptoKey {
        purpose,
        protection_level: template
            .enumeration(
                "protectionLevel",
                ProtectionLevel::from_name,
                ProtectionLevel::from_number,
            )?
            .unwrap_or(ProtectionLevel::SOFTWARE),
        algorithm: template.enumeration("algorithm", Algorithm::from_name, Algorithm::from_number)?,
        labels: o.string_map("labels")?,
        import_only: o.bool("importOnly")?,
        destroy_scheduled_duration: o.duration("destroyScheduledDuration")?,
        rotation_period: o.duration("rotationPeriod")?,
        next_rotation_time: o.timestamp("nextRotationTime")?,
        skip_initial_version_creation: skip,
    };
    if o.has("cryptoKeyBackend") || o.has("keyAccessJustificationsPolicy") {
        return Err(RpcError::new(
            Code::Unimplemented,
            "cryptoKeyBackend and keyAccessJustificationsPolicy are not supported by sealstore.",
        ));
    }
    let view = app.kms.create_crypto_key(parent, id, spec)?;
    if app.auto_grant_service_agent {
        let agent = sealstore_iam::roles::storage_service_agent(&parent.project);
        blocking_wait(app.policies.add_binding(
            &view.key.name.to_string(),
            "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            &agent,
        ))?;
    }
    Ok(render::crypto_key(&view, req.enc))
}

fn update_crypto_key(app: &AppState, req: &Request, name: &sealstore_kms::names::CryptoKeyName) -> Result<Value> {
    let mask = required_query(req, "updateMask")?;
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let mut patch = KeyPatch::default();
    for path in mask.split(',').map(str::trim) {
        match path {
            "labels" => patch.labels = Some(o.string_map("labels")?),
            "rotationPeriod" | "rotation_period" => patch.rotation_period = Some(o.duration("rotationPeriod")?),
            "nextRotationTime" | "next_rotation_time" => {
                patch.next_rotation_time = Some(o.timestamp("nextRotationTime")?)
            }
            "versionTemplate.algorithm" | "version_template.algorithm" => {
                let t = o.obj("versionTemplate")?;
                patch.algorithm = Some(
                    t.enumeration("algorithm", Algorithm::from_name, Algorithm::from_number)?
                        .ok_or_else(|| {
                            RpcError::invalid("versionTemplate.algorithm is required by the update mask.")
                        })?,
                );
            }
            other => {
                return Err(RpcError::invalid(format!(
                    "updateMask path \"{other}\" cannot be updated (supported: labels, rotationPeriod, nextRotationTime, versionTemplate.algorithm)."
                )));
            }
        }
    }
    Ok(render::crypto_key(&app.kms.update_crypto_key(name, patch)?, req.enc))
}

fn generate_random_bytes(
    app: &AppState,
    req: &Request,
    location: &sealstore_kms::names::LocationName,
) -> Result<Value> {
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let length = o.i64("lengthBytes")?.unwrap_or(0);
    let level = o
        .enumeration(
            "protectionLevel",
            ProtectionLevel::from_name,
            ProtectionLevel::from_number,
        )?
        .unwrap_or(ProtectionLevel::SOFTWARE);
    let data = app.kms.generate_random_bytes(location, length, level)?;
    Ok(json!({"data": b64(&data), "dataCrc32c": crc(&data)}))
}

fn encrypt(
    app: &AppState,
    req: &Request,
    key: &sealstore_kms::names::CryptoKeyName,
    version: Option<u32>,
) -> Result<Value> {
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let plaintext = o
        .bytes("plaintext")?
        .ok_or_else(|| RpcError::invalid("plaintext is required."))?;
    let aad = o.bytes("additionalAuthenticatedData")?.unwrap_or_default();
    let pt_ok = verify_crc("plaintext_crc32c", "plaintext", &plaintext, o.i64("plaintextCrc32c")?)?;
    let aad_ok = verify_crc(
        "additional_authenticated_data_crc32c",
        "additional_authenticated_data",
        &aad,
        o.i64("additionalAuthenticatedDataCrc32c")?,
    )?;
    let out = app.kms.encrypt(key, version, &plaintext, &aad)?;
    let mut v = json!({
        "name": out.version.to_string(),
        "ciphertext": b64(&out.ciphertext),
        "ciphertextCrc32c": crc(&out.ciphertext),
        "protectionLevel": req.enc.e(out.protection_level.name(), out.protection_level.number()),
    });
    if pt_ok {
        v["verifiedPlaintextCrc32c"] = json!(true);
    }
    if aad_ok {
        v["verifiedAdditionalAuthenticatedDataCrc32c"] = json!(true);
    }
    Ok(v)
}

fn decrypt(app: &AppState, req: &Request, key: &sealstore_kms::names::CryptoKeyName) -> Result<Value> {
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let ciphertext = o
        .bytes("ciphertext")?
        .ok_or_else(|| RpcError::invalid("ciphertext is required."))?;
    let aad = o.bytes("additionalAuthenticatedData")?.unwrap_or_default();
    verify_crc(
        "ciphertext_crc32c",
        "ciphertext",
        &ciphertext,
        o.i64("ciphertextCrc32c")?,
    )?;
    verify_crc(
        "additional_authenticated_data_crc32c",
        "additional_authenticated_data",
        &aad,
        o.i64("additionalAuthenticatedDataCrc32c")?,
    )?;
    let out = app.kms.decrypt(key, &ciphertext, &aad)?;
    let mut v = json!({
        "plaintext": b64(&out.plaintext),
        "plaintextCrc32c": crc(&out.plaintext),
        "protectionLevel": req.enc.e(out.protection_level.name(), out.protection_level.number()),
    });
    if out.used_primary {
        v["usedPrimary"] = json!(true);
    }
    Ok(v)
}

fn asymmetric_sign(app: &AppState, req: &Request, name: &sealstore_kms::names::VersionName) -> Result<Value> {
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let digest_obj = o.obj("digest")?;
    let data = o.bytes("data")?;
    let mut digest = None;
    for (field, hash) in [
        ("sha256", Hash::Sha256),
        ("sha384", Hash::Sha384),
        ("sha512", Hash::Sha256),
    ] {
        if let Some(d) = digest_obj.bytes(field)? {
            if field == "sha512" {
                return Err(RpcError::invalid(format!(
                    "{name}: SHA-512 digests are not supported by its algorithm."
                )));
            }
            if digest.is_some() {
                return Err(RpcError::invalid(
                    "digest must set exactly one of sha256, sha384 or sha512.",
                ));
            }
            digest = Some((hash, d));
        }
    }
    let (input, digest_ok, data_ok) = match (&digest, &data) {
        (Some(_), Some(_)) => return Err(RpcError::invalid("Only one of digest and data may be set.")),
        (None, None) => return Err(RpcError::invalid("One of digest or data is required.")),
        (Some((hash, d)), None) => {
            let ok = verify_crc("digest_crc32c", "digest", d, o.i64("digestCrc32c")?)?;
            (SignInput::Digest(*hash, d), ok, false)
        }
        (None, Some(d)) => {
            let ok = verify_crc("data_crc32c", "data", d, o.i64("dataCrc32c")?)?;
            (SignInput::Data(d), false, ok)
        }
    };
    let (sig, level) = app.kms.asymmetric_sign(name, input)?;
    let mut v = json!({
        "signature": b64(&sig),
        "signatureCrc32c": crc(&sig),
        "name": name.to_string(),
        "protectionLevel": req.enc.e(level.name(), level.number()),
    });
    if digest_ok {
        v["verifiedDigestCrc32c"] = json!(true);
    }
    if data_ok {
        v["verifiedDataCrc32c"] = json!(true);
    }
    Ok(v)
}

fn asymmetric_decrypt(app: &AppState, req: &Request, name: &sealstore_kms::names::VersionName) -> Result<Value> {
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let ct = o
        .bytes("ciphertext")?
        .ok_or_else(|| RpcError::invalid("ciphertext is required."))?;
    let ok = verify_crc("ciphertext_crc32c", "ciphertext", &ct, o.i64("ciphertextCrc32c")?)?;
    let (pt, level) = app.kms.asymmetric_decrypt(name, &ct)?;
    let mut v = json!({
        "plaintext": b64(&pt),
        "plaintextCrc32c": crc(&pt),
        "protectionLevel": req.enc.e(level.name(), level.number()),
    });
    if ok {
        v["verifiedCiphertextCrc32c"] = json!(true);
    }
    Ok(v)
}

fn mac_sign(app: &AppState, req: &Request, name: &sealstore_kms::names::VersionName) -> Result<Value> {
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let data = o.bytes("data")?.ok_or_else(|| RpcError::invalid("data is required."))?;
    let ok = verify_crc("data_crc32c", "data", &data, o.i64("dataCrc32c")?)?;
    let (mac, level) = app.kms.mac_sign(name, &data)?;
    let mut v = json!({
        "name": name.to_string(),
        "mac": b64(&mac),
        "macCrc32c": crc(&mac),
        "protectionLevel": req.enc.e(level.name(), level.number()),
    });
    if ok {
        v["verifiedDataCrc32c"] = json!(true);
    }
    Ok(v)
}

fn mac_verify(app: &AppState, req: &Request, name: &sealstore_kms::names::VersionName) -> Result<Value> {
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let data = o.bytes("data")?.ok_or_else(|| RpcError::invalid("data is required."))?;
    let mac = o.bytes("mac")?.ok_or_else(|| RpcError::invalid("mac is required."))?;
    let data_ok = verify_crc("data_crc32c", "data", &data, o.i64("dataCrc32c")?)?;
    let mac_ok = verify_crc("mac_crc32c", "mac", &mac, o.i64("macCrc32c")?)?;
    let (success, level) = app.kms.mac_verify(name, &data, &mac)?;
    let mut v = json!({"name": name.to_string(), "protectionLevel": req.enc.e(level.name(), level.number())});
    for (k, b) in [
        ("success", success),
        ("verifiedDataCrc32c", data_ok),
        ("verifiedMacCrc32c", mac_ok),
        ("verifiedSuccessIntegrity", success),
    ] {
        if b {
            v[k] = json!(true);
        }
    }
    Ok(v)
}

fn public_key(app: &AppState, req: &Request, name: &sealstore_kms::names::VersionName) -> Result<Value> {
    let format = match req.query.get("publicKeyFormat") {
        None | Some("PEM" | "1" | "PUBLIC_KEY_FORMAT_UNSPECIFIED" | "0") => "PEM",
        Some("DER" | "2") => "DER",
        Some(other) => {
            return Err(RpcError::invalid(format!(
                "publicKeyFormat {other} is not supported (PEM or DER)."
            )));
        }
    };
    let out = app.kms.get_public_key(name)?;
    let mut v = json!({
        "name": name.to_string(),
        "algorithm": req.enc.e(out.algorithm.name(), out.algorithm.number()),
        "protectionLevel": req.enc.e(out.protection_level.name(), out.protection_level.number()),
    });
    if format == "PEM" {
        v["pem"] = json!(out.pem);
        v["pemCrc32c"] = crc(out.pem.as_bytes());
        v["publicKey"] = json!({"data": b64(out.pem.as_bytes()), "crc32cChecksum": crc(out.pem.as_bytes())});
    } else {
        v["publicKey"] = json!({"data": b64(&out.der), "crc32cChecksum": crc(&out.der)});
        v["publicKeyFormat"] = req.enc.e("DER", 2);
    }
    Ok(v)
}

fn import(app: &AppState, req: &Request, parent: &sealstore_kms::names::CryptoKeyName) -> Result<Value> {
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    let algorithm = o
        .enumeration("algorithm", Algorithm::from_name, Algorithm::from_number)?
        .ok_or_else(|| {
            RpcError::invalid("An argument to the import operation was malformed: algorithm is required.")
        })?;
    let job = o.str("importJob")?.ok_or_else(|| {
        RpcError::invalid("An argument to the import operation was malformed: importJob is required.")
    })?;
    let import_job = ResourceName::parse_import_job(job)?;
    let wrapped_key = match (o.bytes("wrappedKey")?, o.bytes("rsaAesWrappedKey")?) {
        (Some(w), None) | (None, Some(w)) => w,
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid(
                "An argument to the import operation was malformed: set wrappedKey or rsaAesWrappedKey, not both.",
            ));
        }
        (None, None) => {
            return Err(RpcError::invalid(
                "An argument to the import operation was malformed: wrappedKey (or rsaAesWrappedKey) is required.",
            ));
        }
    };
    if o.bool("trustedWrappingEnabled")? {
        return Err(RpcError::new(
            Code::Unimplemented,
            "trustedWrappingEnabled is not supported by sealstore.",
        ));
    }
    let version = o
        .str("cryptoKeyVersion")?
        .map(ResourceName::parse_version)
        .transpose()?;
    let v = app.kms.import_version(ImportRequest {
        parent: parent.clone(),
        version,
        algorithm,
        import_job,
        wrapped_key,
    })?;
    Ok(render::version(&v, req.enc))
}

/// The IAM mixin on key rings, keys and import jobs.
fn iam(app: &AppState, req: &Request) -> Result<Value> {
    let resource = match &req.target {
        Target::KeyRing(n) => app.kms.get_key_ring(n).map(|_| n.to_string()),
        Target::CryptoKey(n) => app.kms.get_crypto_key(n).map(|_| n.to_string()),
        Target::ImportJob(n) => app.kms.get_import_job(n).map(|_| n.to_string()),
        _ => {
            return Err(RpcError::invalid(
                "IAM policies attach to key rings, crypto keys and import jobs only.",
            ));
        }
    };
    let body = parse_body(&req.body)?;
    let o = Obj::new(&body);
    match req.verb.as_deref() {
        Some("getIamPolicy") if req.method == Method::GET || req.method == Method::POST => {
            Ok(render::policy(&blocking_wait(app.policies.get(&resource?))?))
        }
        Some("setIamPolicy") if req.method == Method::POST => {
            let resource = resource?;
            let policy = parse_policy(&o.obj("policy")?)?;
            Ok(render::policy(&blocking_wait(app.policies.set(&resource, policy))?))
        }
        Some("testIamPermissions") if req.method == Method::POST => {
            let perms: Vec<String> = match o.get("permissions") {
                None => vec![],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|p| {
                        p.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| RpcError::invalid("permissions must be strings."))
                    })
                    .collect::<Result<_>>()?,
                Some(_) => return Err(RpcError::invalid("permissions must be a list of strings.")),
            };
            // A missing resource yields an empty set, not NOT_FOUND.
            let chain = super::authz::target_chain(&req.target);
            let held: Vec<String> = if resource.is_ok() {
                perms
                    .into_iter()
                    .filter(|p| sealstore_iam::roles::KMS_PERMISSIONS.contains(&p.as_str()))
                    .filter(|p| app.allowed_blocking(&req.principal, p, &chain))
                    .collect()
            } else {
                vec![]
            };
            let mut v = json!({});
            if !held.is_empty() {
                v["permissions"] = json!(held);
            }
            Ok(v)
        }
        _ => Err(unsupported(req)),
    }
}

pub(crate) fn parse_policy(o: &Obj<'_>) -> Result<Policy> {
    let mut bindings = vec![];
    match o.get("bindings") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                let b = Obj::new(item);
                let members = match b.get("members") {
                    Some(Value::Array(m)) => m
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| RpcError::invalid("members must be strings."))
                        })
                        .collect::<Result<Vec<_>>>()?,
                    _ => vec![],
                };
                let c = b.obj("condition")?;
                let condition = if b.has("condition") {
                    Some(Condition {
                        expression: c.str("expression")?.unwrap_or_default().to_owned(),
                        title: c.str("title")?.unwrap_or_default().to_owned(),
                        description: c.str("description")?.unwrap_or_default().to_owned(),
                        location: c.str("location")?.unwrap_or_default().to_owned(),
                    })
                } else {
                    None
                };
                bindings.push(Binding {
                    role: b.str("role")?.unwrap_or_default().to_owned(),
                    members,
                    condition,
                });
            }
        }
        Some(_) => return Err(RpcError::invalid("policy.bindings must be a list.")),
    }
    Ok(Policy {
        version: o
            .i64("version")?
            .unwrap_or(1)
            .try_into()
            .map_err(|_| RpcError::invalid("Invalid policy version."))?,
        bindings,
        etag: o.bytes("etag")?.unwrap_or_default(),
    })
}
