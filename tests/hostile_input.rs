//! Hostile and odd clients (docs/contract.md section 7, bad input): whatever a client
//! sends, the proxy answers or rejects it cleanly, caches nothing it cannot key
//! safely, and stays healthy for everyone else.

mod common;

use std::io::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// After a hostile case: an ordinary search still gets 200 and `/healthz` answers.
async fn assert_still_healthy(proxy: &Proxy) {
    let normal = proxy
        .search(Some("u-normal"), json!({"query": "bread"}))
        .send()
        .await;
    assert_eq!(
        normal.status, 200,
        "a normal search after the case: {normal:?}"
    );
    let health = Req::new(proxy.admin, "GET", "/healthz").send().await;
    assert_eq!(health.status, 200, "/healthz after the case: {health:?}");
}

/// Sends `req` twice: both bypass with `detail` and reach the backend with the
/// body unchanged; nothing is stored.
async fn assert_forwarded_unchanged_and_uncached(
    redis: &Redis,
    backend: &Backend,
    req: Req,
    body: &[u8],
    detail: &str,
) {
    for n in 1..=2 {
        let resp = req.send().await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_bypass(&resp, detail);
        assert_eq!(backend.count(), n, "request {n} reached the backend");
        assert!(
            backend.last().body == body,
            "the backend received the body byte for byte ({} bytes sent, {} received)",
            body.len(),
            backend.last().body.len()
        );
    }
    assert!(redis.cache_keys().await.is_empty(), "nothing is stored");
}

/// Writes `raw` on a new connection (the request must say `connection: close`)
/// and reads the whole answer, bounded by [`WAIT`].
async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
        stream.write_all(raw).await.expect("write the request");
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .expect("read the answer");
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("a raw request is answered within WAIT")
}

/// A search whose head carries `extra` (raw header lines, any bytes).
fn raw_search(extra: &[u8], body: &str) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(b"POST /api/v1/search HTTP/1.1\r\nhost: leafcache.test\r\n");
    raw.extend_from_slice(extra);
    write!(
        raw,
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write to a Vec");
    raw
}

fn header_of<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn invalid_json_on_the_search_route_is_forwarded_unchanged_and_bypassed() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let body: &[u8] = br#"{"query": "milk", "page": "#;
    let req = proxy
        .post("/api/v1/search")
        .header("x-user-id", "u1")
        .header("content-type", "application/json")
        .body(body);

    assert_forwarded_unchanged_and_uncached(&redis, &backend, req, body, "body-not-json").await;
    assert_still_healthy(&proxy).await;
}

#[tokio::test]
async fn a_5_mb_body_streams_to_the_backend_intact_and_uncached() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let body = patterned_bytes(5 * 1024 * 1024);
    let req = proxy
        .post("/api/v1/search")
        .header("x-user-id", "u1")
        .header("content-type", "application/json")
        .body(body.clone());

    assert_forwarded_unchanged_and_uncached(&redis, &backend, req, &body, "body-too-large").await;
    assert_still_healthy(&proxy).await;
}

#[tokio::test]
async fn a_binary_body_is_forwarded_unchanged_and_uncached() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let mut body = patterned_bytes(4096).to_vec();
    body.extend_from_slice(&[0, 0xff, 0xfe, 0, b'{', 0x80]);
    let req = proxy
        .post("/api/v1/search")
        .header("x-user-id", "u1")
        .header("content-type", "application/octet-stream")
        .body(body.clone());

    assert_forwarded_unchanged_and_uncached(&redis, &backend, req, &body, "body-not-json").await;
    assert_still_healthy(&proxy).await;
}

#[tokio::test]
async fn a_gzip_compressed_body_is_forwarded_unchanged_and_uncached() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json!({"query": "milk"}).to_string().as_bytes())
        .expect("gzip into a Vec");
    let body = Bytes::from(gz.finish().expect("finish gzip"));
    let req = proxy
        .post("/api/v1/search")
        .header("x-user-id", "u1")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body.clone());

    assert_forwarded_unchanged_and_uncached(&redis, &backend, req, &body, "body-not-json").await;
    assert_eq!(
        backend.last().header("content-encoding"),
        Some("gzip"),
        "the encoding goes to the backend with the body"
    );
    assert_still_healthy(&proxy).await;
}

#[tokio::test]
async fn a_header_value_with_invalid_utf8_is_answered() {
    let (_redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let raw = raw_search(
        b"x-user-id: u1\r\nx-note: caf\xe9 \xff\xfe\r\n",
        r#"{"query": "milk"}"#,
    );

    let answer = raw_exchange(proxy.addr, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(backend.count(), 1);
    assert_eq!(backend.last().header("x-user-id"), Some("u1"));
    assert_still_healthy(&proxy).await;
}

#[tokio::test]
async fn a_user_id_with_invalid_utf8_is_never_cached() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let raw = raw_search(
        b"x-user-id: \xff\xfe\x80garbage\r\n",
        r#"{"query": "milk"}"#,
    );

    for n in 1..=2 {
        let answer = raw_exchange(proxy.addr, &raw).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(header_of(&answer, "x-cache"), Some("BYPASS"), "{answer}");
        assert_eq!(backend.count(), n, "request {n} reached the backend");
    }
    assert!(
        redis.cache_keys().await.is_empty(),
        "nothing stored, in no scope: {:?}",
        redis.cache_keys().await
    );
    // Nor is the garbage user's answer served to an anonymous search.
    let anonymous = proxy.search(None, json!({"query": "milk"})).send().await;
    assert_eq!(anonymous.x_cache(), Some("MISS"), "{anonymous:?}");
    assert_eq!(backend.count(), 3);
    assert_still_healthy(&proxy).await;
}

#[tokio::test]
async fn a_10000_character_query_is_answered() {
    let (_redis, _backend, proxy) = setup(ProxyConfig::search()).await;
    let long = "milk ".repeat(2000);
    assert_eq!(long.len(), 10_000);

    let by_body = proxy.search(Some("u1"), json!({"query": long}));
    let by_url = proxy
        .get(&format!("/api/v1/search?q={}", long.replace(' ', "+")))
        .header("x-user-id", "u1");
    for req in [by_body, by_url] {
        for _ in 0..2 {
            let resp = req.send().await;
            assert_eq!(resp.status, 200, "{resp:?}");
            assert!(
                matches!(resp.x_cache(), Some("MISS" | "HIT" | "BYPASS")),
                "{resp:?}"
            );
        }
    }
    assert_still_healthy(&proxy).await;
}

#[tokio::test]
async fn json_nested_10000_levels_deep_is_forwarded_as_not_json() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let body = format!(
        r#"{{"query": "milk", "filter": {}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let req = proxy
        .post("/api/v1/search")
        .header("x-user-id", "u1")
        .header("content-type", "application/json")
        .body(body.clone());

    assert_forwarded_unchanged_and_uncached(
        &redis,
        &backend,
        req,
        body.as_bytes(),
        "body-not-json",
    )
    .await;
    assert_still_healthy(&proxy).await;
}

#[tokio::test]
async fn a_user_uuid_header_with_two_different_values_is_ambiguous() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let req = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .header("x-user-uuid", "uuid-a")
        .header("X-User-Uuid", "uuid-b");

    for n in 1..=2 {
        let resp = req.send().await;
        assert_bypass(&resp, "ambiguous-identity");
        assert_eq!(backend.count(), n);
    }
    assert!(redis.cache_keys().await.is_empty());
    assert_still_healthy(&proxy).await;
}

#[tokio::test]
async fn a_slow_loris_client_is_cut_off_while_others_are_served() {
    let (_redis, _backend, proxy) =
        setup(ProxyConfig::search().top(r#"header_read_timeout = "500ms""#)).await;
    let mut loris = TcpStream::connect(proxy.addr)
        .await
        .expect("connect to proxy");
    loris
        .write_all(b"POST /api/v1/search HTTP/1.1\r\nhost: leafcache.test\r\nx-us")
        .await
        .expect("write half a head");

    // Served meanwhile, on other connections.
    assert_still_healthy(&proxy).await;

    // The proxy closes the stalled connection: EOF (perhaps after a 408) or a
    // reset, well within WAIT; never an answer to the half-sent request.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, loris.read_to_end(&mut rest)).await;
    let Ok(outcome) = read else {
        panic!("the proxy kept a stalled connection open for {WAIT:?}");
    };
    if outcome.is_ok() && !rest.is_empty() {
        let text = String::from_utf8_lossy(&rest);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert_still_healthy(&proxy).await;
}
