//! The HTTP face: one router serves the Cloud KMS REST API, and the ops API, so
//! every official client points at one URL.

pub mod auth;
pub mod body;
pub mod error;
pub mod gcs;
pub mod http_server;
pub mod kms;
pub mod lifecycle_ops;
pub mod links;
pub mod oauth2;
pub mod observe;
pub mod ops;
pub mod query;
pub mod xml;

use axum::Router;
use axum::routing::{any, get, post};
use sealstore_core::clock::Clock;
use sealstore_iam::PolicyStore;
use sealstore_kms::Kms;
use std::sync::Arc;

/// Everything a handler needs, shared: cloned per request (each middleware layer
/// extracts it), so the clone is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    pub kms: Kms,
    pub policies: Arc<PolicyStore>,
    pub clock: Arc<dyn Clock>,
    /// `clock:advance` exists only with `--fake-clock`.
    pub fake_clock: bool,
    pub settings: Arc<sealstore_core::settings::Settings>,
    pub storage: Arc<sealstore_storage::Storage>,
    /// `--auto-grant-service-agent`: new keys get their project's storage agent as
    /// encrypter/decrypter, in the key's own (visible, removable) policy.
    pub auto_grant_service_agent: bool,
    /// `--auth token`: every request needs a bearer token.
    pub token_auth: bool,
    pub tokens: Arc<sealstore_iam::tokens::TokenStore>,
    /// HMAC keys that sign XML API requests.
    pub hmac_keys: Arc<sealstore_iam::hmac_keys::HmacKeyStore>,
    pub audit: Arc<sealstore_core::audit::AuditLog>,
    /// Authenticates the tokens of multi-call rewrites.
    pub rewrite_tokens: Arc<gcs::rewrite_token::RewriteTokens>,
    /// `https` with `--tls-cert`, else `http`: the scheme of the links the API returns.
    pub scheme: &'static str,
    pub limits: Limits,
    /// How links are formed (`--public-url`, the Host header's check).
    pub links: Arc<links::Links>,
    /// `--xml-domain`: virtual-host-style XML API requests (`{bucket}.{domain}`).
    pub xml_domain: Option<String>,
    /// `--multipart-upload-ttl-secs`.
    pub multipart_ttl_secs: u64,
    /// Permits for requests in flight (`Limits::max_in_flight`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

/// Request limits (`sealstore serve --help` names the flags).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest body a buffered route (KMS, ops, IAM, JSON metadata) reads.
    pub max_body_bytes: usize,
    /// A request body that sends nothing for this long fails (408).
    pub body_idle_timeout: std::time::Duration,
    /// Requests being handled at once; beyond it → 503 at once, in the API's format.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            body_idle_timeout: std::time::Duration::from_secs(60),
            max_in_flight: 512,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        // Other methods on these paths are S3 clients naming a reserved bucket.
        .route("/healthz", get(ops::healthz).fallback(xml::reserved_bucket))
        .route("/readyz", get(ops::readyz).fallback(xml::reserved_bucket))
        .route("/metrics", get(ops::metrics).fallback(xml::reserved_bucket))
        .route("/sealstore/v1/{*rest}", any(ops::handle))
        .route("/v1/{*rest}", any(kms::handle))
        .route(oauth2::TOKEN_PATH, post(oauth2::token))
        .route("/storage/v1/{*rest}", any(gcs::json_api))
        .route("/upload/storage/v1/{*rest}", any(gcs::upload_api))
        .route("/resumable/upload/storage/v1/{*rest}", any(gcs::upload_api))
        .route("/download/storage/v1/{*rest}", any(gcs::download_api))
        .layer(axum::extract::DefaultBodyLimit::disable())
        // Every other path is the XML API's (path style); it answers the reserved
        // prefixes' unknown paths as before.
        .fallback(xml::handle)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(ops::panic_response))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.limits.body_idle_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::observe))
        .with_state(state.clone());
    // Virtual-host requests are rewritten to path style before routing.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn_with_state(state.clone(), xml::virtual_host))
        .with_state(state)
}
