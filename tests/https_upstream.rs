//! `[upstream] url = "https://..."` (docs/deployment.md, "HTTPS backends"): the real
//! `leafcache serve` in front of nginx over TLS, with a CA made by the test.
//!
//! - the backend's certificate verifies through `ca_file`, leafcache speaks
//!   HTTP/2 when nginx offers h2 and HTTP/1.1 when it does not, and a second
//!   request is a HIT that never reaches nginx;
//! - without `ca_file`, or with a certificate for another name, the request
//!   answers 502 `upstream_unavailable` with a detail about the certificate,
//!   the log has one warning line for it, and `/readyz` says upstream: down.

mod common;

use common::tls_backend::{TestCa, TlsNginx};
use common::*;

/// The search route, leafcache's Redis, and `ca_file` when given.
fn config(dir: &std::path::Path, ca: Option<&TestCa>) -> ProxyConfig {
    let config = ProxyConfig::search();
    match ca {
        Some(ca) => {
            let file = dir.join("private-ca.pem");
            std::fs::write(&file, &ca.pem).expect("write the CA file");
            config.upstream(&format!("ca_file = {:?}", file.display().to_string()))
        }
        None => config,
    }
}

async fn readyz(proxy: &Proxy) -> serde_json::Value {
    Req::new(proxy.admin, "GET", "/readyz").send().await.json()
}

/// Two identical searches through leafcache to nginx: the first a MISS
/// answered by nginx in `protocol`, the second a HIT nginx never saw.
async fn cached_over_tls(http2: bool, protocol: &str) {
    let ca = TestCa::new("leafcache test CA");
    let nginx = TlsNginx::start(&ca.server_cert(&["localhost"]), http2).await;
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let proxy =
        Proxy::start_process_with(&config(dir.path(), Some(&ca)), &nginx.url(), &redis.url()).await;
    let search = || {
        proxy
            .get("/api/v1/search?q=organic+milk")
            .header("host", "shop.example")
            .header("x-user-id", "u1")
    };

    let first = search().send().await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.x_cache(), Some("MISS"));
    assert_eq!(first.json()["protocol"], protocol);
    assert_eq!(first.header("x-backend-protocol"), Some(protocol));
    // nginx writes its access log once the answer is sent: poll for it.
    let seen = eventually("nginx to log the request", || async {
        let seen = nginx.requests();
        (!seen.is_empty()).then_some(seen)
    })
    .await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    // The backend's own authority as Host; the client spoke plain http.
    let host = format!("host=localhost:{}", nginx.port);
    assert!(seen[0].starts_with(protocol), "{seen:?}");
    assert!(seen[0].contains(&host), "{seen:?}");
    assert!(seen[0].ends_with("proto=http"), "{seen:?}");

    let second = eventually("the answer to be served from the cache", || async {
        let resp = search().send().await;
        (resp.x_cache() == Some("HIT")).then_some(resp)
    })
    .await;
    assert_eq!(
        second.body, first.body,
        "the stored answer, same request_id"
    );
    assert_eq!(nginx.requests().len(), 1, "the HIT never reached nginx");

    assert_eq!(readyz(&proxy).await["upstream"], "up");
}

#[tokio::test]
async fn an_h2_backend_is_spoken_to_in_http2_and_its_answer_cached() {
    cached_over_tls(true, "HTTP/2.0").await;
}

#[tokio::test]
async fn an_http1_backend_is_spoken_to_in_http11_and_its_answer_cached() {
    cached_over_tls(false, "HTTP/1.1").await;
}

/// Asks twice through a proxy whose backend's certificate cannot verify;
/// checks the 502s, the one warning and readiness; gives the detail.
async fn refused_certificate(proxy: &Proxy, nginx: &TlsNginx) -> String {
    let mut detail = String::new();
    for _ in 0..2 {
        let resp = proxy
            .get("/api/v1/search?q=milk")
            .header("x-user-id", "u1")
            .send()
            .await;
        assert_eq!(resp.status, 502, "{resp:?}");
        let body = resp.json();
        assert_eq!(body["error"], "upstream_unavailable", "{body}");
        detail = body["detail"].as_str().unwrap_or_default().to_owned();
        assert!(detail.contains("certificate"), "{detail}");
    }
    assert!(
        nginx.requests().is_empty(),
        "no request reached nginx: {:?}",
        nginx.requests()
    );
    let warnings = eventually("the certificate warning in the log", || async {
        let log = proxy.log();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("certificate"))
            .map(str::to_owned)
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert_eq!(
        warnings.len(),
        1,
        "one warning, not one per request: {warnings:?}"
    );
    assert_eq!(readyz(proxy).await["upstream"], "down");
    detail
}

#[tokio::test]
async fn without_ca_file_a_private_cas_certificate_does_not_verify() {
    let ca = TestCa::new("leafcache test CA");
    let nginx = TlsNginx::start(&ca.server_cert(&["localhost"]), true).await;
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let proxy =
        Proxy::start_process_with(&config(dir.path(), None), &nginx.url(), &redis.url()).await;

    let detail = refused_certificate(&proxy, &nginx).await;
    assert!(detail.contains("unknown authority"), "{detail}");
    assert!(detail.contains("ca_file"), "it says what to set: {detail}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let ca = TestCa::new("leafcache test CA");
    let nginx = TlsNginx::start(&ca.server_cert(&["other.test"]), true).await;
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let proxy =
        Proxy::start_process_with(&config(dir.path(), Some(&ca)), &nginx.url(), &redis.url()).await;

    let detail = refused_certificate(&proxy, &nginx).await;
    assert!(detail.contains("localhost"), "{detail}");
    assert!(detail.contains("other.test"), "{detail}");
}
