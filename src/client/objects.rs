//! `sealstore objects find`: lists the generations a key protects (through the ops API's
//! indexed query), so they can be rewritten before the key is disabled or destroyed.

use super::http::Client;
use clap::Args;
use serde_json::{Value, json};

#[derive(Args)]
pub struct FindArgs {
    #[arg(long, env = "SEALSTORE_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    pub endpoint: String,
    #[arg(long, env = "SEALSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long)]
    pub bucket: String,
    /// The unversioned KMS key name.
    #[arg(long, required_unless_present = "csek_sha256")]
    pub key: Option<String>,
    /// Only this version of `--key`.
    #[arg(long, requires = "key")]
    pub key_version: Option<u32>,
    /// Objects under the customer-supplied key with this base64 SHA-256.
    #[arg(long, conflicts_with = "key")]
    pub csek_sha256: Option<String>,
}

/// Everything but RFC 3986's unreserved characters is escaped, `/` included, as the
/// Python client quotes a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

pub fn find(args: FindArgs) -> anyhow::Result<Value> {
    let c = Client::new(&args.endpoint, args.token.clone());
    let mut query = match (&args.key, args.key_version, &args.csek_sha256) {
        (Some(k), None, _) => format!("kmsKeyName={}", enc(k)),
        (Some(k), Some(v), _) => format!("kmsKeyName={}&keyVersion={v}", enc(k)),
        (None, _, Some(h)) => format!("csekSha256={}", enc(h)),
        _ => anyhow::bail!("give --key or --csek-sha256"),
    };
    let base = format!("/sealstore/v1/b/{}/objectsByKey?", enc(&args.bucket));
    let mut items = vec![];
    loop {
        let page = c.get(&format!("{base}{query}"))?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["nextPageToken"].as_str() {
            Some(t) => {
                query = format!(
                    "{}&pageToken={}",
                    query.split("&pageToken=").next().unwrap_or(""),
                    enc(t)
                );
            }
            None => break,
        }
    }
    Ok(json!({"items": items}))
}
