//! Synchronous store work (SQLite) from async code without blocking a runtime thread.
//!
//! Async store traits are served by SQLite through `run`: on a runtime worker thread it
//! moves the work to the blocking pool; on a thread of that pool (a handler that already
//! does its request's synchronous work there, such as the KMS face) it runs inline, so a
//! request pays for one thread hop, not one per store call.

use std::cell::Cell;

thread_local! {
    static ON_BLOCKING_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread marked as a blocking-pool thread.
pub(crate) fn marked<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            ON_BLOCKING_POOL.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(ON_BLOCKING_POOL.with(|c| c.replace(true)));
    f()
}

/// Whether this thread runs work handed to `request_id::spawn_blocking`.
pub fn on_blocking_pool() -> bool {
    ON_BLOCKING_POOL.with(Cell::get)
}

/// `f`'s result, computed on the blocking pool (inline when already there). A panic in
/// `f` resumes in the caller, as if `f` had run inline.
pub async fn run<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if on_blocking_pool() {
        return f();
    }
    match crate::request_id::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task cancelled: {e}"),
    }
}

/// Runs synchronous store work in place without stalling the runtime: on a worker of a
/// multi-thread runtime the worker's other tasks move to another thread first
/// (`block_in_place`); on the blocking pool, on a current-thread runtime (the CLI, unit
/// tests) or outside any runtime it simply runs. Unlike `run`, `f` may borrow, so a
/// synchronous backend can serve an async trait method without copying its arguments.
pub fn scoped<T>(f: impl FnOnce() -> T) -> T {
    if on_blocking_pool() {
        return f();
    }
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Waits for `fut` on the runtime `h` (the one a database pool was made in, so the
/// driver's connection tasks live there and not in a throwaway runtime), from any
/// synchronous context: a runtime worker (handed off first), the blocking pool, or a
/// plain thread. Refused on a current-thread runtime's own thread, which would deadlock.
pub fn wait_on<F: std::future::Future>(h: &tokio::runtime::Handle, fut: F) -> Result<F::Output, WaitError> {
    match tokio::runtime::Handle::try_current() {
        Ok(cur) if cur.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread => Err(WaitError),
        _ => Ok(tokio::task::block_in_place(|| h.block_on(fut))),
    }
}

/// `wait_on` was called on a current-thread runtime's own thread.
#[derive(Debug, thiserror::Error)]
#[error("cannot wait for async work on a current-thread runtime's own thread")]
pub struct WaitError;

/// `f`'s output, awaited from synchronous code (a sync trait method such as storage's
/// `KeyService`, which runs on runtime workers and on the blocking pool alike):
/// - on the blocking pool, inline (a SQLite store's work then runs on this thread);
/// - on a multi-thread runtime's worker, in `block_in_place`, so the other tasks of the
///   worker move elsewhere meanwhile;
/// - on a current-thread runtime (tests, the CLI), on a scoped thread of its own: that
///   runtime's one thread cannot wait on itself. Futures that need the runtime's I/O
///   driver (PostgreSQL) cannot finish there; SQLite and memory stores can.
/// - outside any runtime, on a current-thread runtime made for the call.
pub fn wait<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    let mut f = std::pin::pin!(f);
    let current = Handle::try_current();
    // Most calls find what they need in a cache and finish on the first poll: answer
    // those without `block_in_place`, which hands the worker's other tasks to another
    // thread (a few microseconds on every CMEK wrap and unwrap). A future that is not
    // ready registers its waker again when `block_on` polls it. Only inside a runtime:
    // tokio's futures panic when first polled outside one.
    if current.is_ok()
        && let std::task::Poll::Ready(v) = f
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        return v;
    }
    match current {
        Ok(h) if on_blocking_pool() => h.block_on(f),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| h.block_on(f)),
        Ok(h) => std::thread::scope(|s| match s.spawn(|| h.block_on(f)).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
        Err(_) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(f),
            // Only when the OS refuses the runtime's resources: nothing can run then.
            Err(e) => panic!("cannot start a runtime: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_off_the_worker_and_inline_on_the_pool() {
        assert!(!on_blocking_pool());
        assert!(run(on_blocking_pool).await, "moved to the blocking pool");
        let inline = crate::request_id::spawn_blocking(|| {
            let here = std::thread::current().id();
            let fut = run(move || std::thread::current().id() == here);
            tokio::runtime::Handle::current().block_on(fut)
        })
        .await
        .unwrap();
        assert!(inline, "already on the pool: no second hop");
        assert!(!on_blocking_pool(), "the flag does not leak");
    }

    async fn hop() -> bool {
        run(on_blocking_pool).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_works_on_workers_and_on_the_pool() {
        assert!(wait(hop()), "on a worker");
        let on_pool = crate::request_id::spawn_blocking(|| wait(hop())).await.unwrap();
        assert!(on_pool);
        // A blocking thread not marked as the pool's (the server's start-up work).
        let unmarked = tokio::task::spawn_blocking(|| wait(hop())).await.unwrap();
        assert!(unmarked);
    }

    #[tokio::test]
    async fn a_ready_future_is_answered_in_place() {
        let here = std::thread::current().id();
        assert!(
            wait(async move { std::thread::current().id() == here }),
            "no thread of its own"
        );
        let later = async {
            tokio::task::yield_now().await;
            std::thread::current().id() == here
        };
        assert!(!wait(later), "a pending future still finishes, elsewhere");
    }

    #[tokio::test]
    async fn wait_works_on_a_current_thread_runtime() {
        assert!(wait(hop()));
    }

    #[test]
    fn wait_works_outside_a_runtime() {
        assert!(wait(hop()));
    }
}
