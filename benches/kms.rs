//! KMS benchmarks (`cargo bench --bench kms`). Prints figures; asserts nothing.
//! - 32-byte encrypt+decrypt round trips per second through the core, one thread;
//! - the same through HTTP on loopback (one client, keep-alive);
//! - `:encrypt` over REST at 16 clients, `--auth token` against dev mode, in one run;
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

/// A server in this process on loopback (memory blobs), `--auth token` or dev mode.
struct HttpServer {
    url: String,
    dir: std::path::PathBuf,
    state: sealstore::api::AppState,
    rt: tokio::runtime::Runtime,
}

impl HttpServer {
    fn start(token_auth: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("sealstore-bench-{}-{token_auth}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = sealstore::server::ServeConfig {
            data_dir: dir.clone(),
            addr: "127.0.0.1:0".into(),
            fake_clock: false,
            root_key_file: None,
            root_key_env: None,
            allow_public_dev: false,
            database: None,
            node_id: None,
            blob_store: Some("memory://".into()),
            inline_max_bytes: 65536,
            auto_grant_service_agent: true,
            kms_ops_per_minute: None,
            token_auth,
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
        let rt = tokio::runtime::Runtime::new().unwrap();
        let state = rt.block_on(sealstore::server::build(&cfg)).unwrap().state;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = sealstore::api::router(state.clone());
        rt.spawn(async move {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router).await
        });
        Self { url, dir, state, rt }
    }

    /// `Authorization` for an owner of project `bench` (token mode), or nothing (dev).
    fn auth(&self) -> Option<String> {
        if !self.state.token_auth {
            return None;
        }
        let principal = "user:bench@example.com";
        let (_, token) = self
            .rt
            .block_on(self.state.tokens.create(principal, chrono::Utc::now()))
            .unwrap();
        self.rt
            .block_on(
                self.state
                    .policies
                    .add_binding("projects/bench", "roles/owner", principal),
            )
            .unwrap();
        Some(format!("Bearer {token}"))
    }

    /// A key ring `r` with an ENCRYPT_DECRYPT key `k`; its URL.
    fn key(&self, auth: Option<&str>) -> String {
        let agent = agent();
        let ring = format!("{}/v1/projects/bench/locations/us-east1/keyRings", self.url);
        for (url, body) in [
            (format!("{ring}?keyRingId=r"), serde_json::json!({})),
            (
                format!("{ring}/r/cryptoKeys?cryptoKeyId=k"),
                serde_json::json!({"purpose": 1}),
            ),
        ] {
            let mut req = agent.post(url);
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.send_json(body).unwrap();
        }
        format!("{ring}/r/cryptoKeys/k")
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(true)
        .build()
        .new_agent()
}

fn bench_http() -> f64 {
    let server = HttpServer::start(false);
    let agent = agent();
    let key = server.key(None);
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
    run(5_000)
}

/// `:encrypt` calls per second from 16 clients (keep-alive), dev mode or `--auth token`.
fn encrypt_rate(token_auth: bool) -> f64 {
    let server = HttpServer::start(token_auth);
    let auth = server.auth();
    let key = server.key(auth.as_deref());
    let run = |secs: f64| {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let t = Instant::now();
        let done: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        let agent = agent();
                        let mut n = 0usize;
                        while Instant::now() < deadline {
                            let mut req = agent.post(format!("{key}:encrypt"));
                            if let Some(a) = &auth {
                                req = req.header("Authorization", a);
                            }
                            req.send_json(
                                serde_json::json!({"plaintext": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="}),
                            )
                            .unwrap()
                            .body_mut()
                            .read_to_vec()
                            .unwrap();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        done as f64 / t.elapsed().as_secs_f64()
    };
    run(1.0);
    run(5.0)
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
    if want("encrypt") {
        // Token mode runs first, dev mode second, both in this run on the same machine.
        let token = encrypt_rate(true);
        let dev = encrypt_rate(false);
        println!(
            "kms http: :encrypt, 16 clients: dev {dev:>8.0}/s, --auth token {token:>8.0}/s = {:.2}x dev (target >= 0.9x)",
            token / dev
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
