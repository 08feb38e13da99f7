//! The cache tier's handle on Redis: get many keys, set one with an expiry,
//! invalidate and publish. The cache never learns the topology: on a single
//! node, lookups and stores go over the pipelined connections of [`super::mux`]
//! (raw RESP, no copy of a value); on a cluster, through redis-rs's cluster
//! client, with stores drained by one background loop that pipelines what
//! has queued up. Both fast paths were measured (bench/RESULTS.md); callers
//! only see the three operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bb8_redis::redis;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::RedisFailure;
use super::RedisPool;
use super::mux::Mux;
use super::pool::Command;
use super::wire::{Commands, RespBuf};

/// Cluster mode: cache writes waiting for Redis; past this many, new stores
/// skip Redis (L1 still has them) rather than queueing without bound. (On a
/// single node they go straight to the store connection, which bounds its
/// own backlog.)
const WRITE_QUEUE: usize = 4096;
const WRITE_BATCH: usize = 128;

/// What the tier's Redis calls came to, for the metrics endpoint.
#[derive(Default)]
pub struct TierStats {
    /// Stores that skipped Redis because its write backlog was full.
    pub writes_dropped: AtomicU64,
    pub lookup_errors: AtomicU64,
    /// Shared with the connection that counts failed stores nobody waits for.
    pub store_errors: Arc<AtomicU64>,
}

/// One cache write for the cluster's write loop.
enum Write {
    Set {
        key: String,
        value: Bytes,
        ex_secs: u64,
        tags: Vec<String>,
    },
    /// UNLINK the keys, announce on the invalidation channel, then
    /// acknowledge. It shares the queue with stores so that it runs after
    /// any store queued before it.
    Unlink {
        keys: Vec<String>,
        notices: Vec<(String, String)>,
        done: oneshot::Sender<()>,
    },
}

/// The cache's handle on Redis.
pub struct CacheTier {
    pool: RedisPool,
    /// Cluster mode: the queue [`write_loop`] drains. (On a single node
    /// stores go to the pool's store connection.)
    queue: Option<mpsc::Sender<Write>>,
    stats: Arc<TierStats>,
}

impl CacheTier {
    /// Must run inside the Tokio runtime: on a single node it opens the
    /// store connection early, on a cluster it spawns the write loop.
    pub fn new(pool: RedisPool) -> CacheTier {
        let stats = Arc::new(TierStats::default());
        let queue = match pool.store_connection() {
            Some(conn) => {
                conn.connect_early();
                None
            }
            None => {
                let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                let span = tracing::info_span!("cache.writer");
                let writes = write_loop(pool.clone(), rx, stats.clone());
                tokio::spawn(tracing::Instrument::instrument(writes, span));
                Some(tx)
            }
        };
        CacheTier { pool, queue, stats }
    }

    /// The pool, for what is not a cache operation (health, pub/sub,
    /// purges, the admin API).
    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    pub fn stats(&self) -> &Arc<TierStats> {
        &self.stats
    }

    /// The values of `keys`, in one round trip within `deadline`; `None`
    /// when Redis failed (counted) or is marked down (not counted: nothing
    /// was asked).
    pub async fn get_many(&self, keys: &[&str], deadline: Instant) -> Option<Vec<Option<Bytes>>> {
        match self.pool.values(keys, deadline).await {
            Ok(values) => Some(values),
            Err(RedisFailure::Down) => None,
            Err(_) => {
                self.stats.lookup_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// `SET key value EX ex_secs` in the background, and the key filed
    /// under the tag indexes `tags` (see `cache::tags`); counted as
    /// dropped when the backlog is full, as a store error when Redis is
    /// marked down.
    pub fn set_ex(&self, key: &str, value: &Bytes, ex_secs: u64, tags: &[String]) {
        let sent = if let Some(queue) = &self.queue {
            queue
                .try_send(Write::Set {
                    key: key.to_owned(),
                    value: value.clone(),
                    ex_secs,
                    tags: tags.to_vec(),
                })
                .is_ok()
        } else if let Some(conn) = self.store_connection() {
            conn.send_discarding_many(
                |out| store(out, key, value, ex_secs, tags),
                &self.stats.store_errors,
            )
        } else {
            return;
        };
        if !sent {
            self.stats.writes_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// UNLINKs `keys` and PUBLISHes `notices` (channel, message), after
    /// every store already sent; waits at most `wait` for Redis to confirm.
    pub async fn invalidate(
        &self,
        keys: Vec<String>,
        notices: Vec<(String, String)>,
        wait: Duration,
    ) {
        let Some(queue) = &self.queue else {
            if let Some(conn) = self.store_connection() {
                self.unlink_shared(conn, &keys, &notices, wait).await;
            }
            return;
        };
        let (done, acked) = oneshot::channel();
        let write = Write::Unlink {
            keys,
            notices,
            done,
        };
        if tokio::time::timeout(wait, queue.send(write)).await.is_err() {
            self.stats.writes_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _ = tokio::time::timeout(wait, acked).await;
    }

    /// A single node's store connection while Redis is up; while it is
    /// marked down, `None`, and the skipped write counts as a store error.
    /// `None` too on a cluster.
    fn store_connection(&self) -> Option<&Mux> {
        let conn = self.pool.store_connection()?;
        if self.pool.health().is_up() {
            return Some(conn);
        }
        self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Invalidation on a single node: the UNLINKs and PUBLISHes go out
    /// after every store already sent, and are waited for.
    async fn unlink_shared(
        &self,
        conn: &Mux,
        keys: &[String],
        notices: &[(String, String)],
        wait: Duration,
    ) {
        let build = |out: &mut RespBuf| unlink_and_publish(out, keys, notices);
        if let Err(e) = conn.call_many(build, Instant::now() + wait).await {
            self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "cache invalidation in redis failed");
        }
    }
}

/// The one encoding of a store: `SET key value EX secs`, then the key filed
/// under its tags. Gives the number of commands.
fn store(out: &mut impl Commands, key: &str, value: &[u8], ex_secs: u64, tags: &[String]) -> usize {
    let mut secs = itoa::Buffer::new();
    out.command(&[
        b"SET",
        key.as_bytes(),
        value,
        b"EX",
        secs.format(ex_secs).as_bytes(),
    ]);
    if tags.is_empty() {
        return 1;
    }
    let now = crate::time::now_ms();
    let expires = now.saturating_add(ex_secs.saturating_mul(1000));
    1 + file_under_tags(out, key, tags, expires, now)
}

/// Files `key` under each of `tags` (`cache:tag:*`, chosen by `cache::tags`),
/// its entry expiring at `expires_ms`; returns the number of commands
/// appended.
fn file_under_tags(
    out: &mut impl Commands,
    key: &str,
    tags: &[String],
    expires_ms: u64,
    now_ms: u64,
) -> usize {
    let mut at = itoa::Buffer::new();
    let at = at.format(expires_ms).as_bytes();
    let before_now = format!("({now_ms}");
    for tag in tags {
        let tag = tag.as_bytes();
        out.command(&[b"ZADD", tag, at, key.as_bytes()]);
        out.command(&[b"ZREMRANGEBYSCORE", tag, b"-inf", before_now.as_bytes()]);
        // NX gives a new index an expiry; GT moves an existing one out.
        out.command(&[b"PEXPIREAT", tag, at, b"NX"]);
        out.command(&[b"PEXPIREAT", tag, at, b"GT"]);
    }
    tags.len() * 4
}

/// The one encoding of an invalidation: one UNLINK per key (in cluster
/// mode the keys of one URI live in different slots), then the notices.
/// Gives the number of commands.
fn unlink_and_publish(
    out: &mut impl Commands,
    keys: &[String],
    notices: &[(String, String)],
) -> usize {
    for key in keys {
        out.command(&[b"UNLINK", key.as_bytes()]);
    }
    for (channel, message) in notices {
        out.command(&[b"PUBLISH", channel.as_bytes(), message.as_bytes()]);
    }
    keys.len() + notices.len()
}

/// Drains cache writes into Redis, pipelining what has queued up.
async fn write_loop(pool: RedisPool, mut rx: mpsc::Receiver<Write>, stats: Arc<TierStats>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut acks = Vec::new();
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for w in batch.drain(..) {
            match w {
                Write::Set {
                    key,
                    value,
                    ex_secs,
                    tags,
                } => {
                    store(&mut pipe, &key, &value, ex_secs, &tags);
                }
                Write::Unlink {
                    keys,
                    notices,
                    done,
                } => {
                    unlink_and_publish(&mut pipe, &keys, &notices);
                    acks.push(done);
                }
            }
        }
        // A failed write loses a cache copy, never data: nothing to retry.
        let deadline = Instant::now() + Duration::from_secs(1);
        if let Err(e) = pool.query::<()>(Command::Pipe(&pipe), deadline).await {
            stats.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "cache write to redis skipped");
        }
        for done in acks.drain(..) {
            let _ = done.send(());
        }
    }
}
