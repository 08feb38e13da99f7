//! stale-if-error (docs/contract.md section 3, step 11): when the backend fails, an
//! expired copy younger than `stale_if_error` is served as `X-Cache: STALE`
//! and logged with cache=stale; past that window the failure shows.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;

const OK: u8 = 0;
const FAILING: u8 = 1;
const HANGING: u8 = 2;

/// A backend that answers normally, with 503, or not at all, as `mode` says.
async fn switchable_backend(mode: Arc<AtomicU8>, never: Gate) -> Backend {
    Backend::start(move |req| match mode.load(Ordering::SeqCst) {
        OK => Reply::echo(req),
        FAILING => Reply::json(json!({"error": "overloaded"})).status(503),
        _ => Reply::echo(req).hold_until(&never),
    })
    .await
}

fn config(stale_if_error: &str) -> ProxyConfig {
    ProxyConfig::new()
        .route(Route::search().set("ttl", r#""1s""#))
        .cache(&format!("stale_if_error = {stale_if_error:?}"))
        .upstream(r#"timeout = "400ms""#)
}

/// Waits until u1's answer `first` is in Redis (where stale copies live).
async fn stored_in_redis(first: Resp, redis: &Redis) -> Resp {
    let key = format!("user:u1:cache:{}", first.key());
    eventually("the entry reaches redis", || async {
        redis.exists(&key).await.then_some(())
    })
    .await;
    first
}

/// Lets the stored copy's one second of freshness run out.
async fn let_it_expire() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn a_failing_backend_is_answered_with_the_expired_copy() {
    let redis = Redis::start().await;
    let mode = Arc::new(AtomicU8::new(OK));
    let never = Gate::new();
    let backend = switchable_backend(mode.clone(), never.clone()).await;
    let proxy = Proxy::start(&config("1m"), &backend, &redis).await;
    let milk = || proxy.search(Some("u1"), json!({"query": "milk"}));

    let first = stored_in_redis(milk().send().await, &redis).await;
    assert_eq!(first.x_cache(), Some("MISS"));
    let_it_expire().await;

    mode.store(FAILING, Ordering::SeqCst);
    let stale = milk().send().await;
    assert_eq!(stale.status, 200, "{stale:?}");
    assert_eq!(stale.x_cache(), Some("STALE"), "{stale:?}");
    assert_eq!(stale.body, first.body, "the stored answer, byte for byte");
    let status = stale.header("cache-status").unwrap_or_default().to_string();
    assert!(status.contains("fwd-status=503"), "{status}");
    assert!(status.contains("detail=stale-if-error"), "{status}");
    assert!(
        status.contains("ttl=-"),
        "a negative ttl says how stale: {status}"
    );
    assert!(
        stale.header("x-search-id").is_some(),
        "a stale answer is logged"
    );

    mode.store(HANGING, Ordering::SeqCst);
    let timed_out = milk().send().await;
    assert_eq!(timed_out.x_cache(), Some("STALE"), "{timed_out:?}");
    assert_eq!(timed_out.body, first.body);

    let id = stale.header("x-search-id").unwrap_or_default().to_string();
    let cache = eventually("the stale search is logged", || async {
        common::ops::hget(&redis, &format!("search:{id}"), "cache").await
    })
    .await;
    assert_eq!(cache, "stale");
    never.open();
}

#[tokio::test]
async fn past_the_stale_window_the_backend_failure_shows() {
    let redis = Redis::start().await;
    let mode = Arc::new(AtomicU8::new(OK));
    let backend = switchable_backend(mode.clone(), Gate::new()).await;
    let proxy = Proxy::start(&config("1s"), &backend, &redis).await;
    let milk = || proxy.search(Some("u1"), json!({"query": "milk"}));

    stored_in_redis(milk().send().await, &redis).await;
    // Freshness (1 s) and the stale window (1 s) both run out.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    mode.store(FAILING, Ordering::SeqCst);
    let failed = milk().send().await;
    assert_eq!(
        failed.status, 503,
        "passed through as the backend sent it: {failed:?}"
    );
    assert_eq!(failed.x_cache(), Some("MISS"));
}

#[tokio::test]
async fn a_fresh_answer_replaces_the_stale_copy_once_the_backend_recovers() {
    let redis = Redis::start().await;
    let mode = Arc::new(AtomicU8::new(OK));
    let backend = switchable_backend(mode.clone(), Gate::new()).await;
    let proxy = Proxy::start(&config("1m"), &backend, &redis).await;
    let milk = || proxy.search(Some("u1"), json!({"query": "milk"}));

    stored_in_redis(milk().send().await, &redis).await;
    let_it_expire().await;
    mode.store(FAILING, Ordering::SeqCst);
    assert_eq!(milk().send().await.x_cache(), Some("STALE"));
    mode.store(OK, Ordering::SeqCst);
    let recovered = milk().send().await;
    assert_eq!(recovered.x_cache(), Some("MISS"));
    assert_eq!(milk().send().await.x_cache(), Some("HIT"));
}
