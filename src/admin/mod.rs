//! The admin listener: health and readiness for probes, and the `/v1` API of
//! docs/contract.md section 6. It runs on a runtime of its own so that probes answer even
//! when the data path is saturated.
//!
//! - [`api`]: the `/v1` endpoints (bearer token, JSON errors).
//! - [`feedback`], [`manual`]: what the application tells us about searches.
//! - [`record`]: what a search id is, and a logged search's record.
//! - [`history`], [`stats`], [`export`], [`purge`]: reading and purging what
//!   was collected; shared with the batch commands (`leafcache export`, `history`, `stats`).
//! - [`pages`]: every logged search of a range of days, a page at a time
//!   (the export and the quality report read through it).
//! - [`quality`]: the search quality metrics of a day, computed from small
//!   facts of each search (pure; no Redis).
//! - [`fields`], [`dates`]: request fields and UTC dates.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::proxy::Proxy;
use crate::server::idle::IdleIo;

mod api;
pub mod dates;
pub mod export;
pub mod feedback;
pub mod fields;
pub mod history;
pub mod manual;
pub mod pages;
pub mod purge;
pub mod quality;
pub mod record;
pub mod stats;

/// Errors a streamed body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Whole answers and the streamed export alike.
pub type AdminBody = BoxBody<Bytes, BoxError>;
type AdminResponse = Response<AdminBody>;

/// The running admin server; [`AdminServer::stop`] (or dropping it) closes
/// its listener and ends its thread.
pub struct AdminServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AdminServer {
    pub fn stop(mut self) {
        self.stop.take();
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the admin API on its own single-threaded runtime, on a thread of
/// its own, so that probes answer even when the data path is saturated.
/// The listener must be a std listener bound beforehand.
pub fn spawn(listener: std::net::TcpListener, proxy: Arc<Proxy>) -> std::io::Result<AdminServer> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("leafcache-admin")
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("leafcache-admin".into())
        .spawn(move || {
            let _span = tracing::info_span!("admin").entered();
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "admin listener unusable");
                        return;
                    }
                };
                tokio::select! {
                    () = serve(listener, proxy) => {}
                    _ = stopped => {}
                }
            })
        })?;
    Ok(AdminServer { stop: Some(stop) })
}

/// Connections are closed after `header_read_timeout` of silence, as on the
/// data port: silent clients would otherwise hold file descriptors the
/// proxy shares with its data path.
async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    let timeout = proxy.config.header_read_timeout;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (stream, requests) = IdleIo::new(stream, timeout);
        let proxy = proxy.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let in_flight = requests.start();
            async move { Ok::<_, Infallible>(in_flight.until_sent(route(&proxy, req).await)) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(tracing::Instrument::in_current_span(conn));
    }
}

async fn route(proxy: &Proxy, req: Request<Incoming>) -> AdminResponse {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(proxy).await,
        (&Method::GET, "/metrics") => metrics(proxy),
        (_, path) if path.starts_with("/v1/") => api::route(proxy, req).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn readyz(proxy: &Proxy) -> AdminResponse {
    let redis = proxy.cache.redis().is_some_and(|r| r.health().is_up());
    let upstream = upstream_reachable(proxy).await;
    let body = serde_json::json!({
        "redis": if redis { "up" } else { "down" },
        "upstream": if upstream { "up" } else { "down" },
        "spool_bytes": proxy
            .events
            .as_ref()
            .map_or(0, |e| e.stats.spool_bytes.load(std::sync::atomic::Ordering::Relaxed)),
    });
    json(StatusCode::OK, body.to_string())
}

/// A connection to the backend (with a verified TLS handshake for an https
/// one), bounded to 500 ms.
async fn upstream_reachable(proxy: &Proxy) -> bool {
    proxy.upstream().reachable(Duration::from_millis(500)).await
}

/// Prometheus scrape, in the OpenMetrics text format.
fn metrics(proxy: &Proxy) -> AdminResponse {
    let mut r = Response::new(full(Bytes::from(proxy.metrics.encode())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

fn full(body: Bytes) -> AdminBody {
    Full::new(body).map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: String) -> AdminResponse {
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
