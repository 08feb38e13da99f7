//! The writer's Redis task: every write to Redis happens here, so a slow or
//! stalled Redis never holds up the queue task, which keeps draining the
//! queue (into the spool when this task falls behind).
//!
//! It takes work from a one-slot channel: a batch of records (already
//! encoded by the queue task while the previous one was in Redis) or a
//! counter flush. Between items, while the spool holds records and Redis is
//! up, it replays them oldest first, up to a few megabytes per round trip.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::Target;
use super::spooling::{SharedSpool, SpoolRecord};
use super::{EventStats, Work};
use crate::events::spool::Chunk;
use crate::events::write::Layout;
use crate::redis::RedisPool;
use crate::redis::log_target::Batch;

/// How long replay rests after Redis failed it, and how often an idle task
/// looks for something to replay.
const REPLAY_RETRY: Duration = Duration::from_secs(1);

pub(super) struct Io {
    pub(super) work: mpsc::Receiver<Work>,
    /// Encoding buffers handed back to the queue task for reuse.
    pub(super) spares: mpsc::Sender<Batch>,
    /// `None` without Redis: everything is spooled.
    pub(super) target: Option<Target>,
    /// For its health: replay waits while Redis is down.
    pub(super) redis: Option<RedisPool>,
    pub(super) layout: Layout,
    pub(super) spool: SharedSpool,
    pub(super) stats: Arc<EventStats>,
    /// Counter flushes and waiting records are encoded into this.
    pub(super) buf: Batch,
    /// Records read from the spool, and the next one to replay.
    pub(super) chunk: Option<(Chunk, usize)>,
    /// A chunk replayed to its end, whose buffer the next read reuses.
    pub(super) spent: Option<Chunk>,
    /// What replayed records are encoded into, reused.
    pub(super) replay_buf: Batch,
    /// No replay before this (after a failure).
    pub(super) replay_at: Instant,
}

impl Io {
    pub(super) async fn run(mut self) {
        loop {
            let work = if self.may_replay() {
                match self.work.try_recv() {
                    Ok(work) => Some(work),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                tokio::select! {
                    work = self.work.recv() => match work {
                        Some(work) => Some(work),
                        None => break, // closed and drained: shutting down
                    },
                    // The queue task may spool without handing anything
                    // over: look again now and then.
                    () = tokio::time::sleep(REPLAY_RETRY) => None,
                }
            };
            match work {
                Some(work) => self.handle(work).await,
                None if self.may_replay() => self.replay_some().await,
                None => {}
            }
        }
        self.last_chance().await;
    }

    /// At shutdown, records that neither the disk nor Redis took wait in
    /// memory: one more try each, then they are counted as dropped.
    async fn last_chance(&mut self) {
        // Behind records on disk, Redis would get them out of order: they
        // are lost with the process either way.
        let mut redis_failed = self.target.is_none() || !self.spool.disk_empty();
        while let Some(record) = self.spool.take_waiting_at_exit().await {
            let events = record.events();
            let sent = match &mut self.target {
                // One failure is enough: shutdown must end within its grace.
                Some(target) if !redis_failed => {
                    target.waiting(&self.layout, &record, &mut self.buf).await
                }
                _ => Err("redis unreachable".into()),
            };
            match sent {
                Ok(_) => {
                    self.stats.written.fetch_add(events, Ordering::Relaxed);
                }
                Err(e) => {
                    redis_failed = true;
                    self.stats.dropped.fetch_add(events, Ordering::Relaxed);
                    tracing::error!(
                        error = %e,
                        events,
                        "shutting down with search events neither the spool nor redis took: dropped"
                    );
                }
            }
        }
    }

    /// Sends the oldest record waiting in memory straight to Redis, once
    /// nothing older is on disk; `false` when there is none.
    async fn replay_waiting(&mut self) -> bool {
        let Some(target) = &mut self.target else {
            return false;
        };
        let Some(record) = self.spool.take_waiting().await else {
            return false;
        };
        match target.waiting(&self.layout, &record, &mut self.buf).await {
            Ok(refused) => {
                if let Some(e) = refused {
                    refused_commands(&self.stats, "a waiting record", &e);
                }
                let events = record.events();
                self.stats.replayed.fetch_add(events, Ordering::Relaxed);
                self.stats.written.fetch_add(events, Ordering::Relaxed);
                if !self.spool.pending() {
                    tracing::info!("spool replayed into redis");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "replay paused: redis failed");
                self.spool.put_back(record).await;
                self.replay_at = Instant::now() + REPLAY_RETRY;
            }
        }
        true
    }

    fn may_replay(&self) -> bool {
        self.target.is_some()
            && self.spool.pending()
            && Instant::now() >= self.replay_at
            && self.redis.as_ref().is_some_and(|r| r.health().is_up())
    }

    async fn handle(&mut self, work: Work) {
        match work {
            Work::Records { events, encoded } => {
                let n = events.len() as u64;
                // Behind spooled records, a batch waits its turn there.
                let sent = match &mut self.target {
                    Some(target) if !self.spool.pending() => Some(target.records(&encoded).await),
                    _ => None,
                };
                let _ = self.spares.try_send(encoded);
                if let Some(Ok(refused)) = sent {
                    self.stats.written.fetch_add(n, Ordering::Relaxed);
                    if let Some(e) = refused {
                        refused_commands(&self.stats, "an event batch", &e);
                    }
                    return;
                }
                if let Some(Err(e)) = sent {
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, events = n, "batch not written; spooling");
                }
                self.spool.append(SpoolRecord::Records(events)).await;
            }
            Work::Counters(counters) => {
                // Sums commute: they need not wait behind spooled records.
                let sent = match &mut self.target {
                    Some(target) => Some(
                        target
                            .counters(&self.layout, &counters, &mut self.buf)
                            .await,
                    ),
                    None => None,
                };
                match sent {
                    Some(Ok(None)) => return,
                    Some(Ok(Some(e))) => {
                        return refused_commands(&self.stats, "the analytics counters", &e);
                    }
                    Some(Err(_)) => {
                        self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
                self.spool.append(SpoolRecord::Counters(counters)).await;
            }
        }
    }

    /// Replays the oldest spooled records, up to a round trip's worth.
    async fn replay_some(&mut self) {
        if self.chunk.is_none() && self.spool.disk_empty() && self.replay_waiting().await {
            return;
        }
        let (chunk, from) = match self.chunk.take() {
            Some(c) => c,
            None => match self.spool.read_next(self.spent.take()).await {
                Some(chunk) => (chunk, 0),
                None => {
                    // Nothing readable (the rest was torn): try again later.
                    self.replay_at = Instant::now() + REPLAY_RETRY;
                    return;
                }
            },
        };
        if from >= chunk.len() {
            self.spent = Some(chunk); // done; the next call reads on
            return;
        }
        let Some(target) = &mut self.target else {
            return;
        };
        let buf = std::mem::replace(&mut self.replay_buf, target.batch_kind().batch());
        let Some((chunk, buf, taken, sent)) = target.replay(&self.layout, chunk, from, buf).await
        else {
            self.replay_at = Instant::now() + REPLAY_RETRY;
            return;
        };
        self.replay_buf = buf;
        match sent {
            Ok(refused) => {
                if let Some(e) = refused {
                    refused_commands(&self.stats, "a spooled record", &e);
                }
                if let Some(done) = taken.done {
                    self.spool.confirm(done).await;
                }
                self.stats
                    .replayed
                    .fetch_add(taken.events, Ordering::Relaxed);
                self.stats
                    .written
                    .fetch_add(taken.events, Ordering::Relaxed);
                self.chunk = Some((chunk, taken.end));
                if !self.spool.pending() {
                    tracing::info!("spool replayed into redis");
                    // Nothing more to replay: the buffers go.
                    self.chunk = None;
                    self.replay_buf = target.batch_kind().batch();
                }
            }
            Err(e) => {
                // Keep the records; they are sent again once Redis answers.
                tracing::debug!(error = %e, "replay paused: redis failed");
                self.replay_at = Instant::now() + REPLAY_RETRY;
                self.chunk = Some((chunk, from));
            }
        }
    }
}

/// Counts and reports an error reply that was not worth sending again.
fn refused_commands(stats: &EventStats, what: &str, error: &str) {
    stats.write_failures.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        error,
        "redis refused commands of {what}; the rest was written"
    );
}
