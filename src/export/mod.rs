//! The output side of `leafcache export` (SPEC sections 1 and 10): where the
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
/// Reading and encoding overlap: page N is encoded on a blocking thread
/// while page N+1 is read from Redis. Encoding is CPU work (gzip alone
/// doubled the time of a 1,000,000-search export when it ran between
/// reads), reading mostly waits on Redis.
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
        let mut encoder = encoder;
        let mut next = exporter.next_page().await.with_context(read_failed)?;
        while let Some(page) = next {
            on_page(&page);
            searches += page.records as u64;
            let jsonl = page.jsonl;
            let encode = tokio::task::spawn_blocking(move || {
                let bytes = encoder.push(jsonl);
                (encoder, bytes)
            });
            let (encoded, read) = tokio::join!(encode, exporter.next_page());
            let (returned, bytes) = encoded.context("the export's encoder failed")?;
            encoder = returned;
            sink.write(&bytes?).await?;
            next = read.with_context(read_failed)?;
        }
        let rows = encoder.rows();
        let tail = tokio::task::spawn_blocking(move || encoder.finish())
            .await
            .context("the export's encoder failed")??;
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
