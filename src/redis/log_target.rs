//! The search log's way into Redis: on a single node, the writer's own
//! connection speaking raw RESP ([`super::direct`]; batches are encoded
//! straight into a buffer, the measured fast path of bench/RESULTS.md); on a
//! cluster, which routes commands by slot that only the pool's cluster client
//! knows, `redis` pipelines through the pool. Which one is decided here, from
//! the config, not by the caller.

use std::time::Duration;

use tokio::time::Instant;

use super::RedisConfig;
use super::RedisPool;
use super::direct::{DirectConn, DirectError};
use super::pool::Command;
use super::wire::RespBuf;

pub use super::direct::{TRANSACTION_BYTES, TRANSACTION_MAX};
/// The commands for a target that does not speak raw RESP.
pub use redis::Pipeline;

/// Commands for a [`LogTarget`], encoded the way it sends them: raw RESP
/// for its own connection, a `redis` pipeline (a transaction) for the pool.
/// Fill it with [`super::Commands`]; [`LogTarget::send`] cuts it into
/// transactions of at most [`TRANSACTION_MAX`] commands.
pub enum Batch {
    Raw(RespBuf),
    Pipe(Pipeline),
}

/// Which kind of [`Batch`] a target takes, to make them away from it (the
/// writer encodes a batch while the previous one is in Redis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    Raw,
    Pipe,
}

impl BatchKind {
    pub fn batch(self) -> Batch {
        match self {
            BatchKind::Raw => Batch::Raw(RespBuf::default()),
            BatchKind::Pipe => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                Batch::Pipe(pipe)
            }
        }
    }
}

impl Batch {
    /// Empties it, keeping its memory for the next batch.
    pub fn clear(&mut self) {
        match self {
            Batch::Raw(buf) => buf.clear(),
            Batch::Pipe(pipe) => pipe.clear(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Batch::Raw(buf) => buf.is_empty(),
            Batch::Pipe(pipe) => pipe.is_empty(),
        }
    }

    /// The memory it holds, roughly: an outsized one is not kept for reuse.
    pub fn bytes(&self) -> usize {
        match self {
            Batch::Raw(buf) => buf.as_bytes().len(),
            // Only ever used for the pool, where batches are not reused.
            Batch::Pipe(_) => 0,
        }
    }
}

impl super::Commands for Batch {
    fn command(&mut self, args: &[&[u8]]) {
        match self {
            Batch::Raw(buf) => buf.command(args),
            Batch::Pipe(pipe) => pipe.command(args),
        }
    }
}

/// How one write may take in Redis before its outcome counts as unknown.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the writer's own connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What sending a batch came to: `Ok` when Redis ran it, with the error
/// reply that sending it again would not cure, if any (a key of the wrong
/// type); `Err` when it must be sent again (spooled).
pub type Sent = Result<Option<String>, String>;

/// An empty pipeline, to fill with [`super::Commands`] for
/// [`LogTarget::send_pipe`] (made atomic there by the caller, as a batch is
/// one transaction).
pub fn pipeline() -> Pipeline {
    redis::pipe()
}

/// Where the search log is written.
pub struct LogTarget {
    way: Way,
}

enum Way {
    /// Its own connection: commands encoded straight into a buffer.
    Direct(Link),
    /// Through the pool, as `redis` pipelines.
    Pool(RedisPool),
}

impl LogTarget {
    /// The target for `config`: its own connection to a single node, the
    /// pool for a cluster (or when there is no config); `None` when there is
    /// neither.
    pub fn new(config: Option<&RedisConfig>, pool: Option<RedisPool>) -> Option<LogTarget> {
        let way = match (config, pool) {
            (Some(config), _) if !config.cluster => Way::Direct(Link::new(config.clone())),
            (_, Some(pool)) => Way::Pool(pool),
            (_, None) => return None,
        };
        Some(LogTarget { way })
    }

    /// Through the pool, whatever the topology (`leafcache replay`).
    pub fn pool(pool: RedisPool) -> LogTarget {
        LogTarget {
            way: Way::Pool(pool),
        }
    }

    /// The kind of [`Batch`] this target sends.
    pub fn batch_kind(&self) -> BatchKind {
        match self.way {
            Way::Direct(_) => BatchKind::Raw,
            Way::Pool(_) => BatchKind::Pipe,
        }
    }

    /// Sends a batch as transactions of at most [`TRANSACTION_MAX`]
    /// commands, within [`WRITE_TIMEOUT`], connecting first when needed (a
    /// cluster splits transactions by slot anyway). A batch of the other
    /// kind than [`LogTarget::batch_kind`] is refused.
    pub async fn send(&mut self, batch: &Batch) -> Sent {
        // `&mut`: the direct connection is not `Sync`, and the writer's
        // future must stay `Send`.
        match (&mut self.way, batch) {
            (_, b) if b.is_empty() => Ok(None),
            (Way::Direct(link), Batch::Raw(buf)) => link.send(buf).await,
            (Way::Pool(pool), Batch::Pipe(pipe)) => send_pipe(pool, pipe).await,
            (Way::Direct(_), Batch::Pipe(_)) => {
                Err("a pipeline sent to the direct connection".into())
            }
            (Way::Pool(_), Batch::Raw(_)) => Err("raw commands sent to the pool".into()),
        }
    }
}

/// The writer's own connection.
struct Link {
    config: RedisConfig,
    /// `None` until connected, and again after any failure.
    conn: Option<DirectConn>,
}

impl Link {
    fn new(config: RedisConfig) -> Link {
        Link { config, conn: None }
    }

    /// Sends encoded commands as one transaction, connecting first when
    /// needed. Any failure drops the connection.
    async fn send(&mut self, buf: &RespBuf) -> Sent {
        match self.try_send(buf).await {
            Ok(()) => Ok(None),
            Err(e) if e.is_transient() => Err(e.to_string()),
            // Sending it again would fail the same way: the commands that
            // could run did.
            Err(e) => Ok(Some(e.to_string())),
        }
    }

    async fn try_send(&mut self, buf: &RespBuf) -> Result<(), DirectError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self
                .conn
                .insert(DirectConn::connect(&self.config, CONNECT_TIMEOUT).await?),
        };
        let result = tokio::time::timeout(WRITE_TIMEOUT, conn.exec(buf))
            .await
            .unwrap_or_else(|_| {
                Err(DirectError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "write not confirmed in time",
                )))
            });
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// Sends a pipeline through the pool, within WRITE_TIMEOUT.
async fn send_pipe(redis: &RedisPool, pipe: &redis::Pipeline) -> Sent {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    if !pipe.is_transaction() || pipe.len() <= TRANSACTION_MAX {
        return send_one(redis, pipe, deadline).await.map(|()| None);
    }
    let commands: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
    for run in commands.chunks(TRANSACTION_MAX) {
        let mut part = redis::Pipeline::with_capacity(run.len());
        part.atomic();
        for cmd in run {
            part.add_command((*cmd).clone());
        }
        send_one(redis, &part, deadline).await?;
    }
    Ok(None)
}

async fn send_one(
    redis: &RedisPool,
    pipe: &redis::Pipeline,
    deadline: Instant,
) -> Result<(), String> {
    redis
        .query::<()>(Command::Pipe(pipe), deadline)
        .await
        .map_err(|e| e.to_string())
}
