//! Harness for the end-to-end tests: a real `redis-server`, a real HTTP backend
//! inside the test process, and the real `leafcache` binary between them.
//!
//! Nothing here is mocked. Each test starts its own three processes/servers on
//! ephemeral loopback ports, so tests run in parallel and never touch a Redis that
//! happens to run on the machine (port 6379 is never used).
//!
//! Every wait is bounded by [`WAIT`]; a test that would hang fails instead.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The bound of every wait in the suite: readiness, polls, one HTTP exchange.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(20);

/// A loopback port that is free now (never 6379, where a shared Redis runs).
///
/// Ports come from below the kernel's ephemeral range, so the many outgoing
/// connections of a test run can never take one between this check and the
/// server's bind; a process-wide counter keeps parallel tests apart.
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

// ---------------------------------------------------------------------------
// Gate: a one-way latch the test opens to let a held backend answer go on.
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// A private `redis-server` on an ephemeral port, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("create a temp dir for redis"),
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed and starts");
        let pid = child.id();
        self.child = Some(child);
        let url = self.url();
        // Ready means our own process answers: a PONG from another server that
        // holds the port would make the test inspect the wrong Redis.
        eventually("redis-server to answer PING", || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut con = client.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut con)
                    .await
                    .ok()?;
                info.lines()
                    .any(|line| line.trim() == format!("process_id:{pid}"))
                    .then_some(())
            }
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as an outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }

    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut con = self.conn().await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut con)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }

    pub async fn exists(&self, key: &str) -> bool {
        let mut con = self.conn().await;
        let n: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("EXISTS");
        n == 1
    }

    /// TTL in seconds (-2: no key, -1: no expiry).
    pub async fn ttl(&self, key: &str) -> i64 {
        let mut con = self.conn().await;
        redis::cmd("TTL")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("TTL")
    }

    pub async fn del(&self, key: &str) {
        let mut con = self.conn().await;
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("DEL");
    }

    /// Redis writes happen after the answer: wait (bounded) for the key.
    pub async fn wait_for_key(&self, key: &str) {
        eventually(&format!("redis key {key}"), || async {
            self.exists(key).await.then_some(())
        })
        .await;
    }

    /// Every cache entry (user or global scope) currently in Redis.
    pub async fn cache_keys(&self) -> Vec<String> {
        let mut keys = self.keys("*cache:*").await;
        keys.retain(|k| k.contains(":cache:") || k.starts_with("cache:global:"));
        keys
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn user_key(user: &str, hash: &str) -> String {
    format!("user:{user}:cache:{hash}")
}

pub fn global_key(hash: &str) -> String {
    format!("cache:global:{hash}")
}

// ---------------------------------------------------------------------------
// Backend
// ---------------------------------------------------------------------------

/// One request as the backend received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// 1 for the first request the backend received, 2 for the next...
    pub n: usize,
    pub method: String,
    pub path_and_query: String,
    /// In arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("backend received a JSON body")
    }
}

/// What the backend answers to one request.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
    /// When set, the answer waits (headers included) until the gate opens.
    pub hold: Option<Gate>,
}

pub enum ReplyBody {
    Full(Bytes),
    /// Sends `first`, waits for `gate`, then sends `rest` in 64 KiB chunks.
    Gated {
        first: Bytes,
        gate: Gate,
        rest: Bytes,
    },
}

impl Reply {
    pub fn json(value: Value) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: ReplyBody::Full(Bytes::from(value.to_string())),
            hold: None,
        }
    }

    /// The default answer: a search result naming which backend request made it,
    /// so a test can tell a replayed answer from a fresh one.
    pub fn echo(req: &Recorded) -> Reply {
        Reply::json(json!({
            "n": req.n,
            "method": req.method,
            "uri": req.path_and_query,
            "user": req.header("x-user-id"),
            "intent": "product_search",
            "confidence": 0.9,
            "products": [{"product_id": "p1", "supplier": "s1"}],
        }))
    }

    /// An answer that sends `first`, then waits for `gate` before sending `rest`.
    pub fn gated(first: Bytes, gate: &Gate, rest: Bytes) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: ReplyBody::Gated {
                first,
                gate: gate.clone(),
                rest,
            },
            hold: None,
        }
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = ReplyBody::Full(body.into());
        self
    }

    pub fn hold_until(mut self, gate: &Gate) -> Reply {
        self.hold = Some(gate.clone());
        self
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

struct BackendState {
    handler: Box<Handler>,
    count: AtomicUsize,
    inflight: AtomicUsize,
    peak: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
}

/// A small HTTP/1.1 server on 127.0.0.1:0 that records every request and answers
/// what the test's handler says.
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<BackendState>,
    task: JoinHandle<()>,
}

/// Decrements the in-flight count even when the proxy hangs up mid-request.
struct InflightGuard(Arc<BackendState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend {
    /// A backend answering [`Reply::echo`] to everything.
    pub async fn echo() -> Backend {
        Backend::start(Reply::echo).await
    }

    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the backend");
        let addr = listener.local_addr().expect("backend address");
        let state = Arc::new(BackendState {
            handler: Box::new(handler),
            count: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| serve(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// How many requests reached the backend so far.
    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Requests being answered right now.
    pub fn inflight(&self) -> usize {
        self.state.inflight.load(Ordering::SeqCst)
    }

    /// The most requests ever answered at the same time.
    pub fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("not poisoned").clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the backend received a request")
    }

    pub async fn wait_for_count(&self, n: usize) {
        eventually(&format!("{n} backend request(s)"), || async {
            (self.count() >= n).then_some(())
        })
        .await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    state: Arc<BackendState>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let n = state.count.fetch_add(1, Ordering::SeqCst) + 1;
    let now = state.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak.fetch_max(now, Ordering::SeqCst);
    let _guard = InflightGuard(state.clone());
    let recorded = Recorded {
        n,
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    state
        .requests
        .lock()
        .expect("not poisoned")
        .push(recorded.clone());
    let reply = (state.handler)(&recorded);
    if let Some(gate) = &reply.hold {
        gate.wait().await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    let body = match reply.body {
        ReplyBody::Full(bytes) => Full::new(bytes).boxed(),
        ReplyBody::Gated { first, gate, rest } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            tokio::spawn(async move {
                if tx.send(first).await.is_err() {
                    return;
                }
                gate.wait().await;
                let mut rest = rest;
                while !rest.is_empty() {
                    let chunk = rest.split_to(rest.len().min(64 * 1024));
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            });
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
            });
            StreamBody::new(frames).boxed()
        }
    };
    Ok(response
        .body(body)
        .expect("test replies are valid responses"))
}

// ---------------------------------------------------------------------------
// Proxy configuration
// ---------------------------------------------------------------------------

/// One `[[route]]` table: key → TOML value literal, written in insertion order.
#[derive(Clone)]
pub struct Route {
    fields: Vec<(String, String)>,
}

impl Route {
    pub fn new(name: &str) -> Route {
        Route {
            fields: vec![("name".into(), format!("{name:?}"))],
        }
    }

    /// The search route of SPEC section 2, in user scope.
    pub fn search() -> Route {
        Route::new("search")
            .set("methods", r#"["GET", "POST"]"#)
            .set("path", r#""/api/v1/search""#)
            .set("query", r#"["json:/query", "query:q"]"#)
            .set("scope", r#""user""#)
            .set("key_ignore", r#"["json:/session_id", "json:/request_id"]"#)
            .set("vary_headers", r#"["accept-encoding"]"#)
            .set(
                "bypass_query",
                r#"['(?i)\b(add|remove|cart|checkout|order)\b']"#,
            )
            .set(
                "bypass_intents",
                r#"["add_to_order", "remove_from_order", "update_order", "confirm_order", "list_order"]"#,
            )
    }

    /// Sets (or replaces) one key; `value` is a TOML literal (`"\"1h\""`, `"[200]"`).
    pub fn set(mut self, key: &str, value: &str) -> Route {
        self.fields.retain(|(k, _)| k != key);
        self.fields.push((key.into(), value.into()));
        self
    }

    pub fn scope(self, scope: &str) -> Route {
        self.set("scope", &format!("{scope:?}"))
    }

    fn render(&self) -> String {
        let mut out = String::from("[[route]]\n");
        for (k, v) in &self.fields {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out
    }
}

/// A proxy.toml under construction. Sections hold raw TOML lines; listen
/// addresses, upstream, redis and spool are filled in by [`Proxy::start`].
#[derive(Clone, Default)]
pub struct ProxyConfig {
    sections: BTreeMap<&'static str, Vec<String>>,
    routes: Vec<Route>,
}

impl ProxyConfig {
    pub fn new() -> ProxyConfig {
        ProxyConfig::default()
    }

    /// A config with the search route only.
    pub fn search() -> ProxyConfig {
        ProxyConfig::new().route(Route::search())
    }

    pub fn route(mut self, route: Route) -> ProxyConfig {
        self.routes.push(route);
        self
    }

    fn line(mut self, section: &'static str, line: &str) -> ProxyConfig {
        self.sections.entry(section).or_default().push(line.into());
        self
    }

    /// A top-level key, e.g. `trust_forwarded = true`.
    pub fn top(self, line: &str) -> ProxyConfig {
        self.line("", line)
    }

    pub fn upstream(self, line: &str) -> ProxyConfig {
        self.line("upstream", line)
    }

    pub fn redis(self, line: &str) -> ProxyConfig {
        self.line("redis", line)
    }

    pub fn cache(self, line: &str) -> ProxyConfig {
        self.line("cache", line)
    }

    pub fn identity(self, line: &str) -> ProxyConfig {
        self.line("identity", line)
    }

    /// `[cache] l1_max_bytes = "0"`: every hit must come from Redis.
    pub fn without_l1(self) -> ProxyConfig {
        self.cache(r#"l1_max_bytes = "0""#)
    }

    fn render(
        &self,
        listen: SocketAddr,
        admin: SocketAddr,
        upstream: &str,
        redis: &str,
        spool: &std::path::Path,
    ) -> String {
        let section = |name: &str| {
            self.sections
                .get(name)
                .cloned()
                .unwrap_or_default()
                .join("\n")
        };
        let mut out = format!("listen = \"{listen}\"\nadmin_listen = \"{admin}\"\n");
        out.push_str(&section(""));
        out.push_str(&format!("\n\n[upstream]\nurl = {upstream:?}\n"));
        out.push_str(&section("upstream"));
        out.push_str(&format!("\n\n[redis]\nurl = {redis:?}\n"));
        out.push_str(&section("redis"));
        out.push_str("\n\n[cache]\n");
        out.push_str(&section("cache"));
        out.push_str("\n\n[identity]\n");
        out.push_str(&section("identity"));
        out.push_str(&format!(
            "\n\n[events]\nspool_dir = {:?}\n\n",
            spool.display().to_string()
        ));
        for route in &self.routes {
            out.push_str(&route.render());
            out.push('\n');
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------

/// The real `leafcache serve`, killed on drop. When the test panics, the proxy's
/// log and config are printed so the failure can be read without a rerun.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Proxy {
    pub async fn start(config: &ProxyConfig, backend: &Backend, redis: &Redis) -> Proxy {
        Proxy::start_with(config, &backend.url(), &redis.url()).await
    }

    /// Starts the proxy against any upstream URL (e.g. a closed port).
    pub async fn start_with(config: &ProxyConfig, upstream: &str, redis: &str) -> Proxy {
        // A port found free can still be taken before the proxy binds it (by
        // another program): then start again on new ports, a few times.
        for _ in 0..3 {
            let mut proxy = Proxy::spawn(config, upstream, redis);
            match proxy.wait_healthy().await {
                Ok(()) => return proxy,
                Err(Some(_)) if proxy.log().to_ascii_lowercase().contains("in use") => continue,
                // Drop prints the config and the log.
                Err(Some(status)) => panic!("leafcache exited before it was healthy ({status})"),
                Err(None) => panic!("leafcache not healthy after {WAIT:?}"),
            }
        }
        panic!("leafcache could not bind its ports in three attempts");
    }

    fn spawn(config: &ProxyConfig, upstream: &str, redis: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("create the proxy's temp dir");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config_path = dir.path().join("proxy.toml");
        let toml = config.render(addr, admin, upstream, redis, &dir.path().join("spool"));
        std::fs::write(&config_path, toml).expect("write proxy.toml");
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("create proxy.log");
        let child = Command::new(env!("CARGO_BIN_EXE_leafcache"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            // The environment overrides the file (SPEC section 1): keep it out.
            .env_remove("REDIS_URL")
            .env_remove("LEAFCACHE_UPSTREAM")
            .env_remove("LEAFCACHE_LISTEN")
            .env_remove("LEAFCACHE_ADMIN_TOKEN")
            .env_remove("PORT")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start the leafcache binary");
        Proxy {
            addr,
            admin,
            child,
            dir,
        }
    }

    /// Ok once `/healthz` answers 200; Err(Some(status)) when the process
    /// exited first, Err(None) when [`WAIT`] passed.
    async fn wait_healthy(&mut self) -> Result<(), Option<std::process::ExitStatus>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Some(status));
            }
            let probe = Req::new(self.admin, "GET", "/healthz");
            if let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(1), probe.try_send()).await
                && resp.status == 200
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(None);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    fn diagnostics(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "----- proxy.toml -----\n{}\n----- proxy.log -----\n{}",
            read("proxy.toml"),
            read("proxy.log")
        )
    }

    pub fn get(&self, path: &str) -> Req {
        Req::new(self.addr, "GET", path)
    }

    pub fn post(&self, path: &str) -> Req {
        Req::new(self.addr, "POST", path)
    }

    pub fn request(&self, method: &str, path: &str) -> Req {
        Req::new(self.addr, method, path)
    }

    /// `POST /api/v1/search` with a JSON body, as user `user` (if any).
    pub fn search(&self, user: Option<&str>, body: Value) -> Req {
        let req = self.post("/api/v1/search").json(&body);
        match user {
            Some(user) => req.header("x-user-id", user),
            None => req,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

/// One HTTP/1.1 request on its own connection, headers sent in the given order.
#[derive(Clone)]
pub struct Req {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    pub fn new(addr: SocketAddr, method: &str, path: &str) -> Req {
        Req {
            addr,
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Appends a header (a second call with the same name adds a second line).
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn json(self, value: &Value) -> Req {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// A body sent byte for byte (use this to control JSON key order).
    pub fn body(mut self, body: impl Into<Bytes>) -> Req {
        self.body = body.into();
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str());
        if !self.has_header("host") {
            builder = builder.header("host", self.addr.to_string());
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(Full::new(self.body.clone()))
            .expect("test requests are valid")
    }

    async fn try_send_streaming(&self) -> Result<Response<Incoming>, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        sender
            .send_request(self.build())
            .await
            .map_err(|e| format!("send: {e}"))
    }

    async fn try_send(&self) -> Result<Resp, String> {
        let response = self.try_send_streaming().await?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("read body: {e}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Sends and reads the whole answer, bounded by [`WAIT`].
    pub async fn send(&self) -> Resp {
        match tokio::time::timeout(WAIT, self.try_send()).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => panic!("{} {} failed: {e}", self.method, self.path),
            Err(_) => panic!(
                "{} {} got no answer within {WAIT:?}",
                self.method, self.path
            ),
        }
    }

    /// Sends and returns once the head arrives; the body is read by the caller.
    pub async fn send_streaming(&self) -> Response<Incoming> {
        match tokio::time::timeout(WAIT, self.try_send_streaming()).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => panic!("{} {} failed: {e}", self.method, self.path),
            Err(_) => panic!("{} {} got no head within {WAIT:?}", self.method, self.path),
        }
    }

    /// Writes the whole request on a raw connection and returns it unread, so the
    /// test can hang up (drop it) while the proxy is still working on it.
    pub async fn send_and_keep_socket(&self) -> TcpStream {
        let mut raw = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self.has_header("host") {
            raw.push_str(&format!("host: {}\r\n", self.addr));
        }
        for (name, value) in &self.headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str(&format!("content-length: {}\r\n\r\n", self.body.len()));
        let mut stream = TcpStream::connect(self.addr)
            .await
            .expect("connect to proxy");
        stream.write_all(raw.as_bytes()).await.expect("write head");
        stream.write_all(&self.body).await.expect("write body");
        stream.flush().await.expect("flush request");
        stream
    }
}

/// A whole answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn x_cache(&self) -> Option<&str> {
        self.header("x-cache")
    }

    pub fn cache_status(&self) -> CacheStatus {
        CacheStatus::parse(
            self.header("cache-status")
                .unwrap_or_else(|| panic!("no Cache-Status header on {self:?}")),
        )
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.body))
    }

    /// The `n` of the echo backend: which backend request produced this answer.
    pub fn backend_n(&self) -> u64 {
        self.json()["n"].as_u64().expect("echo answer has n")
    }

    /// The cache key hash from Cache-Status (64 lowercase hex chars).
    pub fn key(&self) -> String {
        self.cache_status().key()
    }
}

/// A parsed `Cache-Status` member (RFC 9211): `leafcache; hit; ttl=12; key="…"`.
#[derive(Debug, Clone)]
pub struct CacheStatus {
    pub raw: String,
    pub cache: String,
    pub params: Vec<(String, Option<String>)>,
}

impl CacheStatus {
    pub fn parse(raw: &str) -> CacheStatus {
        let mut parts = raw.split(';').map(str::trim);
        let cache = parts.next().unwrap_or_default().to_string();
        let params = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_string(),
                    Some(v.trim().trim_matches('"').to_string()),
                ),
                None => (p.to_string(), None),
            })
            .collect();
        CacheStatus {
            raw: raw.to_string(),
            cache,
            params,
        }
    }

    /// The header with the named params left out, as `a; b; c`: for comparing
    /// the fixed part of a status whose optional params may come anywhere.
    pub fn without(&self, names: &[&str]) -> String {
        self.raw
            .split(';')
            .map(str::trim)
            .filter(|part| {
                let name = part.split('=').next().unwrap_or_default();
                !names.contains(&name)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn has(&self, flag: &str) -> bool {
        self.params.iter().any(|(k, _)| k == flag)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn key(&self) -> String {
        let key = self
            .get("key")
            .unwrap_or_else(|| panic!("no key in Cache-Status {:?}", self.raw))
            .to_string();
        assert!(
            key.len() == 64 && key.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "key is 64 lowercase hex chars: {:?}",
            self.raw
        );
        key
    }

    pub fn ttl(&self) -> u64 {
        self.get("ttl")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no numeric ttl in Cache-Status {:?}", self.raw))
    }
}

// ---------------------------------------------------------------------------
// Assertions shared by the themes
// ---------------------------------------------------------------------------

/// A lookup that missed and whose answer was stored:
/// `leafcache; fwd=uri-miss; stored; key="<hash>"`, params in that order.
#[track_caller]
pub fn assert_miss_stored(resp: &Resp) {
    assert_eq!(resp.status, 200, "status of {resp:?}");
    assert_eq!(resp.x_cache(), Some("MISS"), "X-Cache of {resp:?}");
    let cs = resp.cache_status();
    let key = cs.key();
    assert_eq!(
        cs.raw,
        format!("leafcache; fwd=uri-miss; stored; key=\"{key}\"")
    );
}

/// A lookup that missed and whose answer was not stored:
/// `leafcache; fwd=uri-miss; key="<hash>"`, plus `detail=hit-for-pass` when
/// the key was in hit-for-pass (where that param goes is left open).
#[track_caller]
pub fn assert_miss_not_stored(resp: &Resp) {
    assert_eq!(resp.x_cache(), Some("MISS"), "X-Cache of {resp:?}");
    let cs = resp.cache_status();
    let key = cs.key();
    assert_eq!(
        cs.without(&["detail"]),
        format!("leafcache; fwd=uri-miss; key=\"{key}\""),
        "in {:?}",
        cs.raw
    );
    assert!(
        matches!(cs.get("detail"), None | Some("hit-for-pass")),
        "{:?}",
        cs.raw
    );
}

/// A hit: `leafcache; hit; ttl=<seconds>; key="<hash>"` and an Age header.
#[track_caller]
pub fn assert_hit(resp: &Resp) {
    assert_eq!(resp.x_cache(), Some("HIT"), "X-Cache of {resp:?}");
    let cs = resp.cache_status();
    let key = cs.key();
    let ttl = cs.ttl();
    assert_eq!(cs.raw, format!("leafcache; hit; ttl={ttl}; key=\"{key}\""));
    let age = resp
        .header("age")
        .unwrap_or_else(|| panic!("no Age on a hit: {resp:?}"));
    age.parse::<u64>()
        .unwrap_or_else(|_| panic!("Age is a number of seconds: {age:?}"));
}

/// A bypass: `leafcache; fwd=bypass; detail=<reason>`.
#[track_caller]
pub fn assert_bypass(resp: &Resp, detail: &str) {
    assert_eq!(resp.x_cache(), Some("BYPASS"), "X-Cache of {resp:?}");
    assert_eq!(
        resp.cache_status().raw,
        format!("leafcache; fwd=bypass; detail={detail}")
    );
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
