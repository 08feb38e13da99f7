//! What shares a cache entry and what does not: hits from L1 and Redis,
//! normalization, and every input that reaches the backend (docs/contract.md section 3, step 5).
//! Who may see an entry is in scopes.rs.

mod common;

use common::*;
use serde_json::json;

/// `a` is stored and then hit; `b` must miss, reach the backend and get its own entry.
async fn assert_separate_entries(backend: &Backend, a: Req, b: Req) {
    let first = a.send().await;
    assert_miss_stored(&first);
    assert_hit(&a.send().await);
    let before = backend.count();

    let other = b.send().await;
    assert_miss_stored(&other);
    assert_eq!(
        backend.count(),
        before + 1,
        "the variant reached the backend"
    );
    assert_ne!(other.key(), first.key(), "the variant has its own key");
    assert_ne!(
        other.body, first.body,
        "the variant got the backend's fresh answer"
    );

    let again = b.send().await;
    assert_hit(&again);
    assert_eq!(
        again.body, other.body,
        "the variant's own entry is replayed"
    );
}

/// Sends every request in `same` after `first` and checks each is a hit on one entry.
async fn assert_shared_entry(backend: &Backend, first: Req, same: Vec<Req>) {
    let stored = first.send().await;
    assert_miss_stored(&stored);
    for req in same {
        let resp = req.send().await;
        assert_hit(&resp);
        assert_eq!(resp.key(), stored.key(), "same entry, same key");
        assert_eq!(resp.body, stored.body, "replayed byte for byte");
    }
    assert_eq!(
        backend.count(),
        1,
        "only the first request reached the backend"
    );
}

#[tokio::test]
async fn repeated_search_is_a_hit_from_l1() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let search = proxy.search(Some("u1"), json!({"query": "organic milk"}));

    let first = search.send().await;
    assert_miss_stored(&first);
    let second = search.send().await;

    assert_hit(&second);
    assert_eq!(backend.count(), 1);
    assert_eq!(second.status, first.status);
    assert_eq!(second.body, first.body, "body replayed byte for byte");
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.key(), first.key());
    assert!(
        second.cache_status().ttl() <= 3600,
        "ttl within the 1h default"
    );
}

#[tokio::test]
async fn with_l1_disabled_a_repeat_is_a_hit_from_redis() {
    let (redis, backend, proxy) = setup(ProxyConfig::search().without_l1()).await;
    let search = proxy.search(Some("u1"), json!({"query": "organic milk"}));

    let first = search.send().await;
    assert_miss_stored(&first);
    let key = user_key("u1", &first.key());
    redis.wait_for_key(&key).await;

    let second = search.send().await;
    assert_hit(&second);
    assert_eq!(second.body, first.body);
    assert_eq!(backend.count(), 1);

    // Without L1 the entry lives only in Redis: removing it there makes a miss.
    redis.del(&key).await;
    let third = search.send().await;
    assert_miss_stored(&third);
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn redis_keys_carry_the_key_prefix() {
    let config = ProxyConfig::search().redis(r#"key_prefix = "lc:""#);
    let (redis, _backend, proxy) = setup(config).await;

    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    assert_miss_stored(&resp);

    redis
        .wait_for_key(&format!("lc:user:u1:cache:{}", resp.key()))
        .await;
    assert!(!redis.exists(&user_key("u1", &resp.key())).await);
}

#[tokio::test]
async fn get_search_with_query_string_is_cached() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let first = proxy.get("/api/v1/search?q=Milk").header("x-user-id", "u1");
    let same = proxy.get("/api/v1/search?q=milk").header("x-user-id", "u1");
    assert_shared_entry(&backend, first, vec![same]).await;
}

#[tokio::test]
async fn case_spacing_and_unicode_width_of_the_query_share_an_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let q = |text: &str| proxy.search(Some("u1"), json!({"query": text}));
    assert_shared_entry(
        &backend,
        q("Organic Milk"),
        vec![
            q("organic milk"),
            q("  ORGANIC   milk  "),
            q("organic\tmilk"),
            // NFKC folds full-width letters into ASCII.
            q("ｏｒｇａｎｉｃ ｍｉｌｋ"),
        ],
    )
    .await;
}

#[tokio::test]
async fn json_key_order_shares_an_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let raw = |body: &'static str| {
        proxy
            .post("/api/v1/search")
            .header("x-user-id", "u1")
            .header("content-type", "application/json")
            .body(body)
    };
    assert_shared_entry(
        &backend,
        raw(r#"{"query":"milk","filters":{"brand":"acme","size":"1l"},"page":1}"#),
        vec![
            raw(r#"{"page":1,"filters":{"size":"1l","brand":"acme"},"query":"milk"}"#),
            raw(r#"{ "filters" : { "brand" : "acme", "size" : "1l" }, "query" : "milk", "page" : 1 }"#),
        ],
    )
    .await;
}

#[tokio::test]
async fn session_and_request_ids_share_an_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let base = proxy.search(
        Some("u1"),
        json!({"query": "milk", "session_id": "s-1", "request_id": "r-1"}),
    );
    assert_shared_entry(
        &backend,
        base,
        vec![
            proxy.search(
                Some("u1"),
                json!({"query": "milk", "session_id": "s-2", "request_id": "r-2"}),
            ),
            proxy.search(Some("u1"), json!({"query": "milk"})),
            proxy
                .search(Some("u1"), json!({"query": "milk"}))
                .header("x-session-id", "s-3"),
        ],
    )
    .await;
}

#[tokio::test]
async fn header_order_shares_an_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let body = json!({"query": "milk"}).to_string();
    let in_order = proxy
        .post("/api/v1/search")
        .header("x-user-id", "u1")
        .header("accept-encoding", "gzip")
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(body.clone());
    let reversed = proxy
        .post("/api/v1/search")
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip")
        .header("x-user-id", "u1")
        .body(body);
    assert_shared_entry(&backend, in_order, vec![reversed]).await;
}

#[tokio::test]
async fn another_json_field_value_gets_its_own_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    assert_separate_entries(
        &backend,
        proxy.search(
            Some("u1"),
            json!({"query": "milk", "filters": {"brand": "acme"}}),
        ),
        proxy.search(
            Some("u1"),
            json!({"query": "milk", "filters": {"brand": "zeta"}}),
        ),
    )
    .await;
}

#[tokio::test]
async fn an_extra_json_field_gets_its_own_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    assert_separate_entries(
        &backend,
        proxy.search(Some("u1"), json!({"query": "milk"})),
        proxy.search(Some("u1"), json!({"query": "milk", "page": 2})),
    )
    .await;
}

#[tokio::test]
async fn another_query_string_param_gets_its_own_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    assert_separate_entries(
        &backend,
        proxy.get("/api/v1/search?q=milk").header("x-user-id", "u1"),
        proxy
            .get("/api/v1/search?q=milk&page=2")
            .header("x-user-id", "u1"),
    )
    .await;
}

#[tokio::test]
async fn another_path_gets_its_own_entry() {
    // `path` and `path_prefix` are exclusive, so this route is built from scratch.
    let route = Route::new("search")
        .set("methods", r#"["GET", "POST"]"#)
        .set("path_prefix", r#""/api/v1/search/""#)
        .set("query", r#"["json:/query", "query:q"]"#);
    let (_redis, backend, proxy) = setup(ProxyConfig::new().route(route)).await;
    let at = |path: &str| {
        proxy
            .post(path)
            .header("x-user-id", "u1")
            .json(&json!({"query": "milk"}))
    };
    assert_separate_entries(
        &backend,
        at("/api/v1/search/fresh"),
        at("/api/v1/search/frozen"),
    )
    .await;
}

#[tokio::test]
async fn another_method_gets_its_own_entry() {
    // A plain caching route (no query rule): keyed on method, path, query, body.
    let route = Route::new("catalog")
        .set("methods", r#"["GET", "POST"]"#)
        .set("path", r#""/api/v1/catalog""#);
    let (_redis, backend, proxy) = setup(ProxyConfig::new().route(route)).await;
    assert_separate_entries(
        &backend,
        proxy.get("/api/v1/catalog").header("x-user-id", "u1"),
        proxy.post("/api/v1/catalog").header("x-user-id", "u1"),
    )
    .await;
}

#[tokio::test]
async fn another_vary_header_value_gets_its_own_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let with = |encoding: &str| {
        proxy
            .search(Some("u1"), json!({"query": "milk"}))
            .header("accept-encoding", encoding)
    };
    assert_separate_entries(&backend, with("gzip"), with("br")).await;
}

#[tokio::test]
async fn query_string_param_order_shares_an_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let at = |path: &str| proxy.get(path).header("x-user-id", "u1");
    assert_shared_entry(
        &backend,
        at("/api/v1/search?q=milk&page=2&sort=price"),
        vec![at("/api/v1/search?sort=price&page=2&q=milk")],
    )
    .await;
}

#[tokio::test]
async fn a_plain_route_keys_on_the_body_bytes_or_its_canonical_json() {
    // No query rule: the route caches plainly, keyed on path, query and body.
    let route = Route::new("prices")
        .set("methods", r#"["POST"]"#)
        .set("path", r#""/api/v1/prices""#);
    let (_redis, backend, proxy) = setup(ProxyConfig::new().route(route)).await;
    let post = |body: &'static str| {
        proxy
            .post("/api/v1/prices")
            .header("x-user-id", "u1")
            .body(body)
    };

    assert_shared_entry(
        &backend,
        post(r#"{"skus":["a","b"],"store":7}"#),
        vec![post(r#"{"store":7,"skus":["a","b"]}"#)],
    )
    .await;
    assert_separate_entries(&backend, post("sku=a&store=7"), post("sku=b&store=7")).await;
}

#[tokio::test]
async fn composed_decomposed_and_uppercase_accents_share_an_entry() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let q = |text: &str| proxy.search(Some("u1"), json!({"query": text}));
    assert_shared_entry(
        &backend,
        q("Crème Brûlée"),
        vec![
            // e + U+0300, u + U+0302: NFKC composes them.
            q("Cre\u{300}me Bru\u{302}le\u{301}e"),
            q("CRÈME  BRÛLÉE"),
            // A no-break space is whitespace after NFKC.
            q("crème\u{a0}brûlée"),
        ],
    )
    .await;
}
