//! The audit log: one JSON line per security-relevant event (key use, state change,
//! IAM change, denied request), appended under the data dir and optionally to stdout.
//! Only names and outcomes are recorded: never key material, plaintext or tokens.

use chrono::{DateTime, Utc};
use std::io::Write;
use std::sync::Mutex;

/// One audit line. Fields in alphabetical order, as the records have always been written.
#[derive(serde::Serialize)]
struct Record<'a> {
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    outcome: &'a str,
    permission: &'a str,
    principal: &'a str,
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    resource: &'a str,
    time: String,
}

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
        if self.file.is_none() && !self.stdout {
            return;
        }
        let request_id = crate::request_id::current();
        let record = Record {
            method,
            node: self.node.as_deref(),
            outcome,
            permission,
            principal,
            // Background work (scheduled destruction, rotation) has no request.
            request_id: request_id.as_deref(),
            resource,
            time: time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let mut line = match serde_json::to_vec(&record) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "could not encode an audit record");
                return;
            }
        };
        line.push(b'\n');
        if let Some(f) = &self.file {
            // One write per record: with O_APPEND it lands whole, and a GET's key use
            // costs one system call, not one per formatted piece.
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_all(&line) {
                tracing::error!(error = %e, "could not write the audit log");
            }
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_per_record_owner_only() {
        let dir = std::env::temp_dir().join(format!("sealstore-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        let log = AuditLog::open(&path, false).unwrap().with_node("gw-a");
        let t = DateTime::parse_from_rfc3339("2026-12-04T10:00:00.5Z").unwrap().to_utc();
        log.record(t, "user:a@example.com", "Encrypt", "projects/p/k\"1", "perm", "OK");
        log.record(t, "system:sealstore", "rotate", "r", "", "DENIED");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({"method": "Encrypt", "node": "gw-a", "outcome": "OK", "permission": "perm",
                "principal": "user:a@example.com", "resource": "projects/p/k\"1", "time": "2026-12-04T10:00:00.500Z"})
        );
        assert_eq!(lines[1]["outcome"], "DENIED");
        assert!(text.ends_with('\n'));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
