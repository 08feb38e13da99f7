//! Refresh-ahead (docs/contract.md section 9) through the real proxy, a real
//! redis-server and a counting backend: a popular key stays a hit across its
//! ttl, refetches stay within `refresh_rate`, and stored lifetimes are
//! jittered.

mod common;

use std::time::{Duration, Instant};

use common::events::*;
use common::*;
use serde_json::json;

fn config(refresh_ahead: usize, rate: &str, ttl: &str) -> ProxyConfig {
    ProxyConfig::new()
        .route(Route::search().scope("global"))
        .cache(&format!("ttl = {ttl:?}"))
        .cache(r#"stale_if_error = "0s""#)
        .cache(&format!("refresh_ahead = {refresh_ahead}"))
        .cache(&format!("refresh_rate = {rate}"))
}

fn backend_answer(req: &Recorded) -> Reply {
    let q = query_of(req).unwrap_or_default();
    search_answer(&q, "product_search", 0.9, &[("p1", "s1")])
}

/// Asks for `query` until a refresh-ahead refetch of it has happened (the
/// backend answered it more often than the client missed it), within `limit`.
async fn until_refreshed(proxy: &Proxy, backend: &Backend, query: &str, limit: Duration) {
    let fetched = || {
        backend
            .requests()
            .iter()
            .filter(|r| query_of(r).as_deref() == Some(query))
            .count()
    };
    let before = fetched();
    let req = proxy.search(None, json!({ "query": query }));
    let mut misses = 0;
    let start = Instant::now();
    loop {
        if req.send().await.x_cache() == Some("MISS") {
            misses += 1;
        }
        if fetched() - before > misses {
            return;
        }
        assert!(start.elapsed() < limit, "no refresh-ahead within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_popular_key_stays_a_hit_across_its_ttl() {
    let redis = Redis::start().await;
    let backend = Backend::start(backend_answer).await;
    let proxy = Proxy::start(&config(5, "10", "2s"), &backend, &redis).await;
    // Popular once the log has counted it and the list has been read again
    // (every 5 s); until then the entry may expire as any other.
    until_refreshed(&proxy, &backend, "milk", Duration::from_secs(20)).await;

    let milk = proxy.search(None, json!({"query": "milk"}));
    let before = backend.count();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let resp = milk.send().await;
        assert_eq!(resp.x_cache(), Some("HIT"), "{resp:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refreshes = backend.count() - before;
    assert!(
        (2..=5).contains(&refreshes),
        "about one refetch per 2 s ttl in 5 s: {refreshes}"
    );
}

#[tokio::test]
async fn refreshes_stay_within_refresh_rate() {
    let redis = Redis::start().await;
    let backend = Backend::start(backend_answer).await;
    let proxy = Proxy::start(&config(50, "2", "2s"), &backend, &redis).await;
    let queries: Vec<String> = (0..20).map(|i| format!("query {i}")).collect();
    // Each query logged once, then the last one refreshed: the popular list
    // read since holds all twenty.
    for q in &queries {
        proxy.search(None, json!({ "query": q })).send().await;
    }
    until_refreshed(&proxy, &backend, "query 19", Duration::from_secs(20)).await;
    // Every key asked for, round and round, for 4 s: each is due once a ttl.
    let metrics_before = refresh_metrics(&proxy).await;
    let before = backend.count();
    let mut client_misses = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        for q in &queries {
            let resp = proxy.search(None, json!({ "query": q })).send().await;
            if resp.x_cache() == Some("MISS") {
                client_misses += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let refreshes = backend.count() - before - client_misses;
    // A bucket of one second's worth plus 2 per second.
    let allowed = (2.0 * elapsed).ceil() as usize + 2;
    assert!(
        refreshes <= allowed,
        "{refreshes} refetches in {elapsed:.1} s at refresh_rate 2 (at most {allowed})"
    );
    assert!(refreshes >= 1, "some keys were refreshed");

    // /metrics counts those refetches: every backend request beyond the
    // client's misses was one, and every one started reaches the backend
    // (the last may still be on its way). A client's miss joins a refetch
    // only if the entry expires while it is in flight, a second after it
    // began: once at most. And it counts the due hits the rate limit turned
    // away.
    let (started, limited) = eventually("the metrics to match the backend", || async {
        let (started, limited) = refresh_metrics(&proxy).await;
        let started = (started - metrics_before.0) as usize;
        let fetched = backend.count() - before;
        let refetched = fetched - client_misses;
        (refetched <= started && started <= refetched + 1)
            .then_some((started, limited - metrics_before.1))
    })
    .await;
    assert!(started >= 1);
    assert!(
        limited > 0,
        "20 keys due at 2 refreshes a second: some turned away"
    );
}

/// `leafcache_refreshes_started_total` and `..._rate_limited_total`.
async fn refresh_metrics(proxy: &Proxy) -> (u64, u64) {
    let r = common::ops::admin(proxy, "GET", "/metrics").send().await;
    assert_eq!(r.status, 200, "{r:?}");
    let text = String::from_utf8_lossy(&r.body);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics: {text}"))
    };
    (
        value("leafcache_refreshes_started_total"),
        value("leafcache_refreshes_rate_limited_total"),
    )
}

#[tokio::test]
async fn stored_lifetimes_are_jittered_by_up_to_a_tenth() {
    let redis = Redis::start().await;
    let backend = Backend::start(backend_answer).await;
    let proxy = Proxy::start(&config(5, "10", "100s"), &backend, &redis).await;
    let mut ttls = Vec::new();
    for i in 0..30 {
        let resp = proxy
            .search(None, json!({ "query": format!("jitter {i}") }))
            .send()
            .await;
        assert_miss_stored(&resp);
        let key = global_key(&resp.key());
        redis.wait_for_key(&key).await;
        ttls.push(redis.ttl(&key).await);
    }
    assert!(
        ttls.iter().all(|t| (89..=100).contains(t)),
        "within 90-100% of 100 s: {ttls:?}"
    );
    let (min, max) = (ttls.iter().min(), ttls.iter().max());
    assert!(min < max, "not all alike: {ttls:?}");

    // Without refresh-ahead, lifetimes are the ttl.
    let plain = Proxy::start(&config(0, "10", "100s"), &backend, &redis).await;
    let resp = plain.search(None, json!({"query": "plain"})).send().await;
    let key = global_key(&resp.key());
    redis.wait_for_key(&key).await;
    assert!(redis.ttl(&key).await >= 99);
}
