//! Policies in the data dir's SQLite database (the tables predate the backend split,
//! so existing data dirs open unchanged).

use super::Policy;
use super::backend::{PolicyBackend, current_etag};
use crate::IamError;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sealstore_core::blocking;
use std::sync::{Arc, Mutex};

pub struct SqlitePolicies {
    conn: Arc<Mutex<Connection>>,
}

impl SqlitePolicies {
    pub fn new(conn: Connection) -> Result<Self, IamError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS iam_policies (resource TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS iam_policy_version (id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER NOT NULL);
             INSERT OR IGNORE INTO iam_policy_version (id, v) VALUES (1, 0);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, off the async runtime's worker threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, IamError> + Send + 'static,
    ) -> Result<T, IamError> {
        let conn = self.conn.clone();
        blocking::run(move || f(&mut conn.lock().unwrap_or_else(|e| e.into_inner()))).await
    }

    /// Runs `f` in an immediate (write-locked) transaction that also bumps the version.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<Option<T>, IamError> + Send + 'static,
    ) -> Result<Option<T>, IamError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(out) = f(&tx)? else { return Ok(None) };
            tx.execute("UPDATE iam_policy_version SET v = v + 1 WHERE id = 1", [])?;
            tx.commit()?;
            Ok(Some(out))
        })
        .await
    }
}

fn read(c: &Connection, resource: &str) -> Result<Option<Policy>, IamError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM iam_policies WHERE resource = ?1")?
        .query_row([resource], |r| r.get(0))
        .optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

#[async_trait::async_trait]
impl PolicyBackend for SqlitePolicies {
    async fn version(&self) -> Result<i64, IamError> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT v FROM iam_policy_version WHERE id = 1")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn get_many(&self, resources: &[String]) -> Result<Vec<Option<Policy>>, IamError> {
        let resources = resources.to_vec();
        self.with(move |c| resources.iter().map(|r| read(c, r)).collect()).await
    }

    async fn put(&self, resource: &str, policy: &Policy, expected: Option<&[u8]>) -> Result<bool, IamError> {
        let (resource, doc) = (resource.to_owned(), serde_json::to_string(policy)?);
        let expected = expected.map(<[u8]>::to_vec);
        let done = self
            .write(move |tx| {
                let current = read(tx, &resource)?;
                if expected.is_some_and(|e| e != current_etag(current.as_ref())) {
                    return Ok(None);
                }
                tx.execute(
                    "INSERT INTO iam_policies(resource, doc) VALUES (?1, ?2) ON CONFLICT(resource) DO UPDATE SET doc = excluded.doc",
                    params![resource, doc],
                )?;
                Ok(Some(()))
            })
            .await?;
        Ok(done.is_some())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), IamError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.write(move |tx| {
            tx.execute("DELETE FROM iam_policies WHERE resource = ?1", [&to])?;
            tx.execute(
                "UPDATE iam_policies SET resource = ?2 WHERE resource = ?1",
                params![from, to],
            )?;
            Ok(Some(()))
        })
        .await
        .map(drop)
    }

    async fn remove(&self, resource: &str) -> Result<(), IamError> {
        let resource = resource.to_owned();
        self.write(move |tx| {
            tx.execute("DELETE FROM iam_policies WHERE resource = ?1", [resource])?;
            Ok(Some(()))
        })
        .await
        .map(drop)
    }
}
