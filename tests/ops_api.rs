//! The admin `/v1` API against a real proxy, Redis and backend (docs/contract.md
//! sections 5 and 6): feedback, manual logging, history, stats, export,
//! purge across proxies, and the bearer token.

mod common;

use std::time::Duration;

use common::ops::*;
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-admin-token";

/// A backend whose answer to the query "nothing" has no results.
async fn search_backend() -> Backend {
    Backend::start(|req| {
        let query = req.json()["query"].as_str().unwrap_or_default().to_owned();
        if query == "nothing" {
            Reply::json(json!({"intent": "product_search", "confidence": 0.5, "products": []}))
        } else {
            Reply::echo(req)
        }
    })
    .await
}

#[tokio::test]
async fn feedback_counts_on_the_search_and_on_the_days_product_and_supplier_keys() {
    let (redis, _backend, proxy, id) = one_logged_search().await;

    let click = json!({"search_id": id, "event": "click", "product_id": "p1", "position": 1});
    let r = admin(&proxy, "POST", "/v1/feedback")
        .json(&click)
        .send()
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let order = json!({"search_id": id, "event": "add_to_order", "product_id": "p1"});
    assert_eq!(
        admin(&proxy, "POST", "/v1/feedback")
            .json(&order)
            .send()
            .await
            .status,
        202
    );

    let record = format!("search:{id}");
    assert_eq!(hget(&redis, &record, "clicks").await.as_deref(), Some("1"));
    assert_eq!(hget(&redis, &record, "orders").await.as_deref(), Some("1"));
    assert_eq!(hget(&redis, &record, "purchases").await, None);
    let feedback = lrange(&redis, &format!("search:{id}:feedback")).await;
    assert_eq!(feedback.len(), 2, "{feedback:?}");
    let first: Value = serde_json::from_str(&feedback[0]).unwrap();
    assert_eq!(first["event"], "click", "oldest first");
    assert_eq!(first["product_id"], "p1");
    assert_eq!(first["position"], 1);
    let second: Value = serde_json::from_str(&feedback[1]).unwrap();
    assert_eq!(
        second["position"], 1,
        "no position sent: the product's impression gives it"
    );
    let date = &first["timestamp"].as_str().unwrap()[..10];
    assert_eq!(
        zscore(&redis, &format!("products:clicked:{date}"), "p1").await,
        Some(1.0)
    );
    assert_eq!(
        zscore(&redis, &format!("products:ordered:{date}"), "p1").await,
        Some(1.0)
    );
    assert_eq!(
        zscore(&redis, &format!("supplier:s1:clicks:{date}"), "p1").await,
        Some(1.0),
        "the search knows p1 comes from s1"
    );
    for key in [
        format!("search:{id}:feedback"),
        format!("products:clicked:{date}"),
        format!("supplier:s1:clicks:{date}"),
    ] {
        assert!(redis.ttl(&key).await > 0, "{key} expires");
    }
}

#[tokio::test]
async fn feedback_on_an_unknown_search_is_404_and_a_bad_field_is_400_naming_it() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let unknown = json!({"search_id": "0190b7e2-0000-7000-8000-000000000000", "event": "click", "product_id": "p1"});
    let r = admin(&proxy, "POST", "/v1/feedback")
        .json(&unknown)
        .send()
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"], "not found");

    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    let id = logged_search(&redis, &resp).await;
    for (body, field) in [
        (json!({"event": "click", "product_id": "p1"}), "search_id"),
        (json!({"search_id": id, "product_id": "p1"}), "event"),
        (
            json!({"search_id": id, "event": "like", "product_id": "p1"}),
            "event",
        ),
        (json!({"search_id": id, "event": "click"}), "product_id"),
        (
            json!({"search_id": id, "event": "click", "product_id": ["p1"]}),
            "product_id",
        ),
        (
            json!({"search_id": id, "event": "click", "product_id": "p1", "position": "2"}),
            "position",
        ),
    ] {
        let r = admin(&proxy, "POST", "/v1/feedback")
            .json(&body)
            .send()
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(r.json()["field"], field, "{body}");
        assert!(
            r.json()["detail"].as_str().unwrap().contains(field),
            "{r:?}"
        );
    }
    assert_eq!(
        hget(&redis, &format!("search:{id}"), "clicks").await,
        None,
        "nothing counted"
    );
}

#[tokio::test]
async fn a_manual_search_is_logged_with_route_manual_and_cache_none() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let body = json!({
        "user_id": "app-user", "user_uuid": "uuid-1", "session_id": "sess-1",
        "query": "Organic  MILK", "intent": "product_search", "confidence": 0.8,
        "response_time_ms": 42.5,
        "results": [{"product_id": "p7", "supplier": "s7"}, {"product_id": "p8", "supplier": "s7"}],
        "results_count": 20,
    });
    let r = admin(&proxy, "POST", "/v1/searches")
        .json(&body)
        .send()
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let id = r.json()["search_id"]
        .as_str()
        .expect("a search id")
        .to_owned();
    let record = format!("search:{id}");
    redis.wait_for_key(&record).await;
    let field = |f: &'static str| {
        let redis = &redis;
        let record = record.clone();
        async move { hget(redis, &record, f).await }
    };
    assert_eq!(field("route").await.as_deref(), Some("manual"));
    assert_eq!(field("cache").await.as_deref(), Some("none"));
    assert_eq!(field("query").await.as_deref(), Some("Organic  MILK"));
    assert_eq!(
        field("query_normalized").await.as_deref(),
        Some("organic milk")
    );
    assert_eq!(
        field("results_count").await.as_deref(),
        Some("20"),
        "results_count wins"
    );
    assert_eq!(
        field("product_ids").await.as_deref(),
        Some(r#"["p7","p8"]"#)
    );
    assert_eq!(field("supplier_ids").await.as_deref(), Some(r#"["s7"]"#));
    assert_eq!(field("user_uuid").await.as_deref(), Some("uuid-1"));

    let history = admin(&proxy, "GET", "/v1/users/app-user/history")
        .send()
        .await;
    assert_eq!(history.json()[0]["search_id"], id.as_str());

    // Counted in the day's searches, but not as cache traffic.
    let date = &hget(&redis, &record, "timestamp").await.unwrap()[..10];
    let report = stats_when(&proxy, &format!("?date={date}"), |s| {
        s["total_searches"] == 1
    })
    .await;
    assert_eq!(report["top_queries"][0]["query"], "organic milk");
    assert_eq!(
        report["cache"],
        json!({"hit": 0, "miss": 0, "bypass": 0, "stale": 0, "hit_ratio": 0.0})
    );
    assert!(!redis.exists(&format!("cache:stats:{date}")).await);
}

#[tokio::test]
async fn manual_logging_names_each_missing_or_mistyped_field() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    for (body, field) in [
        (json!({}), "query"),
        (json!({"query": 7}), "query"),
        (json!({"query": "q", "user_id": 1}), "user_id"),
        (json!({"query": "q", "user_uuid": true}), "user_uuid"),
        (json!({"query": "q", "session_id": {}}), "session_id"),
        (json!({"query": "q", "intent": 3}), "intent"),
        (json!({"query": "q", "confidence": "high"}), "confidence"),
        (
            json!({"query": "q", "response_time_ms": "fast"}),
            "response_time_ms",
        ),
        (json!({"query": "q", "results_count": 1.5}), "results_count"),
        (json!({"query": "q", "results": "p1"}), "results"),
        (
            json!({"query": "q", "results": [{"supplier": "s1"}]}),
            "results[0].product_id",
        ),
        (
            json!({"query": "q", "results": [{"product_id": "p", "supplier": 1.5}]}),
            "results[0].supplier",
        ),
    ] {
        let r = admin(&proxy, "POST", "/v1/searches")
            .json(&body)
            .send()
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(r.json()["field"], field, "{body}");
        assert!(
            r.json()["detail"].as_str().unwrap().contains(field),
            "{r:?}"
        );
    }
    let r = admin(&proxy, "POST", "/v1/searches")
        .body("{not json")
        .send()
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "body");
}

#[tokio::test]
async fn history_lists_a_users_searches_newest_first_up_to_the_limit() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    for q in ["milk", "bread", "eggs"] {
        let resp = proxy.search(Some("u1"), json!({"query": q})).send().await;
        logged_search(&redis, &resp).await;
    }
    eventually("three history entries", || async {
        (lrange(&redis, "user:u1:searches").await.len() == 3).then_some(())
    })
    .await;
    let all = admin(&proxy, "GET", "/v1/users/u1/history").send().await;
    assert_eq!(all.status, 200);
    let queries: Vec<Value> = all
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["query"].clone())
        .collect();
    assert_eq!(queries, vec![json!("eggs"), json!("bread"), json!("milk")]);
    let two = admin(&proxy, "GET", "/v1/users/u1/history?limit=2")
        .send()
        .await
        .json();
    assert_eq!(two.as_array().unwrap().len(), 2);
    assert_eq!(two[0]["cache"], "miss");
    let none = admin(&proxy, "GET", "/v1/users/nobody/history")
        .send()
        .await;
    assert_eq!(none.json(), json!([]));
    let bad = admin(&proxy, "GET", "/v1/users/u1/history?limit=many")
        .send()
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["field"], "limit");
}

#[tokio::test]
async fn stats_report_the_days_searches_intents_queries_and_cache_results() {
    let redis = Redis::start().await;
    let backend = search_backend().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let mut date = String::new();
    for q in ["milk", "milk", "bread", "nothing"] {
        let resp = proxy.search(Some("u1"), json!({"query": q})).send().await;
        let id = logged_search(&redis, &resp).await;
        date = hget(&redis, &format!("search:{id}"), "timestamp")
            .await
            .unwrap()[..10]
            .to_owned();
    }
    let s = stats_when(&proxy, &format!("?date={date}&top=1"), |s| {
        s["total_searches"] == 4
    })
    .await;
    assert_eq!(s["date"], date.as_str());
    let hourly = s["hourly"].as_object().unwrap();
    assert_eq!(hourly.len(), 24, "every hour listed");
    assert_eq!(hourly.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 4);
    assert_eq!(s["intents"], json!({"product_search": 4}));
    assert_eq!(s["top_products"], json!([{"id": "p1", "count": 3}]));
    assert_eq!(
        s["top_queries"],
        json!([{"query": "milk", "count": 2}]),
        "--top caps the list"
    );
    assert_eq!(
        s["zero_result_queries"],
        json!([{"query": "nothing", "count": 1}])
    );
    assert_eq!(
        s["cache"],
        json!({"hit": 1, "miss": 3, "bypass": 0, "stale": 0, "hit_ratio": 0.25})
    );
    let bad = admin(&proxy, "GET", "/v1/stats?date=2025-13-01")
        .send()
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["field"], "date");
}

#[tokio::test]
async fn export_streams_a_multi_day_range_in_time_order_filtered_by_intent() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let (from, to, events) = three_days(&redis).await;
    let labelled = events[0].search_id.to_string();
    let click = json!({"search_id": labelled, "event": "click", "product_id": "p2", "position": 2});
    assert_eq!(
        admin(&proxy, "POST", "/v1/feedback")
            .json(&click)
            .send()
            .await
            .status,
        202
    );

    let path = format!("/v1/export?from={from}&to={to}&intent=product_search");
    let r = admin(&proxy, "GET", &path).send().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("content-length"), None, "streamed, not buffered");
    let rows = lines(&r.body);
    let queries: Vec<&str> = rows.iter().map(|r| r["query"].as_str().unwrap()).collect();
    assert_eq!(
        queries,
        vec!["bread", "milk", "eggs"],
        "time order, intent filtered, range inclusive"
    );
    let milk = &rows[1];
    assert_eq!(milk["search_id"], labelled.as_str());
    assert_eq!(milk["clicks"], 1);
    assert_eq!(milk["orders"], 0);
    assert_eq!(milk["feedback"][0]["product_id"], "p2");
    assert_eq!(milk["results_count"], 2);
    assert_eq!(milk["confidence"], 0.75);
    assert_eq!(milk["response_time_ms"], 12.5);
    assert_eq!(milk["status"], 200);
    assert_eq!(milk["product_ids"], json!(["p1", "p2"]));
    assert_eq!(milk["product_suppliers"], json!({"p1": "s1", "p2": "s2"}));
    assert_eq!(
        rows[0]["user_id"],
        Value::Null,
        "absent optional fields are null"
    );
    assert_eq!(rows[0]["feedback"], json!([]));

    let both = admin(
        &proxy,
        "GET",
        &format!("/v1/export?from={from}&to={to}&intent=product_search&intent=add_to_order"),
    )
    .send()
    .await;
    assert_eq!(lines(&both.body).len(), 4, "intent is repeatable");
    let bad = admin(&proxy, "GET", &format!("/v1/export?from={to}&to={from}"))
        .send()
        .await;
    assert_eq!(bad.status, 400);
    let missing = admin(&proxy, "GET", "/v1/export?to=2025-11-25")
        .send()
        .await;
    assert_eq!(missing.json()["field"], "from");
}

#[tokio::test]
async fn a_purge_through_one_proxy_turns_another_proxys_l1_hit_into_a_miss() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let a = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let b = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    // Both proxies listen on the invalidation channel before the purge.
    redis.wait_for_invalidation_subscribers(2).await;
    let milk = b.search(Some("u1"), json!({"query": "milk"}));
    let stored = milk.send().await;
    assert_miss_stored(&stored);
    let key = user_key("u1", &stored.key());
    redis.wait_for_key(&key).await;
    assert_hit(&milk.send().await);

    let purge = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({"user_id": "u1"}))
        .send()
        .await;
    assert_eq!(purge.status, 200, "{purge:?}");
    assert_eq!(purge.json()["removed"], 1);
    assert!(!redis.exists(&key).await);
    eventually_within(
        Duration::from_secs(1),
        "proxy B to drop its L1 copy",
        || async {
            let resp = milk.send().await;
            (resp.x_cache() == Some("MISS")).then_some(())
        },
    )
    .await;

    let bad = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({"hash": "nothex"}))
        .send()
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["field"], "hash");
    let empty = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(empty.status, 400);
}

#[tokio::test]
async fn the_v1_api_needs_the_bearer_token_and_the_probes_never_do() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let config = ProxyConfig::search().top(&format!("admin_token = {TOKEN:?}"));
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let stats = admin(&proxy, "GET", "/v1/stats");
    let r = stats.clone().send().await;
    assert_eq!(r.status, 401, "no token: {r:?}");
    assert_eq!(r.json()["error"], "unauthorized");
    let wrong = stats
        .clone()
        .header("authorization", "Bearer s3cret-admin-tokem")
        .send()
        .await;
    assert_eq!(wrong.status, 401);
    let short = stats
        .clone()
        .header("authorization", "Bearer s3cret")
        .send()
        .await;
    assert_eq!(short.status, 401);
    let ok = stats
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send()
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");

    let log = admin(&proxy, "POST", "/v1/searches").json(&json!({"query": "milk"}));
    assert_eq!(log.clone().send().await.status, 401);
    let accepted = log
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send()
        .await;
    assert_eq!(accepted.status, 202);

    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            admin(&proxy, "GET", probe).send().await.status,
            200,
            "{probe}"
        );
    }
}

/// Posts feedback and answers the response.
async fn feedback(proxy: &Proxy, body: &Value) -> Resp {
    admin(proxy, "POST", "/v1/feedback").json(body).send().await
}

/// Logs a manual search of `user` and waits until its history is written:
/// the writer keeps order, so whatever was sent before is in Redis by then.
async fn manual_marker(proxy: &Proxy, redis: &Redis, user: &str) {
    let r = admin(proxy, "POST", "/v1/searches")
        .json(&json!({"query": "marker", "user_id": user}))
        .send()
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    redis.wait_for_key(&format!("user:{user}:searches")).await;
}

#[tokio::test]
async fn feedback_for_text_that_is_not_a_search_id_is_404_never_a_redis_type_error() {
    let (redis, _backend, proxy, id) = one_logged_search().await;
    let click = json!({"search_id": id, "event": "click", "product_id": "p1", "position": 1});
    assert_eq!(feedback(&proxy, &click).await.status, 202);
    let list = format!("search:{id}:feedback");
    assert!(redis.exists(&list).await, "the feedback list exists now");

    for not_an_id in [
        // The feedback list: a Redis list, not a search record.
        format!("{id}:feedback"),
        format!("{id}:x"),
        "*".to_string(),
        format!("search:{id}"),
        id.replace('-', ""),
        format!("{{{id}}}"),
        // A UUID, but not a v7 the proxy could have made.
        "0190b7e2-0000-4000-8000-000000000000".to_string(),
        String::new(),
    ] {
        let body = json!({"search_id": not_an_id, "event": "click", "product_id": "p1"});
        let r = feedback(&proxy, &body).await;
        assert_eq!(r.status, 404, "{not_an_id:?}: {r:?}");
        assert_eq!(r.json()["error"], "not found");
    }

    // Only the one good click was counted anywhere.
    assert_eq!(lrange(&redis, &list).await.len(), 1);
    assert_eq!(
        hget(&redis, &format!("search:{id}"), "clicks")
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(redis.keys(&format!("search:{id}:*")).await, vec![list]);
    let clicked = redis.keys("products:clicked:*").await;
    assert_eq!(clicked.len(), 1, "{clicked:?}");
    assert_eq!(zscore(&redis, &clicked[0], "p1").await, Some(1.0));
}

#[tokio::test]
async fn feedback_with_a_negative_position_or_an_empty_or_numeric_product_id_is_400_naming_it() {
    let (redis, _backend, proxy, id) = one_logged_search().await;
    for (body, field) in [
        (
            json!({"search_id": id, "event": "click", "product_id": "p1", "position": -5}),
            "position",
        ),
        (
            json!({"search_id": id, "event": "click", "product_id": "p1", "position": 1e30}),
            "position",
        ),
        (
            json!({"search_id": id, "event": "click", "product_id": "p1", "position": 1.5}),
            "position",
        ),
        (
            json!({"search_id": id, "event": "click", "product_id": ""}),
            "product_id",
        ),
        (
            json!({"search_id": id, "event": "click", "product_id": "  "}),
            "product_id",
        ),
        (
            json!({"search_id": id, "event": "click", "product_id": 1}),
            "product_id",
        ),
        (
            json!({"search_id": 7, "event": "click", "product_id": "p1"}),
            "search_id",
        ),
    ] {
        let r = feedback(&proxy, &body).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(r.json()["field"], field, "{body}");
        assert!(
            r.json()["detail"].as_str().unwrap().contains(field),
            "{r:?}"
        );
    }
    assert_eq!(hget(&redis, &format!("search:{id}"), "clicks").await, None);
    assert!(!redis.exists(&format!("search:{id}:feedback")).await);
    assert_eq!(redis.keys("products:clicked:*").await, Vec::<String>::new());
    assert_eq!(
        redis.keys("supplier:*:clicks:*").await,
        Vec::<String>::new()
    );

    // Position 0 is a position; the id may come in either case.
    let upper = json!({"search_id": id.to_uppercase(), "event": "click", "product_id": "p1", "position": 0});
    assert_eq!(feedback(&proxy, &upper).await.status, 202);
    let entries = lrange(&redis, &format!("search:{id}:feedback")).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry: Value = serde_json::from_str(&entries[0]).unwrap();
    assert_eq!(entry["position"], 0);
}

#[tokio::test]
async fn a_logged_search_reads_back_with_its_feedback_and_anything_else_is_404() {
    let (_redis, _backend, proxy, id) = one_logged_search().await;
    let click = json!({"search_id": id, "event": "click", "product_id": "p1", "position": 1});
    assert_eq!(feedback(&proxy, &click).await.status, 202);

    let r = admin(&proxy, "GET", &format!("/v1/searches/{id}"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let record = r.json();
    assert_eq!(record["search_id"], id.as_str());
    assert_eq!(record["query"], "milk");
    assert_eq!(record["user_id"], "u1");
    assert_eq!(record["clicks"], 1);
    assert_eq!(record["orders"], 0);
    assert_eq!(record["product_ids"], json!(["p1"]));
    assert_eq!(record["feedback"][0]["event"], "click");
    assert_eq!(record["feedback"][0]["position"], 1);

    // The feedback list (a Redis list), a pattern, a key, no id at all.
    for path in [
        format!("/v1/searches/{id}:feedback"),
        format!("/v1/searches/{id}%3Afeedback"),
        "/v1/searches/*".to_string(),
        "/v1/searches/search:%2A".to_string(),
        "/v1/searches/0190b7e2-0000-7000-8000-000000000000".to_string(),
        "/v1/searches/".to_string(),
    ] {
        let r = admin(&proxy, "GET", &path).send().await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "not found", "{path}");
    }
    let post = admin(&proxy, "POST", &format!("/v1/searches/{id}"))
        .send()
        .await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn an_empty_user_id_in_manual_logging_means_no_user_history_or_profile() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let mut ids = Vec::new();
    for blank in ["", " "] {
        let body =
            json!({"query": "milk", "user_id": blank, "session_id": blank, "user_uuid": blank});
        let r = admin(&proxy, "POST", "/v1/searches")
            .json(&body)
            .send()
            .await;
        assert_eq!(r.status, 202, "{blank:?}: {r:?}");
        ids.push(r.json()["search_id"].as_str().unwrap().to_owned());
    }
    manual_marker(&proxy, &redis, "marker").await;

    for key in [
        "user::searches",
        "user::profile",
        "user: :searches",
        "user: :profile",
    ] {
        assert!(!redis.exists(key).await, "{key} was written");
    }
    assert_eq!(
        redis.keys("user:*").await,
        vec!["user:marker:profile", "user:marker:searches"]
    );
    for id in &ids {
        let record = format!("search:{id}");
        assert!(redis.exists(&record).await, "the search is logged");
        assert_eq!(hget(&redis, &record, "user_id").await, None);
        assert_eq!(hget(&redis, &record, "session_id").await, None);
    }
}

#[tokio::test]
async fn manual_results_with_an_empty_id_or_a_negative_time_are_400_and_write_no_key() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    for (body, field) in [
        (
            json!({"query": "q", "results": [{"product_id": "p1", "supplier": ""}]}),
            "results[0].supplier",
        ),
        (
            json!({"query": "q", "results": [{"product_id": "p1", "supplier": "s1"}, {"product_id": ""}]}),
            "results[1].product_id",
        ),
        (
            json!({"query": "q", "results": [{"product_id": " ", "supplier": "s1"}]}),
            "results[0].product_id",
        ),
        (
            json!({"query": "q", "response_time_ms": -5}),
            "response_time_ms",
        ),
        (
            json!({"query": "q", "results_count": 5_000_000_000u64}),
            "results_count",
        ),
    ] {
        let r = admin(&proxy, "POST", "/v1/searches")
            .json(&body)
            .send()
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(r.json()["field"], field, "{body}");
    }
    manual_marker(&proxy, &redis, "marker").await;

    assert_eq!(redis.keys("search:*").await.len(), 1, "only the marker");
    assert_eq!(redis.keys("supplier:*").await, Vec::<String>::new());
    assert_eq!(redis.keys("products:popular:*").await, Vec::<String>::new());
    // Ids are taken literally: a numeric product id and ids with `:` or `*`
    // are ids like any other.
    let body = json!({"query": "q", "results": [{"product_id": 42, "supplier": "s:*"}]});
    let r = admin(&proxy, "POST", "/v1/searches")
        .json(&body)
        .send()
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let id = r.json()["search_id"].as_str().unwrap().to_owned();
    redis.wait_for_key(&format!("search:{id}")).await;
    assert_eq!(
        hget(&redis, &format!("search:{id}"), "product_suppliers")
            .await
            .as_deref(),
        Some(r#"{"42":"s:*"}"#)
    );
}

#[tokio::test]
async fn user_ids_are_taken_literally_and_a_blank_one_names_no_user_in_history_or_purge() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    // User `a`, and a user whose id spells the head of `a`'s cache keys.
    let mut entries = Vec::new();
    for user in ["a", "a:cache:x"] {
        let resp = proxy
            .search(Some(user), json!({"query": "milk"}))
            .send()
            .await;
        assert_miss_stored(&resp);
        let key = user_key(user, &resp.key());
        redis.wait_for_key(&key).await;
        redis.wait_for_key(&format!("user:{user}:searches")).await;
        entries.push(key);
    }

    for path in ["/v1/users/%20/history", "/v1/users/%09/history"] {
        let r = admin(&proxy, "GET", path).send().await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_eq!(r.json()["field"], "user_id");
    }
    for blank in ["", " "] {
        let r = admin(&proxy, "POST", "/v1/cache/purge")
            .json(&json!({"user_id": blank}))
            .send()
            .await;
        assert_eq!(r.status, 400, "{blank:?}: {r:?}");
        assert_eq!(r.json()["field"], "user_id");
    }
    let r = admin(&proxy, "POST", "/v1/cache/purge")
        .json(&json!({"user_id": "*"}))
        .send()
        .await;
    assert_eq!(r.json()["removed"], 0, "`*` is a user id, not a pattern");

    let history = admin(&proxy, "GET", "/v1/users/a%3Acache%3Ax/history")
        .send()
        .await;
    assert_eq!(history.json().as_array().map(Vec::len), Some(1));
    let r = admin(&proxy, "POST", "/v1/cache/purge")
        .json(&json!({"user_id": "a"}))
        .send()
        .await;
    assert_eq!(r.json()["removed"], 1, "{r:?}");
    assert!(!redis.exists(&entries[0]).await);
    assert!(redis.exists(&entries[1]).await, "a:cache:x is another user");
    assert!(redis.exists("user:a:cache:x:searches").await);
    assert!(redis.exists("user:a:cache:x:profile").await);
}
