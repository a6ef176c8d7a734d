//! Query strings and path segments, decoded once, by hand: Google clients send
//! `$alt=json;enum-encoding=int`, booleans as `True`, and percent-encoded names.

use std::collections::HashMap;

/// Percent-decodes `s`; `plus_is_space` for query components.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses a raw query string. Malformed escapes are an error the caller reports.
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k, true).ok_or_else(|| format!("malformed query parameter \"{k}\""))?;
            let v = percent_decode(v, true).ok_or_else(|| format!("malformed value for query parameter \"{k}\""))?;
            map.insert(k, v);
        }
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean parameter; accepts `true`/`True`/`1` and `false`/`False`/`0`.
    pub fn bool(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" || v.is_empty() => Ok(false),
            Some(v) => Err(format!("Invalid boolean value \"{v}\" for parameter {key}.")),
        }
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, String> {
        self.get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("Invalid integer value \"{v}\" for parameter {key}."))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_google_client_queries() {
        let q = Query::parse(Some(
            "keyRingId=kr&%24alt=json%3Benum-encoding%3Dint&filter=state+%21%3D+X&b=True",
        ))
        .unwrap();
        assert_eq!(q.get("$alt"), Some("json;enum-encoding=int"));
        assert_eq!(q.get("filter"), Some("state != X"));
        assert!(q.bool("b").unwrap());
        assert!(!q.bool("missing").unwrap());
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert_eq!(percent_decode("a%2Fb", false).unwrap(), "a/b");
    }
}
