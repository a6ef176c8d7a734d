//! Leases on background work, so that several gateways on one database do
//! time-driven work (key rotation, scheduled destruction, clean-up) exactly once: a
//! gateway's ticker acquires the task's lease before it works and renews it while it
//! does; the others find it held and skip.
//!
//! A lease is a name, a holder and an expiry. `acquire` takes a free or expired lease,
//! or renews one the caller already holds, in one atomic step; a holder that stops
//! renewing (it crashed, or lost the database) loses the lease when it expires.
//!
//! `Leases` is the front; where leases live is a `LeaseBackend`: SQLite (the embedded
//! default), PostgreSQL, or memory. PostgreSQL judges expiry by the database's clock,
//! so gateways whose clocks disagree still agree on who holds a lease; SQLite (one
//! machine) and memory (one process) use the local clock.

mod memory;
mod postgres;
mod sqlite;

#[cfg(test)]
mod conformance;

pub use memory::MemoryLeases;
pub use postgres::PgLeases;
pub use sqlite::SqliteLeases;

use std::sync::Arc;
use std::time::Duration;

/// The longest lease `acquire` grants; longer ttls are cut to this (every backend's
/// clock arithmetic stays in range).
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease store: {0}")]
    Store(#[from] rusqlite::Error),
    /// PostgreSQL: never quotes the database URL (see `pg`).
    #[error("lease store: {0}")]
    Database(#[from] crate::pg::PgError),
}

impl From<tokio_postgres::Error> for LeaseError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.into())
    }
}

impl LeaseError {
    /// The database could not be reached or went away mid-request (retryable: the
    /// lease's state is unknown, so the caller must not assume it holds it).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(e) if e.is_unavailable())
    }
}

/// Where leases live. Every backend passes `conformance.rs`.
#[async_trait::async_trait]
pub trait LeaseBackend: Send + Sync {
    /// Atomically: if lease `name` is free, expired, or held by `holder`, makes
    /// `holder` its holder until now + `ttl` and returns true; otherwise (another
    /// holder, unexpired) changes nothing and returns false.
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, LeaseError>;
    /// Frees lease `name` if `holder` holds it (expired or not); otherwise does nothing.
    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError>;
    /// The holder of lease `name`, if it is held and unexpired.
    async fn holder(&self, name: &str) -> Result<Option<String>, LeaseError>;
}

pub struct Leases {
    backend: Arc<dyn LeaseBackend>,
}

impl Leases {
    pub fn new(backend: Arc<dyn LeaseBackend>) -> Self {
        Self { backend }
    }

    /// Leases in the SQLite database of a data dir (the table created if missing).
    pub fn sqlite(conn: rusqlite::Connection) -> Result<Self, LeaseError> {
        Ok(Self::new(Arc::new(SqliteLeases::new(conn)?)))
    }

    /// Leases in PostgreSQL, shared by every gateway on it (the table created if missing).
    pub async fn postgres(pool: crate::pg::Pool) -> Result<Self, LeaseError> {
        Ok(Self::new(Arc::new(PgLeases::new(pool).await?)))
    }

    /// Leases in process memory: for tests, and for a lone gateway that keeps nothing.
    pub fn memory() -> Self {
        Self::new(Arc::new(MemoryLeases::default()))
    }

    /// True if `holder` now holds lease `name` until now + `ttl` (at most `MAX_TTL`):
    /// the lease was free, had expired, or was already `holder`'s (then it is renewed).
    /// False if another holder's lease has not expired; nothing changes then.
    pub async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, LeaseError> {
        self.backend.acquire(name, holder, ttl.min(MAX_TTL)).await
    }

    /// `acquire` for background work: a store that cannot answer counts as "not held"
    /// (logged), so the work waits for a process that can be sure it is the holder.
    pub async fn hold(&self, name: &str, holder: &str, ttl: Duration) -> bool {
        match self.acquire(name, holder, ttl).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(lease = name, error = %e, "could not take a lease on background work; skipping it");
                false
            }
        }
    }

    /// Frees lease `name` at once if `holder` holds it; does nothing otherwise.
    pub async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError> {
        self.backend.release(name, holder).await
    }

    /// The current holder of lease `name`, if it is held and has not expired.
    pub async fn holder(&self, name: &str) -> Result<Option<String>, LeaseError> {
        self.backend.holder(name).await
    }
}
