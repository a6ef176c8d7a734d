//! Process-level behaviour: address reporting, health, shutdown, dev-mode safety.

use crate::harness::{Server, temp_dir};
use std::os::unix::fs::PermissionsExt;

#[test]
fn port_zero_health_and_graceful_shutdown() {
    let mut s = Server::start(&[]);
    assert!(!s.url.ends_with(":0"), "{}", s.url);
    assert_eq!(crate::harness::request(&s.url, "GET", "/healthz", None).0, 200);
    assert_eq!(s.get("/readyz").0, 200);
    let (status, body) = s.get("/healthz/no/such/thing");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    // Any other first segment is a bucket of the XML API, which answers in XML.
    let r = crate::harness::raw(&s.url, "GET", "/some-bucket/some-object", &[], b"");
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("<Code>NoSuchBucket</Code>"));
    // Without --fake-clock the clock cannot be moved.
    assert_eq!(
        s.post("/sealstore/v1/clock:advance", serde_json::json!({"seconds": 1}))
            .0,
        404
    );
    let root_key = s.dir.join("root.key");
    assert_eq!(
        std::fs::metadata(&root_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(s.stop().success());
    assert!(s.log_text().contains("shut down"));
}

#[test]
fn refuses_a_world_readable_root_key_and_dev_mode_off_loopback() {
    let dir = temp_dir("rk");
    let key = dir.join("root.key");
    std::fs::write(&key, [1u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not be readable"));

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(["serve", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-dev-on-public-address"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fake_clock_offset_survives_a_restart() {
    let mut s = Server::start(&["--fake-clock"]);
    s.advance(10 * 86_400);
    let (_, ring) = s.post(
        "/v1/projects/p/locations/us-east1/keyRings?keyRingId=before",
        serde_json::json!({}),
    );
    s.restart();
    let (_, later) = s.post(
        "/v1/projects/p/locations/us-east1/keyRings?keyRingId=after",
        serde_json::json!({}),
    );
    let t = |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v["createTime"].as_str().unwrap()).unwrap();
    assert!(
        t(&later) >= t(&ring),
        "time went backwards across a restart: {ring} then {later}"
    );
    assert!(t(&later) - chrono::Utc::now().fixed_offset() > chrono::TimeDelta::days(9));
    let (status, body) = s.post("/sealstore/v1/clock:advance", serde_json::json!({"seconds": -5}));
    assert_eq!(status, 400, "{body}");
}
