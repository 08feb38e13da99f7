//! Trust (docs/contract.md sections 3 and 7): what an attacker tries against a cache in
//! front of personalised search. Each test sends the attacker's request
//! first, then a victim's that must not be answered with it: any input that
//! reaches the backend but not the key is a poisoning bug, and any identity
//! that can be read two ways is a cross-user leak.

mod common;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend that answers with everything it saw, so an answer made for the
/// attacker's request shows it.
async fn mirror() -> Backend {
    Backend::start(|req| {
        let headers: serde_json::Map<String, Value> = req
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Reply::json(json!({
            "n": req.n,
            "method": req.method,
            "uri": req.path_and_query,
            "headers": headers,
            "body": String::from_utf8_lossy(&req.body),
            "intent": "product_search",
            "products": [{"product_id": "p1", "supplier": "s1"}],
        }))
    })
    .await
}

/// The victim's answer is its own: not a hit, and nothing of the attacker's.
#[track_caller]
fn assert_own_answer(victim: &Resp, mark: &str) {
    assert_ne!(
        victim.x_cache(),
        Some("HIT"),
        "served the attacker's entry: {victim:?}"
    );
    let body = String::from_utf8_lossy(&victim.body);
    assert!(
        !body.contains(mark),
        "the victim got the attacker's answer: {body}"
    );
}

#[tokio::test]
async fn a_q_param_that_did_not_supply_the_search_text_stays_in_the_key() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let proxy = Proxy::start(&config, &backend, &redis).await;

    let attack = proxy
        .get("/api/v1/search?q=EVIL")
        .json(&json!({"query": "eggs"}))
        .send()
        .await;
    assert_miss_stored(&attack);
    assert!(String::from_utf8_lossy(&attack.body).contains("EVIL"));

    let victim = proxy
        .get("/api/v1/search")
        .json(&json!({"query": "eggs"}))
        .send()
        .await;
    assert_own_answer(&victim, "EVIL");
    assert_miss_stored(&victim);
    // Each is its own entry, and each is served to its own request.
    assert_hit(
        &proxy
            .get("/api/v1/search")
            .json(&json!({"query": "eggs"}))
            .send()
            .await,
    );
    let again = proxy
        .get("/api/v1/search?q=EVIL")
        .json(&json!({"query": "eggs"}))
        .send()
        .await;
    assert_hit(&again);
    assert_eq!(again.key(), attack.key());

    // The parameter that did supply the text still leaves the key: a `q`
    // search shares its entry with the same text in other case and spacing.
    let q = proxy.get("/api/v1/search?q=milk").send().await;
    assert_miss_stored(&q);
    assert_hit(&proxy.get("/api/v1/search?q=%20Milk%20").send().await);
}

#[tokio::test]
async fn a_body_member_named_by_a_query_rule_stays_keyed_when_the_text_came_from_q() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let route = Route::search()
        .scope("global")
        .set("query", r#"["query:q", "json:/query"]"#);
    let proxy = Proxy::start(&ProxyConfig::new().route(route), &backend, &redis).await;

    let attack = proxy
        .post("/api/v1/search?q=eggs")
        .json(&json!({"query": "EVIL"}))
        .send()
        .await;
    assert_miss_stored(&attack);
    let victim = proxy
        .post("/api/v1/search?q=eggs")
        .json(&json!({"query": "eggs"}))
        .send()
        .await;
    assert_own_answer(&victim, "EVIL");
}

#[tokio::test]
async fn user_ids_beyond_64_bits_are_never_read_through_a_float() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config = ProxyConfig::search().identity(r#"user_id = ["json:/user_id"]"#);
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let as_user = |id: &str, query: &str| {
        proxy
            .post("/api/v1/search")
            .header("content-type", "application/json")
            .body(format!(r#"{{"query": "{query}", "user_id": {id}}}"#))
    };

    // 2^64 and 2^64 + 1 were one float, so one user: now ambiguous.
    for id in ["18446744073709551616", "18446744073709551617", "1e3", "1.5"] {
        let resp = as_user(id, "milk").send().await;
        assert_bypass(&resp, "ambiguous-identity");
    }
    assert!(
        redis.cache_keys().await.is_empty(),
        "{:?}",
        redis.cache_keys().await
    );

    // Integers within 64 bits are keyed by their exact text.
    let max = as_user("18446744073709551615", "milk").send().await;
    assert_miss_stored(&max);
    redis
        .wait_for_key(&user_key("18446744073709551615", &max.key()))
        .await;
    let below = as_user("18446744073709551614", "milk").send().await;
    assert_own_answer(&below, "18446744073709551615");
    assert_miss_stored(&below);
    assert_hit(&as_user("18446744073709551615", "milk").send().await);
    let negative = as_user("-9223372036854775808", "milk").send().await;
    assert_miss_stored(&negative);
    redis
        .wait_for_key(&user_key("-9223372036854775808", &negative.key()))
        .await;
}

#[tokio::test]
async fn an_identity_that_is_not_a_string_or_an_integer_bypasses_instead_of_going_global() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config =
        ProxyConfig::search().identity(r#"user_id = ["header:x-user-id", "json:/user_id"]"#);
    let proxy = Proxy::start(&config, &backend, &redis).await;

    for id in [
        json!(true),
        json!(["alice"]),
        json!({"id": "alice"}),
        json!(false),
    ] {
        let attack = proxy
            .search(None, json!({"query": "milk", "user_id": id}))
            .send()
            .await;
        assert_bypass(&attack, "ambiguous-identity");
    }
    assert!(redis.cache_keys().await.is_empty());
    let anonymous = proxy.search(None, json!({"query": "milk"})).send().await;
    assert_own_answer(&anonymous, "alice");
    assert_miss_stored(&anonymous);

    // Sources that disagree about who is asking: neither is believed.
    let two_ways = proxy
        .search(Some("alice"), json!({"query": "milk", "user_id": "bob"}))
        .send()
        .await;
    assert_bypass(&two_ways, "ambiguous-identity");
    // Sources that agree are one user.
    let agree = proxy
        .search(Some("alice"), json!({"query": "milk", "user_id": "alice"}))
        .send()
        .await;
    assert_miss_stored(&agree);
    redis.wait_for_key(&user_key("alice", &agree.key())).await;
}

#[tokio::test]
async fn credentials_without_a_user_id_are_never_shared_unless_the_route_opts_in() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;

    for (name, value) in [
        ("authorization", "Bearer alice-token"),
        ("cookie", "session=alice"),
    ] {
        let attack = proxy
            .search(None, json!({"query": "milk"}))
            .header(name, value)
            .send()
            .await;
        assert_bypass(&attack, "credentialed");
        assert!(attack.header("x-search-id").is_some(), "still logged");
    }
    assert!(redis.cache_keys().await.is_empty());
    let anonymous = proxy.search(None, json!({"query": "milk"})).send().await;
    assert_own_answer(&anonymous, "alice");
    assert_miss_stored(&anonymous);
    // With a user id, the credentials belong to that user's own scope.
    let user = proxy
        .search(Some("alice"), json!({"query": "milk"}))
        .header("cookie", "session=alice")
        .send()
        .await;
    assert_miss_stored(&user);
    redis.wait_for_key(&user_key("alice", &user.key())).await;

    // share_credentialed = true: the route says the backend ignores them.
    let redis = Redis::start().await;
    let route = Route::search().set("share_credentialed", "true");
    let proxy = Proxy::start(&ProxyConfig::new().route(route), &backend, &redis).await;
    let shared = proxy
        .search(None, json!({"query": "bread"}))
        .header("cookie", "consent=yes")
        .send()
        .await;
    assert_miss_stored(&shared);
    assert_hit(&proxy.search(None, json!({"query": "bread"})).send().await);
}

#[tokio::test]
async fn the_client_host_is_keyed_as_the_backend_gets_it() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let proxy = Proxy::start(&config, &backend, &redis).await;

    let attack = proxy
        .search(None, json!({"query": "milk"}))
        .header("host", "evil.example")
        .send()
        .await;
    assert_miss_stored(&attack);
    assert_eq!(
        backend.last().header("x-forwarded-host"),
        Some("evil.example")
    );
    let victim = proxy
        .search(None, json!({"query": "milk"}))
        .header("host", "shop.example")
        .send()
        .await;
    assert_own_answer(&victim, "evil.example");
    assert_miss_stored(&victim);
    let same_host = proxy
        .search(None, json!({"query": "milk"}))
        .header("host", "shop.example")
        .send()
        .await;
    assert_hit(&same_host);
}

const FORWARDING: [(&str, &str); 10] = [
    ("forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
    ("x-forwarded-port", "evilport"),
    ("x-forwarded-prefix", "/evil"),
    ("x-forwarded-scheme", "gopher"),
    ("x-forwarded-server", "evil.example"),
    ("x-original-url", "/api/v1/order/5"),
    ("x-rewrite-url", "/api/v1/order/5"),
    ("x-http-method-override", "DELETE"),
    ("x-real-ip", "6.6.6.6"),
    ("x-forwarded-host", "evil.example"),
];

#[tokio::test]
async fn untrusted_forwarding_and_rewriting_headers_never_reach_the_backend() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let proxy = Proxy::start(&config, &backend, &redis).await;

    let mut attack = proxy.search(None, json!({"query": "milk"}));
    for (name, value) in FORWARDING {
        attack = attack.header(name, value);
    }
    let attack = attack.send().await;
    assert_miss_stored(&attack);
    let seen = backend.last();
    for (name, _) in FORWARDING {
        if name == "x-forwarded-host" {
            assert_eq!(seen.header(name), Some(proxy.addr.to_string().as_str()));
        } else {
            assert_eq!(seen.header(name), None, "{name} reached the backend");
        }
    }
    // Nothing of them reached the backend, so nothing splits the entry.
    assert_hit(&proxy.search(None, json!({"query": "milk"})).send().await);
}

#[tokio::test]
async fn trusted_forwarding_headers_are_passed_on_and_keyed() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config = ProxyConfig::new()
        .route(Route::search().scope("global"))
        .top("trust_forwarded = true");
    let proxy = Proxy::start(&config, &backend, &redis).await;

    let victim = proxy.search(None, json!({"query": "milk"})).send().await;
    assert_miss_stored(&victim);
    for (name, value) in FORWARDING {
        let attack = proxy
            .search(None, json!({"query": "milk"}))
            .header(name, value)
            .send()
            .await;
        assert_miss_stored(&attack);
        assert_eq!(backend.last().header(name), Some(value), "{name} passed on");
        assert_ne!(victim.key(), attack.key(), "{name} is not keyed");
        let again = proxy.search(None, json!({"query": "milk"})).send().await;
        assert_hit(&again);
        assert_eq!(again.backend_n(), victim.backend_n(), "{name}");
    }
}

#[tokio::test]
async fn a_body_read_two_ways_or_sent_as_another_type_is_not_shared() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let proxy = Proxy::start(&config, &backend, &redis).await;

    // A first-wins parser reads "EVIL"; serde_json would read "eggs".
    let dup = proxy
        .post("/api/v1/search")
        .header("content-type", "application/json")
        .body(r#"{"query": "EVIL", "query": "eggs"}"#)
        .send()
        .await;
    assert_bypass(&dup, "ambiguous-body");

    // The same bytes as another type are read otherwise by the backend.
    let as_text = proxy
        .post("/api/v1/search")
        .header("content-type", "text/plain")
        .body(r#"{"query": "eggs"}"#)
        .send()
        .await;
    assert_miss_stored(&as_text);
    let victim = proxy.search(None, json!({"query": "eggs"})).send().await;
    assert_own_answer(&victim, "text/plain");
    // So are they under another encoding.
    let encoded = proxy
        .search(None, json!({"query": "bread"}))
        .header("content-encoding", "x-evil")
        .send()
        .await;
    assert_miss_stored(&encoded);
    let plain_bread = proxy.search(None, json!({"query": "bread"})).send().await;
    assert_own_answer(&plain_bread, "x-evil");

    // Numbers are keyed by their exact text.
    let body = |min: &str| format!(r#"{{"query": "eggs", "min_price": {min}}}"#);
    let precise = proxy
        .post("/api/v1/search")
        .header("content-type", "application/json")
        .body(body("0.10000000000000000001"))
        .send()
        .await;
    assert_miss_stored(&precise);
    let plain = proxy
        .post("/api/v1/search")
        .header("content-type", "application/json")
        .body(body("0.1"))
        .send()
        .await;
    assert_own_answer(&plain, "0.10000000000000000001");
}

#[tokio::test]
async fn anonymous_callers_with_different_user_uuids_never_share_an_entry() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;

    let a = proxy
        .search(None, json!({"query": "milk", "user_uuid": "device-a"}))
        .send()
        .await;
    assert_miss_stored(&a);
    let b = proxy
        .search(None, json!({"query": "milk", "user_uuid": "device-b"}))
        .send()
        .await;
    assert_own_answer(&b, "device-a");
    // With a user id, the uuid is that user's, and leaves the key.
    let alice_a = proxy
        .search(
            Some("alice"),
            json!({"query": "milk", "user_uuid": "device-a"}),
        )
        .send()
        .await;
    assert_miss_stored(&alice_a);
    let alice_b = proxy
        .search(
            Some("alice"),
            json!({"query": "milk", "user_uuid": "device-b"}),
        )
        .send()
        .await;
    assert_hit(&alice_b);
}

/// One HTTP/1.1 exchange on a raw connection, for request targets a client
/// library would refuse or tidy (`//path`, `..`). Returns the status and the
/// head.
async fn raw(proxy: &Proxy, method: &str, target: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: shop.example\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, head)
}

#[tokio::test]
async fn order_paths_in_any_spelling_are_never_cached_on_another_route() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config = ProxyConfig::search()
        .route(
            Route::new("orders")
                .set("path_prefix", r#""/api/v1/order""#)
                .scope("off"),
        )
        .route(
            Route::new("everything")
                .set("path_prefix", r#""/""#)
                .scope("global"),
        );
    let proxy = Proxy::start(&config, &backend, &redis).await;

    for target in [
        "/api/v1/order/5",
        "//api/v1/order/5",
        "/api/v1/%6Frder",
        "/api/v1/%6frder/5",
        "/api/v1/./order",
        "/api/v1/x/../order",
        "/API/V1/ORDER/5",
        "/api/v1/%256Frder",
        "/api/v1/order;jsessionid=1",
        "/api/v1/ord%65r",
    ] {
        for round in 0..2 {
            let (status, head) = raw(&proxy, "GET", target).await;
            assert_eq!(status, 200, "{target}: {head}");
            assert!(
                head.contains("x-cache: bypass") && head.contains("detail=scope-off"),
                "{target} (round {round}) was not held to the orders route: {head}"
            );
        }
    }
    assert!(
        redis.cache_keys().await.is_empty(),
        "{:?}",
        redis.cache_keys().await
    );
    // The catch-all still caches what is its own.
    let (_, first) = raw(&proxy, "GET", "/catalog/1").await;
    assert!(first.contains("x-cache: miss"), "{first}");
    let (_, second) = raw(&proxy, "GET", "/catalog/1").await;
    assert!(second.contains("x-cache: hit"), "{second}");
}

#[tokio::test]
async fn a_path_that_meets_a_route_only_once_normalized_is_served_but_never_cached() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let proxy = Proxy::start(&config, &backend, &redis).await;

    for target in [
        "//api/v1/search?q=milk",
        "/api/v1/./search?q=milk",
        "/api/v1/%73earch?q=milk",
    ] {
        let (status, head) = raw(&proxy, "GET", target).await;
        assert_eq!(status, 200, "{target}: {head}");
        assert!(
            head.contains("detail=path-not-canonical"),
            "{target}: {head}"
        );
    }
    assert!(redis.cache_keys().await.is_empty());
    let literal = proxy.get("/api/v1/search?q=milk").send().await;
    assert_miss_stored(&literal);
}

#[tokio::test]
async fn every_method_on_a_scope_off_route_is_marked_bypass() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let config = ProxyConfig::search().route(
        Route::new("orders")
            .set("path_prefix", r#""/api/v1/order""#)
            .scope("off")
            .set("log", "false"),
    );
    let proxy = Proxy::start(&config, &backend, &redis).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "GET"] {
        let resp = proxy
            .request(method, "/api/v1/order")
            .json(&json!({"product_id": "p1"}))
            .send()
            .await;
        assert_bypass(&resp, "scope-off");
    }
}

#[tokio::test]
async fn bypass_query_patterns_see_the_normalized_query() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    for query in ["ＣＡＲＴ items", "cart items", "Add  Milk", "ａｄｄ milk"] {
        let resp = proxy
            .search(Some("u"), json!({"query": query}))
            .send()
            .await;
        assert_bypass(&resp, "bypass-query");
    }
    assert!(redis.cache_keys().await.is_empty());
}

#[tokio::test]
async fn user_ids_that_are_not_utf8_are_never_merged_into_one() {
    let redis = Redis::start().await;
    let backend = mirror().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    // Both decode to U+FFFD; the backend tells them apart.
    for id in ["%FF", "%FE"] {
        let resp = proxy
            .get(&format!("/api/v1/search?q=milk&user_id={id}"))
            .send()
            .await;
        assert_bypass(&resp, "ambiguous-identity");
    }
    assert!(redis.cache_keys().await.is_empty());
}

#[tokio::test]
async fn a_partial_answer_to_one_clients_range_is_never_stored() {
    let redis = Redis::start().await;
    let backend = Backend::start(|req| match req.header("range") {
        Some(_) => Reply::echo(req)
            .status(206)
            .header("content-range", "bytes 0-9/100"),
        None => Reply::echo(req),
    })
    .await;
    let route = Route::search()
        .scope("global")
        .set("query", r#"["query:q"]"#);
    let config = ProxyConfig::new()
        .route(route)
        .cache("cacheable_status = [200, 206]");
    let proxy = Proxy::start(&config, &backend, &redis).await;

    let partial = proxy
        .get("/api/v1/search?q=milk")
        .header("range", "bytes=0-9")
        .send()
        .await;
    assert_eq!(partial.status, 206);
    assert_miss_not_stored(&partial);
    let whole = proxy.get("/api/v1/search?q=milk").send().await;
    assert_eq!(whole.status, 200, "{whole:?}");
    assert_miss_stored(&whole);
}

/// Sends `raw` on a new connection and reads the answer's status line.
async fn raw_status(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    conn.write_all(raw).await.expect("send the request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !got.windows(2).any(|w| w == b"\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer within WAIT");
    let text = String::from_utf8_lossy(&got);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_malformed_chunked_body_answers_400_and_never_reaches_the_backend() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let config = ProxyConfig::search().route(
        Route::new("orders")
            .set("path_prefix", r#""/api/v1/order""#)
            .scope("off"),
    );
    let proxy = Proxy::start_process(&config, &backend, &redis).await;
    // Unmatched, a `scope = "off"` route, and a cached route.
    for path in ["/elsewhere", "/api/v1/order", "/api/v1/search"] {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nhost: shop.example\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\n\r\nzz\r\n{{\"query\": \"milk\"}}\r\n0\r\n\r\n"
        );
        let status = raw_status(proxy.addr, raw.as_bytes()).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{path}: {status}");
    }
    assert_eq!(backend.count(), 0, "{:?}", backend.requests());
    // A well-formed chunked body still goes through.
    let good = "POST /elsewhere HTTP/1.1\r\nhost: shop.example\r\ntransfer-encoding: chunked\r\n\r\n\
                5\r\nhello\r\n0\r\n\r\n";
    let status = raw_status(proxy.addr, good.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(&backend.last().body[..], b"hello");
    // Past max_request_body the body streams: a bad chunk there is still
    // the client's failure, 400, not the backend's 502.
    let big = "a".repeat(70 * 1024);
    let late = format!(
        "POST /elsewhere HTTP/1.1\r\nhost: shop.example\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{big}\r\nzz\r\nmore\r\n0\r\n\r\n",
        big.len()
    );
    let status = raw_status(proxy.addr, late.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
}

#[tokio::test]
async fn an_admin_token_written_with_a_trailing_newline_still_lets_its_admin_in() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let config = ProxyConfig::search().top(r#"admin_token = "s3cret\n""#);
    let proxy = Proxy::start_process(&config, &backend, &redis).await;
    let stats =
        |auth: &str| Req::new(proxy.admin, "GET", "/v1/stats").header("authorization", auth);
    let ok = stats("Bearer s3cret").send().await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(stats("Bearer s3cret\t").send().await.status, 200);
    assert_eq!(stats("Bearer other").send().await.status, 401);
}
