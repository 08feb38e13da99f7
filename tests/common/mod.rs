//! Harness for the end-to-end tests: a real `redis-server`, a real HTTP backend
//! inside the test process, and the real leafcache server between them (in
//! the test's process, or the binary where a test needs the process).
//!
//! Nothing here is mocked. Each test starts its own three servers on free
//! loopback ports, so tests run in parallel and never touch a Redis that happens
//! to run on the machine (port 6379 is never used).
//!
//! - `redis_server`: [`Redis`], a private `redis-server`, killable and restartable.
//! - `redis_cluster`: [`RedisCluster`], a private three-master Redis Cluster.
//! - `emulators`: object stores for the export tests (moto S3, fake-gcs-server).
//! - `backend`: [`Backend`], which records, counts and answers requests as the
//!   test's handler says ([`Reply`]), and tracks its peak concurrency.
//! - [`Harness`] / [`setup`]: the three started together, as most tests do.
//! - `proxy`: [`Proxy`], the server in process (or the `leafcache serve`
//!   process), and the proxy.toml it reads ([`ProxyConfig`], [`Route`]).
//! - `client`: [`Req`], [`Resp`] and the [`CacheStatus`] parser.
//! - `assertions`: the X-Cache / Cache-Status forms of the contract.
//!
//! Every wait is bounded by [`WAIT`]; a test that would hang fails instead.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

mod assertions;
mod backend;
mod client;
pub mod emulators;
pub mod events;
pub mod ops;
mod proxy;
mod redis_cluster;
mod redis_server;

#[allow(unused_imports)] // not every test file asserts with these
pub use assertions::*;
pub use backend::*;
pub use client::*;
pub use proxy::*;
#[allow(unused_imports)] // only the cluster tests start a cluster
pub use redis_cluster::*;
pub use redis_server::*;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

/// A private Redis, a backend and the proxy in front of them.
pub struct Harness {
    pub redis: Redis,
    pub backend: Backend,
    pub proxy: Proxy,
}

impl Harness {
    /// With a backend that echoes what it is sent.
    pub async fn start(config: &ProxyConfig) -> Harness {
        Harness::with_backend(config, Backend::echo().await).await
    }

    pub async fn with_backend(config: &ProxyConfig, backend: Backend) -> Harness {
        let redis = Redis::start().await;
        let proxy = Proxy::start(config, &backend, &redis).await;
        Harness {
            redis,
            backend,
            proxy,
        }
    }

    pub fn parts(self) -> (Redis, Backend, Proxy) {
        (self.redis, self.backend, self.proxy)
    }
}

/// [`Harness::start`], as the parts.
pub async fn setup(config: ProxyConfig) -> (Redis, Backend, Proxy) {
    Harness::start(&config).await.parts()
}

/// The bound of every wait in the suite: readiness, polls, one HTTP exchange.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(20);

/// A loopback port that is free now (never 6379, where a shared Redis runs).
///
/// Ports come from below the kernel's ephemeral range, so the many outgoing
/// connections of a test run can never take one between this check and the
/// server's bind; a process-wide counter keeps parallel tests apart.
/// The `leafcache` binary the tests run: `LEAFCACHE_BIN` when set (a copy
/// of this tree's build, where several trees share one target directory and
/// another tree's build may replace `target/debug/leafcache` meanwhile),
/// else the one cargo built for these tests.
pub fn leafcache_bin() -> std::path::PathBuf {
    std::env::var_os("LEAFCACHE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_leafcache").into())
}

pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 12_000 {
        (ephemeral_low - 12_000, ephemeral_low - 1_000)
    } else {
        (61_000, 65_000)
    };
    let span = high - low;
    let start = std::process::id() as usize * 7919 % span;
    for _ in 0..span {
        let port = (low + (start + NEXT.fetch_add(1, Ordering::SeqCst)) % span) as u16;
        if port != 6379 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// Reads one HTTP/1.1 request (its head, then as much body as its
/// `content-length` says) from a raw connection into `seen`, which may
/// already hold the start of it, and removes it from `seen`, so that what
/// follows (a pipelined request) stays. `false` when the connection ended
/// first.
pub async fn read_raw_request(stream: &mut tokio::net::TcpStream, seen: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let body_start = loop {
        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&seen[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while seen.len() < body_start + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    seen.drain(..body_start + length);
    true
}

/// Polls `probe` until it yields `Some`, at most [`WAIT`]; panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(WAIT, what, probe).await
}

/// [`eventually`] with another bound, for waits the spec gives longer (reconnects).
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Polls `cond` for at most `limit`; tells whether it became true. For waits
/// whose failure is itself an outcome the test reports (e.g. "never concurrent").
pub async fn became_true(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A latch: closed until `open`, then open for ever. Waiting on an open gate
/// returns at once, so opening before the backend waits is not a lost wake-up.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// A deterministic body of `len` bytes that is not a repeat of one short pattern,
/// so that a dropped or reordered chunk shows.
pub fn patterned_bytes(len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut x: u32 = 0x9e37_79b9;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// The fields of a search record (`search:<id>`, a string of compact JSON)
/// as text, the way a hash of them would read: strings as they are,
/// numbers and lists as JSON, absent values and feedback counts of 0 left
/// out, and so are the export's derived `impressions` and `ubi`. `key`
/// names the record; `feedback` is its feedback list.
pub fn record_fields(
    key: &str,
    stored: &[u8],
    feedback: &[Vec<u8>],
) -> std::collections::BTreeMap<String, String> {
    let id = key
        .rsplit("search:")
        .next()
        .unwrap_or(key)
        .trim_matches(|c| c == '{' || c == '}');
    let record = leafcache::events::record::Record::from_compact(id, stored)
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    let mut line = Vec::new();
    record.write_line(feedback, &mut line);
    let line: serde_json::Value = serde_json::from_slice(&line).expect("an export line");
    line.as_object()
        .expect("an object")
        .iter()
        .filter(|(k, v)| match k.as_str() {
            // The feedback list, and what the export derives from the
            // record (impressions, UBI), are not fields of the record.
            "feedback" | "impressions" | "ubi" => false,
            "clicks" | "orders" | "purchases" => !v.is_null() && **v != 0,
            _ => !v.is_null(),
        })
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}
