//! The HTTP face: one router serves the Cloud KMS REST API, and the ops API, so
//! every official client points at one URL.

pub mod auth;
pub mod error;
pub mod gcs;
pub mod kms;
pub mod oauth2;
pub mod ops;
pub mod query;

use crate::clock::Clock;
use crate::iam::PolicyStore;
use crate::kms::Kms;
use axum::Router;
use axum::routing::{any, get, post};
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub kms: Kms,
    pub policies: Arc<PolicyStore>,
    pub clock: Arc<dyn Clock>,
    /// `clock:advance` exists only with `--fake-clock`.
    pub fake_clock: bool,
    pub settings: Arc<crate::db::Settings>,
    pub storage: Arc<crate::storage::Storage>,
    /// `--auto-grant-service-agent`: new keys get their project's storage agent as
    /// encrypter/decrypter, in the key's own (visible, removable) policy.
    pub auto_grant_service_agent: bool,
    /// `--auth token`: every request needs a bearer token.
    pub token_auth: bool,
    pub tokens: Arc<crate::iam::tokens::TokenStore>,
    pub audit: Arc<crate::audit::AuditLog>,
    /// Authenticates the tokens of multi-call rewrites.
    pub rewrite_tokens: Arc<gcs::rewrite_token::RewriteTokens>,
    /// `https` with `--tls-cert`, else `http`: the scheme of the links the API returns.
    pub scheme: &'static str,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/sealstore/v1/{*rest}", any(ops::handle))
        .route("/v1/{*rest}", any(kms::handle))
        .route(oauth2::TOKEN_PATH, post(oauth2::token))
        .route("/storage/v1/{*rest}", any(gcs::json_api))
        .route("/upload/storage/v1/{*rest}", any(gcs::upload_api))
        .route("/resumable/upload/storage/v1/{*rest}", any(gcs::upload_api))
        .route("/download/storage/v1/{*rest}", any(gcs::download_api))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(ops::panic_response))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
