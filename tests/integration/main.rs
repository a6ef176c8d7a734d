//! Integration tests: start the real `sealstore` binary on 127.0.0.1:0 and talk to it
//! over HTTP, as the official clients do.

mod fuzz;
mod gcs;
mod harness;
mod iam;
mod kms_cli;
mod kms_http;
mod object_store_xml;
mod server;
