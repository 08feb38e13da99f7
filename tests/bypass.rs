//! Requests that skip the cache (docs/contract.md section 3, steps 2–4 and 12).

mod common;

use common::*;
use serde_json::json;

/// Sends `req` twice: both bypass with `detail`, both reach the backend, nothing is stored.
async fn assert_always_bypassed(redis: &Redis, backend: &Backend, req: Req, detail: &str) -> Resp {
    let first = req.send().await;
    assert_bypass(&first, detail);
    let second = req.send().await;
    assert_bypass(&second, detail);
    assert_eq!(backend.count(), 2, "both requests reached the backend");
    assert!(redis.cache_keys().await.is_empty(), "nothing stored");
    second
}

#[tokio::test]
async fn a_scope_off_route_is_always_forwarded() {
    let orders = Route::new("orders")
        .set("methods", r#"["GET", "POST"]"#)
        .set("path_prefix", r#""/api/v1/order""#)
        .scope("off");
    let (redis, backend, proxy) = setup(ProxyConfig::search().route(orders)).await;
    let req = proxy
        .post("/api/v1/order/confirm")
        .header("x-user-id", "u1")
        .json(&json!({"order_id": 7}));
    assert_always_bypassed(&redis, &backend, req, "scope-off").await;
    assert_eq!(backend.last().path_and_query, "/api/v1/order/confirm");
}

#[tokio::test]
async fn methods_other_than_get_head_post_are_forwarded() {
    let catalog = Route::new("catalog")
        .set("methods", r#"["GET", "POST", "PUT", "DELETE"]"#)
        .set("path", r#""/api/v1/catalog""#);
    let (redis, backend, proxy) = setup(ProxyConfig::new().route(catalog)).await;

    for (i, method) in ["PUT", "DELETE", "PUT"].into_iter().enumerate() {
        let resp = proxy
            .request(method, "/api/v1/catalog")
            .header("x-user-id", "u1")
            .send()
            .await;
        assert_eq!(resp.x_cache(), Some("BYPASS"), "{method}: {resp:?}");
        assert_eq!(resp.cache_status().raw, "leafcache; fwd=method", "{method}");
        assert_eq!(backend.count(), i + 1, "{method} reached the backend");
        assert_eq!(backend.last().method, method);
    }
    assert!(redis.cache_keys().await.is_empty());
}

#[tokio::test]
async fn a_query_matching_bypass_query_is_forwarded() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let req = proxy.search(Some("u1"), json!({"query": "Add milk to my cart"}));
    assert_always_bypassed(&redis, &backend, req, "bypass-query").await;
}

#[tokio::test]
async fn bypass_query_is_matched_against_a_query_string_query_too() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let req = proxy
        .get("/api/v1/search?q=checkout%20now")
        .header("x-user-id", "u1");
    assert_always_bypassed(&redis, &backend, req, "bypass-query").await;
}

#[tokio::test]
async fn client_no_store_neither_reads_nor_writes_the_cache() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let stored = milk.send().await;
    assert_miss_stored(&stored);

    let no_store = milk
        .clone()
        .header("cache-control", "no-store")
        .send()
        .await;
    assert_bypass(&no_store, "no-store");
    assert_eq!(no_store.backend_n(), 2, "the stored copy was not used");

    let after = milk.send().await;
    assert_hit(&after);
    assert_eq!(
        after.body, stored.body,
        "the no-store answer replaced nothing"
    );

    // On a key with no entry, a no-store request leaves none behind.
    let bread = proxy.search(Some("u1"), json!({"query": "bread"}));
    assert_bypass(
        &bread
            .clone()
            .header("cache-control", "no-store")
            .send()
            .await,
        "no-store",
    );
    assert_miss_stored(&bread.send().await);
    assert_eq!(backend.count(), 4);
}

#[tokio::test]
async fn client_no_cache_fetches_fresh_then_stores() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let stored = milk.send().await;
    assert_miss_stored(&stored);

    let refreshed = milk
        .clone()
        .header("cache-control", "no-cache")
        .send()
        .await;
    assert_eq!(refreshed.x_cache(), Some("MISS"), "{refreshed:?}");
    assert_eq!(
        refreshed.cache_status().raw,
        format!("leafcache; fwd=request; stored; key=\"{}\"", stored.key())
    );
    assert_eq!(refreshed.backend_n(), 2, "fetched fresh");

    let after = milk.send().await;
    assert_hit(&after);
    assert_eq!(
        after.body, refreshed.body,
        "the fresh answer replaced the old one"
    );
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn a_search_without_a_usable_query_is_forwarded_uncached() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let missing = proxy.search(Some("u1"), json!({"category": "dairy"}));
    assert_always_bypassed(&redis, &backend, missing, "no-query").await;

    let not_a_string = proxy.search(Some("u1"), json!({"query": 42})).send().await;
    assert_bypass(&not_a_string, "no-query");
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn a_request_body_above_max_request_body_is_forwarded_unchanged() {
    let (redis, backend, proxy) =
        setup(ProxyConfig::search().top(r#"max_request_body = "1KiB""#)).await;
    let body = json!({"query": "milk", "padding": "p".repeat(4096)}).to_string();
    let req = proxy
        .post("/api/v1/search")
        .header("x-user-id", "u1")
        .header("content-type", "application/json")
        .body(body.clone());

    assert_always_bypassed(&redis, &backend, req, "body-too-large").await;
    assert_eq!(
        backend.last().body,
        body.as_bytes(),
        "body forwarded byte for byte"
    );
}

#[tokio::test]
async fn a_non_json_body_on_a_json_route_is_forwarded_unchanged() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let body: &[u8] = b"query=milk&\xff\xfe not json";
    let req = proxy
        .post("/api/v1/search")
        .header("x-user-id", "u1")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);

    assert_always_bypassed(&redis, &backend, req, "body-not-json").await;
    assert_eq!(backend.last().body, body, "body forwarded byte for byte");
}

#[tokio::test]
async fn a_user_id_header_with_two_different_values_is_ambiguous() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let req = proxy
        .search(Some("u-a"), json!({"query": "milk"}))
        .header("x-user-id", "u-b");
    assert_always_bypassed(&redis, &backend, req, "ambiguous-identity").await;
}

#[tokio::test]
async fn unmatched_paths_are_passed_through_without_cache_headers() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let req = proxy.get("/static/app.js?v=3").header("x-user-id", "u1");

    for n in 1..=2 {
        let resp = req.send().await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.x_cache(), None, "{resp:?}");
        assert_eq!(resp.header("cache-status"), None, "{resp:?}");
        assert_eq!(resp.backend_n(), n);
    }
    assert_eq!(backend.last().path_and_query, "/static/app.js?v=3");
    assert!(redis.cache_keys().await.is_empty());
}
