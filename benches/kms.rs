//! KMS benchmarks (`cargo bench --bench kms`). Prints figures; asserts nothing.
//! - 32-byte encrypt+decrypt round trips per second through the core, one thread;
//! - the same through HTTP on loopback (one client, keep-alive);
//! - imports per second for each import method, through the core.

use sealstore::clock::SystemClock;
use sealstore::kms::names::LocationName;
use sealstore::kms::seal::Sealer;
use sealstore::kms::store::SqliteKmsStore;
use sealstore::kms::types::{Algorithm, ImportJobState, ImportMethod, ProtectionLevel, Purpose};
use sealstore::kms::{ImportRequest, Kms, NewCryptoKey};
use sealstore::rootkey::RootKey;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn core() -> Kms {
    let store = SqliteKmsStore::new(sealstore::db::open_in_memory().unwrap()).unwrap();
    Kms::open(
        Arc::new(store),
        Sealer::new(&RootKey::generate()),
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn spec(purpose: Purpose, skip: bool) -> NewCryptoKey {
    NewCryptoKey {
        purpose,
        protection_level: ProtectionLevel::SOFTWARE,
        algorithm: None,
        labels: Default::default(),
        import_only: false,
        destroy_scheduled_duration: None,
        rotation_period: None,
        next_rotation_time: None,
        skip_initial_version_creation: skip,
    }
}

fn bench_core() -> f64 {
    let kms = core();
    let loc = LocationName::new("bench", "us-east1").unwrap();
    let ring = kms.create_key_ring(&loc, "r").unwrap().name;
    let key = kms
        .create_crypto_key(&ring, "k", spec(Purpose::ENCRYPT_DECRYPT, false))
        .unwrap()
        .key
        .name;
    let pt = [7u8; 32];
    let run = |n: usize| {
        let t = Instant::now();
        for _ in 0..n {
            let ct = kms.encrypt(&key, None, &pt, b"").unwrap();
            let back = kms.decrypt(&key, &ct.ciphertext, b"").unwrap();
            assert_eq!(back.plaintext.len(), 32);
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    run(10_000);
    run(200_000)
}

fn bench_http() -> f64 {
    let dir = std::env::temp_dir().join(format!("sealstore-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = sealstore::server::ServeConfig {
        data_dir: dir.clone(),
        addr: "127.0.0.1:0".into(),
        fake_clock: false,
        root_key_file: None,
        root_key_env: None,
        allow_public_dev: false,
        blob_store: Some("memory://".into()),
        inline_max_bytes: 65536,
        auto_grant_service_agent: true,
        kms_ops_per_minute: None,
        token_auth: false,
        audit_stdout: false,
        tls: None,
        public_url: None,
        xml_domain: None,
        multipart_ttl_secs: 7 * 24 * 3600,
        limits: Default::default(),
        conn: Default::default(),
        lifecycle: Default::default(),
        default_soft_delete_seconds: 0,
    };
    let state = sealstore::server::build(&cfg).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move {
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, sealstore::api::router(state)).await
    });
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(true)
        .build()
        .new_agent();
    let ring = format!("{url}/v1/projects/bench/locations/us-east1/keyRings");
    agent
        .post(format!("{ring}?keyRingId=r"))
        .send_json(serde_json::json!({}))
        .unwrap();
    agent
        .post(format!("{ring}/r/cryptoKeys?cryptoKeyId=k"))
        .send_json(serde_json::json!({"purpose": 1}))
        .unwrap();
    let key = format!("{ring}/r/cryptoKeys/k");
    let body = serde_json::json!({"plaintext": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="});
    let run = |n: usize| {
        let t = Instant::now();
        for _ in 0..n {
            let enc: serde_json::Value = agent
                .post(format!("{key}:encrypt"))
                .send_json(&body)
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap();
            let _: serde_json::Value = agent
                .post(format!("{key}:decrypt"))
                .send_json(serde_json::json!({"ciphertext": enc["ciphertext"]}))
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap();
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    run(500);
    let r = run(5_000);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn bench_import(method: ImportMethod) -> f64 {
    let kms = core();
    let loc = LocationName::new("bench", "us-east1").unwrap();
    let ring = kms.create_key_ring(&loc, "r").unwrap().name;
    let key = kms
        .create_crypto_key(&ring, "k", spec(Purpose::ENCRYPT_DECRYPT, true))
        .unwrap()
        .key
        .name;
    let job = kms
        .create_import_job(&ring, "j", method, ProtectionLevel::SOFTWARE)
        .unwrap()
        .name;
    let deadline = Instant::now() + Duration::from_secs(120);
    let public = loop {
        let j = kms.get_import_job(&job).unwrap();
        if j.state == ImportJobState::ACTIVE {
            break j.public_key_der.unwrap();
        }
        assert!(Instant::now() < deadline, "wrapping key generation timed out");
        std::thread::sleep(Duration::from_millis(50));
    };
    let n = 200;
    let blobs: Vec<Vec<u8>> = (0..n)
        .map(|i| sealstore::kms::wrapping::wrap(method, &public, &[i as u8; 32]).unwrap())
        .collect();
    let t = Instant::now();
    for blob in blobs {
        let v = kms
            .import_version(ImportRequest {
                parent: key.clone(),
                version: None,
                algorithm: Algorithm::GOOGLE_SYMMETRIC_ENCRYPTION,
                import_job: job.clone(),
                wrapped_key: blob,
            })
            .unwrap();
        assert_eq!(v.state, sealstore::kms::types::VersionState::ENABLED);
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks sections.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |s: &str| filter.is_empty() || filter.iter().any(|f| s.contains(f.as_str()));
    if want("core") {
        println!(
            "kms core: 32-byte encrypt+decrypt round trips, 1 thread: {:>10.0}/s (target >= 50000/s)",
            bench_core()
        );
    }
    if want("http") {
        println!(
            "kms http: 32-byte encrypt+decrypt round trips, loopback:  {:>10.0}/s",
            bench_http()
        );
    }
    if want("import") {
        for m in ImportMethod::ALL {
            println!(
                "kms import ({:<30}) 32-byte key:  {:>10.1} imports/s",
                m.name(),
                bench_import(*m)
            );
        }
    }
}
