//! A throwaway PostgreSQL cluster for tests, started once per test process with
//! `initdb` and `pg_ctl` from Debian's `postgresql` package: in a temp dir, on a free
//! loopback port, with fsync on. Tests never use a system service; owning the cluster is
//! what lets fault tests stop it.
//!
//! Each caller gets a database of its own (`fresh_database`), so tests run in parallel
//! without seeing each other's rows.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    /// A shell that waits on a pipe from us and stops the cluster when the pipe closes,
    /// which happens however this process ends (test harnesses skip static destructors).
    _watchdog: Mutex<Child>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The cluster of this process, started on first use.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!("cannot start the test PostgreSQL cluster: {e}"),
    }
}

/// A new, empty database on the cluster: its `postgres://` URL.
pub fn fresh_database() -> String {
    let c = cluster();
    let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    c.psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    format!("postgres://postgres@127.0.0.1:{}/{name}", c.port)
}

impl Cluster {
    /// Runs one statement through `psql` (test setup and fault injection).
    pub fn psql(&self, db: &str, sql: &str) -> Result<(), String> {
        let out = as_postgres(&self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `pg_ctl stop` or `start` on the cluster (for fault tests).
    pub fn pg_ctl(&self, action: &str) -> Result<(), String> {
        let log = self.dir.join("server.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.display()
        );
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(self.dir.join("data")).args(["-w", "-m", "fast"]);
        if action == "start" {
            cmd.args(["-o", &opts]).arg("-l").arg(&log);
        }
        let out = cmd.arg(action).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            Err(format!("{}{log}", String::from_utf8_lossy(&out.stderr)))
        }
    }
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("SEALSTORE_PG_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL server binaries not found: install Debian's postgresql package (tests/run.sh does)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb".to_owned())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: as root, its tools run as the `postgres` user.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir()?;
    let dir = std::env::temp_dir().join(format!("sealstore-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if is_root() {
        let ok = Command::new("chown")
            .arg("postgres:")
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        if !ok.success() {
            return Err(format!("chown postgres {}", dir.display()));
        }
    }
    let out = as_postgres(&bin.join("initdb"))
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
    }
    // Several test binaries may start clusters at once: retry on a port taken between
    // probing and listening.
    let watchdog = Mutex::new(watchdog(&bin, &dir)?);
    let mut c = Cluster {
        port: 0,
        dir,
        bin,
        _watchdog: watchdog,
    };
    let mut last = String::new();
    for _ in 0..5 {
        c.port = free_port()?;
        match c.pg_ctl("start") {
            Ok(()) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn watchdog(bin: &Path, dir: &Path) -> Result<Child, String> {
    let script = format!(
        "cat >/dev/null; {} -D '{}' -m immediate stop >/dev/null 2>&1; rm -rf '{}'",
        bin.join("pg_ctl").display(),
        dir.join("data").display(),
        dir.display()
    );
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Nothing is ever written; the pipe only has to stay open while we live.
    let _ = child.stdin.as_mut().map(|s| s.flush());
    Ok(child)
}
