//! A bounded soak (docs/contract.md section 7, issue 5): steady load through the real
//! proxy while Redis is killed and restarted and the backend fails on part
//! of the traffic. Run by `.ci/run` (ignored in a plain `cargo test` because
//! it takes SOAK_SECS, default 30 s):
//!
//!     cargo test --test soak -- --ignored --nocapture
//!
//! It reports requests sent, non-2xx answers not explained by the injected
//! faults (must be 0), search events answered versus search records in Redis
//! (must be equal), and the proxy's resident memory after warm-up and at the
//! end (must stay flat).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::events::*;
use common::*;
use serde_json::json;
use tokio::sync::Mutex;

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of a process: sockets, files, the epoll instance.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 30-60 s soak; run by .ci/run with --ignored"]
async fn steady_load_survives_redis_restarts_and_backend_errors() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(5, 60);
    let mut redis = DurableRedis::start().await;
    // Searches for "boom ..." fail at the backend: the injected fault.
    let backend = Backend::start(|req| {
        let q = req.json()["query"].as_str().unwrap_or_default().to_owned();
        if q.starts_with("boom") {
            Reply::json(json!({"error": "injected"})).status(500)
        } else {
            Reply::echo(req)
        }
    })
    .await;
    let proxy = Arc::new(LogProxy::start(&LogConfig::new(), &backend.url(), &redis.url()).await);

    let sent = Arc::new(AtomicU64::new(0));
    let unexplained = Arc::new(AtomicU64::new(0));
    let injected = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8u64 {
        let (proxy, sent, unexplained, injected, ids, stop) = (
            proxy.clone(),
            sent.clone(),
            unexplained.clone(),
            injected.clone(),
            ids.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                i += 8;
                let user = format!("u{}", i % 40);
                let query = if i % 10 == 3 {
                    format!("boom {}", i % 7)
                } else {
                    format!("milk {}", i % 300)
                };
                let Ok(resp) = proxy
                    .search(Some(&user), json!({"query": query}))
                    .try_send()
                    .await
                else {
                    unexplained.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                sent.fetch_add(1, Ordering::Relaxed);
                let ok = (200..300).contains(&resp.status);
                if !ok && query.starts_with("boom") {
                    injected.fetch_add(1, Ordering::Relaxed);
                } else if !ok {
                    unexplained.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(id) = search_id(&resp) {
                    ids.lock().await.insert(id);
                }
            }
        }));
    }

    let third = Duration::from_secs(secs) / 3;
    tokio::time::sleep(Duration::from_secs(2).min(third)).await;
    let rss_warm = rss_kib(proxy.pid(), "VmRSS:");
    let fds_warm = open_fds(proxy.pid());
    tokio::time::sleep(third).await;
    redis.kill();
    tokio::time::sleep(third).await;
    redis.restart().await;
    tokio::time::sleep(third).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let rss_end = rss_kib(proxy.pid(), "VmRSS:");
    let rss_peak = rss_kib(proxy.pid(), "VmHWM:");
    // Clients closed their connections; give the proxy a moment to see it.
    let fds_end = eventually("client sockets closed", || async {
        let n = open_fds(proxy.pid());
        (n <= fds_warm + 16).then_some(n)
    })
    .await;

    let ids = ids.lock().await.clone();
    let mut store = LogStore::new(&redis.url()).await;
    store
        .wait_for_records("", &ids, Duration::from_secs(45))
        .await;
    let in_redis = store.search_ids("").await;
    let dropped = metric(proxy.admin, "events_dropped").await;

    println!(
        "soak {secs}s: {} requests, {} injected backend errors, {} unexplained non-2xx; \
         {} search events answered, {} search records in redis, {} dropped; \
         RSS {} KiB after warm-up, {} KiB at the end, {} KiB peak; \
         open fds {fds_warm} after warm-up, {fds_end} at the end",
        sent.load(Ordering::Relaxed),
        injected.load(Ordering::Relaxed),
        unexplained.load(Ordering::Relaxed),
        ids.len(),
        in_redis.len(),
        dropped,
        rss_warm,
        rss_end,
        rss_peak,
    );
    assert!(sent.load(Ordering::Relaxed) > 100, "the load ran");
    assert!(
        injected.load(Ordering::Relaxed) > 0,
        "the fault was injected"
    );
    assert_eq!(
        unexplained.load(Ordering::Relaxed),
        0,
        "non-2xx answers nobody injected"
    );
    assert_eq!(
        in_redis, ids,
        "every answered search, and nothing else, is in redis"
    );
    assert_eq!(dropped, 0);
    // Flat: the end within 64 MiB of the warmed-up process.
    assert!(
        rss_end < rss_warm + 64 * 1024,
        "RSS grew from {rss_warm} KiB to {rss_end} KiB"
    );
}
