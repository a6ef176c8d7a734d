//! The Cloud KMS REST face over real HTTP: encodings, errors, persistence, erasure.

use crate::harness::{Server, contains, files_under};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

const RING: &str = "/v1/projects/p/locations/us-east1/keyRings";
const INT: &str = "%24alt=json%3Benum-encoding%3Dint";

fn setup(s: &Server, ring: &str) -> String {
    let (st, body) = s.post(&format!("{RING}?keyRingId={ring}"), json!({}));
    assert_eq!(st, 200, "{body}");
    format!("{RING}/{ring}")
}

#[test]
fn enums_follow_the_requested_encoding() {
    let s = Server::start(&[]);
    let ring = setup(&s, "enc");
    let (st, key) = s.post(&format!("{ring}/cryptoKeys?cryptoKeyId=k&{INT}"), json!({"purpose": 1}));
    assert_eq!(st, 200, "{key}");
    assert_eq!(key["purpose"], 1);
    assert_eq!(key["primary"]["state"], 1);
    assert_eq!(key["versionTemplate"]["algorithm"], 1);
    assert_eq!(key["destroyScheduledDuration"], "2592000s");
    let (_, key) = s.get(&format!("{ring}/cryptoKeys/k"));
    assert_eq!(key["purpose"], "ENCRYPT_DECRYPT");
    assert_eq!(
        key["primary"]["name"],
        "projects/p/locations/us-east1/keyRings/enc/cryptoKeys/k/cryptoKeyVersions/1"
    );
    // snake_case input and URL-safe unpadded base64 are accepted.
    let (st, enc) = s.post(
        &format!("{ring}/cryptoKeys/k:encrypt"),
        json!({"plaintext": "-_8", "plaintext_crc32c": crc32c::crc32c(&[0xfb, 0xff]).to_string()}),
    );
    assert_eq!(st, 200, "{enc}");
    assert_eq!(enc["verifiedPlaintextCrc32c"], true);
    let (st, dec) = s.post(
        &format!("{ring}/cryptoKeys/k:decrypt"),
        json!({"ciphertext": enc["ciphertext"]}),
    );
    assert_eq!(st, 200, "{dec}");
    assert_eq!(dec["plaintext"], "+/8=");
    assert_eq!(dec["usedPrimary"], true);
}

#[test]
fn bad_input_gets_google_errors_that_name_the_resource() {
    let s = Server::start(&[]);
    let ring = setup(&s, "bad");
    assert_eq!(
        s.post(
            &format!("{ring}/cryptoKeys?cryptoKeyId=k"),
            json!({"purpose": "ENCRYPT_DECRYPT"})
        )
        .0,
        200
    );
    let key = format!("{ring}/cryptoKeys/k");
    let cases = [
        (
            s.post(&format!("{RING}?keyRingId=bad%21id"), json!({})),
            400,
            "INVALID_ARGUMENT",
            "bad!id",
        ),
        (
            s.get("/v1/projects/p/locations/mars-1/keyRings"),
            400,
            "INVALID_ARGUMENT",
            "mars-1",
        ),
        (
            s.get(&format!("{key}/cryptoKeyVersions/0")),
            400,
            "INVALID_ARGUMENT",
            "0",
        ),
        (
            s.get(&format!("{ring}/cryptoKeys/nope")),
            404,
            "NOT_FOUND",
            "keyRings/bad/cryptoKeys/nope",
        ),
        (
            s.post(&format!("{RING}?keyRingId=bad"), json!({})),
            409,
            "ALREADY_EXISTS",
            "keyRings/bad",
        ),
        (
            s.post(
                &format!("{ring}/cryptoKeys?cryptoKeyId=x"),
                json!({"purpose": "NOT_A_PURPOSE"}),
            ),
            400,
            "INVALID_ARGUMENT",
            "purpose",
        ),
        (
            s.post(&format!("{ring}/cryptoKeys?cryptoKeyId=x"), json!({"purpose": 77})),
            400,
            "INVALID_ARGUMENT",
            "purpose",
        ),
        (
            s.post(&format!("{key}:encrypt"), json!({"plaintext": "***"})),
            400,
            "INVALID_ARGUMENT",
            "plaintext",
        ),
        (
            s.post(
                &format!("{key}:encrypt"),
                json!({"plaintext": STANDARD.encode(vec![0u8; 65537])}),
            ),
            400,
            "INVALID_ARGUMENT",
            "65536",
        ),
        (
            s.post(
                &format!("{key}:decrypt"),
                json!({"ciphertext": STANDARD.encode(b"junk")}),
            ),
            400,
            "INVALID_ARGUMENT",
            "Decryption failed",
        ),
        (
            s.post(&format!("{key}/cryptoKeyVersions/1:restore"), json!({})),
            400,
            "FAILED_PRECONDITION",
            "cryptoKeys/k/cryptoKeyVersions/1",
        ),
        (
            s.post(
                &format!("{key}:updatePrimaryVersion"),
                json!({"cryptoKeyVersionId": "9"}),
            ),
            404,
            "NOT_FOUND",
            "cryptoKeyVersions/9",
        ),
        (
            s.patch(&format!("{key}?updateMask=purpose"), json!({"purpose": 5})),
            400,
            "INVALID_ARGUMENT",
            "purpose",
        ),
        (
            s.post(&format!("{key}:encrypt"), json!("not an object")),
            400,
            "INVALID_ARGUMENT",
            "JSON",
        ),
        (
            s.post(
                &format!("{ring}/cryptoKeys?cryptoKeyId=ext"),
                json!({"purpose": 1, "versionTemplate": {"protectionLevel": "EXTERNAL"}}),
            ),
            501,
            "UNIMPLEMENTED",
            "EXTERNAL",
        ),
    ];
    for (i, ((status, body), want_status, want_code, fragment)) in cases.into_iter().enumerate() {
        assert_eq!(status, want_status, "case {i}: {body}");
        assert_eq!(body["error"]["code"], want_status, "case {i}");
        assert_eq!(body["error"]["status"], want_code, "case {i}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(fragment), "case {i}: {msg:?} should mention {fragment:?}");
    }
    // Bad input names the resource it concerns.
    let key_name = "projects/p/locations/us-east1/keyRings/bad/cryptoKeys/k";
    for (status, body) in [
        s.post(&format!("{key}:encrypt"), json!({"plaintext": "***"})),
        s.post(
            &format!("{key}:encrypt"),
            json!({"plaintext": STANDARD.encode(vec![0u8; 65537])}),
        ),
        s.post(
            &format!("{key}:encrypt"),
            json!({"plaintext": "AA==", "plaintextCrc32c": "1"}),
        ),
        s.post(&format!("{key}:encrypt"), json!({})),
    ] {
        assert_eq!(status, 400, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(key_name), "{body}");
    }
    // Disabled versions fail closed with the Cloud KMS wording and violation type.
    assert_eq!(
        s.patch(
            &format!("{key}/cryptoKeyVersions/1?updateMask=state"),
            json!({"state": "DISABLED"})
        )
        .0,
        200
    );
    let (status, body) = s.post(&format!("{key}:encrypt"), json!({"plaintext": "AA=="}));
    assert_eq!(status, 400);
    let v1 = "projects/p/locations/us-east1/keyRings/bad/cryptoKeys/k/cryptoKeyVersions/1";
    assert_eq!(
        body["error"]["message"],
        format!("{v1} is not enabled, current state is: DISABLED.")
    );
    assert_eq!(body["error"]["details"][0]["violations"][0]["type"], "KEY_DISABLED");
    assert_eq!(body["error"]["details"][0]["violations"][0]["subject"], v1);
    assert!(s.log_text().lines().all(|l| !l.contains("panicked")));
}

/// Imports a key whose bytes the test knows, then proves they never reach the disk,
/// and that destruction erases the sealed copy from the database.
#[test]
fn known_key_bytes_never_reach_disk_and_destruction_erases_them() {
    let mut s = Server::start(&["--fake-clock"]);
    let ring = setup(&s, "disk");
    let key = format!("{ring}/cryptoKeys/imp");
    let (st, b) = s.post(
        &format!("{ring}/cryptoKeys?cryptoKeyId=imp&skipInitialVersionCreation=true"),
        json!({"purpose": "ENCRYPT_DECRYPT", "importOnly": true, "destroyScheduledDuration": "86400s"}),
    );
    assert_eq!(st, 200, "{b}");
    let job = crate::kms_cli::active_job(&s, &ring, "j", "RSA_OAEP_3072_SHA256_AES_256");
    let secret: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let pem = job["publicKey"]["pem"].as_str().unwrap();
    let der = sealstore::client::kms::pem_to_der(pem).unwrap();
    let wrapped = sealstore::kms::wrapping::wrap(
        sealstore::kms::types::ImportMethod::RSA_OAEP_3072_SHA256_AES_256,
        &der,
        &secret,
    )
    .unwrap();
    let (st, v) = s.post(
        &format!("{key}/cryptoKeyVersions:import"),
        json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": job["name"], "wrappedKey": STANDARD.encode(&wrapped)}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "ENABLED");
    assert_eq!(v["reimportEligible"], true);
    assert_eq!(
        s.post(
            &format!("{key}:updatePrimaryVersion"),
            json!({"cryptoKeyVersionId": "1"})
        )
        .0,
        200
    );
    let (st, enc) = s.post(&format!("{key}:encrypt"), json!({"plaintext": "aGVsbG8="}));
    assert_eq!(st, 200, "{enc}");

    let needles = [
        secret.clone(),
        hex(&secret).into_bytes(),
        STANDARD.encode(&secret).into_bytes(),
    ];
    let scan = |dir: &std::path::Path| {
        for (path, bytes) in files_under(dir) {
            for n in &needles {
                assert!(!contains(&bytes, n), "key material found in {}", path.display());
            }
        }
    };
    scan(&s.dir);
    s.restart();
    let (st, dec) = s.post(&format!("{key}:decrypt"), json!({"ciphertext": enc["ciphertext"]}));
    assert_eq!((st, dec["plaintext"].as_str()), (200, Some("aGVsbG8=")), "{dec}");

    let v1 = "projects/p/locations/us-east1/keyRings/disk/cryptoKeys/imp/cryptoKeyVersions/1";
    assert_eq!(s.post(&format!("/v1/{v1}:destroy"), json!({})).0, 200);
    s.advance(86_400 + 60);
    let (_, v) = s.get(&format!("/v1/{v1}"));
    assert_eq!(v["state"], "DESTROYED");
    let db = rusqlite::Connection::open(s.dir.join("sealstore.db")).unwrap();
    let sealed: Option<Vec<u8>> = db
        .query_row("SELECT sealed FROM kms_versions WHERE name = ?1", [v1], |r| r.get(0))
        .unwrap();
    assert!(sealed.is_none(), "destroyed material is still stored");
    drop(db);
    s.restart();
    scan(&s.dir);
    let (st, body) = s.post(&format!("{key}:decrypt"), json!({"ciphertext": enc["ciphertext"]}));
    assert_eq!(st, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("current state is: DESTROYED.")
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
