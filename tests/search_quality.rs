//! The search quality report and UBI impressions (docs/contract.md section 9) against a
//! real Redis: a scripted day of user sessions written by the real event
//! writer and the real feedback recorder at chosen times, read back by the
//! `leafcache stats` binary and `/v1/stats`; and a live session through the
//! proxy, its feedback through `/v1/feedback`, read back by the export.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::ops::*;
use common::*;
use leafcache::admin::feedback::{self, Action, Feedback};
use leafcache::answer::SearchMeta;
use leafcache::config::RedisConfig;
use leafcache::events::write::Layout;
use leafcache::events::writer::{self, WriterConfig};
use leafcache::events::{CacheResult, SearchEvent, new_search_id};
use leafcache::redis::RedisPool;
use leafcache::redis::keys::Prefix;
use serde_json::{Value, json};

/// 2025-11-25T10:00:00Z.
const T: u64 = 1_764_064_800_000;
const SECOND: u64 = 1_000;

/// One scripted search: who, when, what, which products it showed.
struct Scripted {
    session: Option<&'static str>,
    at_ms: u64,
    query: &'static str,
    products: &'static [&'static str],
}

fn event(s: &Scripted) -> SearchEvent {
    SearchEvent {
        search_id: new_search_id(),
        timestamp_ms: s.at_ms,
        user_id: s.session.map(|session| format!("user-of-{session}")),
        user_uuid: None,
        session_id: s.session.map(str::to_owned),
        query: s.query.to_owned(),
        query_normalized: leafcache::key::normalize_query(s.query),
        meta: Arc::new(SearchMeta {
            intent: Some("product_search".into()),
            confidence: Some(0.9),
            results_count: s.products.len() as u32,
            products: s
                .products
                .iter()
                .map(|p| (p.to_string(), Some("sup".to_string())))
                .collect(),
            ..SearchMeta::default()
        }),
        response_time_ms: 5.0,
        cache: CacheResult::Miss,
        status: 200,
        route: "search".into(),
    }
}

fn layout() -> Layout {
    Layout {
        prefix: Prefix::default(),
        retention_secs: 7 * 86_400,
        record_retention_secs: 7 * 86_400,
        history_limit: 100,
    }
}

fn redis_config(redis: &Redis) -> RedisConfig {
    RedisConfig {
        url: redis.url(),
        pool_size: 2,
        timeout: Duration::from_secs(2),
        key_prefix: Prefix::default(),
        cluster: false,
        tls_ca_file: None,
        tls_ca_pem: None,
    }
}

/// Logs `searches` through the real event writer (records, indexes and
/// counters, as the proxy would), and answers their search ids in order.
async fn log_searches(redis: &Redis, searches: &[Scripted]) -> Vec<String> {
    let cfg = redis_config(redis);
    let pool = RedisPool::new(&cfg).expect("a pool");
    let (sink, w) = writer::spawn(
        WriterConfig {
            layout: layout(),
            queue_capacity: 1024,
            batch_max: 64,
            flush_interval: Duration::from_millis(5),
            counter_flush: Duration::from_millis(100),
            redis: Some(cfg),
        },
        Some(pool),
        None,
    );
    let mut ids = Vec::new();
    for s in searches {
        let ev = event(s);
        ids.push(ev.search_id.to_string());
        sink.send(ev);
    }
    // Shutting down flushes the queue to Redis.
    w.shutdown().await;
    ids
}

/// Records feedback through the real recorder (what `POST /v1/feedback`
/// runs), at a chosen time.
async fn give_feedback(
    redis: &Redis,
    search_id: &str,
    action: Action,
    product: &str,
    position: Option<u32>,
    at_ms: u64,
) {
    let pool = RedisPool::new(&redis_config(redis)).expect("a pool");
    let fb = Feedback {
        search_id: search_id.to_owned(),
        action,
        product_id: product.to_owned(),
        position,
    };
    feedback::record(&pool, &layout(), &fb, at_ms)
        .await
        .unwrap_or_else(|e| panic!("feedback on {search_id}: {e}"));
}

async fn stats_json(config: &std::path::Path, date: &str) -> Value {
    let r = run(leafcache(config, &["stats", "--date", date, "--json"])).await;
    assert_eq!(r.code, 0, "{r:?}");
    r.json()
}

const ALL_RATES: [&str; 8] = [
    "click_through_rate",
    "no_click_rate",
    "zero_result_rate",
    "mean_click_position",
    "mean_reciprocal_rank",
    "add_to_order_rate",
    "purchase_rate",
    "reformulation_rate",
];

#[tokio::test]
async fn quality_rates_are_exact_on_a_scripted_day_of_user_sessions() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let s = |session, at_ms, query, products| Scripted {
        session,
        at_ms,
        query,
        products,
    };
    let (a, b, c) = (Some("session-a"), Some("session-b"), Some("session-c"));
    let day = [
        // Session a.
        s(a, T, "milk", &["p1", "p2", "p3", "p4"]),
        s(a, T + 20 * SECOND, "milk 2%", &["p5", "p6", "p7", "p8"]),
        s(a, T + 40 * SECOND, "bread", &["p9"]),
        s(a, T + 130 * SECOND, "bread rye", &[]),
        s(
            a,
            T + 150 * SECOND,
            "rye bread",
            &["p10", "p11", "p12", "p13"],
        ),
        // Session b.
        s(b, T + 1000 * SECOND, "eggs", &["p1", "p2"]),
        s(b, T + 1030 * SECOND, "eggs", &["p1", "p2"]),
        // Session c: two searches that find nothing, 60 s apart.
        s(c, T + 2000 * SECOND, "nothing here", &[]),
        s(c, T + 2060 * SECOND, "nothing", &[]),
        // No session.
        s(None, T + 3000 * SECOND, "tea", &["p20", "p21"]),
        s(None, T + 4000 * SECOND, "bread", &["p9"]),
        // The next day: only searches that find nothing.
        s(a, T + DAY_MS, "zzz", &[]),
        s(None, T + DAY_MS + SECOND, "zzz", &[]),
    ];
    let ids = log_searches(&redis, &day).await;
    let fb = |i: usize, action, product, position, after_s: u64| {
        give_feedback(
            &redis,
            &ids[i],
            action,
            product,
            position,
            T + after_s * SECOND,
        )
    };
    // "milk 2%": a click at position 2 (5 s in) and an add to order.
    fb(1, Action::Click, "p6", Some(2), 25).await;
    fb(1, Action::AddToOrder, "p6", None, 27).await;
    // "rye bread": a click without a position (its impression says 4), and
    // a purchase the next day (feedback counts for the search's day).
    fb(4, Action::Click, "p13", None, 160).await;
    fb(4, Action::Purchase, "p13", None, 86_400 + 170).await;
    // "eggs": a click at 1, a purchase.
    fb(5, Action::Click, "p1", Some(1), 1005).await;
    fb(5, Action::Purchase, "p1", None, 1010).await;
    // "tea": a click at 2.
    fb(9, Action::Click, "p21", Some(2), 3005).await;

    let config = proxy.config_path();
    let report = stats_json(&config, "2025-11-25").await;
    let q = &report["quality"];
    // By hand. 11 searches; "bread rye" and session c's two found nothing.
    let (searches, with_results) = (11.0, 8.0);
    assert_eq!(q["searches"], 11);
    assert_eq!(q["searches_with_results"], 8);
    assert_eq!(report["total_searches"], 11, "the counters agree");
    assert_eq!(q["zero_result_rate"], json!(3.0 / searches));
    // Clicked: "milk 2%", "rye bread", the first "eggs", "tea".
    assert_eq!(q["click_through_rate"], json!(4.0 / with_results));
    assert_eq!(q["no_click_rate"], json!(4.0 / with_results));
    // Positions 2, 4 (from the impression), 1, 2.
    assert_eq!(q["clicks_with_position"], 4);
    assert_eq!(q["mean_click_position"], json!(9.0 / 4.0));
    // First clicks: 1/2 + 1/4 + 1/1 + 1/2; 0 for the other four.
    assert_eq!(
        q["mean_reciprocal_rank"],
        json!((1.0 + 1.0 / 2.0 + 1.0 / 2.0 + 1.0 / 4.0) / with_results)
    );
    assert_eq!(q["add_to_order_rate"], json!(1.0 / with_results));
    assert_eq!(q["purchase_rate"], json!(2.0 / with_results));
    // Nine searches carry a session. Reformulated: "milk" (the next search
    // 20 s later, no click); "bread rye" (20 s, no click); "nothing here"
    // (exactly 60 s). Not: "milk 2%" (clicked before the next search),
    // "bread" (90 s), the first "eggs" (clicked), and each session's last.
    assert_eq!(q["searches_with_session"], 9);
    assert_eq!(q["reformulation_rate"], json!(3.0 / 9.0));
    assert_eq!(
        q["top_queries_without_clicks"],
        json!([{"query": "bread", "count": 2}, {"query": "milk", "count": 1}])
    );

    let api = admin(&proxy, "GET", "/v1/stats?date=2025-11-25")
        .send()
        .await;
    assert_eq!(api.status, 200, "{api:?}");
    assert_eq!(api.json(), report, "the binary and /v1/stats agree");
    let r = run(leafcache(
        &config,
        &["stats", "--date", "2025-11-25", "--json", "--top", "1"],
    ))
    .await;
    assert_eq!(
        r.json()["quality"]["top_queries_without_clicks"],
        json!([{"query": "bread", "count": 2}]),
        "--top caps the list"
    );

    // A day with nothing logged: every rate null, not 0.
    let empty = stats_json(&config, "2025-11-24").await;
    for rate in ALL_RATES {
        assert_eq!(empty["quality"][rate], Value::Null, "{rate}");
    }
    assert_eq!(empty["quality"]["searches"], 0);
    // A day of searches that all found nothing: only the zero-result and
    // reformulation rates have a denominator.
    let nothing = stats_json(&config, "2025-11-26").await;
    let q = &nothing["quality"];
    assert_eq!(q["zero_result_rate"], json!(1.0));
    assert_eq!(q["reformulation_rate"], json!(0.0), "one session search");
    for rate in [
        "click_through_rate",
        "no_click_rate",
        "mean_click_position",
        "mean_reciprocal_rank",
        "add_to_order_rate",
        "purchase_rate",
    ] {
        assert_eq!(q[rate], Value::Null, "{rate}");
    }

    let page = run(leafcache(&config, &["stats", "--date", "2025-11-25"]))
        .await
        .stdout_text();
    for part in [
        "search quality  (11 searches read, 8 with results, 9 in sessions)",
        "click-through rate       50.0%",
        "mean click position      2.250",
        "queries with results and no clicks",
    ] {
        assert!(page.contains(part), "{part:?} in\n{page}");
    }
    let page = run(leafcache(&config, &["stats", "--date", "2025-11-24"]))
        .await
        .stdout_text();
    assert!(
        page.contains(&format!("  {:<22}{:>8}\n", "click-through rate", "-")),
        "no denominator: a dash\n{page}"
    );
}

/// A backend that finds three products for any query but "nothing".
async fn shop() -> Backend {
    Backend::start(|req| {
        let query = req.json()["query"].as_str().unwrap_or_default().to_owned();
        let products = if query == "nothing" {
            json!([])
        } else {
            json!([
                {"product_id": "m1", "supplier": "s1"},
                {"product_id": "m2", "supplier": "s1"},
                {"product_id": "m3", "supplier": "s2"},
            ])
        };
        Reply::json(json!({"intent": "product_search", "confidence": 0.8, "products": products}))
    })
    .await
}

#[tokio::test]
async fn a_live_session_exports_impressions_and_ubi_events_and_feedback_positions_are_checked() {
    let redis = Redis::start().await;
    let backend = shop().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let search =
        |query: &str| proxy.search(Some("u1"), json!({"query": query, "session_id": "live"}));
    let post = |body: Value| admin(&proxy, "POST", "/v1/feedback").json(&body);

    let milk = logged_search(&redis, &search("milk").send().await).await;
    // No position: the impression's (m2 is the second result).
    let r = post(json!({"search_id": milk, "event": "click", "product_id": "m2"}))
        .send()
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"search_id": milk, "event": "click", "position": 2, "impression_position": 2})
    );
    let nothing = logged_search(&redis, &search("nothing").send().await).await;
    let milk2 = logged_search(&redis, &search("milk 2%").send().await).await;
    // A position that disagrees with the impression is kept as the
    // application sent it, and the answer shows both.
    let r = post(json!({"search_id": milk2, "event": "click", "product_id": "m3", "position": 5}))
        .send()
        .await;
    assert_eq!(
        r.json(),
        json!({"search_id": milk2, "event": "click", "position": 5, "impression_position": 3})
    );
    // A product the search did not show: no impression, no position.
    let r = post(json!({"search_id": milk2, "event": "purchase", "product_id": "elsewhere"}))
        .send()
        .await;
    assert_eq!(
        r.json(),
        json!({"search_id": milk2, "event": "purchase", "position": null, "impression_position": null})
    );

    let date = hget(&redis, &format!("search:{milk}"), "timestamp")
        .await
        .unwrap()[..10]
        .to_owned();
    let report = stats_when(&proxy, &format!("?date={date}"), |s| {
        s["quality"]["searches"] == 3
    })
    .await;
    let q = &report["quality"];
    assert_eq!(q["zero_result_rate"], json!(1.0 / 3.0));
    assert_eq!(q["click_through_rate"], json!(1.0));
    assert_eq!(q["no_click_rate"], json!(0.0));
    assert_eq!(q["mean_click_position"], json!((2.0 + 5.0) / 2.0));
    assert_eq!(
        q["mean_reciprocal_rank"],
        json!((1.0 / 2.0 + 1.0 / 5.0) / 2.0)
    );
    assert_eq!(q["add_to_order_rate"], json!(0.0));
    assert_eq!(q["purchase_rate"], json!(1.0 / 2.0));
    // "milk" was clicked before "nothing" was searched; "nothing" was
    // followed by "milk 2%" within seconds and no click; "milk 2%" is last.
    assert_eq!(q["reformulation_rate"], json!(1.0 / 3.0));
    assert_eq!(q["top_queries_without_clicks"], json!([]));

    let export = admin(&proxy, "GET", &format!("/v1/export?from={date}&to={date}"))
        .send()
        .await;
    let rows = lines(&export.body);
    let row = |id: &str| {
        rows.iter()
            .find(|r| r["search_id"] == id)
            .unwrap_or_else(|| panic!("{id} in the export"))
            .clone()
    };
    let first = row(&milk);
    assert_eq!(
        first["impressions"],
        json!([
            {"product_id": "m1", "position": 1},
            {"product_id": "m2", "position": 2},
            {"product_id": "m3", "position": 3},
        ])
    );
    assert_eq!(
        first["feedback"][0]["position"], 2,
        "stored with its position"
    );
    let ubi = &first["ubi"];
    assert_eq!(ubi["query"]["query_id"], milk.as_str());
    assert_eq!(ubi["query"]["user_query"], "milk");
    assert_eq!(ubi["query"]["client_id"], "u1");
    assert_eq!(
        ubi["query"]["query_response_hit_ids"],
        json!(["m1", "m2", "m3"])
    );
    assert_eq!(ubi["query"]["query_attributes"]["session_id"], "live");
    assert_eq!(
        ubi["events"],
        json!([{
            "application": "search",
            "action_name": "click",
            "query_id": milk,
            "client_id": "u1",
            "session_id": "live",
            "user_query": "milk",
            "timestamp": first["feedback"][0]["timestamp"],
            "event_attributes": {
                "object": {"object_id": "m2", "object_id_field": "product_id"},
                "position": {"ordinal": 2},
            },
        }])
    );
    assert_eq!(row(&nothing)["impressions"], json!([]));
    let events = row(&milk2)["ubi"]["events"].clone();
    assert_eq!(
        events[0]["event_attributes"]["position"],
        json!({"ordinal": 5})
    );
    assert_eq!(
        events[1]["event_attributes"],
        json!({"object": {"object_id": "elsewhere", "object_id_field": "product_id"}}),
        "no position known: none given"
    );
}
