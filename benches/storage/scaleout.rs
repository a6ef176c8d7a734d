//! Scale-out figures: a cloud blob backend (S3 through moto) against the local disk, and
//! one against three gateways on one PostgreSQL database.

use super::{Server, agent, download, pattern, small_ops_over, upload};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIG: u64 = 256 << 20;

/// moto's S3 server from the emulators venv the test command installs.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    fn start() -> Option<Self> {
        let bin = std::env::var("BENCH_MOTO_SERVER")
            .unwrap_or_else(|_| format!("{}/.venv-emulators/bin/moto_server", env!("CARGO_MANIFEST_DIR")));
        if !std::path::Path::new(&bin).exists() {
            println!("s3: skipped, no moto server at {bin} (run tests/run.sh once, or set BENCH_MOTO_SERVER)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // moto does not check signatures: an unsigned PUT creates the bucket.
        agent()
            .put(format!("http://127.0.0.1:{port}/bench-blobs"))
            .send_empty()
            .expect("create the moto bucket");
        Some(Self { child, port })
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "bench".into()),
            ("AWS_SECRET_ACCESS_KEY", "bench".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The same bytes straight to moto through object_store, in the 8 MiB parts the
    /// gateway writes (one at a time, as a single upload stream does): the ceiling.
    fn direct(&self) -> (f64, f64) {
        use object_store::{ObjectStore, path::Path};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_bucket_name("bench-blobs")
            .with_access_key_id("bench")
            .with_secret_access_key("bench")
            .with_region("us-east-1")
            .build()
            .unwrap();
        let data = object_store::PutPayload::from(vec![0x5au8; 8 << 20]);
        let parts = (BIG / (8 << 20)) as usize;
        rt.block_on(async {
            let t = Instant::now();
            for i in 0..parts {
                store
                    .put(&Path::from(format!("direct/{i}")), data.clone())
                    .await
                    .unwrap();
            }
            let up = BIG as f64 / t.elapsed().as_secs_f64() / 1e6;
            let t = Instant::now();
            for i in 0..parts {
                store
                    .get(&Path::from(format!("direct/{i}")))
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
            }
            let down = BIG as f64 / t.elapsed().as_secs_f64() / 1e6;
            (up, down)
        })
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn make_bucket(s: &Server) {
    agent()
        .post(format!("{}/storage/v1/b?project=bench", s.url))
        .send_json(serde_json::json!({"name": "bench"}))
        .unwrap();
}

/// 256 MiB up and down through `--blob-store s3://` on moto, against `file://`.
pub fn s3_backend() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let data = pattern();
    let mut figures = vec![];
    for (label, extra, env) in [
        ("file://", vec![], vec![]),
        ("s3:// (moto)", vec!["--blob-store", "s3://bench-blobs/gw"], moto.env()),
    ] {
        let s = Server::start_with(&extra, &env);
        make_bucket(&s);
        let up = upload(&s, "big", BIG, &data);
        let down = download(&s, "big");
        println!("256 MiB upload,   {label:<14}          {up:>8.1} MB/s");
        println!("256 MiB download, {label:<14}          {down:>8.1} MB/s");
        figures.push((up, down));
    }
    let (up, down) = moto.direct();
    println!("256 MiB straight to moto (object_store, 8 MiB PUTs): up {up:.1} MB/s, down {down:.1} MB/s (the ceiling)");
    let ((fu, fd), (su, sd)) = (figures[0], figures[1]);
    println!(
        "s3:// / file://: upload {:.2}x, download {:.2}x; s3:// / moto ceiling: upload {:.2}x, download {:.2}x",
        su / fu,
        sd / fd,
        su / up,
        sd / down
    );
}

/// 4 KiB PUT and GET, 16 clients, on one and on three gateways sharing one PostgreSQL
/// database and one blob directory: in dev mode, and in the production shape
/// (`--auth token`, every object under a CMEK bucket default).
pub fn gateways(production: bool) {
    let url = sealstore_testpg::fresh_database();
    let blobs = std::env::temp_dir().join(format!(
        "sealstore-bench-shared-blobs-{}-{production}",
        std::process::id()
    ));
    let blob_spec = format!("file://{}", blobs.display());
    let mut args = vec!["--database", &url, "--blob-store", &blob_spec];
    if production {
        args.extend(["--auth", "token", "--auto-grant-service-agent"]);
    }
    let mut first = Server::start(&args);
    let key = first.dir.join("root.key");
    let key = key.to_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_secs(6));
    let shape = if production {
        first.auth = Some(first.create_token("user:bench@example.com", "bench", "roles/owner"));
        let ring = "/v1/projects/bench/locations/us/keyRings";
        first.post_json(&format!("{ring}?keyRingId=prod"), serde_json::json!({}));
        first.post_json(
            &format!("{ring}/prod/cryptoKeys?cryptoKeyId=k"),
            serde_json::json!({"purpose": "ENCRYPT_DECRYPT"}),
        );
        first.post_json(
            "/storage/v1/b?project=bench",
            serde_json::json!({"name": "bench", "encryption": {"defaultKmsKeyName": "projects/bench/locations/us/keyRings/prod/cryptoKeys/k"}}),
        );
        " [token+CMEK]"
    } else {
        make_bucket(&first);
        ""
    };
    let auth = first.auth.clone();
    let one = (
        small_ops_over(&[&first], auth.clone(), true, 5.0),
        small_ops_over(&[&first], auth.clone(), false, 5.0),
    );
    args.extend(["--root-key-file", &key]);
    let others: Vec<Server> = (0..2).map(|_| Server::start(&args)).collect();
    std::thread::sleep(Duration::from_secs(6));
    let all = [&first, &others[0], &others[1]];
    let three = (
        small_ops_over(&all, auth.clone(), true, 5.0),
        small_ops_over(&all, auth, false, 5.0),
    );
    println!(
        "4 KiB PUT, 16 clients, 1 gateway  on PostgreSQL   {:>8.0} ops/s{shape}",
        one.0
    );
    println!(
        "4 KiB GET, 16 clients, 1 gateway  on PostgreSQL   {:>8.0} ops/s{shape}",
        one.1
    );
    println!(
        "4 KiB PUT, 16 clients, 3 gateways on PostgreSQL   {:>8.0} ops/s (aggregate){shape}",
        three.0
    );
    println!(
        "4 KiB GET, 16 clients, 3 gateways on PostgreSQL   {:>8.0} ops/s (aggregate){shape}",
        three.1
    );
    println!(
        "3 gateways / 1: PUT {:.2}x, GET {:.2}x (2 cores shared by the gateways, PostgreSQL and the clients){shape}",
        three.0 / one.0,
        three.1 / one.1
    );
    let _ = std::fs::remove_dir_all(&blobs);
}
