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

/// The size of one part of a multipart upload (S3 and GCS take 5 MiB to
/// 5 GiB), and the most an object's writer buffers.
pub const PART: usize = 8 << 20;
/// Parts uploaded at once: with [`PART`], at most ~24 MiB of an export is in
/// memory on its way to the store.
pub const PARTS_IN_FLIGHT: usize = 2;

pub enum Sink {
    Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>),
    Object {
        writer: Box<BufWriter>,
        /// The object's URL, for messages.
        shown: String,
    },
    /// A Cloud Storage object, through the resumable upload
    /// ([`super::gcs`]).
    Gcs {
        upload: Box<gcs::Upload>,
        shown: String,
    },
}

impl Sink {
    pub fn stdout() -> Sink {
        Sink::Stdout(std::io::BufWriter::with_capacity(
            256 * 1024,
            std::io::stdout().lock(),
        ))
    }

    pub fn object(store: Arc<dyn ObjectStore>, path: ObjectPath, shown: String) -> Sink {
        let writer =
            BufWriter::with_capacity(store, path, PART).with_max_concurrency(PARTS_IN_FLIGHT);
        Sink::Object {
            writer: Box::new(writer),
            shown,
        }
    }

    pub fn gcs(upload: gcs::Upload, shown: String) -> Sink {
        Sink::Gcs {
            upload: Box::new(upload),
            shown,
        }
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
                .write_all(bytes)
                .await
                .map_err(|e| anyhow!("cannot write {shown}: {}", one_line(&e))),
            Sink::Gcs { upload, shown } => upload
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
                .shutdown()
                .await
                .map_err(|e| anyhow!("cannot write {shown}: {}", one_line(&e))),
            Sink::Gcs { mut upload, shown } => upload
                .finish()
                .await
                .map_err(|e| anyhow!("cannot write {shown}: {}", one_line(&e))),
        }
    }

    /// Gives up: an object's upload is aborted, so the object does not
    /// appear (an older one of the same name stays as it was).
    pub async fn abort(self) {
        let (shown, aborted) = match self {
            Sink::Stdout(_) => return,
            Sink::Object { mut writer, shown } => {
                let aborted = writer.abort().await.map_err(anyhow::Error::from);
                (shown, aborted)
            }
            Sink::Gcs { mut upload, shown } => (shown, upload.abort().await),
        };
        if let Err(e) = aborted {
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
