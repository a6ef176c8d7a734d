//! IAM policies (`google.iam.v1.Policy`) stored per resource name, with etags for
//! optimistic concurrency.

mod backend;
mod memory;
mod postgres;
mod sqlite;

#[cfg(test)]
mod conformance;

pub use crate::error::IamError;
pub use backend::PolicyBackend;
pub use memory::MemoryPolicies;
pub use postgres::PgPolicies;
pub use sqlite::SqlitePolicies;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// Policies, with a cache validated against one version number: each write (by this
/// process or any other on the same database, such as the `iam` CLI or another gateway)
/// bumps it in the same transaction. A check trusts the cache while the version was read
/// less than `VERSION_TTL` ago, so most checks touch no database at all; a check that
/// would deny reads the version again first. So a grant is seen at once everywhere, and a
/// revocation made elsewhere within `VERSION_TTL` (through this store: at once).
///
/// Where policies live is a `PolicyBackend`: SQLite (the embedded default), PostgreSQL,
/// or memory.
pub struct PolicyStore {
    backend: Arc<dyn PolicyBackend>,
    cache: Mutex<PolicyCache>,
}

struct PolicyCache {
    version: i64,
    /// When `version` was read from the backend (timed from before the read); `None`
    /// after a write through this store, so the next check reads it again.
    confirmed: Option<Instant>,
    /// Writes through this store so far: a version read that a write overtook confirms
    /// nothing (it may predate the write).
    writes: u64,
    policies: HashMap<String, Arc<Policy>>,
}

/// How long a version read is trusted: the bound on seeing another process's revocation.
pub const VERSION_TTL: std::time::Duration = std::time::Duration::from_millis(500);

/// Cached policies kept at most; beyond it the cache starts over.
const MAX_CACHED: usize = 10_000;

fn stale(resource: &str) -> IamError {
    IamError::Aborted(format!(
        "The policy of {resource} was modified concurrently: the etag does not match. Read it again and retry."
    ))
}

impl PolicyStore {
    pub fn new(backend: Arc<dyn PolicyBackend>) -> Self {
        Self {
            backend,
            cache: Mutex::new(PolicyCache {
                version: -1,
                confirmed: None,
                writes: 0,
                policies: HashMap::new(),
            }),
        }
    }

    /// Policies in the SQLite database of a data dir.
    pub fn sqlite(conn: rusqlite::Connection) -> Result<Self, IamError> {
        Ok(Self::new(Arc::new(SqlitePolicies::new(conn)?)))
    }

    /// Policies in PostgreSQL, shared by every gateway on it (tables created if missing).
    pub async fn postgres(pool: sealstore_core::pg::Pool) -> Result<Self, IamError> {
        Ok(Self::new(Arc::new(PgPolicies::new(pool).await?)))
    }

    /// Policies in process memory: for tests, and for runs that keep nothing.
    pub fn memory() -> Self {
        Self::new(Arc::new(MemoryPolicies::default()))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, PolicyCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version confirmed less than `VERSION_TTL` ago, if any.
    fn recent_version(&self) -> Option<i64> {
        let cache = self.cache();
        cache
            .confirmed
            .filter(|at| at.elapsed() < VERSION_TTL)
            .map(|_| cache.version)
    }

    /// Forgets when the version was confirmed: called after every write through this
    /// store, so this process sees its own writes at once.
    fn written(&self) {
        let mut cache = self.cache();
        cache.confirmed = None;
        cache.writes += 1;
    }

    /// The policies of `chain`, in order, from the cache when it is current; with
    /// `fresh`, the version is read from the backend whatever its age. Also says whether
    /// the version was read now.
    pub async fn chain(&self, chain: &[String], fresh: bool) -> Result<(Vec<Arc<Policy>>, bool), IamError> {
        let (version, read_now) = match self.recent_version().filter(|_| !fresh) {
            Some(v) => (v, false),
            None => {
                // Read before any policy: whatever is fetched below is at least this
                // new, so caching it under this version never hides a later change.
                let at = Instant::now();
                let writes = self.cache().writes;
                let v = self.backend.version().await?;
                let mut cache = self.cache();
                if v > cache.version {
                    cache.version = v;
                    cache.confirmed = None;
                    cache.policies.clear();
                }
                // Version and confirmation change together, under one lock.
                if v == cache.version && writes == cache.writes {
                    cache.confirmed = Some(cache.confirmed.map_or(at, |c| c.max(at)));
                }
                (v, true)
            }
        };
        let mut out: Vec<Option<Arc<Policy>>> = Vec::with_capacity(chain.len());
        let mut missing = vec![];
        {
            let mut cache = self.cache();
            if version > cache.version || cache.policies.len() > MAX_CACHED {
                cache.version = version;
                cache.policies.clear();
            }
            // An older version than the cache's (a slower concurrent check) neither
            // reads nor fills the cache.
            let usable = version == cache.version;
            for resource in chain {
                let hit = if usable {
                    cache.policies.get(resource).cloned()
                } else {
                    None
                };
                if hit.is_none() {
                    missing.push(resource.clone());
                }
                out.push(hit);
            }
        }
        if missing.is_empty() {
            return Ok((out.into_iter().flatten().collect(), read_now));
        }
        let fetched = self.backend.get_many(&missing).await?;
        let fetched: HashMap<String, Arc<Policy>> = missing
            .into_iter()
            .zip(fetched)
            .map(|(r, p)| (r, Arc::new(p.unwrap_or_else(Policy::empty))))
            .collect();
        let mut cache = self.cache();
        let usable = version == cache.version;
        let policies = chain
            .iter()
            .zip(out)
            .map(|(resource, hit)| {
                hit.unwrap_or_else(|| {
                    let p = fetched
                        .get(resource)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Policy::empty()));
                    if usable {
                        cache.policies.insert(resource.clone(), p.clone());
                    }
                    p
                })
            })
            .collect();
        Ok((policies, read_now))
    }

    pub async fn get(&self, resource: &str) -> Result<Policy, IamError> {
        Ok(self
            .backend
            .get_many(&[resource.to_owned()])
            .await?
            .pop()
            .flatten()
            .unwrap_or_else(Policy::empty))
    }

    /// Replaces the policy. If the new policy carries an etag, it must equal the
    /// current one (read-modify-write, checked inside the backend's transaction); the
    /// stored policy gets a fresh etag.
    pub async fn set(&self, resource: &str, mut policy: Policy) -> Result<Policy, IamError> {
        validate(&policy)?;
        let expected = (!policy.etag.is_empty()).then(|| std::mem::take(&mut policy.etag));
        let mut etag = [0u8; 8];
        SystemRandom::new()
            .fill(&mut etag)
            .map_err(|_| IamError::InvalidArgument("rng failure".into()))?;
        policy.etag = etag.to_vec();
        if policy.version == 0 {
            policy.version = 1;
        }
        let stored = self.backend.put(resource, &policy, expected.as_deref()).await;
        self.written();
        if !stored? {
            return Err(stale(resource));
        }
        Ok(policy)
    }

    /// Moves `from`'s policy to `to` (replacing any there); nothing to move is fine.
    /// A soft-deleted bucket keeps its policy this way, under a name no request reaches.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), IamError> {
        let r = self.backend.rename(from, to).await;
        self.written();
        r
    }

    /// Removes a resource's policy (its resource was deleted; a new resource with the same
    /// name must not inherit it).
    pub async fn remove(&self, resource: &str) -> Result<(), IamError> {
        let r = self.backend.remove(resource).await;
        self.written();
        r
    }

    /// Adds `member` to `role` on `resource` (read-modify-write with the etag, retried
    /// until no concurrent writer got in between).
    pub async fn add_binding(&self, resource: &str, role: &str, member: &str) -> Result<Policy, IamError> {
        loop {
            let mut policy = self.get(resource).await?;
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
            match self.set(resource, policy).await {
                Err(IamError::Aborted(_)) => continue,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(role: &str, member: &str) -> Binding {
        Binding {
            role: role.into(),
            members: vec![member.into()],
            condition: None,
        }
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
