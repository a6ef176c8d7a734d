//! Where HMAC key rows live. Every backend passes `conformance.rs`. The preconditions
//! of an update are decided here, once, and each backend applies them to the row it
//! read inside the transaction that writes it.

use super::{ACTIVE, DELETED, HmacKeyMeta};
use crate::IamError;
use chrono::{DateTime, Utc};

/// Which keys `list` returns: a project's, by access id, after `after` ("" for the
/// first page), at most `limit`.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub project: String,
    pub service_account: Option<String>,
    pub show_deleted: bool,
    pub after: String,
    pub limit: usize,
}

/// A state change `set_state` makes if its preconditions hold.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub state: String,
    /// The etag the caller last saw, when it gave one.
    pub expected_etag: Option<String>,
    pub new_etag: String,
    pub now: DateTime<Utc>,
}

#[async_trait::async_trait]
pub trait HmacKeyBackend: Send + Sync {
    /// Stores a new key with its sealed secret.
    async fn insert(&self, meta: &HmacKeyMeta, sealed: &[u8]) -> Result<(), IamError>;
    /// The key `access_id` if it belongs to `project`.
    async fn get(&self, project: &str, access_id: &str) -> Result<Option<HmacKeyMeta>, IamError>;
    async fn list(&self, q: &ListQuery) -> Result<Vec<HmacKeyMeta>, IamError>;
    /// Applies `change` in one transaction if `check_state_change` allows it on the row
    /// read in that transaction; the updated key.
    async fn set_state(&self, project: &str, access_id: &str, change: &StateChange) -> Result<HmacKeyMeta, IamError>;
    /// Marks the key `DELETED` and erases its sealed secret, in one transaction, if
    /// `check_delete` allows it on the row read in that transaction.
    async fn delete(&self, project: &str, access_id: &str, new_etag: &str, now: DateTime<Utc>) -> Result<(), IamError>;
    /// The key and its sealed secret, whatever its project and state.
    async fn signing_row(&self, access_id: &str) -> Result<Option<(HmacKeyMeta, Vec<u8>)>, IamError>;
}

pub(super) fn not_found(project: &str, access_id: &str) -> IamError {
    IamError::NotFound(format!("Access ID not found in project {project}: {access_id}"))
}

/// Whether `change` may apply to `current` (the row of `project`, if any); the key as
/// it is after the change.
pub(super) fn check_state_change(
    current: Option<HmacKeyMeta>,
    project: &str,
    access_id: &str,
    change: &StateChange,
) -> Result<HmacKeyMeta, IamError> {
    let current = current.ok_or_else(|| not_found(project, access_id))?;
    if let Some(e) = &change.expected_etag
        && *e != current.etag
    {
        return Err(IamError::Aborted(format!(
            "The etag \"{e}\" does not match the key's current etag."
        )));
    }
    if current.state == DELETED {
        return Err(IamError::FailedPrecondition(
            "A deleted HMAC key cannot be updated.".into(),
        ));
    }
    Ok(HmacKeyMeta {
        state: change.state.clone(),
        updated: change.now,
        etag: change.new_etag.clone(),
        ..current
    })
}

/// Whether a key in `state` (`None`: no such key in the project) may be deleted.
pub(super) fn check_delete(state: Option<&str>, project: &str, access_id: &str) -> Result<(), IamError> {
    match state {
        None | Some(DELETED) => Err(not_found(project, access_id)),
        Some(ACTIVE) => Err(IamError::FailedPrecondition(
            "Cannot delete keys in 'ACTIVE' state: set the key INACTIVE first.".into(),
        )),
        Some(_) => Ok(()),
    }
}

/// `list`'s filter, for backends that filter in code.
pub(super) fn listed(q: &ListQuery, m: &HmacKeyMeta) -> bool {
    m.project == q.project
        && q.service_account.as_ref().is_none_or(|s| *s == m.service_account_email)
        && (q.show_deleted || m.state != DELETED)
        && m.access_id.as_str() > q.after.as_str()
}
