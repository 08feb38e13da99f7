//! Redis down at start or mid-flight: the proxy fails open (docs/contract.md section 7).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn the_proxy_keeps_answering_when_redis_dies() {
    let mut redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let stored = milk.send().await;
    assert_miss_stored(&stored);
    redis.wait_for_key(&user_key("u1", &stored.key())).await;

    redis.kill();

    let repeat = milk.send().await;
    assert_eq!(repeat.status, 200, "{repeat:?}");
    match repeat.x_cache() {
        Some("HIT") => assert_eq!(repeat.body, stored.body, "a hit from L1"),
        Some("MISS") => assert_eq!(repeat.backend_n(), 2, "a miss from the backend"),
        other => panic!("expected HIT or MISS, got {other:?}: {repeat:?}"),
    }

    let bread = proxy
        .search(Some("u1"), json!({"query": "bread"}))
        .send()
        .await;
    assert_eq!(bread.status, 200);
    assert_eq!(bread.x_cache(), Some("MISS"));
    assert_eq!(bread.json()["uri"], "/api/v1/search");

    let plain = proxy.get("/static/app.js").send().await;
    assert_eq!(plain.status, 200);
}

#[tokio::test]
async fn without_l1_a_dead_redis_means_misses_answered_by_the_backend() {
    let mut redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search().without_l1(), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let stored = milk.send().await;
    assert_miss_stored(&stored);
    redis.wait_for_key(&user_key("u1", &stored.key())).await;
    assert_hit(&milk.send().await);

    redis.kill();

    for n in 2..=4 {
        let resp = milk.send().await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.x_cache(), Some("MISS"), "{resp:?}");
        assert_eq!(resp.backend_n(), n);
    }
}

#[tokio::test]
async fn caching_resumes_after_redis_comes_back() {
    let mut redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search().without_l1(), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    assert_miss_stored(&milk.send().await);

    redis.kill();
    assert_eq!(milk.send().await.status, 200);
    redis.restart().await;

    // Reconnects back off up to 5 s (docs/contract.md section 7): allow a few rounds.
    let hit = eventually_within(
        Duration::from_secs(30),
        "a hit from the restarted redis",
        || async {
            let resp = milk.send().await;
            assert_eq!(resp.status, 200, "{resp:?}");
            (resp.x_cache() == Some("HIT")).then_some(resp)
        },
    )
    .await;
    redis.wait_for_key(&user_key("u1", &hit.key())).await;
}

#[tokio::test]
async fn the_proxy_starts_and_serves_without_redis() {
    let backend = Backend::echo().await;
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let proxy = Proxy::start_with(
        &ProxyConfig::search().without_l1(),
        &backend.url(),
        &nowhere,
    )
    .await;

    for n in 1..=2 {
        let resp = proxy
            .search(Some("u1"), json!({"query": "milk"}))
            .send()
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.x_cache(), Some("MISS"), "{resp:?}");
        assert_eq!(resp.backend_n(), n);
    }
}
