//! `sealstore rekey`: starts a re-key job, shows its progress, prints the final report.

use super::http::Client;
use clap::Args;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Args)]
pub struct RekeyArgs {
    #[arg(long, env = "SEALSTORE_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    pub endpoint: String,
    #[arg(long, env = "SEALSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long, env = "SEALSTORE_PROJECT", default_value = "default")]
    pub project: String,
    #[arg(long)]
    pub bucket: String,
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Target key (its primary version); or --to-google-managed.
    #[arg(long, required_unless_present = "to_google_managed")]
    pub to_key: Option<String>,
    #[arg(long, conflicts_with = "to_key")]
    pub to_google_managed: bool,
    /// Only objects under any version of this key.
    #[arg(long, conflicts_with_all = ["from_version", "all_but_primary_of"])]
    pub from_key: Option<String>,
    /// Only objects under these versions (full names; repeatable).
    #[arg(long)]
    pub from_version: Vec<String>,
    /// Only objects under non-primary versions of this key.
    #[arg(long, conflicts_with = "from_version")]
    pub all_but_primary_of: Option<String>,
    /// rewrite (new DEK, data re-encrypted) or rewrap (DEK re-wrapped, metadata only).
    #[arg(long, default_value = "rewrite")]
    pub mode: String,
    /// Print the final job as JSON only (no progress bar).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: RekeyArgs) -> anyhow::Result<Value> {
    let c = Client::new(&a.endpoint, a.token.clone());
    let mut body = json!({"bucket": a.bucket, "prefix": a.prefix, "mode": a.mode});
    body["to"] = match &a.to_key {
        Some(k) => json!({"kmsKeyName": k}),
        None => json!({"googleManaged": true}),
    };
    if let Some(k) = &a.from_key {
        body["from"] = json!({"kmsKeyName": k});
    } else if !a.from_version.is_empty() {
        body["from"] = json!({"kmsKeyVersions": a.from_version});
    } else if let Some(k) = &a.all_but_primary_of {
        body["from"] = json!({"allButPrimaryOf": k});
    }
    let job = c.send(
        "POST",
        &format!("/sealstore/v1/projects/{}/rekeyJobs", a.project),
        &body,
    )?;
    let name = job["name"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the server returned no job name"))?
        .to_owned();
    let bar = (!a.json).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    loop {
        let job = c.get(&format!("/sealstore/v1/{name}"))?;
        let n = |k: &str| job["counters"][k].as_u64().unwrap_or(0);
        if let Some(b) = &bar {
            b.set_message(format!(
                "{name}: {} scanned, {} rewritten, {} skipped, {} failed, {} bytes",
                n("scanned"),
                n("rewritten"),
                n("skipped"),
                n("failed"),
                indicatif::HumanBytes(n("bytes"))
            ));
        }
        if job["state"] != "RUNNING" {
            if let Some(b) = bar {
                b.finish_and_clear();
                eprintln!(
                    "{name}: {} — scanned {}, rewritten {}, skipped {} {}, failed {}",
                    job["state"].as_str().unwrap_or("?"),
                    n("scanned"),
                    n("rewritten"),
                    n("skipped"),
                    job["skipped"],
                    n("failed")
                );
            }
            return Ok(job);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
