//! The in-process cache on its own (docs/failures.md): with Redis
//! unreachable from the start, or killed mid-test, L1 keeps an expired copy
//! for its stale window, and stale-if-error, conditional revalidation and
//! RFC 9111's stale-while-revalidate behave as they do with Redis. While
//! Redis answers, its copy is the one that counts.
//!
//! Freshness runs out in real time: answers live one second, and the tests
//! poll until the stored copy is no longer a HIT.

mod common;

use common::*;
use serde_json::json;

/// A Redis URL nothing listens on.
fn unreachable_redis() -> String {
    format!("redis://127.0.0.1:{}", free_port())
}

/// The search route with a one-second ttl.
fn search_config(stale_if_error: &str) -> ProxyConfig {
    ProxyConfig::new()
        .route(Route::search().set("ttl", r#""1s""#))
        .cache(&format!("stale_if_error = {stale_if_error:?}"))
        .upstream(r#"timeout = "400ms""#)
}

/// An origin route (RFC 9111) in the global scope.
fn origin_config() -> ProxyConfig {
    ProxyConfig::new()
        .route(
            Route::new("pages")
                .set("path_prefix", r#""/p/""#)
                .set("freshness", r#""origin""#)
                .scope("global"),
        )
        .upstream(r#"timeout = "400ms""#)
}

/// Sends `req` until its answer is not a HIT (the stored copy expired).
async fn until_not_hit(req: &Req) -> Resp {
    eventually("the stored answer to expire", || async {
        let resp = req.send().await;
        (resp.x_cache() != Some("HIT")).then_some(resp)
    })
    .await
}

#[track_caller]
fn assert_x_cache(resp: &Resp, want: &str) {
    assert_eq!(resp.x_cache(), Some(want), "{resp:?}");
}

fn echo_with(req: &Recorded, headers: &[(&str, &str)]) -> Reply {
    headers
        .iter()
        .fold(Reply::echo(req), |r, (k, v)| r.header(k, v))
}

#[tokio::test]
async fn without_redis_an_expired_copy_stands_in_for_a_failing_backend() {
    let script = Script::new(Reply::echo);
    let backend = script.backend().await;
    let proxy = Proxy::start_with(&search_config("1m"), &backend.url(), &unreachable_redis()).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    let first = milk.send().await;
    assert_x_cache(&first, "MISS");
    assert_x_cache(&milk.send().await, "HIT");
    script.set(|_| Reply::json(json!({"error": "overloaded"})).status(503));
    let stale = until_not_hit(&milk).await;
    assert_x_cache(&stale, "STALE");
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, first.body, "the stored answer");
    assert!(
        stale.cache_status().raw.contains("fwd-status=503"),
        "{stale:?}"
    );
}

#[tokio::test]
async fn without_redis_the_stale_window_still_ends() {
    let script = Script::new(Reply::echo);
    let backend = script.backend().await;
    let proxy = Proxy::start_with(&search_config("1s"), &backend.url(), &unreachable_redis()).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    assert_x_cache(&milk.send().await, "MISS");
    script.set(|_| Reply::json(json!({"error": "overloaded"})).status(503));
    // Stale for a second past its one second of freshness, then gone: the
    // backend's own 503 comes through.
    let failed = eventually("the stale window to end", || async {
        let resp = milk.send().await;
        (resp.status == 503).then_some(resp)
    })
    .await;
    assert_eq!(failed.x_cache(), Some("MISS"), "{failed:?}");
}

#[tokio::test]
async fn without_redis_a_stale_copy_with_an_etag_is_revalidated() {
    let script = Script::new(|req| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::echo(req).status(304).body("");
        }
        echo_with(req, &[("etag", "\"v1\"")])
    });
    let backend = script.backend().await;
    let proxy = Proxy::start_with(&search_config("1m"), &backend.url(), &unreachable_redis()).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    let first = milk.send().await;
    assert_x_cache(&first, "MISS");
    let revalidated = until_not_hit(&milk).await;
    assert_x_cache(&revalidated, "REVALIDATED");
    assert_eq!(revalidated.body, first.body, "the stored body");
    assert_eq!(backend.last().header("if-none-match"), Some("\"v1\""));
    // The 304 refreshed the copy: a hit again, without the backend.
    let before = backend.count();
    assert_x_cache(&milk.send().await, "HIT");
    assert_eq!(backend.count(), before);
}

#[tokio::test]
async fn without_redis_an_origin_entry_is_revalidated_conditionally() {
    let script = Script::new(|req| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::echo(req).status(304).body("");
        }
        echo_with(req, &[("cache-control", "max-age=1"), ("etag", "\"v1\"")])
    });
    let backend = script.backend().await;
    let proxy = Proxy::start_with(&origin_config(), &backend.url(), &unreachable_redis()).await;
    let get = proxy.get("/p/a");

    let first = get.send().await;
    assert_x_cache(&first, "MISS");
    let revalidated = until_not_hit(&get).await;
    assert_x_cache(&revalidated, "REVALIDATED");
    assert_eq!(revalidated.body, first.body, "the stored body");
    assert_eq!(backend.last().header("if-none-match"), Some("\"v1\""));
}

#[tokio::test]
async fn without_redis_stale_while_revalidate_serves_stale_and_refreshes() {
    let script = Script::new(|req| {
        echo_with(
            req,
            &[("cache-control", "max-age=1, stale-while-revalidate=60")],
        )
    });
    let backend = script.backend().await;
    let proxy = Proxy::start_with(&origin_config(), &backend.url(), &unreachable_redis()).await;
    let get = proxy.get("/p/a");

    let first = get.send().await;
    assert_x_cache(&first, "MISS");
    let stale = until_not_hit(&get).await;
    assert_x_cache(&stale, "STALE");
    assert_eq!(stale.body, first.body);
    assert!(
        stale.cache_status().raw.contains("stale-while-revalidate"),
        "{stale:?}"
    );
    backend.wait_for_count(2).await;
    let refreshed = eventually("the background refresh to be stored", || async {
        let resp = get.send().await;
        (resp.x_cache() == Some("HIT") && resp.body != first.body).then_some(resp)
    })
    .await;
    assert!(refreshed.backend_n() >= 2, "{refreshed:?}");
}

#[tokio::test]
async fn when_redis_dies_the_l1_copy_stands_in_for_a_failing_backend() {
    let script = Script::new(Reply::echo);
    let backend = script.backend().await;
    let mut redis = Redis::start().await;
    let proxy = Proxy::start(&search_config("1m"), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    let first = milk.send().await;
    assert_x_cache(&first, "MISS");
    let key = format!("user:u1:cache:{}", first.key());
    eventually("the entry to reach redis", || async {
        redis.exists(&key).await.then_some(())
    })
    .await;
    redis.kill();
    script.set(|_| Reply::json(json!({"error": "overloaded"})).status(503));
    let stale = until_not_hit(&milk).await;
    assert_x_cache(&stale, "STALE");
    assert_eq!(stale.body, first.body, "L1's copy of the stored answer");
}

#[tokio::test]
async fn while_redis_answers_its_copy_counts_not_l1s() {
    // Redis up but without the entry (it lost it, or a purge's invalidation
    // message did not reach this proxy): L1's expired copy is not used.
    let script = Script::new(Reply::echo);
    let backend = script.backend().await;
    let redis = Redis::start().await;
    let proxy = Proxy::start(&search_config("1m"), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    let first = milk.send().await;
    assert_x_cache(&first, "MISS");
    let key = format!("user:u1:cache:{}", first.key());
    eventually("the entry to reach redis", || async {
        redis.exists(&key).await.then_some(())
    })
    .await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis.conn().await)
        .await
        .expect("DEL");
    script.set(|_| Reply::json(json!({"error": "overloaded"})).status(503));
    let failed = until_not_hit(&milk).await;
    assert_eq!(failed.status, 503, "{failed:?}");
    assert_x_cache(&failed, "MISS");
}
