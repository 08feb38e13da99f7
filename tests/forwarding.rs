//! What the backend sees and what the client gets back: header hygiene,
//! forwarded headers, streaming, and upstream failures (docs/contract.md section 3, steps 8,
//! 11 and 12).

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use http_body_util::BodyExt;
use serde_json::json;

/// Request hop-by-hop headers, one of them named only by `Connection`.
fn with_hop_by_hop_headers(req: Req) -> Req {
    req.header("connection", "x-hop-secret")
        .header("x-hop-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-end-to-end", "kept")
}

const REQUEST_HOP_BY_HOP: [&str; 7] = [
    "x-hop-secret",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "proxy-authorization",
    "upgrade",
];

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let requests = [
        proxy.get("/static/app.js"),
        proxy.search(Some("u1"), json!({"query": "milk"})),
    ];

    for req in requests {
        let resp = with_hop_by_hop_headers(req).send().await;
        assert_eq!(resp.status, 200);
        let seen = backend.last();
        for name in REQUEST_HOP_BY_HOP {
            assert_eq!(
                seen.header(name),
                None,
                "{name} reached the backend: {seen:?}"
            );
        }
        for value in seen.header_all("connection") {
            assert!(
                !value.to_ascii_lowercase().contains("x-hop-secret"),
                "the client's Connection reached the backend: {value:?}"
            );
        }
        assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    }
}

const RESPONSE_HOP_BY_HOP: [&str; 6] = [
    "x-backend-hop",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "trailer",
    "upgrade",
];

#[track_caller]
fn assert_no_response_hop_by_hop(resp: &Resp) {
    for name in RESPONSE_HOP_BY_HOP {
        assert_eq!(
            resp.header(name),
            None,
            "{name} reached the client: {resp:?}"
        );
    }
    for value in resp.headers.get_all("connection") {
        let value = value.to_str().unwrap_or_default().to_ascii_lowercase();
        assert!(
            !value.contains("x-backend-hop"),
            "the backend's Connection reached the client: {value:?}"
        );
    }
    assert_eq!(resp.header("x-end-to-end"), Some("kept"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_passed_back_nor_stored() {
    let redis = Redis::start().await;
    let backend = Backend::start(|req| {
        Reply::echo(req)
            .header("connection", "x-backend-hop")
            .header("x-backend-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"shop\"")
            .header("proxy-connection", "keep-alive")
            .header("trailer", "x-checksum")
            .header("upgrade", "h2c")
            .header("x-end-to-end", "kept")
    })
    .await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;

    assert_no_response_hop_by_hop(&proxy.get("/static/app.js").send().await);

    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let miss = milk.send().await;
    assert_miss_stored(&miss);
    assert_no_response_hop_by_hop(&miss);
    let hit = milk.send().await;
    assert_hit(&hit);
    assert_no_response_hop_by_hop(&hit);
}

#[tokio::test]
async fn backend_sees_its_own_host_and_the_proxys_forwarded_headers() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let requests = [
        proxy.get("/static/app.js"),
        proxy.search(Some("u1"), json!({"query": "milk"})),
    ];

    for req in requests {
        req.header("host", "shop.example")
            .header("x-forwarded-for", "10.9.8.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "spoofed.example")
            .send()
            .await;
        let seen = backend.last();
        assert_eq!(seen.header_all("host"), [backend.authority().as_str()]);
        assert_eq!(seen.header_all("x-forwarded-host"), ["shop.example"]);
        assert_eq!(
            seen.header_all("x-forwarded-for"),
            ["127.0.0.1"],
            "the client's X-Forwarded-For is replaced when not trusted"
        );
        assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
        let via = seen.header_all("via").join(", ");
        assert!(via.contains("leafcache"), "Via names leafcache: {via:?}");
    }
}

#[tokio::test]
async fn trusted_forwarded_headers_are_kept_and_extended() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search().top("trust_forwarded = true")).await;
    let requests = [
        proxy.get("/static/app.js"),
        proxy.search(Some("u1"), json!({"query": "milk"})),
    ];

    for req in requests {
        req.header("host", "internal.example")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "www.example")
            .send()
            .await;
        let seen = backend.last();
        assert_eq!(seen.header_all("host"), [backend.authority().as_str()]);
        assert_eq!(
            seen.header_all("x-forwarded-for"),
            ["203.0.113.9, 127.0.0.1"]
        );
        assert_eq!(seen.header_all("x-forwarded-proto"), ["https"]);
        assert_eq!(seen.header_all("x-forwarded-host"), ["www.example"]);
    }

    // With nothing to keep, the trusted proxy starts the chain itself.
    proxy
        .get("/static/app.js")
        .header("host", "shop.example")
        .send()
        .await;
    let seen = backend.last();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["shop.example"]);
}

/// Reads `resp` until at least `want` bytes arrived, each frame bounded by [`WAIT`].
async fn read_at_least(
    body: &mut hyper::body::Incoming,
    into: &mut BytesMut,
    want: usize,
    what: &str,
) {
    while into.len() < want {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{what}: no data within {WAIT:?} after {} bytes (is the proxy buffering?)",
                    into.len()
                )
            });
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    into.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => panic!("{what}: body error after {} bytes: {e}", into.len()),
            None => panic!("{what}: body ended after {} of {want} bytes", into.len()),
        }
    }
}

/// The backend sends the first `first_len` bytes of a 5 MB answer and then waits
/// for the test, which opens the gate only once it has read those bytes through
/// the proxy. A proxy that buffers the answer deadlocks, and the bounded reads fail.
async fn assert_streams_intact(
    gate: &Gate,
    expected: &Bytes,
    first_len: usize,
    req: Req,
) -> hyper::http::response::Parts {
    let response = req.send_streaming().await;
    let (head, mut body) = response.into_parts();
    let mut received = BytesMut::new();

    read_at_least(&mut body, &mut received, first_len, "first chunk").await;
    gate.open();
    read_at_least(&mut body, &mut received, expected.len(), "rest").await;
    let end = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("the body ends");
    assert!(end.is_none(), "no bytes beyond the backend's answer");
    assert_eq!(received.len(), expected.len());
    assert!(received.freeze() == *expected, "the 5 MB arrived intact");
    head
}

fn five_megabytes() -> Bytes {
    patterned_bytes(5 * 1024 * 1024)
}

/// A backend answering `payload`, holding everything after `first_len` on `gate`.
async fn gated_backend(payload: &Bytes, first_len: usize, gate: &Gate) -> Backend {
    let (p, g) = (payload.clone(), gate.clone());
    Backend::start(move |_| Reply::gated(p.slice(..first_len), &g, p.slice(first_len..))).await
}

#[tokio::test]
async fn a_5mb_unmatched_response_streams_through_intact() {
    let redis = Redis::start().await;
    let gate = Gate::new();
    let payload = five_megabytes();
    let first_len = 64 * 1024;
    let backend = gated_backend(&payload, first_len, &gate).await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;

    let head = assert_streams_intact(
        &gate,
        &payload,
        first_len,
        proxy.get("/downloads/catalog.bin"),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers.get("x-cache"), None, "unmatched: no X-Cache");
}

#[tokio::test]
async fn a_search_answer_above_max_object_bytes_streams_and_is_not_stored() {
    let redis = Redis::start().await;
    let gate = Gate::new();
    let payload = five_megabytes();
    // A search answer is held up to max_object_bytes, since Cache-Status must
    // say in the head whether it is stored; past that limit it must stream. So
    // the backend holds the rest only after sending more than the limit.
    let first_len = 1024 * 1024 + 64 * 1024;
    let backend = gated_backend(&payload, first_len, &gate).await;
    let config = ProxyConfig::search().cache(r#"max_object_bytes = "1MiB""#);
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    let head = assert_streams_intact(&gate, &payload, first_len, milk.clone()).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers.get("x-cache").and_then(|v| v.to_str().ok()),
        Some("MISS")
    );
    let again = milk.send().await;
    assert_miss_not_stored(&again);
    assert!(again.body == payload);
    assert_eq!(backend.count(), 2);
}

#[track_caller]
fn assert_upstream_error(resp: &Resp, status: u16, error: &str) {
    assert_eq!(resp.status, status, "{resp:?}");
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "JSON error body: {resp:?}"
    );
    let body = resp.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["detail"].is_string(), "detail is text: {body}");
}

#[tokio::test]
async fn a_closed_backend_port_answers_502() {
    let redis = Redis::start().await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start_with(&ProxyConfig::search(), &closed, &redis.url()).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    assert_upstream_error(&milk.send().await, 502, "upstream_unavailable");
    assert_upstream_error(&milk.send().await, 502, "upstream_unavailable");
    assert_upstream_error(
        &proxy.get("/static/app.js").send().await,
        502,
        "upstream_unavailable",
    );
    assert!(
        redis.cache_keys().await.is_empty(),
        "errors are never stored"
    );
}

#[tokio::test]
async fn a_backend_slower_than_upstream_timeout_answers_504() {
    let redis = Redis::start().await;
    let gate = Gate::new();
    let held = gate.clone();
    let backend = Backend::start(move |req| Reply::echo(req).hold_until(&held)).await;
    let config = ProxyConfig::search().upstream(r#"timeout = "300ms""#);
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    assert_upstream_error(&milk.send().await, 504, "upstream_timeout");
    assert_upstream_error(
        &proxy.get("/static/app.js").send().await,
        504,
        "upstream_timeout",
    );

    // Once the backend answers in time, the search is a miss: the 504 was not stored.
    gate.open();
    let answered = milk.send().await;
    assert_miss_stored(&answered);
    assert_eq!(answered.status, 200);
}

#[tokio::test]
async fn a_backend_that_closes_before_answering_gives_502() {
    let redis = Redis::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    let hang_ups = tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        }
    });
    let proxy = Proxy::start_with(&ProxyConfig::search(), &upstream, &redis.url()).await;

    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    assert_upstream_error(&resp, 502, "upstream_unavailable");
    assert_upstream_error(
        &proxy.get("/static/app.js").send().await,
        502,
        "upstream_unavailable",
    );
    hang_ups.abort();
}

#[tokio::test]
async fn a_large_request_body_on_an_unmatched_path_reaches_the_backend_intact() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let upload = patterned_bytes(3 * 1024 * 1024);

    let resp = proxy
        .post("/uploads/catalog.bin")
        .header("content-type", "application/octet-stream")
        .body(upload.clone())
        .send()
        .await;

    assert_eq!(resp.status, 200);
    assert!(backend.last().body == upload, "3 MB arrived intact");
}

/// A backend that reads each request whole, writes `answer` verbatim and hangs up.
async fn raw_backend(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // Read the whole request, so the hang-up is a clean close
                // rather than a reset.
                if !read_raw_request(&mut stream, &mut Vec::new()).await {
                    return;
                }
                let _ = stream.write_all(answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn an_answer_cut_off_mid_body_reaches_the_client_as_an_error_and_is_never_stored() {
    let redis = Redis::start().await;
    let (upstream, task) = raw_backend(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"intent\":\"product_search\",",
    )
    .await;
    let proxy = Proxy::start_with(&ProxyConfig::search(), &upstream, &redis.url()).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    for _ in 0..2 {
        match tokio::time::timeout(WAIT, milk.try_send()).await {
            Err(_) => panic!("no answer within {WAIT:?}"),
            // The error reaches the client as a broken body...
            Ok(Err(_)) => {}
            // ...or, since the proxy may hold a search answer before its head,
            // as an error status; never as a complete 200 or a hit.
            Ok(Ok(resp)) => {
                assert_ne!(
                    resp.status, 200,
                    "a truncated answer passed as whole: {resp:?}"
                );
                assert_ne!(resp.x_cache(), Some("HIT"), "{resp:?}");
            }
        }
    }
    assert!(redis.cache_keys().await.is_empty(), "nothing stored");
    task.abort();
}

#[tokio::test]
async fn a_backend_answering_garbage_gives_502() {
    let redis = Redis::start().await;
    let (upstream, task) = raw_backend(b"this is not http\r\n\r\n").await;
    let proxy = Proxy::start_with(&ProxyConfig::search(), &upstream, &redis.url()).await;

    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    assert_upstream_error(&resp, 502, "upstream_unavailable");
    assert!(redis.cache_keys().await.is_empty());
    task.abort();
}
