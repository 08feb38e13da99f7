//! Where an export's bytes go: standard output, or one object written whole
//! or not at all.
//!
//! An S3 or local object is written through `object_store`'s `BufWriter`:
//! up to [`PART`] bytes it is one PUT; past that a multipart upload of
//! [`PART`] sized parts, [`PARTS_IN_FLIGHT`] at a time, that the store makes
//! visible only on completion. On failure the upload is aborted, so a
//! reader never sees half an export, and a rerun replaces the object (PUT
//! and complete overwrite). The local store does the same with a temporary
//! file renamed into place. A Cloud Storage object goes through
//! [`super::gcs`]'s resumable upload instead: a session, then [`PART`]
//! sized chunks in order, one in flight; the object appears with the last.

use std::io::Write;
use std::sync::Arc;

use anyhow::anyhow;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use tokio::io::AsyncWriteExt;

use super::gcs;

pub use super::gcs::PART;
/// Parts uploaded at once: with [`PART`], at most ~24 MiB of an export is in
/// memory on its way to the store.
pub const PARTS_IN_FLIGHT: usize = 2;

pub enum Sink {
    Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>),
    Object {
        writer: ObjectWriter,
        /// The object's URL, for messages.
        shown: String,
    },
}

/// How an object's bytes reach its store.
pub enum ObjectWriter {
    /// S3 and local files.
    Store(Box<BufWriter>),
    /// Cloud Storage, through the resumable upload ([`super::gcs`]).
    Gcs(Box<gcs::Upload>),
}

impl ObjectWriter {
    pub fn store(store: Arc<dyn ObjectStore>, path: ObjectPath) -> ObjectWriter {
        let writer =
            BufWriter::with_capacity(store, path, PART).with_max_concurrency(PARTS_IN_FLIGHT);
        ObjectWriter::Store(Box::new(writer))
    }

    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            ObjectWriter::Store(w) => Ok(w.write_all(bytes).await?),
            ObjectWriter::Gcs(u) => u.write(bytes).await,
        }
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            ObjectWriter::Store(w) => Ok(w.shutdown().await?),
            ObjectWriter::Gcs(u) => u.finish().await,
        }
    }

    async fn abort(&mut self) -> anyhow::Result<()> {
        match self {
            ObjectWriter::Store(w) => Ok(w.abort().await?),
            ObjectWriter::Gcs(u) => u.abort().await,
        }
    }
}

impl Sink {
    pub fn stdout() -> Sink {
        Sink::Stdout(std::io::BufWriter::with_capacity(
            256 * 1024,
            std::io::stdout().lock(),
        ))
    }

    pub fn object(writer: ObjectWriter, shown: String) -> Sink {
        Sink::Object { writer, shown }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Stdout(out) => out
                .write_all(bytes)
                .map_err(|e| anyhow!("cannot write the export to stdout: {e}")),
            Sink::Object { writer, shown } => writer
                .write(bytes)
                .await
                .map_err(|e| anyhow!("cannot write {shown}: {}", one_line(&e))),
        }
    }

    /// Completes the output: the object appears now, whole.
    pub async fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(mut out) => out
                .flush()
                .map_err(|e| anyhow!("cannot write the export to stdout: {e}")),
            Sink::Object { mut writer, shown } => writer
                .finish()
                .await
                .map_err(|e| anyhow!("cannot write {shown}: {}", one_line(&e))),
        }
    }

    /// Gives up: an object's upload is aborted, so the object does not
    /// appear (an older one of the same name stays as it was).
    pub async fn abort(self) {
        if let Sink::Object { mut writer, shown } = self
            && let Err(e) = writer.abort().await
        {
            tracing::warn!(object = %shown, error = %one_line(&e), "cannot abort the upload");
        }
    }
}

/// A store's error on one line (some carry a response body with newlines).
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
