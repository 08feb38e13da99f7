//! Where `--out` and `--daily` point: standard output, a local path, or an
//! object store URL (`gs://bucket/prefix`, `s3://bucket/prefix`,
//! `file:///abs/dir`), parsed before anything is read, so that a bad URL is a
//! usage error (exit 2) and never a half-done export.
//!
//! Parsing ([`Place::parse`]) is pure; opening the store ([`Place::open`])
//! reads the environment the way each cloud's own tools do:
//!
//! - `gs://`: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`,
//!   else the metadata server of Cloud Run and GKE), and
//!   `STORAGE_EMULATOR_HOST=http://host:port` (the variable Google's client
//!   libraries honour) for an emulator such as fake-gcs-server, without
//!   credentials. Objects go through the JSON API's resumable upload
//!   ([`super::gcs`]).
//! - `s3://`: the standard `AWS_*` variables, `AWS_ENDPOINT_URL` included for
//!   S3-compatible stores (`AWS_ALLOW_HTTP=true` for a plain-http endpoint).
//! - `file://` and plain paths: the local file system.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, RetryConfig};
use thiserror::Error;

use super::gcs;
use super::sink::{ObjectWriter, Sink};

/// A `--out` or `--daily` that cannot name a place: a usage error.
#[derive(Debug, Error, PartialEq)]
pub enum TargetError {
    #[error("{0:?} is not a URL leafcache can write to (gs://, s3://, file:// or a local path)")]
    Unsupported(String),
    #[error("{0:?} names no bucket (gs://BUCKET/prefix, s3://BUCKET/prefix)")]
    NoBucket(String),
    #[error("{0:?} names no object: give the file's name after the bucket or directory")]
    NoObject(String),
    #[error("{0:?}: a file:// URL needs an absolute path (file:///dir)")]
    NotAbsolute(String),
    #[error("{0:?} is not a valid URL: {1}")]
    BadUrl(String, String),
}

/// Where an export goes, as the command line named it.
#[derive(Clone, Debug, PartialEq)]
pub enum Place {
    /// Standard output (`--out -`, or no `--out`).
    Stdout,
    /// An object, or with `--daily` a folder of objects, in a store.
    Store(StoreUrl),
}

/// A location in an object store: the store, and an object name or prefix
/// in it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreUrl {
    pub store: Store,
    /// The object (`--out`) or the prefix (`--daily`), `/`-separated, with
    /// no leading or trailing `/`; empty for a bucket's root.
    pub key: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Store {
    Gcs {
        bucket: String,
    },
    S3 {
        bucket: String,
    },
    /// A local directory, absolute; objects are files under it.
    Local {
        dir: std::path::PathBuf,
    },
}

/// What an opened place writes through.
enum Writer {
    Store(Arc<dyn ObjectStore>),
    Gcs(Arc<gcs::Bucket>),
}

/// A store opened for writing, and where in it.
pub struct Opened {
    writer: Writer,
    /// The object or prefix inside the store.
    key: ObjectPath,
    /// The place as a user would write it, for messages.
    shown: String,
}

impl Opened {
    /// The object this place names (`--out`).
    pub fn object(&self) -> Sink {
        self.sink(self.key.clone(), self.shown.clone())
    }

    /// The object `name` (`a/b.jsonl`) under this prefix (`--daily`).
    pub fn child(&self, name: &str) -> Sink {
        let path = name
            .split('/')
            .fold(self.key.clone(), |path, part| path.join(part));
        let shown = format!("{}/{}", self.shown.trim_end_matches('/'), name);
        self.sink(path, shown)
    }

    fn sink(&self, path: ObjectPath, shown: String) -> Sink {
        let writer = match &self.writer {
            Writer::Store(store) => ObjectWriter::store(store.clone(), path),
            Writer::Gcs(bucket) => ObjectWriter::Gcs(Box::new(bucket.upload(path.as_ref()))),
        };
        Sink::object(writer, shown)
    }
}

/// Requests to the store are retried on errors that can pass (5xx, timeouts,
/// connection resets), but not for the 3 minutes `object_store` allows by
/// default: a job that cannot write fails, reports, and its scheduler retries
/// the whole day (the object is written whole or not at all, so that is safe).
const RETRY: Duration = Duration::from_secs(30);

impl Place {
    /// Reads `--out` (`for_object`: the text names one object) or `--daily`
    /// (a folder).
    pub fn parse(text: &str, for_object: bool) -> Result<Place, TargetError> {
        if text == "-" && for_object {
            return Ok(Place::Stdout);
        }
        let Some((scheme, _)) = text.split_once("://") else {
            // `gs:bucket` or `s3:/bucket` is a mistyped URL, not a file name.
            let lower = text.to_ascii_lowercase();
            if ["gs:", "s3:", "file:"].iter().any(|s| lower.starts_with(s)) {
                return Err(TargetError::Unsupported(text.into()));
            }
            return local(std::path::Path::new(text), text, for_object);
        };
        let url =
            url::Url::parse(text).map_err(|e| TargetError::BadUrl(text.into(), e.to_string()))?;
        let key = || -> Result<String, TargetError> {
            let decoded = percent_encoding::percent_decode_str(url.path())
                .decode_utf8()
                .map_err(|e| TargetError::BadUrl(text.into(), e.to_string()))?;
            let key = decoded.trim_matches('/').to_owned();
            if for_object && key.is_empty() {
                return Err(TargetError::NoObject(text.into()));
            }
            Ok(key)
        };
        let bucket = || match url.host_str() {
            Some(b) if !b.is_empty() => Ok(b.to_owned()),
            _ => Err(TargetError::NoBucket(text.into())),
        };
        let store = match scheme.to_ascii_lowercase().as_str() {
            "gs" => Store::Gcs { bucket: bucket()? },
            "s3" => Store::S3 { bucket: bucket()? },
            "file" => {
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(TargetError::NotAbsolute(text.into()));
                }
                let path = url
                    .to_file_path()
                    .map_err(|()| TargetError::NotAbsolute(text.into()))?;
                return local(&path, text, for_object);
            }
            _ => return Err(TargetError::Unsupported(text.into())),
        };
        Ok(Place::Store(StoreUrl { store, key: key()? }))
    }
}

/// A local path: the directory becomes the store, so that a rename inside it
/// (how the local store makes a file appear whole) never crosses file systems.
fn local(path: &std::path::Path, text: &str, for_object: bool) -> Result<Place, TargetError> {
    let path =
        std::path::absolute(path).map_err(|e| TargetError::BadUrl(text.into(), e.to_string()))?;
    let (dir, key) = if for_object {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| TargetError::NoObject(text.into()))?;
        let dir = path
            .parent()
            .map_or_else(|| "/".into(), |p| p.to_path_buf());
        (dir, name.to_owned())
    } else {
        (path, String::new())
    };
    Ok(Place::Store(StoreUrl {
        store: Store::Local { dir },
        key,
    }))
}

impl StoreUrl {
    /// The URL as a user would write it.
    pub fn shown(&self) -> String {
        let (scheme, root) = match &self.store {
            Store::Gcs { bucket } => ("gs://", bucket.clone()),
            Store::S3 { bucket } => ("s3://", bucket.clone()),
            Store::Local { dir } => ("", dir.display().to_string()),
        };
        match self.key.as_str() {
            "" => format!("{scheme}{root}"),
            key => format!("{scheme}{}/{key}", root.trim_end_matches('/')),
        }
    }

    /// Builds the store's client from the environment (no request is made
    /// yet). A local directory is created.
    pub fn open(&self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Opened> {
        use anyhow::Context;
        // reqwest is built without a bundled TLS provider: the process's
        // one (ring, as for Redis) serves it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shown = self.shown();
        let retry = RetryConfig {
            retry_timeout: RETRY,
            ..RetryConfig::default()
        };
        let writer = match &self.store {
            Store::Gcs { bucket } => {
                let emulator = env("STORAGE_EMULATOR_HOST").filter(|h| !h.is_empty());
                let endpoint = match emulator {
                    // The emulator asks for no credentials, so none is
                    // ever fetched.
                    Some(host) if host.contains("://") => gcs::Endpoint::Emulator(host),
                    Some(host) => gcs::Endpoint::Emulator(format!("http://{host}")),
                    None => {
                        let google = GoogleCloudStorageBuilder::from_env()
                            .with_bucket_name(bucket)
                            .build()
                            .with_context(|| format!("cannot use {shown}"))?;
                        gcs::Endpoint::Google(google.credentials().clone())
                    }
                };
                let bucket = gcs::Bucket::new(endpoint, bucket, RETRY)
                    .with_context(|| format!("cannot use {shown}"))?;
                Writer::Gcs(Arc::new(bucket))
            }
            Store::S3 { bucket } => Writer::Store(Arc::new(
                AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .build()
                    .with_context(|| format!("cannot use {shown}"))?,
            )),
            Store::Local { dir } => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Writer::Store(Arc::new(
                    LocalFileSystem::new_with_prefix(dir)
                        .with_context(|| format!("cannot use {}", dir.display()))?,
                ))
            }
        };
        let key = ObjectPath::parse(&self.key)
            .with_context(|| format!("{shown}: not a valid object name"))?;
        Ok(Opened { writer, key, shown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(text: &str, object: bool) -> StoreUrl {
        match Place::parse(text, object) {
            Ok(Place::Store(s)) => s,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn cloud_urls_name_a_bucket_and_a_prefix() {
        let s = store("gs://exports/searches/", false);
        assert_eq!(
            s.store,
            Store::Gcs {
                bucket: "exports".into()
            }
        );
        assert_eq!(s.key, "searches");
        assert_eq!(s.shown(), "gs://exports/searches");
        let s = store("s3://b/a/b/c.jsonl.gz", true);
        assert_eq!(s.store, Store::S3 { bucket: "b".into() });
        assert_eq!(s.key, "a/b/c.jsonl.gz");
        assert_eq!(store("gs://exports", false).key, "");
    }

    #[test]
    fn local_paths_and_file_urls_are_the_same_place() {
        let a = store("file:///tmp/x/out.jsonl", true);
        let b = store("/tmp/x/out.jsonl", true);
        assert_eq!(a, b);
        assert_eq!(
            a.store,
            Store::Local {
                dir: "/tmp/x".into()
            }
        );
        assert_eq!(a.key, "out.jsonl");
        let d = store("/tmp/exports", false);
        assert_eq!(d.key, "");
        assert!(matches!(Place::parse("-", true), Ok(Place::Stdout)));
    }

    #[test]
    fn a_bad_url_is_refused_before_anything_runs() {
        let err = |t: &str, object| Place::parse(t, object).unwrap_err();
        assert!(matches!(
            err("ftp://h/x", true),
            TargetError::Unsupported(_)
        ));
        assert!(matches!(err("gs:///x", false), TargetError::NoBucket(_)));
        assert!(matches!(err("s3://b", true), TargetError::NoObject(_)));
        assert!(matches!(err("gs://b/", true), TargetError::NoObject(_)));
        assert!(matches!(
            err("file://host/x", false),
            TargetError::NotAbsolute(_)
        ));
    }
}
