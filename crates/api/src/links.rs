//! The base URL of the links the API returns (`Location`, `selfLink`, `mediaLink`).
//!
//! A `Host` header is the client's to write: trusting it would let a forged one send a
//! client (and its upload session) elsewhere. It is honoured only when it names this
//! server: the `--public-url` authority, or the address the connection came in on
//! (with `localhost`/`127.0.0.1`/`[::1]` as aliases of a loopback address). Otherwise
//! links use `--public-url`, or failing that the connection's own address.

use std::net::SocketAddr;

#[derive(Clone, Debug, Default)]
pub struct Links {
    /// `--public-url` without a trailing slash, e.g. `https://storage.example.com`.
    pub public_url: Option<String>,
    /// Its `host[:port]`, lowercased, with the port its scheme implies made explicit.
    public_authority: Option<String>,
}

impl Links {
    /// Validates `--public-url` (`http(s)://host[:port][/path]`, no query).
    pub fn new(public_url: Option<&str>) -> Result<Self, String> {
        let Some(raw) = public_url else {
            return Ok(Self::default());
        };
        let url = raw.trim_end_matches('/');
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("--public-url {raw:?} is not an http(s) URL"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("--public-url {raw:?} must start with http:// or https://"));
        }
        if rest.contains(['?', '#', '@']) {
            return Err(format!("--public-url {raw:?} must not carry a query, fragment or user"));
        }
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() {
            return Err(format!("--public-url {raw:?} has no host"));
        }
        Ok(Self {
            public_url: Some(url.to_owned()),
            public_authority: Some(with_port(&authority.to_ascii_lowercase(), default_port(scheme))),
        })
    }

    /// The base for links in a response to a request with `host` that arrived on
    /// `local` over `scheme`.
    pub fn base(&self, scheme: &str, host: Option<&str>, local: Option<SocketAddr>) -> String {
        if let Some(h) = host {
            let h_full = with_port(&h.to_ascii_lowercase(), default_port(scheme));
            if let (Some(p), Some(a)) = (&self.public_url, &self.public_authority)
                && *a == h_full
            {
                // The public URL may carry a path prefix the Host does not.
                return p.clone();
            }
            if self.host_is_ours(h, scheme, local) {
                return format!("{scheme}://{h}");
            }
        }
        if let Some(p) = &self.public_url {
            return p.clone();
        }
        match local {
            Some(a) => format!("{scheme}://{a}"),
            None => format!("{scheme}://127.0.0.1"),
        }
    }

    fn host_is_ours(&self, host: &str, scheme: &str, local: Option<SocketAddr>) -> bool {
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) {
            return false;
        }
        let host = with_port(&host.to_ascii_lowercase(), default_port(scheme));
        if self.public_authority.as_deref() == Some(host.as_str()) {
            return true;
        }
        let Some(local) = local else { return false };
        if host == local.to_string() {
            return true;
        }
        let port = local.port();
        local.ip().is_loopback()
            && [
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]
            .contains(&host)
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// `host` with an explicit port (`[v6]`, `name` or `v4` without one get `port`).
fn with_port(host: &str, port: u16) -> String {
    let has_port = match host.rfind(']') {
        Some(i) => host[i..].contains(':'),
        None => host.contains(':'),
    };
    if has_port {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forged_hosts_are_ignored() {
        let l = Links::new(None).unwrap();
        let local = addr("127.0.0.1:8080");
        assert_eq!(l.base("http", Some("evil.example.com"), local), "http://127.0.0.1:8080");
        assert_eq!(l.base("http", Some("127.0.0.1:9999"), local), "http://127.0.0.1:8080");
        assert_eq!(l.base("http", Some("localhost:8080"), local), "http://localhost:8080");
        assert_eq!(l.base("http", Some("[::1]:8080"), local), "http://[::1]:8080");
        assert_eq!(l.base("http", None, local), "http://127.0.0.1:8080");
        // Loopback aliases do not apply to a public address.
        let public = addr("10.0.0.5:8080");
        assert_eq!(l.base("http", Some("localhost:8080"), public), "http://10.0.0.5:8080");
        assert_eq!(l.base("http", Some("10.0.0.5:8080"), public), "http://10.0.0.5:8080");
    }

    #[test]
    fn public_url_wins_over_unknown_hosts() {
        let l = Links::new(Some("https://Storage.Example.com/")).unwrap();
        let local = addr("10.0.0.5:8443");
        assert_eq!(l.base("https", Some("evil:1"), local), "https://Storage.Example.com");
        assert_eq!(
            l.base("https", Some("storage.example.com"), local),
            "https://Storage.Example.com"
        );
        assert_eq!(
            l.base("https", Some("storage.example.com:443"), local),
            "https://Storage.Example.com"
        );
        let l = Links::new(Some("https://gw.example.com/sealstore")).unwrap();
        assert_eq!(
            l.base("https", Some("gw.example.com"), local),
            "https://gw.example.com/sealstore"
        );
        assert!(Links::new(Some("ftp://x")).is_err());
        assert!(Links::new(Some("https://x/?q")).is_err());
        assert!(Links::new(Some("https://")).is_err());
    }
}
