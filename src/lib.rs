//! sealstore: an object storage gateway with customer-managed encryption keys and an
//! embedded, Cloud KMS-compatible key manager.
//!
//! The layers are crates, so the compiler enforces which may use which (see the README's
//! architecture section): `sealstore-core` ← `sealstore-kms`, `sealstore-iam`,
//! `sealstore-storage` ← `sealstore-api` ← this crate, which wires them into a server
//! and a CLI. The re-exports keep one path per layer for the binary, tests and benches.

pub use sealstore_api as api;
pub use sealstore_api::http_server;
pub use sealstore_core::{audit, clock, db, files, locations, metrics, request_id, rootkey};
pub use sealstore_iam as iam;
pub use sealstore_kms as kms;
pub use sealstore_storage as storage;

pub mod blob_backend;
pub mod client;
pub mod database;
pub mod guard;
pub mod keyservice;
pub mod kms_audit;
pub mod server;
pub mod tls;
