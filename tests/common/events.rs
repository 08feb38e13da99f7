//! What the search-log tests need beyond the rest of the harness: a proxy
//! whose `[events]` table and key prefix the test sets, that can be stopped
//! with SIGTERM and can share a spool directory with the next one; a Redis
//! that keeps its data across a kill (append-only file); SIGSTOP/SIGCONT of a
//! Redis; readers of the log's keys; and the spool's on-disk framing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{POLL_EVERY, Redis, Reply, Req, Resp, WAIT, eventually, free_port, info_field};

/// The search route of docs/contract.md section 2 (JSON pointers left at their defaults:
/// `/intent`, `/confidence`, `/products`, `/product_id`, `/supplier`) and the
/// unlogged `orders` route with scope `off`.
const ROUTES: &str = r#"
[[route]]
name = "search"
methods = ["GET", "POST"]
path = "/api/v1/search"
query = ["json:/query", "query:q"]
scope = "user"
key_ignore = ["json:/session_id", "json:/request_id"]
vary_headers = ["accept-encoding"]
bypass_query = ['(?i)\b(add|remove|cart|checkout|order)\b']
bypass_intents = ["add_to_order", "remove_from_order", "update_order", "confirm_order", "list_order"]

[[route]]
name = "orders"
methods = ["GET", "POST"]
path_prefix = "/api/v1/order"
scope = "off"
"#;

/// A proxy.toml for the search log: the routes above, a key prefix, raw
/// `[events]` lines, and optionally a spool directory the test owns.
#[derive(Clone, Default)]
pub struct LogConfig {
    key_prefix: String,
    events: Vec<String>,
    spool_dir: Option<PathBuf>,
}

impl LogConfig {
    pub fn new() -> LogConfig {
        LogConfig::default()
    }

    pub fn key_prefix(mut self, prefix: &str) -> LogConfig {
        self.key_prefix = prefix.into();
        self
    }

    /// One `[events]` line, e.g. `history_limit = 3`.
    pub fn events(mut self, line: &str) -> LogConfig {
        self.events.push(line.into());
        self
    }

    /// A spool directory that outlives the proxy (the next one replays it).
    pub fn spool_dir(mut self, dir: &Path) -> LogConfig {
        self.spool_dir = Some(dir.to_path_buf());
        self
    }

    fn render(
        &self,
        listen: SocketAddr,
        admin: SocketAddr,
        upstream: &str,
        redis: &str,
        spool: &Path,
    ) -> String {
        format!(
            "listen = \"{listen}\"\nadmin_listen = \"{admin}\"\n\n\
             [upstream]\nurl = {upstream:?}\n\n\
             [redis]\nurl = {redis:?}\nkey_prefix = {prefix:?}\n\n\
             [events]\nspool_dir = {spool:?}\n{flush}{events}\n{ROUTES}",
            prefix = self.key_prefix,
            spool = spool.display().to_string(),
            // Counters every 100 ms unless the test says otherwise.
            flush = if self.events.iter().any(|l| l.starts_with("counter_flush")) {
                ""
            } else {
                "counter_flush = \"100ms\"\n"
            },
            events = self.events.join("\n"),
        )
    }
}

/// The real `leafcache serve`, which the test may stop with SIGTERM and whose
/// exit it may wait for; killed on drop, its log printed when the test panics.
pub struct LogProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    spool: PathBuf,
    dir: tempfile::TempDir,
}

impl LogProxy {
    pub async fn start(config: &LogConfig, upstream: &str, redis: &str) -> LogProxy {
        // A port found free can still be taken before the proxy binds it.
        for _ in 0..3 {
            let mut proxy = LogProxy::spawn(config, upstream, redis);
            match proxy.wait_healthy().await {
                Ok(()) => return proxy,
                Err(Some(_)) if proxy.log().to_ascii_lowercase().contains("in use") => continue,
                Err(Some(status)) => panic!("leafcache exited before it was healthy ({status})"),
                Err(None) => panic!("leafcache not healthy after {WAIT:?}"),
            }
        }
        panic!("leafcache could not bind its ports in three attempts");
    }

    fn spawn(config: &LogConfig, upstream: &str, redis: &str) -> LogProxy {
        let dir = tempfile::tempdir().expect("create the proxy's temp dir");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let spool = config
            .spool_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("spool"));
        let config_path = dir.path().join("proxy.toml");
        let toml = config.render(addr, admin, upstream, redis, &spool);
        std::fs::write(&config_path, toml).expect("write proxy.toml");
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("create proxy.log");
        let child = Command::new(super::leafcache_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
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
        LogProxy {
            addr,
            admin,
            child,
            spool,
            dir,
        }
    }

    async fn wait_healthy(&mut self) -> Result<(), Option<ExitStatus>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Some(status));
            }
            if self.is_healthy().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(None);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// `/healthz` answers 200 within a second.
    pub async fn is_healthy(&self) -> bool {
        let probe = Req::new(self.admin, "GET", "/healthz");
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe.try_send()).await,
            Ok(Ok(resp)) if resp.status == 200
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (the orderly stop of docs/contract.md section 5).
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits, at most `limit`, for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the proxy process") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("leafcache still running {limit:?} after SIGTERM");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    pub fn get(&self, path: &str) -> Req {
        Req::new(self.addr, "GET", path)
    }

    pub fn post(&self, path: &str) -> Req {
        Req::new(self.addr, "POST", path)
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

impl Drop for LogProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let config =
                std::fs::read_to_string(self.dir.path().join("proxy.toml")).unwrap_or_default();
            eprintln!(
                "----- proxy.toml -----\n{config}\n----- proxy.log -----\n{}",
                self.log()
            );
        }
    }
}

/// The value of the counter or gauge `leafcache_<name>` on `/metrics`.
pub async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let resp = Req::new(admin, "GET", "/metrics").send().await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    let wanted = format!("leafcache_{name}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let series = series.strip_prefix(&wanted)?;
            matches!(series, "" | "_total")
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no {wanted} in /metrics:\n{text}")) as u64
}

/// Sends `kill -<sig> <pid>`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed: {status}");
}

/// The pid of the Redis at `url`, as it reports it.
pub async fn redis_pid(url: &str) -> u32 {
    info_field(url, "server", "process_id")
        .await
        .and_then(|pid| pid.parse().ok())
        .expect("INFO server names the process id")
}

/// A Redis stopped by SIGSTOP; continued by [`Paused::resume`] or on drop.
pub struct Paused {
    pid: Option<u32>,
}

impl Paused {
    pub async fn pause(redis: &Redis) -> Paused {
        let pid = redis_pid(&redis.url()).await;
        signal(pid, "STOP");
        Paused { pid: Some(pid) }
    }

    pub fn resume(mut self) {
        if let Some(pid) = self.pid.take() {
            signal(pid, "CONT");
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// A private `redis-server` that fsyncs every write to an append-only file,
/// so that a kill loses nothing it acknowledged and a restart on the same
/// port and directory comes back with the data.
pub struct DurableRedis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl DurableRedis {
    pub async fn start() -> DurableRedis {
        let mut redis = DurableRedis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("create a temp dir for redis"),
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = super::redis_server(self.dir.path())
            .args(["--port", &self.port.to_string()])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .spawn()
            .expect("redis-server is installed and starts");
        let pid = child.id();
        self.child = Some(child);
        let url = self.url();
        eventually("the durable redis-server to answer as itself", || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut con = client.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("INFO")
                    .arg("persistence")
                    .query_async(&mut con)
                    .await
                    .ok()?;
                let pong: String = redis::cmd("PING").query_async(&mut con).await.ok()?;
                (pong == "PONG" && info.contains("loading:0") && redis_pid_is(&mut con, pid).await)
                    .then_some(())
            }
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as an outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with what the append-only file kept.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn redis_pid_is(con: &mut redis::aio::MultiplexedConnection, pid: u32) -> bool {
    let info: Result<String, _> = redis::cmd("INFO").arg("server").query_async(con).await;
    info.is_ok_and(|i| i.lines().any(|l| l.trim() == format!("process_id:{pid}")))
}

/// A plain client connection to the test Redis at `url`.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("valid redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis")
}

/// Reads the search log's keys from any test Redis.
pub struct LogStore {
    con: redis::aio::MultiplexedConnection,
}

impl LogStore {
    pub async fn new(url: &str) -> LogStore {
        LogStore {
            con: connect(url).await,
        }
    }

    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.con)
            .await
            .unwrap_or_else(|e| panic!("redis command failed: {e}"))
    }

    /// Every key in the Redis (SCAN over the whole keyspace).
    pub async fn all_keys(&mut self) -> BTreeSet<String> {
        self.scan("*").await
    }

    pub async fn scan(&mut self, pattern: &str) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await;
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// The ids of every `<prefix>search:<id>` record (feedback lists left out).
    pub async fn search_ids(&mut self, prefix: &str) -> BTreeSet<String> {
        let head = format!("{prefix}search:");
        self.scan(&format!("{head}*"))
            .await
            .into_iter()
            .filter_map(|k| Some(k.strip_prefix(&head)?.to_owned()))
            .filter(|id| !id.contains(':'))
            .collect()
    }

    /// A hash's fields; a search record's fields (see
    /// [`super::record_fields`]).
    pub async fn hash(&mut self, key: &str) -> BTreeMap<String, String> {
        let kind: String = self.query(redis::cmd("TYPE").arg(key)).await;
        if kind == "string" {
            let stored: Vec<u8> = self.query(redis::cmd("GET").arg(key)).await;
            let feedback: Vec<Vec<u8>> = self
                .query(
                    redis::cmd("LRANGE")
                        .arg(format!("{key}:feedback"))
                        .arg(0)
                        .arg(-1),
                )
                .await;
            return super::record_fields(key, &stored, &feedback);
        }
        self.query(redis::cmd("HGETALL").arg(key)).await
    }

    /// A zset as member → score.
    pub async fn zset(&mut self, key: &str) -> BTreeMap<String, f64> {
        let pairs: Vec<(String, f64)> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await;
        pairs.into_iter().collect()
    }

    pub async fn list(&mut self, key: &str) -> Vec<String> {
        self.query(redis::cmd("LRANGE").arg(key).arg(0).arg(-1))
            .await
    }

    /// TTL in seconds (-2: no key, -1: no expiry).
    pub async fn ttl(&mut self, key: &str) -> i64 {
        self.query(redis::cmd("TTL").arg(key)).await
    }

    pub async fn set(&mut self, key: &str, value: &str) {
        let _: () = self.query(redis::cmd("SET").arg(key).arg(value)).await;
    }

    /// `CLIENT PAUSE <ms> WRITE`: Redis answers reads but holds every write
    /// (a transaction included) until the time is up.
    pub async fn client_pause_writes(&mut self, ms: u64) {
        let _: () = self
            .query(redis::cmd("CLIENT").arg("PAUSE").arg(ms).arg("WRITE"))
            .await;
    }

    pub async fn get(&mut self, key: &str) -> Option<String> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    pub async fn hset(&mut self, key: &str, field: &str, value: &str) {
        let _: i64 = self
            .query(redis::cmd("HSET").arg(key).arg(field).arg(value))
            .await;
    }

    /// The sum of a counter hash (e.g. `cache:stats:<date>`), 0 when absent.
    pub async fn hash_total(&mut self, key: &str) -> i64 {
        self.hash(key)
            .await
            .values()
            .map(|v| v.parse::<i64>().expect("a counter is an integer"))
            .sum()
    }

    /// Polls until every id has its `search:<id>` record, at most `limit`.
    pub async fn wait_for_records(
        &mut self,
        prefix: &str,
        ids: &BTreeSet<String>,
        limit: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let present = self.search_ids(prefix).await;
            let missing: Vec<&String> = ids.difference(&present).collect();
            if missing.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "after {limit:?}, {} of {} search records missing, e.g. {:?}",
                    missing.len(),
                    ids.len(),
                    &missing[..missing.len().min(5)]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `X-Search-Id` of an answer, if it has one.
pub fn search_id(resp: &Resp) -> Option<String> {
    resp.header("x-search-id").map(str::to_owned)
}

/// The `X-Search-Id` of an answer, which must be a UUID v7.
#[track_caller]
pub fn logged_id(resp: &Resp) -> String {
    let id = search_id(resp).unwrap_or_else(|| panic!("no X-Search-Id on {resp:?}"));
    let uuid = uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("{id:?} is no UUID: {e}"));
    assert_eq!(uuid.get_version_num(), 7, "search ids are UUID v7: {id}");
    id
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

/// Parses an RFC 3339 UTC timestamp with exactly three fraction digits
/// (`2026-11-25T21:27:36.927Z`) into epoch milliseconds.
#[track_caller]
pub fn rfc3339_ms(ts: &str) -> u64 {
    let shape_ok = ts.len() == 24
        && ts.ends_with('Z')
        && ts.as_bytes()[10] == b'T'
        && ts.as_bytes()[19] == b'.'
        && ts[20..23].bytes().all(|b| b.is_ascii_digit());
    assert!(shape_ok, "not RFC 3339 UTC with milliseconds: {ts:?}");
    humantime::parse_rfc3339(ts)
        .unwrap_or_else(|e| panic!("{ts:?} does not parse: {e}"))
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// The UTC date (`YYYY-MM-DD`) and hour (`HH`) of an RFC 3339 timestamp.
pub fn date_and_hour(ts: &str) -> (String, String) {
    (ts[..10].to_string(), ts[11..13].to_string())
}

/// A backend search answer: `{"query", "intent", "confidence", "products"}`.
pub fn search_answer(
    query: &str,
    intent: &str,
    confidence: f64,
    products: &[(&str, &str)],
) -> Reply {
    let products: Vec<Value> = products
        .iter()
        .map(|(p, s)| json!({"product_id": p, "supplier": s, "name": format!("product {p}")}))
        .collect();
    Reply::json(json!({
        "query": query,
        "intent": intent,
        "confidence": confidence,
        "products": products,
    }))
}

/// The search text a backend request carries (`query` in the JSON body or `q`).
pub fn query_of(req: &super::Recorded) -> Option<String> {
    if let Ok(doc) = serde_json::from_slice::<Value>(&req.body)
        && let Some(q) = doc["query"].as_str()
    {
        return Some(q.to_owned());
    }
    let (_, qs) = req.path_and_query.split_once('?')?;
    form_urlencoded_q(qs)
}

fn form_urlencoded_q(qs: &str) -> Option<String> {
    qs.split('&')
        .find_map(|kv| kv.strip_prefix("q="))
        .map(|v| v.replace('+', " "))
}

/// The `(key, value)` pairs of a JSON object in the order written, duplicates
/// kept (a map would silently merge them).
pub fn json_object_pairs(raw: &str) -> Vec<(String, String)> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(pair) = map.next_entry::<String, String>()? {
                out.push(pair);
            }
            Ok(out)
        }
    }
    serde_json::Deserializer::from_str(raw)
        .deserialize_map(Pairs)
        .unwrap_or_else(|e| panic!("{raw:?} is not a JSON object of strings: {e}"))
}

/// One framed record of a spool segment (see `src/events/spool/mod.rs`:
/// magic `FF 4C 43 53`, length u32 BE, CRC32 u32 BE, payload).
pub struct SpoolFrame {
    pub start: usize,
    pub end: usize,
    pub payload: Vec<u8>,
}

/// The records of an intact segment, in order.
pub fn spool_frames(bytes: &[u8]) -> Vec<SpoolFrame> {
    const MAGIC: [u8; 4] = [0xFF, b'L', b'C', b'S'];
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        assert!(
            bytes.len() >= at + 12 && bytes[at..at + 4] == MAGIC,
            "no spool record at offset {at}"
        );
        let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let end = at + 12 + len;
        assert!(end <= bytes.len(), "spool record at {at} runs past the end");
        out.push(SpoolFrame {
            start: at,
            end,
            payload: bytes[at + 12..end].to_vec(),
        });
        at = end;
    }
    out
}

/// The spool segments (`*.spool`) in `dir`, oldest first.
pub fn spool_segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "spool"))
                .collect()
        })
        .unwrap_or_default();
    segments.sort();
    segments
}
