//! Storage benchmarks (`cargo bench --bench storage`). Prints figures; asserts nothing.
//! Runs the release server binary on loopback and measures, in one run:
//! - single-stream upload and download of a 256 MiB object, against the single-core
//!   MD5 throughput (the ceiling for one upload stream);
//! - 4 KiB PUT and GET operations per second with 16 concurrent clients;
//! - peak RSS growth of the server during a 1 GiB upload;
//! - the production shape: the same streams and small operations with `--auth token`
//!   (every request carries a bearer token) into a bucket whose default key is a CMEK
//!   key (every data key wrapped and unwrapped through the KMS as the service agent),
//!   then the server's `/metrics` series from that run;
//! - `s3`: 256 MiB through an S3 blob store (moto) against `file://`, and moto's own
//!   ceiling; `gateways`: 4 KiB PUT/GET with one and with three gateways on one
//!   PostgreSQL (see `storage/scaleout.rs`).

#[path = "storage/scaleout.rs"]
mod scaleout;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Server {
    child: std::process::Child,
    url: String,
    dir: std::path::PathBuf,
    /// `Authorization` header value in token mode.
    auth: Option<String>,
    /// `--database`, if not the data dir's SQLite (the CLI needs it too).
    database: Option<String>,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, &[])
    }

    /// With extra environment (a cloud blob store's AWS_* variables).
    fn start_with(extra: &[&str], env: &[(String, String)]) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sealstore-bench-storage-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealstore"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .args(extra)
            .args(
                std::env::var("BENCH_BLOB_STORE")
                    .map(|b| vec!["--blob-store".to_owned(), b])
                    .unwrap_or_default(),
            )
            .args(
                std::env::var("BENCH_INLINE_MAX_BYTES")
                    .map(|b| vec!["--inline-max-bytes".to_owned(), b])
                    .unwrap_or_default(),
            )
            .env("RUST_LOG", "warn,sealstore=info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("server exited").unwrap();
            if let Some(i) = line.find("listening on ") {
                break line[i + 13..].trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url,
            dir,
            auth: None,
            database: extra
                .iter()
                .position(|a| *a == "--database")
                .and_then(|i| extra.get(i + 1))
                .map(|s| s.to_string()),
        }
    }

    /// A token for `principal` with `role` on `project`, made with the CLI on the data
    /// dir; returns the `Authorization` header value.
    fn create_token(&self, principal: &str, project: &str, role: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_sealstore"))
            .args(["iam", "tokens", "create", "--data-dir"])
            .arg(&self.dir)
            .args(["--principal", principal, "--project", project, "--role", role])
            .args(self.database.iter().flat_map(|d| ["--database", d.as_str()]))
            .output()
            .expect("create token");
        assert!(out.status.success(), "token create failed");
        format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim())
    }

    fn post_json(&self, path: &str, body: serde_json::Value) {
        let mut req = agent().post(format!("{}{path}", self.url));
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        req.send_json(body).unwrap();
    }

    fn get_text(&self, path: &str) -> String {
        let mut req = agent().get(format!("{}{path}", self.url));
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        req.call().unwrap().body_mut().read_to_string().unwrap()
    }

    fn rss_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(true)
        .build()
        .new_agent()
}

/// 16 MiB of random data, cycled as upload bodies, so the client spends almost no CPU
/// (it shares the two cores with the server).
fn pattern() -> Arc<Vec<u8>> {
    let mut state = 1u64;
    Arc::new(
        (0..16 << 20)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect(),
    )
}

/// A minimal keep-alive HTTP/1.1 client over a raw socket: the load generator shares
/// the two cores with the server, so it must cost as little CPU as possible.
struct Raw {
    stream: std::net::TcpStream,
    reader: BufReader<std::net::TcpStream>,
    host: String,
    /// Extra header lines (`Authorization: …\r\n`), or empty.
    extra: String,
    /// Response bodies are read into this and discarded; allocated once per connection.
    sink: Vec<u8>,
}

impl Raw {
    fn connect(url: &str, auth: Option<&str>) -> Self {
        let host = url.trim_start_matches("http://").to_owned();
        let extra = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let stream = std::net::TcpStream::connect(&host).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::with_capacity(1 << 20, stream.try_clone().unwrap());
        Self {
            stream,
            reader,
            host,
            extra,
            sink: vec![0u8; 1 << 20],
        }
    }

    /// Sends a request with `body_len` bytes taken from `body` (cycled), returns the status
    /// and the number of body bytes received (discarded).
    fn request(&mut self, method: &str, path: &str, body: &[u8], body_len: u64) -> (u16, u64) {
        self.request_h(method, path, "", body, body_len)
    }

    /// As `request`, with extra header lines (each ending in `\r\n`).
    fn request_h(&mut self, method: &str, path: &str, headers: &str, body: &[u8], body_len: u64) -> (u16, u64) {
        use std::io::Write;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}{headers}Content-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n\r\n",
            self.host, self.extra
        );
        self.stream.write_all(head.as_bytes()).unwrap();
        let mut left = body_len;
        while left > 0 {
            let n = left.min(body.len() as u64) as usize;
            self.stream.write_all(&body[..n]).unwrap();
            left -= n as u64;
        }
        // Response head, then Content-Length bytes of body.
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut got = 0u64;
        while got < len {
            let want = ((len - got) as usize).min(self.sink.len());
            let n = self.reader.read(&mut self.sink[..want]).unwrap();
            assert!(n > 0, "connection closed");
            got += n as u64;
        }
        (status, got)
    }
}

fn md5_ceiling(len: usize) -> f64 {
    use md5::Digest;
    let data = vec![0x5au8; 8 << 20];
    let t = Instant::now();
    let mut h = md5::Md5::new();
    for _ in 0..len / data.len() {
        h.update(&data);
    }
    std::hint::black_box(h.finalize());
    len as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn upload(s: &Server, name: &str, len: u64, data: &Arc<Vec<u8>>) -> f64 {
    let mut c = Raw::connect(&s.url, s.auth.as_deref());
    let t = Instant::now();
    let (status, _) = c.request(
        "POST",
        &format!("/upload/storage/v1/b/bench/o?uploadType=media&name={name}"),
        data,
        len,
    );
    assert_eq!(status, 200, "upload failed");
    len as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn download(s: &Server, name: &str) -> f64 {
    let mut c = Raw::connect(&s.url, s.auth.as_deref());
    let t = Instant::now();
    let (status, n) = c.request(
        "GET",
        &format!("/download/storage/v1/b/bench/o/{name}?alt=media"),
        &[],
        0,
    );
    assert_eq!(status, 200, "download failed");
    n as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn small_ops(s: &Server, put: bool, seconds: f64) -> f64 {
    small_ops_as(s, s.auth.clone(), put, seconds)
}

fn small_ops_as(s: &Server, auth: Option<String>, put: bool, seconds: f64) -> f64 {
    small_ops_over(&[s], auth, put, seconds)
}

/// 16 clients spread over `servers` (client `t` talks to server `t % n`).
fn small_ops_over(servers: &[&Server], auth: Option<String>, put: bool, seconds: f64) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let url = servers[t % servers.len()].url.clone();
            let (auth, done) = (auth.clone(), done.clone());
            std::thread::spawn(move || {
                let mut c = Raw::connect(&url, auth.as_deref());
                let body = vec![7u8; 4096];
                let mut i = 0;
                while Instant::now() < deadline {
                    let (status, _) = if put {
                        c.request(
                            "POST",
                            &format!("/upload/storage/v1/b/bench/o?uploadType=media&name=small-{t}-{i}"),
                            &body,
                            4096,
                        )
                    } else {
                        c.request(
                            "GET",
                            &format!("/download/storage/v1/b/bench/o/small-{t}-{}?alt=media", i % 50),
                            &[],
                            0,
                        )
                    };
                    assert_eq!(status, 200);
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / seconds
}

/// Re-key throughput: 10,000 small CMEK objects moved to another key, by rewrap (DEK
/// re-wrapped, metadata only) and by rewrite (new DEK, data re-encrypted).
fn rekey(s: &Server) {
    let a = agent();
    let ring = format!("{}/v1/projects/bench/locations/us/keyRings", s.url);
    a.post(format!("{ring}?keyRingId=rk"))
        .send_json(serde_json::json!({}))
        .unwrap();
    for k in ["k1", "k2"] {
        a.post(format!("{ring}/rk/cryptoKeys?cryptoKeyId={k}"))
            .send_json(serde_json::json!({"purpose": 1}))
            .unwrap();
    }
    let key = |k: &str| format!("projects/bench/locations/us/keyRings/rk/cryptoKeys/{k}");
    a.post(format!("{}/storage/v1/b?project=bench", s.url))
        .send_json(
            serde_json::json!({"name": "rekey", "location": "US", "encryption": {"defaultKmsKeyName": key("k1")}}),
        )
        .unwrap();
    let n = 10_000usize;
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (url, next) = (s.url.clone(), next.clone());
            std::thread::spawn(move || {
                let mut c = Raw::connect(&url, None);
                let body = vec![3u8; 1024];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let (st, _) = c.request(
                        "POST",
                        &format!("/upload/storage/v1/b/rekey/o?uploadType=media&name=o{i:06}"),
                        &body,
                        1024,
                    );
                    assert_eq!(st, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let run = |mode: &str, from: &str, to: &str| -> f64 {
        let t = Instant::now();
        let job: serde_json::Value = a
            .post(format!("{}/sealstore/v1/projects/bench/rekeyJobs", s.url))
            .send_json(serde_json::json!({"bucket": "rekey", "from": {"kmsKeyName": key(from)}, "to": {"kmsKeyName": key(to)}, "mode": mode}))
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        let name = job["name"].as_str().unwrap().to_owned();
        loop {
            let j: serde_json::Value = a
                .get(format!("{}/sealstore/v1/{name}", s.url))
                .call()
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap();
            if j["state"] != "RUNNING" {
                assert_eq!(j["counters"]["rewritten"], n as u64, "{j}");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let rewrap = run("rewrap", "k1", "k2");
    let rewrite = run("rewrite", "k2", "k1");
    println!("re-key 10,000 1 KiB objects, rewrap:   {rewrap:>8.0} objects/s (target >= 5000/s)");
    println!("re-key 10,000 1 KiB objects, rewrite:  {rewrite:>8.0} objects/s");
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |s: &str| filter.is_empty() || filter.iter().any(|f| s.contains(f.as_str()));
    if want("production") {
        production(None);
    }
    if want("postgres") {
        postgres_vs_sqlite();
    }
    if want("token-pg") {
        production(Some(sealstore_testpg::fresh_database()));
    }
    if want("s3") {
        scaleout::s3_backend();
    }
    if want("gateways") {
        scaleout::gateways(false);
    }
    if want("gateways-token") {
        scaleout::gateways(true);
    }
    let s = Server::start(&[]);
    // Let the server finish start-up work (it pre-generates RSA import-job keys in the
    // background) so it does not compete with the measurement.
    std::thread::sleep(Duration::from_secs(6));
    agent()
        .post(format!("{}/storage/v1/b?project=bench", s.url))
        .send_json(serde_json::json!({"name": "bench"}))
        .unwrap();
    streams_and_small_ops(&s, &want, "");
    if want("xml") {
        xml_api(&s, "");
    }
    if want("listing") {
        listing(&s);
    }
    if want("rekey") {
        rekey(&s);
    }
    if want("memory") {
        memory(&s);
    }
}

/// `--auth token` and a CMEK default key: what a production gateway does per request.
fn production(database: Option<String>) {
    let mut args = vec!["--auth", "token", "--auto-grant-service-agent"];
    if let Some(url) = &database {
        args.extend(["--database", url.as_str()]);
    }
    let mut s = Server::start(&args);
    std::thread::sleep(Duration::from_secs(6));
    s.auth = Some(s.create_token("user:bench@example.com", "bench", "roles/owner"));
    let ring = "/v1/projects/bench/locations/us/keyRings";
    s.post_json(&format!("{ring}?keyRingId=prod"), serde_json::json!({}));
    s.post_json(
        &format!("{ring}/prod/cryptoKeys?cryptoKeyId=k"),
        serde_json::json!({"purpose": "ENCRYPT_DECRYPT"}),
    );
    s.post_json(
        "/storage/v1/b?project=bench",
        serde_json::json!({"name": "bench", "encryption": {"defaultKmsKeyName": "projects/bench/locations/us/keyRings/prod/cryptoKeys/k"}}),
    );
    let label = if database.is_some() {
        " [token+CMEK, PostgreSQL]"
    } else {
        " [token+CMEK]"
    };
    streams_and_small_ops(&s, &|_: &str| true, label);
    // The XML face in the same shape: every request signed, every object under CMEK.
    xml_api(&s, " [token+CMEK; the first JSON column is the owner's token]");
    // A scraper's own token: viewer on the server's project grants sealstore.metrics.get.
    s.auth = Some(s.create_token("serviceAccount:prometheus@example.com", "_sealstore", "roles/viewer"));
    let metrics = s.get_text("/metrics");
    let series = [
        "sealstore_http_requests_total",
        "sealstore_http_request_duration_seconds",
        "sealstore_http_request_bytes_total",
        "sealstore_http_response_bytes_total",
        "sealstore_kms_operations_total",
        "sealstore_metadata_commit_batch_size",
        "sealstore_metadata_commit_seconds",
        "sealstore_connections_open",
    ];
    println!("/metrics after the token+CMEK run:");
    for name in series {
        let lines: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.contains("_bucket{"))
            .collect();
        for l in lines.iter().take(4) {
            println!("  {l}");
        }
        if lines.is_empty() {
            println!("  {name}: MISSING");
        }
    }
}

fn streams_and_small_ops(s: &Server, want: &dyn Fn(&str) -> bool, label: &str) {
    if want("stream") {
        let size = 256u64 << 20;
        let ceiling = md5_ceiling(size as usize);
        let up = upload(s, "big", size, &pattern());
        let down = download(s, "big");
        println!("single-core MD5 (md-5):              {ceiling:>8.0} MB/s  (ceiling for one upload stream)");
        println!(
            "upload 256 MiB, one stream:          {up:>8.0} MB/s  = {:.2}x MD5 (target >= 0.8x){label}",
            up / ceiling
        );
        println!("download 256 MiB, one stream:        {down:>8.0} MB/s  (target >= 1000 MB/s){label}");
    }
    if want("small") {
        let put = small_ops(s, true, 5.0);
        let get = small_ops(s, false, 5.0);
        println!("4 KiB PUT, 16 clients:               {put:>8.0} ops/s (target >= 3000/s){label}");
        println!("4 KiB GET, 16 clients:               {get:>8.0} ops/s (target >= 8000/s){label}");
    }
}

/// SigV4 headers for one S3 request (the client side, written here from the AWS
/// document with aws-lc-rs): `Authorization`, `x-amz-date`, `x-amz-content-sha256`.
fn sigv4(host: &str, method: &str, path: &str, payload: &str, id: &str, secret: &str) -> String {
    use aws_lc_rs::{digest, hmac};
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let now = chrono::Utc::now();
    let (date, day) = (
        now.format("%Y%m%dT%H%M%SZ").to_string(),
        now.format("%Y%m%d").to_string(),
    );
    let canonical = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{date}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}"
    );
    let scope = format!("{day}/us-east-1/s3/aws4_request");
    let sts = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut k = format!("AWS4{secret}").into_bytes();
    for part in [day.as_str(), "us-east-1", "s3", "aws4_request", sts.as_str()] {
        k = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k), part.as_bytes())
            .as_ref()
            .to_vec();
    }
    format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={id}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}\r\nx-amz-date: {date}\r\nx-amz-content-sha256: {payload}\r\n",
        hex(&k)
    )
}

/// The XML API against the JSON API on the same server: 4 KiB PutObject/GetObject at
/// 16 clients and a 256 MiB PutObject/GetObject, every request SigV4-signed with an HMAC
/// key (4 KiB bodies with their SHA-256 signed, as boto3 sends them over http).
fn xml_api(s: &Server, label: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(["iam", "hmac-keys", "create", "--data-dir"])
        .arg(&s.dir)
        .args([
            "--service-account",
            "bench@bench.iam.gserviceaccount.com",
            "--project",
            "bench",
        ])
        .args(["--role", "roles/storage.admin"])
        .args(s.database.iter().flat_map(|d| ["--database", d.as_str()]))
        .output()
        .expect("create HMAC key");
    let text = String::from_utf8(out.stdout).unwrap();
    let (id, secret) = text.trim().split_once('\t').expect("access id and secret");
    let (id, secret) = (id.to_owned(), secret.to_owned());
    let host = s.url.trim_start_matches("http://").to_owned();
    let body = vec![7u8; 4096];
    let body_hash = {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        d.as_ref().iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    let run = |put: bool| {
        let done = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (url, host, id, secret, body, hash, done) = (
                    s.url.clone(),
                    host.clone(),
                    id.clone(),
                    secret.clone(),
                    body.clone(),
                    body_hash.clone(),
                    done.clone(),
                );
                std::thread::spawn(move || {
                    let mut c = Raw::connect(&url, None);
                    let mut i = 0;
                    while Instant::now() < deadline {
                        let (status, _) = if put {
                            let path = format!("/bench/xml-{t}-{i}");
                            let h = sigv4(&host, "PUT", &path, &hash, &id, &secret);
                            c.request_h("PUT", &path, &h, &body, 4096)
                        } else {
                            let path = format!("/bench/xml-{t}-{}", i % 50);
                            let h = sigv4(&host, "GET", &path, "UNSIGNED-PAYLOAD", &id, &secret);
                            c.request_h("GET", &path, &h, &[], 0)
                        };
                        assert_eq!(status, 200);
                        i += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        done.load(Ordering::Relaxed) as f64 / 5.0
    };
    // The JSON API as the dev user (no IAM), and as a caller with the same role as the
    // HMAC key's service account (a bearer token: the same IAM checks).
    let token = Some(s.create_token("user:bench-json@example.com", "bench", "roles/storage.admin"));
    let json_put = small_ops(s, true, 5.0);
    let token_put = small_ops_as(s, token.clone(), true, 5.0);
    let xml_put = run(true);
    let json_get = small_ops(s, false, 5.0);
    let token_get = small_ops_as(s, token, false, 5.0);
    let xml_get = run(false);
    for (op, json, token, xml) in [
        ("PUT", json_put, token_put, xml_put),
        ("GET", json_get, token_get, xml_get),
    ] {
        println!(
            "4 KiB {op}, 16 clients: JSON dev {json:>6.0}/s, JSON token {token:>6.0}/s, XML SigV4 {xml:>6.0}/s = {:.2}x dev, {:.2}x token (target >= 0.9x){label}",
            xml / json,
            xml / token
        );
    }
    let size = 256u64 << 20;
    let data = pattern();
    let json_up = upload(s, "xml-cmp", size, &data);
    let json_down = download(s, "xml-cmp");
    let mut c = Raw::connect(&s.url, None);
    let h = sigv4(&host, "PUT", "/bench/xml-big", "UNSIGNED-PAYLOAD", &id, &secret);
    let t = Instant::now();
    assert_eq!(c.request_h("PUT", "/bench/xml-big", &h, &data, size).0, 200);
    let xml_up = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    let h = sigv4(&host, "GET", "/bench/xml-big", "UNSIGNED-PAYLOAD", &id, &secret);
    let t = Instant::now();
    let (status, n) = c.request_h("GET", "/bench/xml-big", &h, &[], 0);
    assert_eq!(status, 200);
    let xml_down = n as f64 / t.elapsed().as_secs_f64() / 1e6;
    // The body's SHA-256 signed too (what boto3 sends over http): hashed by the server.
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for _ in 0..size / data.len() as u64 {
        ctx.update(&data);
    }
    let full: String = ctx.finish().as_ref().iter().map(|x| format!("{x:02x}")).collect();
    let h = sigv4(&host, "PUT", "/bench/xml-big2", &full, &id, &secret);
    let t = Instant::now();
    assert_eq!(c.request_h("PUT", "/bench/xml-big2", &h, &data, size).0, 200);
    let xml_up_signed = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    println!(
        "256 MiB PUT with its SHA-256 signed: XML {xml_up_signed:>6.0} MB/s = {:.2}x JSON",
        xml_up_signed / json_up
    );
    println!(
        "256 MiB PUT: JSON {json_up:>6.0} MB/s, XML {xml_up:>6.0} MB/s = {:.2}x; GET: JSON {json_down:>6.0} MB/s, XML {xml_down:>6.0} MB/s = {:.2}x",
        xml_up / json_up,
        xml_down / json_down
    );
}

/// A `delimiter=/` listing at the root of a bucket whose names spread over 100
/// prefixes, as the bucket grows: it must skip each prefix, not walk the names under it.
fn listing(s: &Server) {
    agent()
        .post(format!("{}/storage/v1/b?project=bench", s.url))
        .send_json(serde_json::json!({"name": "lst"}))
        .unwrap();
    // Writes names `first..first + count` (spread over 100 prefixes) from 16 clients;
    // returns PUTs per second.
    let fill = |first: usize, count: usize| {
        let per_thread = count / 16;
        let started = Instant::now();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let url = s.url.clone();
                std::thread::spawn(move || {
                    let mut c = Raw::connect(&url, None);
                    for i in 0..per_thread {
                        let n = first + t * per_thread + i;
                        let path = format!(
                            "/upload/storage/v1/b/lst/o?uploadType=media&name=p{:03}/o{n:07}",
                            n % 100
                        );
                        assert_eq!(c.request("POST", &path, b"x", 1).0, 200);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        (
            per_thread * 16,
            (per_thread * 16) as f64 / started.elapsed().as_secs_f64(),
        )
    };
    let stages: Vec<usize> = std::env::var("BENCH_LISTING_STAGES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![17_000, 100_000]);
    let mut have = 0usize;
    let mut first_rate = None;
    for total in stages {
        // The last 10,000 names of each stage are timed: the PUT rate at that size.
        let untimed = total.saturating_sub(have + 10_000);
        have += fill(have, untimed).0;
        let (n, rate) = fill(have, total.saturating_sub(have));
        have += n;
        let base = *first_rate.get_or_insert(rate);
        println!(
            "1-byte PUT, 16 clients, names {:>7}..{have:>7}: {rate:>8.0}/s = {:.2}x the first stage (target >= 0.9x)",
            have - n,
            rate / base
        );
        let mut c = Raw::connect(&s.url, None);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let (status, _) = c.request("GET", "/storage/v1/b/lst/o?delimiter=/", &[], 0);
            assert_eq!(status, 200);
            best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        }
        println!("delimiter=/ listing at the root, 100 prefixes, {have:>7} objects: {best:>6.1} ms (target < 50 ms)");
    }
}

fn memory(s: &Server) {
    {
        let idle = s.rss_kib("VmRSS:");
        let peak_before = s.rss_kib("VmHWM:");
        let watcher = {
            let pid = s.child.id();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let max = Arc::new(AtomicUsize::new(0));
            let (stop2, max2) = (stop.clone(), max.clone());
            let h = std::thread::spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    if let Some(v) = status
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<usize>().ok())
                    {
                        max2.fetch_max(v, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            (stop, max, h)
        };
        let mbps = upload(s, "huge", 1 << 30, &pattern());
        watcher.0.store(true, Ordering::Relaxed);
        watcher.2.join().unwrap();
        let peak = watcher.1.load(Ordering::Relaxed) as u64;
        println!(
            "1 GiB upload: {mbps:.0} MB/s; RSS idle {} MiB, peak during upload {} MiB: +{} MiB (target <= +64 MiB; VmHWM before {} MiB)",
            idle / 1024,
            peak / 1024,
            peak.saturating_sub(idle) / 1024,
            peak_before / 1024
        );
    }
}

/// 4 KiB PUT and GET with every store in PostgreSQL (a throwaway cluster, fsync and
/// synchronous commit on) against SQLite, in one run; then the production shape on
/// PostgreSQL.
fn postgres_vs_sqlite() {
    let mut figures = vec![];
    for (label, database) in [
        ("SQLite", None),
        ("PostgreSQL", Some(sealstore_testpg::fresh_database())),
    ] {
        let extra: Vec<&str> = match &database {
            Some(url) => vec!["--database", url.as_str()],
            None => vec![],
        };
        let s = Server::start(&extra);
        std::thread::sleep(Duration::from_secs(6));
        agent()
            .post(format!("{}/storage/v1/b?project=bench", s.url))
            .send_json(serde_json::json!({"name": "bench"}))
            .unwrap();
        let put = small_ops(&s, true, 5.0);
        let get = small_ops(&s, false, 5.0);
        println!("4 KiB PUT, 16 clients, {label:<10}   {put:>8.0} ops/s");
        println!("4 KiB GET, 16 clients, {label:<10}   {get:>8.0} ops/s");
        figures.push((put, get));
    }
    let ((sp, sg), (pp, pg)) = (figures[0], figures[1]);
    println!(
        "PostgreSQL / SQLite:                 PUT {:.2}x, GET {:.2}x (target PUT >= 2000/s on PostgreSQL)",
        pp / sp,
        pg / sg
    );
}
