//! The gcloud-style CLI against a running server, including local wrapping.

use crate::harness::{Server, temp_dir};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

/// Creates an import job and waits until it is ACTIVE.
pub fn active_job(s: &Server, ring: &str, id: &str, method: &str) -> Value {
    let (st, job) = s.post(
        &format!("{ring}/importJobs?importJobId={id}"),
        json!({"importMethod": method, "protectionLevel": "SOFTWARE"}),
    );
    assert_eq!(st, 200, "{job}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, job) = s.get(&format!("{ring}/importJobs/{id}"));
        if job["state"] == "ACTIVE" {
            return job;
        }
        assert!(Instant::now() < deadline, "import job never became ACTIVE: {job}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cli(s: &Server, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .arg("kms")
        .args(args)
        .args(["--endpoint", &s.url, "--project", "p"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("JSON output"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn cli_imports_with_local_wrapping_and_a_downloaded_public_key() {
    let s = Server::start(&[]);
    let dir = temp_dir("cli");
    let ring = ["--location", "us-east1", "--keyring", "r"];
    let key: Vec<&str> = ring.iter().copied().chain(["--key", "k"]).collect();
    cli(&s, &[&["keyrings", "create"][..], &ring].concat()).unwrap();
    let k = cli(
        &s,
        &[
            &[
                "keys",
                "create",
                "--purpose",
                "encryption",
                "--default-algorithm",
                "google-symmetric-encryption",
            ][..],
            &["--skip-initial-version-creation", "--import-only"],
            &key,
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(k["importOnly"], true);
    assert!(k.get("primary").is_none());
    cli(
        &s,
        &[
            &[
                "import-jobs",
                "create",
                "--import-job",
                "j",
                "--import-method",
                "rsa-oaep-3072-sha1-aes-256",
            ][..],
            &ring,
        ]
        .concat(),
    )
    .unwrap();
    let pk = dir.join("job.pem");
    let deadline = Instant::now() + Duration::from_secs(90);
    while cli(
        &s,
        &[
            &[
                "import-jobs",
                "describe",
                "--import-job",
                "j",
                "--public-key-out",
                pk.to_str().unwrap(),
            ][..],
            &ring,
        ]
        .concat(),
    )
    .is_err()
    {
        assert!(Instant::now() < deadline, "job never became ACTIVE");
        std::thread::sleep(Duration::from_millis(200));
    }
    let target = dir.join("k1.bin");
    std::fs::write(&target, [7u8; 32]).unwrap();
    let import = |extra: &[&str]| {
        let base = [
            "keys",
            "versions",
            "import",
            "--import-job",
            "j",
            "--algorithm",
            "google-symmetric-encryption",
        ];
        cli(&s, &[&base[..], extra, &key].concat())
    };
    let v1 = import(&["--target-key-file", target.to_str().unwrap()]).unwrap();
    assert_eq!(v1["state"], "ENABLED", "{v1}");
    // With the downloaded public key the job is not fetched; the file really is used:
    // a different RSA key's PEM makes the import fail.
    let v2 = import(&[
        "--target-key-file",
        target.to_str().unwrap(),
        "--public-key-file",
        pk.to_str().unwrap(),
        "--import-method",
        "rsa-oaep-3072-sha1-aes-256",
    ])
    .unwrap();
    assert_eq!(v2["state"], "ENABLED", "{v2}");
    // Without --import-method the method comes from the job; the key still from the file.
    let v = import(&[
        "--target-key-file",
        target.to_str().unwrap(),
        "--public-key-file",
        pk.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(v["state"], "ENABLED", "{v}");
    let other = dir.join("other.pem");
    let other_key = sealstore::kms::wrapping::WrappingKey::generate(3072).unwrap();
    std::fs::write(&other, sealstore::kms::material::spki_pem(other_key.public_key_der())).unwrap();
    let v3 = import(&[
        "--target-key-file",
        target.to_str().unwrap(),
        "--public-key-file",
        other.to_str().unwrap(),
        "--import-method",
        "rsa-oaep-3072-sha1-aes-256",
    ])
    .unwrap();
    assert_eq!(v3["state"], "IMPORT_FAILED", "{v3}");
    assert!(
        v3["importFailureReason"]
            .as_str()
            .unwrap()
            .contains("couldn't be unwrapped")
    );

    let p = cli(
        &s,
        &[&["keys", "set-primary-version", "--version", "2"][..], &key].concat(),
    )
    .unwrap();
    assert!(p["primary"]["name"].as_str().unwrap().ends_with("/cryptoKeyVersions/2"));
    let list = cli(&s, &[&["keys", "versions", "list"][..], &key].concat()).unwrap();
    assert_eq!(list["cryptoKeyVersions"].as_array().unwrap().len(), 4);
    let ver: Vec<&str> = key.iter().copied().chain(["--version", "1"]).collect();
    assert_eq!(
        cli(&s, &[&["keys", "versions", "disable"][..], &ver].concat()).unwrap()["state"],
        "DISABLED"
    );
    assert_eq!(
        cli(&s, &[&["keys", "versions", "enable"][..], &ver].concat()).unwrap()["state"],
        "ENABLED"
    );
    assert_eq!(
        cli(&s, &[&["keys", "versions", "destroy"][..], &ver].concat()).unwrap()["state"],
        "DESTROY_SCHEDULED"
    );
    assert_eq!(
        cli(&s, &[&["keys", "versions", "restore"][..], &ver].concat()).unwrap()["state"],
        "DISABLED"
    );
    assert_eq!(
        cli(&s, &[&["keys", "versions", "describe"][..], &ver].concat()).unwrap()["reimportEligible"],
        true
    );
    let err = cli(&s, &[&["keys", "versions", "restore"][..], &ver].concat()).unwrap_err();
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
