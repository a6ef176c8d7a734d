//! A small JSON-over-HTTP client for the CLI: Google error bodies become readable errors.

use anyhow::{Context, bail};
use serde_json::Value;

pub struct Client {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
}

impl Client {
    pub fn new(endpoint: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Self {
            agent,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut req = self.agent.get(format!("{}{path}", self.endpoint));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Self::finish(req.call(), path)
    }

    pub fn send(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.endpoint);
        let mut req = match method {
            "PATCH" => self.agent.patch(url),
            _ => self.agent.post(url),
        };
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Self::finish(req.send_json(body), path)
    }

    fn finish(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>, path: &str) -> anyhow::Result<Value> {
        let mut resp = resp.with_context(|| format!("request to {path} failed"))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().context("reading the response")?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = json["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| json.to_string());
            let code = json["error"]["status"].as_str().unwrap_or("");
            bail!("{} {code}: {msg}", status.as_u16());
        }
        Ok(json)
    }
}
