//! The object engine: buckets, objects, envelope encryption, uploads. No HTTP here;
//! keys are reached only through `KeyService`.

pub mod blobs;
pub mod csek;
pub mod enforcement;
pub mod engine;
pub mod error;
pub mod glob;
pub mod hashing;
pub mod keys;
pub mod lifecycle;
pub mod lifecycle_run;
pub mod meta;
pub mod model;
pub mod multipart;
pub mod names;
pub mod rekey;
pub mod rekey_job;
pub mod resumable;
pub mod segment;
pub mod sink;
pub mod soft_delete;

pub use csek::CustomerKey;
pub use engine::{
    BucketPatch, KeyFilter, ListPage, ListSpec, NewBucket, ObjectHashes, OpenObject, ProtectionPatch, Storage,
    WriteSpec,
};
pub use error::{KeyError, StorageError, StorageResult};
pub use keys::{KeyChoice, KeyService, WrappedDek};
pub use resumable::{ChunkOutcome, ChunkRange};
