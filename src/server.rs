//! Wiring: opens the data dir, builds the core and serves HTTP until SIGINT/SIGTERM.

use crate::api::{AppState, router};
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::kms::Kms;
use crate::kms::seal::Sealer;
use crate::rootkey::RootKey;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::clock::FAKE_CLOCK_OFFSET;

#[derive(Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub addr: String,
    pub fake_clock: bool,
    pub root_key_file: Option<PathBuf>,
    /// Base64 root key from `SEALSTORE_ROOT_KEY`; never logged.
    pub root_key_env: Option<zeroize::Zeroizing<String>>,
    /// `--insecure-dev-on-public-address`.
    pub allow_public_dev: bool,
    /// `--database postgres://…` or `memory://`; none: `DATA_DIR/sealstore.db` (SQLite).
    pub database: Option<String>,
    /// `--node-id`: names this gateway among those on one database (default: host name).
    pub node_id: Option<String>,
    /// `file://PATH`, `memory://`, `s3://`, `gs://` or `az://BUCKET[/PREFIX]`;
    /// default `file://DATA_DIR/blobs`.
    pub blob_store: Option<String>,
    /// Objects smaller than this are stored inline in their metadata row (≤ 65536).
    pub inline_max_bytes: usize,
    /// Grant each new key's project storage agent use of the key (dev default).
    pub auto_grant_service_agent: bool,
    /// KMS encrypt/decrypt requests allowed per project per minute (`None`: unlimited).
    pub kms_ops_per_minute: Option<u32>,
    /// `--auth token` (else dev mode).
    pub token_auth: bool,
    /// Also write audit records to stdout.
    pub audit_stdout: bool,
    /// `--tls-cert` and `--tls-key` (PEM): serve HTTPS instead of HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--public-url`: the base of the links the API returns.
    pub public_url: Option<String>,
    /// `--multipart-upload-ttl-secs`: incomplete XML multipart uploads older than this
    /// are aborted by the sweep.
    pub multipart_ttl_secs: u64,
    /// `--xml-domain`: serve `{bucket}.{domain}` virtual-host XML API requests.
    pub xml_domain: Option<String>,
    /// Request-level limits (body sizes, body idle timeout, requests in flight).
    pub limits: crate::api::Limits,
    /// Connection-level limits (header timeout, connections, shutdown grace).
    pub conn: crate::http_server::ConnLimits,
    /// How the background lifecycle worker paces itself.
    pub lifecycle: LifecyclePace,
    /// The soft-delete duration of new buckets that do not set one (0: off).
    pub default_soft_delete_seconds: i64,
}

/// The background lifecycle worker's pace: a step every `interval_secs`, each judging at
/// most `pages_per_step` pages of 500 generations.
#[derive(Clone, Copy, Debug)]
pub struct LifecyclePace {
    pub interval_secs: u64,
    pub pages_per_step: usize,
}

impl Default for LifecyclePace {
    fn default() -> Self {
        Self {
            interval_secs: 10,
            pages_per_step: 20,
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("data_dir", &self.data_dir)
            .field("addr", &self.addr)
            .field("fake_clock", &self.fake_clock)
            .field("root_key_file", &self.root_key_file)
            .field("root_key_env", &self.root_key_env.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

fn load_root_key(cfg: &ServeConfig) -> anyhow::Result<RootKey> {
    root_key_for(
        &cfg.data_dir,
        cfg.root_key_file.as_deref(),
        cfg.root_key_env.as_ref().map(|s| s.as_str()),
    )
}

/// The root key from `SEALSTORE_ROOT_KEY`, `--root-key-file`, or `DATA_DIR/root.key`.
pub fn root_key_for(
    data_dir: &std::path::Path,
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> anyhow::Result<RootKey> {
    if let Some(v) = env {
        return RootKey::from_env_value(v);
    }
    let path = file
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join("root.key"));
    RootKey::load_or_create(&path)
}

/// Builds the application state from the data dir.
/// What `build` opens: the application state, and the leases on background work.
pub struct Built {
    pub state: AppState,
    pub leases: Arc<sealstore_core::leases::Leases>,
    /// This process's name in the leases (`holder_id`).
    pub holder: String,
    /// Whether other processes may share the database (and so the blob store) now.
    pub shared: bool,
}

pub async fn build(cfg: &ServeConfig) -> anyhow::Result<Built> {
    crate::files::private_dir(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let root = load_root_key(cfg)?;
    let db = crate::database::Database::open(cfg.database.as_deref(), &cfg.data_dir)?;
    let settings = Arc::new(db.settings().await?);
    let clock: Arc<dyn Clock> = if cfg.fake_clock {
        // The fake clock resumes where it was, so timestamps stay ordered across restarts.
        let ms = settings.get_i64(FAKE_CLOCK_OFFSET).await?.unwrap_or(0);
        Arc::new(ManualClock::with_offset(chrono::TimeDelta::milliseconds(ms)))
    } else {
        Arc::new(SystemClock)
    };
    let store = db.kms_store().await?;
    // The core is synchronous and loads its state with blocking waits.
    let kms = tokio::task::spawn_blocking({
        let sealer = Sealer::new(&root);
        let clock = clock.clone();
        move || Kms::open(store, sealer, clock)
    })
    .await??;
    if let Some(n) = cfg.kms_ops_per_minute {
        // The Google-managed key's internal project is not a customer project: no quota.
        kms.set_quota(n, &[crate::keyservice::GOOGLE_MANAGED_PROJECT]);
    }
    let policies = Arc::new(db.policies().await?);
    let tokens = Arc::new(db.tokens(&root).await?);
    let hmac_keys = Arc::new(db.hmac_keys(&root).await?);
    let leases = Arc::new(db.leases().await?);
    let node = node_name(cfg.node_id.as_deref());
    let holder = holder_id(&node);
    let audit =
        Arc::new(crate::audit::AuditLog::open(&cfg.data_dir.join("audit.log"), cfg.audit_stdout)?.with_node(&node));
    kms.set_event_sink(Arc::new(crate::kms_audit::KmsAudit {
        log: audit.clone(),
        clock: clock.clone(),
    }));
    let keys = Arc::new(crate::keyservice::KmsKeyService::new(
        kms.clone(),
        policies.clone(),
        audit.clone(),
    )?);
    let meta = db.meta().await?;
    let blob_spec = crate::blob_backend::BlobSpec::parse(cfg.blob_store.as_deref(), &cfg.data_dir)?;
    // Whether other processes may share the database (and so the blob store).
    let shared = matches!(db, crate::database::Database::Postgres { .. });
    let mut blobs = crate::blob_backend::open(&blob_spec, shared)?;
    if shared {
        // Other gateways sweep the same blob store: a write running past five minutes
        // shows them a hold (a lease row) until it ends.
        blobs = blobs.with_shared_holds(leases.clone(), holder.clone(), Duration::from_secs(300));
    }
    crate::files::warn_loose(&cfg.data_dir, blob_spec.local_dir());
    let storage = Arc::new(
        crate::storage::Storage::new(meta.clone(), blobs, keys, clock.clone())?
            .with_inline_max(cfg.inline_max_bytes)
            .with_job_leases(leases.clone(), holder.clone())
            .with_default_soft_delete(cfg.default_soft_delete_seconds)?,
    );
    kms.set_destroy_guard(Arc::new(crate::guard::RetentionGuard::new(meta, clock.clone())));
    let state = AppState::new(crate::api::AppStateInner {
        kms,
        policies,
        clock,
        fake_clock: cfg.fake_clock,
        settings,
        storage,
        auto_grant_service_agent: cfg.auto_grant_service_agent,
        token_auth: cfg.token_auth,
        tokens,
        hmac_keys,
        audit,
        rewrite_tokens: Arc::new(crate::api::gcs::rewrite_token::RewriteTokens::new(&root)),
        scheme: if cfg.tls.is_some() { "https" } else { "http" },
        limits: cfg.limits,
        links: Arc::new(crate::api::links::Links::new(cfg.public_url.as_deref()).map_err(anyhow::Error::msg)?),
        multipart_ttl_secs: cfg.multipart_ttl_secs,
        xml_domain: cfg
            .xml_domain
            .as_ref()
            .map(|d| d.trim_matches('.').to_ascii_lowercase()),
        in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_in_flight.max(1))),
    });
    Ok(Built {
        state,
        leases,
        holder,
        shared,
    })
}

/// `--node-id`, default the host name: names the gateway in audit records and leases.
fn node_name(node: Option<&str>) -> String {
    node.map(str::to_owned).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "sealstore".to_owned())
    })
}

/// This process among the gateways: `--node-id` (default: the host name), the process
/// id and a random tag, so two processes on one host, or a restarted one, never pass
/// for each other when holding leases.
fn holder_id(node: &str) -> String {
    let mut tag = [0u8; 4];
    let _ = aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut tag);
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{node}/{}/{tag}", std::process::id())
}

pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    // Installed before anything records, so no early sample is lost.
    let _ = crate::metrics::handle();
    // A bad certificate or key stops the server before anything else is opened.
    let tls = cfg
        .tls
        .as_ref()
        .map(|(cert, key)| crate::tls::server_config(cert, key))
        .transpose()?;
    let Built {
        state,
        leases,
        holder,
        shared,
    } = build(&cfg).await?;
    state.kms.start_wrapping_key_pool();
    // Crash leftovers: blobs no row references. Alone on its database nothing is
    // writing yet, so all go; on a shared one other gateways may be writing into the
    // same blob store, so only what the periodic sweep would take (older than an hour).
    let cutoff = if shared {
        chrono::Utc::now() - chrono::TimeDelta::hours(1)
    } else {
        chrono::Utc::now() + chrono::TimeDelta::days(1)
    };
    let swept = state.storage.sweep(cutoff).await?;
    // Re-key jobs a previous run left RUNNING continue from their cursor.
    let resumed = state.storage.resume_rekey_jobs().await?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed re-key jobs");
    }
    if swept > 0 {
        tracing::info!(swept, "removed unreferenced blobs left by an earlier crash");
    }
    let listener = tokio::net::TcpListener::bind(&cfg.addr)
        .await
        .with_context(|| format!("binding {}", cfg.addr))?;
    let local: SocketAddr = listener.local_addr()?;
    // Dev mode grants everyone owner: only on loopback unless explicitly allowed.
    if !cfg.token_auth && !local.ip().is_loopback() && !cfg.allow_public_dev {
        anyhow::bail!(
            "refusing --auth dev on non-loopback address {local}: anyone could use every key; \
             pass --insecure-dev-on-public-address to do it anyway"
        );
    }
    tracing::info!("listening on {}://{local}", state.scheme);

    // Scheduled transitions (destruction, rotation, import-job expiry) every second,
    // and a sweep of unreferenced blobs older than an hour every ten minutes.
    let kms = state.kms.clone();
    let storage = state.storage.clone();
    let app_for_ticker = state.clone();
    let lifecycle = cfg.lifecycle;
    let multipart_ttl = i64::try_from(cfg.multipart_ttl_secs).unwrap_or(i64::MAX / 2);
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        // Each kind of work is done by whichever process on the database holds its
        // lease, renewed every time it runs; a lease lapses after three missed rounds,
        // and another process takes the work over. (KMS transitions would be applied
        // once anyway, by the epoch check; the lease saves the others the attempt.)
        let lifecycle_ttl = Duration::from_secs(lifecycle.interval_secs.max(1).saturating_mul(3));
        loop {
            tick.tick().await;
            if leases.hold("kms-transitions", &holder, Duration::from_secs(3)).await {
                let k = kms.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || k.run_due()).await {
                    tracing::error!(error = %e, "scheduled KMS transitions panicked; retrying next tick");
                }
            }
            n += 1;
            // Lifecycle: a bounded step every interval, resuming from its cursor, so a
            // million objects never stall the server.
            if n.is_multiple_of(lifecycle.interval_secs.max(1))
                && leases.hold("lifecycle", &holder, lifecycle_ttl).await
            {
                if let Err(e) =
                    crate::api::lifecycle_ops::hard_deletes(&app_for_ticker, app_for_ticker.clock.now()).await
                {
                    tracing::error!(error = %e, "hard delete pass failed; retrying next time");
                }
                match storage.lifecycle_abort_uploads(app_for_ticker.clock.now()).await {
                    Ok(0) => {}
                    Ok(aborted) => tracing::info!(aborted, "lifecycle aborted incomplete multipart uploads"),
                    Err(e) => tracing::error!(error = %e, "aborting incomplete uploads failed; retrying next time"),
                }
                match storage
                    .lifecycle_step(app_for_ticker.clock.now(), lifecycle.pages_per_step)
                    .await
                {
                    Ok((events, _)) => crate::api::lifecycle_ops::audit_events(&app_for_ticker, &events),
                    Err(e) => tracing::error!(error = %e, "lifecycle step failed; retrying next time"),
                }
            }
            // Re-key jobs left RUNNING by a gateway that died: their leases lapse, and
            // whichever process looks next takes them over from the last checkpoint.
            if n.is_multiple_of(10) {
                match storage.resume_rekey_jobs().await {
                    Ok(0) => {}
                    Ok(taken) => tracing::info!(taken, "took over re-key jobs"),
                    Err(e) => tracing::warn!(error = %e, "looking for orphaned re-key jobs failed"),
                }
            }
            if n.is_multiple_of(600) && leases.hold("sweep", &holder, Duration::from_secs(1800)).await {
                // Multipart uploads left incomplete this long are aborted (README).
                let cutoff = app_for_ticker.clock.now() - chrono::TimeDelta::seconds(multipart_ttl);
                match storage.abort_multipart_before(cutoff).await {
                    Ok(0) => {}
                    Ok(aborted) => tracing::info!(aborted, "aborted stale multipart uploads"),
                    Err(e) => tracing::error!(error = %e, "aborting stale multipart uploads failed"),
                }
                match storage.sweep(chrono::Utc::now() - chrono::TimeDelta::hours(1)).await {
                    Ok(0) => {}
                    Ok(swept) => tracing::info!(swept, "removed unreferenced blobs"),
                    Err(e) => tracing::error!(error = %e, "blob sweep failed; retrying in ten minutes"),
                }
            }
        }
    });

    let storage_for_shutdown = state.storage.clone();
    let app = router(state);
    let drained = match tls {
        Some(config) => {
            crate::http_server::serve(
                crate::tls::TlsListener::new(listener, config)?,
                |tls| tls.get_ref().0.local_addr().ok(),
                app,
                cfg.conn,
                shutdown_signal(),
            )
            .await
        }
        None => {
            crate::http_server::serve(
                // No Nagle delay: a response's headers and streamed body go out at once.
                axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                }),
                |tcp| tcp.local_addr().ok(),
                app,
                cfg.conn,
                shutdown_signal(),
            )
            .await
        }
    };
    if drained {
        tracing::info!("requests in flight finished");
    }
    let still = storage_for_shutdown.pause_rekey_jobs(cfg.conn.shutdown_grace).await;
    if still > 0 {
        tracing::warn!(
            still,
            "re-key jobs did not reach a checkpoint in time; they resume from their last one"
        );
    }
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
