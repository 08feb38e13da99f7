//! The spool as the writer's two tasks share it: the queue task appends
//! what it spills, the Redis task appends what Redis did not take and
//! replays the rest. Every spool call runs on a blocking thread, and the
//! lock is never held across a Redis round trip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::EventStats;
use crate::events::SearchEvent;
use crate::events::counters::Counters;
use crate::events::spool::{Chunk, Position, Spool, SpoolError};
use crate::events::write::{self, Layout};
use crate::redis::wire::Commands;

/// What goes into one spool record.
#[derive(Serialize, Deserialize)]
pub(super) enum SpoolRecord {
    Records(Vec<SearchEvent>),
    Counters(Counters),
}

impl SpoolRecord {
    /// Searches it carries.
    pub(super) fn events(&self) -> u64 {
        match self {
            SpoolRecord::Records(evs) => evs.len() as u64,
            SpoolRecord::Counters(_) => 0,
        }
    }

    pub(super) fn encode(&self, layout: &Layout, out: &mut impl Commands) {
        match self {
            SpoolRecord::Records(evs) => write::records_into(layout, evs, out),
            SpoolRecord::Counters(c) => write::counters_into(layout, c, out),
        }
    }
}

#[derive(Clone)]
pub(super) struct SharedSpool {
    /// `None` only where losing events is acceptable (benchmarks): what
    /// would be spooled is dropped and counted.
    spool: Option<Arc<Mutex<Spool>>>,
    stats: Arc<EventStats>,
    /// Set while the spool refuses records, to warn once per episode.
    full: Arc<AtomicBool>,
}

impl SharedSpool {
    pub(super) fn new(spool: Option<Spool>, stats: Arc<EventStats>) -> SharedSpool {
        if let Some(s) = &spool {
            stats.spool_bytes.store(s.bytes(), Ordering::Relaxed);
        }
        SharedSpool {
            spool: spool.map(|s| Arc::new(Mutex::new(s))),
            stats,
            full: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether records wait to be replayed: while they do, newer ones queue
    /// up behind them, so replay keeps the order searches happened in.
    pub(super) fn pending(&self) -> bool {
        self.stats.spool_bytes.load(Ordering::Relaxed) > 0
    }

    /// Runs `f` on the spool on a blocking thread; `None` without a spool
    /// or when the thread failed.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> Option<T> {
        let spool = self.spool.clone()?;
        let stats = self.stats.clone();
        let result = tokio::task::spawn_blocking(move || {
            // std Mutex: only ever locked on blocking threads.
            let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
            let out = f(&mut spool);
            stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
            out
        })
        .await;
        match result {
            Ok(out) => Some(out),
            Err(e) => {
                tracing::error!(error = %e, "spool task failed");
                None
            }
        }
    }

    /// Appends a record (encoding it on the blocking thread); counts its
    /// events as spooled, or as dropped when the spool cannot take it.
    pub(super) async fn append(&self, record: SpoolRecord) {
        let events = record.events();
        let appended = self
            .with(move |spool| {
                let payload = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
                spool.append(&payload).map_err(|e| match e {
                    SpoolError::Full { .. } => {
                        format!("redis unreachable or behind, and {e}")
                    }
                    SpoolError::Io { .. } => format!("cannot write the spool: {e}"),
                })
            })
            .await;
        match appended {
            Some(Ok(())) => {
                self.stats.spooled.fetch_add(events, Ordering::Relaxed);
                if self.full.swap(false, Ordering::Relaxed) {
                    tracing::info!("spool is accepting events again");
                }
            }
            Some(Err(e)) => {
                self.stats.dropped.fetch_add(events, Ordering::Relaxed);
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "dropping search events");
                }
            }
            None => {
                self.stats.dropped.fetch_add(events, Ordering::Relaxed);
            }
        }
    }

    /// The next records to replay, if any.
    pub(super) async fn read_next(&self) -> Option<Chunk> {
        match self.with(Spool::read_next).await? {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                None
            }
        }
    }

    /// Forgets what was replayed up to `done`.
    pub(super) async fn confirm(&self, done: Position) {
        if let Some(Err(e)) = self.with(move |spool| spool.confirm(done)).await {
            // The record stays on disk and comes again after a restart:
            // at least once.
            tracing::error!(error = %e, "cannot record spool replay progress");
        }
    }
}
