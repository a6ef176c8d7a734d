//! proto3 JSON input: camelCase or snake_case names, enums as names or integers,
//! int64 as strings or numbers, lenient base64, Durations and Timestamps.

use crate::error::RpcError;
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::time::Duration;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

pub fn b64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON object read with proto3 JSON rules.
#[derive(Debug, Default)]
pub struct Obj<'a> {
    map: Option<&'a Map<String, Value>>,
    path: String,
}

pub fn parse_body(body: &[u8]) -> Result<Value, RpcError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| RpcError::invalid(format!("Invalid JSON payload received. {e}")))?;
    // Node's REST fallback sends `""` for a request with no body fields
    // (createCryptoKeyVersion with only a parent): an empty message.
    if v.as_str() == Some("") {
        return Ok(Value::Object(Map::new()));
    }
    if !v.is_object() {
        return Err(RpcError::invalid("Invalid JSON payload received: expected an object."));
    }
    Ok(v)
}

impl<'a> Obj<'a> {
    pub fn new(v: &'a Value) -> Self {
        Self {
            map: v.as_object(),
            path: String::new(),
        }
    }

    fn field_path(&self, camel: &str) -> String {
        if self.path.is_empty() {
            camel.to_owned()
        } else {
            format!("{}.{camel}", self.path)
        }
    }

    /// The value of a field by its camelCase name (snake_case accepted); JSON null
    /// counts as absent.
    pub fn get(&self, camel: &str) -> Option<&'a Value> {
        let map = self.map?;
        map.get(camel)
            .or_else(|| map.get(&camel_to_snake(camel)))
            .filter(|v| !v.is_null())
    }

    pub fn has(&self, camel: &str) -> bool {
        self.get(camel).is_some()
    }

    pub fn obj(&self, camel: &str) -> Result<Obj<'a>, RpcError> {
        match self.get(camel) {
            None => Ok(Obj {
                map: None,
                path: self.field_path(camel),
            }),
            Some(Value::Object(m)) => Ok(Obj {
                map: Some(m),
                path: self.field_path(camel),
            }),
            Some(_) => Err(RpcError::invalid(format!(
                "Invalid value at '{}': expected an object.",
                self.field_path(camel)
            ))),
        }
    }

    pub fn str(&self, camel: &str) -> Result<Option<&'a str>, RpcError> {
        match self.get(camel) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(RpcError::invalid(format!(
                "Invalid value at '{}': expected a string.",
                self.field_path(camel)
            ))),
        }
    }

    pub fn bool(&self, camel: &str) -> Result<bool, RpcError> {
        match self.get(camel) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(RpcError::invalid(format!(
                "Invalid value at '{}': expected a boolean.",
                self.field_path(camel)
            ))),
        }
    }

    pub fn bytes(&self, camel: &str) -> Result<Option<Vec<u8>>, RpcError> {
        let Some(s) = self.str(camel)? else { return Ok(None) };
        STANDARD_LENIENT
            .decode(s)
            .or_else(|_| URL_SAFE_LENIENT.decode(s))
            .map(Some)
            .map_err(|_| {
                RpcError::invalid(format!(
                    "Invalid value at '{}': invalid base64 data.",
                    self.field_path(camel)
                ))
            })
    }

    /// An int64 or Int64Value: a JSON string or number.
    pub fn i64(&self, camel: &str) -> Result<Option<i64>, RpcError> {
        let bad = || {
            RpcError::invalid(format!(
                "Invalid value at '{}': expected an int64.",
                self.field_path(camel)
            ))
        };
        match self.get(camel) {
            None => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad()),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    }

    /// An enum given by name or number. `UNSPECIFIED` (0 or its name) counts as absent.
    pub fn enumeration<E: Copy>(
        &self,
        camel: &str,
        from_name: fn(&str) -> Option<E>,
        from_number: fn(i64) -> Option<E>,
    ) -> Result<Option<E>, RpcError> {
        let bad = |v: &Value| {
            RpcError::invalid(format!(
                "Invalid value at '{}': unknown or unsupported enum value {v}.",
                self.field_path(camel)
            ))
        };
        match self.get(camel) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(None),
            Some(Value::String(s)) if s.ends_with("_UNSPECIFIED") => Ok(None),
            Some(v @ Value::Number(n)) => n.as_i64().and_then(from_number).map(Some).ok_or_else(|| bad(v)),
            Some(v @ Value::String(s)) => from_name(s).map(Some).ok_or_else(|| bad(v)),
            Some(v) => Err(bad(v)),
        }
    }

    pub fn duration(&self, camel: &str) -> Result<Option<Duration>, RpcError> {
        let Some(s) = self.str(camel)? else { return Ok(None) };
        parse_duration(s).map(Some).ok_or_else(|| {
            RpcError::invalid(format!(
                "Invalid value at '{}': \"{s}\" is not a duration like \"86400s\".",
                self.field_path(camel)
            ))
        })
    }

    pub fn timestamp(&self, camel: &str) -> Result<Option<DateTime<Utc>>, RpcError> {
        let Some(s) = self.str(camel)? else { return Ok(None) };
        DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                RpcError::invalid(format!(
                    "Invalid value at '{}': \"{s}\" is not an RFC 3339 timestamp.",
                    self.field_path(camel)
                ))
            })
    }

    pub fn string_map(&self, camel: &str) -> Result<std::collections::BTreeMap<String, String>, RpcError> {
        let mut out = std::collections::BTreeMap::new();
        match self.get(camel) {
            None => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(|| {
                        RpcError::invalid(format!(
                            "Invalid value at '{}': values must be strings.",
                            self.field_path(camel)
                        ))
                    })?;
                    out.insert(k.clone(), v.to_owned());
                }
            }
            Some(_) => {
                return Err(RpcError::invalid(format!(
                    "Invalid value at '{}': expected a map.",
                    self.field_path(camel)
                )));
            }
        }
        Ok(out)
    }
}

/// `"86400s"`, `"1.5s"`: seconds with up to nine fractional digits.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let num = s.strip_suffix('s')?;
    let (secs, frac) = num.split_once('.').unwrap_or((num, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(secs.parse().ok()?, nanos))
}

pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Verifies an optional request CRC32C against `data`. `Ok(true)` when it was given
/// and matched; INVALID_ARGUMENT when it did not.
pub fn verify_crc(field: &str, data_field: &str, data: &[u8], crc: Option<i64>) -> Result<bool, RpcError> {
    match crc {
        None => Ok(false),
        Some(c) if c == i64::from(crc32c::crc32c(data)) => Ok(true),
        Some(_) => Err(RpcError::invalid(format!(
            "The checksum in field {field} did not match the data in field {data_field}."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("86400s"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        for bad in ["", "s", "1", "-1s", "1.1234567891s", "abcs"] {
            assert!(parse_duration(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn reads_both_spellings_and_encodings() {
        let v = json!({"plaintext_crc32c": "42", "additionalAuthenticatedData": "-_8", "purpose": 5});
        let o = Obj::new(&v);
        assert_eq!(o.i64("plaintextCrc32c").unwrap(), Some(42));
        assert_eq!(o.bytes("additionalAuthenticatedData").unwrap(), Some(vec![0xfb, 0xff]));
        let p = o.enumeration(
            "purpose",
            sealstore_kms::types::Purpose::from_name,
            sealstore_kms::types::Purpose::from_number,
        );
        assert_eq!(p.unwrap(), Some(sealstore_kms::types::Purpose::ASYMMETRIC_SIGN));
        let bad = json!({"purpose": "NOPE", "x": "%%%"});
        let o = Obj::new(&bad);
        assert!(
            o.enumeration(
                "purpose",
                sealstore_kms::types::Purpose::from_name,
                sealstore_kms::types::Purpose::from_number
            )
            .is_err()
        );
        assert!(o.bytes("x").is_err());
    }
}
