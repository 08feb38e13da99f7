//! A slow Redis (paused with SIGSTOP): lookups give up after `redis.timeout`
//! and count as misses, the breaker then skips Redis, and everything comes
//! back on its own when Redis answers again (docs/contract.md section 7).

mod common;

use std::time::Duration;

use common::events::{Paused, metric};
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_paused_redis_turns_lookups_into_misses_and_recovery_is_automatic() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let config = ProxyConfig::search()
        .without_l1()
        .redis(r#"timeout = "50ms""#);
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let stored = milk.send().await;
    assert_miss_stored(&stored);
    redis.wait_for_key(&user_key("u1", &stored.key())).await;
    assert_hit(&milk.send().await);

    let paused = Paused::pause(&redis).await;
    // Each of these would hang until SIGCONT if a lookup waited on Redis;
    // the harness bounds every exchange, so a hang fails the test.
    for n in 0..5 {
        let during = milk.send().await;
        assert_eq!(during.status, 200, "{during:?}");
        assert_eq!(during.x_cache(), Some("MISS"), "request {n}: {during:?}");
    }
    eventually("the breaker opens", || async {
        (metric(proxy.admin, "redis_up").await == 0).then_some(())
    })
    .await;
    assert!(metric(proxy.admin, "redis_errors_lookup").await >= 1);

    paused.resume();
    eventually_within(
        Duration::from_secs(15),
        "hits come back from redis",
        || async { (milk.send().await.x_cache() == Some("HIT")).then_some(()) },
    )
    .await;
}
