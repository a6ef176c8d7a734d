//! `lifecycle.rule` on the wire: parsed into the engine's rules (unknown fields and
//! wrong types refused, as GCS refuses them) and rendered back as GCS renders them.

use super::error::{GcsError, GcsResult};
use chrono::NaiveDate;
use sealstore_storage::lifecycle::{Action, ActionKind, Condition, Rule};
use serde_json::{Map, Value, json};

const CONDITIONS: &[&str] = &[
    "age",
    "createdBefore",
    "customTimeBefore",
    "daysSinceCustomTime",
    "daysSinceNoncurrentTime",
    "isLive",
    "matchesPrefix",
    "matchesSuffix",
    "matchesStorageClass",
    "noncurrentTimeBefore",
    "numNewerVersions",
];

fn bad(msg: impl Into<String>) -> GcsError {
    GcsError::invalid(msg)
}

/// `lifecycle` from a bucket body: `None` when absent; `Some(vec![])` for `null`, `{}`
/// or no rules (which removes them).
pub fn parse(body: &Value) -> GcsResult<Option<Vec<Rule>>> {
    let lc = match body.get("lifecycle") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(vec![])),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("Invalid value for lifecycle: expected an object.")),
    };
    if let Some(k) = lc.keys().find(|k| k.as_str() != "rule") {
        return Err(bad(format!("Unknown lifecycle field \"{k}\".")));
    }
    let rules = match lc.get("rule") {
        None | Some(Value::Null) => return Ok(Some(vec![])),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("Invalid value for lifecycle.rule: expected a list.")),
    };
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| parse_rule(i, r))
        .collect::<GcsResult<Vec<_>>>()
        .map(Some)
}

fn parse_rule(i: usize, r: &Value) -> GcsResult<Rule> {
    let r = r
        .as_object()
        .ok_or_else(|| bad(format!("Lifecycle rule {i} must be an object.")))?;
    if let Some(k) = r.keys().find(|k| !matches!(k.as_str(), "action" | "condition")) {
        return Err(bad(format!("Unknown field \"{k}\" in lifecycle rule {i}.")));
    }
    let action = r
        .get("action")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("Lifecycle rule {i} needs an action.")))?;
    if let Some(k) = action.keys().find(|k| !matches!(k.as_str(), "type" | "storageClass")) {
        return Err(bad(format!(
            "Unknown field \"{k}\" in the action of lifecycle rule {i}."
        )));
    }
    let kind = action.get("type").and_then(Value::as_str).unwrap_or("");
    let kind = ActionKind::parse(kind)
        .ok_or_else(|| bad(format!("Lifecycle rule {i}: invalid action type \"{kind}\"; use Delete, SetStorageClass or AbortIncompleteMultipartUpload.")))?;
    let storage_class = match action.get("storageClass") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.to_uppercase()),
        Some(_) => return Err(bad(format!("Lifecycle rule {i}: storageClass must be a string."))),
    };
    let empty = Map::new();
    let c = match r.get("condition") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad(format!("Lifecycle rule {i}: condition must be an object."))),
    };
    if let Some(k) = c.keys().find(|k| !CONDITIONS.contains(&k.as_str())) {
        return Err(bad(format!("Lifecycle rule {i}: unknown condition \"{k}\".")));
    }
    let condition = Condition {
        age: int(c, "age", i)?,
        created_before: date(c, "createdBefore", i)?,
        custom_time_before: date(c, "customTimeBefore", i)?,
        days_since_custom_time: int(c, "daysSinceCustomTime", i)?,
        days_since_noncurrent_time: int(c, "daysSinceNoncurrentTime", i)?,
        is_live: match c.get("isLive") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(bad(format!("Lifecycle rule {i}: isLive must be a boolean."))),
        },
        matches_prefix: strings(c, "matchesPrefix", i, false)?,
        matches_suffix: strings(c, "matchesSuffix", i, false)?,
        matches_storage_class: strings(c, "matchesStorageClass", i, true)?,
        noncurrent_time_before: date(c, "noncurrentTimeBefore", i)?,
        num_newer_versions: int(c, "numNewerVersions", i)?,
    };
    Ok(Rule {
        action: Action { kind, storage_class },
        condition,
    })
}

/// An integer condition, as a JSON number or a decimal string (both are valid for the
/// JSON API's int32 fields).
fn int(c: &Map<String, Value>, k: &str, i: usize) -> GcsResult<Option<i64>> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(format!("Lifecycle rule {i}: {k} must be an integer."))),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("Lifecycle rule {i}: {k} must be an integer; got \"{s}\"."))),
        Some(_) => Err(bad(format!("Lifecycle rule {i}: {k} must be an integer."))),
    }
}

/// A date condition: `YYYY-MM-DD` (RFC 3339 full-date), in UTC.
fn date(c: &Map<String, Value>, k: &str, i: usize) -> GcsResult<Option<NaiveDate>> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Some).map_err(|_| {
            bad(format!(
                "Lifecycle rule {i}: {k} must be a date (YYYY-MM-DD); got \"{s}\"."
            ))
        }),
        Some(_) => Err(bad(format!("Lifecycle rule {i}: {k} must be a date (YYYY-MM-DD)."))),
    }
}

fn strings(c: &Map<String, Value>, k: &str, i: usize, upper: bool) -> GcsResult<Option<Vec<String>>> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|s| if upper { s.to_uppercase() } else { s.to_owned() })
                    .ok_or_else(|| bad(format!("Lifecycle rule {i}: {k} must be a list of strings.")))
            })
            .collect::<GcsResult<Vec<_>>>()
            .map(Some),
        Some(_) => Err(bad(format!("Lifecycle rule {i}: {k} must be a list of strings."))),
    }
}

/// `{"rule": [...]}` as GCS returns it.
pub fn render(rules: &[Rule]) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            let mut action = json!({"type": r.action.kind.as_str()});
            if let Some(sc) = &r.action.storage_class {
                action["storageClass"] = json!(sc);
            }
            let c = &r.condition;
            let mut cond = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    cond.insert(k.to_owned(), v);
                }
            };
            let day = |d: &Option<NaiveDate>| d.map(|d| json!(d.format("%Y-%m-%d").to_string()));
            put("age", c.age.map(|v| json!(v)));
            put("createdBefore", day(&c.created_before));
            put("customTimeBefore", day(&c.custom_time_before));
            put("daysSinceCustomTime", c.days_since_custom_time.map(|v| json!(v)));
            put(
                "daysSinceNoncurrentTime",
                c.days_since_noncurrent_time.map(|v| json!(v)),
            );
            put("isLive", c.is_live.map(|v| json!(v)));
            put("matchesPrefix", c.matches_prefix.as_ref().map(|v| json!(v)));
            put("matchesSuffix", c.matches_suffix.as_ref().map(|v| json!(v)));
            put(
                "matchesStorageClass",
                c.matches_storage_class.as_ref().map(|v| json!(v)),
            );
            put("noncurrentTimeBefore", day(&c.noncurrent_time_before));
            put("numNewerVersions", c.num_newer_versions.map(|v| json!(v)));
            json!({"action": action, "condition": Value::Object(cond)})
        })
        .collect();
    json!({ "rule": rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses() {
        let body = json!({"lifecycle": {"rule": [
            {"action": {"type": "Delete"}, "condition": {"age": 30, "isLive": true, "matchesPrefix": ["logs/"]}},
            {"action": {"type": "SetStorageClass", "storageClass": "nearline"}, "condition": {"createdBefore": "2026-01-02", "numNewerVersions": "3"}},
        ]}});
        let rules = parse(&body).unwrap().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].action.storage_class.as_deref(), Some("NEARLINE"));
        let back = render(&rules);
        assert_eq!(back["rule"][0]["condition"]["age"], 30);
        assert_eq!(back["rule"][1]["condition"]["createdBefore"], "2026-01-02");
        assert_eq!(back["rule"][1]["condition"]["numNewerVersions"], 3);
        assert_eq!(parse(&json!({"lifecycle": null})).unwrap(), Some(vec![]));
        assert_eq!(parse(&json!({})).unwrap(), None);
        for bad in [
            json!({"lifecycle": {"rule": [{"action": {"type": "Explode"}, "condition": {"age": 1}}]}}),
            json!({"lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"ageish": 1}}]}}),
            json!({"lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"createdBefore": "01/02/2026"}}]}}),
            json!({"lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"age": "x"}}]}}),
            json!({"lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"isLive": "yes"}}]}}),
            json!({"lifecycle": {"rules": []}}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}
