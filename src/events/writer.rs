//! The one writer that drains the event queue into Redis.
//!
//! Requests hand events to [`EventSink::send`], which never waits: a bounded
//! queue takes them or, when it is full, the event is dropped and counted.
//! The writer takes batches (`batch_max` events, or whatever arrived within
//! `flush_interval` of the first), writes each as one MULTI/EXEC, and sums
//! the shared counters in process, writing them once a second.
//!
//! While Redis cannot be written, batches (and counter flushes) go to the
//! disk spool; while the spool holds anything, new batches are spooled too,
//! so that replay keeps the order in which searches happened. Replay runs
//! at startup, once a second while Redis is up, and after every batch while
//! the spool holds anything, in slices, so the queue keeps draining during a
//! long replay and a busy proxy still catches up after an outage. A batch whose outcome is unknown (a
//! timeout mid-transaction) is spooled and sent again: delivery is at least
//! once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SearchEvent;
use super::counters::Counters;
use super::spool::{ReplayError, Spool, SpoolError};
use super::write::{self, Layout};
use crate::config::RedisConfig;
use crate::redis::RedisPool;
use crate::redis::direct::{DirectConn, DirectError};
use crate::redis::pool::Command;
use crate::redis::wire::RespBuf;

/// How often summed counters are written.
const COUNTER_FLUSH: Duration = Duration::from_secs(1);
/// Distinct counter members held before an early flush, to bound memory.
const COUNTER_ENTRIES_MAX: usize = 200_000;
/// How long one batch may take in Redis before its outcome counts as unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// One replay slice: after this long the writer goes back to the queue.
const REPLAY_SLICE: Duration = Duration::from_millis(250);
/// How long the writer's own connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Counters for metrics and tests.
#[derive(Default)]
pub struct EventStats {
    pub enqueued: AtomicU64,
    pub written: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    pub dropped: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// Batch or counter writes Redis did not confirm.
    pub write_failures: AtomicU64,
}

/// What goes into one spool record.
#[derive(Serialize, Deserialize)]
enum SpoolRecord {
    Records(Vec<SearchEvent>),
    Counters(Counters),
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
        match self.tx.try_send(ev) {
            Ok(()) => {
                self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                if self.overflowing.load(Ordering::Relaxed)
                    && self.overflowing.swap(false, Ordering::Relaxed)
                {
                    tracing::info!("event queue is accepting events again");
                }
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        capacity = self.capacity,
                        "event queue is full: dropping search events until the writer catches up"
                    );
                }
            }
        }
    }

    /// Events waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }
}

/// The writer task; [`Writer::shutdown`] flushes everything queued.
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
    /// Where the writer opens its own connection for batches (see
    /// [`crate::redis::direct`]); `None` sends them through the pool.
    pub direct: Option<RedisConfig>,
}

/// Starts the writer. `spool` is `None` only where losing events while Redis
/// is down is acceptable (benchmarks).
pub fn spawn(
    cfg: WriterConfig,
    redis: Option<RedisPool>,
    spool: Option<Spool>,
) -> (EventSink, Writer) {
    let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
    let stats = Arc::new(EventStats::default());
    if let Some(s) = &spool {
        stats.spool_bytes.store(s.bytes(), Ordering::Relaxed);
    }
    let sink = EventSink {
        tx,
        capacity: cfg.queue_capacity.max(1),
        stats: stats.clone(),
        overflowing: Arc::new(AtomicBool::new(false)),
    };
    let (stop, stopped) = oneshot::channel();
    let task = Task {
        rx,
        layout: cfg.layout,
        batch_max: cfg.batch_max.max(1),
        flush_interval: cfg.flush_interval,
        redis,
        spool: spool.map(|s| Arc::new(Mutex::new(s))),
        stats,
        counters: Counters::default(),
        spool_full: false,
        inflight: None,
        direct: cfg.direct,
        link: None,
        spare: RespBuf::default(),
    };
    let handle = tokio::spawn(task.run(stopped));
    (sink, Writer { handle, stop })
}

struct Task {
    rx: mpsc::Receiver<SearchEvent>,
    layout: Layout,
    batch_max: usize,
    flush_interval: Duration,
    redis: Option<RedisPool>,
    /// std Mutex: only locked on blocking threads, never across an `.await`.
    spool: Option<Arc<Mutex<Spool>>>,
    stats: Arc<EventStats>,
    counters: Counters,
    /// Set while the spool refuses records, to warn once per episode.
    spool_full: bool,
    /// The batch being written to Redis while the next one is prepared: one
    /// in flight at a time keeps batches in order and overlaps our work with
    /// Redis's. On failure it hands its events back for the spool.
    inflight: Option<JoinHandle<Inflight>>,
    /// Where the writer's own connection goes (`None`: batches go through
    /// the pool).
    direct: Option<RedisConfig>,
    /// That connection; away with the batch in flight while one is.
    link: Option<Link>,
    /// The buffer the next batch is encoded in while the last one is sent.
    spare: RespBuf,
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

    /// Sends an encoded batch as one transaction, connecting first when
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
                    "batch not confirmed in time",
                )))
            });
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// What sending a batch or a counter flush came to: `Ok` when Redis ran it,
/// with the error reply that sending it again would not cure, if any (a key
/// of the wrong type); `Err` when it must be sent again (spooled).
type Sent = Result<Option<String>, String>;

/// What the batch in flight gives back.
struct Inflight {
    /// The events written, or those to spool.
    result: Result<u64, Vec<SearchEvent>>,
    /// An error reply that sending again would not cure.
    refused: Option<String>,
    /// The connection and buffer it took, when it used them.
    link: Option<(Link, RespBuf)>,
}

impl Task {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        self.replay().await;
        let mut batch: Vec<SearchEvent> = Vec::with_capacity(self.batch_max);
        let mut tick = tokio::time::interval(COUNTER_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.batch_max) => {
                    if n == 0 {
                        break; // closed and drained
                    }
                    self.fill(&mut batch).await;
                    self.process(std::mem::replace(&mut batch, Vec::with_capacity(self.batch_max))).await;
                    if self.counters.entries() > COUNTER_ENTRIES_MAX {
                        self.flush_counters().await;
                    }
                    // While the spool holds anything, new batches queue up
                    // behind it: replay a slice after every batch, not only
                    // once a second, or a busy proxy never catches up after
                    // a short outage.
                    if self.spool_pending() {
                        self.replay().await;
                    }
                }
                _ = tick.tick() => {
                    self.flush_counters().await;
                    self.replay().await;
                }
                _ = &mut stop, if !stopping => {
                    stopping = true;
                    self.rx.close();
                }
            }
        }
        self.flush_counters().await;
    }

    /// Lets the batch fill for `flush_interval`, then takes what arrived.
    ///
    /// The writer sleeps rather than waiting on the queue meanwhile: a task
    /// waiting on the queue is woken by every send, which at tens of
    /// thousands of searches a second costs the request threads more than
    /// the write itself.
    async fn fill(&mut self, batch: &mut Vec<SearchEvent>) {
        if batch.len() >= self.batch_max {
            return;
        }
        tokio::time::sleep(self.flush_interval).await;
        while batch.len() < self.batch_max {
            match self.rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
    }

    fn spool_pending(&self) -> bool {
        self.stats.spool_bytes.load(Ordering::Relaxed) > 0
    }

    fn redis_writable(&self) -> Option<&RedisPool> {
        self.redis
            .as_ref()
            .filter(|r| r.health().is_up() && !self.spool_pending())
    }

    async fn process(&mut self, batch: Vec<SearchEvent>) {
        for ev in &batch {
            self.counters.add(ev);
        }
        let n = batch.len() as u64;
        if self.redis_writable().is_none() {
            self.settle().await;
            return self.spool(SpoolRecord::Records(batch), n).await;
        }
        match self.direct.clone() {
            Some(config) => {
                // Encoded while the previous batch is still in Redis: two
                // buffers take turns.
                let mut buf = std::mem::take(&mut self.spare);
                buf.clear();
                write::records_into(&self.layout, &batch, &mut buf);
                self.settle().await;
                if self.redis_writable().is_none() {
                    self.spare = buf;
                    return self.spool(SpoolRecord::Records(batch), n).await;
                }
                let mut link = self.link.take().unwrap_or_else(|| Link::new(config));
                self.send_batch(batch, async move {
                    let sent = link.send(&buf).await;
                    (sent, Some((link, buf)))
                });
            }
            None => {
                let pipe = write::records(&self.layout, &batch);
                self.settle().await;
                let Some(redis) = self.redis_writable().cloned() else {
                    return self.spool(SpoolRecord::Records(batch), n).await;
                };
                self.send_batch(batch, async move { (send_pipe(&redis, &pipe).await, None) });
            }
        }
    }

    /// Puts a batch in flight: `send` writes it and hands back the writer's
    /// connection and buffer when it took them.
    fn send_batch(
        &mut self,
        batch: Vec<SearchEvent>,
        send: impl Future<Output = (Sent, Option<(Link, RespBuf)>)> + Send + 'static,
    ) {
        self.inflight = Some(tokio::spawn(async move {
            let n = batch.len() as u64;
            let (sent, link) = send.await;
            let (result, refused) = match sent {
                Ok(refused) => (Ok(n), refused),
                Err(e) => {
                    tracing::debug!(error = %e, events = n, "batch not written; spooling");
                    (Err(batch), None)
                }
            };
            Inflight {
                result,
                refused,
                link,
            }
        }));
    }

    /// Counts and reports an error reply that was not worth sending again.
    fn refused(&self, what: &str, error: &str) {
        self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            error,
            "redis refused commands of {what}; the rest was written"
        );
    }

    /// Waits for the batch in flight; spools its events if it failed (its
    /// outcome is unknown, so it is sent again later: at least once).
    async fn settle(&mut self) {
        let Some(inflight) = self.inflight.take() else {
            return;
        };
        // A panic in the write task loses its connection; the next batch
        // opens a new one.
        let done = match inflight.await {
            Ok(done) => done,
            Err(e) => return tracing::error!(error = %e, "event write task failed"),
        };
        if let Some((link, buf)) = done.link {
            self.link = Some(link);
            self.spare = buf;
        }
        if let Some(e) = done.refused {
            self.refused("an event batch", &e);
        }
        match done.result {
            Ok(n) => {
                self.stats.written.fetch_add(n, Ordering::Relaxed);
            }
            Err(batch) => {
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                let n = batch.len() as u64;
                self.spool(SpoolRecord::Records(batch), n).await;
            }
        }
    }

    async fn flush_counters(&mut self) {
        self.settle().await;
        if self.counters.is_empty() {
            return;
        }
        let mut counters = std::mem::take(&mut self.counters);
        counters.fold();
        if let Some(redis) = self.redis_writable() {
            let sent = match self.direct.clone() {
                Some(config) => {
                    let mut buf = std::mem::take(&mut self.spare);
                    buf.clear();
                    write::counters_into(&self.layout, &counters, &mut buf);
                    let link = self.link.get_or_insert_with(|| Link::new(config));
                    let sent = link.send(&buf).await;
                    self.spare = buf;
                    sent
                }
                None => send_pipe(redis, &write::counters(&self.layout, &counters)).await,
            };
            match sent {
                Ok(None) => return,
                Ok(Some(e)) => return self.refused("the analytics counters", &e),
                Err(_) => {}
            }
            self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.spool(SpoolRecord::Counters(counters), 0).await;
    }

    /// Appends a record to the spool on a blocking thread; `events` is how
    /// many searches it carries (for the counters).
    async fn spool(&mut self, record: SpoolRecord, events: u64) {
        let Some(spool) = self.spool.clone() else {
            self.stats.dropped.fetch_add(events, Ordering::Relaxed);
            return;
        };
        let result = tokio::task::spawn_blocking(move || {
            let payload = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
            let appended = spool.append(&payload);
            Ok::<_, String>((appended, spool.bytes()))
        })
        .await;
        match result {
            Ok(Ok((Ok(()), bytes))) => {
                self.stats.spool_bytes.store(bytes, Ordering::Relaxed);
                self.stats.spooled.fetch_add(events, Ordering::Relaxed);
                if self.spool_full {
                    self.spool_full = false;
                    tracing::info!("spool is accepting events again");
                }
            }
            Ok(Ok((Err(e), _))) => {
                self.stats.dropped.fetch_add(events, Ordering::Relaxed);
                if !self.spool_full {
                    self.spool_full = true;
                    match e {
                        SpoolError::Full { .. } => {
                            tracing::error!(error = %e, "redis unreachable and spool full: dropping search events")
                        }
                        SpoolError::Io { .. } => {
                            tracing::error!(error = %e, "cannot write the spool: dropping search events")
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                self.stats.dropped.fetch_add(events, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot encode a spool record");
            }
            Err(e) => {
                self.stats.dropped.fetch_add(events, Ordering::Relaxed);
                tracing::error!(error = %e, "spool task failed");
            }
        }
    }

    /// Replays spooled records into Redis for at most one slice.
    async fn replay(&mut self) {
        self.settle().await;
        let (Some(spool), Some(redis)) = (self.spool.clone(), self.redis.clone()) else {
            return;
        };
        if !self.spool_pending() || !redis.health().is_up() {
            return;
        }
        let layout = self.layout.clone();
        let handle = tokio::runtime::Handle::current();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
            let slice_end = std::time::Instant::now() + REPLAY_SLICE;
            let stats = replay_records(&mut spool, &redis, &layout, &handle, Some(slice_end));
            (stats, spool.bytes())
        })
        .await;
        if let Ok((replayed, bytes)) = outcome {
            self.stats.spool_bytes.store(bytes, Ordering::Relaxed);
            self.stats
                .replayed
                .fetch_add(replayed.events, Ordering::Relaxed);
            self.stats
                .written
                .fetch_add(replayed.events, Ordering::Relaxed);
            if bytes == 0 && replayed.records > 0 {
                tracing::info!(events = replayed.events, "spool replayed into redis");
            }
        }
    }
}

/// Sends a pipeline through the pool, within WRITE_TIMEOUT.
async fn send_pipe(redis: &RedisPool, pipe: &redis::Pipeline) -> Sent {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    redis
        .query::<()>(Command::Pipe(pipe), deadline)
        .await
        .map(|()| None)
        .map_err(|e| e.to_string())
}

/// What a replay delivered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Replayed {
    pub records: u64,
    pub events: u64,
}

/// Why a replay stopped early.
#[derive(Debug)]
pub enum ReplayStop {
    /// The time slice is over; the rest waits for the next one.
    Slice,
    Redis(String),
}

/// Writes spooled records to Redis in order, on the calling (blocking)
/// thread, until the spool is empty, Redis fails, or `until` passes.
/// Undecodable records (from another version) are skipped with a warning.
pub fn replay_records(
    spool: &mut Spool,
    redis: &RedisPool,
    layout: &Layout,
    runtime: &tokio::runtime::Handle,
    until: Option<std::time::Instant>,
) -> Replayed {
    let mut done = Replayed::default();
    let result = spool.replay(|payload| {
        if until.is_some_and(|t| std::time::Instant::now() >= t) {
            return Err(ReplayStop::Slice);
        }
        let record: SpoolRecord = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable spool record");
                return Ok(());
            }
        };
        let (pipe, events) = match &record {
            SpoolRecord::Records(evs) => (write::records(layout, evs), evs.len() as u64),
            SpoolRecord::Counters(c) => (write::counters(layout, c), 0),
        };
        let deadline = Instant::now() + WRITE_TIMEOUT;
        runtime
            .block_on(redis.query::<()>(Command::Pipe(&pipe), deadline))
            .map_err(|e| ReplayStop::Redis(e.to_string()))?;
        done.records += 1;
        done.events += events;
        Ok(())
    });
    match result {
        Err(ReplayError::Deliver(ReplayStop::Redis(e))) => {
            tracing::debug!(error = %e, "replay paused: redis failed");
        }
        Err(ReplayError::Spool(e)) => tracing::error!(error = %e, "cannot read the spool"),
        Err(ReplayError::Deliver(ReplayStop::Slice)) | Ok(_) => {}
    }
    done
}
