//! The two plain hyper servers `bench/compare.sh` runs next to nginx and
//! leafcache:
//!
//! - `backend ADDR`: a fake grocery search backend. `GET /api/v1/search?q=..`
//!   (user from `x-user-id`) or `POST /api/v1/search {"query", "user_id"}`
//!   answers ~3 KB of JSON in the shape of `leafcache demo-backend`, varying
//!   with the query *and* the user, so a cache that mixed up users would be
//!   seen. `GET /__stats` answers how many searches it has served, so the
//!   benchmark can check that a hit run never reached the backend.
//! - `ceiling ADDR`: answers every request (reading its body first) with one
//!   fixed 3 KB JSON body: the most any hyper-based server on this runtime can
//!   do, the ceiling leafcache's hits are compared with.
//!
//! Both use what leafcache's server uses (tokio's multi-thread runtime, which
//! sizes itself to the CPUs `taskset` leaves it, hyper-util's auto builder,
//! TCP_NODELAY), so the difference between the ceiling and leafcache is the
//! proxy's own work.
//!
//! Build: `cargo build --release --example bench_servers`.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const CATALOG: &[(&str, &str, &str)] = &[
    ("organic whole milk", "green-valley", "3.49"),
    ("oat milk barista", "oatly", "4.29"),
    ("sourdough bread", "bakehouse", "5.10"),
    ("free range eggs", "green-valley", "4.99"),
    ("greek yogurt", "olympus", "2.79"),
    ("baby spinach", "leafy-farms", "3.15"),
    ("bananas", "tropico", "1.29"),
    ("cheddar cheese", "dairy-co", "6.49"),
    ("almond butter", "nutty", "8.99"),
    ("cold brew coffee", "bean-bros", "4.75"),
    ("pasta fusilli", "nonna", "2.10"),
    ("tomato passata", "nonna", "2.65"),
];

/// The answer to `query` for `user`: 10 products, ~3 KB, written by hand
/// rather than through `serde_json::Value` so that the backend costs little
/// CPU next to the proxies it sits behind (the miss path measures the proxy,
/// not the backend).
fn search(query: &str, user: &str) -> Vec<u8> {
    let seed = query
        .bytes()
        .chain(user.bytes())
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut out = Vec::with_capacity(3300);
    let q = serde_json::to_string(query).unwrap_or_else(|_| "\"\"".into());
    let u = serde_json::to_string(user).unwrap_or_else(|_| "\"\"".into());
    let _ = write!(
        out,
        r#"{{"query":{q},"user_id":{u},"intent":"product_search","confidence":0.9,"products":["#
    );
    for i in 0..10u64 {
        let (name, supplier, price) = CATALOG[((seed + i * 5) % CATALOG.len() as u64) as usize];
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            r#"{{"product_id":"p{}","supplier":"{supplier}","name":"{name}","price":{price},"description":"{name} from {supplier}: fresh, local and delivered today; keep refrigerated, best before the date on the pack; picked for the query {} and this shopper ({})."}}"#,
            seed.wrapping_add(i * 7919) % 100_000,
            q.trim_matches('"'),
            u.trim_matches('"'),
        );
    }
    out.extend_from_slice(b"]}");
    out
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[derive(serde::Deserialize)]
struct SearchBody {
    query: Option<String>,
    user_id: Option<String>,
}

async fn backend(req: Request<Incoming>, served: &AtomicU64) -> Response<Full<Bytes>> {
    if req.uri().path() == "/__stats" {
        return json(
            StatusCode::OK,
            format!("{{\"searches\":{}}}", served.load(Ordering::Relaxed)),
        );
    }
    if req.uri().path() != "/api/v1/search" {
        return json(StatusCode::NOT_FOUND, &br#"{"error":"not found"}"#[..]);
    }
    let header_user = req
        .headers()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (query, user) = if req.method() == Method::POST {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        match serde_json::from_slice::<SearchBody>(&body) {
            Ok(b) => (b.query, b.user_id.or(header_user)),
            Err(_) => (None, None),
        }
    } else {
        let q = req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "q")
                .map(|(_, v)| v.into_owned())
        });
        (q, header_user)
    };
    let Some(query) = query else {
        return json(
            StatusCode::BAD_REQUEST,
            &br#"{"error":"query is required"}"#[..],
        );
    };
    served.fetch_add(1, Ordering::Relaxed);
    json(
        StatusCode::OK,
        search(&query, user.as_deref().unwrap_or("")),
    )
}

async fn ceiling(req: Request<Incoming>, body: Bytes) -> Response<Full<Bytes>> {
    // Read the request body, as any server answering a POST search must.
    let _ = req.into_body().collect().await;
    json(StatusCode::OK, body)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bench_servers (backend|ceiling) ADDR");
        std::process::exit(2);
    };
    let served = Arc::new(AtomicU64::new(0));
    let fixed = Bytes::from(search("query number 1", "user-1"));
    let is_backend = match mode.as_str() {
        "backend" => true,
        "ceiling" => false,
        _ => {
            eprintln!("unknown mode {mode}: backend or ceiling");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    rt.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let served = served.clone();
            let fixed = fixed.clone();
            let service = service_fn(move |req| {
                let served = served.clone();
                let fixed = fixed.clone();
                async move {
                    Ok::<_, Infallible>(if is_backend {
                        backend(req, &served).await
                    } else {
                        ceiling(req, fixed).await
                    })
                }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(conn);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_about_3kb_and_vary_by_query_and_user() {
        let a = search("query number 1", "user-1");
        assert!((2800..3600).contains(&a.len()), "{} bytes", a.len());
        assert_ne!(a, search("query number 2", "user-1"));
        assert_ne!(a, search("query number 1", "user-2"));
        let doc: serde_json::Value = serde_json::from_slice(&a).expect("valid JSON");
        assert_eq!(doc["products"].as_array().map(Vec::len), Some(10));
    }
}
