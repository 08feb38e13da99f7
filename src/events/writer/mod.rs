//! The writer that drains the event queue into Redis.
//!
//! Requests hand events to [`EventSink::send`], which never waits: a bounded
//! queue takes them (when it is full, the event is dropped and counted).
//! Two tasks drain it:
//!
//! - the queue task takes batches (`batch_max` events, or whatever arrived
//!   within `flush_interval` of the first), sums the shared counters in
//!   process (written every `counter_flush`, a part of [`COUNTER_PART`]
//!   members at a time between batches), encodes each batch and hands it to
//! - the Redis task ([`io`]), which writes each batch as one MULTI/EXEC,
//!   and replays the spool.
//!
//! The queue task never waits on Redis. Batches go to the disk spool
//! instead while Redis cannot be written, while the spool holds older
//! records (so that replay keeps the order in which searches happened), and
//! while the Redis task is behind with the queue more than half full: a
//! stalled or overloaded Redis costs disk space, not searches. A record the
//! spool refuses (full, or its disk full or failing) waits in memory against
//! the queue's capacity ([`spooling`]). Only when the queue and the spool
//! are both full is an event dropped.
//!
//! A batch whose outcome is unknown (a timeout mid-transaction) is spooled
//! and sent again: delivery is at least once. Batches that were with the
//! Redis task when Redis failed or when the queue task began to spill may
//! reach the spool after later ones: counts are unaffected, a user's
//! history list may show those searches out of order.

mod io;
mod link;
mod spooling;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tracing::Instrument;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SearchEvent;
use super::counters::Counters;
use super::spool::Spool;
use super::write::{self, Layout};
use crate::redis::LogTarget;
use crate::redis::RedisConfig;
use crate::redis::RedisPool;
use crate::redis::log_target::{Batch, BatchKind};
use link::Target;
use spooling::{SharedSpool, SpoolRecord};

/// Counter members held before an early flush, to bound memory, each
/// weighed by its length ([`Counters::entries`]): about 200,000 members of
/// usual length, or 12 MiB of long ones.
const COUNTER_ENTRIES_MAX: usize = 200_000;
/// The queue's budget in bytes ([`SearchEvent::queued_bytes`]), beside its
/// `queue_capacity` in events: search texts run up to `max_request_body`,
/// so a full queue of long ones is bounded by what it holds, not its
/// length. About 200,000 events of usual size.
pub const QUEUE_BYTES_MAX: u64 = 64 << 20;
/// A flush goes to the Redis task in parts of about this many members
/// (~10 ms of Redis at a few µs per `ZINCRBY`), each taking its turn with
/// the batches of records: a flush of a long `counter_flush` on varied
/// traffic is tens of thousands of commands, which would otherwise hold the
/// records up until the queue spilled to the spool.
const COUNTER_PART: usize = 4096;
/// While the Redis task is busy, how often the queue task looks whether the
/// queue has filled past half (and it should spill instead of waiting).
const BACKLOG_CHECK: Duration = Duration::from_millis(5);
/// How often a filling batch looks whether `batch_max` events wait.
const FILL_CHECK: Duration = Duration::from_millis(1);
/// A spilled record takes up to this many batches from the queue at once:
/// one fsync for all of them, so the spool outruns the queue.
const SPILL_BATCHES: usize = 8;

/// Counters for metrics and tests.
#[derive(Default)]
pub struct EventStats {
    pub enqueued: AtomicU64,
    pub written: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    pub dropped: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// Events the spool could not take (full, or the disk failing), waiting
    /// in memory; they count against the queue's capacity.
    pub held: AtomicU64,
    /// Batch or counter writes Redis did not confirm.
    pub write_failures: AtomicU64,
    /// What the events in the queue weigh ([`SearchEvent::queued_bytes`]).
    pub queued_bytes: AtomicU64,
}

/// The sending side, cheap to clone; held by the proxy and the admin API.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<SearchEvent>,
    capacity: usize,
    pub stats: Arc<EventStats>,
    /// Set while the queue is full, so the warning is logged once per
    /// episode rather than once per dropped event.
    overflowing: Arc<AtomicBool>,
}

impl EventSink {
    /// Queues an event; never waits.
    pub fn send(&self, ev: SearchEvent) {
        // Events the spool could not take wait in memory, in the queue's
        // stead: together they are bounded by its capacity.
        let held = self.stats.held.load(Ordering::Relaxed) as usize;
        let room = held == 0 || held + self.queue_depth() < self.capacity;
        // Counted before the send, so that the writer never takes off more
        // than was added; given back when the event does not go in.
        let bytes = ev.queued_bytes();
        let before = self.stats.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let fits = before.saturating_add(bytes) <= QUEUE_BYTES_MAX;
        if room && fits && self.tx.try_send(ev).is_ok() {
            self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
            if self.overflowing.load(Ordering::Relaxed)
                && self.overflowing.swap(false, Ordering::Relaxed)
            {
                tracing::info!("event queue is accepting events again");
            }
        } else {
            self.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.overflowing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    capacity = self.capacity,
                    "event queue is full: dropping search events until the writer catches up"
                );
            }
        }
    }

    /// Events waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }
}

/// The writer; [`Writer::shutdown`] flushes everything queued.
pub struct Writer {
    handle: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

impl Writer {
    /// Stops taking events, writes what is queued (to Redis, or else to the
    /// spool) and returns when done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

pub struct WriterConfig {
    pub layout: Layout,
    pub queue_capacity: usize,
    pub batch_max: usize,
    pub flush_interval: Duration,
    /// How often the summed counters are written.
    pub counter_flush: Duration,
    /// The Redis the search log is written to; `redis` decides how (see
    /// [`crate::redis::LogTarget`]). `None` sends batches through the pool.
    pub redis: Option<RedisConfig>,
}

/// Starts the writer. `spool` is `None` only where losing events while Redis
/// is down is acceptable (benchmarks).
pub fn spawn(
    cfg: WriterConfig,
    redis: Option<RedisPool>,
    spool: Option<Spool>,
) -> (EventSink, Writer) {
    let capacity = cfg.queue_capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let stats = Arc::new(EventStats::default());
    let target = LogTarget::new(cfg.redis.as_ref(), redis.clone()).map(Target);
    // Without a target, everything is spooled: the kind does not matter.
    let kind = target.as_ref().map_or(BatchKind::Raw, Target::batch_kind);
    // Spooled batches are kept as the commands that write them when the
    // target takes raw RESP, which replay then sends as they are.
    let commands = (kind == BatchKind::Raw && target.is_some()).then(|| cfg.layout.clone());
    let spool = SharedSpool::new(spool, stats.clone(), commands);
    let sink = EventSink {
        tx,
        capacity,
        stats: stats.clone(),
        overflowing: Arc::new(AtomicBool::new(false)),
    };
    // One batch waits while one is written: the next is encoded meanwhile.
    let (work_tx, work_rx) = mpsc::channel(1);
    let (spares_tx, spares_rx) = mpsc::channel(2);
    let io = io::Io {
        work: work_rx,
        spares: spares_tx,
        target,
        redis: redis.clone(),
        layout: cfg.layout.clone(),
        spool: spool.clone(),
        stats: stats.clone(),
        buf: kind.batch(),
        chunk: None,
        spent: None,
        replay_buf: kind.batch(),
        replay_at: Instant::now(),
    };
    let queue = Queue {
        rx,
        stats: stats.clone(),
        capacity,
        layout: cfg.layout,
        batch_max: cfg.batch_max.max(1),
        flush_interval: cfg.flush_interval,
        counter_flush: cfg.counter_flush,
        kind,
        redis,
        spool,
        counters: Counters::default(),
        unsent: Counters::default(),
        work: work_tx,
        spares: spares_rx,
    };
    let (stop, stopped) = oneshot::channel();
    // Each subsystem logs inside its own span (as linkerd2-proxy's do).
    let io = tokio::spawn(io.run().instrument(tracing::info_span!("writer")));
    let handle = tokio::spawn(
        async move {
            queue.run(stopped).await;
            // The queue task dropped its end of the work channel: the Redis
            // task finishes what it holds and ends.
            let _ = io.await;
        }
        .instrument(tracing::info_span!("writer")),
    );
    (sink, Writer { handle, stop })
}

/// What the queue task hands the Redis task.
enum Work {
    /// A batch of searches, with its commands encoded.
    Records {
        events: Vec<SearchEvent>,
        encoded: Batch,
    },
    Counters(Counters),
}

impl Work {
    fn into_spool_record(self) -> SpoolRecord {
        match self {
            Work::Records { events, .. } => SpoolRecord::Records(events),
            Work::Counters(c) => SpoolRecord::Counters(c),
        }
    }
}

/// The queue task.
struct Queue {
    rx: mpsc::Receiver<SearchEvent>,
    /// Its `queued_bytes` goes down as events leave the queue.
    stats: Arc<EventStats>,
    capacity: usize,
    layout: Layout,
    batch_max: usize,
    flush_interval: Duration,
    counter_flush: Duration,
    /// What the Redis task sends batches as.
    kind: BatchKind,
    redis: Option<RedisPool>,
    spool: SharedSpool,
    counters: Counters,
    /// The last flush's counters that the Redis task has not taken yet.
    unsent: Counters,
    work: mpsc::Sender<Work>,
    spares: mpsc::Receiver<Batch>,
}

impl Queue {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut batch: Vec<SearchEvent> = Vec::with_capacity(self.batch_max);
        let mut tick = tokio::time::interval(self.counter_flush);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        // The counters' branch waits on a sender of its own, apart from `self`.
        let work = self.work.clone();
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.batch_max) => {
                    if n == 0 {
                        break; // closed and drained
                    }
                    self.left_queue(&batch[batch.len().saturating_sub(n)..]);
                    self.fill(&mut batch).await;
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(self.batch_max));
                    self.records(full).await;
                    if self.counters.entries() > COUNTER_ENTRIES_MAX {
                        // Folding merges the groups into the day's maps,
                        // whose size the products and queries in use bound;
                        // only past that is memory bought with writes.
                        self.counters.fold();
                        if self.counters.entries() > COUNTER_ENTRIES_MAX {
                            self.take_counters().await;
                        }
                    }
                }
                _ = tick.tick() => self.take_counters().await,
                permit = work.reserve(), if !self.unsent.is_empty() => match permit {
                    Ok(permit) if self.redis_up() => {
                        permit.send(Work::Counters(self.unsent.take_part(COUNTER_PART)));
                    }
                    // Redis is down: the rest goes to the spool at once.
                    _ => {
                        let rest = std::mem::take(&mut self.unsent);
                        self.spool.append(SpoolRecord::Counters(rest)).await;
                    }
                },
                _ = &mut stop, if !stopping => {
                    stopping = true;
                    self.rx.close();
                }
            }
        }
        let unsent = std::mem::take(&mut self.unsent);
        self.flush_counters(unsent).await;
        let counters = std::mem::take(&mut self.counters);
        self.flush_counters(counters).await;
    }

    /// Takes the summed counters to be written, a part at a time, once the
    /// last flush is out. While it is not, they keep summing, and past
    /// [`COUNTER_ENTRIES_MAX`] go to the spool: a Redis that cannot keep up
    /// costs disk, not memory.
    async fn take_counters(&mut self) {
        if self.counters.is_empty() {
            return;
        }
        if self.unsent.is_empty() {
            self.unsent = std::mem::take(&mut self.counters);
            self.unsent.fold();
        } else if self.counters.entries() > COUNTER_ENTRIES_MAX {
            let mut counters = std::mem::take(&mut self.counters);
            counters.fold();
            self.spool.append(SpoolRecord::Counters(counters)).await;
        }
    }

    /// Lets the batch fill for `flush_interval`, or until `batch_max` events
    /// wait, then takes what arrived.
    ///
    /// The task sleeps rather than waiting on the queue meanwhile: a task
    /// waiting on the queue is woken by every send, which at tens of
    /// thousands of searches a second costs the request threads more than
    /// the write itself. It looks at the queue's length every
    /// [`FILL_CHECK`]: a small queue under a fast load would otherwise fill
    /// up and drop events while the task slept.
    async fn fill(&mut self, batch: &mut Vec<SearchEvent>) {
        let deadline = Instant::now() + self.flush_interval;
        while batch.len() + self.rx.len() < self.batch_max {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep_until(deadline.min(now + FILL_CHECK)).await;
        }
        self.take_queued(batch, self.batch_max);
    }

    /// Moves queued events into `batch` until it holds `max`.
    fn take_queued(&mut self, batch: &mut Vec<SearchEvent>, max: usize) {
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(ev) => {
                    self.left_queue(std::slice::from_ref(&ev));
                    batch.push(ev);
                }
                Err(_) => break,
            }
        }
    }

    /// Gives the queue's byte budget back for events taken out of it.
    fn left_queue(&self, events: &[SearchEvent]) {
        let bytes: u64 = events.iter().map(SearchEvent::queued_bytes).sum();
        self.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether Redis takes writes now: it is up and nothing older waits in
    /// the spool.
    fn writable(&self) -> bool {
        !self.spool.pending() && self.redis_up()
    }

    fn redis_up(&self) -> bool {
        self.redis.as_ref().is_some_and(|r| r.health().is_up())
    }

    /// More than half the queue waits: time to spill rather than wait.
    fn behind(&self) -> bool {
        self.rx.len() > self.capacity / 2
    }

    async fn records(&mut self, mut batch: Vec<SearchEvent>) {
        for ev in &batch {
            self.counters.add(ev);
        }
        if self.writable() {
            let mut encoded = self.spares.try_recv().unwrap_or_else(|_| self.kind.batch());
            encoded.clear();
            write::records_into(&self.layout, &batch, &mut encoded);
            match self
                .hand_over(Work::Records {
                    events: batch,
                    encoded,
                })
                .await
            {
                None => return,
                Some(Work::Records { events, .. }) => batch = events,
                Some(other) => return self.spool.append(other.into_spool_record()).await,
            }
        }
        // Spilling: take what else waits too, one record and one fsync for
        // several batches.
        if self.behind() {
            let start = batch.len();
            self.take_queued(&mut batch, self.batch_max * SPILL_BATCHES);
            for ev in &batch[start..] {
                self.counters.add(ev);
            }
        }
        self.spool.append(SpoolRecord::Records(batch)).await;
    }

    /// Gives `work` to the Redis task, waiting while it is busy unless the
    /// queue fills past half meanwhile; then gives `work` back, to spill.
    async fn hand_over(&mut self, work: Work) -> Option<Work> {
        let permit = match self.work.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => return Some(work),
            Err(mpsc::error::TrySendError::Full(())) => loop {
                if self.behind() {
                    return Some(work);
                }
                match tokio::time::timeout(BACKLOG_CHECK, self.work.reserve()).await {
                    Ok(Ok(permit)) => break permit,
                    Ok(Err(_closed)) => return Some(work),
                    Err(_elapsed) => {}
                }
            },
        };
        permit.send(work);
        None
    }

    /// Writes `counters` whole (at shutdown), or else spools them.
    async fn flush_counters(&mut self, mut counters: Counters) {
        if counters.is_empty() {
            return;
        }
        counters.fold();
        let mut work = Work::Counters(counters);
        if self.redis_up() {
            match self.hand_over(work).await {
                None => return,
                Some(back) => work = back,
            }
        }
        self.spool.append(work.into_spool_record()).await;
    }
}

/// What a replay delivered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Replayed {
    pub records: u64,
    pub events: u64,
}

/// Writes spooled records to Redis in order, on the calling (blocking)
/// thread, until the spool is empty or Redis fails (`leafcache replay`),
/// decoding and encoding them as the writer's own replay does. Undecodable
/// records (from another version) are skipped with a warning.
pub fn replay_records(
    spool: &mut Spool,
    redis: &RedisPool,
    layout: &Layout,
    runtime: &tokio::runtime::Handle,
) -> Replayed {
    let mut target = Target(LogTarget::pool(redis.clone()));
    let mut done = Replayed::default();
    let mut buf = target.batch_kind().batch();
    loop {
        let mut chunk = match spool.read_next() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return done,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                return done;
            }
        };
        let mut from = 0;
        while from < chunk.len() {
            let replayed = runtime.block_on(target.replay(layout, chunk, from, buf));
            let Some((back, spare, taken, sent)) = replayed else {
                return done;
            };
            (chunk, buf) = (back, spare);
            match sent {
                Err(e) => {
                    tracing::debug!(error = %e, "replay paused: redis failed");
                    return done;
                }
                Ok(Some(e)) => {
                    tracing::error!(error = %e, "redis refused commands of a spooled record");
                }
                Ok(None) => {}
            }
            if let Some(position) = taken.done
                && let Err(e) = spool.confirm(position)
            {
                tracing::error!(error = %e, "cannot record spool replay progress");
                return done;
            }
            done.records += taken.records;
            done.events += taken.events;
            from = taken.end;
        }
        spool.recycle(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::CacheResult;

    fn event(query: String) -> SearchEvent {
        SearchEvent {
            search_id: crate::events::new_search_id(),
            timestamp_ms: 1_764_106_056_927,
            user_id: None,
            user_uuid: None,
            session_id: None,
            query_normalized: query.clone(),
            query,
            meta: Arc::default(),
            response_time_ms: 1.0,
            cache: CacheResult::Miss,
            status: 200,
            route: Arc::from("search"),
        }
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_as_well_as_in_events() {
        let (tx, mut rx) = mpsc::channel(1_000_000);
        let sink = EventSink {
            tx,
            capacity: 1_000_000,
            stats: Arc::new(EventStats::default()),
            overflowing: Arc::new(AtomicBool::new(false)),
        };
        // Texts of 64 KiB (max_request_body): far fewer than the capacity.
        let long = "x".repeat(64 << 10);
        for _ in 0..1_000 {
            sink.send(event(long.clone()));
        }
        let queued = sink.stats.queued_bytes.load(Ordering::Relaxed);
        assert!(queued <= QUEUE_BYTES_MAX, "{queued} bytes queued");
        let taken = sink.stats.enqueued.load(Ordering::Relaxed);
        assert!(
            taken > 0 && taken < 1_000,
            "{taken} of 1,000 long events queued"
        );
        // Short events still fit once the writer takes the long ones out.
        let mut out = Vec::new();
        rx.recv_many(&mut out, 1_000).await;
        let bytes: u64 = out.iter().map(SearchEvent::queued_bytes).sum();
        sink.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        assert_eq!(sink.stats.queued_bytes.load(Ordering::Relaxed), 0);
        sink.send(event("milk".into()));
        assert_eq!(sink.stats.enqueued.load(Ordering::Relaxed), taken + 1);
    }
}
