//! Persistence of KMS resources. The core serves from memory and writes through this
//! trait; each mutation is one atomic `commit`. The store is the source of truth: it
//! keeps an *epoch*, a counter every commit bumps, and a commit names the epoch its
//! writer last saw and fails with `Stale` if another process committed since. Readers
//! compare epochs to learn that their copy is out of date (`core.rs`, `refresh`).
//!
//! The core is synchronous (its work is CPU-bound crypto, run on the blocking pool),
//! so this trait is too; the PostgreSQL backend waits for its async driver there.

#[cfg(test)]
mod conformance;
mod memory;
mod postgres;
mod quota;
mod sqlite;

pub use memory::MemoryKmsStore;
pub use postgres::PgKmsStore;
pub use sqlite::SqliteKmsStore;

use super::model::{CryptoKey, CryptoKeyVersion, ImportJob, KeyRing, Operation, RetiredResource};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("kms store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("kms store: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("kms store: {0}")]
    Postgres(#[from] sealstore_core::pg::PgError),
    #[error("kms store: {0}")]
    Wait(#[from] sealstore_core::blocking::WaitError),
    /// Another process committed since the writer's epoch.
    #[error("kms store: changed by another process since it was read")]
    Stale,
}

impl StoreError {
    /// Whether the database could not be reached (answer UNAVAILABLE, retryable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Postgres(e) if e.is_unavailable())
    }
}

/// What to do with a record's sealed secret (version material, import-job private key).
#[derive(Debug, Clone, Copy)]
pub enum Sealed<'a> {
    Keep,
    Set(&'a [u8]),
    Erase,
}

#[derive(Debug)]
pub enum Write<'a> {
    KeyRing(&'a KeyRing),
    Key(&'a CryptoKey),
    Version(&'a CryptoKeyVersion, Sealed<'a>),
    ImportJob(&'a ImportJob, Sealed<'a>),
    /// Removes a key record (its versions are removed by their own writes).
    DeleteKey(&'a str),
    /// Removes a version record and its sealed material.
    DeleteVersion(&'a str),
    Retired(&'a RetiredResource),
    Operation(&'a Operation),
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub key_rings: Vec<KeyRing>,
    pub keys: Vec<CryptoKey>,
    pub versions: Vec<(CryptoKeyVersion, Option<Vec<u8>>)>,
    pub import_jobs: Vec<(ImportJob, Option<Vec<u8>>)>,
    pub retired: Vec<RetiredResource>,
    pub operations: Vec<Operation>,
    /// The epoch this snapshot was read at.
    pub epoch: i64,
}

pub trait KmsStore: Send + Sync {
    /// Everything, read in one transaction, with its epoch.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// The current epoch (one small row).
    fn epoch(&self) -> Result<i64, StoreError>;
    /// Applies every write in one transaction, all or nothing, if the epoch is still
    /// `expected`; returns the new epoch. `Stale` (nothing written) otherwise.
    fn commit(&self, writes: &[Write<'_>], expected: i64) -> Result<i64, StoreError>;
    /// Reads a record's sealed secret back (tests use it to prove erasure).
    fn sealed_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Takes up to `want` tokens from the quota bucket `name`, shared by every process
    /// on this database: a token bucket that holds at most `per_minute` tokens, starts
    /// full and refills at `per_minute` a minute. Returns how many it granted (0 when
    /// empty). The read and the write are one atomic step, so concurrent takers never
    /// together get more than the bucket held. Not part of the epoch: quota use is not
    /// key state.
    fn take_tokens(&self, name: &str, want: u32, per_minute: u32) -> Result<u32, StoreError>;
}
