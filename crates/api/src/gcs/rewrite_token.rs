//! Rewrite tokens: what a multi-call `objects.rewrite` hands back to the client. The
//! token is JSON authenticated with HMAC-SHA256 under a root-derived key, so a client can
//! neither point it at another upload session nor change the source generation or the
//! destination parameters it is bound to.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct RewriteTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for RewriteTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RewriteTokens(<redacted>)")
    }
}

impl RewriteTokens {
    pub fn new(root: &sealstore_core::rootkey::RootKey) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &root.derive(b"sealstore rewrite tokens v1")[..]),
        }
    }

    /// `base64url(json) "." base64url(tag)`.
    pub fn seal<T: Serialize>(&self, value: &T) -> serde_json::Result<String> {
        let body = serde_json::to_vec(value)?;
        let tag = hmac::sign(&self.key, &body);
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }

    /// The token's contents, or `None` if it is malformed or its tag does not verify
    /// (checked in constant time before anything is parsed).
    pub fn open<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let (body, tag) = token.split_once('.')?;
        let body = URL_SAFE_NO_PAD.decode(body).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, &body, &tag).ok()?;
        serde_json::from_slice(&body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let t = RewriteTokens::new(&sealstore_core::rootkey::RootKey::generate());
        let sealed = t.seal(&("session-1", 42i64)).unwrap();
        assert_eq!(t.open::<(String, i64)>(&sealed), Some(("session-1".into(), 42)));
        // Another body under the old tag, a truncated tag, another key: all refused.
        let (_, tag) = sealed.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(br#"["session-2",42]"#));
        assert_eq!(t.open::<(String, i64)>(&forged), None);
        assert_eq!(t.open::<(String, i64)>(&sealed[..sealed.len() - 2]), None);
        let other = RewriteTokens::new(&sealstore_core::rootkey::RootKey::generate());
        assert_eq!(other.open::<(String, i64)>(&sealed), None);
        assert_eq!(t.open::<(String, i64)>("garbage"), None);
    }
}
