//! What may be stored, and for how long (docs/contract.md section 3, step 8).

mod common;

use common::*;
use serde_json::json;

/// A proxy whose backend answers every request with `reply(request)`.
async fn setup_with(
    config: ProxyConfig,
    reply: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) -> (Redis, Backend, Proxy) {
    Harness::with_backend(&config, Backend::start(reply).await)
        .await
        .parts()
}

fn milk(proxy: &Proxy) -> Req {
    proxy.search(Some("u1"), json!({"query": "milk"}))
}

/// The answer is passed on both times, and no entry is made.
async fn assert_never_stored(redis: &Redis, backend: &Backend, req: Req) -> Resp {
    let first = req.send().await;
    assert_miss_not_stored(&first);
    let second = req.send().await;
    assert_miss_not_stored(&second);
    assert_eq!(backend.count(), 2, "both requests reached the backend");
    assert_eq!(second.json()["n"], 2, "the second answer is fresh");
    assert!(
        redis.cache_keys().await.is_empty(),
        "no cache entry in redis: {:?}",
        redis.cache_keys().await
    );
    second
}

/// The answer is stored and the repeat is a hit.
async fn assert_stored(backend: &Backend, req: Req) -> (Resp, Resp) {
    let first = req.send().await;
    assert_eq!(first.x_cache(), Some("MISS"), "{first:?}");
    assert!(first.cache_status().has("stored"), "{first:?}");
    let second = req.send().await;
    assert_hit(&second);
    assert_eq!(second.status, first.status);
    assert_eq!(second.body, first.body);
    assert_eq!(backend.count(), 1);
    (first, second)
}

/// The entry's Redis TTL is `expected` seconds (freshness + stale_if_error),
/// allowing for the seconds the test itself took.
async fn assert_redis_ttl(redis: &Redis, key: &str, expected: i64) {
    redis.wait_for_key(key).await;
    let ttl = redis.ttl(key).await;
    assert!(
        (expected - 10..=expected).contains(&ttl),
        "TTL of {key} is {ttl}, expected about {expected}"
    );
}

#[tokio::test]
async fn status_outside_cacheable_status_is_not_stored() {
    let (redis, backend, proxy) =
        setup_with(ProxyConfig::search(), |req| Reply::echo(req).status(404)).await;
    let resp = assert_never_stored(&redis, &backend, milk(&proxy)).await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn status_listed_in_cacheable_status_is_stored() {
    let config = ProxyConfig::search().cache("cacheable_status = [200, 404]");
    let (_redis, backend, proxy) = setup_with(config, |req| Reply::echo(req).status(404)).await;
    let (_, hit) = assert_stored(&backend, milk(&proxy)).await;
    assert_eq!(hit.status, 404);
}

#[tokio::test]
async fn no_store_answer_is_not_stored() {
    let (redis, backend, proxy) = setup_with(ProxyConfig::search(), |req| {
        Reply::echo(req).header("cache-control", "no-store")
    })
    .await;
    assert_never_stored(&redis, &backend, milk(&proxy)).await;
}

#[tokio::test]
async fn private_answer_is_not_stored_in_global_scope() {
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let (redis, backend, proxy) = setup_with(config, |req| {
        Reply::echo(req).header("cache-control", "private, max-age=60")
    })
    .await;
    assert_never_stored(&redis, &backend, milk(&proxy)).await;
}

#[tokio::test]
async fn private_answer_is_stored_in_user_scope() {
    let (redis, backend, proxy) = setup_with(ProxyConfig::search(), |req| {
        Reply::echo(req).header("cache-control", "private")
    })
    .await;
    let (first, hit) = assert_stored(&backend, milk(&proxy)).await;
    assert_eq!(hit.header("cache-control"), Some("private"));
    redis.wait_for_key(&user_key("u1", &first.key())).await;
}

#[tokio::test]
async fn answer_with_set_cookie_is_not_stored() {
    let (redis, backend, proxy) = setup_with(ProxyConfig::search(), |req| {
        Reply::echo(req).header("set-cookie", "sid=abc; Path=/")
    })
    .await;
    let resp = assert_never_stored(&redis, &backend, milk(&proxy)).await;
    assert_eq!(resp.header("set-cookie"), Some("sid=abc; Path=/"));
}

#[tokio::test]
async fn answer_with_vary_star_is_not_stored() {
    let (redis, backend, proxy) = setup_with(ProxyConfig::search(), |req| {
        Reply::echo(req).header("vary", "*")
    })
    .await;
    assert_never_stored(&redis, &backend, milk(&proxy)).await;
}

#[tokio::test]
async fn answer_varying_on_a_header_outside_vary_headers_is_not_stored() {
    let (redis, backend, proxy) = setup_with(ProxyConfig::search(), |req| {
        Reply::echo(req).header("vary", "Accept-Encoding, Accept-Language")
    })
    .await;
    assert_never_stored(&redis, &backend, milk(&proxy)).await;
}

#[tokio::test]
async fn answer_varying_only_on_vary_headers_is_stored() {
    let (_redis, backend, proxy) = setup_with(ProxyConfig::search(), |req| {
        Reply::echo(req).header("vary", "Accept-Encoding")
    })
    .await;
    let (_, hit) = assert_stored(&backend, milk(&proxy)).await;
    assert_eq!(hit.header("vary"), Some("Accept-Encoding"));
}

#[tokio::test]
async fn answer_with_a_cart_intent_is_not_stored() {
    let (redis, backend, proxy) = setup_with(ProxyConfig::search(), |req| {
        Reply::json(json!({"n": req.n, "intent": "add_to_order", "products": []}))
    })
    .await;
    assert_never_stored(&redis, &backend, milk(&proxy)).await;
}

#[tokio::test]
async fn the_routes_intent_pointer_decides_which_field_is_the_intent() {
    let config = ProxyConfig::new().route(Route::search().set("intent", r#""/meta/intent""#));
    let (redis, backend, proxy) = setup_with(config, |req| {
        Reply::json(json!({
            "n": req.n,
            "intent": "product_search",
            "meta": {"intent": "confirm_order"},
        }))
    })
    .await;
    assert_never_stored(&redis, &backend, milk(&proxy)).await;
}

#[tokio::test]
async fn answer_above_max_object_bytes_is_passed_through_and_not_stored() {
    let big = "x".repeat(4096);
    let config = ProxyConfig::search().cache(r#"max_object_bytes = "1KiB""#);
    let (redis, backend, proxy) = setup_with(config, move |req| {
        Reply::json(json!({"n": req.n, "intent": "product_search", "padding": big}))
    })
    .await;
    let resp = assert_never_stored(&redis, &backend, milk(&proxy)).await;
    assert!(
        resp.body.len() > 4096,
        "the whole answer reached the client"
    );
    assert_eq!(
        resp.cache_status().get("detail"),
        None,
        "an oversized answer sets no hit-for-pass: {:?}",
        resp.cache_status().raw
    );
}

#[tokio::test]
async fn server_errors_are_not_stored_and_set_no_hit_for_pass() {
    for status in [500, 503, 429] {
        let (redis, backend, proxy) = setup_with(ProxyConfig::search(), move |req| {
            Reply::echo(req).status(status)
        })
        .await;
        let resp = assert_never_stored(&redis, &backend, milk(&proxy)).await;
        assert_eq!(resp.status, status, "the backend's answer is passed on");
        assert_eq!(
            resp.cache_status().get("detail"),
            None,
            "status {status} sets no hit-for-pass: {:?}",
            resp.cache_status().raw
        );
    }
}

#[tokio::test]
async fn freshness_is_the_route_ttl_and_redis_keeps_the_stale_window_too() {
    let config = ProxyConfig::new()
        .cache(r#"stale_if_error = "10m""#)
        .route(Route::search().set("ttl", r#""30m""#));
    let (redis, backend, proxy) = setup_with(config, Reply::echo).await;
    let (first, hit) = assert_stored(&backend, milk(&proxy)).await;

    let ttl = hit.cache_status().ttl();
    assert!(
        (1790..=1800).contains(&ttl),
        "fresh for about 30m, got {ttl}"
    );
    assert_redis_ttl(&redis, &user_key("u1", &first.key()), 1800 + 600).await;
}

#[tokio::test]
async fn cache_ttl_is_the_default_freshness_of_a_route_without_ttl() {
    let config = ProxyConfig::search()
        .cache(r#"ttl = "20m""#)
        .cache(r#"stale_if_error = "1m""#);
    let (redis, backend, proxy) = setup_with(config, Reply::echo).await;
    let (first, _) = assert_stored(&backend, milk(&proxy)).await;
    assert_redis_ttl(&redis, &user_key("u1", &first.key()), 1200 + 60).await;
}

#[tokio::test]
async fn max_age_shortens_freshness() {
    let config = ProxyConfig::new()
        .cache(r#"stale_if_error = "10m""#)
        .route(Route::search().set("ttl", r#""1h""#));
    let (redis, backend, proxy) = setup_with(config, |req| {
        Reply::echo(req).header("cache-control", "max-age=60")
    })
    .await;
    let (first, hit) = assert_stored(&backend, milk(&proxy)).await;

    assert!(
        hit.cache_status().ttl() <= 60,
        "{:?}",
        hit.cache_status().raw
    );
    assert_redis_ttl(&redis, &user_key("u1", &first.key()), 60 + 600).await;
}

#[tokio::test]
async fn s_maxage_takes_precedence_over_max_age_in_global_scope() {
    let config = ProxyConfig::new()
        .cache(r#"stale_if_error = "10m""#)
        .route(Route::search().scope("global").set("ttl", r#""1h""#));
    let (redis, backend, proxy) = setup_with(config, |req| {
        Reply::echo(req).header("cache-control", "max-age=60, s-maxage=120")
    })
    .await;
    let (first, hit) = assert_stored(&backend, milk(&proxy)).await;

    let ttl = hit.cache_status().ttl();
    assert!((110..=120).contains(&ttl), "fresh for s-maxage, got {ttl}");
    assert_redis_ttl(&redis, &global_key(&first.key()), 120 + 600).await;
}

#[tokio::test]
async fn a_longer_max_age_does_not_extend_the_route_ttl() {
    let config = ProxyConfig::new()
        .cache(r#"stale_if_error = "10m""#)
        .route(Route::search().set("ttl", r#""5m""#));
    let (redis, backend, proxy) = setup_with(config, |req| {
        Reply::echo(req).header("cache-control", "max-age=86400")
    })
    .await;
    let (first, _) = assert_stored(&backend, milk(&proxy)).await;
    assert_redis_ttl(&redis, &user_key("u1", &first.key()), 300 + 600).await;
}

#[tokio::test]
async fn stored_answers_replay_status_headers_and_body() {
    let (_redis, backend, proxy) = setup_with(ProxyConfig::search(), |req| {
        Reply::json(json!({"n": req.n, "intent": "product_search"}))
            .status(200)
            .header("x-backend-version", "7")
            .header("etag", "\"v7\"")
    })
    .await;
    let (first, hit) = assert_stored(&backend, milk(&proxy)).await;
    assert_eq!(hit.header("x-backend-version"), Some("7"));
    assert_eq!(hit.header("etag"), Some("\"v7\""));
    assert_eq!(hit.header("content-type"), first.header("content-type"));
    assert_eq!(hit.body, first.body);
}

#[tokio::test]
async fn an_entry_is_not_served_past_its_freshness_even_from_l1() {
    // l1_ttl is far longer than max-age: the L1 copy must still expire with the entry.
    let config = ProxyConfig::search().cache(r#"l1_ttl = "1h""#);
    let (_redis, backend, proxy) = setup_with(config, |req| {
        Reply::echo(req).header("cache-control", "max-age=1")
    })
    .await;
    let milk = milk(&proxy);
    assert_miss_stored(&milk.send().await);
    assert_hit(&milk.send().await);

    let refreshed = eventually("the 1 s entry to expire", || async {
        let resp = milk.send().await;
        (resp.x_cache() != Some("HIT")).then_some(resp)
    })
    .await;
    assert_eq!(refreshed.x_cache(), Some("MISS"), "{refreshed:?}");
    assert_eq!(refreshed.backend_n(), 2, "fetched fresh from the backend");
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn head_requests_are_cached_on_a_plain_route() {
    // Route defaults: methods GET and HEAD, no query rule, user scope.
    let route = Route::new("catalog").set("path", r#""/api/v1/catalog""#);
    let (_redis, backend, proxy) = setup_with(ProxyConfig::new().route(route), Reply::echo).await;
    let head = proxy
        .request("HEAD", "/api/v1/catalog")
        .header("x-user-id", "u1");

    let first = head.send().await;
    assert_eq!(first.status, 200);
    assert_miss_stored(&first);
    let second = head.send().await;
    assert_hit(&second);
    assert!(second.body.is_empty(), "a HEAD answer has no body");
    assert_eq!(backend.count(), 1);
    // As nginx and Varnish do, a HEAD miss is fetched as GET, so the stored
    // answer serves a later GET too.
    assert_eq!(backend.last().method, "GET");
    let get = proxy
        .get("/api/v1/catalog")
        .header("x-user-id", "u1")
        .send()
        .await;
    assert_hit(&get);
    assert!(!get.body.is_empty(), "the GET gets the stored body");
    assert_eq!(backend.count(), 1);
}
