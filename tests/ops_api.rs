//! The admin `/v1` API against a real proxy, Redis and backend (SPEC
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
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    let id = logged_search(&redis, &resp).await;

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
    assert_eq!(second["position"], Value::Null);
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
    eventually("both proxies subscribed", || async {
        let mut con = redis.conn().await;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("leafcache:invalidate")
            .query_async(&mut con)
            .await
            .ok()?;
        (n >= 2).then_some(())
    })
    .await;
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
