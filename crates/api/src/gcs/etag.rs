//! HTTP `If-Match` / `If-None-Match` against a resource's ETag, as GCS honours them on
//! the JSON API and on media downloads.

use axum::http::HeaderMap;
use sealstore_storage::{StorageError, StorageResult};

/// The ETag conditions of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EtagConditions {
    if_match: Option<Vec<String>>,
    if_none_match: Option<Vec<String>>,
}

/// The entity tags of a header: comma-separated, each quoted or bare, weak or strong
/// (compared weakly, as for GET), or `*`.
fn tags(headers: &HeaderMap, name: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = false;
    for v in headers.get_all(name) {
        seen = true;
        // A header that is not text can match no tag.
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let t = t.strip_prefix("W/").unwrap_or(t);
            out.push(t.trim_matches('"').to_owned());
        }
    }
    seen.then_some(out)
}

impl EtagConditions {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            if_match: tags(headers, "if-match"),
            if_none_match: tags(headers, "if-none-match"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Checks the resource's current ETag. `If-Match` failing is 412; `If-None-Match`
    /// matching is 304 on a read and 412 on a write.
    pub fn check(&self, current: &str, read: bool) -> StorageResult<()> {
        let matches = |list: &Vec<String>| list.iter().any(|t| t == "*" || t == current);
        if let Some(list) = &self.if_match
            && !matches(list)
        {
            return Err(StorageError::PreconditionFailed(
                "At least one of the pre-conditions you specified did not hold (If-Match).".into(),
            ));
        }
        if let Some(list) = &self.if_none_match
            && matches(list)
        {
            return Err(if read {
                StorageError::NotModified
            } else {
                StorageError::PreconditionFailed(
                    "At least one of the pre-conditions you specified did not hold (If-None-Match).".into(),
                )
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn conds(pairs: &[(&'static str, &str)]) -> EtagConditions {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        EtagConditions::from_headers(&h)
    }

    #[test]
    fn semantics() {
        assert!(conds(&[]).is_empty());
        assert!(conds(&[]).check("abc", true).is_ok());
        assert!(conds(&[("if-match", "\"abc\"")]).check("abc", false).is_ok());
        assert!(conds(&[("if-match", "x, W/\"abc\"")]).check("abc", false).is_ok());
        assert!(conds(&[("if-match", "*")]).check("abc", false).is_ok());
        assert!(matches!(
            conds(&[("if-match", "xyz")]).check("abc", true),
            Err(StorageError::PreconditionFailed(_))
        ));
        assert!(matches!(
            conds(&[("if-none-match", "abc")]).check("abc", true),
            Err(StorageError::NotModified)
        ));
        assert!(matches!(
            conds(&[("if-none-match", "*")]).check("abc", false),
            Err(StorageError::PreconditionFailed(_))
        ));
        assert!(conds(&[("if-none-match", "xyz")]).check("abc", true).is_ok());
    }
}
