//! The `sealstore` binary: `serve`, and client commands.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sealstore",
    version,
    about = "Object storage with customer-managed keys and an embedded Cloud KMS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr (`RUST_LOG` sets the level, default info).
    #[arg(
        long,
        global = true,
        env = "SEALSTORE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (GCS JSON API, Cloud KMS REST API and ops API on one port).
    Serve(ServeArgs),
    /// gcloud-style Cloud KMS commands against a running server.
    Kms(Box<sealstore::client::kms::KmsArgs>),
    /// Runs a re-key job on a bucket and reports its progress.
    Rekey(Box<sealstore::client::rekey::RekeyArgs>),
    /// Object queries against a running server.
    Objects {
        #[command(subcommand)]
        command: ObjectsCommand,
    },
    /// Identity administration on a data dir (works whether or not the server runs).
    Iam {
        #[command(subcommand)]
        command: IamCommand,
    },
}

#[derive(Subcommand)]
enum ObjectsCommand {
    /// Lists the generations of a bucket that a key (or key version, or CSEK) protects.
    Find(sealstore::client::objects::FindArgs),
}

#[derive(Subcommand)]
enum IamCommand {
    /// Bearer tokens for `--auth token`.
    Tokens {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// HMAC keys that sign XML (S3) API requests as a service account.
    HmacKeys {
        #[command(subcommand)]
        command: HmacCommand,
    },
}

#[derive(Subcommand)]
enum HmacCommand {
    /// Creates a key for a service account and prints its access id and secret (the
    /// secret only this once); with --role, also binds that role to the service
    /// account on the project.
    Create {
        #[command(flatten)]
        dir: DataDirArgs,
        /// The service account's email (`name@project.iam.gserviceaccount.com`).
        #[arg(long)]
        service_account: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        role: Option<String>,
    },
    List {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long)]
        project: String,
        /// Also list deleted keys.
        #[arg(long)]
        show_deleted: bool,
    },
    /// Sets a key ACTIVE or INACTIVE.
    Update {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long)]
        project: String,
        #[arg(long)]
        access_id: String,
        #[arg(long)]
        state: String,
    },
    /// Deletes an INACTIVE key.
    Delete {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long)]
        project: String,
        #[arg(long)]
        access_id: String,
    },
}

#[derive(clap::Args)]
struct DataDirArgs {
    #[arg(long, env = "SEALSTORE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, env = "SEALSTORE_ROOT_KEY_FILE")]
    root_key_file: Option<PathBuf>,
    /// The server's `--database` (unset: DATA_DIR/sealstore.db).
    #[arg(long, env = "SEALSTORE_DATABASE", hide_env_values = true)]
    database: Option<String>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token for a principal and prints it once; with --project and --role,
    /// also binds that role to the principal on the project.
    Create {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long)]
        principal: String,
        #[arg(long, requires = "role")]
        project: Option<String>,
        #[arg(long, requires = "project")]
        role: Option<String>,
    },
    List {
        #[command(flatten)]
        dir: DataDirArgs,
    },
    Revoke {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long)]
        id: String,
    },
}

fn root_and_db(dir: &DataDirArgs) -> anyhow::Result<(sealstore::rootkey::RootKey, sealstore::database::Database)> {
    sealstore::files::private_dir(&dir.data_dir)?;
    let env = std::env::var("SEALSTORE_ROOT_KEY").ok().map(zeroize::Zeroizing::new);
    let root = sealstore::server::root_key_for(
        &dir.data_dir,
        dir.root_key_file.as_deref(),
        env.as_ref().map(|s| s.as_str()),
    )?;
    let db = sealstore::database::Database::open(dir.database.as_deref(), &dir.data_dir)?;
    anyhow::ensure!(
        !matches!(db, sealstore::database::Database::Memory),
        "--database memory:// keeps nothing outside the server process; give the server's database"
    );
    Ok((root, db))
}

/// Runs one store call to completion for a CLI command (the stores are async). One
/// runtime for the whole command: a PostgreSQL pool's connections live on it.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
        })
        .block_on(f)
}

fn token_store(
    dir: &DataDirArgs,
) -> anyhow::Result<(sealstore::iam::tokens::TokenStore, sealstore::database::Database)> {
    let (root, db) = root_and_db(dir)?;
    Ok((block_on(db.tokens(&root))?, db))
}

fn hmac_store(
    dir: &DataDirArgs,
) -> anyhow::Result<(sealstore::iam::hmac_keys::HmacKeyStore, sealstore::database::Database)> {
    let (root, db) = root_and_db(dir)?;
    Ok((block_on(db.hmac_keys(&root))?, db))
}

fn run_hmac(command: HmacCommand) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    match command {
        HmacCommand::Create {
            dir,
            service_account,
            project,
            role,
        } => {
            let (store, db) = hmac_store(&dir)?;
            let (meta, secret) = block_on(store.create(&project, &service_account, now))?;
            if let Some(role) = role {
                let policies = block_on(db.policies())?;
                block_on(policies.add_binding(&format!("projects/{project}"), &role, &meta.principal()))?;
            }
            eprintln!("created HMAC key for {service_account} in project {project}");
            println!("{}\t{}", meta.access_id, secret.as_str());
        }
        HmacCommand::List {
            dir,
            project,
            show_deleted,
        } => {
            let (store, _) = hmac_store(&dir)?;
            for m in block_on(store.list(&project, None, show_deleted, None, usize::MAX >> 1))? {
                println!(
                    "{}\t{}\t{}\t{}",
                    m.access_id,
                    m.service_account_email,
                    m.state,
                    m.time_created.to_rfc3339()
                );
            }
        }
        HmacCommand::Update {
            dir,
            project,
            access_id,
            state,
        } => {
            let (store, _) = hmac_store(&dir)?;
            let m = block_on(store.set_state(&project, &access_id, &state, None, now))?;
            eprintln!("HMAC key {} is {}", m.access_id, m.state);
        }
        HmacCommand::Delete {
            dir,
            project,
            access_id,
        } => {
            let (store, _) = hmac_store(&dir)?;
            block_on(store.delete(&project, &access_id, now))?;
            eprintln!("deleted HMAC key {access_id}");
        }
    }
    Ok(())
}

fn run_iam(command: IamCommand) -> anyhow::Result<()> {
    let command = match command {
        IamCommand::Tokens { command } => command,
        IamCommand::HmacKeys { command } => return run_hmac(command),
    };
    match command {
        TokenCommand::Create {
            dir,
            principal,
            project,
            role,
        } => {
            let (store, db) = token_store(&dir)?;
            let (info, token) = block_on(store.create(&principal, chrono::Utc::now()))?;
            if let (Some(project), Some(role)) = (project, role) {
                let policies = block_on(db.policies())?;
                block_on(policies.add_binding(&format!("projects/{project}"), &role, &principal))?;
            }
            eprintln!("created token {} for {}", info.id, info.principal);
            println!("{token}");
        }
        TokenCommand::List { dir } => {
            let (store, _) = token_store(&dir)?;
            for t in block_on(store.list())? {
                println!(
                    "{}\t{}\t{}\t{}",
                    t.id,
                    t.principal,
                    t.created.to_rfc3339(),
                    if t.revoked { "revoked" } else { "active" }
                );
            }
        }
        TokenCommand::Revoke { dir, id } => {
            let (store, _) = token_store(&dir)?;
            anyhow::ensure!(block_on(store.revoke(&id))?, "no token with id {id}");
            eprintln!("revoked token {id}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where the database, blobs and (by default) the root key live.
    #[arg(long, env = "SEALSTORE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (the log shows it).
    #[arg(long, env = "SEALSTORE_ADDR", default_value = "127.0.0.1:8080")]
    addr: String,
    /// Start a manual clock and enable POST /sealstore/v1/clock:advance.
    #[arg(long)]
    fake_clock: bool,
    /// Root key file (default DATA_DIR/root.key); must not be group/other readable.
    #[arg(long, env = "SEALSTORE_ROOT_KEY_FILE")]
    root_key_file: Option<PathBuf>,
    /// Authentication mode.
    #[arg(long, value_enum, default_value = "dev")]
    auth: AuthMode,
    /// Where metadata, KMS state, policies and tokens live: `postgres://USER[:PASSWORD]@HOST:PORT/DB`
    /// for a database any number of gateways share; `memory://` keeps nothing; unset,
    /// DATA_DIR/sealstore.db (SQLite).
    #[arg(long, env = "SEALSTORE_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// This gateway's name among those sharing one --database (default: the host name).
    #[arg(long, env = "SEALSTORE_NODE_ID")]
    node_id: Option<String>,
    /// Blob backend: `file://PATH` (default `file://DATA_DIR/blobs`), `memory://`, or a
    /// cloud bucket, `s3://BUCKET[/PREFIX]`, `gs://BUCKET[/PREFIX]` or
    /// `az://CONTAINER[/PREFIX]`, configured from the usual AWS_*, GOOGLE_* and AZURE_*
    /// variables.
    #[arg(long, env = "SEALSTORE_BLOB_STORE")]
    blob_store: Option<String>,
    /// Make each new key's project storage service agent an encrypter/decrypter on the
    /// key (default: on with --auth dev). Pass `--auto-grant-service-agent=false` to
    /// grant by hand with setIamPolicy.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    auto_grant_service_agent: Option<bool>,
    /// Also print audit records (JSON lines) on stdout; they always go to DATA_DIR/audit.log.
    #[arg(long)]
    audit_stdout: bool,
    /// Objects smaller than this many bytes keep their sealed data in their metadata row
    /// instead of a blob file (at most 65536, one segment; 0 sends every object to the
    /// blob store).
    #[arg(long, env = "SEALSTORE_INLINE_MAX_BYTES", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(0..=65536))]
    inline_max_bytes: u32,
    /// Per-project limit on KMS encrypt/decrypt requests per minute (unset: no limit).
    #[arg(long, env = "SEALSTORE_KMS_OPS_PER_MINUTE")]
    kms_ops_per_minute: Option<u32>,
    /// Allow `--auth dev` (no credentials, everyone is owner) on a non-loopback address.
    #[arg(long)]
    insecure_dev_on_public_address: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key). gsutil only
    /// speaks https.
    #[arg(long, env = "SEALSTORE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "SEALSTORE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The URL clients reach this server at (e.g. https://storage.example.com), used in
    /// Location, selfLink and mediaLink. Without it links name the address a connection
    /// came in on; a Host header is honoured only when it names one of the two.
    #[arg(long, env = "SEALSTORE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Serve virtual-host-style XML (S3) API requests: a request whose Host is
    /// `{bucket}.{DOMAIN}` addresses that bucket. Path style always works.
    #[arg(long, env = "SEALSTORE_XML_DOMAIN")]
    xml_domain: Option<String>,
    /// XML API multipart uploads not completed or aborted within this many seconds are
    /// aborted (their parts deleted) by the background sweep, which runs every ten
    /// minutes. Lifecycle rules with AbortIncompleteMultipartUpload act sooner.
    #[arg(long, env = "SEALSTORE_MULTIPART_UPLOAD_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    multipart_upload_ttl_secs: u64,
    /// Seconds a client has to send a request's headers; also how long a kept-alive
    /// connection may sit idle between requests.
    #[arg(long, env = "SEALSTORE_HEADER_READ_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout_secs: u64,
    /// Seconds a request body may go without sending a byte before the request fails (408).
    #[arg(long, env = "SEALSTORE_BODY_IDLE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_idle_timeout_secs: u64,
    /// Connections served at once; beyond it new connections wait in the listen backlog.
    #[arg(long, env = "SEALSTORE_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Requests handled at once; beyond it a request gets 503 at once.
    #[arg(long, env = "SEALSTORE_MAX_REQUESTS_IN_FLIGHT", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_requests_in_flight: u64,
    /// The largest body of a buffered request (KMS, IAM, ops, JSON metadata); larger → 413.
    /// Media uploads stream and are not limited by it.
    #[arg(long, env = "SEALSTORE_MAX_REQUEST_BODY_BYTES", default_value_t = 2 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    max_request_body_bytes: u64,
    /// On SIGTERM/SIGINT: seconds requests in flight get to finish, and then re-key
    /// jobs get to reach a checkpoint.
    #[arg(long, env = "SEALSTORE_SHUTDOWN_GRACE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_grace_secs: u64,
    /// Seconds between steps of the background lifecycle worker.
    #[arg(long, env = "SEALSTORE_LIFECYCLE_INTERVAL_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    lifecycle_interval_secs: u64,
    /// Pages of 500 generations each lifecycle step judges at most.
    #[arg(long, env = "SEALSTORE_LIFECYCLE_PAGES_PER_STEP", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    lifecycle_pages_per_step: u64,
    /// Soft-delete duration (seconds) of new buckets that do not set one: 0 (off) or 7 to
    /// 90 days. GCS's default is 7 days.
    #[arg(long, env = "SEALSTORE_DEFAULT_SOFT_DELETE_SECONDS", default_value_t = 604_800)]
    default_soft_delete_seconds: i64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AuthMode {
    Dev,
    Token,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The PostgreSQL driver logs statement parameters at debug (session ids, sealed
        // secrets); whatever RUST_LOG asks, it says no more than warnings.
        .add_directive("tokio_postgres=warn".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => builder.init(),
        // One JSON object per line, with the span fields (request_id, method, uri).
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            let cfg = sealstore::server::ServeConfig {
                allow_public_dev: args.insecure_dev_on_public_address,
                blob_store: args.blob_store,
                database: args.database,
                node_id: args.node_id,
                inline_max_bytes: args.inline_max_bytes as usize,
                auto_grant_service_agent: args
                    .auto_grant_service_agent
                    .unwrap_or(matches!(args.auth, AuthMode::Dev)),
                kms_ops_per_minute: args.kms_ops_per_minute,
                token_auth: matches!(args.auth, AuthMode::Token),
                audit_stdout: args.audit_stdout,
                data_dir: args.data_dir,
                addr: args.addr,
                fake_clock: args.fake_clock,
                root_key_file: args.root_key_file,
                root_key_env: std::env::var("SEALSTORE_ROOT_KEY").ok().map(zeroize::Zeroizing::new),
                tls: args.tls_cert.zip(args.tls_key),
                public_url: args.public_url,
                xml_domain: args.xml_domain,
                multipart_ttl_secs: args.multipart_upload_ttl_secs,
                limits: sealstore::api::Limits {
                    max_body_bytes: usize::try_from(args.max_request_body_bytes)?,
                    body_idle_timeout: Duration::from_secs(args.body_idle_timeout_secs),
                    max_in_flight: usize::try_from(args.max_requests_in_flight)?,
                },
                default_soft_delete_seconds: args.default_soft_delete_seconds,
                lifecycle: sealstore::server::LifecyclePace {
                    interval_secs: args.lifecycle_interval_secs,
                    pages_per_step: usize::try_from(args.lifecycle_pages_per_step)?,
                },
                conn: sealstore::http_server::ConnLimits {
                    header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
                    max_connections: usize::try_from(args.max_connections)?,
                    shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
                },
            };
            tokio::runtime::Runtime::new()?.block_on(sealstore::server::serve(cfg))
        }
        Command::Iam { command } => run_iam(command),
        Command::Rekey(args) => {
            let json = args.json;
            let out = sealstore::client::rekey::run(*args)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(())
        }
        Command::Objects {
            command: ObjectsCommand::Find(args),
        } => {
            let out = sealstore::client::objects::find(args)?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Kms(args) => {
            let out = sealstore::client::kms::run(*args)?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}
