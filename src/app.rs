//! Putting the parts together: build the cache tiers and the proxy from a
//! validated config, bind the listeners, serve until a signal, drain.

use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::Instrument;

use crate::cache::Cache;
use crate::cache::l1::L1;
use crate::config::Config;
use crate::events::spool::{Spool, SpoolError};
use crate::events::write::Layout;
use crate::events::writer::{self, Writer, WriterConfig};
use crate::proxy::Proxy;
use crate::redis::RedisPool;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config names something that cannot be used (exit 2).
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound (exit 1).
    #[error("{0}")]
    Spool(SpoolError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The running parts that need an orderly stop.
pub struct Running {
    pub proxy: Arc<Proxy>,
    pub writer: Writer,
}

/// Builds the proxy and the event writer. Must run inside the Tokio runtime
/// (it starts the Redis monitor, the cache writer and the event writer).
pub fn build(config: Arc<Config>) -> Result<Running, StartError> {
    let redis =
        RedisPool::new(&config.redis).map_err(|e| StartError::Config(format!("redis.url: {e}")))?;
    redis.spawn_monitor();
    let ev = &config.events;
    let spool = Spool::open(&ev.spool_dir, ev.spool_max_bytes).map_err(StartError::Spool)?;
    if !spool.is_empty() {
        tracing::info!(
            bytes = spool.bytes(),
            dir = %ev.spool_dir.display(),
            "spooled events found; replaying when redis answers"
        );
    }
    let (sink, writer) = writer::spawn(
        WriterConfig {
            layout: Layout::new(&config),
            queue_capacity: ev.queue_capacity,
            batch_max: ev.batch_max,
            flush_interval: ev.flush_interval,
            counter_flush: ev.counter_flush,
            redis: Some(config.redis.clone()),
        },
        Some(redis.clone()),
        Some(spool),
    );
    let logs = config.routes.iter().any(|r| r.log);
    let l1 = L1::new(config.cache.l1_max_bytes, config.cache.l1_ttl)
        .map(|l1| l1.counting_log_facts(logs));
    if let Some(l1) = &l1 {
        crate::admin::purge::spawn_invalidation_listener(
            redis.clone(),
            config.redis.key_prefix.clone(),
            l1.clone(),
        );
    }
    let cache = Cache::new(
        l1,
        Some(redis.clone()),
        config.cache.stale_if_error,
        config.cache.hit_for_pass,
    )
    .tagging(&config.redis.key_prefix)
    .jittered(config.cache.refresh_ahead > 0);
    let proxy = Proxy::new(config.clone(), cache, Some(sink));
    if let Some(refresh) = proxy.refresh_ahead() {
        crate::proxy::refresh::spawn_popularity(
            redis,
            config.redis.key_prefix.clone(),
            config.cache.refresh_ahead,
            refresh.clone(),
        );
    }
    Ok(Running { proxy, writer })
}

/// The two listeners a proxy serves on, bound by the caller.
pub struct Listeners {
    pub data: TcpListener,
    /// A std listener: the admin API runs on a runtime of its own.
    pub admin: std::net::TcpListener,
}

impl Listeners {
    /// Binds `listen` and `admin_listen` of the config.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let admin = std::net::TcpListener::bind(config.admin_listen).map_err(|source| {
            StartError::Bind {
                addr: config.admin_listen,
                source,
            }
        })?;
        let data = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(Listeners { data, admin })
    }
}

/// Binds both listeners, serves until `shutdown` resolves, then drains.
pub async fn serve(
    config: Arc<Config>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let listeners = Listeners::bind(&config).await?;
    run(config, listeners, shutdown).await
}

/// Runs the proxy on listeners bound beforehand (port 0 in tests) until
/// `shutdown` resolves, then drains: requests in flight finish, the admin
/// listener closes, the search log is written to Redis or the spool. The
/// library's entry point, as mini-redis's `server::run(listener, shutdown)`:
/// tests run the real server in process with it.
pub async fn run(
    config: Arc<Config>,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let Running { proxy, writer } = build(config.clone())?;
    let Listeners { data, admin } = listeners;
    let admin_addr = admin.local_addr().map_or(config.admin_listen, |a| a);
    let admin = crate::admin::spawn(admin, proxy.clone()).map_err(|source| StartError::Bind {
        addr: admin_addr,
        source,
    })?;
    tracing::info!(
        listen = %data.local_addr().map_or(config.listen, |a| a),
        admin = %admin_addr,
        upstream = %config.upstream.url,
        routes = config.routes.len(),
        "leafcache serving"
    );
    crate::server::run(data, proxy, shutdown)
        .instrument(tracing::info_span!("proxy"))
        .await;
    // Requests are done: write what they logged, to Redis or the spool.
    // The admin listener answers until then.
    writer.shutdown().await;
    admin.stop();
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}
