//! What the operations tests need beyond the proxy: the admin API, the batch
//! commands as real processes, and search records written straight into
//! Redis in the writer's own layout (for days other than today, and volume).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use leafcache::answer::SearchMeta;
use leafcache::events::write::record_json;
use leafcache::events::{CacheResult, SearchEvent, new_search_id};
use leafcache::redis::keys;
use serde_json::Value;

use super::{Proxy, Redis, Req, WAIT, eventually};

/// A request to the proxy's admin listener.
pub fn admin(proxy: &Proxy, method: &str, path: &str) -> Req {
    Req::new(proxy.admin, method, path)
}

/// What a batch command did.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl CliRun {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A `leafcache` command line, run with `--config` and a clean environment
/// (plus `env`), bounded by [`WAIT`].
pub fn leafcache(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(super::leafcache_bin());
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("REDIS_URL")
        .env_remove("LEAFCACHE_ADMIN_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

pub async fn run(mut cmd: tokio::process::Command) -> CliRun {
    run_within(WAIT, &mut cmd).await
}

pub async fn run_within(limit: Duration, cmd: &mut tokio::process::Command) -> CliRun {
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("leafcache command did not finish within {limit:?}"))
        .expect("run the leafcache binary");
    CliRun {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A search as the writer would log it, at `timestamp_ms`.
pub fn search_event(
    timestamp_ms: u64,
    user: Option<&str>,
    query: &str,
    intent: Option<&str>,
) -> SearchEvent {
    SearchEvent {
        search_id: new_search_id(),
        timestamp_ms,
        user_id: user.map(str::to_owned),
        user_uuid: None,
        session_id: None,
        query: query.to_owned(),
        query_normalized: leafcache::key::normalize_query(query),
        meta: Arc::new(SearchMeta {
            intent: intent.map(str::to_owned),
            confidence: Some(0.75),
            results_count: 2,
            products: vec![
                ("p1".into(), Some("s1".into())),
                ("p2".into(), Some("s2".into())),
            ],
            ..SearchMeta::default()
        }),
        response_time_ms: 12.5,
        cache: CacheResult::Miss,
        status: 200,
        route: "search".into(),
    }
}

/// Writes `search:<id>` and the `searches:daily:<date>` entry of each event,
/// exactly as the writer lays them out, pipelined.
pub async fn seed(redis: &Redis, events: &[SearchEvent]) {
    let mut con = redis.conn().await;
    for chunk in events.chunks(2000) {
        let mut pipe = redis::pipe();
        for ev in chunk {
            let id = ev.search_id.to_string();
            let key = keys::search(&keys::Prefix::default(), &id);
            pipe.cmd("SET").arg(&key).arg(record_json(ev)).ignore();
            let date = &ev.timestamp()[..10];
            pipe.cmd("ZADD")
                .arg(keys::searches_daily(&keys::Prefix::default(), date))
                .arg(ev.timestamp_ms)
                .arg(&id)
                .ignore();
        }
        let () = pipe
            .query_async(&mut con)
            .await
            .expect("seed search records");
    }
}

/// The search id the proxy gave an answer (`X-Search-Id`), once its record
/// is in Redis.
pub async fn logged_search(redis: &Redis, resp: &super::Resp) -> String {
    let id = resp
        .header("x-search-id")
        .unwrap_or_else(|| panic!("no X-Search-Id on {resp:?}"))
        .to_owned();
    redis
        .wait_for_key(&keys::search(&keys::Prefix::default(), &id))
        .await;
    id
}

/// An echo backend behind the search route, and one search by user `u1`
/// for "milk", logged: the servers (keep the backend alive) and its id.
pub async fn one_logged_search() -> (Redis, super::Backend, Proxy, String) {
    let redis = Redis::start().await;
    let backend = super::Backend::echo().await;
    let proxy = Proxy::start(&super::ProxyConfig::search(), &backend, &redis).await;
    let resp = proxy
        .search(Some("u1"), serde_json::json!({"query": "milk"}))
        .send()
        .await;
    let id = logged_search(&redis, &resp).await;
    (redis, backend, proxy, id)
}

/// A hash's field; a search record's field (see [`super::record_fields`]).
pub async fn hget(redis: &Redis, key: &str, field: &str) -> Option<String> {
    let mut con = redis.conn().await;
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(&mut con)
        .await
        .expect("TYPE");
    if kind == "string" {
        let (stored, feedback): (Vec<u8>, Vec<Vec<u8>>) = redis::pipe()
            .cmd("GET")
            .arg(key)
            .cmd("LRANGE")
            .arg(format!("{key}:feedback"))
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await
            .expect("GET");
        return super::record_fields(key, &stored, &feedback).remove(field);
    }
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(&mut con)
        .await
        .expect("HGET")
}

pub async fn zscore(redis: &Redis, key: &str, member: &str) -> Option<f64> {
    let mut con = redis.conn().await;
    redis::cmd("ZSCORE")
        .arg(key)
        .arg(member)
        .query_async(&mut con)
        .await
        .expect("ZSCORE")
}

pub async fn lrange(redis: &Redis, key: &str) -> Vec<String> {
    let mut con = redis.conn().await;
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .expect("LRANGE")
}

/// Polls the stats report until `ready` accepts it (counters are written
/// about once a second).
pub async fn stats_when(proxy: &Proxy, query: &str, ready: impl Fn(&Value) -> bool) -> Value {
    eventually("the stats report", || async {
        let resp = admin(proxy, "GET", &format!("/v1/stats{query}"))
            .send()
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        let report = resp.json();
        ready(&report).then_some(report)
    })
    .await
}

/// JSON lines, parsed.
pub fn lines(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line ({e}): {l}")))
        .collect()
}

pub const DAY_MS: u64 = 86_400_000;

/// Records on three days, written in the writer's layout: two on the first
/// day (one of another intent), one on the second, one on the third.
pub async fn three_days(redis: &Redis) -> (String, String, Vec<SearchEvent>) {
    let day1 = 1_764_028_800_000; // 2025-11-25T00:00:00Z
    let events = vec![
        search_event(day1 + 3_600_000, Some("u1"), "milk", Some("product_search")),
        search_event(
            day1 + 7_200_000,
            Some("u2"),
            "add milk",
            Some("add_to_order"),
        ),
        search_event(day1 + 60_000, None, "bread", Some("product_search")),
        search_event(
            day1 + DAY_MS + 5,
            Some("u1"),
            "eggs",
            Some("product_search"),
        ),
        search_event(
            day1 + 2 * DAY_MS + 5,
            Some("u1"),
            "jam",
            Some("product_search"),
        ),
    ];
    seed(redis, &events).await;
    ("2025-11-25".into(), "2025-11-26".into(), events)
}

/// A proxy.toml for the batch commands alone: the test's Redis, a spool dir.
pub fn cli_config(dir: &Path, redis: &Redis) -> std::path::PathBuf {
    let path = dir.join("proxy.toml");
    let text = format!(
        "[redis]\nurl = {:?}\n\n[events]\nspool_dir = {:?}\n",
        redis.url(),
        dir.join("spool").display().to_string()
    );
    std::fs::write(&path, text).expect("write proxy.toml");
    path
}

/// The peak resident set (VmHWM) of a running process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
