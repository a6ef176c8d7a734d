//! The `sealstore` binary: `serve`, and client commands.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sealstore",
    version,
    about = "Object storage with customer-managed keys and an embedded Cloud KMS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (GCS JSON API, Cloud KMS REST API and ops API on one port).
    Serve(ServeArgs),
    /// gcloud-style Cloud KMS commands against a running server.
    Kms(Box<sealstore::client::kms::KmsArgs>),
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
    /// Blob backend: `file://PATH` (default `file://DATA_DIR/blobs`) or `memory://`.
    #[arg(long, env = "SEALSTORE_BLOB_STORE")]
    blob_store: Option<String>,
    /// Make each new key's project storage service agent an encrypter/decrypter on the
    /// key (default: on with --auth dev). Pass `--auto-grant-service-agent=false` to
    /// grant by hand with setIamPolicy.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    auto_grant_service_agent: Option<bool>,
    /// Per-project limit on KMS encrypt/decrypt requests per minute (unset: no limit).
    #[arg(long, env = "SEALSTORE_KMS_OPS_PER_MINUTE")]
    kms_ops_per_minute: Option<u32>,
    /// Allow `--auth dev` (no credentials, everyone is owner) on a non-loopback address.
    #[arg(long)]
    insecure_dev_on_public_address: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AuthMode {
    Dev,
    Token,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve(args) => {
            if matches!(args.auth, AuthMode::Token) {
                anyhow::bail!("--auth token is not implemented yet: only --auth dev (loopback) is available");
            }
            let cfg = sealstore::server::ServeConfig {
                allow_public_dev: args.insecure_dev_on_public_address,
                blob_store: args.blob_store,
                auto_grant_service_agent: args
                    .auto_grant_service_agent
                    .unwrap_or(matches!(args.auth, AuthMode::Dev)),
                kms_ops_per_minute: args.kms_ops_per_minute,
                data_dir: args.data_dir,
                addr: args.addr,
                fake_clock: args.fake_clock,
                root_key_file: args.root_key_file,
                root_key_env: std::env::var("SEALSTORE_ROOT_KEY").ok().map(zeroize::Zeroizing::new),
            };
            tokio::runtime::Runtime::new()?.block_on(sealstore::server::serve(cfg))
        }
        Command::Kms(args) => {
            let out = sealstore::client::kms::run(*args)?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}
