//! Generation work a gateway left pending when it died: asymmetric key versions in
//! PENDING_GENERATION, and import jobs waiting for their RSA wrapping key.
//!
//! The process that makes such a resource generates it itself, at once, and claims it
//! here. On a shared database another process must finish the work should that one
//! die first: the holder of the KMS transitions lease (`run_due`, one process at a
//! time) adopts whatever it has seen pending, unclaimed by itself, for `ADOPT_AFTER`.
//! Nothing else generates another process's resources, so the work is done once. If
//! the maker was alive after all (a long queue), both generate and the store's epoch
//! check lets exactly one result commit: the other finds the resource no longer
//! pending, or its commit refused as stale, and drops its material.

use super::core::Kms;
use super::types::{ImportJobState, VersionState};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Longer than a maker needs for its own queue (at most 64 versions of a few hundred
/// milliseconds each), so a live maker is rarely duplicated; short enough that a dead
/// gateway's keys are usable within a minute.
pub(super) const ADOPT_AFTER: Duration = Duration::from_secs(30);

/// This process's view: what it is generating, and since when it has watched the rest.
#[derive(Default)]
pub(super) struct Adoption {
    mine: HashSet<String>,
    seen: HashMap<String, Instant>,
}

impl Adoption {
    pub(super) fn claim(&mut self, name: &str) {
        self.mine.insert(name.to_owned());
        self.seen.remove(name);
    }

    pub(super) fn release(&mut self, name: &str) {
        self.mine.remove(name);
    }

    pub(super) fn owns(&self, name: &str) -> bool {
        self.mine.contains(name)
    }

    /// Of the names pending in the store now, the ones to adopt: not ours, and seen
    /// pending for `ADOPT_AFTER`. Names no longer pending are forgotten.
    fn due(&mut self, pending: &HashSet<String>, now: Instant) -> Vec<String> {
        self.seen.retain(|n, _| pending.contains(n));
        let mut out = Vec::new();
        for n in pending {
            if self.mine.contains(n) {
                continue;
            }
            let first = *self.seen.entry(n.clone()).or_insert(now);
            if now.saturating_duration_since(first) >= ADOPT_AFTER {
                out.push(n.clone());
            }
        }
        out
    }
}

impl Kms {
    pub(super) fn adoption(&self) -> std::sync::MutexGuard<'_, Adoption> {
        self.inner.adoption.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One round of the transitions lease holder: adopts orphaned generation work.
    pub(super) fn adopt_orphans(&self) {
        let (versions, jobs) = {
            let state = self.read();
            let versions: Vec<_> = state
                .keys
                .values()
                .flat_map(|k| k.versions.values())
                .filter(|v| v.meta.state == VersionState::PENDING_GENERATION)
                .map(|v| (v.meta.name.clone(), v.meta.algorithm))
                .collect();
            let jobs: Vec<String> = state
                .jobs
                .iter()
                .filter(|(_, j)| j.job.state == ImportJobState::PENDING_GENERATION)
                .map(|(n, _)| n.clone())
                .collect();
            (versions, jobs)
        };
        let pending: HashSet<String> = versions
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(jobs.iter().cloned())
            .collect();
        let due: HashSet<String> = self.adoption().due(&pending, Instant::now()).into_iter().collect();
        if due.is_empty() {
            return;
        }
        for (name, algorithm) in versions {
            if due.contains(&name.to_string()) {
                tracing::warn!(version = %name, "adopting a key version left pending by another gateway");
                self.spawn_generation(name, algorithm);
            }
        }
        let mut adopted_job = false;
        for job in jobs.iter().filter(|j| due.contains(*j)) {
            tracing::warn!(%job, "adopting an import job left pending by another gateway");
            self.adoption().claim(job);
            adopted_job = true;
        }
        if adopted_job {
            self.start_wrapping_key_pool();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopts_only_what_stayed_pending_unclaimed() {
        let mut a = Adoption::default();
        let t0 = Instant::now();
        let pending: HashSet<String> = ["v1", "v2", "job"].map(String::from).into();
        a.claim("v1");
        assert!(a.due(&pending, t0).is_empty(), "first sight starts the wait");
        assert!(a.due(&pending, t0 + ADOPT_AFTER / 2).is_empty());
        let mut due = a.due(&pending, t0 + ADOPT_AFTER);
        due.sort();
        assert_eq!(due, ["job", "v2"], "the claimed one is ours, not an orphan");
        // Finished elsewhere meanwhile: forgotten, and a later pending spell waits anew.
        let rest: HashSet<String> = ["v1".to_owned()].into();
        assert!(a.due(&rest, t0 + ADOPT_AFTER * 2).is_empty());
        assert!(a.due(&pending, t0 + ADOPT_AFTER * 2).is_empty());
        // Released (finished here), a name pending again is watched like any other.
        a.release("v1");
        assert!(a.due(&pending, t0 + ADOPT_AFTER * 3).iter().any(|n| n == "v2"));
        assert!(!a.due(&pending, t0 + ADOPT_AFTER * 3).iter().any(|n| n == "v1"));
        assert!(a.due(&pending, t0 + ADOPT_AFTER * 4).iter().any(|n| n == "v1"));
    }
}
