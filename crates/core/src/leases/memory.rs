//! Leases in process memory: for tests, and for a lone gateway that keeps nothing.
//! Expiry is judged by the monotonic clock.

use super::{LeaseBackend, LeaseError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Lease {
    holder: String,
    expires: Instant,
}

#[derive(Default)]
pub struct MemoryLeases {
    leases: Mutex<HashMap<String, Lease>>,
}

impl MemoryLeases {
    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl LeaseBackend for MemoryLeases {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, LeaseError> {
        let mut leases = self.leases();
        let now = Instant::now();
        if let Some(l) = leases.get(name)
            && l.holder != holder
            && l.expires >= now
        {
            return Ok(false);
        }
        leases.insert(
            name.to_owned(),
            Lease {
                holder: holder.to_owned(),
                expires: now + ttl,
            },
        );
        Ok(true)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError> {
        let mut leases = self.leases();
        if leases.get(name).is_some_and(|l| l.holder == holder) {
            leases.remove(name);
        }
        Ok(())
    }

    async fn holder(&self, name: &str) -> Result<Option<String>, LeaseError> {
        let now = Instant::now();
        Ok(self
            .leases()
            .get(name)
            .filter(|l| l.expires >= now)
            .map(|l| l.holder.clone()))
    }
}
