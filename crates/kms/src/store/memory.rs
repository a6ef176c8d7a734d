//! KMS state in process memory: for tests, and for runs that keep nothing. The same
//! semantics as `sqlite.rs` (every `Write` upserts or erases exactly as it does there),
//! held as plain records under one lock, so a commit's epoch check and its writes are
//! one atomic step. Share one `Arc<MemoryKmsStore>` between cores to have them act on
//! one "database".

use super::{KmsStore, Sealed, Snapshot, StoreError, Write};
use crate::model::{CryptoKey, CryptoKeyVersion, ImportJob, KeyRing, Operation, RetiredResource};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// A record with a sealed secret (version material, import-job private key).
struct WithSealed<T> {
    doc: T,
    sealed: Option<Vec<u8>>,
}

impl<T: Clone> WithSealed<T> {
    fn pair(&self) -> (T, Option<Vec<u8>>) {
        (self.doc.clone(), self.sealed.clone())
    }
}

/// The tables of `sqlite.rs`, keyed by resource name (so `load` lists in name order).
#[derive(Default)]
struct State {
    key_rings: BTreeMap<String, KeyRing>,
    keys: BTreeMap<String, CryptoKey>,
    versions: BTreeMap<String, WithSealed<CryptoKeyVersion>>,
    import_jobs: BTreeMap<String, WithSealed<ImportJob>>,
    retired: BTreeMap<String, RetiredResource>,
    operations: BTreeMap<String, Operation>,
    epoch: i64,
    /// Quota buckets: tokens left and when, in ms since the Unix epoch.
    quotas: BTreeMap<String, (f64, i64)>,
}

#[derive(Default)]
pub struct MemoryKmsStore {
    state: Mutex<State>,
}

impl MemoryKmsStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Inserts or replaces the record's document; its sealed secret as `sealed` says
/// (`Keep` leaves an existing secret, and a new record without one).
fn upsert_sealed<T: Clone>(table: &mut BTreeMap<String, WithSealed<T>>, name: String, doc: &T, sealed: Sealed<'_>) {
    use std::collections::btree_map::Entry;
    let slot = match table.entry(name) {
        Entry::Occupied(e) => {
            let slot = e.into_mut();
            slot.doc = doc.clone();
            slot
        }
        Entry::Vacant(e) => e.insert(WithSealed {
            doc: doc.clone(),
            sealed: None,
        }),
    };
    match sealed {
        Sealed::Keep => {}
        Sealed::Set(bytes) => slot.sealed = Some(bytes.to_vec()),
        Sealed::Erase => slot.sealed = None,
    }
}

impl KmsStore for MemoryKmsStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let s = self.state();
        Ok(Snapshot {
            key_rings: s.key_rings.values().cloned().collect(),
            keys: s.keys.values().cloned().collect(),
            versions: s.versions.values().map(WithSealed::pair).collect(),
            import_jobs: s.import_jobs.values().map(WithSealed::pair).collect(),
            retired: s.retired.values().cloned().collect(),
            operations: s.operations.values().cloned().collect(),
            epoch: s.epoch,
        })
    }

    fn epoch(&self) -> Result<i64, StoreError> {
        Ok(self.state().epoch)
    }

    fn commit(&self, writes: &[Write<'_>], expected: i64) -> Result<i64, StoreError> {
        let mut s = self.state();
        // The lock is held from the check to the last write, and nothing below can
        // fail: either every write applies or (Stale) none does.
        if s.epoch != expected {
            return Err(StoreError::Stale);
        }
        s.epoch += 1;
        for w in writes {
            match w {
                Write::KeyRing(kr) => {
                    s.key_rings.insert(kr.name.to_string(), (*kr).clone());
                }
                Write::Key(k) => {
                    s.keys.insert(k.name.to_string(), (*k).clone());
                }
                Write::Version(v, sealed) => upsert_sealed(&mut s.versions, v.name.to_string(), *v, *sealed),
                Write::ImportJob(j, sealed) => upsert_sealed(&mut s.import_jobs, j.name.to_string(), *j, *sealed),
                Write::DeleteKey(name) => {
                    s.keys.remove(*name);
                }
                Write::DeleteVersion(name) => {
                    s.versions.remove(*name);
                }
                Write::Retired(r) => {
                    s.retired.insert(r.name.clone(), (*r).clone());
                }
                Write::Operation(o) => {
                    s.operations.insert(o.name.clone(), (*o).clone());
                }
            }
        }
        Ok(s.epoch)
    }

    fn sealed_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let s = self.state();
        // As in SQLite: a version of that name answers, else an import job.
        if let Some(v) = s.versions.get(name) {
            return Ok(v.sealed.clone());
        }
        Ok(s.import_jobs.get(name).and_then(|j| j.sealed.clone()))
    }

    fn take_tokens(&self, name: &str, want: u32, per_minute: u32) -> Result<u32, StoreError> {
        let now = super::quota::now_ms();
        let mut s = self.state();
        let (tokens, at) = s.quotas.get(name).copied().unwrap_or((f64::from(per_minute), now));
        let elapsed_s = now.saturating_sub(at) as f64 / 1000.0;
        let (granted, left) = super::quota::take(tokens, elapsed_s, want, per_minute);
        s.quotas.insert(name.to_owned(), (left, now));
        Ok(granted)
    }
}
