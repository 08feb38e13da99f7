//! `leafcache explain` and `POST /v1/explain` (docs/contract.md section 1): the hash
//! they show is the key in the real request's `Cache-Status`, and a bypass
//! is named with its reason, without the backend being asked.

mod common;

use common::ops::{admin, leafcache, run};
use common::*;
use serde_json::{Value, json};

const TARGET: &str = "/api/v1/search?q=Red%20%20Shoes&page=2";

/// The same request three ways: sent to the proxy, explained by the CLI,
/// explained by the admin API.
struct Case {
    method: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
}

impl Case {
    fn req(&self, proxy: &Proxy) -> Req {
        let mut req = proxy.request(self.method, TARGET);
        for (n, v) in &self.headers {
            req = req.header(n, v);
        }
        req.body(self.body)
    }

    async fn cli(&self, proxy: &Proxy) -> Value {
        let mut args = vec!["explain", "--json", "--method", self.method];
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        for h in &headers {
            args.extend(["--header", h.as_str()]);
        }
        if !self.body.is_empty() {
            args.extend(["--data", self.body]);
        }
        args.push(TARGET);
        let out = run(leafcache(&proxy.config_path(), &args)).await;
        assert_eq!(out.code, 0, "explain failed: {}", out.stderr);
        out.json()
    }

    async fn api(&self, proxy: &Proxy) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), json!(v)))
            .collect();
        let resp = admin(proxy, "POST", "/v1/explain")
            .json(&json!({
                "method": self.method,
                "path": TARGET,
                "headers": headers,
                "body": self.body,
            }))
            .send()
            .await;
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        resp.json()
    }
}

#[tokio::test]
async fn explain_shows_the_hash_the_real_request_is_stored_under() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let cases = [
        Case {
            method: "GET",
            headers: vec![("host", "shop.example"), ("x-user-id", "u-42")],
            body: "",
        },
        Case {
            method: "POST",
            headers: vec![
                ("host", "shop.example"),
                ("content-type", "application/json"),
                ("accept-encoding", "gzip"),
                ("x-user-uuid", "g-7"),
            ],
            // The normal spelling: a guest's other spellings are answered
            // from the shared entry but never fill it.
            body: r#"{"query": "milk", "session_id": "s1", "filters": {"b": 1, "a": 2}}"#,
        },
    ];
    for case in &cases {
        let sent = case.req(&proxy).send().await;
        assert_miss_stored(&sent);
        let before = backend.count();
        for explained in [case.cli(&proxy).await, case.api(&proxy).await] {
            assert_eq!(explained["decision"], "cacheable", "{explained}");
            assert_eq!(explained["route"], "search");
            assert_eq!(explained["hash"], sent.key(), "{explained}");
            let keys = explained["keys"].as_array().expect("keys");
            assert!(
                keys.iter()
                    .all(|k| k["key"].as_str().unwrap().ends_with(&sent.key()))
            );
        }
        assert_eq!(backend.count(), before, "explain never asks the backend");
    }
    let get = cases[0].cli(&proxy).await;
    assert_eq!(get["query"], "Red  Shoes");
    assert_eq!(get["query_normalized"], "red shoes");
    assert_eq!(get["identity"]["user_id"], "u-42");
    assert_eq!(get["keys"][0]["scope"], "user");
    assert_eq!(get["key"]["params"], json!(["page=2"]));
    let post = cases[1].api(&proxy).await;
    // The session id is in key_ignore: it leaves the body the key hashes.
    assert_eq!(
        post["key"]["body"]["json"],
        json!({"filters": {"a": 2, "b": 1}})
    );
    // A guest's uuid header is keyed: two guests never share an entry.
    let headers = post["key"]["headers"].to_string();
    assert!(
        headers.contains("x-user-uuid") && headers.contains("g-7"),
        "{headers}"
    );
}

#[tokio::test]
async fn explain_names_a_bypass_and_its_cache_status() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let case = Case {
        method: "GET",
        headers: vec![("host", "shop.example"), ("cookie", "session=1")],
        body: "",
    };
    let sent = case.req(&proxy).send().await;
    assert_eq!(sent.x_cache(), Some("BYPASS"));
    for explained in [case.cli(&proxy).await, case.api(&proxy).await] {
        assert_eq!(explained["decision"], "bypass");
        assert_eq!(explained["bypass"]["reason"], "credentialed");
        assert_eq!(
            explained["bypass"]["cache_status"].as_str(),
            sent.header("cache-status"),
        );
        assert!(explained["hash"].is_null());
    }
    let bad = run(leafcache(&proxy.config_path(), &["explain", "search?q=1"])).await;
    assert_eq!(bad.code, 2, "a target without / is a usage error");
    assert!(
        bad.stderr.contains("\"search?q=1\" is not"),
        "{}",
        bad.stderr
    );
}

#[tokio::test]
async fn the_admin_api_explains_repeated_headers_and_names_a_bad_field() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    // A header given as a list is sent once per value: two user ids that
    // disagree read two ways, and the request bypasses.
    let resp = admin(&proxy, "POST", "/v1/explain")
        .json(&json!({
            "path": "/api/v1/search?q=milk",
            "headers": {"host": "shop.example", "x-user-id": ["u1", "u2"]},
        }))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.json()["method"], json!(null),);
    assert_eq!(resp.json()["request"]["method"], "GET", "GET by default");
    assert_eq!(resp.json()["bypass"]["reason"], "ambiguous-identity");
    let sent = proxy
        .get("/api/v1/search?q=milk")
        .header("host", "shop.example")
        .header("x-user-id", "u1")
        .header("x-user-id", "u2")
        .send()
        .await;
    assert_eq!(
        sent.header("cache-status"),
        resp.json()["bypass"]["cache_status"].as_str()
    );
    for (body, field) in [
        (json!({"headers": {}}), "path"),
        (json!({"path": "/s", "headers": {"x": 1}}), "headers.x"),
        (json!({"path": "/s", "headers": ["x"]}), "headers"),
        (json!({"path": "s"}), "request"),
    ] {
        let resp = admin(&proxy, "POST", "/v1/explain")
            .json(&body)
            .send()
            .await;
        assert_eq!(resp.status, 400, "{body}");
        let text = String::from_utf8_lossy(&resp.body);
        assert!(text.contains(field), "{body}: {text}");
    }
    assert_eq!(
        backend.count(),
        1,
        "only the real request reached the backend"
    );
}
