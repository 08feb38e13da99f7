//! The Redis connection pool behind a circuit breaker (the `health` module)
//! that makes a dead Redis cost the hot path nothing, and a monitor that
//! notices when it comes back.
//!
//! [`RedisPool`] is the one place that knows whether Redis is one node (bb8
//! over redis-rs multiplexed connections) or a cluster ([`super::cluster`]):
//! callers send the same commands and pipelines either way, and only
//! per-node work (`SCAN`, pub/sub) asks for [`RedisPool::nodes`].

use std::sync::Arc;

use bytes::Bytes;
use std::time::Duration;

use bb8_redis::bb8::{self, ManageConnection, Pool};
use bb8_redis::redis::aio::MultiplexedConnection;
use bb8_redis::redis::{self, AsyncConnectionConfig, FromRedisValue, RedisError};
use tokio::time::Instant;

use super::RedisConfig;
use super::RedisFailure;
use super::cluster::{Cluster, Master};
use super::health::{BACKOFF_MAX, BACKOFF_MIN, Health, LastError};
use super::mux::{Mux, MuxError};

/// A pooled connection that remembers whether it failed at the transport
/// level, so bb8 drops it instead of handing it out again. (bb8-redis's own
/// manager never reports a connection broken.)
pub struct Conn {
    inner: MultiplexedConnection,
    broken: bool,
}

struct Manager {
    client: redis::Client,
    config: AsyncConnectionConfig,
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        let inner = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        Ok(Conn {
            inner,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(&mut conn.inner).await
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}

/// The pool plus its health. Cheap to clone.
#[derive(Clone)]
pub struct RedisPool {
    backend: Backend,
    health: Arc<Health>,
}

#[derive(Clone)]
enum Backend {
    /// One node: a bb8 pool, and the client for pub/sub connections.
    Single {
        pool: Pool<Manager>,
        client: redis::Client,
        /// The connection cache lookups share.
        lookups: Mux,
        /// The connection cache stores and invalidations share: apart from
        /// lookups, so that a lookup never waits in Redis's input buffer
        /// behind kilobytes of stored answers.
        stores: Mux,
    },
    /// A cluster: one multiplexed connection per node, shared.
    Cluster(Cluster),
}

/// Where a per-node command (`SCAN`) runs: the one node, or each master of
/// a cluster in turn.
#[derive(Clone, Debug)]
pub enum Node {
    Only,
    Master(Master),
}

impl RedisPool {
    /// Builds the pool without connecting: Redis may be down at startup.
    /// Must run inside the Tokio runtime in cluster mode (the cluster client
    /// connects in the background).
    pub fn new(cfg: &RedisConfig) -> Result<RedisPool, RedisError> {
        let io_timeout = cfg.timeout.max(Duration::from_millis(250));
        let connect_timeout = Duration::from_secs(1).max(io_timeout);
        let last_error = LastError::default();
        let health = Arc::new(Health::new(super::redact_url(&cfg.url), last_error.clone()));
        if cfg.cluster {
            return Ok(RedisPool {
                backend: Backend::Cluster(Cluster::new(cfg, connect_timeout)?),
                health,
            });
        }
        let client = client(cfg)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let pool = bb8::Pool::builder()
            .max_size(cfg.pool_size)
            .min_idle(None)
            // A PING per checkout would double every lookup's round trips;
            // broken connections are flagged by the caller instead.
            .test_on_check_out(false)
            .retry_connection(false)
            .connection_timeout(connect_timeout)
            .error_sink(Box::new(last_error))
            .build_unchecked(Manager {
                client: client.clone(),
                config,
            });
        Ok(RedisPool {
            backend: Backend::Single {
                pool,
                client,
                lookups: Mux::new(cfg),
                stores: Mux::new(cfg),
            },
            health,
        })
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// On a single node, the pipelined connection cache stores and
    /// invalidations share, in order; `None` for a cluster.
    pub fn store_connection(&self) -> Option<&Mux> {
        match &self.backend {
            Backend::Single { stores, .. } => Some(stores),
            Backend::Cluster(_) => None,
        }
    }

    /// The values of `keys` (`GET`, or `MGET` for several), for cache
    /// lookups, through the breaker. On a single node they share one
    /// pipelined connection ([`super::mux`]) and come back without a copy.
    pub async fn values(
        &self,
        keys: &[&str],
        deadline: Instant,
    ) -> Result<Vec<Option<Bytes>>, RedisFailure> {
        if !self.health.is_up() {
            return Err(RedisFailure::Down);
        }
        let result = match (&self.backend, keys) {
            (Backend::Single { lookups, .. }, [key]) => lookups
                .get(key, deadline)
                .await
                .map(|v| vec![v])
                .map_err(RedisFailure::from),
            (Backend::Single { lookups, .. }, _) => lookups
                .mget(keys, deadline)
                .await
                .map_err(RedisFailure::from),
            // Accounted by query_unguarded.
            (Backend::Cluster(_), [key]) => {
                let cmd = redis::cmd("GET").arg(key).to_owned();
                return self
                    .query_unguarded::<Option<Vec<u8>>>(Command::Cmd(&cmd), deadline)
                    .await
                    .map(|v| vec![v.map(Bytes::from)]);
            }
            (Backend::Cluster(_), _) => {
                let cmd = redis::cmd("MGET").arg(keys).to_owned();
                return self
                    .query_unguarded::<Vec<Option<Vec<u8>>>>(Command::Cmd(&cmd), deadline)
                    .await
                    .map(|values| values.into_iter().map(|v| v.map(Bytes::from)).collect());
            }
        };
        self.account(&result);
        result
    }

    /// Runs one command (or pipeline) with a deadline, through the breaker.
    pub async fn query<T: FromRedisValue>(
        &self,
        cmd: Command<'_>,
        deadline: Instant,
    ) -> Result<T, RedisFailure> {
        if !self.health.is_up() {
            return Err(RedisFailure::Down);
        }
        self.query_unguarded(cmd, deadline).await
    }

    async fn query_unguarded<T: FromRedisValue>(
        &self,
        cmd: Command<'_>,
        deadline: Instant,
    ) -> Result<T, RedisFailure> {
        let result = tokio::time::timeout_at(deadline, async {
            match &self.backend {
                Backend::Single { pool, .. } => {
                    let mut conn = pool
                        .get()
                        .await
                        .map_err(|e| RedisFailure::Pool(self.health.last_error.explain(e)))?;
                    let r = match cmd {
                        Command::Cmd(c) => c.query_async::<T>(&mut conn.inner).await,
                        Command::Pipe(p) => p.query_async::<T>(&mut conn.inner).await,
                    };
                    if let Err(e) = &r
                        && (e.is_io_error()
                            || e.is_connection_dropped()
                            || e.is_unrecoverable_error())
                    {
                        conn.broken = true;
                    }
                    r.map_err(RedisFailure::from)
                }
                // redis-rs reconnects the nodes of a cluster by itself.
                Backend::Cluster(cluster) => match cmd {
                    Command::Cmd(c) => cluster.query_cmd(c).await,
                    Command::Pipe(p) => cluster.query_pipe(p).await,
                }
                .map_err(RedisFailure::from),
            }
        })
        .await
        .unwrap_or(Err(RedisFailure::Timeout));
        self.account(&result);
        result
    }

    /// Feeds the outcome of a call to the breaker.
    fn account<T>(&self, result: &Result<T, RedisFailure>) {
        match result {
            Ok(_) => self.health.success(),
            // A server-side error reply (wrong type, OOM) says Redis is up.
            Err(RedisFailure::Redis(e)) if !is_transport(e) => self.health.success(),
            Err(RedisFailure::Lookup(MuxError::Reply(_))) => self.health.success(),
            Err(e) => {
                let refused = matches!(e, RedisFailure::Redis(r) if r.is_connection_refusal())
                    || matches!(e, RedisFailure::Pool(_));
                self.health.failure(e, refused);
            }
        }
    }

    /// Whether Redis can be used, asked past the breaker (which it feeds):
    /// `PING` on a single node; on a cluster, every slot has a master and
    /// every master answers (one unreachable master counts as Redis down:
    /// lookups skip Redis and events are spooled until it is back).
    pub async fn probe(&self, deadline: Instant) -> Result<(), RedisFailure> {
        match &self.backend {
            Backend::Single { .. } => {
                self.query_unguarded::<()>(Command::Cmd(&redis::cmd("PING")), deadline)
                    .await
            }
            Backend::Cluster(cluster) => {
                let result = tokio::time::timeout_at(deadline, cluster.probe())
                    .await
                    .map_err(|_| RedisFailure::Timeout)
                    .and_then(|r| r.map_err(RedisFailure::from));
                self.account(&result);
                result
            }
        }
    }

    /// The nodes a per-node command must visit: the node itself, or every
    /// master of the cluster.
    pub async fn nodes(&self, deadline: Instant) -> Result<Vec<Node>, RedisFailure> {
        match &self.backend {
            Backend::Single { .. } => Ok(vec![Node::Only]),
            Backend::Cluster(cluster) => {
                if !self.health.is_up() {
                    return Err(RedisFailure::Down);
                }
                let result = tokio::time::timeout_at(deadline, cluster.masters())
                    .await
                    .map_err(|_| RedisFailure::Timeout)
                    .and_then(|r| r.map_err(RedisFailure::from));
                self.account(&result);
                Ok(result?.into_iter().map(Node::Master).collect())
            }
        }
    }

    /// Runs one command on one node (from [`RedisPool::nodes`]), through the
    /// breaker.
    pub async fn query_on<T: FromRedisValue>(
        &self,
        node: &Node,
        cmd: &redis::Cmd,
        deadline: Instant,
    ) -> Result<T, RedisFailure> {
        let (Node::Master(master), Backend::Cluster(cluster)) = (node, &self.backend) else {
            return self.query(Command::Cmd(cmd), deadline).await;
        };
        if !self.health.is_up() {
            return Err(RedisFailure::Down);
        }
        let result = tokio::time::timeout_at(deadline, cluster.query_on(master, cmd))
            .await
            .map_err(|_| RedisFailure::Timeout)
            .and_then(|r| r.map_err(RedisFailure::from));
        self.account(&result);
        result
    }

    /// A pub/sub connection (not pooled; outside the breaker, whose
    /// reconnects are the caller's). In a cluster, to the first master that
    /// answers: a classic `PUBLISH` reaches the subscribers of every node.
    pub async fn pubsub(&self, deadline: Instant) -> Result<redis::aio::PubSub, RedisFailure> {
        let clients = match &self.backend {
            Backend::Single { client, .. } => vec![client.clone()],
            Backend::Cluster(cluster) => {
                let masters = tokio::time::timeout_at(deadline, cluster.masters())
                    .await
                    .map_err(|_| RedisFailure::Timeout)??;
                masters
                    .iter()
                    .map(|m| cluster.node_client(m))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let mut last = RedisFailure::Timeout;
        for client in clients {
            match tokio::time::timeout_at(deadline, client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last = RedisFailure::Redis(e),
                Err(_) => return Err(RedisFailure::Timeout),
            }
        }
        Err(last)
    }

    /// Pings Redis in the background: every second while up, with a backoff
    /// from 100 ms to 5 s while down, so an outage shows within seconds and a
    /// recovery is noticed without any request paying for the probe.
    pub fn spawn_monitor(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let span = tracing::info_span!("redis.monitor");
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut backoff = BACKOFF_MIN;
                loop {
                    let deadline = Instant::now() + Duration::from_secs(1);
                    let ok = this.probe(deadline).await.is_ok();
                    if ok {
                        backoff = BACKOFF_MIN;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    } else {
                        // A failed ping alone marks Redis down.
                        if this.health.is_up() {
                            this.health.failure(&RedisFailure::Timeout, true);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            },
            span,
        ))
    }
}

/// A client for `cfg.url`: plain, `rediss://` with the platform's roots, or
/// `rediss://` trusting only `tls_ca_file` when it is set.
pub fn client(cfg: &RedisConfig) -> Result<redis::Client, RedisError> {
    if cfg.url.starts_with("rediss://") || cfg.tls_ca_pem.is_some() {
        // rustls needs a process-wide crypto provider; ours is ring (no
        // build-time downloads, no cmake). A second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match &cfg.tls_ca_pem {
        // A private CA (Memorystore's server CA): the only root trusted.
        // Errors when the URL is not rediss://.
        Some(pem) => redis::Client::build_with_tls(
            cfg.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(cfg.url.as_str()),
    }
}

/// A single command or a pipeline.
pub enum Command<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
}

/// Errors that say Redis (or, in a cluster, part of it) cannot answer, as
/// opposed to an answer that is an error.
fn is_transport(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            crate::redis::redact_url("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(
            crate::redis::redact_url("rediss://user:pw@h"),
            "rediss://***@h"
        );
        assert_eq!(
            crate::redis::redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            crate::redis::redact_url("rediss://leaf:a/b@c@h:6378/0"),
            "rediss://***@h:6378/0"
        );
    }

    fn redis_config(url: &str, ca: Option<Vec<u8>>) -> RedisConfig {
        RedisConfig {
            url: url.to_owned(),
            pool_size: 1,
            timeout: Duration::from_millis(50),
            key_prefix: crate::redis::keys::Prefix::default(),
            cluster: false,
            tls_ca_file: ca.as_ref().map(|_| "ca.pem".into()),
            tls_ca_pem: ca,
        }
    }

    fn ca_pem() -> Vec<u8> {
        rcgen::generate_simple_self_signed(vec!["redis.test".to_owned()])
            .unwrap()
            .cert
            .pem()
            .into_bytes()
    }

    #[test]
    fn rediss_urls_build_a_client_with_or_without_a_private_ca() {
        assert!(client(&redis_config("rediss://:pw@10.0.0.3:6378", None)).is_ok());
        assert!(client(&redis_config("rediss://10.0.0.3:6378", Some(ca_pem()))).is_ok());
        assert!(client(&redis_config("redis://leaf:pw@10.0.0.3", None)).is_ok());
    }

    #[test]
    fn a_private_ca_with_a_plain_url_is_refused_without_showing_the_password() {
        let err = client(&redis_config("redis://:s3cret@10.0.0.3", Some(ca_pem())))
            .expect_err("a CA needs rediss://");
        let shown = err.to_string();
        assert!(shown.contains("rediss://"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
