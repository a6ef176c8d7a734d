//! The connection loop: hyper's HTTP/1.1 server with the limits axum::serve cannot set.
//!
//! - A request head (and the wait for the next request on a kept-alive connection)
//!   must arrive within the header read timeout, so a client that trickles a header or
//!   idles forever does not hold a connection.
//! - At most `max_connections` connections are served; beyond that the listener stops
//!   accepting and the kernel's backlog holds the rest.
//! - On shutdown the listener closes, kept-alive connections are told to finish, and
//!   requests in flight get up to the grace period before the process moves on.

use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The local address of the connection a request arrived on.
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub std::net::SocketAddr);

/// Connection-level limits (`sealstore serve --help` names the flags).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains for at most the
/// grace period. Returns whether every connection finished in time.
pub async fn serve<L>(
    mut listener: L,
    local_of: fn(&L::Io) -> Option<std::net::SocketAddr>,
    app: axum::Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> bool
where
    L: axum::serve::Listener,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, _peer) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        // Each request learns the address its connection came in on: links are built
        // from it (see `api::links`), never from an unchecked Host header.
        let local = local_of(&io).map(LocalAddr);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if let Some(l) = local {
                req.extensions_mut().insert(l);
            }
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        sealstore_core::metrics::connection_opened();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Header timeouts, resets and malformed requests end up here.
                tracing::debug!(error = %e, "connection ended with an error");
            }
            sealstore_core::metrics::connection_closed();
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace_s = limits.shutdown_grace.as_secs(), "requests still in flight at the end of the shutdown grace period");
            false
        }
    }
}
