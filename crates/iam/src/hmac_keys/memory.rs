//! HMAC keys in process memory: for tests, and for runs that keep nothing.

use super::backend::{self, HmacKeyBackend, ListQuery, StateChange};
use super::{DELETED, HmacKeyMeta};
use crate::IamError;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryHmacKeys {
    /// By access id, so listing pages in order.
    rows: Mutex<BTreeMap<String, (HmacKeyMeta, Vec<u8>)>>,
}

impl MemoryHmacKeys {
    fn rows(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (HmacKeyMeta, Vec<u8>)>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl HmacKeyBackend for MemoryHmacKeys {
    async fn insert(&self, meta: &HmacKeyMeta, sealed: &[u8]) -> Result<(), IamError> {
        let mut rows = self.rows();
        if rows.contains_key(&meta.access_id) {
            return Err(IamError::Aborted(
                "An HMAC key with this access id already exists.".into(),
            ));
        }
        rows.insert(meta.access_id.clone(), (meta.clone(), sealed.to_vec()));
        Ok(())
    }

    async fn get(&self, project: &str, access_id: &str) -> Result<Option<HmacKeyMeta>, IamError> {
        Ok(self
            .rows()
            .get(access_id)
            .filter(|(m, _)| m.project == project)
            .map(|(m, _)| m.clone()))
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<HmacKeyMeta>, IamError> {
        Ok(self
            .rows()
            .values()
            .map(|(m, _)| m)
            .filter(|m| backend::listed(q, m))
            .take(q.limit)
            .cloned()
            .collect())
    }

    async fn set_state(&self, project: &str, access_id: &str, change: &StateChange) -> Result<HmacKeyMeta, IamError> {
        let mut rows = self.rows();
        let row = rows.get_mut(access_id).filter(|(m, _)| m.project == project);
        let current = row.as_ref().map(|(m, _)| m.clone());
        let updated = backend::check_state_change(current, project, access_id, change)?;
        if let Some((m, _)) = row {
            *m = updated.clone();
        }
        Ok(updated)
    }

    async fn delete(&self, project: &str, access_id: &str, new_etag: &str, now: DateTime<Utc>) -> Result<(), IamError> {
        let mut rows = self.rows();
        let row = rows.get_mut(access_id).filter(|(m, _)| m.project == project);
        backend::check_delete(row.as_ref().map(|(m, _)| m.state.as_str()), project, access_id)?;
        if let Some((m, sealed)) = row {
            m.state = DELETED.to_owned();
            m.updated = now;
            m.etag = new_etag.to_owned();
            sealed.clear();
        }
        Ok(())
    }

    async fn signing_row(&self, access_id: &str) -> Result<Option<(HmacKeyMeta, Vec<u8>)>, IamError> {
        Ok(self.rows().get(access_id).cloned())
    }
}
