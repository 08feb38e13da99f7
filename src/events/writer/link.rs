//! Where the writer sends: its own connection to a single Redis, or the pool
//! (a cluster, which routes commands by slot).

use std::time::Duration;

use tokio::time::Instant;

use super::spooling::{REPLAY_BYTES, SpoolRecord, Taken, take_records};
use crate::config::RedisConfig;
use crate::events::SearchEvent;
use crate::events::counters::Counters;
use crate::events::spool::Chunk;
use crate::events::write::{self, Layout};
use crate::redis::RedisPool;
use crate::redis::direct::{DirectConn, DirectError, TRANSACTION_MAX};
use crate::redis::pool::Command;
use crate::redis::wire::{Commands, RespBuf};

/// How one write may take in Redis before its outcome counts as unknown.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the writer's own connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What sending a batch or a counter flush came to: `Ok` when Redis ran it,
/// with the error reply that sending it again would not cure, if any (a key
/// of the wrong type); `Err` when it must be sent again (spooled).
pub(super) type Sent = Result<Option<String>, String>;

/// The writer's way into Redis.
pub(super) enum Target {
    /// Its own connection: commands encoded straight into a buffer.
    Direct(Link),
    /// Through the pool, as `redis` pipelines.
    Pool(RedisPool),
}

impl Target {
    /// Writes a batch of records. `encoded` holds its commands already when
    /// the target is direct.
    pub(super) async fn records(
        &mut self,
        layout: &Layout,
        events: &[SearchEvent],
        encoded: &RespBuf,
    ) -> Sent {
        match self {
            // A batch of events is one transaction (SPEC section 5).
            Target::Direct(link) => link.send(encoded, usize::MAX).await,
            Target::Pool(pool) => send_pipe(pool, &write::records(layout, events)).await,
        }
    }

    pub(super) async fn counters(
        &mut self,
        layout: &Layout,
        counters: &Counters,
        buf: &mut RespBuf,
    ) -> Sent {
        match self {
            Target::Direct(link) => {
                buf.clear();
                write::counters_into(layout, counters, buf);
                link.send(buf, TRANSACTION_MAX).await
            }
            Target::Pool(pool) => send_pipe(pool, &write::counters(layout, counters)).await,
        }
    }

    /// Writes a record that waited in memory because the spool could not
    /// take it, cut into transactions as a replay is.
    pub(super) async fn waiting(
        &mut self,
        layout: &Layout,
        record: &SpoolRecord,
        buf: &mut RespBuf,
    ) -> Sent {
        match (record, self) {
            (SpoolRecord::Counters(counters), target) => {
                target.counters(layout, counters, buf).await
            }
            (SpoolRecord::Records(events), Target::Direct(link)) => {
                buf.clear();
                write::records_into(layout, events, buf);
                link.send(buf, TRANSACTION_MAX).await
            }
            (SpoolRecord::Records(events), Target::Pool(pool)) => {
                send_pipe(pool, &write::records(layout, events)).await
            }
        }
    }

    /// Sends the records of `chunk` from `from` on, as many as make
    /// [`REPLAY_BYTES`] (at least one), in one round trip: they are decoded
    /// and encoded on a blocking thread (into `buf` when the target is
    /// direct; one record can hold thousands of events). Gives back the
    /// chunk and the buffer, with what was taken and what sending it came
    /// to; `None` when the blocking thread failed (the chunk is then gone:
    /// its records are read again from the spool, which still holds them).
    pub(super) async fn replay(
        &mut self,
        layout: &Layout,
        chunk: Chunk,
        from: usize,
        mut buf: RespBuf,
    ) -> Option<(Chunk, RespBuf, Taken, Sent)> {
        let layout = layout.clone();
        match self {
            Target::Direct(link) => {
                buf.clear();
                let (chunk, mut buf, taken) = take_blocking(layout, chunk, from, buf).await?;
                let sent = match taken.records {
                    0 => Ok(None),
                    _ => link.send(&buf, TRANSACTION_MAX).await,
                };
                if buf.as_bytes().len() > REPLAY_BYTES * 2 {
                    buf = RespBuf::default(); // one outsized record: not kept
                }
                Some((chunk, buf, taken, sent))
            }
            Target::Pool(pool) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                let (chunk, pipe, taken) = take_blocking(layout, chunk, from, pipe).await?;
                let sent = match taken.records {
                    0 => Ok(None),
                    _ => send_pipe(pool, &pipe).await,
                };
                Some((chunk, buf, taken, sent))
            }
        }
    }
}

/// [`take_records`] into `out`, on a blocking thread; `None` when the
/// thread failed.
async fn take_blocking<C: Commands + Send + 'static>(
    layout: Layout,
    chunk: Chunk,
    from: usize,
    mut out: C,
) -> Option<(Chunk, C, Taken)> {
    let span = tracing::info_span!("spool");
    tokio::task::spawn_blocking(move || {
        let _span = span.entered();
        let taken = take_records(&layout, &chunk, from, &mut out);
        (chunk, out, taken)
    })
    .await
    .map_err(|e| tracing::error!(error = %e, "spool replay task failed"))
    .ok()
}

/// The writer's own connection.
pub(super) struct Link {
    config: RedisConfig,
    /// `None` until connected, and again after any failure.
    conn: Option<DirectConn>,
}

impl Link {
    pub(super) fn new(config: RedisConfig) -> Link {
        Link { config, conn: None }
    }

    /// Sends encoded commands as one transaction, connecting first when
    /// needed. Any failure drops the connection.
    async fn send(&mut self, buf: &RespBuf, per_transaction: usize) -> Sent {
        match self.try_send(buf, per_transaction).await {
            Ok(()) => Ok(None),
            Err(e) if e.is_transient() => Err(e.to_string()),
            // Sending it again would fail the same way: the commands that
            // could run did.
            Err(e) => Ok(Some(e.to_string())),
        }
    }

    async fn try_send(&mut self, buf: &RespBuf, per_transaction: usize) -> Result<(), DirectError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self
                .conn
                .insert(DirectConn::connect(&self.config, CONNECT_TIMEOUT).await?),
        };
        let result = tokio::time::timeout(WRITE_TIMEOUT, conn.exec(buf, per_transaction))
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
pub(super) async fn send_pipe(redis: &RedisPool, pipe: &redis::Pipeline) -> Sent {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    redis
        .query::<()>(Command::Pipe(pipe), deadline)
        .await
        .map(|()| None)
        .map_err(|e| e.to_string())
}
