//! A small grocery search backend, so a newcomer can watch leafcache work
//! without a backend of their own (`leafcache demo`), and so benchmarks have a
//! realistic answer (~3 KB of JSON) to cache.
//!
//! `GET /api/v1/search?q=milk` or `POST /api/v1/search {"query": "milk"}`
//! answers `{query, intent, confidence, products: [{product_id, supplier,
//! name, price, description}]}` after a simulated think time; anything under
//! `/api/v1/order` answers a cart confirmation.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const CATALOG: &[(&str, &str, f64)] = &[
    ("organic whole milk", "green-valley", 3.49),
    ("oat milk barista", "oatly", 4.29),
    ("sourdough bread", "bakehouse", 5.10),
    ("free range eggs", "green-valley", 4.99),
    ("greek yogurt", "olympus", 2.79),
    ("baby spinach", "leafy-farms", 3.15),
    ("bananas", "tropico", 1.29),
    ("cheddar cheese", "dairy-co", 6.49),
    ("almond butter", "nutty", 8.99),
    ("cold brew coffee", "bean-bros", 4.75),
    ("pasta fusilli", "nonna", 2.10),
    ("tomato passata", "nonna", 2.65),
];

/// The demo backend's counters, shared with whoever runs it.
#[derive(Default)]
pub struct DemoStats {
    pub requests: AtomicU64,
}

/// Serves the demo backend on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, think: Duration, stats: Arc<DemoStats>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stats = stats.clone();
        let service = service_fn(move |req| {
            let stats = stats.clone();
            async move { Ok::<_, Infallible>(answer(req, think, &stats).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(conn);
    }
}

async fn answer(
    req: Request<Incoming>,
    think: Duration,
    stats: &DemoStats,
) -> Response<Full<Bytes>> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    if path.starts_with("/api/v1/order") {
        return json_response(StatusCode::OK, json!({"status": "ok", "cart": "updated"}));
    }
    if path != "/api/v1/search" {
        return json_response(StatusCode::NOT_FOUND, json!({"error": "not found"}));
    }
    let query = match *req.method() {
        Method::POST => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("query").and_then(Value::as_str).map(str::to_owned))
        }
        _ => req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "q")
                .map(|(_, v)| v.into_owned())
        }),
    };
    let Some(query) = query else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "query is required"}),
        );
    };
    if !think.is_zero() {
        tokio::time::sleep(think).await;
    }
    json_response(StatusCode::OK, search(&query))
}

/// Deterministic results for a query: the same text always gives the same
/// products, different texts usually differ.
pub fn search(query: &str) -> Value {
    let lower = query.to_lowercase();
    let cart = ["add", "remove", "cart", "checkout", "order"]
        .iter()
        .any(|w| lower.split_whitespace().any(|t| t == *w));
    let seed = lower
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let products: Vec<Value> = (0..10)
        .map(|i| {
            let (name, supplier, price) = CATALOG[((seed + i * 5) % CATALOG.len() as u64) as usize];
            json!({
                "product_id": format!("p{}", (seed.wrapping_add(i * 7919)) % 100_000),
                "supplier": supplier,
                "name": name,
                "price": price,
                "description": format!("{name} from {supplier}: fresh, local and delivered today; a demo product for the query '{query}'."),
            })
        })
        .collect();
    json!({
        "query": query,
        "intent": if cart { "add_to_order" } else { "product_search" },
        "confidence": 0.9,
        "products": if lower.contains("nothing") { vec![] } else { products },
    })
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_deterministic_and_about_3kb() {
        let a = search("milk");
        assert_eq!(a, search("milk"));
        assert_ne!(a["products"], search("bread")["products"]);
        let size = a.to_string().len();
        assert!((2000..5000).contains(&size), "{size} bytes");
    }

    #[test]
    fn cart_words_give_a_cart_intent() {
        assert_eq!(search("add milk to cart")["intent"], "add_to_order");
        assert_eq!(search("milk")["intent"], "product_search");
    }
}
