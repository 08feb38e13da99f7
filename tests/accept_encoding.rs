//! `Accept-Encoding` enters the key normalized to the one coding leafcache
//! asks the backend for (docs/keys-and-security.md, "Compressed answers"): real clients that
//! word the same choice differently share one entry, a client that prefers
//! another coding gets an entry of its own, and the backend only ever sees
//! the normalized value. The `leafcache serve` binary, a real redis-server.

mod common;

use common::*;
use serde_json::json;

/// What real HTTP clients send by default.
const CLIENTS: [(&str, Option<&str>); 7] = [
    ("curl --compressed", Some("deflate, gzip, br, zstd")),
    ("httpx, requests", Some("gzip, deflate")),
    (
        "httpx with brotli and zstandard",
        Some("gzip, deflate, br, zstd"),
    ),
    ("Chrome", Some("gzip, deflate, br, zstd")),
    ("Go net/http", Some("gzip")),
    ("okhttp", Some("gzip")),
    ("curl without --compressed", None),
];

async fn misses(proxy: &Proxy, query: &str, route_without_vary: bool) -> usize {
    let mut misses = 0;
    for (client, header) in CLIENTS {
        let path = if route_without_vary {
            "/plain"
        } else {
            "/api/v1/search"
        };
        let mut req = proxy.post(path).json(&json!({"query": query}));
        if let Some(h) = header {
            req = req.header("accept-encoding", h);
        }
        let resp = req.send().await;
        assert_eq!(resp.status, 200, "{client}: {resp:?}");
        match resp.x_cache() {
            Some("MISS") => misses += 1,
            Some("HIT") => {}
            other => panic!("{client}: {other:?}"),
        }
    }
    misses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_choose_the_same_coding_share_one_entry() {
    let config = ProxyConfig::new()
        .route(Route::search().scope("global"))
        // A route whose vary_headers leave Accept-Encoding out: keyed all the same.
        .route(
            Route::new("plain")
                .set("methods", r#"["POST"]"#)
                .set("path", r#""/plain""#)
                .scope("global"),
        );
    let (_redis, backend, proxy) = {
        let b = Backend::echo().await;
        let redis = Redis::start().await;
        let proxy = Proxy::start_process(&config, &b, &redis).await;
        (redis, b, proxy)
    };
    for plain in [false, true] {
        let before = backend.count();
        // Six clients ask for gzip in five wordings: one entry. Without an
        // Accept-Encoding a client gets the identity entry.
        let misses = misses(&proxy, &format!("milk {plain}"), plain).await;
        assert_eq!(misses, 2, "route without vary: {plain}");
        assert_eq!(backend.count() - before, 2);
        let asked: Vec<String> = backend.requests()[before..]
            .iter()
            .map(|r| r.header("accept-encoding").unwrap_or("").to_owned())
            .collect();
        assert_eq!(asked, ["gzip", "identity"]);
    }
    // A client that prefers br gets a br entry, never the gzip one.
    let br = proxy
        .post("/api/v1/search")
        .json(&json!({"query": "milk false"}))
        .header("accept-encoding", "br;q=1.0, gzip;q=0.8")
        .send()
        .await;
    assert_eq!(br.x_cache(), Some("MISS"), "{br:?}");
    assert_eq!(backend.last().header("accept-encoding"), Some("br"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_a_coding_not_asked_for_is_not_stored() {
    // A backend that always answers gzip (or claims to), whatever it is asked.
    let backend = Backend::start(|req| Reply::echo(req).header("content-encoding", "gzip")).await;
    let config =
        ProxyConfig::new().route(Route::new("plain").set("path", r#""/p""#).scope("global"));
    let redis = Redis::start().await;
    let proxy = Proxy::start_process(&config, &backend, &redis).await;
    for _ in 0..2 {
        let resp = proxy.get("/p").send().await;
        assert_eq!(resp.x_cache(), Some("MISS"), "{resp:?}");
    }
    assert_eq!(
        backend.count(),
        2,
        "a gzip answer was stored for clients that accept none"
    );
    let gzip = proxy
        .get("/p")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(gzip.x_cache(), Some("MISS"));
    let again = proxy
        .get("/p")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(again.x_cache(), Some("HIT"), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_route_stores_a_coded_answer_only_when_its_vary_names_accept_encoding() {
    // Both answer gzip, fresh for a minute; only /varied says so in Vary.
    let backend = Backend::start(|req| {
        let reply = Reply::echo(req)
            .header("content-encoding", "gzip")
            .header("cache-control", "max-age=60");
        if req.path_and_query.starts_with("/varied") {
            reply.header("vary", "Accept-Encoding")
        } else {
            reply
        }
    })
    .await;
    let origin = |name: &str, path: &str| {
        Route::new(name)
            .set("path", &format!("{path:?}"))
            .set("freshness", r#""origin""#)
            .scope("global")
    };
    let config = ProxyConfig::new()
        .route(origin("unvaried", "/unvaried"))
        .route(origin("varied", "/varied"));
    let redis = Redis::start().await;
    let proxy = Proxy::start_process(&config, &backend, &redis).await;
    let gzip = |path: &str| proxy.get(path).header("accept-encoding", "gzip");
    // Without Vary the entry could not tell a gzip client from one that
    // accepts no coding: never stored.
    for _ in 0..2 {
        let resp = gzip("/unvaried").send().await;
        assert_eq!(resp.x_cache(), Some("MISS"), "{resp:?}");
    }
    assert_eq!(backend.count(), 2);
    // With Vary: Accept-Encoding it is a variant for gzip clients only.
    assert_eq!(gzip("/varied").send().await.x_cache(), Some("MISS"));
    let hit = gzip("/varied").send().await;
    assert_eq!(hit.x_cache(), Some("HIT"), "{hit:?}");
    let plain = proxy.get("/varied").send().await;
    assert_ne!(plain.x_cache(), Some("HIT"), "{plain:?}");
    assert_eq!(backend.last().header("accept-encoding"), Some("identity"));
}
