//! `--auth token`: tokens from the CLI, 401/403, policies, the audit log.

use crate::harness::Server;
use serde_json::json;
use std::process::Command;

fn token(s: &Server, principal: &str, role: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealstore"));
    cmd.args(["iam", "tokens", "create", "--principal", principal, "--data-dir"])
        .arg(&s.dir);
    if let Some(r) = role {
        cmd.args(["--project", "p", "--role", r]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn call(s: &Server, method: &str, path: &str, tok: Option<&str>, body: serde_json::Value) -> (u16, serde_json::Value) {
    let auth = tok.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let r = crate::harness::raw(&s.url, method, path, &headers, body.to_string().as_bytes());
    (r.status, r.json())
}

#[test]
fn token_mode_authenticates_authorizes_and_audits() {
    let s = Server::start(&["--auth", "token"]);
    let owner = token(&s, "user:owner@example.com", Some("roles/owner"));
    let nobody = token(&s, "user:nobody@example.com", None);
    let rings = "/v1/projects/p/locations/us-east1/keyRings";
    assert_eq!(call(&s, "GET", rings, None, json!({})).0, 401);
    assert_eq!(call(&s, "GET", rings, Some("sst_garbage"), json!({})).0, 401);
    assert_eq!(
        call(&s, "POST", &format!("{rings}?keyRingId=r"), Some(&owner), json!({})).0,
        200
    );
    let (status, body) = call(
        &s,
        "POST",
        &format!("{rings}/r/cryptoKeys?cryptoKeyId=k"),
        Some(&nobody),
        json!({"purpose": 1}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cloudkms.cryptoKeys.create")
    );
    // Storage: 403 `forbidden` naming the permission; the owner may.
    let (status, body) = call(
        &s,
        "POST",
        "/storage/v1/b?project=p",
        Some(&nobody),
        json!({"name": "bkt1"}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["errors"][0]["reason"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("storage.buckets.create")
    );
    assert_eq!(
        call(
            &s,
            "POST",
            "/storage/v1/b?project=p",
            Some(&owner),
            json!({"name": "bkt1"})
        )
        .0,
        200
    );
    // A key-ring grant lets the other principal create keys there.
    let agent = "user:nobody@example.com";
    let (st, _) = call(
        &s,
        "POST",
        &format!("{rings}/r:setIamPolicy"),
        Some(&owner),
        json!({"policy": {"bindings": [{"role": "roles/cloudkms.admin", "members": [agent]}]}}),
    );
    assert_eq!(st, 200);
    assert_eq!(
        call(
            &s,
            "POST",
            &format!("{rings}/r/cryptoKeys?cryptoKeyId=k"),
            Some(&nobody),
            json!({"purpose": 1})
        )
        .0,
        200
    );
    // ...but admins cannot use keys.
    let (st, body) = call(
        &s,
        "POST",
        &format!("{rings}/r/cryptoKeys/k:encrypt"),
        Some(&nobody),
        json!({"plaintext": "AA=="}),
    );
    assert_eq!(st, 403, "{body}");
    // Unknown roles and malformed members are refused.
    for bad in [
        json!({"role": "roles/wizard", "members": [agent]}),
        json!({"role": "roles/viewer", "members": ["alice"]}),
    ] {
        let (st, _) = call(
            &s,
            "POST",
            &format!("{rings}/r:setIamPolicy"),
            Some(&owner),
            json!({"policy": {"bindings": [bad]}}),
        );
        assert_eq!(st, 400);
    }
    let list = Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(["iam", "tokens", "list", "--data-dir"])
        .arg(&s.dir)
        .output()
        .unwrap();
    let listing = String::from_utf8(list.stdout).unwrap();
    let id = listing
        .lines()
        .find(|l| l.contains("nobody"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let st = Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(["iam", "tokens", "revoke", "--id", &id, "--data-dir"])
        .arg(&s.dir)
        .status()
        .unwrap();
    assert!(st.success());
    // Revoked by another process (the CLI): refused within the cache bound (1 s).
    let revoked = std::time::Instant::now();
    loop {
        let status = call(&s, "GET", rings, Some(&nobody), json!({})).0;
        if status == 401 {
            break;
        }
        assert_eq!(status, 403, "still known, still not allowed");
        assert!(
            revoked.elapsed() < std::time::Duration::from_millis(1500),
            "revocation not seen within 1 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The audit log has the denials, and no token.
    let audit = std::fs::read_to_string(s.dir.join("audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("DENIED") && l.contains("cloudkms.cryptoKeys.create") && l.contains("nobody")),
        "{audit}"
    );
    for t in [&owner, &nobody] {
        assert!(!audit.contains(t.as_str()));
        assert!(!s.log_text().contains(t.as_str()));
    }
}

/// Review findings: a deleted bucket's policy must not carry over to a new bucket of
/// the same name, and overwriting needs storage.objects.delete (objectCreator may only
/// create).
#[test]
fn bucket_policies_die_with_buckets_and_overwrites_need_delete() {
    let s = Server::start(&["--auth", "token"]);
    let owner = token(&s, "user:owner@example.com", Some("roles/owner"));
    let creator = token(&s, "user:creator@example.com", Some("roles/storage.objectCreator"));
    assert_eq!(
        call(
            &s,
            "POST",
            "/storage/v1/b?project=p",
            Some(&owner),
            json!({"name": "recycled"})
        )
        .0,
        200
    );
    let policy = json!({"bindings": [{"role": "roles/storage.admin", "members": ["user:mallory@example.com"]}]});
    assert_eq!(
        call(&s, "PUT", "/storage/v1/b/recycled/iam", Some(&owner), policy).0,
        200
    );
    assert_eq!(
        call(&s, "DELETE", "/storage/v1/b/recycled", Some(&owner), json!({})).0,
        204
    );
    assert_eq!(
        call(
            &s,
            "POST",
            "/storage/v1/b?project=p",
            Some(&owner),
            json!({"name": "recycled"})
        )
        .0,
        200
    );
    let (st, p) = call(&s, "GET", "/storage/v1/b/recycled/iam", Some(&owner), json!({}));
    assert_eq!(st, 200);
    assert_eq!(p["bindings"], json!([]), "{p}");

    let upload = |tok: &str, data: &[u8]| {
        let auth = format!("Bearer {tok}");
        crate::harness::raw(
            &s.url,
            "POST",
            "/upload/storage/v1/b/recycled/o?uploadType=media&name=doc",
            &[("authorization", auth.as_str()), ("content-type", "text/plain")],
            data,
        )
    };
    assert_eq!(upload(&creator, b"first").status, 200);
    let r = upload(&creator, b"second");
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("storage.objects.delete"));
    assert_eq!(upload(&owner, b"second").status, 200);
}
