//! Wiring: opens the data dir, builds the core and serves HTTP until SIGINT/SIGTERM.

use crate::api::{AppState, router};
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::iam::PolicyStore;
use crate::kms::Kms;
use crate::kms::seal::Sealer;
use crate::kms::store::SqliteKmsStore;
use crate::rootkey::RootKey;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub addr: String,
    pub fake_clock: bool,
    pub root_key_file: Option<PathBuf>,
    /// Base64 root key from `SEALSTORE_ROOT_KEY`; never logged.
    pub root_key_env: Option<String>,
    /// `--insecure-dev-on-public-address`.
    pub allow_public_dev: bool,
}

fn load_root_key(cfg: &ServeConfig) -> anyhow::Result<RootKey> {
    if let Some(v) = &cfg.root_key_env {
        return RootKey::from_env_value(v);
    }
    let path = cfg
        .root_key_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("root.key"));
    RootKey::load_or_create(&path)
}

/// Builds the application state from the data dir.
pub fn build(cfg: &ServeConfig) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let root = load_root_key(cfg)?;
    let db_path = cfg.data_dir.join("sealstore.db");
    let clock: Arc<dyn Clock> = if cfg.fake_clock {
        Arc::new(ManualClock::new())
    } else {
        Arc::new(SystemClock)
    };
    let store = SqliteKmsStore::new(crate::db::open(&db_path)?)?;
    let kms = Kms::open(Arc::new(store), Sealer::new(&root), clock.clone())?;
    let policies = Arc::new(PolicyStore::new(crate::db::open(&db_path)?)?);
    Ok(AppState {
        kms,
        policies,
        clock,
        fake_clock: cfg.fake_clock,
    })
}

pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let state = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || build(&cfg)
    })
    .await??;
    state.kms.start_wrapping_key_pool();
    let listener = tokio::net::TcpListener::bind(&cfg.addr)
        .await
        .with_context(|| format!("binding {}", cfg.addr))?;
    let local: SocketAddr = listener.local_addr()?;
    // Dev mode grants everyone owner: only on loopback unless explicitly allowed.
    if !local.ip().is_loopback() && !cfg.allow_public_dev {
        anyhow::bail!(
            "refusing --auth dev on non-loopback address {local}: anyone could use every key; \
             pass --insecure-dev-on-public-address to do it anyway"
        );
    }
    tracing::info!("listening on http://{local}");

    // Scheduled transitions (destruction, rotation, import-job expiry) every second.
    let kms = state.kms.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let k = kms.clone();
            let _ = tokio::task::spawn_blocking(move || k.run_due()).await;
        }
    });

    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    ticker.abort();
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
