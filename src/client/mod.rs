//! Command-line clients that talk to a running server over HTTP, like gcloud does.

pub mod http;
pub mod kms;
pub mod objects;
pub mod rekey;
