//! Fills a Redis with yesterday's searches for `bench/export.sh`, written by
//! leafcache's own event writer (records, daily index, feedback-ready
//! layout), so the export reads what a proxy would have logged.
//!
//! Run: `REDIS_URL=redis://127.0.0.1:PORT RECORDS=1000000 cargo run --release
//! --example export_fill`. Answers look like the demo backend's (10 products
//! with suppliers), queries and users repeat as in bench/event_writer.rs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use leafcache::answer::SearchMeta;
use leafcache::config::RedisConfig;
use leafcache::events::write::Layout;
use leafcache::events::writer::{self, WriterConfig};
use leafcache::events::{CacheResult, SearchEvent, new_search_id};
use leafcache::redis::RedisPool;

const QUEUE: usize = 100_000;
const DAY_MS: u64 = 86_400_000;

fn metas() -> Vec<(String, Arc<SearchMeta>)> {
    (0..200)
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
                intent: Some(
                    if i % 10 == 0 {
                        "add_to_order"
                    } else {
                        "product_search"
                    }
                    .into(),
                ),
                confidence: Some(0.9),
                results_count: 10,
                products,
                ..SearchMeta::default()
            };
            (q, Arc::new(meta))
        })
        .collect()
}

fn main() {
    let n: u64 = std::env::var("RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let url = std::env::var("REDIS_URL").expect("REDIS_URL: the Redis to fill");
    let today = leafcache::time::now_ms() / DAY_MS * DAY_MS;
    let yesterday = today - DAY_MS;
    let layout = Layout {
        prefix: leafcache::redis::keys::Prefix::default(),
        retention_secs: 7 * 86400,
        record_retention_secs: 7 * 86400,
        history_limit: 100,
    };
    let cfg = RedisConfig {
        url,
        pool_size: 16,
        timeout: Duration::from_secs(2),
        key_prefix: leafcache::redis::keys::Prefix::default(),
        cluster: false,
        tls_ca_file: None,
        tls_ca_pem: None,
    };
    let metas = metas();
    let route: Arc<str> = Arc::from("search");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let pool = RedisPool::new(&cfg).expect("pool");
        let (sink, w) = writer::spawn(
            WriterConfig {
                layout,
                queue_capacity: QUEUE,
                batch_max: 512,
                flush_interval: Duration::from_millis(20),
                counter_flush: Duration::from_secs(1),
                redis: Some(cfg.clone()),
            },
            Some(pool),
            None,
        );
        let start = Instant::now();
        for i in 0..n {
            let (q, meta) = &metas[(i as usize * 7) % metas.len()];
            while sink.queue_depth() > QUEUE / 4 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            sink.send(SearchEvent {
                search_id: new_search_id(),
                timestamp_ms: yesterday + i * DAY_MS / n,
                user_id: Some(format!("user-{}", i % 5000)),
                user_uuid: None,
                session_id: Some(format!("s-{}", i % 5000)),
                query: q.clone(),
                query_normalized: q.clone(),
                meta: meta.clone(),
                response_time_ms: 12.5,
                cache: if i % 5 == 0 {
                    CacheResult::Miss
                } else {
                    CacheResult::Hit
                },
                status: 200,
                route: route.clone(),
            });
        }
        w.shutdown().await;
        let written = sink.stats.written.load(Ordering::Relaxed);
        assert_eq!(written, n, "every event written");
        eprintln!(
            "filled {n} searches for {} in {:.1} s",
            leafcache::time::rfc3339_ms(yesterday)
                .get(..10)
                .unwrap_or("?"),
            start.elapsed().as_secs_f64()
        );
    });
}
