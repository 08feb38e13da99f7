//! Accepting connections: HTTP/1.1 and h2c on one port, each connection
//! served by the [`Proxy`], at most `max_connections` at once, with a graceful
//! drain on shutdown. A connection idle for `header_read_timeout` is closed
//! ([`idle`]), so silent clients cannot hold the permits.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::proxy::Proxy;

pub mod idle;

use idle::IdleIo;

/// How long requests in flight may take to finish after shutdown starts.
pub const GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting and waits up to
/// [`GRACE`] for requests in flight.
pub async fn run(listener: TcpListener, proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.config.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let bound = proxy.config.max_connections.min(Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(bound));
    loop {
        // A permit before accepting: at the bound, new clients wait in the
        // kernel's backlog rather than being accepted and dropped.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => {
                permit.expect("the semaphore is never closed")
            }
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (stream, requests) = IdleIo::new(stream, proxy.config.header_read_timeout);
                let proxy = proxy.clone();
                let service = service_fn(move |req| {
                    let proxy = proxy.clone();
                    let in_flight = requests.start();
                    async move {
                        let response = proxy.handle(req, peer).await;
                        Ok::<_, Infallible>(in_flight.until_sent(response))
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(tracing::Instrument::in_current_span(async move {
                    // Held until the connection closes.
                    let _permit = permit;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "draining requests in flight"
    );
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}
