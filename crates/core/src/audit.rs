//! The audit log: one JSON line per security-relevant event (key use, state change,
//! IAM change, denied request), appended under the data dir and optionally to stdout.
//! Only names and outcomes are recorded: never key material, plaintext or tokens.

use chrono::{DateTime, Utc};
use std::io::Write;
use std::sync::Mutex;

pub struct AuditLog {
    file: Option<Mutex<std::fs::File>>,
    stdout: bool,
    /// `--node-id`: which gateway wrote the record, when several share one database.
    node: Option<String>,
}

impl AuditLog {
    pub fn open(path: &std::path::Path, stdout: bool) -> std::io::Result<Self> {
        // Audit records name principals and resources: owner-only, like the database.
        let file =
            std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().create(true).append(true), 0o600)
                .open(path)?;
        Ok(Self {
            file: Some(Mutex::new(file)),
            stdout,
            node: None,
        })
    }

    /// Names this gateway in every record (`"node"`).
    pub fn with_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    /// An audit log that records nothing (benchmarks).
    pub fn disabled() -> Self {
        Self {
            file: None,
            stdout: false,
            node: None,
        }
    }

    pub fn record(
        &self,
        time: DateTime<Utc>,
        principal: &str,
        method: &str,
        resource: &str,
        permission: &str,
        outcome: &str,
    ) {
        let mut line = serde_json::json!({
            "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "principal": principal,
            "method": method,
            "resource": resource,
            "permission": permission,
            "outcome": outcome,
        });
        if let Some(node) = &self.node {
            line["node"] = serde_json::Value::String(node.clone());
        }
        // Background work (scheduled destruction, rotation) has no request.
        if let Some(id) = crate::request_id::current() {
            line["requestId"] = serde_json::Value::String(id.to_string());
        }
        let line = line.to_string();
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = writeln!(f, "{line}") {
                tracing::error!(error = %e, "could not write the audit log");
            }
        }
        if self.stdout {
            println!("{line}");
        }
    }
}
