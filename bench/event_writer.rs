//! The search log's cost to Redis, all in one run against a local
//! redis-server:
//!
//! - leafcache's writer: events/s, Redis commands, Redis CPU (from
//!   `/proc/<pid>/stat`) and Redis memory per event, the bytes of a record
//!   and its daily-index entry (`MEMORY USAGE`), and `SLOWLOG` (commands
//!   over 1 and 3 ms: docs/contract.md section 5 bounds a transaction to about 1 ms);
//! - a baseline: the same events written one at a time, one transaction
//!   each (what a per-request logger does);
//! - the record encodings side by side (issue 18): the hash of 17 fields
//!   under their docs/contract.md names that leafcache wrote before, a listpack-sized
//!   hash, and the string of compact JSON it writes now, each with its
//!   daily-index entry: Redis CPU, commands and bytes per record.
//!
//! Run: `cargo bench --bench event_writer` (needs redis-server on PATH).
//! Environment: EVENTS (default 200000).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bb8_redis::redis;
use leafcache::answer::SearchMeta;
use leafcache::config::RedisConfig;
use leafcache::events::spool::Spool;
use leafcache::events::write::{self, Layout};
use leafcache::events::writer::{self, WriterConfig};
use leafcache::events::{CacheResult, SearchEvent, new_search_id};
use leafcache::redis::RedisPool;
use leafcache::redis::pool::Command as RedisCommand;
use leafcache::time::now_ms;

struct Redis(Child, u16);
impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The writer's queue, as `events.queue_capacity` defaults.
const QUEUE: usize = 100_000;

fn start_redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        // REDIS_ARGS: more redis-server options, e.g. to try a setting.
        .args(
            std::env::var("REDIS_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let r = Redis(child, port);
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return r;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("redis-server did not start");
}

/// 200 queries x 50 users, answers as the demo backend gives them.
fn events(n: usize) -> Vec<SearchEvent> {
    let metas: Vec<(String, Arc<SearchMeta>)> = (0..200)
        .map(|i| {
            let q = format!("query number {i}");
            let doc = leafcache::demo::search(&q);
            let products = doc["products"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            (
                                p["product_id"].as_str().unwrap_or("").to_string(),
                                p["supplier"].as_str().map(str::to_string),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let meta = SearchMeta {
                intent: Some("product_search".into()),
                confidence: Some(0.9),
                results_count: 10,
                products,
                ..SearchMeta::default()
            };
            (q, Arc::new(meta))
        })
        .collect();
    let route: Arc<str> = Arc::from("search");
    (0..n)
        .map(|i| {
            let (q, meta) = &metas[(i * 7) % metas.len()];
            SearchEvent {
                search_id: new_search_id(),
                timestamp_ms: now_ms(),
                user_id: Some(format!("user-{}", i % 50)),
                user_uuid: None,
                session_id: Some(format!("s-{}", i % 50)),
                query: q.clone(),
                query_normalized: q.clone(),
                meta: meta.clone(),
                response_time_ms: 0.4,
                cache: if i % 5 == 0 {
                    CacheResult::Miss
                } else {
                    CacheResult::Hit
                },
                status: 200,
                route: route.clone(),
            }
        })
        .collect()
}

/// redis-server's `INFO <section>`.
fn info(port: u16, section: &str) -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
    let mut c = client.get_connection().expect("connect");
    redis::cmd("INFO").arg(section).query(&mut c).expect("info")
}

/// redis-server's `used_memory`, in bytes.
fn used_memory(port: u16) -> u64 {
    info(port, "memory")
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .unwrap_or(0)
}

fn total_commands(port: u16) -> u64 {
    info(port, "commandstats")
        .lines()
        .filter(|l| {
            l.starts_with("cmdstat_")
                && !l.starts_with("cmdstat_info")
                && !l.starts_with("cmdstat_ping")
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn print_commandstats(port: u16) {
    for l in info(port, "commandstats")
        .lines()
        .filter(|l| l.starts_with("cmdstat_"))
    {
        eprintln!("  {l}");
    }
}

fn reset_stats(port: u16) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
    let mut c = client.get_connection().expect("connect");
    let _: () = redis::cmd("FLUSHALL").query(&mut c).expect("flush");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut c)
        .expect("resetstat");
}

fn layout() -> Layout {
    Layout {
        prefix: leafcache::redis::keys::Prefix::default(),
        retention_secs: 90 * 86400,
        record_retention_secs: 14 * 86400,
        history_limit: 1000,
    }
}

/// CPU time redis-server has used (user + system), in microseconds, from
/// `/proc/<pid>/stat` (clock ticks of 10 ms: measure over seconds).
fn redis_cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks * 1e6 / 100.0
}

fn conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("client")
        .get_connection()
        .expect("connect")
}

/// Slow log: every command over 1 ms from now on.
fn slowlog_start(port: u16) {
    let mut c = conn(port);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(1000)
        .query(&mut c)
        .expect("config");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-max-len")
        .arg(100_000)
        .query(&mut c)
        .expect("config");
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query(&mut c)
        .expect("reset");
}

/// (commands over 1 ms, over 3 ms, the longest in µs) since [`slowlog_start`].
fn slowlog(port: u16) -> (usize, usize, u64) {
    let mut c = conn(port);
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut c)
        .expect("slowlog");
    let micros: Vec<u64> = entries
        .iter()
        .filter_map(|e| match e {
            redis::Value::Array(items) => match items.get(2) {
                Some(redis::Value::Int(us)) => Some(*us as u64),
                _ => None,
            },
            _ => None,
        })
        .collect();
    (
        micros.len(),
        micros.iter().filter(|&&us| us > 3000).count(),
        micros.iter().copied().max().unwrap_or(0),
    )
}

/// `MEMORY USAGE` of a sample of records, and of the day's index per
/// member: the bytes one search's record costs Redis.
fn record_bytes(port: u16, evs: &[SearchEvent]) -> (f64, f64) {
    let mut c = conn(port);
    let sample: Vec<&SearchEvent> = evs.iter().step_by((evs.len() / 1000).max(1)).collect();
    let mut total = 0u64;
    for ev in &sample {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(format!("search:{}", ev.search_id))
            .arg("SAMPLES")
            .arg(0)
            .query(&mut c)
            .expect("memory usage");
        total += used.unwrap_or(0);
    }
    let day = format!("searches:daily:{}", &evs[0].timestamp()[..10]);
    let index: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&day)
        .arg("SAMPLES")
        .arg(0)
        .query(&mut c)
        .expect("memory usage");
    let members: u64 = redis::cmd("ZCARD").arg(&day).query(&mut c).expect("zcard");
    (
        total as f64 / sample.len() as f64,
        index.unwrap_or(0) as f64 / members.max(1) as f64,
    )
}

/// Every key's `MEMORY USAGE`, summed by family: family -> (keys, bytes,
/// list entries for the history lists).
fn key_families(port: u16) -> std::collections::BTreeMap<&'static str, (u64, u64, u64)> {
    let mut c = conn(port);
    let mut families = std::collections::BTreeMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)
            .expect("scan");
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
            pipe.cmd("TYPE").arg(k);
        }
        let answers: Vec<redis::Value> = pipe.query(&mut c).expect("memory usage");
        let mut lists = redis::pipe();
        let mut listed = Vec::new();
        for (k, pair) in keys.iter().zip(answers.chunks(2)) {
            let bytes = match pair[0] {
                redis::Value::Int(b) => b as u64,
                _ => 0,
            };
            let family = family_of(k);
            let e = families.entry(family).or_insert((0, 0, 0));
            e.0 += 1;
            e.1 += bytes;
            if family == "user:<id>:searches (history)" {
                lists.cmd("LLEN").arg(k);
                listed.push(family);
            }
        }
        if !listed.is_empty() {
            let lens: Vec<u64> = lists.query(&mut c).expect("llen");
            for (family, len) in listed.into_iter().zip(lens) {
                if let Some(e) = families.get_mut(family) {
                    e.2 += len;
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            return families;
        }
    }
}

fn family_of(key: &str) -> &'static str {
    let parts: Vec<&str> = key.split(':').collect();
    match parts[..] {
        ["search", _] => "search:<id> (record)",
        ["search", _, "feedback"] => "search:<id>:feedback",
        ["searches", "daily", _] => "searches:daily:<date>",
        ["user", _, "searches"] => "user:<id>:searches (history)",
        ["user", _, "profile"] => "user:<id>:profile",
        _ => "counters (per day)",
    }
}

/// How a record is stored, for the comparison of encodings.
#[derive(Clone, Copy)]
enum Encoding {
    /// Before issue 18: a hash of 17 fields under their docs/contract.md names, then
    /// `EXPIRE`.
    OldHash,
    /// The compact record's values as a hash (fields named by position)
    /// whose values stay within 64 bytes (longer ones split over several
    /// fields), so that Redis keeps it as a listpack; then `EXPIRE`.
    ListpackHash,
    /// What leafcache writes: one string of compact JSON, `SET .. EX`.
    CompactString,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::OldHash => "hash, docs/contract.md field names (old)",
            Encoding::ListpackHash => "listpack-sized hash",
            Encoding::CompactString => "string of compact JSON (new)",
        }
    }

    /// The commands that store `ev`'s record.
    fn commands(self, ev: &SearchEvent, out: &mut leafcache::redis::wire::RespBuf) {
        use leafcache::redis::wire::Commands;
        let key = format!("search:{}", ev.search_id);
        let ttl = b"1209600";
        let stored = write::record_json(ev);
        let fields: Vec<(String, String)> = match self {
            Encoding::CompactString => {
                out.command(&[b"SET", key.as_bytes(), stored.as_bytes(), b"EX", ttl]);
                return;
            }
            Encoding::OldHash => {
                let record = leafcache::events::record::Record::from_compact(
                    &ev.search_id.to_string(),
                    stored.as_bytes(),
                )
                .expect("record");
                let mut line = Vec::new();
                record.write_line(&[], &mut line);
                let line: serde_json::Value = serde_json::from_slice(&line).expect("line");
                text_fields(&line)
                    .into_iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "clicks" | "orders" | "purchases"))
                    .collect()
            }
            Encoding::ListpackHash => {
                let compact: serde_json::Value =
                    serde_json::from_str(&stored).expect("compact JSON");
                // The array's values under their positions.
                let positional: serde_json::Map<String, serde_json::Value> = compact
                    .as_array()
                    .expect("an array")
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v.clone()))
                    .collect();
                let mut split = Vec::new();
                for (k, v) in text_fields(&serde_json::Value::Object(positional)) {
                    let mut rest = v.as_str();
                    let mut part = 0;
                    while !rest.is_empty() {
                        let mut cut = rest.len().min(64);
                        while !rest.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        let name = if part == 0 {
                            k.clone()
                        } else {
                            format!("{k}#{part}")
                        };
                        split.push((name, rest[..cut].to_string()));
                        rest = &rest[cut..];
                        part += 1;
                    }
                }
                split
            }
        };
        let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
        for (k, v) in &fields {
            args.push(k.as_bytes());
            args.push(v.as_bytes());
        }
        out.command(&args);
        out.command(&[b"EXPIRE", key.as_bytes(), ttl]);
    }
}

/// A JSON object's members as text: strings as they are, the rest as JSON,
/// nulls left out.
fn text_fields(v: &serde_json::Value) -> Vec<(String, String)> {
    v.as_object()
        .expect("an object")
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// One encoding's cost: Redis CPU µs per record (with its daily-index
/// entry, ZADDs of 64 members), commands per record, and the bytes of the
/// record and of its index entry.
struct EncodingCost {
    cpu_us: f64,
    commands: f64,
    record_bytes: f64,
    index_bytes: f64,
    encoding: &'static str,
}

fn encoding_cost(redis: &Redis, encoding: Encoding, evs: &[SearchEvent]) -> EncodingCost {
    use leafcache::redis::wire::{Commands, RespBuf};
    reset_stats(redis.1);
    let mut chunks = Vec::new();
    for chunk in evs.chunks(64) {
        let mut buf = RespBuf::default();
        for ev in chunk {
            encoding.commands(ev, &mut buf);
        }
        let day = format!("searches:daily:{}", &chunk[0].timestamp()[..10]);
        let scores: Vec<String> = chunk.iter().map(|e| e.timestamp_ms.to_string()).collect();
        let ids: Vec<String> = chunk.iter().map(|e| e.search_id.to_string()).collect();
        let mut zadd: Vec<&[u8]> = vec![b"ZADD", day.as_bytes()];
        for (s, id) in scores.iter().zip(&ids) {
            zadd.push(s.as_bytes());
            zadd.push(id.as_bytes());
        }
        buf.command(&zadd);
        chunks.push(buf);
    }
    let cpu = redis_cpu_us(redis.0.id());
    send_pipelined(redis.1, &chunks);
    let cpu_us = (redis_cpu_us(redis.0.id()) - cpu) / evs.len() as f64;
    let commands = total_commands(redis.1) as f64 / evs.len() as f64;
    let (record_bytes, index_bytes) = record_bytes(redis.1, evs);
    EncodingCost {
        cpu_us,
        commands,
        record_bytes,
        index_bytes,
        encoding: encoding.name(),
    }
}

fn main() {
    let n: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let redis = start_redis();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = RedisConfig {
        url: format!("redis://127.0.0.1:{}", redis.1),
        pool_size: 16,
        timeout: Duration::from_secs(2),
        key_prefix: leafcache::redis::keys::Prefix::default(),
        cluster: false,
        tls_ca_file: None,
        tls_ca_pem: None,
    };

    // Our own CPU: building the commands for every batch, without Redis.
    let evs = events(n);
    let start = Instant::now();
    let mut counters = leafcache::events::counters::Counters::default();
    let mut buf = leafcache::redis::wire::RespBuf::default();
    for chunk in evs.chunks(512) {
        for ev in chunk {
            counters.add(ev);
        }
        buf.clear();
        write::records_into(&layout(), chunk, &mut buf);
        std::hint::black_box(buf.as_bytes());
    }
    buf.clear();
    write::counters_into(&layout(), &counters, &mut buf);
    std::hint::black_box(buf.as_bytes());
    let build_rate = n as f64 / start.elapsed().as_secs_f64();
    drop(evs);
    if std::env::var("BUILD_ONLY").is_ok() {
        println!("building commands only: {build_rate:.0} events/s");
        return;
    }

    // The record encodings, each alone: its record and daily-index entry.
    let enc_n = n.min(100_000);
    let costs: Vec<EncodingCost> = [
        Encoding::OldHash,
        Encoding::ListpackHash,
        Encoding::CompactString,
    ]
    .into_iter()
    .map(|e| encoding_cost(&redis, e, &events(enc_n)))
    .collect();

    // leafcache's writer: batches, counters summed in process.
    reset_stats(redis.1);
    slowlog_start(redis.1);
    let evs = events(n);
    let memory_before = used_memory(redis.1);
    let cpu_before = redis_cpu_us(redis.0.id());
    let (rate, per_event, memory_per_event, written) = rt.block_on(async {
        let pool = RedisPool::new(&cfg).expect("pool");
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 1 << 30).expect("spool");
        let (sink, w) = writer::spawn(
            WriterConfig {
                layout: layout(),
                queue_capacity: QUEUE,
                batch_max: 512,
                flush_interval: Duration::from_millis(20),
                counter_flush: Duration::from_secs(10),
                redis: Some(cfg.clone()),
            },
            Some(pool),
            Some(spool),
        );
        let start = Instant::now();
        let written: Vec<SearchEvent> = evs.iter().step_by(97).cloned().collect();
        for ev in evs {
            // A proxy whose load the writer sustains: the queue never
            // nears the half-full mark where batches would spill to disk.
            while sink.queue_depth() > QUEUE / 4 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            sink.send(ev);
        }
        w.shutdown().await; // drains the queue and flushes the counters
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(
            sink.stats.written.load(Ordering::Relaxed),
            n as u64,
            "every event written"
        );
        assert_eq!(
            sink.stats.spooled.load(Ordering::Relaxed),
            0,
            "straight into Redis, none through the spool"
        );
        if std::env::var("VERBOSE").is_ok() {
            print_commandstats(redis.1);
        }
        (
            n as f64 / secs,
            total_commands(redis.1) as f64 / n as f64,
            used_memory(redis.1).saturating_sub(memory_before) as f64 / n as f64,
            written,
        )
    });
    let cpu_per_event = (redis_cpu_us(redis.0.id()) - cpu_before) / n as f64;
    let (slow, very_slow, longest) = slowlog(redis.1);
    let (writer_record_bytes, writer_index_bytes) = record_bytes(redis.1, &written);
    let families = key_families(redis.1);

    if std::env::var("SKIP_BASELINE").is_ok() {
        println!(
            "leafcache writer: {rate:.0} events/s, {per_event:.2} commands/event, \
             {cpu_per_event:.2} us of Redis CPU/event, {memory_per_event:.0} bytes of Redis memory/event"
        );
        return;
    }
    // Baseline: one transaction per event, 16 at a time.
    reset_stats(redis.1);
    let base_n = n.min(50_000);
    let evs = events(base_n);
    let base_cpu_before = redis_cpu_us(redis.0.id());
    let (base_rate, base_per_event) = rt.block_on(async {
        let pool = RedisPool::new(&cfg).expect("pool");
        let layout = layout();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in evs.chunks(base_n.div_ceil(16)) {
            let chunk = chunk.to_vec();
            let pool = pool.clone();
            let layout = layout.clone();
            tasks.spawn(async move {
                for ev in chunk {
                    let mut c = leafcache::events::counters::Counters::default();
                    c.add(&ev);
                    let one = std::slice::from_ref(&ev);
                    for pipe in [write::records(&layout, one), write::counters(&layout, &c)] {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                        pool.query::<()>(RedisCommand::Pipe(&pipe), deadline)
                            .await
                            .expect("write");
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let secs = start.elapsed().as_secs_f64();
        (
            base_n as f64 / secs,
            total_commands(redis.1) as f64 / base_n as f64,
        )
    });
    let base_cpu = (redis_cpu_us(redis.0.id()) - base_cpu_before) / base_n as f64;

    println!(
        "event writer into a local redis-server ({n} events, 200 queries x 50 users, 10 products each)"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>12} {:>12}",
        "", "events/s", "cmds/event", "redis us/ev", "bytes/event"
    );
    println!(
        "{:<34} {:>10.0} {:>10.2} {:>12.2} {:>12.0}",
        "leafcache writer (batched)", rate, per_event, cpu_per_event, memory_per_event
    );
    println!(
        "{:<34} {:>10.0} {:>10.2} {:>12.2}",
        "baseline: one MULTI per event", base_rate, base_per_event, base_cpu
    );
    println!(
        "{:<34} {:>10.0}",
        "building commands only (no redis)", build_rate
    );
    println!(
        "ratio: {:.1}x the events/s, {:.2}x the commands, {:.2}x the Redis CPU of one MULTI per event",
        rate / base_rate,
        per_event / base_per_event,
        cpu_per_event / base_cpu
    );
    println!(
        "writer's records: {writer_record_bytes:.0} bytes each + {writer_index_bytes:.0} bytes of daily index = {:.0} bytes per search (MEMORY USAGE)",
        writer_record_bytes + writer_index_bytes
    );
    println!(
        "redis SLOWLOG during the writer run: {slow} commands over 1 ms, {very_slow} over 3 ms, longest {longest} us"
    );
    println!("redis memory by key family after the writer run (MEMORY USAGE of every key):");
    println!(
        "{:<34} {:>8} {:>14} {:>14} {:>12}",
        "", "keys", "bytes", "bytes/search", "entries"
    );
    for (family, (keys, bytes, entries)) in &families {
        println!(
            "{:<34} {:>8} {:>14} {:>14.1} {:>12}",
            family,
            keys,
            bytes,
            *bytes as f64 / n as f64,
            entries
        );
    }
    println!();
    println!(
        "record encodings ({enc_n} records each, with their daily-index entries, ZADDs of 64):"
    );
    println!(
        "{:<34} {:>12} {:>10} {:>12} {:>12} {:>12}",
        "", "redis us/rec", "cmds/rec", "record B", "index B", "total B"
    );
    for c in &costs {
        println!(
            "{:<34} {:>12.2} {:>10.2} {:>12.0} {:>12.0} {:>12.0}",
            c.encoding,
            c.cpu_us,
            c.commands,
            c.record_bytes,
            c.index_bytes,
            c.record_bytes + c.index_bytes
        );
    }
}

/// Sends `chunks` over one blocking socket, each as one MULTI/EXEC,
/// pipelined, replies skimmed.
fn send_pipelined(port: u16, chunks: &[leafcache::redis::wire::RespBuf]) {
    use leafcache::redis::wire::read_reply;
    use std::io::{Read, Write};

    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let mut pending: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut pos = 0;
    let mut read = [0u8; 64 * 1024];
    for chunk in chunks {
        let mut bytes = b"*1\r\n$5\r\nMULTI\r\n".to_vec();
        bytes.extend_from_slice(chunk.as_bytes());
        bytes.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
        sock.write_all(&bytes).expect("write");
        // +OK, a QUEUED per command, EXEC's array.
        let mut seen = 0;
        while seen < chunk.commands() + 2 {
            match read_reply(&pending[pos..]).expect("valid reply") {
                Some((_, used)) => {
                    pos += used;
                    seen += 1;
                }
                None => {
                    pending.drain(..pos);
                    pos = 0;
                    let got = sock.read(&mut read).expect("read");
                    assert!(got > 0, "redis closed the connection");
                    pending.extend_from_slice(&read[..got]);
                }
            }
        }
    }
}
