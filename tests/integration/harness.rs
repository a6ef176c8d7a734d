//! Starts and stops a `sealstore serve` process for a test.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sealstore-it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Server {
    pub fn start(args: &[&str]) -> Self {
        let dir = temp_dir("srv");
        let mut s = Self {
            child: None,
            url: String::new(),
            dir,
            log: Arc::default(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealstore"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--addr", "127.0.0.1:0"])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("SEALSTORE_ROOT_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sealstore");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line
                    .find("listening on http://")
                    .or_else(|| line.find("listening on https://"))
                {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_owned());
                }
                log.lock().unwrap().push(line);
            }
        });
        self.url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not report its address");
        self.child = Some(child);
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), "TERM");
        for _ in 0..100 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.kill().unwrap();
        panic!("server did not stop on SIGTERM within 10 s");
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts the server again on the same data dir after `kill9`.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn restart(&mut self) {
        assert!(self.stop().success());
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        request(&self.url, "GET", path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        request(&self.url, "POST", path, Some(body))
    }

    pub fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        request(&self.url, "PATCH", path, Some(body))
    }

    pub fn advance(&self, seconds: i64) {
        let (status, body) = self.post("/sealstore/v1/clock:advance", serde_json::json!({"seconds": seconds}));
        assert_eq!(status, 200, "{body}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

pub fn request(base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("{base}{path}");
    let resp = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("PATCH", Some(b)) => agent.patch(&url).send_json(b),
        (_, Some(b)) => agent.post(&url).send_json(b),
        (_, None) => agent.post(&url).send_empty(),
    };
    let mut resp = resp.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Every file under `dir`, read whole.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A raw HTTP exchange: status, response headers and body bytes.
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub fn raw(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Raw {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent();
    let uri = format!("{base}{path}");
    let mut req = ureq::http::Request::builder().method(method).uri(&uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.to_vec()).unwrap();
    let mut resp = agent.run(req).expect("HTTP request");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 31)
        .read_to_vec()
        .unwrap_or_default();
    Raw { status, headers, body }
}
