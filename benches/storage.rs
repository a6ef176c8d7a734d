//! Storage benchmarks (`cargo bench --bench storage`). Prints figures; asserts nothing.
//! Runs the release server binary on loopback and measures, in one run:
//! - single-stream upload and download of a 256 MiB object, against the single-core
//!   MD5 throughput (the ceiling for one upload stream);
//! - 4 KiB PUT and GET operations per second with 16 concurrent clients;
//! - peak RSS growth of the server during a 1 GiB upload.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Server {
    child: std::process::Child,
    url: String,
    dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("sealstore-bench-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealstore"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .args(
                std::env::var("BENCH_BLOB_STORE")
                    .map(|b| vec!["--blob-store".to_owned(), b])
                    .unwrap_or_default(),
            )
            .env("RUST_LOG", "warn,sealstore=info")
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
        Self { child, url, dir }
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

/// A reader producing `len` bytes by cycling through 16 MiB of random data, so the
/// client spends almost no CPU (it shares the two cores with the server).
struct Gen {
    left: u64,
    pos: usize,
    data: Arc<Vec<u8>>,
}

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

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64)
            .min(self.left)
            .min((self.data.len() - self.pos) as u64) as usize;
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.data.len();
        self.left -= n as u64;
        Ok(n)
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
    let t = Instant::now();
    agent()
        .post(format!(
            "{}/upload/storage/v1/b/bench/o?uploadType=media&name={name}",
            s.url
        ))
        .header("content-type", "application/octet-stream")
        .send(ureq::SendBody::from_reader(&mut Gen {
            left: len,
            pos: 0,
            data: data.clone(),
        }))
        .expect("upload");
    len as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn download(s: &Server, name: &str) -> f64 {
    let t = Instant::now();
    let mut resp = agent()
        .get(format!("{}/download/storage/v1/b/bench/o/{name}?alt=media", s.url))
        .call()
        .expect("download");
    let mut r = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    n as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn small_ops(s: &Server, put: bool, seconds: f64) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (url, done) = (s.url.clone(), done.clone());
            std::thread::spawn(move || {
                let a = agent();
                let body = vec![7u8; 4096];
                let mut i = 0;
                while Instant::now() < deadline {
                    if put {
                        a.post(format!(
                            "{url}/upload/storage/v1/b/bench/o?uploadType=media&name=small-{t}-{i}"
                        ))
                        .header("content-type", "application/octet-stream")
                        .send(&body[..])
                        .expect("put");
                    } else {
                        let mut r = a
                            .get(format!(
                                "{url}/download/storage/v1/b/bench/o/small-{t}-{}?alt=media",
                                i % 50
                            ))
                            .call()
                            .expect("get");
                        let _ = r.body_mut().read_to_vec().unwrap();
                    }
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

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |s: &str| filter.is_empty() || filter.iter().any(|f| s.contains(f.as_str()));
    let s = Server::start();
    // Let the server finish start-up work (it pre-generates RSA import-job keys in the
    // background) so it does not compete with the measurement.
    std::thread::sleep(Duration::from_secs(6));
    agent()
        .post(format!("{}/storage/v1/b?project=bench", s.url))
        .send_json(serde_json::json!({"name": "bench"}))
        .unwrap();
    if want("stream") {
        let size = 256u64 << 20;
        let ceiling = md5_ceiling(size as usize);
        let up = upload(&s, "big", size, &pattern());
        let down = download(&s, "big");
        println!("single-core MD5 (md-5):              {ceiling:>8.0} MB/s  (ceiling for one upload stream)");
        println!(
            "upload 256 MiB, one stream:          {up:>8.0} MB/s  = {:.2}x MD5 (target >= 0.8x)",
            up / ceiling
        );
        println!("download 256 MiB, one stream:        {down:>8.0} MB/s  (target >= 1000 MB/s)");
    }
    if want("small") {
        let put = small_ops(&s, true, 5.0);
        let get = small_ops(&s, false, 5.0);
        println!("4 KiB PUT, 16 clients:               {put:>8.0} ops/s (target >= 3000/s)");
        println!("4 KiB GET, 16 clients:               {get:>8.0} ops/s (target >= 8000/s)");
    }
    if want("memory") {
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
        let mbps = upload(&s, "huge", 1 << 30, &pattern());
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
