//! The PostgreSQL connection pool every store with a PostgreSQL backend shares.
//!
//! `--database postgres://USER[:PASSWORD]@HOST:PORT/DB`. The URL can carry a password,
//! so no error built here quotes it.

pub use deadpool_postgres::Pool;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL did not parse; the reason, never the URL.
    #[error("database URL: {0}")]
    Url(String),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// The runtime a store's connections run on could not start or failed.
    #[error("database runtime: {0}")]
    Runtime(String),
}

/// A pool of at most `size` connections to `url`. Connections open lazily, so this
/// succeeds while the database is down; requests then fail until it is back.
pub fn pool(url: &str, size: usize) -> Result<Pool, PgError> {
    let cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
    let mgr = Manager::from_config(
        cfg,
        tokio_postgres::NoTls,
        ManagerConfig {
            // Fast: a connection that broke shows up as an error on its next use and is
            // dropped then; Verified would add a round trip to every checkout.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(mgr).max_size(size).build()?)
}

/// Runs `ddl` (idempotent `CREATE … IF NOT EXISTS` statements) once, serialised across
/// gateways starting together by an advisory lock.
pub async fn migrate(pool: &Pool, ddl: &str) -> Result<(), PgError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    // Any fixed key: every sealstore migration takes the same lock.
    tx.execute("SELECT pg_advisory_xact_lock(7305530747)", &[]).await?;
    tx.batch_execute(ddl).await?;
    tx.commit().await?;
    Ok(())
}

impl PgError {
    /// The database could not be reached or went away mid-request (retryable), as
    /// opposed to a statement it refused.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Db(e) => e.code().is_none(),
            Self::Url(_) | Self::Build(_) | Self::Runtime(_) => false,
        }
    }

    /// Whether the database refused a write because it breaks a unique constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Db(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}
