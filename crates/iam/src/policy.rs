//! IAM policies (`google.iam.v1.Policy`) stored per resource name, with etags for
//! optimistic concurrency.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller's etag is stale: someone changed the policy since they read it.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("iam store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("iam store: {0}")]
    Database(#[from] sealstore_core::pg::PgError),
    #[error("iam store: corrupt policy: {0}")]
    Corrupt(#[from] serde_json::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub expression: String,
    pub title: String,
    pub description: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub role: String,
    pub members: Vec<String>,
    pub condition: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub version: i32,
    pub bindings: Vec<Binding>,
    pub etag: Vec<u8>,
}

/// The etag of a resource that never had a policy (Cloud IAM returns `ACAB`).
pub const EMPTY_ETAG: &[u8] = &[0x00, 0x20, 0x01];

impl Policy {
    pub fn empty() -> Self {
        Self {
            version: 1,
            bindings: vec![],
            etag: EMPTY_ETAG.to_vec(),
        }
    }
}

const MEMBER_TYPES: &[&str] = &[
    "user",
    "serviceAccount",
    "group",
    "domain",
    "principal",
    "principalSet",
    "deleted",
];

/// `type:id` members (plus `allUsers` / `allAuthenticatedUsers`) and `roles/…` roles.
pub fn validate(policy: &Policy) -> Result<(), IamError> {
    if !(0..=3).contains(&policy.version) {
        return Err(IamError::InvalidArgument(format!(
            "Policy version {} is not supported.",
            policy.version
        )));
    }
    for b in &policy.bindings {
        if !super::roles::KNOWN_ROLES.contains(&b.role.as_str()) {
            return Err(IamError::InvalidArgument(format!(
                "Role \"{}\" is not a known role.",
                b.role
            )));
        }
        if b.members.is_empty() {
            return Err(IamError::InvalidArgument(format!(
                "The binding for {} has no members.",
                b.role
            )));
        }
        for m in &b.members {
            let ok = m == "allUsers"
                || m == "allAuthenticatedUsers"
                || m.split_once(':')
                    .is_some_and(|(t, id)| MEMBER_TYPES.contains(&t) && !id.is_empty());
            if !ok {
                return Err(IamError::InvalidArgument(format!(
                    "Member \"{m}\" is not of the form type:id (user:, serviceAccount:, group:, domain:)."
                )));
            }
        }
        if b.condition.is_some() && policy.version < 3 {
            return Err(IamError::InvalidArgument(
                "Bindings with conditions need policy version 3.".into(),
            ));
        }
    }
    Ok(())
}

/// Policies, with a cache validated on every check: each write (by this process or
/// any other on the same database, such as the `iam` CLI) bumps one version number in
/// the same transaction, and a check reads that number (one indexed row) before it
/// trusts cached policies. So a change is seen by the next request, with no staleness,
/// while a check costs one small query instead of a read and parse per resource.
pub struct PolicyStore {
    conn: Mutex<Connection>,
    cache: Mutex<PolicyCache>,
}

#[derive(Default)]
struct PolicyCache {
    version: i64,
    policies: std::collections::HashMap<String, std::sync::Arc<Policy>>,
}

/// Cached policies kept at most; beyond it the cache starts over.
const MAX_CACHED: usize = 10_000;

fn bump(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute("UPDATE iam_policy_version SET v = v + 1 WHERE id = 1", [])?;
    Ok(())
}

impl PolicyStore {
    pub fn new(conn: Connection) -> Result<Self, IamError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS iam_policies (resource TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS iam_policy_version (id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER NOT NULL);
             INSERT OR IGNORE INTO iam_policy_version (id, v) VALUES (1, 0);",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
            cache: Mutex::new(PolicyCache {
                version: -1,
                policies: Default::default(),
            }),
        })
    }

    /// The policies of `chain`, in order, from the cache when it is current.
    pub fn chain(&self, chain: &[String]) -> Result<Vec<std::sync::Arc<Policy>>, IamError> {
        let conn = self.conn();
        let version: i64 = conn
            .prepare_cached("SELECT v FROM iam_policy_version WHERE id = 1")?
            .query_row([], |r| r.get(0))?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.version != version || cache.policies.len() > MAX_CACHED {
            cache.version = version;
            cache.policies.clear();
        }
        let mut out = Vec::with_capacity(chain.len());
        for resource in chain {
            if let Some(p) = cache.policies.get(resource) {
                out.push(p.clone());
                continue;
            }
            let doc: Option<String> = conn
                .prepare_cached("SELECT doc FROM iam_policies WHERE resource = ?1")?
                .query_row([resource], |r| r.get(0))
                .optional()?;
            let p = std::sync::Arc::new(match doc {
                Some(d) => serde_json::from_str(&d)?,
                None => Policy::empty(),
            });
            cache.policies.insert(resource.clone(), p.clone());
            out.push(p);
        }
        Ok(out)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, resource: &str) -> Result<Policy, IamError> {
        let doc: Option<String> = self
            .conn()
            .query_row("SELECT doc FROM iam_policies WHERE resource = ?1", [resource], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(match doc {
            Some(d) => serde_json::from_str(&d)?,
            None => Policy::empty(),
        })
    }

    /// Replaces the policy. If the new policy carries an etag, it must equal the
    /// current one (read-modify-write); the stored policy gets a fresh etag.
    pub fn set(&self, resource: &str, mut policy: Policy) -> Result<Policy, IamError> {
        validate(&policy)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<String> = tx
            .query_row("SELECT doc FROM iam_policies WHERE resource = ?1", [resource], |r| {
                r.get(0)
            })
            .optional()?;
        let current_etag = match &current {
            Some(d) => serde_json::from_str::<Policy>(d)?.etag,
            None => EMPTY_ETAG.to_vec(),
        };
        if !policy.etag.is_empty() && policy.etag != current_etag {
            return Err(IamError::Aborted(format!(
                "The policy of {resource} was modified concurrently: the etag does not match. Read it again and retry."
            )));
        }
        let mut etag = [0u8; 8];
        SystemRandom::new()
            .fill(&mut etag)
            .map_err(|_| IamError::InvalidArgument("rng failure".into()))?;
        policy.etag = etag.to_vec();
        if policy.version == 0 {
            policy.version = 1;
        }
        tx.execute(
            "INSERT INTO iam_policies(resource, doc) VALUES (?1, ?2) ON CONFLICT(resource) DO UPDATE SET doc = excluded.doc",
            params![resource, serde_json::to_string(&policy)?],
        )?;
        bump(&tx)?;
        tx.commit()?;
        Ok(policy)
    }
}

impl PolicyStore {
    /// Moves `from`'s policy to `to` (replacing any there); nothing to move is fine.
    /// A soft-deleted bucket keeps its policy this way, under a name no request reaches.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), IamError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM iam_policies WHERE resource = ?1", [to])?;
        tx.execute(
            "UPDATE iam_policies SET resource = ?2 WHERE resource = ?1",
            params![from, to],
        )?;
        bump(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a resource's policy (its resource was deleted; a new resource with the same
    /// name must not inherit it).
    pub fn remove(&self, resource: &str) -> Result<(), IamError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM iam_policies WHERE resource = ?1", [resource])?;
        bump(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds `member` to `role` on `resource` (read-modify-write with the etag).
    pub fn add_binding(&self, resource: &str, role: &str, member: &str) -> Result<Policy, IamError> {
        loop {
            let mut policy = self.get(resource)?;
            match policy
                .bindings
                .iter_mut()
                .find(|b| b.role == role && b.condition.is_none())
            {
                Some(b) if b.members.iter().any(|m| m == member) => return Ok(policy),
                Some(b) => b.members.push(member.to_owned()),
                None => policy.bindings.push(Binding {
                    role: role.to_owned(),
                    members: vec![member.to_owned()],
                    condition: None,
                }),
            }
            match self.set(resource, policy) {
                Err(IamError::Aborted(_)) => continue,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_checks_see_writes_from_another_process_at_once() {
        let dir = std::env::temp_dir().join(format!("sealstore-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.db");
        let _ = std::fs::remove_file(&path);
        let server = PolicyStore::new(sealstore_core::db::open(&path).unwrap()).unwrap();
        let cli = PolicyStore::new(sealstore_core::db::open(&path).unwrap()).unwrap();
        let chain = vec!["projects/p".to_owned()];
        let has = |s: &PolicyStore| crate::has_permission(s, "user:a@x", &chain, "storage.objects.get").unwrap();
        assert!(!has(&server));
        assert!(!has(&server), "served from the cache");
        cli.add_binding("projects/p", "roles/viewer", "user:a@x").unwrap();
        assert!(has(&server), "the other store's write is seen by the next check");
        cli.remove("projects/p").unwrap();
        assert!(!has(&server));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn binding(role: &str, member: &str) -> Binding {
        Binding {
            role: role.into(),
            members: vec![member.into()],
            condition: None,
        }
    }

    #[test]
    fn set_get_and_stale_etag() {
        let store = PolicyStore::new(sealstore_core::db::open_in_memory().unwrap()).unwrap();
        let empty = store.get("r").unwrap();
        assert_eq!(empty, Policy::empty());
        let p = Policy {
            version: 1,
            bindings: vec![binding("roles/viewer", "user:a@x")],
            etag: empty.etag.clone(),
        };
        let stored = store.set("r", p.clone()).unwrap();
        assert_ne!(stored.etag, empty.etag);
        assert_eq!(store.get("r").unwrap(), stored);
        let stale = store.set("r", p).unwrap_err();
        assert!(matches!(stale, IamError::Aborted(_)));
        assert_eq!(store.get("r").unwrap(), stored);
    }

    #[test]
    fn rejects_bad_members_and_roles() {
        for (role, member) in [
            ("roles/viewer", "alice"),
            ("viewer", "user:a"),
            ("roles/viewer", "robot:x"),
        ] {
            let p = Policy {
                version: 1,
                bindings: vec![binding(role, member)],
                etag: vec![],
            };
            assert!(
                matches!(validate(&p), Err(IamError::InvalidArgument(_))),
                "{role} {member}"
            );
        }
    }
}
