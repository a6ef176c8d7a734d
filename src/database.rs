//! Where the persistent state lives: the data dir's SQLite file (the default), or a
//! PostgreSQL database shared by any number of gateways (`--database postgres://…`).
//! Every store opens through here, so a server and the `iam` commands always agree.

use crate::iam::PolicyStore;
use crate::iam::hmac_keys::HmacKeyStore;
use crate::iam::tokens::TokenStore;
use crate::kms::seal::Sealer;
use crate::kms::store::{KmsStore, MemoryKmsStore, PgKmsStore, SqliteKmsStore};
use crate::rootkey::RootKey;
use crate::storage::meta::{MemoryMetaStore, MetaStore, PgMetaStore, SqliteMetaStore};
use anyhow::Context;
use sealstore_core::leases::Leases;
use sealstore_core::settings::Settings;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Connections one process keeps open to PostgreSQL, shared by all its stores but KMS.
pub const PG_POOL_SIZE: usize = 32;
/// The KMS store's own connections (see `PgKmsStore::connect`): commits are serialised
/// by the core, so a few serve the refresher, commits and sealed-secret reads.
pub const KMS_POOL_SIZE: usize = 4;

#[derive(Clone)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres {
        pool: sealstore_core::pg::Pool,
        /// Kept for the KMS store's own pool; may carry a password, never printed.
        url: Arc<zeroize::Zeroizing<String>>,
    },
    /// `memory://`: nothing is kept when the process ends (tests, throwaway runs).
    Memory,
}

impl std::fmt::Debug for Database {
    // The URL may carry a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Self::Postgres { .. } => f.write_str("Postgres(<url redacted>)"),
            Self::Memory => f.write_str("Memory"),
        }
    }
}

impl Database {
    /// `spec` is `--database`: `postgres://…` (or `postgresql://…`), `memory://`; none means
    /// `DATA_DIR/sealstore.db`. The pool connects lazily, so a database that is down
    /// now shows up as the first store's error, not here.
    pub fn open(spec: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        match spec {
            None => Ok(Self::Sqlite(data_dir.join("sealstore.db"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(Self::Postgres {
                pool: sealstore_core::pg::pool(url, PG_POOL_SIZE).context("--database")?,
                url: Arc::new(zeroize::Zeroizing::new(url.to_owned())),
            }),
            Some("memory://") => Ok(Self::Memory),
            Some(_) => anyhow::bail!(
                "unsupported --database: use postgres://USER@HOST:PORT/DB or memory://, or leave it unset for SQLite"
            ),
        }
    }

    fn sqlite(path: &Path) -> anyhow::Result<crate::db::Connection> {
        crate::db::open(path).with_context(|| format!("opening {}", path.display()))
    }

    pub async fn settings(&self) -> anyhow::Result<Settings> {
        Ok(match self {
            Self::Sqlite(p) => Settings::sqlite(Self::sqlite(p)?)?,
            Self::Postgres { pool, .. } => Settings::postgres(pool.clone()).await?,
            Self::Memory => Settings::memory(),
        })
    }

    pub async fn kms_store(&self) -> anyhow::Result<Arc<dyn KmsStore>> {
        Ok(match self {
            Self::Sqlite(p) => Arc::new(SqliteKmsStore::new(Self::sqlite(p)?)?),
            Self::Postgres { url, .. } => Arc::new(PgKmsStore::connect(url, KMS_POOL_SIZE).await?),
            Self::Memory => Arc::new(MemoryKmsStore::new()),
        })
    }

    pub async fn policies(&self) -> anyhow::Result<PolicyStore> {
        Ok(match self {
            Self::Sqlite(p) => PolicyStore::sqlite(Self::sqlite(p)?)?,
            Self::Postgres { pool, .. } => PolicyStore::postgres(pool.clone()).await?,
            Self::Memory => PolicyStore::memory(),
        })
    }

    pub async fn tokens(&self, root: &RootKey) -> anyhow::Result<TokenStore> {
        Ok(match self {
            Self::Sqlite(p) => TokenStore::sqlite(Self::sqlite(p)?, root)?,
            Self::Postgres { pool, .. } => TokenStore::postgres(pool.clone(), root).await?,
            Self::Memory => TokenStore::new(Arc::new(crate::iam::tokens::MemoryTokens::default()), root),
        })
    }

    pub async fn hmac_keys(&self, root: &RootKey) -> anyhow::Result<HmacKeyStore> {
        Ok(match self {
            Self::Sqlite(p) => HmacKeyStore::sqlite(Self::sqlite(p)?, Sealer::new(root))?,
            Self::Postgres { pool, .. } => HmacKeyStore::postgres(pool.clone(), Sealer::new(root)).await?,
            Self::Memory => HmacKeyStore::memory(Sealer::new(root)),
        })
    }

    pub async fn meta(&self) -> anyhow::Result<Arc<dyn MetaStore>> {
        Ok(match self {
            Self::Sqlite(p) => Arc::new(SqliteMetaStore::open(p)?),
            Self::Postgres { pool, .. } => Arc::new(PgMetaStore::new(pool.clone()).await?),
            Self::Memory => Arc::new(MemoryMetaStore::new()),
        })
    }

    /// Leases on background work, so that of all the processes on one database exactly
    /// one does each piece at a time.
    pub async fn leases(&self) -> anyhow::Result<Leases> {
        Ok(match self {
            Self::Sqlite(p) => Leases::sqlite(Self::sqlite(p)?)?,
            Self::Postgres { pool, .. } => Leases::postgres(pool.clone()).await?,
            Self::Memory => Leases::memory(),
        })
    }
}
