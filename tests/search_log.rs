//! The search log (docs/contract.md section 3 step 13, sections 4 and 5): which answers
//! are logged, and what a scripted mix of searches leaves in Redis, key by
//! key and field by field. Faults (Redis paused, killed, down; SIGTERM; the
//! spool) are in search_log_faults.rs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::events::*;
use common::*;
use serde_json::{Value, json};

/// The backend's catalogue: what it answers to each search text.
fn catalogue(req: &Recorded) -> Reply {
    let q = query_of(req).unwrap_or_default();
    let normalized = q.split_whitespace().collect::<Vec<_>>().join(" ");
    match normalized.to_lowercase().as_str() {
        // s1 supplies three of the four results (p1 twice).
        "milk" => search_answer(
            &q,
            "product_search",
            0.9,
            &[("p1", "s1"), ("p2", "s1"), ("p1", "s1"), ("p3", "s2")],
        ),
        "bread rolls" => search_answer(&q, "product_search", 0.75, &[("p4", "s2"), ("p5", "s3")]),
        "add milk to cart" => search_answer(&q, "add_to_order", 0.95, &[("p1", "s1")]),
        "what did i buy" => search_answer(&q, "list_order", 0.8, &[("p6", "s3")]),
        "unicorn steak" => search_answer(&q, "product_search", 0.2, &[]),
        _ => search_answer(&q, "product_search", 0.5, &[("p9", "s9")]),
    }
}

/// The harness's proxy with the search route and the unlogged `orders` route.
async fn setup() -> (Redis, Backend, Proxy) {
    let orders = Route::new("orders")
        .set("methods", r#"["GET", "POST"]"#)
        .set("path_prefix", r#""/api/v1/order""#)
        .scope("off");
    let config = ProxyConfig::search().route(orders);
    Harness::with_backend(&config, Backend::start(catalogue).await)
        .await
        .parts()
}

/// A proxy whose `[events]` or key prefix the test sets.
async fn setup_log(config: LogConfig) -> (Redis, Backend, LogProxy) {
    let redis = Redis::start().await;
    let backend = Backend::start(catalogue).await;
    let proxy = LogProxy::start(&config, &backend.url(), &redis.url()).await;
    (redis, backend, proxy)
}

/// Either proxy: both send `POST /api/v1/search` as a user.
trait Searches {
    fn search_req(&self, user: Option<&str>, body: Value) -> Req;
}

impl Searches for Proxy {
    fn search_req(&self, user: Option<&str>, body: Value) -> Req {
        self.search(user, body)
    }
}

impl Searches for LogProxy {
    fn search_req(&self, user: Option<&str>, body: Value) -> Req {
        self.search(user, body)
    }
}

/// Who searches: the identity headers of one request.
#[derive(Clone, Copy)]
struct Who {
    user: Option<&'static str>,
    uuid: Option<&'static str>,
    session: Option<&'static str>,
}

const ANONYMOUS: Who = Who {
    user: None,
    uuid: None,
    session: None,
};

fn user(id: &'static str) -> Who {
    Who {
        user: Some(id),
        ..ANONYMOUS
    }
}

/// One search sent, with its answer and the clock around it.
struct Sent {
    id: String,
    who: Who,
    query: &'static str,
    cache: &'static str,
    /// Epoch ms just before sending and just after the answer.
    before: u64,
    after: u64,
}

async fn search(proxy: &impl Searches, who: Who, query: &'static str) -> Sent {
    let mut req = proxy.search_req(who.user, json!({"query": query}));
    if let Some(uuid) = who.uuid {
        req = req.header("x-user-uuid", uuid);
    }
    if let Some(session) = who.session {
        req = req.header("x-session-id", session);
    }
    let before = now_ms();
    let resp = req.send().await;
    let after = now_ms();
    assert_eq!(resp.status, 200, "{resp:?}");
    let cache = match resp.x_cache() {
        Some("HIT") => "hit",
        Some("MISS") => "miss",
        Some("BYPASS") => "bypass",
        other => panic!("unexpected X-Cache {other:?} on {resp:?}"),
    };
    Sent {
        id: logged_id(&resp),
        who,
        query,
        cache,
        before,
        after,
    }
}

/// What the log should say about an answer of the catalogue.
struct Answer {
    intent: &'static str,
    confidence: &'static str,
    results: u32,
    product_ids: &'static [&'static str],
    supplier_ids: &'static [&'static str],
    product_suppliers: &'static [(&'static str, &'static str)],
}

const MILK: Answer = Answer {
    intent: "product_search",
    confidence: "0.9",
    results: 4,
    product_ids: &["p1", "p2", "p3"],
    supplier_ids: &["s1", "s2"],
    product_suppliers: &[("p1", "s1"), ("p2", "s1"), ("p3", "s2")],
};
const BREAD: Answer = Answer {
    intent: "product_search",
    confidence: "0.75",
    results: 2,
    product_ids: &["p4", "p5"],
    supplier_ids: &["s2", "s3"],
    product_suppliers: &[("p4", "s2"), ("p5", "s3")],
};
const CART: Answer = Answer {
    intent: "add_to_order",
    confidence: "0.95",
    results: 1,
    product_ids: &["p1"],
    supplier_ids: &["s1"],
    product_suppliers: &[("p1", "s1")],
};
const ORDERS: Answer = Answer {
    intent: "list_order",
    confidence: "0.8",
    results: 1,
    product_ids: &["p6"],
    supplier_ids: &["s3"],
    product_suppliers: &[("p6", "s3")],
};
const NOTHING: Answer = Answer {
    intent: "product_search",
    confidence: "0.2",
    results: 0,
    product_ids: &[],
    supplier_ids: &[],
    product_suppliers: &[],
};

fn normalized(query: &str) -> String {
    query
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Checks every field of `search:<id>` and returns its timestamp.
async fn assert_record(store: &mut LogStore, prefix: &str, sent: &Sent, answer: &Answer) -> String {
    let mut record = store.hash(&format!("{prefix}search:{}", sent.id)).await;
    let what = format!("search:{} ({:?}, {})", sent.id, sent.query, sent.cache);

    let timestamp = record.remove("timestamp").expect("a timestamp");
    let ms = rfc3339_ms(&timestamp);
    assert!(
        sent.before <= ms && ms <= sent.after,
        "{what}: timestamp {timestamp} is not when the request arrived ({}..={})",
        sent.before,
        sent.after
    );
    let took = record.remove("response_time_ms").expect("response_time_ms");
    let took: f64 = took
        .parse()
        .unwrap_or_else(|_| panic!("{what}: response_time_ms {took:?} is not a number"));
    assert!(took >= 0.0, "{what}: response_time_ms {took}");

    let json_field = |record: &mut BTreeMap<String, String>, name: &str| -> Value {
        let raw = record
            .remove(name)
            .unwrap_or_else(|| panic!("{what}: no {name}"));
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{what}: {name} {raw:?}: {e}"))
    };
    assert_eq!(
        json_field(&mut record, "product_ids"),
        json!(answer.product_ids),
        "{what}: product_ids, de-duplicated in result order"
    );
    assert_eq!(
        json_field(&mut record, "supplier_ids"),
        json!(answer.supplier_ids),
        "{what}: supplier_ids, each supplier once"
    );
    let pairs: BTreeMap<String, String> = answer
        .product_suppliers
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
    assert_eq!(
        json_field(&mut record, "product_suppliers"),
        json!(pairs),
        "{what}: product_suppliers"
    );

    let mut expected: BTreeMap<String, String> = [
        ("search_id", sent.id.clone()),
        ("query", sent.query.to_string()),
        ("query_normalized", normalized(sent.query)),
        ("intent", answer.intent.to_string()),
        ("confidence", answer.confidence.to_string()),
        ("results_count", answer.results.to_string()),
        ("cache", sent.cache.to_string()),
        ("status", "200".to_string()),
        ("route", "search".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (field, value) in [
        ("user_id", sent.who.user),
        ("user_uuid", sent.who.uuid),
        ("session_id", sent.who.session),
    ] {
        if let Some(v) = value {
            expected.insert(field.into(), v.into());
        }
    }
    assert_eq!(record, expected, "{what}: the other fields, and no more");
    timestamp
}

/// Polls until every id has its record and the counters of `searches`
/// searches are written (`cache:stats` of all days sums to it).
async fn wait_for_log(url: &str, prefix: &str, ids: &BTreeSet<String>, searches: i64) {
    eventually_within(
        Duration::from_secs(15),
        "every record and counter of the search log",
        || async {
            let mut store = LogStore::new(url).await;
            if !store.search_ids(prefix).await.is_superset(ids) {
                return None;
            }
            let mut total = 0;
            for key in store.scan(&format!("{prefix}cache:stats:*")).await {
                total += store.hash_total(&key).await;
            }
            (total >= searches).then_some(())
        },
    )
    .await;
}

fn zset(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn hash(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn history_entry(sent: &Sent, timestamp: &str, answer: &Answer) -> Value {
    json!({
        "search_id": sent.id,
        "timestamp": timestamp,
        "query": sent.query,
        "intent": answer.intent,
        "results_count": answer.results,
        "cache": sent.cache,
    })
}

async fn history(store: &mut LogStore, key: &str) -> Vec<Value> {
    store
        .list(key)
        .await
        .iter()
        .map(|e| serde_json::from_str(e).expect("history entries are JSON"))
        .collect()
}

/// A key of the cache, not of the search log: an entry or a tag index.
fn is_cache_entry(key: &str) -> bool {
    key.contains(":cache:") || key.starts_with("cache:global:") || key.starts_with("cache:tag:")
}

#[tokio::test]
async fn a_mix_of_searches_leaves_exactly_the_records_and_counters_of_the_layout() {
    let (redis, _backend, proxy) = setup().await;
    let u1a = Who {
        user: Some("u1"),
        uuid: Some("uuid-1"),
        session: Some("sess-a"),
    };
    let u1b = Who {
        session: Some("sess-b"),
        ..user("u1")
    };
    let u2 = Who {
        user: Some("u2"),
        uuid: Some("uuid-2"),
        session: Some("sess-c"),
    };

    let a = search(&proxy, u1a, "milk").await;
    let b = search(&proxy, u1b, "  MILK ").await;
    let c = search(&proxy, u2, "Bread  Rolls").await;
    let d = search(&proxy, user("u1"), "add milk to cart").await;
    let e = search(&proxy, u2, "what did I buy").await;
    let f = search(&proxy, user("u1"), "unicorn steak").await;
    // In the shared scope only the normal spelling fills the entry; any
    // spelling is then answered from it (docs/keys-and-security.md, "Security model").
    let g = search(&proxy, ANONYMOUS, "milk").await;
    let h = search(&proxy, ANONYMOUS, "Milk").await;
    let script = [
        (&a, &MILK, "miss"),
        (&b, &MILK, "hit"),
        (&c, &BREAD, "miss"),
        (&d, &CART, "bypass"),
        (&e, &ORDERS, "miss"),
        (&f, &NOTHING, "miss"),
        (&g, &MILK, "miss"),
        (&h, &MILK, "hit"),
    ];
    for (sent, _, cache) in &script {
        assert_eq!(sent.cache, *cache, "X-Cache of {:?}", sent.query);
    }
    let ids: BTreeSet<String> = script.iter().map(|(s, _, _)| s.id.clone()).collect();
    assert_eq!(ids.len(), script.len(), "every search has its own id");

    wait_for_log(&redis.url(), "", &ids, script.len() as i64).await;
    let mut store = LogStore::new(&redis.url()).await;

    let mut stamps = BTreeMap::new();
    for (sent, answer, _) in &script {
        let ts = assert_record(&mut store, "", sent, answer).await;
        stamps.insert(sent.id.clone(), ts);
    }
    let ts = |s: &Sent| stamps[&s.id].clone();
    let dates: BTreeSet<String> = stamps.values().map(|t| date_and_hour(t).0).collect();
    assert_eq!(
        dates.len(),
        1,
        "the script ran within one UTC day: {dates:?}"
    );
    let day = dates.into_iter().next().expect("one date");

    let daily = store.zset(&format!("searches:daily:{day}")).await;
    let expected_daily: BTreeMap<String, f64> = stamps
        .iter()
        .map(|(id, t)| (id.clone(), rfc3339_ms(t) as f64))
        .collect();
    assert_eq!(
        daily, expected_daily,
        "searches:daily: ids scored by epoch ms"
    );

    let mut hourly: BTreeMap<String, String> = BTreeMap::new();
    for t in stamps.values() {
        let hour = date_and_hour(t).1;
        let n: u32 = hourly.get(&hour).map_or(0, |n| n.parse().expect("int"));
        hourly.insert(hour, (n + 1).to_string());
    }
    assert_eq!(store.hash(&format!("searches:hourly:{day}")).await, hourly);

    assert_eq!(
        history(&mut store, "user:u1:searches").await,
        vec![
            history_entry(&f, &ts(&f), &NOTHING),
            history_entry(&d, &ts(&d), &CART),
            history_entry(&b, &ts(&b), &MILK),
            history_entry(&a, &ts(&a), &MILK),
        ],
        "u1's history, newest first"
    );
    assert_eq!(
        history(&mut store, "user:u2:searches").await,
        vec![
            history_entry(&e, &ts(&e), &ORDERS),
            history_entry(&c, &ts(&c), &BREAD),
        ],
        "u2's history, newest first"
    );

    assert_eq!(
        store.hash("user:u1:profile").await,
        hash(&[
            ("first_seen", &ts(&a)),
            ("last_seen", &ts(&f)),
            ("search_count", "4"),
            ("intent:product_search", "3"),
            ("intent:add_to_order", "1"),
            ("last_session_id", "sess-b"),
            ("user_uuid", "uuid-1"),
        ]),
        "u1's profile"
    );
    assert_eq!(
        store.hash("user:u2:profile").await,
        hash(&[
            ("first_seen", &ts(&c)),
            ("last_seen", &ts(&e)),
            ("search_count", "2"),
            ("intent:product_search", "1"),
            ("intent:list_order", "1"),
            ("last_session_id", "sess-c"),
            ("user_uuid", "uuid-2"),
        ]),
        "u2's profile"
    );

    assert_eq!(
        store.hash(&format!("intent:stats:{day}")).await,
        hash(&[
            ("product_search", "6"),
            ("add_to_order", "1"),
            ("list_order", "1"),
        ])
    );
    assert_eq!(
        store.zset(&format!("products:popular:{day}")).await,
        zset(&[
            ("p1", 5.0),
            ("p2", 4.0),
            ("p3", 4.0),
            ("p4", 1.0),
            ("p5", 1.0),
            ("p6", 1.0),
        ]),
        "a product counts once per search, however often it is listed"
    );
    assert_eq!(
        store.zset(&format!("supplier:s1:queries:{day}")).await,
        zset(&[("milk", 4.0), ("add milk to cart", 1.0)]),
        "a supplier counts once per search, however many of its products match"
    );
    assert_eq!(
        store.zset(&format!("supplier:s2:queries:{day}")).await,
        zset(&[("milk", 4.0), ("bread rolls", 1.0)])
    );
    assert_eq!(
        store.zset(&format!("supplier:s3:queries:{day}")).await,
        zset(&[("bread rolls", 1.0), ("what did i buy", 1.0)])
    );
    assert_eq!(
        store.zset(&format!("queries:popular:{day}")).await,
        zset(&[
            ("milk", 4.0),
            ("bread rolls", 1.0),
            ("add milk to cart", 1.0),
            ("what did i buy", 1.0),
            ("unicorn steak", 1.0),
        ])
    );
    assert_eq!(
        store.zset(&format!("queries:zero:{day}")).await,
        zset(&[("unicorn steak", 1.0)])
    );
    let mut cache_stats = store.hash(&format!("cache:stats:{day}")).await;
    // A result that never happened may be absent or 0.
    cache_stats.retain(|_, n| n != "0");
    assert_eq!(
        cache_stats,
        hash(&[("hit", "2"), ("miss", "5"), ("bypass", "1")])
    );

    let mut expected_keys: BTreeSet<String> = ids.iter().map(|id| format!("search:{id}")).collect();
    for key in [
        "searches:daily:",
        "searches:hourly:",
        "intent:stats:",
        "products:popular:",
        "supplier:s1:queries:",
        "supplier:s2:queries:",
        "supplier:s3:queries:",
        "queries:popular:",
        "queries:zero:",
        "cache:stats:",
    ] {
        expected_keys.insert(format!("{key}{day}"));
    }
    for key in [
        "user:u1:searches",
        "user:u1:profile",
        "user:u2:searches",
        "user:u2:profile",
    ] {
        expected_keys.insert(key.to_string());
    }
    let mut log_keys = store.all_keys().await;
    log_keys.retain(|k| !is_cache_entry(k));
    assert_eq!(
        log_keys, expected_keys,
        "the search log wrote exactly the keys of the layout"
    );
}

#[tokio::test]
async fn product_suppliers_names_each_product_once() {
    let (redis, _backend, proxy) = setup().await;
    // The milk answer lists p1 twice.
    let milk = search(&proxy, user("u1"), "milk").await;
    let ids = BTreeSet::from([milk.id.clone()]);
    LogStore::new(&redis.url())
        .await
        .wait_for_records("", &ids, WAIT)
        .await;
    let record = LogStore::new(&redis.url())
        .await
        .hash(&format!("search:{}", milk.id))
        .await;
    let pairs = json_object_pairs(&record["product_suppliers"]);
    let expected: Vec<(String, String)> = MILK
        .product_suppliers
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
    assert_eq!(
        pairs, expected,
        "product_suppliers: one member per product, in result order (raw {:?})",
        record["product_suppliers"]
    );
}

#[tokio::test]
async fn every_logged_answer_carries_a_search_id_and_no_other_does() {
    let (redis, backend, proxy) = setup().await;

    let unmatched = proxy.get("/static/app.js").send().await;
    assert_eq!(unmatched.status, 200);
    assert_eq!(unmatched.x_cache(), None, "{unmatched:?}");
    let order = proxy
        .post("/api/v1/order/confirm")
        .header("x-user-id", "u1")
        .json(&json!({"query": "milk", "order_id": "o1"}))
        .send()
        .await;
    assert_bypass(&order, "scope-off");
    let no_query = proxy
        .search(Some("u1"), json!({"category": "dairy"}))
        .send()
        .await;
    assert_bypass(&no_query, "no-query");
    let no_q_param = proxy
        .get("/api/v1/search?category=dairy")
        .header("x-user-id", "u1")
        .send()
        .await;
    assert_bypass(&no_q_param, "no-query");
    for resp in [&unmatched, &order, &no_query, &no_q_param] {
        assert_eq!(search_id(resp), None, "an unlogged answer: {resp:?}");
    }
    assert_eq!(backend.count(), 4, "every unlogged request was answered");

    let miss = search(&proxy, user("u1"), "milk").await;
    let hit = search(&proxy, user("u1"), "milk").await;
    let bypass = search(&proxy, user("u1"), "add milk to cart").await;
    let get_miss = proxy
        .get("/api/v1/search?q=bread+rolls")
        .header("x-user-id", "u1")
        .send()
        .await;
    assert_eq!(get_miss.x_cache(), Some("MISS"), "{get_miss:?}");
    assert_eq!(
        [miss.cache, hit.cache, bypass.cache],
        ["miss", "hit", "bypass"]
    );
    let ids = BTreeSet::from([miss.id, hit.id, bypass.id, logged_id(&get_miss)]);
    assert_eq!(ids.len(), 4, "each logged answer has its own id");

    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &ids, WAIT).await;
    // Events are written in the order they were queued: once the last ones
    // are in, a record of an earlier unlogged request would be too.
    assert_eq!(
        store.search_ids("").await,
        ids,
        "only the logged answers have records"
    );
}

#[tokio::test]
async fn the_history_keeps_the_newest_searches_up_to_the_limit() {
    let (redis, _backend, proxy) = setup_log(LogConfig::new().events("history_limit = 3")).await;
    let mut sent = Vec::new();
    for query in ["apples", "bananas", "cherries", "dates", "elderberries"] {
        sent.push(search(&proxy, user("u1"), query).await);
    }
    let ids: BTreeSet<String> = sent.iter().map(|s| s.id.clone()).collect();
    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &ids, WAIT).await;

    let history: Vec<(String, String)> = store
        .list("user:u1:searches")
        .await
        .iter()
        .map(|e| {
            let entry: Value = serde_json::from_str(e).expect("history entries are JSON");
            (
                entry["search_id"].as_str().expect("search_id").to_owned(),
                entry["query"].as_str().expect("query").to_owned(),
            )
        })
        .collect();
    let newest_three: Vec<(String, String)> = sent
        .iter()
        .rev()
        .take(3)
        .map(|s| (s.id.clone(), s.query.to_string()))
        .collect();
    assert_eq!(history, newest_three, "the last 3 searches, newest first");
    assert_eq!(
        store.hash("user:u1:profile").await["search_count"],
        "5",
        "the profile counts every search, not only those kept"
    );
}

#[tokio::test]
async fn the_profile_keeps_the_applications_fields_and_expires_with_the_retention() {
    let (redis, _backend, proxy) = setup_log(
        LogConfig::new()
            .events(r#"retention = "2h""#)
            .events(r#"record_retention = "1h""#),
    )
    .await;
    let mut store = LogStore::new(&redis.url()).await;
    store
        .hset("user:u1:profile", "preferences", r#"{"organic":true}"#)
        .await;
    store.hset("user:u1:profile", "tier", "gold").await;

    let sent = [
        search(&proxy, user("u1"), "milk").await,
        search(&proxy, user("u1"), "milk").await,
        search(&proxy, user("u1"), "add milk to cart").await,
        search(&proxy, user("u1"), "unicorn steak").await,
        search(&proxy, ANONYMOUS, "bread rolls").await,
    ];
    let ids: BTreeSet<String> = sent.iter().map(|s| s.id.clone()).collect();
    wait_for_log(&redis.url(), "", &ids, sent.len() as i64).await;

    let profile = store.hash("user:u1:profile").await;
    assert_eq!(profile["preferences"], r#"{"organic":true}"#, "{profile:?}");
    assert_eq!(profile["tier"], "gold", "{profile:?}");
    assert_eq!(profile["search_count"], "4", "{profile:?}");
    // EXPIRE = retention, refreshed on each write: ids seen once do not
    // stay in Redis for good.
    let url = redis.url();
    let profile_ttl = || async { LogStore::new(&url).await.ttl("user:u1:profile").await };
    eventually("the profile expires with the retention of 2h", || async {
        let ttl = profile_ttl().await;
        (7000 < ttl && ttl <= 7200).then_some(())
    })
    .await;
    // Each write refreshes it.
    let mut conn = redis.conn().await;
    let _: i64 = redis::cmd("EXPIRE")
        .arg("user:u1:profile")
        .arg(100)
        .query_async(&mut conn)
        .await
        .expect("EXPIRE");
    search(&proxy, user("u1"), "milk").await;
    eventually_within(
        Duration::from_secs(15),
        "a write refreshes the profile's TTL",
        || async { (7000 < profile_ttl().await).then_some(()) },
    )
    .await;

    let mut families = BTreeSet::new();
    for key in store.all_keys().await {
        if key == "user:u1:profile" || is_cache_entry(&key) {
            continue;
        }
        let ttl = store.ttl(&key).await;
        let family: Vec<&str> = key.split(':').collect();
        // Records and their daily index: record_retention; the rest:
        // retention.
        if matches!(family[..], ["search", _] | ["searches", "daily", _]) {
            assert!(
                3400 < ttl && ttl <= 3600,
                "{key} expires with the record retention of 1h, TTL {ttl}"
            );
        } else {
            assert!(
                7000 < ttl && ttl <= 7200,
                "{key} expires with the retention of 2h, TTL {ttl}"
            );
        }
        families.insert(match family[..] {
            ["search", _] => "search".to_string(),
            ["user", _, kind] => format!("user:{kind}"),
            ["supplier", _, kind, _] => format!("supplier:{kind}"),
            [a, b, _] => format!("{a}:{b}"),
            _ => key.clone(),
        });
    }
    let expected: BTreeSet<String> = [
        "search",
        "searches:daily",
        "searches:hourly",
        "user:searches",
        "intent:stats",
        "products:popular",
        "supplier:queries",
        "queries:popular",
        "queries:zero",
        "cache:stats",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(families, expected, "every kind of log key was checked");
}

#[tokio::test]
async fn every_key_lives_under_the_key_prefix() {
    let prefix = "app1:";
    let (redis, _backend, proxy) = setup_log(LogConfig::new().key_prefix(prefix)).await;
    let sent = [
        search(&proxy, user("u1"), "milk").await,
        search(&proxy, user("u1"), "milk").await,
        search(&proxy, user("u1"), "add milk to cart").await,
        search(&proxy, user("u1"), "unicorn steak").await,
        search(&proxy, ANONYMOUS, "bread rolls").await,
        search(&proxy, ANONYMOUS, "bread rolls").await,
    ];
    let ids: BTreeSet<String> = sent.iter().map(|s| s.id.clone()).collect();
    wait_for_log(&redis.url(), prefix, &ids, sent.len() as i64).await;

    let mut store = LogStore::new(&redis.url()).await;
    let keys = store.all_keys().await;
    let outside: Vec<&String> = keys.iter().filter(|k| !k.starts_with(prefix)).collect();
    assert!(outside.is_empty(), "keys outside {prefix:?}: {outside:?}");
    assert_eq!(store.search_ids(prefix).await, ids);

    let unprefixed: BTreeSet<&str> = keys.iter().map(|k| &k[prefix.len()..]).collect();
    let day =
        date_and_hour(&store.hash(&format!("{prefix}search:{}", sent[0].id)).await["timestamp"]).0;
    for key in [
        format!("searches:daily:{day}"),
        format!("searches:hourly:{day}"),
        "user:u1:searches".to_string(),
        "user:u1:profile".to_string(),
        format!("intent:stats:{day}"),
        format!("products:popular:{day}"),
        format!("supplier:s1:queries:{day}"),
        format!("queries:popular:{day}"),
        format!("queries:zero:{day}"),
        format!("cache:stats:{day}"),
    ] {
        assert!(
            unprefixed.contains(key.as_str()),
            "{prefix}{key} in {keys:?}"
        );
    }
    assert!(
        unprefixed.iter().any(|k| k.starts_with("user:u1:cache:")),
        "user cache entries are prefixed too: {keys:?}"
    );
    assert!(
        unprefixed.iter().any(|k| k.starts_with("cache:global:")),
        "global cache entries are prefixed too: {keys:?}"
    );
}

/// docs/contract.md section 5: a batch is written at `batch_max` events or after
/// `flush_interval`, whichever comes first. With a flush interval far longer
/// than the wait, searches sent one after another reach Redis because their
/// batch filled, not because the interval ran out.
#[tokio::test]
async fn a_full_batch_is_written_without_waiting_out_flush_interval() {
    let config = LogConfig::new()
        .events("batch_max = 4")
        .events(r#"flush_interval = "120s""#);
    let (redis, _backend, proxy) = setup_log(config).await;
    let mut ids = BTreeSet::new();
    for query in ["apples", "bananas", "cherries", "dates"] {
        ids.insert(search(&proxy, user("u1"), query).await.id);
    }
    let mut store = LogStore::new(&redis.url()).await;
    store
        .wait_for_records("", &ids, Duration::from_secs(20))
        .await;
    assert_eq!(store.search_ids("").await, ids);
}

/// A flush of more distinct counters than the writer hands Redis at once
/// (it sends them in parts, between batches of records) arrives whole: every
/// member, every count.
#[tokio::test]
async fn a_flush_of_thousands_of_distinct_counters_arrives_whole() {
    const SEARCHES: usize = 600;
    let config = LogConfig::new().events(r#"counter_flush = "3s""#);
    let (redis, _backend, proxy) = setup_log(config).await;
    for i in 0..SEARCHES {
        let mut results: Vec<Value> = (0..10)
            .map(|k| json!({"product_id": format!("p{i}-{k}"), "supplier": format!("s{k}")}))
            .collect();
        results.push(json!({"product_id": "everywhere", "supplier": "s0"}));
        let body = json!({"query": format!("q{i}"), "results": results});
        let r = Req::new(proxy.admin, "POST", "/v1/searches")
            .json(&body)
            .send()
            .await;
        assert_eq!(r.status, 202, "{r:?}");
    }
    let today = leafcache::admin::dates::format(leafcache::admin::dates::today());
    let products = format!("products:popular:{today}");
    let url = redis.url();
    eventually_within(Duration::from_secs(30), "every product counted", || {
        let (url, key) = (url.clone(), products.clone());
        async move {
            let counted = LogStore::new(&url).await.zset(&key).await.len();
            (counted == SEARCHES * 10 + 1).then_some(())
        }
    })
    .await;
    let mut store = LogStore::new(&url).await;
    let popular = store.zset(&products).await;
    assert_eq!(popular["everywhere"], SEARCHES as f64);
    assert!(
        popular.iter().all(|(p, n)| p == "everywhere" || *n == 1.0),
        "every other product counted once"
    );
    for key in [
        format!("queries:popular:{today}"),
        format!("supplier:s3:queries:{today}"),
        format!("supplier:s0:queries:{today}"),
    ] {
        let counts = store.zset(&key).await;
        assert_eq!(counts.len(), SEARCHES, "{key}");
        assert!(
            counts.values().all(|n| *n == 1.0),
            "{key}: a supplier counts once per search"
        );
    }
    let hourly = store.hash_total(&format!("searches:hourly:{today}")).await;
    assert_eq!(hourly, SEARCHES as i64);
}

/// Counters are summed in process for `counter_flush`, and what is summed
/// when the proxy is stopped (SIGTERM) is written, not lost.
#[tokio::test]
async fn sigterm_writes_the_counters_summed_so_far() {
    let config = LogConfig::new().events(r#"counter_flush = "1h""#);
    let (redis, _backend, mut proxy) = setup_log(config).await;
    let mut ids = BTreeSet::new();
    for query in ["apples", "bananas", "apples"] {
        ids.insert(search(&proxy, user("u1"), query).await.id);
    }
    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &ids, WAIT).await;
    let today = leafcache::admin::dates::format(leafcache::admin::dates::today());
    let hourly = format!("searches:hourly:{today}");
    assert_eq!(
        store.hash_total(&hourly).await,
        0,
        "records are written at once, counters only after counter_flush"
    );

    proxy.terminate();
    let status = proxy.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert_eq!(store.hash_total(&hourly).await, 3);
    assert_eq!(
        store.zset(&format!("queries:popular:{today}")).await,
        zset(&[("apples", 2.0), ("bananas", 1.0)])
    );
}
