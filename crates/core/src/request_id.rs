//! The id of the request being served, for log lines and audit records.
//!
//! The API's outer middleware sets it for the request's task; `spawn_blocking` carries
//! it (and the request's tracing span) onto the blocking thread that does the request's
//! synchronous work, so the audit records written there name it too.

use std::sync::Arc;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// The current request's id, if this runs on behalf of one.
pub fn current() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// Runs `f` as request `id`.
pub async fn scope<F: std::future::Future>(id: Arc<str>, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// `tokio::task::spawn_blocking`, keeping the request id and tracing span.
pub fn spawn_blocking<T, F>(f: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let id = current();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        crate::blocking::marked(|| match id {
            Some(id) => REQUEST_ID.sync_scope(id, f),
            None => f(),
        })
    })
}

/// An incoming `x-request-id` when it is safe to log and echo (1–128 characters of
/// `[A-Za-z0-9._:-]`), else a fresh random id.
pub fn accept_or_new(incoming: Option<&str>) -> Arc<str> {
    match incoming {
        Some(v)
            if !v.is_empty()
                && v.len() <= 128
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) =>
        {
            Arc::from(v)
        }
        _ => {
            let mut b = [0u8; 12];
            // An id only names a request: on a failed draw, the time still tells them apart.
            if aws_lc_rs::rand::fill(&mut b).is_err() {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                b.copy_from_slice(&t.to_le_bytes()[..12]);
            }
            Arc::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_ids_are_kept_only_when_safe() {
        assert_eq!(&*accept_or_new(Some("abc-123_x.y:z")), "abc-123_x.y:z");
        for bad in ["", "a b", "line\nbreak", &"x".repeat(129), "é"] {
            let id = accept_or_new(Some(bad));
            assert_eq!(id.len(), 24, "{bad:?}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(accept_or_new(None), accept_or_new(None));
    }

    #[tokio::test]
    async fn blocking_work_sees_the_request_id() {
        let seen = scope(Arc::from("r1"), async { spawn_blocking(current).await.unwrap() }).await;
        assert_eq!(seen.as_deref(), Some("r1"));
        assert_eq!(current(), None);
    }
}
