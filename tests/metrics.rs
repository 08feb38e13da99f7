//! `GET /metrics` on the admin listener moves with the traffic that flows
//! through the proxy (docs/contract.md section 6).

mod common;

use common::ops::admin;
use common::*;
use serde_json::json;

/// The value of one sample line (`name{labels} value`), 0 when absent.
fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(proxy: &Proxy) -> String {
    let r = admin(proxy, "GET", "/metrics").send().await;
    assert_eq!(r.status, 200, "{r:?}");
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_cache_result_and_follow_the_event_pipeline() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let before = scrape(&proxy).await;
    let hits = r#"leafcache_requests_total{route="search",cache="hit"}"#;
    let misses = r#"leafcache_requests_total{route="search",cache="miss"}"#;
    assert_eq!(sample(&before, hits), 0.0);

    for _ in 0..3 {
        let r = proxy
            .search(Some("u1"), json!({"query": "milk"}))
            .send()
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    let after = eventually("three events written", || async {
        let m = scrape(&proxy).await;
        (sample(&m, "leafcache_events_written_total") >= 3.0).then_some(m)
    })
    .await;
    assert_eq!(sample(&after, misses), 1.0, "{after}");
    assert_eq!(sample(&after, hits), 2.0, "{after}");
    assert_eq!(sample(&after, "leafcache_events_enqueued_total"), 3.0);
    assert_eq!(sample(&after, "leafcache_events_dropped_total"), 0.0);
    // Refresh-ahead is off: its counters are there, at 0.
    for name in ["refreshes_started_total", "refreshes_rate_limited_total"] {
        assert!(
            after.contains(&format!("\nleafcache_{name} 0\n")),
            "{after}"
        );
    }
    assert_eq!(
        sample(&after, "leafcache_request_duration_seconds_count"),
        3.0
    );
    assert_eq!(
        sample(&after, "leafcache_backend_duration_seconds_count"),
        1.0
    );
    assert_eq!(sample(&after, "leafcache_redis_up"), 1.0);
    assert!(after.contains("leafcache_l1_bytes"), "{after}");
    assert!(after.contains("leafcache_spool_bytes"), "{after}");
    assert!(
        after.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
}

#[tokio::test]
async fn metrics_need_no_token_and_show_redis_down() {
    let mut redis = Redis::start().await;
    let backend = Backend::echo().await;
    let config = ProxyConfig::search().top(r#"admin_token = "t0ken""#);
    let proxy = Proxy::start(&config, &backend, &redis).await;
    redis.kill();
    let m = eventually("redis marked down", || async {
        let m = scrape(&proxy).await;
        (sample(&m, "leafcache_redis_up") == 0.0).then_some(m)
    })
    .await;
    assert!(m.contains("leafcache_redis_errors_any_total"), "{m}");
}
