//! What the writer sends through its [`LogTarget`]: batches, counter
//! flushes and spooled records, as raw RESP when the target speaks it (its
//! own connection to a single Redis) or as pipelines (the pool, a cluster).

use super::spooling::{REPLAY_BYTES, SpoolRecord, Taken, take_records};
use crate::events::SearchEvent;
use crate::events::counters::Counters;
use crate::events::spool::Chunk;
use crate::events::write::{self, Layout};
use crate::redis::log_target::{LogTarget, Sent, pipeline};
use crate::redis::{Commands, RespBuf};

/// The writer's way into Redis; `redis` chose it.
pub(super) struct Target(pub(super) LogTarget);

impl Target {
    /// Writes a batch of records. `encoded` holds its commands already when
    /// the target is direct.
    pub(super) async fn records(
        &mut self,
        layout: &Layout,
        events: &[SearchEvent],
        encoded: &RespBuf,
    ) -> Sent {
        let target = &mut self.0;
        if target.speaks_raw() {
            target.send_raw(encoded).await
        } else {
            target.send_pipe(&write::records(layout, events)).await
        }
    }

    pub(super) async fn counters(
        &mut self,
        layout: &Layout,
        counters: &Counters,
        buf: &mut RespBuf,
    ) -> Sent {
        let target = &mut self.0;
        if target.speaks_raw() {
            buf.clear();
            write::counters_into(layout, counters, buf);
            target.send_raw(buf).await
        } else {
            target.send_pipe(&write::counters(layout, counters)).await
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
        match record {
            SpoolRecord::Counters(counters) => self.counters(layout, counters, buf).await,
            SpoolRecord::Records(events) if self.0.speaks_raw() => {
                buf.clear();
                write::records_into(layout, events, buf);
                self.0.send_raw(buf).await
            }
            SpoolRecord::Records(events) => self.0.send_pipe(&write::records(layout, events)).await,
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
        let target = &mut self.0;
        if target.speaks_raw() {
            buf.clear();
            let (chunk, mut buf, taken) = take_blocking(layout, chunk, from, buf).await?;
            let sent = match taken.records {
                0 => Ok(None),
                _ => target.send_raw(&buf).await,
            };
            if buf.as_bytes().len() > REPLAY_BYTES * 2 {
                buf = RespBuf::default(); // one outsized record: not kept
            }
            Some((chunk, buf, taken, sent))
        } else {
            let mut pipe = pipeline();
            pipe.atomic();
            let (chunk, pipe, taken) = take_blocking(layout, chunk, from, pipe).await?;
            let sent = match taken.records {
                0 => Ok(None),
                _ => target.send_pipe(&pipe).await,
            };
            Some((chunk, buf, taken, sent))
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
