//! Reading a routed request into the facts the cache needs (SPEC section 3,
//! steps 2 to 5): its body within `max_request_body`, its search text and
//! identity, the bypass rules, and its cache keys.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Incoming};
use serde_json::Value;

use super::body::{Collected, ProxyBody, collect_limited};
use crate::cache_control::CacheControl;
use crate::config::{Config, Freshness, RouteConfig, Scope};
use crate::key::{self, BodyKey, KeyHash, KeyInput};
use crate::policy::{self, BypassReason};
use crate::redis::keys;
use crate::route::{self, Identity, RequestView};

use super::log::SearchDraft;
use std::sync::Arc;
use tokio::time::Instant;

/// What the proxy does with a routed request.
pub enum Routed {
    /// Forward without the cache (and log it, when there is a draft).
    Bypass(BypassReason, Parts, ProxyBody, Option<SearchDraft>),
    /// The client's request could not be read.
    ClientError(Response<ProxyBody>),
    Cacheable(Cacheable),
}

/// A request the cache may answer.
pub struct Cacheable {
    pub parts: Parts,
    pub body: Bytes,
    pub hash: KeyHash,
    /// Redis/L1 keys to look up, in order; the first is the one misses
    /// coalesce and hit-for-pass on.
    pub keys: Vec<String>,
    /// Which of `keys` is the user-scope key, if any.
    pub user_key_index: Option<usize>,
    /// The client sent `no-cache`: skip the lookup, fetch, then store.
    pub refresh: bool,
    /// The search log entry, on logged routes.
    pub draft: Option<SearchDraft>,
    /// The user id that scopes the user key, for invalidation notices.
    pub user_id: Option<String>,
}

impl Cacheable {
    pub fn primary_key(&self) -> &str {
        &self.keys[0]
    }
}

/// The request's context: when it arrived and the route's name for the log.
pub struct ReadCtx<'a> {
    pub started: Instant,
    pub route_name: &'a Arc<str>,
}

pub async fn read(
    config: &Config,
    route: &RouteConfig,
    req: Request<Incoming>,
    ctx: ReadCtx<'_>,
) -> Routed {
    let (parts, body) = req.into_parts();
    if route.scope == Scope::Off {
        return Routed::Bypass(BypassReason::ScopeOff, parts, ProxyBody::stream(body), None);
    }
    if !policy::cacheable_method(&parts.method) {
        return Routed::Bypass(BypassReason::Method, parts, ProxyBody::stream(body), None);
    }

    let limit = config.max_request_body;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        let body = ProxyBody::stream(body);
        return Routed::Bypass(BypassReason::BodyTooLarge, parts, body, None);
    }
    let bytes = if body.is_end_stream() {
        Bytes::new()
    } else {
        match collect_limited(body, limit, Some(config.upstream.timeout)).await {
            Ok(Collected::Complete(b)) => b,
            Ok(Collected::Overflow(prefix, rest)) => {
                let body = ProxyBody::resume(prefix, rest, None);
                return Routed::Bypass(BypassReason::BodyTooLarge, parts, body, None);
            }
            Err(e) => {
                let status = match e {
                    super::body::CollectError::Timeout => StatusCode::REQUEST_TIMEOUT,
                    super::body::CollectError::Body(_) => StatusCode::BAD_REQUEST,
                };
                let mut resp = super::client_error(&e.to_string());
                *resp.status_mut() = status;
                return Routed::ClientError(resp);
            }
        }
    };
    decide(config, route, parts, bytes, ctx)
}

fn decide(
    config: &Config,
    route: &RouteConfig,
    parts: Parts,
    bytes: Bytes,
    ctx: ReadCtx<'_>,
) -> Routed {
    let bypass = |reason, parts, bytes| Routed::Bypass(reason, parts, ProxyBody::full(bytes), None);
    let is_search = !route.query.is_empty();

    let mut json: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    if is_search && json.is_none() && !bytes.is_empty() {
        return bypass(BypassReason::BodyNotJson, parts, bytes);
    }

    // A clone of the URI (reference-counted parts) lets the parameters borrow
    // from it while `parts` may still move into a bypass.
    let uri = parts.uri.clone();
    let raw_query = uri.query().unwrap_or("");
    let params: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        form_urlencoded::parse(raw_query.as_bytes()).collect();
    let view = RequestView {
        headers: &parts.headers,
        json: json.as_ref(),
        params: &params,
    };
    let identity = Identity::extract(&config.identity, &view);
    let query = is_search.then(|| route::extract(&route.query, &view, true));
    let Ok(identity) = identity else {
        return bypass(BypassReason::AmbiguousIdentity, parts, bytes);
    };
    let query = match query {
        None => None,
        Some(Err(_)) => return bypass(BypassReason::AmbiguousIdentity, parts, bytes),
        Some(Ok(None)) => return bypass(BypassReason::NoQuery, parts, bytes),
        Some(Ok(Some(q))) => Some(q),
    };
    let query_normalized = query.as_deref().map(key::normalize_query);
    let draft = match (&query, &query_normalized) {
        (Some(q), Some(n)) if route.log => Some(SearchDraft::new(
            ctx.started,
            identity.clone(),
            q.clone(),
            n.clone(),
            ctx.route_name.clone(),
        )),
        _ => None,
    };
    let logged_bypass =
        |reason, parts, bytes, draft| Routed::Bypass(reason, parts, ProxyBody::full(bytes), draft);
    if let Some(q) = &query
        && route.bypass_query.is_match(q)
    {
        return logged_bypass(BypassReason::BypassQuery, parts, bytes, draft);
    }
    let cc = CacheControl::from_request(&parts.headers);
    if cc.no_store {
        return logged_bypass(BypassReason::ClientNoStore, parts, bytes, draft);
    }
    let origin = route.freshness == Freshness::Origin;
    // Origin routes follow RFC 9110: POST is not answered from the cache
    // (it invalidates instead, in the proxy).
    if origin && parts.method == http::Method::POST {
        return logged_bypass(BypassReason::Method, parts, bytes, draft);
    }

    if let Some(doc) = json.as_mut() {
        for pointer in route::unkeyed_pointers(route, &config.identity) {
            key::remove_pointer(doc, pointer);
        }
    }
    let body_key = match (&json, bytes.is_empty()) {
        (Some(doc), _) => BodyKey::Json(doc),
        (None, true) => BodyKey::None,
        (None, false) => BodyKey::Raw(&bytes),
    };
    let key_params = key::sorted_params(params.iter().cloned(), |name| {
        !route::unkeyed_param(route, &config.identity, name)
    });
    // Origin routes keep variants by the answer's own Vary instead.
    let keyed_headers: &[http::HeaderName] = if origin { &[] } else { &route.vary_headers };
    let vary: Vec<Option<Vec<u8>>> = keyed_headers
        .iter()
        .map(|name| {
            let values: Vec<&[u8]> = parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            (!values.is_empty()).then(|| values.join(&b", "[..]))
        })
        .collect();
    let vary_refs: Vec<Option<&[u8]>> = vary.iter().map(Option::as_deref).collect();
    let hash = key::derive(&KeyInput {
        route: &route.name,
        // HEAD is answered from the stored GET.
        method: if parts.method == http::Method::HEAD {
            "GET"
        } else {
            parts.method.as_str()
        },
        path: uri.path(),
        query: query_normalized.as_deref(),
        body: body_key,
        params: &key_params,
        vary: &vary_refs,
    });

    let prefix = &config.redis.key_prefix;
    let (keys, user_key_index) = match (route.scope, &identity.user_id) {
        (Scope::User, Some(u)) => (vec![keys::user_cache(prefix, u, &hash)], Some(0)),
        (Scope::Auto, Some(u)) => (
            vec![
                keys::user_cache(prefix, u, &hash),
                keys::global_cache(prefix, &hash),
            ],
            Some(0),
        ),
        _ => (vec![keys::global_cache(prefix, &hash)], None),
    };
    Routed::Cacheable(Cacheable {
        parts,
        body: bytes,
        hash,
        keys,
        user_key_index,
        refresh: cc.no_cache,
        draft,
        user_id: identity.user_id,
    })
}

/// The cache keys a GET of `uri` would be stored under on `route`, as the
/// client of `headers` (whose identity scopes user entries); for
/// invalidation. `None` when such a GET would not be cached.
pub fn keys_for_get(
    config: &Config,
    route: &RouteConfig,
    route_name: &Arc<str>,
    uri: http::Uri,
    headers: &http::HeaderMap,
) -> Option<Cacheable> {
    let mut parts = Request::new(()).into_parts().0;
    parts.method = http::Method::GET;
    parts.uri = uri;
    parts.headers = headers.clone();
    // The GET's own directives, not the unsafe request's, decide its key.
    parts.headers.remove(http::header::CACHE_CONTROL);
    parts.headers.remove(http::header::PRAGMA);
    let ctx = ReadCtx {
        started: Instant::now(),
        route_name,
    };
    match decide(config, route, parts, Bytes::new(), ctx) {
        Routed::Cacheable(c) => Some(c),
        _ => None,
    }
}
