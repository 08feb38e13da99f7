//! Client-chosen values cost bounded memory (docs/keys-and-security.md, "Security model"):
//! ids of any length never grow the proxy or Redis past a bound, because an
//! identity longer than `[identity] max_bytes` bypasses the cache and is
//! logged without it.

mod common;

use common::events::{metric, redis_pid};
use common::*;
use futures_util::stream::{self, StreamExt};
use serde_json::json;

/// The resident set of process `pid`, in bytes (`VmRSS` of /proc).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

async fn redis_used(redis: &Redis) -> u64 {
    info_field(&redis.url(), "memory", "used_memory")
        .await
        .and_then(|v| v.parse().ok())
        .expect("INFO memory names used_memory")
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_60_kb_ids_grow_neither_the_proxy_nor_redis_by_40_mib() {
    let redis = Redis::start().await;
    let backend = Backend::start(|_| {
        Reply::json(json!({
            "intent": "product_search",
            "products": [{"product_id": "p1", "supplier": "s1"}],
        }))
    })
    .await;
    let proxy = Proxy::start_process(&ProxyConfig::search(), &backend, &redis).await;
    let pid = proxy.pid().expect("the proxy runs as a process");
    let redis_pid = redis_pid(&redis.url()).await;

    // Each request carries a distinct 60 KB id, from each source in turn.
    let send = |i: usize, size: usize| {
        let id = format!("{i:08}{}", "i".repeat(size));
        let req = match i % 3 {
            0 => proxy.search(None, json!({"query": "milk", "user_id": id})),
            1 => proxy.search(None, json!({"query": "milk", "user_uuid": id})),
            _ => proxy.search(None, json!({"query": "milk", "session_id": id})),
        };
        async move { req.send().await }
    };
    let run = |from: usize, n: usize, size: usize| {
        stream::iter(from..from + n)
            .map(move |i| send(i, size))
            .buffer_unordered(8)
            .for_each(|resp| async move { assert_eq!(resp.status, 200, "{resp:?}") })
    };
    let logged = || async { metric(proxy.admin, "events_written").await };

    // Warm up with short ids: allocator arenas, connections, the writer.
    run(0, 60, 8).await;
    eventually("the warm-up searches written", || async {
        (logged().await >= 60).then_some(())
    })
    .await;
    let (proxy_before, redis_rss_before, redis_before) =
        (rss(pid), rss(redis_pid), redis_used(&redis).await);

    run(1_000, 1_000, 60 * 1024).await;
    eventually("every search written", || async {
        (logged().await >= 1_060).then_some(())
    })
    .await;
    let (proxy_after, redis_rss_after, redis_after) =
        (rss(pid), rss(redis_pid), redis_used(&redis).await);

    let grew = |before: u64, after: u64| after.saturating_sub(before);
    eprintln!(
        "proxy RSS +{} KiB, redis RSS +{} KiB, redis used_memory +{} KiB",
        grew(proxy_before, proxy_after) / 1024,
        grew(redis_rss_before, redis_rss_after) / 1024,
        grew(redis_before, redis_after) / 1024,
    );
    assert!(
        grew(proxy_before, proxy_after) < 40 * MIB,
        "the proxy grew from {proxy_before} to {proxy_after} bytes"
    );
    assert!(
        grew(redis_before, redis_after) < 40 * MIB,
        "redis used_memory grew from {redis_before} to {redis_after} bytes"
    );
    assert!(
        grew(redis_rss_before, redis_rss_after) < 40 * MIB,
        "redis grew from {redis_rss_before} to {redis_rss_after} bytes"
    );
}
