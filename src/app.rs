//! Putting the parts together: build the cache tiers and the proxy from a
//! validated config, bind the listeners, serve until a signal, drain.

use std::sync::Arc;

use tokio::net::TcpListener;

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
            layout: Layout {
                prefix: config.redis.key_prefix.clone(),
                retention_secs: ev.retention.as_secs().max(1),
                history_limit: ev.history_limit,
            },
            queue_capacity: ev.queue_capacity,
            batch_max: ev.batch_max,
            flush_interval: ev.flush_interval,
            // A cluster routes commands by slot, which only the pool's
            // cluster client knows; a single node gets the writer's own
            // connection.
            direct: (!config.redis.cluster).then(|| config.redis.clone()),
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
        Some(redis),
        config.cache.stale_if_error,
        config.cache.hit_for_pass,
    );
    let proxy = Proxy::new(config, cache, Some(sink));
    Ok(Running { proxy, writer })
}

/// Binds both listeners, serves until `shutdown` resolves, then drains.
pub async fn serve(
    config: Arc<Config>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let Running { proxy, writer } = build(config.clone())?;
    let admin =
        std::net::TcpListener::bind(config.admin_listen).map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            source,
        })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    crate::admin::spawn(admin, proxy.clone()).map_err(|source| StartError::Bind {
        addr: config.admin_listen,
        source,
    })?;
    tracing::info!(
        listen = %listener.local_addr().map_or(config.listen, |a| a),
        admin = %config.admin_listen,
        upstream = %config.upstream.url,
        routes = config.routes.len(),
        "leafcache serving"
    );
    crate::server::run(listener, proxy, shutdown).await;
    // Requests are done: write what they logged, to Redis or the spool.
    writer.shutdown().await;
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
