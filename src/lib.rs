//! sealstore: an object storage gateway with customer-managed encryption keys and an
//! embedded, Cloud KMS-compatible key manager.

pub mod api;
pub mod audit;
pub mod client;
pub mod clock;
pub mod db;
pub mod files;
pub mod http_server;
pub mod iam;
pub mod keyservice;
pub mod kms;
pub mod locations;
pub mod metrics;
pub mod request_id;
pub mod rootkey;
pub mod server;
pub mod storage;
pub mod tls;
