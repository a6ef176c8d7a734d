//! List filtering (`state != DESTROYED AND state != DESTROY_SCHEDULED`) and opaque
//! page tokens, shared by every KMS list method.

use super::error::{KmsError, KmsResult};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
    pub filter: Option<String>,
    pub order_by: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
    pub total_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Has,
}

#[derive(Debug, Clone)]
struct Clause {
    field: String,
    op: Op,
    value: String,
}

/// A conjunction of `field OP value` clauses (`=`, `!=`, `:`), the subset of AIP-160
/// that Cloud KMS clients use.
#[derive(Debug, Clone, Default)]
pub struct Filter(Vec<Clause>);

impl Filter {
    pub fn parse(text: &str, fields: &[&str]) -> KmsResult<Self> {
        let bad = |why: &str| KmsError::InvalidArgument(format!("Invalid filter \"{text}\": {why}."));
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut clauses = Vec::new();
        for part in text.split(" AND ") {
            let part = part.trim();
            let (field, op, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, Op::Ne, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, Op::Eq, v)
            } else if let Some((f, v)) = part.split_once(':') {
                (f, Op::Has, v)
            } else {
                return Err(bad("expected field = value, field != value or field:value"));
            };
            let field = field.trim();
            if !fields.contains(&field) {
                return Err(bad(&format!(
                    "unknown field \"{field}\" (supported: {})",
                    fields.join(", ")
                )));
            }
            let value = value.trim().trim_matches('"');
            if value.is_empty() {
                return Err(bad("empty value"));
            }
            clauses.push(Clause {
                field: field.to_owned(),
                op,
                value: value.to_owned(),
            });
        }
        Ok(Self(clauses))
    }

    pub fn matches(&self, get: impl Fn(&str) -> String) -> bool {
        self.0.iter().all(|c| {
            let actual = get(&c.field);
            match c.op {
                Op::Eq | Op::Has => actual == c.value,
                Op::Ne => actual != c.value,
            }
        })
    }
}

/// Pages through `items`, already in list order, each with a sort key that increases
/// along the list. The token is the last key returned, so inserts between calls do not
/// repeat or skip items.
pub fn paginate<T>(items: Vec<(String, T)>, opts: &ListOptions) -> KmsResult<Page<T>> {
    if let Some(order) = opts.order_by.as_deref().map(str::trim).filter(|o| !o.is_empty())
        && order != "name"
        && order != "name asc"
    {
        return Err(KmsError::InvalidArgument(format!(
            "orderBy \"{order}\" is not supported; only \"name\" (the default order) is."
        )));
    }
    let page_size = match opts.page_size {
        None | Some(0) => 1000,
        Some(n) if n < 0 => return Err(KmsError::InvalidArgument("pageSize must not be negative.".into())),
        Some(n) => n.min(1000) as usize,
    };
    let after = match opts.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(
            URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| KmsError::InvalidArgument(format!("Invalid pageToken \"{t}\".")))?,
        ),
    };
    let total_size = items.len();
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    let more = rest.len() > page_size;
    rest.truncate(page_size);
    let next_page_token = if more {
        rest.last().map(|(k, _)| URL_SAFE_NO_PAD.encode(k))
    } else {
        None
    };
    Ok(Page {
        items: rest.into_iter().map(|(_, t)| t).collect(),
        next_page_token,
        total_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_handles_the_samples_teardown_expression() {
        let f = Filter::parse("state != DESTROYED AND state != DESTROY_SCHEDULED", &["state"]).unwrap();
        assert!(f.matches(|_| "ENABLED".into()));
        assert!(!f.matches(|_| "DESTROYED".into()));
        assert!(!f.matches(|_| "DESTROY_SCHEDULED".into()));
        assert!(
            Filter::parse("state:ENABLED", &["state"])
                .unwrap()
                .matches(|_| "ENABLED".into())
        );
        assert!(Filter::parse("colour = red", &["state"]).is_err());
        assert!(Filter::parse("state", &["state"]).is_err());
    }

    #[test]
    fn pagination_walks_every_item_once() {
        let items: Vec<(String, u32)> = (1..=5).map(|i| (format!("{i:010}"), i)).collect();
        let mut opts = ListOptions {
            page_size: Some(2),
            ..Default::default()
        };
        let mut seen = vec![];
        loop {
            let page = paginate(items.clone(), &opts).unwrap();
            assert_eq!(page.total_size, 5);
            seen.extend(page.items);
            match page.next_page_token {
                Some(t) => opts.page_token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
        opts.page_token = Some("!!".into());
        assert!(paginate(items, &opts).is_err());
    }
}
