//! Policies in PostgreSQL (`--database postgres://…`), shared by every gateway on it.

use super::Policy;
use super::backend::{PolicyBackend, current_etag};
use crate::IamError;
use sealstore_core::pg::{self, PgError, Pool};

const DDL: &str = "CREATE TABLE IF NOT EXISTS iam_policies (resource TEXT PRIMARY KEY, doc TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS iam_policy_version (id INTEGER PRIMARY KEY CHECK (id = 1), v BIGINT NOT NULL);
    INSERT INTO iam_policy_version (id, v) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;";

/// Every write starts by bumping the one version row, which row-locks it until commit:
/// policy writers are serialised, so an etag read after the bump is still current when
/// the write commits (concurrent setters with one etag: exactly one wins), and a
/// rename never races a set. Policy writes are rare; checks never take the lock.
const BUMP: &str = "UPDATE iam_policy_version SET v = v + 1 WHERE id = 1";

pub struct PgPolicies {
    pool: Pool,
}

impl PgPolicies {
    /// Creates the tables if they are missing.
    pub async fn new(pool: Pool) -> Result<Self, IamError> {
        pg::migrate(&pool, DDL).await?;
        Ok(Self { pool })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, IamError> {
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }
}

fn parse(doc: &str) -> Result<Policy, IamError> {
    Ok(serde_json::from_str(doc)?)
}

#[async_trait::async_trait]
impl PolicyBackend for PgPolicies {
    async fn version(&self) -> Result<i64, IamError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("SELECT v FROM iam_policy_version WHERE id = 1")
            .await?;
        Ok(c.query_one(&stmt, &[]).await?.get(0))
    }

    async fn get_many(&self, resources: &[String]) -> Result<Vec<Option<Policy>>, IamError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("SELECT resource, doc FROM iam_policies WHERE resource = ANY($1)")
            .await?;
        let rows = c.query(&stmt, &[&resources]).await?;
        let mut found = std::collections::HashMap::new();
        for r in &rows {
            found.insert(r.get::<_, String>(0), parse(r.get(1))?);
        }
        Ok(resources.iter().map(|r| found.get(r).cloned()).collect())
    }

    async fn put(&self, resource: &str, policy: &Policy, expected: Option<&[u8]>) -> Result<bool, IamError> {
        let doc = serde_json::to_string(policy)?;
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute(BUMP, &[]).await?;
        if let Some(expected) = expected {
            let current = tx
                .query_opt("SELECT doc FROM iam_policies WHERE resource = $1", &[&resource])
                .await?
                .map(|r| parse(r.get(0)))
                .transpose()?;
            if expected != current_etag(current.as_ref()) {
                // Dropping the transaction rolls the bump back.
                return Ok(false);
            }
        }
        tx.execute(
            "INSERT INTO iam_policies (resource, doc) VALUES ($1, $2)
             ON CONFLICT (resource) DO UPDATE SET doc = excluded.doc",
            &[&resource, &doc],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), IamError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute(BUMP, &[]).await?;
        tx.execute("DELETE FROM iam_policies WHERE resource = $1", &[&to])
            .await?;
        tx.execute(
            "UPDATE iam_policies SET resource = $2 WHERE resource = $1",
            &[&from, &to],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove(&self, resource: &str) -> Result<(), IamError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute(BUMP, &[]).await?;
        tx.execute("DELETE FROM iam_policies WHERE resource = $1", &[&resource])
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
