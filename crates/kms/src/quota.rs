//! Cloud KMS's per-project quota on cryptographic requests (encrypt, decrypt), shared
//! by every gateway on one database.
//!
//! The count lives in the store (`KmsStore::take_tokens`: one token bucket per project,
//! `per_minute` deep, refilled at `per_minute` a minute). A round trip per request would
//! cost more than the request, so a gateway takes tokens in batches of a tenth of a
//! second's worth (`batch`) and spends them locally for at most `HOLD`; tokens it has
//! not spent by then are dropped, never returned. The shared count is therefore
//! approximate, in a documented way: across N gateways a project is never admitted
//! more than the bucket grants plus what the gateways hold (at most N × batch), and at
//! most N × batch tokens a minute go unused. Below 600 a minute the batch is one token
//! and the count is exact.

use crate::core::Kms;
use crate::error::{KmsError, KmsResult};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long tokens taken from the shared bucket may be spent locally.
const HOLD: Duration = Duration::from_secs(1);

pub(crate) struct Quota {
    per_minute: u32,
    exempt: Vec<String>,
    /// Tokens this process took from the shared bucket and has not spent, and when.
    held: HashMap<String, (u32, Instant)>,
}

/// A tenth of a second's worth of the quota, between 1 and 1,000 tokens.
fn batch(per_minute: u32) -> u32 {
    (per_minute / 600).clamp(1, 1000)
}

impl Kms {
    /// Limits encrypt/decrypt to `per_minute` requests per project across every process
    /// on this store; `exempt` projects are not limited.
    pub fn set_quota(&self, per_minute: u32, exempt: &[&str]) {
        *self.inner.quota.lock().unwrap_or_else(|e| e.into_inner()) = Some(Quota {
            per_minute,
            exempt: exempt.iter().map(|s| (*s).to_owned()).collect(),
            held: HashMap::new(),
        });
    }

    pub(crate) fn take_quota(&self, project: &str) -> KmsResult<()> {
        let per_minute = {
            let mut guard = self.inner.quota.lock().unwrap_or_else(|e| e.into_inner());
            let Some(q) = guard.as_mut() else { return Ok(()) };
            if q.exempt.iter().any(|p| p == project) {
                return Ok(());
            }
            if let Some((tokens, since)) = q.held.get_mut(project)
                && *tokens > 0
                && since.elapsed() < HOLD
            {
                *tokens -= 1;
                return Ok(());
            }
            q.per_minute
        };
        // Not under the lock: other projects' requests, and this one's local tokens
        // taken by a concurrent batch, need not wait for the database.
        if per_minute == 0 {
            return Err(exhausted(project, per_minute));
        }
        let granted = self
            .inner
            .store
            .take_tokens(&format!("crypto/{project}"), batch(per_minute), per_minute)?;
        if granted == 0 {
            return Err(exhausted(project, per_minute));
        }
        let mut guard = self.inner.quota.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = guard.as_mut() {
            let now = Instant::now();
            let slot = q.held.entry(project.to_owned()).or_insert((0, now));
            if slot.1.elapsed() >= HOLD {
                slot.0 = 0;
            }
            // One of the granted tokens pays for this request.
            slot.0 = slot.0.saturating_add(granted - 1);
            slot.1 = now;
        }
        Ok(())
    }
}

fn exhausted(project: &str, per_minute: u32) -> KmsError {
    KmsError::ResourceExhausted(format!(
        "Quota exceeded for quota metric 'Cryptographic requests' of project {project}: {per_minute} per minute."
    ))
}

#[cfg(test)]
mod tests {
    use super::batch;

    #[test]
    fn batches_are_a_tenth_of_a_second_and_one_below_ten_a_second() {
        assert_eq!(batch(5), 1);
        assert_eq!(batch(1199), 1);
        assert_eq!(batch(60_000), 100);
        assert_eq!(batch(u32::MAX), 1000);
    }
}
