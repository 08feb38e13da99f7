//! Answers leafcache cannot read exactly as a client reads them never make a
//! cart answer cacheable (docs/keys-and-security.md, "Compressed answers"): each shape below
//! hides or blurs an `add_to_order` intent, and each must stream to the
//! client, stay out of the cache, be logged with its reason and be counted
//! on `/metrics`. The real binary, a real redis-server.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::events::{LogConfig, LogProxy};
use common::{Backend, POLL_EVERY, Redis, Reply, ReplyBody, Req, WAIT};
use serde_json::{Value, json};

const CART: &str = r#"{"intent":"add_to_order","confidence":0.9,"products":[{"product_id":"p1"}]}"#;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("in memory");
    e.finish().expect("in memory")
}

/// A shape: its name (the query that asks for it), its headers, its body,
/// and the reason the record must give (`None`: read, but a cart intent).
struct Shape {
    query: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    reason: Option<&'static str>,
}

fn shapes() -> Vec<Shape> {
    let json = ("content-type", "application/json");
    let mut trailing_member = gzip(br#"{"intent":"product_search"}"#);
    trailing_member.extend_from_slice(&gzip(CART.as_bytes()));
    let bomb = {
        let mut doc = br#"{"intent":"add_to_order","pad":""#.to_vec();
        doc.extend(std::iter::repeat_n(b' ', 2 << 20));
        doc.extend_from_slice(br#""}"#);
        gzip(&doc)
    };
    let shape = |query, headers: Vec<_>, body: &[u8], reason| Shape {
        query,
        headers,
        body: body.to_vec(),
        reason,
    };
    vec![
        shape(
            "gzipped intent",
            vec![json, ("content-encoding", "gzip")],
            &gzip(br#"{"intent":" Add_To_Order ","products":[]}"#),
            None,
        ),
        shape(
            "unknown coding",
            vec![json, ("content-encoding", "compress")],
            CART.as_bytes(),
            Some("coding"),
        ),
        shape(
            "second gzip member",
            vec![json, ("content-encoding", "gzip")],
            &trailing_member,
            Some("coding"),
        ),
        shape(
            "gzip bomb",
            vec![json, ("content-encoding", "gzip")],
            &bomb,
            Some("too_large"),
        ),
        shape(
            "bom prefix",
            vec![json],
            &[b"\xEF\xBB\xBF".as_slice(), CART.as_bytes()].concat(),
            Some("not_json"),
        ),
        shape(
            "utf16 charset",
            vec![("content-type", "application/json; charset=utf-16")],
            CART.as_bytes(),
            Some("not_json"),
        ),
        shape(
            "nan confidence",
            vec![json],
            br#"{"intent":"add_to_order","confidence":NaN}"#,
            Some("not_json"),
        ),
        shape(
            "two documents",
            vec![json],
            br#"{"intent":"product_search"}{"intent":"add_to_order"}"#,
            Some("not_json"),
        ),
        shape(
            "intent twice",
            vec![json],
            br#"{"intent":"product_search","intent":"add_to_order"}"#,
            Some("ambiguous"),
        ),
        shape(
            "intent list",
            vec![json],
            br#"{"intent":["add_to_order"]}"#,
            Some("intent_type"),
        ),
    ]
}

async fn record(proxy: &LogProxy, search_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = Req::new(proxy.admin, "GET", &format!("/v1/searches/{search_id}"))
            .send()
            .await;
        if resp.status == 200 {
            return resp.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record: {resp:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// `leafcache_answers_unreadable_total{reason="…"}` on `/metrics`.
async fn unreadable_count(proxy: &LogProxy, reason: &str) -> u64 {
    let text = Req::new(proxy.admin, "GET", "/metrics").send().await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    let series = format!("leafcache_answers_unreadable_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}")) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_do_not_read_exactly_are_never_stored() {
    let backend = Backend::start(|req| {
        let query = req.json()["query"].as_str().unwrap_or("").to_owned();
        let shape = shapes()
            .into_iter()
            .find(|s| s.query == query)
            .expect("a known shape");
        Reply {
            status: 200,
            headers: shape
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: ReplyBody::Full(Bytes::from(shape.body)),
            hold: None,
        }
    })
    .await;
    let redis = Redis::start().await;
    let proxy = LogProxy::start(&LogConfig::new(), &backend.url(), &redis.url()).await;

    for shape in shapes() {
        let before = backend.count();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let resp = proxy
                .search(Some("u1"), json!({"query": shape.query}))
                .send()
                .await;
            assert_eq!(resp.status, 200, "{}: {resp:?}", shape.query);
            assert_eq!(resp.x_cache(), Some("MISS"), "{}: {resp:?}", shape.query);
            // The client gets the bytes as the backend sent them.
            assert_eq!(resp.body, shape.body, "{}", shape.query);
            ids.push(resp.header("x-search-id").expect("logged").to_owned());
        }
        assert_eq!(backend.count() - before, 2, "{} was stored", shape.query);
        let logged = record(&proxy, &ids[0]).await;
        assert_eq!(
            logged["answer_unreadable"],
            shape.reason.map_or(Value::Null, Value::from),
            "{}: {logged}",
            shape.query
        );
    }
    for (reason, shapes) in [
        ("coding", 2),
        ("too_large", 1),
        ("not_json", 4),
        ("ambiguous", 1),
        ("intent_type", 1),
    ] {
        assert_eq!(
            unreadable_count(&proxy, reason).await,
            2 * shapes,
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readable_gzipped_search_answer_is_stored_and_logged_with_its_facts() {
    let answer = json!({
        "intent": "product_search",
        "confidence": 0.8,
        "products": [{"product_id": "p1", "supplier": "s1"}, {"product_id": "p2", "supplier": "s2"}],
    });
    let backend = Backend::start(move |_| {
        Reply::json(Value::Null)
            .header("content-encoding", "gzip")
            .body(gzip(answer.to_string().as_bytes()))
    })
    .await;
    let redis = Redis::start().await;
    let proxy = LogProxy::start(&LogConfig::new(), &backend.url(), &redis.url()).await;
    let first = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(first.x_cache(), Some("MISS"));
    let second = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .send()
        .await;
    assert_eq!(second.x_cache(), Some("HIT"), "{second:?}");
    assert_eq!(second.header("content-encoding"), Some("gzip"));
    assert_eq!(backend.count(), 1);
    // The backend was asked for the one coding, not the client's list.
    assert_eq!(backend.last().header("accept-encoding"), Some("gzip"));
    let logged = record(&proxy, second.header("x-search-id").expect("logged")).await;
    assert_eq!(logged["intent"], "product_search", "{logged}");
    assert_eq!(logged["product_ids"], json!(["p1", "p2"]), "{logged}");
    assert_eq!(logged["supplier_ids"], json!(["s1", "s2"]), "{logged}");
    assert_eq!(logged["cache"], "hit", "{logged}");
    assert_eq!(unreadable_count(&proxy, "coding").await, 0);
}
