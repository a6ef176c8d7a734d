//! How a process's in-memory KMS state stays bound to the store, the source of truth.
//!
//! - Mutations refresh first (`Kms::write`) and commit against the epoch they saw, so
//!   a mutation never acts on state another process has changed.
//! - A refresher thread compares the store's epoch every `REFRESH_EVERY` and reloads
//!   when another process committed. Crypto operations call `fresh` and refuse
//!   (UNAVAILABLE) when the state has not been confirmed within `STALENESS_BOUND`, so a
//!   version disabled or destroyed elsewhere stops working here within that bound, even
//!   if the database becomes unreachable right after the change.

use super::core::{Kms, State};
use super::error::{KmsError, KmsResult};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the refresher compares epochs.
pub const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// The documented bound: no crypto operation uses state older than this.
pub const STALENESS_BOUND: Duration = Duration::from_secs(1);
/// How often the watchdog re-judges staleness. Crypto operations read its verdict (one
/// atomic load) instead of the clock, which is a system call on some VMs.
const WATCHDOG_EVERY: Duration = Duration::from_millis(50);
/// The watchdog flags staleness this much early, so no operation runs past the bound
/// between two of its ticks.
const WATCHDOG_MARGIN: Duration = Duration::from_millis(100);

impl Kms {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn mark_validated(&self) {
        self.inner.validated_ms.fetch_max(self.elapsed_ms(), Ordering::SeqCst);
    }

    fn validated_age(&self) -> Duration {
        let at = self.inner.validated_ms.load(Ordering::SeqCst);
        Duration::from_millis(self.elapsed_ms().saturating_sub(at))
    }

    /// The store's whole state and its epoch, read now.
    fn load_state(&self) -> KmsResult<(i64, State)> {
        let snap = self.inner.store.load()?;
        Ok((snap.epoch, Self::state_from(snap, self.sealer())?))
    }

    /// Brings `state` (held under the write lock) up to the store's epoch. A failure
    /// leaves it as it was: `commit` still refuses a stale write, and `fresh` refuses
    /// crypto once the bound passes.
    pub(super) fn refresh_locked(&self, state: &mut State) {
        let seen = self.inner.epoch.load(Ordering::SeqCst);
        match self.inner.store.epoch() {
            Ok(epoch) if epoch == seen => self.mark_validated(),
            Ok(_) => match self.load_state() {
                Ok((epoch, fresh)) => {
                    *state = fresh;
                    self.inner.epoch.store(epoch, Ordering::SeqCst);
                    self.mark_validated();
                    tracing::debug!(epoch, "reloaded KMS state changed by another process");
                }
                Err(e) => tracing::warn!(error = %e, "could not reload KMS state"),
            },
            Err(e) => tracing::warn!(error = %e, "could not read the KMS store's epoch"),
        }
    }

    /// One refresher pass: a cheap epoch read; on a change the new state is loaded
    /// without any lock (crypto keeps going meanwhile) and swapped in under the write
    /// lock only if no commit here got further in between.
    fn refresh(&self) {
        let seen = self.inner.epoch.load(Ordering::SeqCst);
        match self.inner.store.epoch() {
            Ok(epoch) if epoch == seen => self.mark_validated(),
            Ok(_) => match self.load_state() {
                Ok((epoch, fresh)) => {
                    let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
                    // Epochs only grow: an older snapshot than what a local commit left
                    // is dropped (the next pass looks again).
                    if epoch >= self.inner.epoch.load(Ordering::SeqCst) {
                        *state = fresh;
                        self.inner.epoch.store(epoch, Ordering::SeqCst);
                        self.mark_validated();
                        tracing::debug!(epoch, "reloaded KMS state changed by another process");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not reload KMS state"),
            },
            Err(e) => tracing::warn!(error = %e, "could not read the KMS store's epoch"),
        }
    }

    /// Brings the state up to the store's epoch now; whether it changed. A lookup that
    /// found nothing calls this before answering NOT_FOUND: another process may have made
    /// the thing since the last refresh (a client behind a load balancer creates a key
    /// through one gateway and uses it through the next).
    pub fn catch_up(&self) -> bool {
        let before = self.inner.epoch.load(Ordering::SeqCst);
        self.refresh();
        self.inner.epoch.load(Ordering::SeqCst) != before
    }

    /// `f`, run again once after a catch-up when it found nothing and the state moved.
    pub fn retry_not_found<T>(&self, f: impl Fn() -> KmsResult<T>) -> KmsResult<T> {
        match f() {
            Err(KmsError::NotFound(_)) if self.catch_up() => f(),
            r => r,
        }
    }

    /// Refuses when the state is older than `STALENESS_BOUND` and cannot be refreshed.
    pub(super) fn fresh(&self) -> KmsResult<()> {
        if !self.inner.stale.load(Ordering::Relaxed) {
            return Ok(());
        }
        if self.validated_age() <= STALENESS_BOUND {
            return Ok(());
        }
        self.refresh();
        if self.validated_age() <= STALENESS_BOUND {
            Ok(())
        } else {
            Err(KmsError::Unavailable(
                "The key manager cannot confirm its key state with the database; retry later.".into(),
            ))
        }
    }

    /// Starts the refresher; it stops when the last handle to this core goes.
    pub(super) fn start_refresher(&self) {
        let inner = std::sync::Arc::downgrade(&self.inner);
        // The PostgreSQL store waits on the runtime it was made in; this thread enters
        // that runtime so its driver tasks live there, not in a throwaway one.
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let spawned = std::thread::Builder::new().name("kms-refresh".into()).spawn(move || {
            let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
            loop {
                std::thread::sleep(REFRESH_EVERY);
                let Some(inner) = inner.upgrade() else { return };
                Kms { inner }.refresh();
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the KMS refresher; crypto refuses once state is stale");
        }
        // Separate from the refresher, so a refresher stuck on an unreachable database
        // cannot keep the verdict "fresh".
        let inner = std::sync::Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new().name("kms-staleness".into()).spawn(move || {
            loop {
                std::thread::sleep(WATCHDOG_EVERY);
                let Some(inner) = inner.upgrade() else { return };
                let kms = Kms { inner };
                let stale = kms.validated_age() + WATCHDOG_MARGIN > STALENESS_BOUND;
                kms.inner.stale.store(stale, Ordering::Relaxed);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the KMS staleness watchdog; every check reads the clock");
            self.inner.stale.store(true, Ordering::Relaxed);
        }
    }
}
