//! The `/v1` endpoints of the admin listener (docs/contract.md section 6). Every error
//! is a JSON `{"error", "detail"}` (plus `field` for a bad field), mapped to
//! its status in one place, [`ApiError::response`].

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use super::export::{ExportRange, Exporter};
use super::feedback::{self, Feedback, FeedbackError};
use super::fields::{self, BadField};
use super::purge::{self, Purge};
use super::{AdminBody, AdminResponse, BoxError, dates, history, json, manual, record, stats};
use crate::cache::invalidation::PurgeRequest;
use crate::events::write::Layout;
use crate::proxy::Proxy;
use crate::proxy::explain::ExplainRequest;
use crate::redis::RedisFailure;
use crate::redis::RedisPool;
use crate::redis::keys::Prefix;

/// Request bodies of the API (a manual search with its results list is the
/// largest) are read up to this size.
const MAX_BODY: usize = 1 << 20;
const MAX_TOP: usize = 1000;
/// The longest export range, in days.
const MAX_EXPORT_DAYS: u64 = 366;

/// Why a `/v1` request was not done.
#[derive(Debug)]
enum ApiError {
    Unauthorized,
    BadField(BadField),
    NotFound(String),
    MethodNotAllowed,
    TooLarge,
    /// Redis (or the event writer) cannot take the request now.
    Unavailable(String),
}

impl From<BadField> for ApiError {
    fn from(e: BadField) -> Self {
        ApiError::BadField(e)
    }
}

impl From<RedisFailure> for ApiError {
    fn from(e: RedisFailure) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl ApiError {
    fn response(self) -> AdminResponse {
        let (status, body) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "unauthorized", "detail": "send Authorization: Bearer <admin_token>"}),
            ),
            ApiError::BadField(f) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "bad request", "field": f.field, "detail": f.to_string()}),
            ),
            ApiError::NotFound(detail) => (
                StatusCode::NOT_FOUND,
                json!({"error": "not found", "detail": detail}),
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed", "detail": "see docs/contract.md section 6 for the methods of /v1"}),
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "body too large", "detail": format!("at most {MAX_BODY} bytes")}),
            ),
            ApiError::Unavailable(detail) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "unavailable", "detail": detail}),
            ),
        };
        let mut r = json(status, body.to_string());
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

pub(super) async fn route(proxy: &Proxy, req: Request<Incoming>) -> AdminResponse {
    match serve(proxy, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn serve(proxy: &Proxy, req: Request<Incoming>) -> Result<AdminResponse, ApiError> {
    authorize(proxy.config.admin_token.as_deref(), &req)?;
    let path = req.uri().path().to_owned();
    let query = query_params(req.uri().query());
    let method = req.method().clone();
    match path.as_str() {
        "/v1/feedback" => {
            only(&method, &Method::POST)?;
            record_feedback(proxy, body(req).await?).await
        }
        "/v1/searches" => {
            only(&method, &Method::POST)?;
            log_search(proxy, &body(req).await?)
        }
        "/v1/stats" => {
            only(&method, &Method::GET)?;
            read_stats(proxy, &query).await
        }
        "/v1/export" => {
            only(&method, &Method::GET)?;
            export(proxy, &query).await
        }
        "/v1/cache/purge" => {
            only(&method, &Method::POST)?;
            purge_cache(proxy, &body(req).await?).await
        }
        "/v1/explain" => {
            only(&method, &Method::POST)?;
            explain(proxy, &body(req).await?)
        }
        _ => {
            if let Some(user) = history_user(&path) {
                only(&method, &Method::GET)?;
                read_history(proxy, user, &query).await
            } else if let Some(id) = path.strip_prefix("/v1/searches/") {
                only(&method, &Method::GET)?;
                read_search(proxy, id).await
            } else {
                Err(ApiError::NotFound(format!("no endpoint {path}")))
            }
        }
    }
}

/// `Authorization: Bearer <admin_token>` when a token is set. The digests
/// are compared in constant time, so neither the token nor its length leaks
/// through timing.
fn authorize(token: Option<&str>, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or(ApiError::Unauthorized)?;
    let ok = Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(token.as_bytes()));
    if bool::from(ok) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn only(method: &Method, allowed: &Method) -> Result<(), ApiError> {
    if method == allowed {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed)
    }
}

async fn body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge),
        Err(e) => Err(BadField::new("body", format!("could not be read ({e})")).into()),
    }
}

/// Query parameters; a repeated name keeps every value.
fn query_params(query: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        out.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    out
}

fn param<'a>(query: &'a HashMap<String, Vec<String>>, name: &str) -> Option<&'a str> {
    query
        .get(name)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn number_param(
    query: &HashMap<String, Vec<String>>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match param(query, name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                BadField::new(name, format!("must be an integer from 0 to {max}")).into()
            }),
    }
}

fn date_param(query: &HashMap<String, Vec<String>>, name: &str) -> Result<Option<u64>, ApiError> {
    match param(query, name) {
        None => Ok(None),
        Some(v) => dates::parse(v)
            .map(Some)
            .ok_or_else(|| BadField::new(name, "must be a date YYYY-MM-DD").into()),
    }
}

/// The user id of `/v1/users/<id>/history`, percent-decoded.
fn history_user(path: &str) -> Option<String> {
    let id = path.strip_prefix("/v1/users/")?.strip_suffix("/history")?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    percent_decode(id)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn redis(proxy: &Proxy) -> Result<&RedisPool, ApiError> {
    proxy
        .cache
        .redis()
        .ok_or_else(|| ApiError::Unavailable("no redis configured".into()))
}

fn prefix(proxy: &Proxy) -> &Prefix {
    &proxy.config.redis.key_prefix
}

fn accepted(body: serde_json::Value) -> AdminResponse {
    json(StatusCode::ACCEPTED, body.to_string())
}

async fn record_feedback(proxy: &Proxy, body: Bytes) -> Result<AdminResponse, ApiError> {
    let fb = Feedback::from_json(&fields::object(&body)?)?;
    let layout = Layout::new(&proxy.config);
    match feedback::record(redis(proxy)?, &layout, &fb, crate::time::now_ms()).await {
        Ok(recorded) => Ok(accepted(json!({
            "search_id": fb.search_id,
            "event": fb.action.as_str(),
            "position": recorded.position,
            "impression_position": recorded.impression_position,
        }))),
        Err(FeedbackError::UnknownSearch(id)) => Err(ApiError::NotFound(format!("no search {id}"))),
        Err(FeedbackError::Redis(e)) => Err(e.into()),
    }
}

/// `POST /v1/explain`: `{method, path, headers, body}`, answered with the
/// object `leafcache explain --json` prints. `headers` maps a name to a
/// value or a list of values; `body` is a string, or JSON sent as its text.
fn explain(proxy: &Proxy, body: &[u8]) -> Result<AdminResponse, ApiError> {
    let obj = fields::object(body)?;
    let mut headers = Vec::new();
    match obj.get("headers") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (name, value) in map {
                let values = match value {
                    serde_json::Value::Array(list) => list.iter().collect(),
                    one => vec![one],
                };
                for v in values {
                    let v = v.as_str().ok_or_else(|| {
                        BadField::new(format!("headers.{name}"), "must be a string")
                    })?;
                    headers.push((name.clone(), v.to_owned()));
                }
            }
        }
        Some(_) => return Err(BadField::new("headers", "must be an object").into()),
    }
    let body = match obj.get("body") {
        None | Some(serde_json::Value::Null) => Bytes::new(),
        Some(serde_json::Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => Bytes::from(other.to_string()),
    };
    let req = ExplainRequest {
        method: fields::opt_str(&obj, "method")?.unwrap_or_else(|| "GET".into()),
        target: fields::req_str(&obj, "path")?,
        headers,
        body,
    };
    let out = crate::proxy::explain::explain(&proxy.config, &req)
        .map_err(|e| BadField::new("request", e))?;
    Ok(json(StatusCode::OK, out.to_string()))
}

fn log_search(proxy: &Proxy, body: &[u8]) -> Result<AdminResponse, ApiError> {
    let event = manual::from_json(&fields::object(body)?, &proxy.config.identity)?;
    let sink = proxy
        .events
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("search logging is off".into()))?;
    let id = event.search_id.to_string();
    sink.send(event);
    Ok(accepted(json!({ "search_id": id })))
}

async fn read_history(
    proxy: &Proxy,
    user: String,
    query: &HashMap<String, Vec<String>>,
) -> Result<AdminResponse, ApiError> {
    let user = fields::user_id("user_id", user)?;
    let limit = number_param(
        query,
        "limit",
        history::DEFAULT_LIMIT,
        proxy.config.events.history_limit.max(1),
    )?;
    let entries = history::read(redis(proxy)?, prefix(proxy), &user, limit).await?;
    Ok(json(
        StatusCode::OK,
        serde_json::Value::Array(entries).to_string(),
    ))
}

/// `GET /v1/searches/<id>`: the record with its feedback, 404 for text that
/// is not a logged search's id.
async fn read_search(proxy: &Proxy, raw: &str) -> Result<AdminResponse, ApiError> {
    let found = match percent_decode(raw) {
        Some(id) => record::read(redis(proxy)?, prefix(proxy), &id).await?,
        None => None,
    };
    found
        .map(|body| json(StatusCode::OK, body))
        .ok_or_else(|| ApiError::NotFound(format!("no search {raw}")))
}

async fn read_stats(
    proxy: &Proxy,
    query: &HashMap<String, Vec<String>>,
) -> Result<AdminResponse, ApiError> {
    let day = date_param(query, "date")?.unwrap_or_else(dates::today);
    let top = number_param(query, "top", 10, MAX_TOP)?;
    let report = stats::read(redis(proxy)?, prefix(proxy), day, top).await?;
    let body = serde_json::to_string(&report).unwrap_or_default();
    Ok(json(StatusCode::OK, body))
}

async fn purge_cache(proxy: &Proxy, body: &[u8]) -> Result<AdminResponse, ApiError> {
    let obj = fields::object(body)?;
    let purge = Purge::new(PurgeRequest {
        user_id: fields::opt_str(&obj, "user_id")?,
        hash: fields::opt_str(&obj, "hash")?,
        all_global: fields::opt_bool(&obj, "all_global")?.unwrap_or(false),
        product_ids: fields::opt_id_list(&obj, "product_ids")?,
        supplier_ids: fields::opt_id_list(&obj, "supplier_ids")?,
        soft: fields::opt_bool(&obj, "soft")?.unwrap_or(false),
    })?;
    let done = purge::purge(redis(proxy)?, prefix(proxy), &purge).await?;
    // This process does not wait for its own message to come back.
    if let Some(l1) = proxy.cache.l1() {
        purge::forget_local(l1, prefix(proxy), &purge.target);
    }
    Ok(json(
        StatusCode::OK,
        json!({
            "removed": done.removed,
            "marked_stale": done.marked_stale,
            "touched": done.touched(),
        })
        .to_string(),
    ))
}

async fn export(
    proxy: &Proxy,
    query: &HashMap<String, Vec<String>>,
) -> Result<AdminResponse, ApiError> {
    let from = date_param(query, "from")?
        .ok_or_else(|| BadField::new("from", "is required (YYYY-MM-DD)"))?;
    let to =
        date_param(query, "to")?.ok_or_else(|| BadField::new("to", "is required (YYYY-MM-DD)"))?;
    if to < from {
        return Err(BadField::new("to", "must not be before from").into());
    }
    if to - from >= MAX_EXPORT_DAYS {
        return Err(BadField::new(
            "to",
            format!("must be within {MAX_EXPORT_DAYS} days of from"),
        )
        .into());
    }
    let intents = query
        .get("intent")
        .map(|v| v.iter().filter(|i| !i.is_empty()).cloned().collect())
        .unwrap_or_default();
    let mut exporter = Exporter::new(
        redis(proxy)?.clone(),
        prefix(proxy).clone(),
        ExportRange { from, to, intents },
    );
    // The first page is read before answering, so that Redis being down is
    // a 503 rather than a 200 with a broken body.
    let first = exporter.next_page().await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(2);
    tokio::spawn(async move {
        let mut page = first;
        while let Some(p) = page {
            if !p.jsonl.is_empty() && tx.send(Ok(Bytes::from(p.jsonl))).await.is_err() {
                return; // the client hung up
            }
            page = match exporter.next_page().await {
                Ok(next) => next,
                Err(e) => {
                    // An error frame: the client sees a broken transfer, never
                    // a short export that looks complete.
                    tracing::warn!(error = %e, "export stopped: redis failed");
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            };
        }
    });
    let mut r = http::Response::new(AdminBody::new(ChannelBody { rx }));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(r)
}

/// A body fed by a channel: each message is a chunk, an `Err` ends the
/// transfer as failed.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_paths_decode_the_user_id() {
        assert_eq!(
            history_user("/v1/users/u%201/history").as_deref(),
            Some("u 1")
        );
        assert_eq!(history_user("/v1/users//history"), None);
        assert_eq!(history_user("/v1/users/a/b/history"), None);
        assert_eq!(history_user("/v1/users/%zz/history"), None);
    }
}
