//! What the writer sends through its [`LogTarget`]: batches, counter
//! flushes and spooled records, each encoded into a [`Batch`] of the kind
//! the target takes (raw RESP for its own connection to a single Redis, a
//! pipeline for the pool and a cluster).

use super::spooling::{REPLAY_BYTES, SpoolRecord, Taken, take_records};
use crate::events::counters::Counters;
use crate::events::spool::Chunk;
use crate::events::write::{self, Layout};
use crate::redis::log_target::{Batch, BatchKind, LogTarget, Sent};

/// The writer's way into Redis; `redis` chose it.
pub(super) struct Target(pub(super) LogTarget);

impl Target {
    pub(super) fn batch_kind(&self) -> BatchKind {
        self.0.batch_kind()
    }

    /// Writes a batch of records, encoded by the queue task.
    pub(super) async fn records(&mut self, encoded: &Batch) -> Sent {
        self.0.send(encoded).await
    }

    pub(super) async fn counters(
        &mut self,
        layout: &Layout,
        counters: &Counters,
        batch: &mut Batch,
    ) -> Sent {
        batch.clear();
        write::counters_into(layout, counters, batch);
        self.0.send(batch).await
    }

    /// Writes a record that waited in memory because the spool could not
    /// take it.
    pub(super) async fn waiting(
        &mut self,
        layout: &Layout,
        record: &SpoolRecord,
        batch: &mut Batch,
    ) -> Sent {
        match record {
            SpoolRecord::Counters(counters) => self.counters(layout, counters, batch).await,
            SpoolRecord::Records(events) => {
                batch.clear();
                write::records_into(layout, events, batch);
                self.0.send(batch).await
            }
        }
    }

    /// Sends the records of `chunk` from `from` on, as many as make
    /// [`REPLAY_BYTES`] (at least one), in one round trip: they are decoded
    /// and encoded into `batch` on a blocking thread (one record can hold
    /// thousands of events). Gives back the chunk and the batch, with what
    /// was taken and what sending it came to; `None` when the blocking
    /// thread failed (the chunk is then gone: its records are read again
    /// from the spool, which still holds them).
    pub(super) async fn replay(
        &mut self,
        layout: &Layout,
        chunk: Chunk,
        from: usize,
        mut batch: Batch,
    ) -> Option<(Chunk, Batch, Taken, Sent)> {
        batch.clear();
        let (chunk, mut batch, taken) = take_blocking(layout.clone(), chunk, from, batch).await?;
        let sent = match taken.records {
            0 => Ok(None),
            _ => self.0.send(&batch).await,
        };
        if batch.bytes() > REPLAY_BYTES * 2 {
            batch = self.batch_kind().batch(); // one outsized record: not kept
        }
        Some((chunk, batch, taken, sent))
    }
}

/// [`take_records`] into `out`, on a blocking thread; `None` when the
/// thread failed.
async fn take_blocking(
    layout: Layout,
    chunk: Chunk,
    from: usize,
    mut out: Batch,
) -> Option<(Chunk, Batch, Taken)> {
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
