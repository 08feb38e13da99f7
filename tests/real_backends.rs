//! leafcache with the shipped proxy.toml in front of backends nobody here
//! wrote, as they ship: FastAPI with its GZipMiddleware, Express with the
//! `compression` middleware, and nginx compressing with gzip and brotli in
//! front of an app. Driven by real clients (httpx, curl --compressed).
//!
//! For each, the promises that compression used to break:
//! - a cart answer is never stored, however it is coded;
//! - the search record holds the answer's intent, products and suppliers;
//! - purge by product finds the answer;
//! - every client gets a body it can read, and clients that ask for the
//!   same coding in different words share one entry.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::frameworks::{self, Process};
use common::{POLL_EVERY, Redis, Req, WAIT, free_port};
use serde_json::{Value, json};

/// The real binary, configured by the shipped proxy.toml with only its
/// addresses changed.
struct Shipped {
    addr: SocketAddr,
    admin: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Shipped {
    async fn start(upstream: &str, redis: &Redis) -> Shipped {
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"))
            .expect("read the shipped proxy.toml");
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("create a temp dir");
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let toml = shipped.replace(
                "admin_listen = \"127.0.0.1:9091\"",
                &format!("admin_listen = \"{admin}\""),
            );
            assert_ne!(toml, shipped, "the shipped admin_listen line moved");
            let config = dir.path().join("proxy.toml");
            std::fs::write(&config, toml).expect("write proxy.toml");
            let log = std::fs::File::create(dir.path().join("proxy.log")).expect("create log");
            let child = Command::new(common::leafcache_bin())
                .args(["serve", "--config"])
                .arg(&config)
                .args(["--listen", &addr.to_string(), "--upstream", upstream])
                .args(["--redis-url", &redis.url()])
                .env_remove("REDIS_URL")
                .env_remove("LEAFCACHE_UPSTREAM")
                .env_remove("LEAFCACHE_LISTEN")
                .env_remove("PORT")
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log)
                .spawn()
                .expect("start leafcache");
            let mut proxy = Shipped {
                addr,
                admin,
                child,
                dir,
            };
            if proxy.healthy().await {
                return proxy;
            }
            if !proxy.log().contains("in use") {
                panic!("leafcache did not start:\n{}", proxy.log());
            }
        }
        panic!("leafcache could not bind its ports in three attempts");
    }

    async fn healthy(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let probe = Req::new(self.admin, "GET", "/healthz");
            if probe.try_send().await.is_ok_and(|r| r.status == 200) {
                return true;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The logged record of `search_id`, once the writer has written it.
    async fn record(&self, search_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let path = format!("/v1/searches/{search_id}");
            let resp = Req::new(self.admin, "GET", &path).send().await;
            if resp.status == 200 {
                return resp.json();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no record of {search_id}: {resp:?}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    async fn purge_product(&self, product: &str) -> u64 {
        let resp = Req::new(self.admin, "POST", "/v1/cache/purge")
            .json(&json!({"product_ids": [product]}))
            .send()
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        let body = resp.json();
        body["touched"]
            .as_u64()
            .unwrap_or_else(|| panic!("no count in {body}"))
    }
}

impl Drop for Shipped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- proxy.log -----\n{}", self.log());
        }
    }
}

/// What httpx read of one answer.
#[derive(Debug)]
struct Read {
    status: u64,
    headers: Value,
    json: Value,
}

impl Read {
    fn header(&self, name: &str) -> &str {
        self.headers[name].as_str().unwrap_or("")
    }
}

/// Sends `requests` in turn with httpx, as a Python application would.
async fn httpx(base: &str, requests: Value) -> Vec<Read> {
    let python = tokio::task::spawn_blocking(frameworks::python)
        .await
        .expect("install python");
    let client: PathBuf = frameworks::frameworks_dir().join("client.py");
    let out = tokio::process::Command::new(python)
        .arg(client)
        .arg(base)
        .arg(requests.to_string())
        .output()
        .await
        .expect("run the httpx client");
    assert!(
        out.status.success(),
        "httpx client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON line from client.py");
            Read {
                status: v["status"].as_u64().unwrap_or(0),
                headers: v["headers"].clone(),
                json: v["json"].clone(),
            }
        })
        .collect()
}

/// `curl --compressed` with a JSON body: the status line's headers and the
/// body curl decoded.
async fn curl(url: &str, body: &Value, extra: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let headers = dir.path().join("headers");
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--compressed", "-D"])
        .arg(&headers)
        .args([
            "-H",
            "content-type: application/json",
            "--data",
            &body.to_string(),
        ])
        .args(extra)
        .arg(format!("{url}/api/v1/search"))
        .output()
        .await
        .expect("run curl");
    assert!(out.status.success(), "curl failed: {out:?}");
    let head = std::fs::read_to_string(headers).expect("read curl's headers");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "curl could not read the body ({e}): {:?}\n{head}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (head.to_ascii_lowercase(), json)
}

fn post(query: &str, user: &str) -> Value {
    json!({"method": "POST", "path": "/api/v1/search", "json": {"query": query, "user_id": user}})
}

/// Every promise, in front of `backend`; `br` when the backend can answer
/// in brotli.
async fn promises_hold(backend: &Process, br: bool) {
    let redis = Redis::start().await;
    let proxy = Shipped::start(&backend.url(), &redis).await;
    let base = proxy.url();

    // A cart answer, compressed by the backend, is never stored.
    let cart = httpx(
        &base,
        json!([
            post("buy organic milk", "u1"),
            post("buy organic milk", "u1")
        ]),
    )
    .await;
    for read in &cart {
        assert_eq!(read.status, 200, "{read:?}");
        assert_eq!(read.json["intent"], "add_to_order", "{read:?}");
        assert_eq!(read.header("x-cache"), "MISS", "{read:?}");
    }
    assert_eq!(
        backend.calls("buy organic milk").await,
        2,
        "the cart answer was replayed"
    );
    let cart_record = proxy.record(cart[0].header("x-search-id")).await;
    assert_eq!(cart_record["intent"], "add_to_order", "{cart_record}");
    assert_eq!(
        cart_record["product_ids"],
        json!(["milk-cart"]),
        "{cart_record}"
    );
    assert_eq!(
        cart_record["answer_unreadable"],
        Value::Null,
        "{cart_record}"
    );

    // A search answer is stored once and read by every client.
    let search = httpx(
        &base,
        json!([post("organic milk", "u1"), post("organic milk", "u1")]),
    )
    .await;
    assert_eq!(search[0].header("x-cache"), "MISS", "{:?}", search[0]);
    assert_eq!(search[1].header("x-cache"), "HIT", "{:?}", search[1]);
    for read in &search {
        assert_eq!(
            read.json["products"].as_array().map(Vec::len),
            Some(10),
            "{read:?}"
        );
    }
    assert_eq!(backend.calls("organic milk").await, 1);
    let record = proxy.record(search[0].header("x-search-id")).await;
    assert_eq!(record["intent"], "product_search", "{record}");
    assert_eq!(record["results_count"], 10, "{record}");
    let products = record["product_ids"].as_array().expect("product_ids");
    assert_eq!(products.len(), 10, "{record}");
    assert_eq!(products[0], "organic-milk-1", "{record}");
    assert_eq!(
        record["supplier_ids"],
        json!(["supplier-1", "supplier-2", "supplier-0"]),
        "{record}"
    );

    // curl --compressed asks in other words for the same coding: a hit.
    let body = json!({"query": "organic milk", "user_id": "u1"});
    let (head, json) = curl(&base, &body, &[]).await;
    assert!(head.contains("x-cache: hit"), "{head}");
    assert_eq!(json["products"].as_array().map(Vec::len), Some(10));
    // A client that accepts no coding gets plain JSON from its own entry.
    let plain = Req::new(proxy.addr, "POST", "/api/v1/search")
        .json(&body)
        .send()
        .await;
    assert_eq!(plain.status, 200);
    assert!(
        plain
            .header("content-encoding")
            .is_none_or(|c| c == "identity"),
        "{plain:?}"
    );
    assert_eq!(plain.json()["products"].as_array().map(Vec::len), Some(10));
    // A client that prefers br gets what it accepted, and reads it.
    let prefers_br = json!([{
        "method": "POST", "path": "/api/v1/search",
        "json": {"query": "organic milk", "user_id": "u1"},
        "headers": {"accept-encoding": "br;q=1.0, gzip;q=0.8"},
    }]);
    let read = &httpx(&base, prefers_br).await[0];
    assert_eq!(
        read.json["products"].as_array().map(Vec::len),
        Some(10),
        "{read:?}"
    );
    let coding = read.header("content-encoding");
    assert!(coding.is_empty() || coding == "br", "{read:?}");
    if br {
        assert_eq!(coding, "br", "{read:?}");
    }

    // Purge by product finds every stored coding of the answer: gzip,
    // identity and br (its products read from the br body where the
    // backend speaks br).
    let purged = proxy.purge_product("organic-milk-3").await;
    assert_eq!(purged, 3, "purged {purged}");
    let after = httpx(&base, json!([post("organic milk", "u1")])).await;
    assert_eq!(after[0].header("x-cache"), "MISS", "{:?}", after[0]);
    let calls = backend.calls("organic milk").await;
    assert!(
        calls >= 3,
        "the purged answer was still served ({calls} calls)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastapi_with_gzip_middleware() {
    let backend = frameworks::fastapi(true).await;
    promises_hold(&backend, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_with_compression() {
    let backend = frameworks::express().await;
    promises_hold(&backend, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_compressing_in_front_of_an_app() {
    let app = frameworks::fastapi(false).await;
    let (nginx, br) = frameworks::nginx_in_front_of(&app).await;
    promises_hold(&nginx, br).await;
}
