//! Criterion micro-benchmarks of the pure pieces every request pays for:
//! key derivation (query normalization and the SHA-256 over the key fields),
//! the cache envelope (encode on store, decode on every Redis-tier hit) and
//! the answer of an L1 hit (its headers and `Cache-Status`).
//!
//! Run: `cargo bench --bench micro` (all), `cargo bench --bench micro -- key`
//! (one group). Inputs are the shapes `bench/compare.sh` sends: a GET search
//! with a query string, a POST search with a small JSON body, and a ~3 KB
//! answer with 10 products.

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, StatusCode};
use leafcache::answer::SearchMeta;
use leafcache::cache::envelope::{self, Entry};
use leafcache::key::{self, BodyKey, KeyInput};
use leafcache::request_json::{self, Body};

fn bench_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("key");

    g.bench_function("normalize_query/ascii", |b| {
        b.iter(|| key::normalize_query(black_box("  Organic   Whole MILK 2%  ")))
    });
    g.bench_function("normalize_query/unicode", |b| {
        b.iter(|| key::normalize_query(black_box("  Crème  fraîche ＢＩＯ  ")))
    });

    // GET /api/v1/search?q=query+number+17 with x-user-id and one vary header:
    // what the proxy hashes for a GET search.
    let accept = b"gzip, br".as_slice();
    let vary = [Some(accept)];
    // The client's host, keyed as the backend gets it (X-Forwarded-Host).
    let host = [("host", Cow::Borrowed(b"shop.example".as_slice()))];
    let post_headers = [
        ("host", Cow::Borrowed(b"shop.example".as_slice())),
        (
            "content-type",
            Cow::Borrowed(b"application/json".as_slice()),
        ),
    ];
    g.bench_function("derive/get", |b| {
        b.iter(|| {
            let q = key::normalize_query(black_box("query number 17"));
            key::derive(&KeyInput {
                route: "search",
                method: "GET",
                path: "/api/v1/search",
                query: Some(&q),
                body: BodyKey::None,
                params: &[],
                vary: &vary,
                headers: &host,
            })
        })
    });

    // GET with other query parameters, which enter the key sorted.
    g.bench_function("derive/get_with_params", |b| {
        b.iter(|| {
            let raw = black_box("q=query+number+17&page=2&sort=price&limit=20");
            let params = key::keyed_params(Some(raw), |name| name == "q");
            let q = key::normalize_query("query number 17");
            key::derive(&KeyInput {
                route: "search",
                method: "GET",
                path: "/api/v1/search",
                query: Some(&q),
                body: BodyKey::None,
                params: &params,
                vary: &vary,
                headers: &host,
            })
        })
    });

    g.bench_function("hex", |b| {
        let h = key::derive(&KeyInput {
            route: "search",
            method: "GET",
            path: "/api/v1/search",
            query: Some("milk"),
            body: BodyKey::None,
            params: &[],
            vary: &[],
            headers: &[],
        });
        b.iter(|| black_box(h).to_hex())
    });
    // POST {"query", "user_id", "filters", "limit"}: parse the body, drop the
    // query and identity fields, hash the rest in canonical form. This is
    // the work a POST hit does before it can look anything up.
    let body = Bytes::from_static(
        br#"{"query":"Query  Number 17","user_id":"user-3","session_id":"s-9","filters":{"organic":true,"max_price":12.5,"categories":["dairy","bakery"]},"limit":10}"#,
    );
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("derive/post_json", |b| {
        b.iter(|| {
            let Body::Json(mut doc) = request_json::parse(black_box(&body)) else {
                panic!("valid JSON");
            };
            let q = doc["query"].as_str().map(key::normalize_query);
            for pointer in ["/query", "/user_id", "/session_id"] {
                key::remove_pointer(&mut doc, pointer);
            }
            let params: [&str; 0] = [];
            key::derive(&KeyInput {
                route: "search",
                method: "POST",
                path: "/api/v1/search",
                query: q.as_deref(),
                body: BodyKey::Json(&doc),
                params: &params,
                vary: &vary,
                headers: &post_headers,
            })
        })
    });
    g.finish();
}

/// A stored search answer as the proxy keeps it: ~3 KB of JSON, the headers
/// a backend sends, and the search facts of 10 products.
fn sample_entry() -> Entry {
    let mut body = String::from(
        r#"{"query":"query number 17","intent":"product_search","confidence":0.9,"products":["#,
    );
    for i in 0..10 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"product_id":"p{i}4711","supplier":"green-valley","name":"organic whole milk","price":3.49,"description":"organic whole milk from green-valley: fresh, local and delivered today; a product for the query query number 17 and shopper user-3."}}"#
        ));
    }
    body.push_str("]}");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "date",
        HeaderValue::from_static("Wed, 25 Nov 2026 10:00:00 GMT"),
    );
    headers.insert("content-length", HeaderValue::from(body.len()));
    Entry {
        status: StatusCode::OK,
        headers,
        body: Bytes::from(body),
        stored_at_ms: leafcache::time::now_ms(),
        fresh_for: Duration::from_secs(3600),
        meta: Arc::new(SearchMeta {
            intent: Some("product_search".into()),
            confidence: Some(0.9),
            results_count: 10,
            products: (0..10)
                .map(|i| (format!("p{i}4711"), Some("green-valley".to_string())))
                .collect(),
            ..SearchMeta::default()
        }),
        initial_age: Duration::ZERO,
        variant: None,
    }
}

fn bench_envelope(c: &mut Criterion) {
    let entry = sample_entry();
    let encoded = envelope::encode(&entry);
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function("encode/3kb", |b| {
        b.iter(|| envelope::encode(black_box(&entry)))
    });
    g.bench_function("decode/3kb", |b| {
        b.iter(|| envelope::decode(black_box(encoded.clone())).expect("decodes"))
    });
    g.finish();
}

/// What a miss adds to read a search answer's facts: the plain 3 KB answer
/// (strict JSON, then the route's pointers), and the same answer gzipped as
/// FastAPI's GZipMiddleware sends it (decode, then the same read).
fn bench_answer_read(c: &mut Criterion) {
    use std::io::Write as _;
    let body = sample_entry().body;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
    gz.write_all(&body).expect("in memory");
    let gzipped = gz.finish().expect("in memory");
    let config = leafcache::config::Config::parse(
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n[[route]]\nname = \"s\"\npath = \"/s\"\n\
         query = [\"query:q\"]\nbypass_intents = [\"add_to_order\"]\n",
        None,
    )
    .expect("a bench config");
    let route = &config.routes[0];
    let plain_headers = HeaderMap::new();
    let mut gzip_headers = HeaderMap::new();
    gzip_headers.insert("content-encoding", HeaderValue::from_static("gzip"));
    let mut g = c.benchmark_group("answer_read");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("plain/3kb", |b| {
        b.iter(|| leafcache::answer::read(route, &plain_headers, black_box(&body), 1 << 20))
    });
    g.bench_function("gzip/3kb", |b| {
        b.iter(|| leafcache::answer::read(route, &gzip_headers, black_box(&gzipped), 1 << 20))
    });
    g.finish();
}

/// What an L1 hit builds: the stored headers plus `Age`, `X-Cache` and
/// `Cache-Status`, from the copy L1 keeps.
fn bench_hit(c: &mut Criterion) {
    use leafcache::proxy::respond;
    use leafcache::served::Served;
    let l1 = leafcache::cache::l1::L1::new(1 << 20, Duration::from_secs(60)).expect("an L1");
    l1.insert("k".into(), Arc::new(sample_entry()));
    let entry = l1.get("k").expect("the L1 copy");
    let hash = key::derive(&KeyInput {
        route: "search",
        method: "GET",
        path: "/api/v1/search",
        query: Some("query number 17"),
        body: BodyKey::None,
        params: &[],
        vary: &[],
        headers: &[],
    });
    let mut g = c.benchmark_group("hit");
    g.bench_function("cache_status", |b| {
        b.iter(|| respond::hit_status(black_box(&hash), black_box(3512)))
    });
    g.bench_function("from_entry", |b| {
        b.iter(|| {
            respond::from_entry(
                black_box(&entry),
                Served::Hit,
                respond::hit_status(&hash, 3512),
            )
        })
    });
    g.finish();
}

/// The search log's counters over one flush interval of a hit-heavy load:
/// 25,000 searches of 10,000 cached answers (200 queries x 50 users, each
/// answer listing 10 products of 20 suppliers), added as they arrive, then
/// folded into per-day counts as before a flush.
fn bench_counters(c: &mut Criterion) {
    use leafcache::events::counters::Counters;
    use leafcache::events::{CacheResult, SearchEvent, new_search_id};
    let answers: Vec<(String, Arc<SearchMeta>)> = (0..10_000)
        .map(|i| {
            let q = i % 200;
            let meta = SearchMeta {
                intent: Some("product_search".into()),
                results_count: 10,
                products: (0..10)
                    .map(|p| {
                        (
                            format!("p{}", q * 7 + p),
                            Some(format!("s{}", (q + p) % 20)),
                        )
                    })
                    .collect(),
                ..SearchMeta::default()
            };
            (format!("query number {q}"), Arc::new(meta))
        })
        .collect();
    let events: Vec<SearchEvent> = (0..25_000)
        .map(|i| {
            let (query, meta) = &answers[(i * 7919) % answers.len()];
            SearchEvent {
                search_id: new_search_id(),
                timestamp_ms: 1_764_106_056_927,
                user_id: Some(format!("u{}", i % 50)),
                user_uuid: None,
                session_id: None,
                query: query.clone(),
                query_normalized: query.clone(),
                meta: meta.clone(),
                response_time_ms: 0.4,
                cache: CacheResult::Hit,
                status: 200,
                route: "search".into(),
            }
        })
        .collect();
    let mut g = c.benchmark_group("counters");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("add_and_fold/25k_searches_10k_answers", |b| {
        b.iter(|| {
            let mut counters = Counters::default();
            for ev in &events {
                counters.add(black_box(ev));
            }
            counters.fold();
            counters
        })
    });
    let mut added = Counters::default();
    for ev in &events {
        added.add(ev);
    }
    g.bench_function("fold/25k_searches_10k_answers", |b| {
        b.iter_batched(
            || added.clone(),
            |mut counters| {
                counters.fold();
                counters
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_key,
    bench_envelope,
    bench_answer_read,
    bench_hit,
    bench_counters
);
criterion_main!(benches);
