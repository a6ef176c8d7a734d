//! Tokens in process memory: for tests, and for runs that keep nothing.

use super::TokenInfo;
use super::backend::{TokenBackend, duplicate};
use crate::IamError;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryTokens {
    rows: Mutex<Rows>,
}

#[derive(Default)]
struct Rows {
    by_id: HashMap<String, TokenInfo>,
    id_by_hash: HashMap<Vec<u8>, String>,
}

impl MemoryTokens {
    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl TokenBackend for MemoryTokens {
    async fn insert(&self, info: &TokenInfo, hash: &[u8]) -> Result<(), IamError> {
        let mut rows = self.rows();
        if rows.by_id.contains_key(&info.id) || rows.id_by_hash.contains_key(hash) {
            return Err(duplicate());
        }
        rows.id_by_hash.insert(hash.to_vec(), info.id.clone());
        rows.by_id.insert(info.id.clone(), info.clone());
        Ok(())
    }

    async fn principal(&self, hash: &[u8]) -> Result<Option<String>, IamError> {
        let rows = self.rows();
        Ok(rows
            .id_by_hash
            .get(hash)
            .and_then(|id| rows.by_id.get(id))
            .filter(|t| !t.revoked)
            .map(|t| t.principal.clone()))
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, IamError> {
        let mut out: Vec<TokenInfo> = self.rows().by_id.values().cloned().collect();
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    async fn revoke(&self, id: &str) -> Result<bool, IamError> {
        Ok(self.rows().by_id.get_mut(id).map(|t| t.revoked = true).is_some())
    }
}
