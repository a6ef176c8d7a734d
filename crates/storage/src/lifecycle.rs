//! Object Lifecycle Management: a bucket's rules, their validation, and which action
//! (if any) applies to one generation at a given time. Applying the actions is the
//! worker's job (`lifecycle_run.rs`); this file decides, and never touches a store.
//!
//! The rules combine as GCS combines them: every condition of a rule must hold; among
//! the rules that match, `Delete` beats `SetStorageClass`, and among storage classes the
//! coldest wins. A storage-class change only ever moves an object to a colder class.

use super::error::{StorageError, StorageResult};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// GCS allows at most 100 rules per bucket.
pub const MAX_RULES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    Delete,
    SetStorageClass,
    /// Acts on incomplete XML multipart uploads, which sealstore does not have yet:
    /// validated and kept, with nothing to act on.
    AbortIncompleteMultipartUpload,
}

impl ActionKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Delete" => Self::Delete,
            "SetStorageClass" => Self::SetStorageClass,
            "AbortIncompleteMultipartUpload" => Self::AbortIncompleteMultipartUpload,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "Delete",
            Self::SetStorageClass => "SetStorageClass",
            Self::AbortIncompleteMultipartUpload => "AbortIncompleteMultipartUpload",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    /// The target of `SetStorageClass`.
    pub storage_class: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub age: Option<i64>,
    pub created_before: Option<NaiveDate>,
    pub custom_time_before: Option<NaiveDate>,
    pub days_since_custom_time: Option<i64>,
    pub days_since_noncurrent_time: Option<i64>,
    pub is_live: Option<bool>,
    pub matches_prefix: Option<Vec<String>>,
    pub matches_suffix: Option<Vec<String>>,
    pub matches_storage_class: Option<Vec<String>>,
    pub noncurrent_time_before: Option<NaiveDate>,
    pub num_newer_versions: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub action: Action,
    pub condition: Condition,
}

/// What the engine knows of one generation when judging it.
pub struct Subject<'a> {
    pub name: &'a str,
    pub storage_class: &'a str,
    pub time_created: DateTime<Utc>,
    /// `customTime`, parsed.
    pub custom_time: Option<DateTime<Utc>>,
    /// When it became noncurrent; `None` while live.
    pub noncurrent_since: Option<DateTime<Utc>>,
}

/// The action that applies, with the index of the rule that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub rule: usize,
    pub action: Action,
}

fn invalid(message: impl Into<String>) -> StorageError {
    StorageError::invalid(message)
}

/// Colder classes rank higher; the regional classes count as STANDARD.
pub fn coldness(class: &str) -> u8 {
    match class {
        "NEARLINE" => 1,
        "COLDLINE" => 2,
        "ARCHIVE" => 3,
        _ => 0,
    }
}

/// GCS's validation of a bucket's rules; `classes` are the valid storage classes.
pub fn validate(rules: &[Rule], classes: &[&str]) -> StorageResult<()> {
    if rules.len() > MAX_RULES {
        return Err(invalid(format!(
            "A bucket can have at most {MAX_RULES} lifecycle rules; got {}.",
            rules.len()
        )));
    }
    for (i, r) in rules.iter().enumerate() {
        let c = &r.condition;
        match (r.action.kind, &r.action.storage_class) {
            (ActionKind::SetStorageClass, None) => {
                return Err(invalid(format!(
                    "Lifecycle rule {i}: action SetStorageClass requires a storageClass."
                )));
            }
            (ActionKind::SetStorageClass, Some(sc)) if !classes.contains(&sc.as_str()) => {
                return Err(invalid(format!("Lifecycle rule {i}: invalid storage class {sc:?}.")));
            }
            (ActionKind::Delete | ActionKind::AbortIncompleteMultipartUpload, Some(_)) => {
                return Err(invalid(format!(
                    "Lifecycle rule {i}: storageClass is only valid with action SetStorageClass."
                )));
            }
            _ => {}
        }
        if *c == Condition::default() {
            return Err(invalid(format!(
                "Lifecycle rule {i} has no condition: a rule needs at least one."
            )));
        }
        for (v, field) in [
            (c.age, "age"),
            (c.days_since_custom_time, "daysSinceCustomTime"),
            (c.days_since_noncurrent_time, "daysSinceNoncurrentTime"),
            (c.num_newer_versions, "numNewerVersions"),
        ] {
            if let Some(v) = v
                && !(0..=i64::from(i32::MAX)).contains(&v)
            {
                return Err(invalid(format!(
                    "Lifecycle rule {i}: {field} must be a non-negative 32-bit integer; got {v}."
                )));
            }
        }
        if let Some(bad) = c
            .matches_storage_class
            .iter()
            .flatten()
            .find(|s| !classes.contains(&s.as_str()))
        {
            return Err(invalid(format!(
                "Lifecycle rule {i}: invalid storage class {bad:?} in matchesStorageClass."
            )));
        }
        for (list, field) in [
            (&c.matches_prefix, "matchesPrefix"),
            (&c.matches_suffix, "matchesSuffix"),
        ] {
            if let Some(list) = list
                && (list.len() > 1000 || list.iter().any(|s| s.len() > 1024))
            {
                return Err(invalid(format!("Lifecycle rule {i}: {field} is too long.")));
            }
        }
        if r.action.kind == ActionKind::AbortIncompleteMultipartUpload
            && (c.created_before.is_some()
                || c.custom_time_before.is_some()
                || c.days_since_custom_time.is_some()
                || c.days_since_noncurrent_time.is_some()
                || c.is_live.is_some()
                || c.matches_storage_class.is_some()
                || c.noncurrent_time_before.is_some()
                || c.num_newer_versions.is_some())
        {
            return Err(invalid(format!(
                "Lifecycle rule {i}: AbortIncompleteMultipartUpload supports only the age, matchesPrefix and matchesSuffix conditions."
            )));
        }
    }
    Ok(())
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// Whether `at` is at least `days` after `since` (saturating: huge values never match).
fn days_passed(since: DateTime<Utc>, days: i64, now: DateTime<Utc>) -> bool {
    match chrono::TimeDelta::try_days(days).and_then(|d| since.checked_add_signed(d)) {
        Some(due) => now >= due,
        None => false,
    }
}

impl Condition {
    /// Whether every condition set holds. `newer` counts the newer generations of the
    /// name (only called when `numNewerVersions` is set).
    pub fn holds(&self, s: &Subject<'_>, now: DateTime<Utc>, newer: &mut dyn FnMut() -> u64) -> bool {
        let live = s.noncurrent_since.is_none();
        if let Some(want) = self.is_live
            && want != live
        {
            return false;
        }
        if let Some(age) = self.age
            && !days_passed(s.time_created, age, now)
        {
            return false;
        }
        if let Some(d) = self.created_before
            && s.time_created >= midnight(d)
        {
            return false;
        }
        if let Some(d) = self.custom_time_before
            && s.custom_time.is_none_or(|t| t >= midnight(d))
        {
            return false;
        }
        if let Some(n) = self.days_since_custom_time
            && !s.custom_time.is_some_and(|t| days_passed(t, n, now))
        {
            return false;
        }
        if let Some(n) = self.days_since_noncurrent_time
            && !s.noncurrent_since.is_some_and(|t| days_passed(t, n, now))
        {
            return false;
        }
        if let Some(d) = self.noncurrent_time_before
            && s.noncurrent_since.is_none_or(|t| t >= midnight(d))
        {
            return false;
        }
        if let Some(p) = &self.matches_prefix
            && !p.iter().any(|p| s.name.starts_with(p.as_str()))
        {
            return false;
        }
        if let Some(p) = &self.matches_suffix
            && !p.iter().any(|p| s.name.ends_with(p.as_str()))
        {
            return false;
        }
        if let Some(c) = &self.matches_storage_class
            && !c.iter().any(|c| c == s.storage_class)
        {
            return false;
        }
        if let Some(n) = self.num_newer_versions
            && newer() < u64::try_from(n).unwrap_or(u64::MAX)
        {
            return false;
        }
        true
    }
}

/// The action the rules take on `s` at `now`, if any.
pub fn decide(rules: &[Rule], s: &Subject<'_>, now: DateTime<Utc>, newer: &mut dyn FnMut() -> u64) -> Option<Decision> {
    let mut best: Option<Decision> = None;
    for (i, r) in rules.iter().enumerate() {
        let useful = match r.action.kind {
            ActionKind::Delete => true,
            ActionKind::SetStorageClass => r
                .action
                .storage_class
                .as_deref()
                .is_some_and(|t| coldness(t) > coldness(s.storage_class)),
            ActionKind::AbortIncompleteMultipartUpload => false,
        };
        if !useful || !r.condition.holds(s, now, newer) {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => match (b.action.kind, r.action.kind) {
                (ActionKind::Delete, _) => false,
                (_, ActionKind::Delete) => true,
                _ => {
                    coldness(r.action.storage_class.as_deref().unwrap_or(""))
                        > coldness(b.action.storage_class.as_deref().unwrap_or(""))
                }
            },
        };
        if better {
            best = Some(Decision {
                rule: i,
                action: r.action.clone(),
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSES: &[&str] = &["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"];

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rule(kind: ActionKind, class: Option<&str>, c: Condition) -> Rule {
        Rule {
            action: Action {
                kind,
                storage_class: class.map(str::to_owned),
            },
            condition: c,
        }
    }

    fn subject(name: &str, class: &'static str, created: &str, noncurrent: Option<&str>) -> Subject<'static> {
        Subject {
            name: Box::leak(name.to_owned().into_boxed_str()),
            storage_class: class,
            time_created: t(created),
            custom_time: None,
            noncurrent_since: noncurrent.map(t),
        }
    }

    #[test]
    fn delete_beats_colder_class_beats_warmer() {
        let rules = vec![
            rule(
                ActionKind::SetStorageClass,
                Some("NEARLINE"),
                Condition {
                    age: Some(1),
                    ..Default::default()
                },
            ),
            rule(
                ActionKind::SetStorageClass,
                Some("COLDLINE"),
                Condition {
                    age: Some(2),
                    ..Default::default()
                },
            ),
            rule(
                ActionKind::Delete,
                None,
                Condition {
                    age: Some(3),
                    ..Default::default()
                },
            ),
        ];
        validate(&rules, CLASSES).unwrap();
        let s = subject("a", "STANDARD", "2026-01-01T00:00:00Z", None);
        let mut newer = || 0;
        assert_eq!(decide(&rules, &s, t("2026-01-01T12:00:00Z"), &mut newer), None);
        assert_eq!(
            decide(&rules, &s, t("2026-01-02T00:00:00Z"), &mut newer).unwrap().rule,
            0
        );
        assert_eq!(
            decide(&rules, &s, t("2026-01-03T00:00:00Z"), &mut newer).unwrap().rule,
            1
        );
        assert_eq!(
            decide(&rules, &s, t("2026-01-04T00:00:00Z"), &mut newer).unwrap().rule,
            2
        );
        // Never to a warmer class.
        let cold = subject("a", "ARCHIVE", "2026-01-01T00:00:00Z", None);
        assert_eq!(decide(&rules[..2], &cold, t("2026-02-01T00:00:00Z"), &mut newer), None);
    }

    #[test]
    fn noncurrent_conditions() {
        let rules = vec![rule(
            ActionKind::Delete,
            None,
            Condition {
                is_live: Some(false),
                num_newer_versions: Some(2),
                days_since_noncurrent_time: Some(1),
                ..Default::default()
            },
        )];
        let now = t("2026-01-05T00:00:00Z");
        let live = subject("a", "STANDARD", "2026-01-01T00:00:00Z", None);
        assert_eq!(decide(&rules, &live, now, &mut || 5), None);
        let old = subject("a", "STANDARD", "2026-01-01T00:00:00Z", Some("2026-01-03T00:00:00Z"));
        assert!(decide(&rules, &old, now, &mut || 2).is_some());
        assert_eq!(decide(&rules, &old, now, &mut || 1), None);
        let recent = subject("a", "STANDARD", "2026-01-01T00:00:00Z", Some("2026-01-04T12:00:00Z"));
        assert_eq!(decide(&rules, &recent, now, &mut || 2), None);
    }

    #[test]
    fn names_dates_and_classes() {
        let c = Condition {
            created_before: NaiveDate::from_ymd_opt(2026, 1, 2),
            matches_prefix: Some(vec!["logs/".into()]),
            matches_suffix: Some(vec![".txt".into(), ".log".into()]),
            matches_storage_class: Some(vec!["STANDARD".into()]),
            ..Default::default()
        };
        let rules = vec![rule(ActionKind::Delete, None, c)];
        let now = t("2026-06-01T00:00:00Z");
        let mut n = || 0;
        assert!(
            decide(
                &rules,
                &subject("logs/a.log", "STANDARD", "2026-01-01T23:59:59Z", None),
                now,
                &mut n
            )
            .is_some()
        );
        assert!(
            decide(
                &rules,
                &subject("logs/a.log", "STANDARD", "2026-01-02T00:00:00Z", None),
                now,
                &mut n
            )
            .is_none()
        );
        assert!(
            decide(
                &rules,
                &subject("other/a.log", "STANDARD", "2026-01-01T00:00:00Z", None),
                now,
                &mut n
            )
            .is_none()
        );
        assert!(
            decide(
                &rules,
                &subject("logs/a.bin", "STANDARD", "2026-01-01T00:00:00Z", None),
                now,
                &mut n
            )
            .is_none()
        );
        assert!(
            decide(
                &rules,
                &subject("logs/a.txt", "NEARLINE", "2026-01-01T00:00:00Z", None),
                now,
                &mut n
            )
            .is_none()
        );
    }

    #[test]
    fn validation() {
        let ok = Condition {
            age: Some(1),
            ..Default::default()
        };
        assert!(validate(&[rule(ActionKind::SetStorageClass, None, ok.clone())], CLASSES).is_err());
        assert!(validate(&[rule(ActionKind::SetStorageClass, Some("WARM"), ok.clone())], CLASSES).is_err());
        assert!(validate(&[rule(ActionKind::Delete, Some("NEARLINE"), ok.clone())], CLASSES).is_err());
        assert!(validate(&[rule(ActionKind::Delete, None, Condition::default())], CLASSES).is_err());
        assert!(
            validate(
                &[rule(
                    ActionKind::Delete,
                    None,
                    Condition {
                        age: Some(-1),
                        ..Default::default()
                    }
                )],
                CLASSES
            )
            .is_err()
        );
        assert!(
            validate(
                &[rule(
                    ActionKind::Delete,
                    None,
                    Condition {
                        age: Some(i64::MAX),
                        ..Default::default()
                    }
                )],
                CLASSES
            )
            .is_err()
        );
        let abort = Condition {
            is_live: Some(true),
            ..Default::default()
        };
        assert!(
            validate(
                &[rule(ActionKind::AbortIncompleteMultipartUpload, None, abort)],
                CLASSES
            )
            .is_err()
        );
        assert!(
            validate(
                &[rule(ActionKind::AbortIncompleteMultipartUpload, None, ok.clone())],
                CLASSES
            )
            .is_ok()
        );
        assert!(validate(&vec![rule(ActionKind::Delete, None, ok); 101], CLASSES).is_err());
    }
}
