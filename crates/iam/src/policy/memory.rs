//! Policies in process memory: for tests, and for runs that keep nothing.

use super::Policy;
use super::backend::{PolicyBackend, current_etag};
use crate::IamError;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryPolicies {
    rows: Mutex<Rows>,
}

#[derive(Default)]
struct Rows {
    version: i64,
    by_resource: HashMap<String, Policy>,
}

impl MemoryPolicies {
    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl PolicyBackend for MemoryPolicies {
    async fn version(&self) -> Result<i64, IamError> {
        Ok(self.rows().version)
    }

    async fn get_many(&self, resources: &[String]) -> Result<Vec<Option<Policy>>, IamError> {
        let rows = self.rows();
        Ok(resources.iter().map(|r| rows.by_resource.get(r).cloned()).collect())
    }

    async fn put(&self, resource: &str, policy: &Policy, expected: Option<&[u8]>) -> Result<bool, IamError> {
        let mut rows = self.rows();
        if expected.is_some_and(|e| e != current_etag(rows.by_resource.get(resource))) {
            return Ok(false);
        }
        rows.by_resource.insert(resource.to_owned(), policy.clone());
        rows.version += 1;
        Ok(true)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), IamError> {
        let mut rows = self.rows();
        rows.by_resource.remove(to);
        if let Some(p) = rows.by_resource.remove(from) {
            rows.by_resource.insert(to.to_owned(), p);
        }
        rows.version += 1;
        Ok(())
    }

    async fn remove(&self, resource: &str) -> Result<(), IamError> {
        let mut rows = self.rows();
        rows.by_resource.remove(resource);
        rows.version += 1;
        Ok(())
    }
}
