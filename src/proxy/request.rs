//! Reading a routed request into the facts the cache needs (docs/contract.md section 3,
//! steps 2 to 5): its body within `max_request_body`, its search text and
//! identity, the bypass rules, and its cache keys.

use std::borrow::Cow;

use bytes::Bytes;
use http::Request;
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use hyper::body::{Body, Incoming};
use serde_json::Value;

use super::body::{Collected, ProxyBody, collect_limited};
use super::error::ProxyError;
use super::forward;
use crate::cache::envelope::Entry;
use crate::cache_control::CacheControl;
use crate::config::{Config, Freshness, RouteConfig, Scope, Source};
use crate::key::{self, BodyKey, KeyHash, KeyInput};
use crate::policy::{self, Arrival, BypassReason, Spelling};
use crate::redis::keys;
use crate::request_json::{self, Body as JsonBody};
use crate::route::{self, Field, Identity, Kind, RequestView, Supplied, Unkeyed};
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};

use super::log::SearchDraft;
use std::sync::Arc;
use tokio::time::Instant;

/// A stored entry the request may fall back on, with the key it was found
/// under.
#[derive(Clone)]
pub(super) struct Usable {
    pub entry: Arc<Entry>,
    pub key_index: usize,
}

/// What the proxy does with a routed request.
pub enum Routed {
    /// Forward without the cache (and log it, when there is a draft).
    Bypass(BypassReason, Parts, ProxyBody, Option<SearchDraft>),
    /// The client's request could not be read.
    ClientError(ProxyError),
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
    /// How the search text was spelled: only the normal form fills a
    /// shared entry ([`policy::may_store_spelling`]).
    pub spelling: Spelling,
}

impl Cacheable {
    pub fn primary_key(&self) -> &str {
        &self.keys[0]
    }

    /// A copy of this request for the backend alone, in the background
    /// (stale-while-revalidate, refresh-ahead): the client's
    /// `Cache-Control` left out (the request must not be answered from the
    /// cache), and no search log entry.
    pub(super) fn for_background(&self) -> Cacheable {
        let mut parts = self.parts.clone();
        parts.headers.remove(http::header::CACHE_CONTROL);
        Cacheable {
            parts,
            body: self.body.clone(),
            hash: self.hash,
            keys: self.keys.clone(),
            user_key_index: self.user_key_index,
            refresh: false,
            draft: None,
            user_id: self.user_id.clone(),
            spelling: self.spelling,
        }
    }
}

/// The request's context: when it arrived, the route's name for the log,
/// and whether its path met the route as sent.
pub struct ReadCtx<'a> {
    pub started: Instant,
    pub route_name: &'a Arc<str>,
    /// False when the route matched only the normalized path
    /// ([`route::RouteMatch::literal`]): served, never cached.
    pub literal: bool,
}

pub async fn read(
    config: &Config,
    route: &RouteConfig,
    req: Request<Incoming>,
    ctx: ReadCtx<'_>,
) -> Routed {
    let (parts, body) = req.into_parts();
    let limit = config.max_request_body;
    let seen = arrival(config, &parts, ctx.literal);
    if let Some(reason) = policy::bypass_on_arrival(route, &seen) {
        return match read_ahead(config, &parts.headers, body).await {
            Ok(body) => Routed::Bypass(reason, parts, body, None),
            Err(e) => Routed::ClientError(e),
        };
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
            Err(e) => return Routed::ClientError(ProxyError::ClientBody(e)),
        }
    };
    decide(config, route, parts, bytes, ctx)
}

/// The body of a request forwarded without the cache. A body of
/// unannounced length (chunked) is read up to `max_request_body` first, so
/// that bad framing from the client (an invalid chunk size) answers 400 and
/// never reaches the backend; a larger one streams on from there. A body of
/// announced length streams as it comes.
pub(super) async fn read_ahead(
    config: &Config,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<ProxyBody, ProxyError> {
    if body.is_end_stream() || headers.contains_key(CONTENT_LENGTH) {
        return Ok(ProxyBody::stream(body));
    }
    let limit = config.max_request_body;
    match collect_limited(body, limit, Some(config.upstream.timeout)).await {
        Ok(Collected::Complete(b)) => Ok(ProxyBody::full(b)),
        Ok(Collected::Overflow(prefix, rest)) => Ok(ProxyBody::resume(prefix, rest, None)),
        Err(e) => Err(ProxyError::ClientBody(e)),
    }
}

/// What the arrival bypass rules look at: the method, whether the path met
/// the route as sent, and the announced body length.
pub(crate) fn arrival<'a>(config: &Config, parts: &'a Parts, literal: bool) -> Arrival<'a> {
    let declared_len = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    Arrival {
        method: &parts.method,
        literal,
        declared_len,
        max_request_body: config.max_request_body,
    }
}

/// What the body, the search text and the identity of a request read as.
struct Fields {
    json: Option<Value>,
    identity: Identity,
    query: Option<String>,
    supplied: Supplied,
}

/// What [`decide`] found on its way, for `explain`; the request flow
/// passes `()`, which sees nothing and costs nothing.
pub(crate) trait Observe {
    /// The search text, as sent and as keyed, and the identity.
    fn fields(&mut self, _query: Option<&str>, _normalized: Option<&str>, _identity: &Identity) {}
    /// Every input of the cache key, just before it is hashed.
    fn key(&mut self, _input: &KeyInput<'_>) {}
}

impl Observe for () {}

fn decide(
    config: &Config,
    route: &RouteConfig,
    parts: Parts,
    bytes: Bytes,
    ctx: ReadCtx<'_>,
) -> Routed {
    decide_observed(config, route, parts, bytes, ctx, &mut ())
}

/// Steps 3 to 5 of docs/contract.md section 3 for a request whose body is in hand: its
/// fields, the bypass rules, its key.
pub(crate) fn decide_observed(
    config: &Config,
    route: &RouteConfig,
    parts: Parts,
    bytes: Bytes,
    ctx: ReadCtx<'_>,
    seen: &mut impl Observe,
) -> Routed {
    let mut parts = parts;
    normalize_accept_encoding(&mut parts.headers);
    // A clone of the URI (reference-counted parts) lets the parameters borrow
    // from it while `parts` may still move into a bypass.
    let uri = parts.uri.clone();
    let params: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).collect();
    let fields = match read_fields(config, route, &parts.headers, &bytes, &params) {
        Ok(f) => f,
        Err(reason) => return Routed::Bypass(reason, parts, ProxyBody::full(bytes), None),
    };
    let Fields {
        mut json,
        identity,
        query,
        supplied,
    } = fields;
    // A value past `max_bytes` is dropped here, before anything keeps it:
    // the search is logged without it, and the request bypasses below.
    let (identity, too_long) = identity.bounded(config.identity.max_bytes);
    let query_normalized = query.as_deref().map(key::normalize_query);
    let spelling = Spelling::of(query.as_deref(), query_normalized.as_deref());
    seen.fields(query.as_deref(), query_normalized.as_deref(), &identity);
    let draft = match (query, &query_normalized) {
        (Some(q), Some(n)) if route.log => Some(SearchDraft::new(
            ctx.started,
            identity.clone(),
            q,
            n.clone(),
            ctx.route_name.clone(),
        )),
        _ => None,
    };
    if too_long {
        return Routed::Bypass(
            BypassReason::IdentityTooLong,
            parts,
            ProxyBody::full(bytes),
            draft,
        );
    }
    let cc = CacheControl::from_request(&parts.headers);
    let search = policy::SearchRequest {
        method: &parts.method,
        headers: &parts.headers,
        cache_control: &cc,
        query_normalized: query_normalized.as_deref(),
        has_user: identity.user_id.is_some(),
    };
    if let Some(reason) = policy::bypass_search(route, &search) {
        return Routed::Bypass(reason, parts, ProxyBody::full(bytes), draft);
    }

    let unkeyed = Unkeyed {
        route,
        identity: &config.identity,
        supplied,
    };
    if let Some(doc) = json.as_mut() {
        for pointer in unkeyed.pointers() {
            key::remove_pointer(doc, pointer);
        }
    }
    let body_key = match (&json, bytes.is_empty()) {
        (Some(doc), _) => BodyKey::Json(doc),
        (None, true) => BodyKey::None,
        (None, false) => BodyKey::Raw(&bytes),
    };
    let key_params = key::keyed_params(uri.query(), |name| unkeyed.param(name));
    let input = KeyFacts {
        parts: &parts,
        uri: &uri,
        body: body_key,
        params: &key_params,
        query_normalized: query_normalized.as_deref(),
        guest: identity.user_id.is_none(),
    };
    let hash = derive_key(config, route, input, seen);
    let (keys, user_key_index) = cache_keys(config, route, identity.user_id.as_deref(), &hash);
    Routed::Cacheable(Cacheable {
        parts,
        body: bytes,
        hash,
        keys,
        user_key_index,
        refresh: cc.no_cache,
        draft,
        user_id: identity.user_id,
        spelling,
    })
}

/// Reads the body as JSON, then the identity and the search text, each
/// from the one source that supplies it. A body or a field that reads two
/// ways, or a search route without search text, gives its bypass reason.
fn read_fields(
    config: &Config,
    route: &RouteConfig,
    headers: &http::HeaderMap,
    bytes: &Bytes,
    params: &[(Cow<'_, str>, Cow<'_, str>)],
) -> Result<Fields, BypassReason> {
    let is_search = !route.query.is_empty();
    let json: Option<Value> = if bytes.is_empty() {
        None
    } else {
        match request_json::parse(bytes) {
            JsonBody::Json(doc) => Some(doc),
            JsonBody::NotJson => None,
            JsonBody::Ambiguous => return Err(BypassReason::AmbiguousBody),
        }
    };
    if is_search && json.is_none() && !bytes.is_empty() {
        return Err(BypassReason::BodyNotJson);
    }
    let view = RequestView {
        headers,
        json: json.as_ref(),
        params,
    };
    let mut supplied = Supplied::default();
    let identity = Identity::extract(&config.identity, &view, &mut supplied);
    let query = is_search.then(|| route::read_field(&route.query, &view, Kind::Text));
    let identity = identity.map_err(|_| BypassReason::AmbiguousIdentity)?;
    let query = match query {
        None => None,
        Some(Err(_)) => return Err(BypassReason::AmbiguousIdentity),
        Some(Ok(Field { value: None, .. })) => return Err(BypassReason::NoQuery),
        Some(Ok(Field {
            value: Some(q),
            source,
        })) => {
            supplied.query = source;
            Some(q)
        }
    };
    Ok(Fields {
        json,
        identity,
        query,
        supplied,
    })
}

/// The cache key (docs/contract.md section 3, step 5): the route, method, path,
/// normalized search text, body without the unkeyed fields, the keyed
/// parameters, the route's `vary_headers` and the headers that change how
/// the backend reads the request.
fn derive_key(
    config: &Config,
    route: &RouteConfig,
    facts: KeyFacts<'_>,
    seen: &mut impl Observe,
) -> KeyHash {
    let KeyFacts {
        parts,
        uri,
        body: body_key,
        params: key_params,
        query_normalized,
        guest,
    } = facts;
    // Origin routes keep variants by the answer's own Vary instead.
    let origin = route.freshness == Freshness::Origin;
    let keyed_vary: &[http::HeaderName] = if origin { &[] } else { &route.vary_headers };
    let vary: Vec<Option<Cow<'_, [u8]>>> = keyed_vary
        .iter()
        .map(|name| joined(&parts.headers, name))
        .collect();
    let vary_refs: Vec<Option<&[u8]>> = vary.iter().map(Option::as_deref).collect();
    // How the backend reads a body: its type and its encoding.
    let (content_type, content_encoding) = if matches!(body_key, BodyKey::None) {
        (None, None)
    } else {
        (
            joined(&parts.headers, &CONTENT_TYPE),
            joined(&parts.headers, &CONTENT_ENCODING),
        )
    };
    // The coding asked of the backend changes the answer's bytes: keyed
    // whether or not `vary_headers` names it.
    let accept_encoding = (!origin && !keyed_vary.contains(&ACCEPT_ENCODING))
        .then(|| joined(&parts.headers, &ACCEPT_ENCODING))
        .flatten();
    let body_headers = [content_type, content_encoding, accept_encoding];
    let headers = keyed_headers(config, &parts.headers, uri, &body_headers, guest);
    let input = KeyInput {
        route: &route.name,
        // HEAD is answered from the stored GET.
        method: if parts.method == http::Method::HEAD {
            "GET"
        } else {
            parts.method.as_str()
        },
        path: uri.path(),
        query: query_normalized,
        body: body_key,
        params: key_params,
        vary: &vary_refs,
        headers: &headers,
    };
    seen.key(&input);
    key::derive(&input)
}

/// The request facts the key is made of, besides the route's.
struct KeyFacts<'a> {
    parts: &'a Parts,
    uri: &'a http::Uri,
    body: BodyKey<'a>,
    params: &'a [&'a str],
    query_normalized: Option<&'a str>,
    /// No user id: the user uuid's headers are keyed (see [`keyed_headers`]).
    guest: bool,
}

/// Replaces the client's `Accept-Encoding` with the one coding leafcache
/// asks the backend for ([`key::accept_encoding`]): requests that mean the
/// same choice share an entry, and the backend answers what is keyed.
fn normalize_accept_encoding(headers: &mut http::HeaderMap) {
    let values = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .map(|v| v.as_bytes());
    let coding = key::accept_encoding(values);
    headers.insert(ACCEPT_ENCODING, http::HeaderValue::from_static(coding));
}

/// The Redis/L1 keys to look up, in order, and which is the user's own.
fn cache_keys(
    config: &Config,
    route: &RouteConfig,
    user_id: Option<&str>,
    hash: &KeyHash,
) -> (Vec<String>, Option<usize>) {
    let prefix = &config.redis.key_prefix;
    match (route.scope, user_id) {
        (Scope::User, Some(u)) => (vec![keys::user_cache(prefix, u, hash)], Some(0)),
        (Scope::Auto, Some(u)) => (
            vec![
                keys::user_cache(prefix, u, hash),
                keys::global_cache(prefix, hash),
            ],
            Some(0),
        ),
        _ => (vec![keys::global_cache(prefix, hash)], None),
    }
}

/// Every value of header `name`, joined as one field value; `None` when the
/// request does not carry it.
fn joined<'a>(headers: &'a http::HeaderMap, name: &http::HeaderName) -> Option<Cow<'a, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut out = first.as_bytes().to_vec();
    for more in std::iter::once(second).chain(values) {
        out.extend_from_slice(b", ");
        out.extend_from_slice(more.as_bytes());
    }
    Some(Cow::Owned(out))
}

/// The request headers besides `vary_headers` that reach the backend and
/// may change its answer (docs/contract.md section 3, step 5), in a fixed order: the
/// client's host, which the backend gets as `X-Forwarded-Host`; the body's
/// `Content-Type` and `Content-Encoding`, which say how the backend reads
/// the body; for a guest (no user id), the headers the user uuid is read
/// from, since the uuid is all that tells two guests apart and the backend
/// may personalize by it (its `json:` and `query:` sources stay in the key
/// with the body and the query string); and, when `trust_forwarded` passes
/// them on, the forwarding headers.
fn keyed_headers<'a>(
    config: &'a Config,
    headers: &'a http::HeaderMap,
    uri: &'a http::Uri,
    body_headers: &'a [Option<Cow<'a, [u8]>>; 3],
    guest: bool,
) -> Vec<(&'a str, Cow<'a, [u8]>)> {
    let mut keyed: Vec<(&str, Cow<'_, [u8]>)> = Vec::with_capacity(4);
    if let Some(host) = forward::client_host(headers, uri) {
        keyed.push(("host", Cow::Borrowed(host)));
    }
    for (name, value) in ["content-type", "content-encoding", "accept-encoding"]
        .into_iter()
        .zip(body_headers)
    {
        if let Some(v) = value {
            keyed.push((name, Cow::Borrowed(v.as_ref())));
        }
    }
    if guest {
        for source in &config.identity.user_uuid {
            if let Source::Header(name) = source
                && let Some(value) = joined(headers, name)
            {
                keyed.push((name.as_str(), value));
            }
        }
    }
    if config.trust_forwarded {
        for (name, value) in forward::forwarding_headers(headers) {
            keyed.push((name.as_str(), Cow::Borrowed(value.as_bytes())));
        }
        // Header order is not the client's to choose the key by; repeats of
        // one name keep their order (a stable sort).
        keyed.sort_by(|a, b| a.0.cmp(b.0));
    }
    keyed
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
        literal: true,
    };
    match decide(config, route, parts, Bytes::new(), ctx) {
        Routed::Cacheable(c) => Some(c),
        _ => None,
    }
}

/// The key as a property (issue "Trust"): requests that differ in any byte
/// the backend can see never share an entry, and two users never share a
/// user-scope entry, whatever their ids' JSON types and sources.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn config(trust: bool, scope: &str) -> Config {
        let text = format!(
            r#"
trust_forwarded = {trust}
[[route]]
name = "search"
methods = ["GET", "POST"]
path = "/api/v1/search"
query = ["json:/query", "query:q"]
scope = "{scope}"
key_ignore = ["json:/session_id", "json:/request_id"]
vary_headers = ["accept-encoding"]
[identity]
user_uuid = ["header:x-user-uuid", "json:/user_uuid", "query:user_uuid"]
"#
        );
        Config::parse(&text, None).expect("a valid test config")
    }

    /// A request as a client builds it.
    #[derive(Clone, Debug)]
    struct Model {
        method: &'static str,
        params: Vec<(String, String)>,
        headers: Vec<(&'static str, String)>,
        /// Body members in the order they are written; raw JSON text values.
        body: Vec<(String, String)>,
    }

    impl Model {
        fn parts_and_body(&self) -> (Parts, Bytes) {
            let mut uri = String::from("/api/v1/search");
            if !self.params.is_empty() {
                uri.push('?');
                let segs: Vec<String> = self
                    .params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                uri.push_str(&segs.join("&"));
            }
            let mut b = Request::builder().method(self.method).uri(uri.as_str());
            for (name, value) in &self.headers {
                b = b.header(*name, value.as_str());
            }
            let body = if self.body.is_empty() {
                Bytes::new()
            } else {
                let members: Vec<String> = self
                    .body
                    .iter()
                    .map(|(k, v)| format!("{k:?}: {v}"))
                    .collect();
                Bytes::from(format!("{{{}}}", members.join(", ")))
            };
            (
                b.body(()).expect("a valid test request").into_parts().0,
                body,
            )
        }

        fn keys(&self, config: &Config) -> Option<Vec<String>> {
            self.cacheable(config).map(|c| c.keys)
        }

        /// The user-scope key, when the request is cacheable under a user.
        fn user_key(&self, config: &Config) -> Option<Option<String>> {
            self.cacheable(config)
                .map(|c| c.user_key_index.map(|i| c.keys[i].clone()))
        }

        fn cacheable(&self, config: &Config) -> Option<Cacheable> {
            let (parts, body) = self.parts_and_body();
            let name: Arc<str> = Arc::from("search");
            let ctx = ReadCtx {
                started: Instant::now(),
                route_name: &name,
                literal: true,
            };
            match decide(config, &config.routes[0], parts, body, ctx) {
                Routed::Cacheable(c) => Some(c),
                _ => None,
            }
        }

        fn set_body(&mut self, name: &str, value: String) {
            match self.body.iter_mut().find(|(k, _)| k == name) {
                Some(member) => member.1 = value,
                None => self.body.push((name.to_owned(), value)),
            }
        }

        fn set_header(&mut self, name: &'static str, value: String) {
            self.headers.retain(|(k, _)| *k != name);
            self.headers.push((name, value));
        }
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}"
    }

    /// JSON number texts, including those one float cannot tell apart.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..1000).prop_map(|n| n.to_string()),
            Just("0.1".to_owned()),
            Just("0.10000000000000000001".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("18446744073709551617".to_owned()),
            Just("1e2".to_owned()),
            Just("100".to_owned()),
            Just("-0".to_owned()),
        ]
    }

    fn base() -> impl Strategy<Value = Model> {
        (
            prop::bool::ANY,
            word(),
            proptest::option::of(word()),
            proptest::collection::vec(("(page|sort|f)", word()), 0..3),
            number(),
            word(),
        )
            .prop_map(|(post, query, user, params, limit, session)| {
                let mut headers = vec![
                    ("host", "shop.example".to_owned()),
                    ("content-type", "application/json".to_owned()),
                ];
                if let Some(u) = user {
                    headers.push(("x-user-id", u));
                }
                Model {
                    method: if post { "POST" } else { "GET" },
                    params,
                    headers,
                    body: vec![
                        ("query".into(), format!("{query:?}")),
                        ("limit".into(), limit),
                        ("session_id".into(), format!("{session:?}")),
                    ],
                }
            })
    }

    /// A change to something the backend sees and reads.
    #[derive(Clone, Debug)]
    enum Change {
        Param(String, String),
        /// A `q` beside the body's search text.
        Q(String),
        /// The same parameter value, percent-encoded.
        Encoded,
        Host(String),
        ContentType(String),
        ContentEncoding(String),
        Limit(String),
        Nested(String),
        AcceptEncoding(String),
        Forwarding(&'static str, String),
        Method,
        /// The body's `user_id` beside the header's.
        BodyUser(String),
        /// A member written twice.
        Duplicate(String),
        /// A guest's user uuid, from each of its sources.
        UuidHeader(String),
        UuidBody(String),
        UuidParam(String),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            ("(page|sort|f|x)", word()).prop_map(|(k, v)| Change::Param(k, v)),
            word().prop_map(Change::Q),
            Just(Change::Encoded),
            word().prop_map(Change::Host),
            "(text/plain|application/x-www-form-urlencoded|application/json; charset=latin1)"
                .prop_map(Change::ContentType),
            "(gzip|identity|x-evil)".prop_map(Change::ContentEncoding),
            number().prop_map(Change::Limit),
            word().prop_map(Change::Nested),
            "(gzip|br|identity)".prop_map(Change::AcceptEncoding),
            (
                prop_oneof![
                    Just("forwarded"),
                    Just("x-forwarded-prefix"),
                    Just("x-forwarded-host"),
                    Just("x-original-url"),
                    Just("x-http-method-override"),
                ],
                word()
            )
                .prop_map(|(n, v)| Change::Forwarding(n, v)),
            Just(Change::Method),
            word().prop_map(Change::BodyUser),
            word().prop_map(Change::Duplicate),
            word().prop_map(Change::UuidHeader),
            word().prop_map(Change::UuidBody),
            word().prop_map(Change::UuidParam),
        ]
    }

    /// Applies `change`; false when it changes nothing the backend sees.
    fn apply(m: &mut Model, change: &Change) -> bool {
        let before = m.parts_and_body();
        match change {
            Change::Param(k, v) => m.params.push((k.clone(), v.clone())),
            Change::Q(v) => m.params.push(("q".into(), v.clone())),
            Change::Encoded => match m.params.first_mut() {
                Some((_, v)) => *v = v.bytes().map(|b| format!("%{b:02X}")).collect(),
                None => return false,
            },
            Change::Host(h) => m.set_header("host", h.clone()),
            Change::ContentType(ct) => m.set_header("content-type", ct.clone()),
            Change::ContentEncoding(ce) => m.set_header("content-encoding", ce.clone()),
            Change::Limit(n) => m.set_body("limit", n.clone()),
            Change::Nested(v) => m.set_body("filters", format!(r#"{{"brand": {v:?}}}"#)),
            Change::AcceptEncoding(v) => m.set_header("accept-encoding", v.clone()),
            Change::Forwarding(n, v) => m.set_header(n, v.clone()),
            Change::Method => m.method = if m.method == "GET" { "POST" } else { "GET" },
            Change::BodyUser(u) => m.set_body("user_id", format!("{u:?}")),
            Change::Duplicate(v) => m.body.push(("query".into(), format!("{v:?}"))),
            Change::UuidHeader(u) => m.set_header("x-user-uuid", u.clone()),
            Change::UuidBody(u) => m.set_body("user_uuid", format!("{u:?}")),
            Change::UuidParam(u) => m.params.push(("user_uuid".into(), u.clone())),
        }
        let after = m.parts_and_body();
        // The backend receives the normalized Accept-Encoding.
        let seen = |(p, b): &(Parts, Bytes)| {
            let mut headers = p.headers.clone();
            normalize_accept_encoding(&mut headers);
            (
                p.method.clone(),
                p.uri.clone(),
                format!("{:?}", headers),
                b.clone(),
            )
        };
        seen(&before) != seen(&after)
    }

    fn shared(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a.iter().any(|k| b.contains(k)),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn requests_that_differ_in_what_the_backend_reads_never_share_an_entry(
            m in base(), c in change(), trust in prop::bool::ANY,
            scope in prop_oneof![Just("user"), Just("global"), Just("auto")],
        ) {
            let config = config(trust, scope);
            let mut changed = m.clone();
            prop_assume!(apply(&mut changed, &c));
            // `scope = "global"` says the answer does not depend on who asks,
            // and `auto` shares the backend's `public` answers across users:
            // by design. Users apart are the next property's.
            prop_assume!(!(scope != "user" && matches!(c, Change::BodyUser(_))));
            // A user uuid beside a user id: the id scopes the entry (and in
            // the shared scopes, by design, does not). Without one, the
            // uuid is all that tells two guests apart: keyed from every
            // source.
            let uuid = matches!(c, Change::UuidHeader(_) | Change::UuidBody(_) | Change::UuidParam(_));
            prop_assume!(!(uuid && m.headers.iter().any(|(k, _)| *k == "x-user-id")));
            // Without trust_forwarded the proxy drops these headers and sets
            // its own, so the backend never sees the change.
            let dropped = !trust && matches!(c, Change::Forwarding(..));
            let (a, b) = (m.keys(&config), changed.keys(&config));
            if dropped {
                prop_assert_eq!(a, b);
            } else {
                prop_assert!(!shared(&a, &b), "{:?} shares an entry after {:?}", m, c);
            }
        }

        #[test]
        fn what_the_backend_may_read_alike_shares_an_entry(
            m in base(), session in word(), request_id in number(), agent in word(),
        ) {
            let config = config(false, "user");
            prop_assume!(m.keys(&config).is_some());
            let mut same = m.clone();
            same.body.reverse();
            same.set_body("session_id", format!("{session:?}"));
            same.set_body("request_id", request_id);
            same.headers.reverse();
            same.set_header("user-agent", agent);
            // The search text in other case and spacing.
            if let Some((_, q)) = same.body.iter_mut().find(|(k, _)| k == "query") {
                let text: String = serde_json::from_str(q).expect("a JSON string");
                *q = format!("{:?}", format!("  {}  ", text.to_uppercase()));
            }
            prop_assert_eq!(m.keys(&config), same.keys(&config));
        }

        #[test]
        fn two_users_never_share_a_user_scope_entry_whatever_their_ids_types(
            a in id(), b in id(), where_a in 0usize..3, where_b in 0usize..3,
            query in word(), scope in prop_oneof![Just("user"), Just("auto")],
        ) {
            let config = config(false, scope);
            let (ma, ida) = as_user(&a, where_a, &query);
            let (mb, idb) = as_user(&b, where_b, &query);
            let (ka, kb) = (ma.user_key(&config), mb.user_key(&config));
            for (m, id, key) in [(&ma, &ida, &ka), (&mb, &idb, &kb)] {
                // Cached only under the user the backend reads, if any.
                if let Some(user_key) = key {
                    prop_assert!(id.is_some() && user_key.is_some(), "{:?} was cached as {:?}", m, user_key);
                }
            }
            if let (Some(Some(ka)), Some(Some(kb))) = (&ka, &kb) {
                prop_assert_eq!(ka == kb, ida == idb, "{:?} / {:?}", ma, mb);
            }
        }
    }

    /// User ids of every JSON type, including those a float would merge.
    fn id() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-c]{1,2}".prop_map(Value::String),
            (0u64..4).prop_map(Value::from),
            Just(json!("1")),
            Just(json!(-1)),
            Just(serde_json::from_str::<Value>("18446744073709551616").expect("json")),
            Just(serde_json::from_str::<Value>("18446744073709551617").expect("json")),
            Just(json!(1.5)),
            Just(json!(true)),
            Just(json!(["a"])),
            Just(json!({"id": "a"})),
        ]
    }

    /// The user as the backend reads it, where it is one user at all: a
    /// header or a parameter is text; a body member is a string or an
    /// integer, or no user anyone agrees on.
    fn id_text(id: &Value) -> Option<String> {
        match id {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        }
    }

    /// A request carrying `id` in a header (0), the body (1) or the query
    /// (2), and the user the backend reads from it.
    fn as_user(id: &Value, at: usize, query: &str) -> (Model, Option<String>) {
        let mut m = Model {
            method: "POST",
            params: Vec::new(),
            headers: vec![("content-type", "application/json".to_owned())],
            body: vec![("query".into(), format!("{query:?}"))],
        };
        let text = match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
        .replace(['[', ']', '{', '}', '"', ':'], "_");
        let read = match at {
            0 => {
                m.headers.push(("x-user-id", text.clone()));
                Some(text)
            }
            1 => {
                m.body.push(("user_id".into(), id.to_string()));
                id_text(id)
            }
            _ => {
                m.params.push(("user_id".into(), text.clone()));
                Some(text)
            }
        };
        (m, read)
    }
}
