//! Event writer throughput into a local redis-server, and Redis commands per
//! logged event, against a baseline in the same run: the same events written
//! one at a time, one transaction each (what a per-request logger does).
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
        history_limit: 1000,
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

    // leafcache's writer: batches, counters summed in process.
    reset_stats(redis.1);
    let evs = events(n);
    let memory_before = used_memory(redis.1);
    let (rate, per_event, memory_per_event) = rt.block_on(async {
        let pool = RedisPool::new(&cfg).expect("pool");
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 1 << 30).expect("spool");
        let (sink, w) = writer::spawn(
            WriterConfig {
                layout: layout(),
                queue_capacity: QUEUE,
                batch_max: 512,
                flush_interval: Duration::from_millis(20),
                redis: Some(cfg.clone()),
            },
            Some(pool),
            Some(spool),
        );
        let start = Instant::now();
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
        )
    });

    // Redis's own ceiling for this layout: only the two commands every
    // search needs whatever the writer does (HSET of its record, EXPIRE),
    // pre-encoded, pipelined without a transaction, replies skimmed.
    reset_stats(redis.1);
    let ceiling = redis_ceiling(redis.1, &events(n));

    if std::env::var("SKIP_BASELINE").is_ok() {
        println!(
            "leafcache writer: {rate:.0} events/s, {per_event:.2} commands/event, \
             {memory_per_event:.0} bytes of Redis memory/event"
        );
        return;
    }
    // Baseline: one transaction per event, 16 at a time.
    reset_stats(redis.1);
    let base_n = n.min(50_000);
    let evs = events(base_n);
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

    println!(
        "event writer into a local redis-server ({n} events, 200 queries x 50 users, 10 products each)"
    );
    println!("{:<34} {:>12} {:>16}", "", "events/s", "commands/event");
    println!(
        "{:<34} {:>12.0} {:>16.2}",
        "leafcache writer (batched)", rate, per_event
    );
    println!(
        "{:<34} {:>12.0} {:>16.2}",
        "baseline: one MULTI per event", base_rate, base_per_event
    );
    println!(
        "{:<34} {:>12.0} {:>16.2}",
        "redis ceiling: HSET+EXPIRE only", ceiling, 2.0
    );
    println!(
        "{:<34} {:>12.0}",
        "building commands only (no redis)", build_rate
    );
    println!(
        "ratio: {:.1}x the events/s, {:.2}x the commands; {:.0}% of the redis ceiling",
        rate / base_rate,
        per_event / base_per_event,
        100.0 * rate / ceiling
    );
    println!("redis memory per event written (all keys): {memory_per_event:.0} bytes");
}

/// Events/s Redis sustains for just the `HSET` and `EXPIRE` of each search
/// record, written in pipelines of 512 events over one blocking socket: an
/// upper bound for any writer of this key layout on this machine.
fn redis_ceiling(port: u16, evs: &[SearchEvent]) -> f64 {
    use leafcache::redis::wire::{Commands, RespBuf, read_reply};
    use std::io::{Read, Write};

    let mut chunks = Vec::new();
    for chunk in evs.chunks(512) {
        let mut only = RespBuf::default();
        for ev in chunk {
            let key = format!("search:{}", ev.search_id);
            let fields = write::record_fields(ev);
            let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
            for (k, v) in &fields {
                args.push(k.as_bytes());
                args.push(v.as_bytes());
            }
            only.command(&args);
            only.command(&[b"EXPIRE", key.as_bytes(), b"7776000"]);
        }
        chunks.push((only.as_bytes().to_vec(), only.commands()));
    }
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let start = Instant::now();
    let mut pending: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut pos = 0;
    let mut read = [0u8; 64 * 1024];
    for (bytes, commands) in &chunks {
        sock.write_all(bytes).expect("write");
        let mut seen = 0;
        while seen < *commands {
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
    evs.len() as f64 / start.elapsed().as_secs_f64()
}
