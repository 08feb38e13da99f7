//! The output side of `leafcache export` (docs/contract.md sections 1 and 10): where the
//! export's lines go and in what form. What is read from Redis, and the
//! JSONL line of one search, are [`crate::admin::export`]'s; this module
//! only turns those lines into objects.
//!
//! - [`target`]: `--out` / `--daily` as a place: stdout, a local path, or
//!   `gs://`, `s3://`, `file://` URLs, opened from the environment.
//! - [`format`]: `--format jsonl|parquet|chat` (and `--gzip`): an
//!   [`Encoder`] turns pages of lines into the bytes of one object.
//! - `parquet`: the Parquet schema and its writer.
//! - [`sink`]: an object written whole or not at all (streaming
//!   multipart upload, aborted on failure), or stdout.
//! - [`gcs`]: Cloud Storage's resumable upload, which the emulator speaks
//!   too (`object_store` gives it credentials).
//!
//! [`write`] joins them: pages from the exporter, through the encoder, into
//! the sink. Memory stays flat whatever the size: one page of lines, one
//! Parquet row group, and the upload's parts in flight.

pub mod format;
pub mod gcs;
mod parquet;
pub mod sink;
pub mod target;

pub use format::{Encoder, Format};
pub use sink::Sink;
pub use target::{Opened, Place, StoreUrl, TargetError};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

use crate::admin::export::{Exporter, Page};

/// `--daily`: the object of `day` under a prefix, in a Hive-style partition
/// (`date=YYYY-MM-DD/searches.jsonl.gz`), so BigQuery, DuckDB and Spark
/// read the folder as one table partitioned by `date`.
pub fn daily_object(day: u64, format: Format, gzip: bool) -> String {
    format!(
        "date={}/{}",
        crate::admin::dates::format(day),
        format.daily_name(gzip)
    )
}

/// Writes what `exporter` reads, encoded by `encoder`, to `sink`; the
/// searches read and the rows written (searches, or chat pairs). On any
/// failure (Redis, encoding, the store) the sink is aborted: no object
/// appears. `redis` names Redis in messages; `on_page` sees every page
/// (for a progress bar).
///
/// Reading and encoding overlap: page N is encoded on the encoder's thread
/// ([`EncoderThread`]) while page N+1 is read from Redis. Encoding is CPU
/// work (gzip alone doubled the time of a 1,000,000-search export when it
/// ran between reads), reading mostly waits on Redis.
pub async fn write(
    exporter: &mut Exporter,
    encoder: Encoder,
    mut sink: Sink,
    redis: &str,
    on_page: &mut dyn FnMut(&Page),
) -> anyhow::Result<(u64, u64)> {
    let read_failed = || format!("cannot read from redis at {redis}");
    let mut searches = 0;
    let pumped = async {
        let mut encoder = EncoderThread::start(encoder)?;
        let mut next = exporter.next_page().await.with_context(read_failed)?;
        while let Some(page) = next {
            on_page(&page);
            searches += page.records as u64;
            encoder.encode(page.jsonl).await?;
            let (bytes, read) = tokio::join!(encoder.encoded(), exporter.next_page());
            sink.write(&bytes?).await?;
            next = read.with_context(read_failed)?;
        }
        let (tail, rows) = encoder.finish().await?;
        sink.write(&tail).await?;
        Ok::<u64, anyhow::Error>(rows)
    }
    .await;
    match pumped {
        Ok(rows) => {
            sink.finish().await?;
            Ok((searches, rows))
        }
        Err(e) => {
            sink.abort().await;
            Err(e)
        }
    }
}

/// The encoder, on one thread of its own for the whole object. A task per
/// page on tokio's blocking pool ran on whichever pooled thread was idle, and
/// each of those threads' allocator heaps kept what the encoder freed there:
/// a Parquet export's peak RSS was ~30 MiB higher, and varied run to run.
struct EncoderThread {
    pages: mpsc::Sender<Vec<u8>>,
    encoded: mpsc::Receiver<anyhow::Result<Vec<u8>>>,
    /// The object's last bytes and the rows written, once `pages` closes.
    done: oneshot::Receiver<anyhow::Result<(Vec<u8>, u64)>>,
}

impl EncoderThread {
    fn start(mut encoder: Encoder) -> anyhow::Result<EncoderThread> {
        let (pages, mut to_encode) = mpsc::channel::<Vec<u8>>(1);
        let (encoded_tx, encoded) = mpsc::channel(1);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("export-encoder".into())
            .spawn(move || {
                while let Some(page) = to_encode.blocking_recv() {
                    let bytes = encoder.push(page);
                    let failed = bytes.is_err();
                    if encoded_tx.blocking_send(bytes).is_err() || failed {
                        return;
                    }
                }
                // Not for an export given up.
                if !done_tx.is_closed() {
                    let rows = encoder.rows();
                    let _ = done_tx.send(encoder.finish().map(|tail| (tail, rows)));
                }
            })
            .context("cannot start the export's encoder")?;
        Ok(EncoderThread {
            pages,
            encoded,
            done,
        })
    }

    /// Hands a page over, to be encoded while the next one is read.
    async fn encode(&mut self, page: Vec<u8>) -> anyhow::Result<()> {
        self.pages.send(page).await.map_err(|_| stopped())
    }

    /// The encoded bytes of the page handed over last (possibly none).
    async fn encoded(&mut self) -> anyhow::Result<Vec<u8>> {
        self.encoded.recv().await.unwrap_or_else(|| Err(stopped()))
    }

    /// The object's last bytes (gzip trailer, Parquet footer) and the rows
    /// written.
    async fn finish(self) -> anyhow::Result<(Vec<u8>, u64)> {
        drop(self.pages);
        self.done.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// The encoder's thread ended without an answer: it panicked.
fn stopped() -> anyhow::Error {
    anyhow::anyhow!("the export's encoder failed")
}
