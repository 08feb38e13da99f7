//! What may be served from the cache and what may be stored: pure decisions
//! over facts of the request and the answer (docs/contract.md section 3, steps 4, 8, 9).
//!
//! Each decision names its reason, so the reason shows in `Cache-Status` and in
//! the logs, and each runs at one point of the request flow: [`BypassReason`]
//! before the backend is asked, [`decide_headers`] when its status and
//! headers arrive, [`decide_body`] once its body is in hand.

use std::time::Duration;

use http::header::{SET_COOKIE, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::answer::SearchMeta;
use crate::cache_control::CacheControl;
use crate::config::{Freshness, RouteConfig, Scope};

/// Why a request goes to the backend without the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BypassReason {
    /// The route says `scope = "off"` (orders, carts).
    ScopeOff,
    /// A method other than GET, HEAD or POST.
    Method,
    /// The search text matches a `bypass_query` pattern.
    BypassQuery,
    /// The client sent `Cache-Control: no-store`.
    ClientNoStore,
    /// A search route, but no usable search text in the request.
    NoQuery,
    /// The body is larger than `max_request_body`.
    BodyTooLarge,
    /// The route reads JSON fields but the body is not JSON.
    BodyNotJson,
    /// An identity field (or the search text in a header) reads two ways:
    /// sent twice with different values, by sources that disagree, or with
    /// a value that is not a string or an integer.
    AmbiguousIdentity,
    /// A JSON body that parsers read differently (a member name twice).
    AmbiguousBody,
    /// `Authorization` or `Cookie` without a user id, on a route that does
    /// not set `share_credentialed` (RFC 9111 section 3.5).
    Credentialed,
    /// The route matched only the normalized path (`//`, `%6F`, `./`), or
    /// the path is one a lenient backend could read as a `scope = "off"`
    /// route's: never cached.
    PathNotCanonical,
    /// An identity value longer than `[identity] max_bytes`: client-chosen
    /// ids would otherwise grow keys, marks and Redis without bound. The
    /// search is logged without that value.
    IdentityTooLong,
}

impl BypassReason {
    /// The `detail` of `Cache-Status` for this bypass.
    pub fn detail(self) -> &'static str {
        match self {
            BypassReason::ScopeOff => "scope-off",
            BypassReason::Method => "method",
            BypassReason::BypassQuery => "bypass-query",
            BypassReason::ClientNoStore => "no-store",
            BypassReason::NoQuery => "no-query",
            BypassReason::BodyTooLarge => "body-too-large",
            BypassReason::BodyNotJson => "body-not-json",
            BypassReason::AmbiguousIdentity => "ambiguous-identity",
            BypassReason::AmbiguousBody => "ambiguous-body",
            BypassReason::Credentialed => "credentialed",
            BypassReason::PathNotCanonical => "path-not-canonical",
            BypassReason::IdentityTooLong => "identity-too-long",
        }
    }

    /// Whether a search bypassed for this reason is still a search worth
    /// logging (docs/contract.md: a request without a usable query is not logged).
    pub fn logged(self) -> bool {
        !matches!(self, BypassReason::NoQuery)
    }
}

/// What is known of a routed request before its body is read.
pub struct Arrival<'a> {
    pub method: &'a Method,
    /// Whether the path met the route as sent ([`crate::route::RouteMatch`]).
    pub literal: bool,
    /// The `Content-Length` the client announced.
    pub declared_len: Option<u64>,
    pub max_request_body: usize,
}

/// The bypass rules that need no body (docs/contract.md section 3, step 4), in order:
/// a `scope = "off"` route, a method the cache does not answer, a path met
/// only after normalization, and an announced body past
/// `max_request_body`.
pub fn bypass_on_arrival(route: &RouteConfig, req: &Arrival<'_>) -> Option<BypassReason> {
    if route.scope == Scope::Off {
        return Some(BypassReason::ScopeOff);
    }
    if !cacheable_method(req.method) {
        return Some(BypassReason::Method);
    }
    if !req.literal {
        return Some(BypassReason::PathNotCanonical);
    }
    if req
        .declared_len
        .is_some_and(|len| len > req.max_request_body as u64)
    {
        return Some(BypassReason::BodyTooLarge);
    }
    None
}

/// What is known of a routed request once its search text and identity
/// are read.
pub struct SearchRequest<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub cache_control: &'a CacheControl,
    /// The search text as keyed, on search routes.
    pub query_normalized: Option<&'a str>,
    pub has_user: bool,
}

/// The bypass rules of a read request (docs/contract.md section 3, step 4), in order:
/// a `bypass_query` match on the normalized text (`ＣＡＲＴ` is a cart
/// query), the client's `no-store`, a POST on an origin route (RFC 9110:
/// it invalidates instead), and credentials without a user id on a route
/// that does not share them.
pub fn bypass_search(route: &RouteConfig, req: &SearchRequest<'_>) -> Option<BypassReason> {
    if req
        .query_normalized
        .is_some_and(|q| route.bypass_query.is_match(q))
    {
        return Some(BypassReason::BypassQuery);
    }
    if req.cache_control.no_store {
        return Some(BypassReason::ClientNoStore);
    }
    let origin = route.freshness == Freshness::Origin;
    if origin && req.method == Method::POST {
        return Some(BypassReason::Method);
    }
    if !req.has_user && !route.share_credentialed && credentialed(req.headers, origin) {
        return Some(BypassReason::Credentialed);
    }
    None
}

/// Whether a request carries credentials a backend may personalize by:
/// `Cookie`, and `Authorization` except on origin routes, where RFC 9111
/// section 3.5 decides per answer (docs/contract.md 3b).
pub fn credentialed(headers: &HeaderMap, origin: bool) -> bool {
    headers.contains_key(http::header::COOKIE)
        || (!origin && headers.contains_key(http::header::AUTHORIZATION))
}

/// Methods whose answers may be cached at all.
pub fn cacheable_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD || method == Method::POST
}

/// Where an answer is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreScope {
    User,
    Global,
}

/// Why an answer is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// Status not in `cacheable_status`.
    Status,
    /// A 5xx or 429: the backend is in trouble, not the key.
    ServerError,
    NoStore,
    /// `no-cache`, or a freshness lifetime of zero: nothing to reuse.
    NoReuse,
    /// `private` where only a shared scope is possible.
    Private,
    SetCookie,
    /// `Vary: *`, or Vary naming a header the key does not include.
    Vary,
    /// The answer's intent is one of `bypass_intents` (cart, order).
    BypassIntent,
    /// On a route with `bypass_intents`: the answer's intent could not be
    /// read exactly as a client reads it (a coding, not strict JSON, a
    /// member named twice, an intent that is not a string).
    Unreadable,
    /// Larger than `max_object_bytes`.
    TooLarge,
    /// A `Content-Encoding` other than the one coding the request asked
    /// for, or a coded answer on an origin route whose `Vary` does not name
    /// `Accept-Encoding`: stored, it would reach clients that never
    /// accepted it.
    UnaskedCoding,
    /// A partial (206) or not-modified (304) answer, which is not a whole
    /// answer to store; says nothing about the next request.
    Partial,
    /// Origin routes: nothing says how long the answer is fresh (no
    /// `max-age`, `s-maxage`, `Expires`, and no heuristic).
    NoFreshness,
    /// Origin routes: an answer to a request with `Authorization` that does
    /// not say it may be shared (RFC 9111 section 3.5).
    Authorization,
}

impl NotStored {
    /// Whether the key should be remembered as "pass" (hit-for-pass): the
    /// answer will likely be unstorable next time too, so later requests go
    /// straight to the backend instead of queueing behind one another. Errors
    /// and oversized answers say nothing about the next answer.
    pub fn sets_pass(self) -> bool {
        // An Authorization request says nothing about the next requests for
        // the same key, which may carry none.
        !matches!(
            self,
            NotStored::ServerError
                | NotStored::TooLarge
                | NotStored::Authorization
                | NotStored::Partial
        )
    }
}

/// The route facts a store decision needs.
pub struct StoreRules<'a> {
    pub scope: Scope,
    pub has_user: bool,
    pub ttl: Duration,
    pub cacheable_status: &'a [u16],
    pub vary_headers: &'a [HeaderName],
}

/// Storable or not, from the status and headers alone; on success, where and
/// for how long.
pub fn decide_headers(
    rules: &StoreRules<'_>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(StoreScope, Duration), NotStored> {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(NotStored::ServerError);
    }
    // Whatever `cacheable_status` lists: the answer to one client's `Range`
    // or condition is not the answer to the next request for the key.
    if status == StatusCode::PARTIAL_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Err(NotStored::Partial);
    }
    if !rules.cacheable_status.contains(&status.as_u16()) {
        return Err(NotStored::Status);
    }
    let cc = CacheControl::from_response(headers);
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.no_cache || !cc.no_cache_fields.is_empty() {
        return Err(NotStored::NoReuse);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if !vary_is_keyed(headers, rules.vary_headers) {
        return Err(NotStored::Vary);
    }
    let scope = store_scope(rules.scope, rules.has_user, cc.public);
    if scope == StoreScope::Global && cc.private {
        return Err(NotStored::Private);
    }
    let freshness = freshness(rules.ttl, &cc, scope);
    if freshness.is_zero() {
        return Err(NotStored::NoReuse);
    }
    Ok((scope, freshness))
}

/// Where an answer goes: the user's own scope on a user-scoped route, and
/// on an `auto` route unless the answer says `public`; else the shared one.
pub fn store_scope(scope: Scope, has_user: bool, public: bool) -> StoreScope {
    match (scope, has_user) {
        (Scope::User, true) => StoreScope::User,
        (Scope::Auto, true) if !public => StoreScope::User,
        _ => StoreScope::Global,
    }
}

/// How a request spelled its search text, against the normal form the key
/// holds (NFKC, lowercase, trimmed, inner whitespace collapsed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// Already in normal form, or no search text: the backend read what
    /// the key stands for.
    Normal,
    /// Any other spelling (`ＹＯＧＨＵＲＴ`, `Cheese  `): the backend
    /// answered another text than the key's.
    Other,
}

impl Spelling {
    pub fn of(query: Option<&str>, normalized: Option<&str>) -> Spelling {
        match (query, normalized) {
            (Some(q), Some(n)) if q != n => Spelling::Other,
            _ => Spelling::Normal,
        }
    }
}

/// Whether a request's own answer may be kept under a key, or mark it
/// hit-for-pass, or confirm it by revalidation (docs/keys-and-security.md, "Security model"):
/// a shared key holds only the backend's answer to the normalized text, so
/// another spelling may be answered from a shared entry but never fills,
/// replaces, extends or passes it, not even with `no-cache`. A user's own
/// key only ever reaches that user, so any spelling may fill it.
pub fn may_store_spelling(spelling: Spelling, shared_key: bool) -> bool {
    spelling == Spelling::Normal || !shared_key
}

/// An answer that announces more than `max_object_bytes` is not read for
/// the store: it streams on.
pub fn declared_size(headers: &HeaderMap, max_object_bytes: usize) -> Result<(), NotStored> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > max_object_bytes as u64 => Err(NotStored::TooLarge),
        _ => Ok(()),
    }
}

/// The answer's content coding must be none, `identity` or the one the
/// request asked for (the normalized `Accept-Encoding`), and a coded answer
/// is stored only where that coding is `keyed`: else it would reach clients
/// that asked for another.
pub fn coding_as_asked(
    asked: Option<&HeaderValue>,
    answer: &HeaderMap,
    keyed: bool,
) -> Result<(), NotStored> {
    let mut codings = answer
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
    let Some(first) = codings.next() else {
        return Ok(());
    };
    let first = if first.eq_ignore_ascii_case("x-gzip") {
        "gzip"
    } else {
        first
    };
    let asked = asked.and_then(|v| v.to_str().ok()).unwrap_or("identity");
    if keyed && codings.next().is_none() && first.eq_ignore_ascii_case(asked) {
        Ok(())
    } else {
        Err(NotStored::UnaskedCoding)
    }
}

/// The route's ttl, shortened by the backend's `s-maxage` (shared scope) or
/// `max-age`. `s-maxage` is for shared caches only, so a user-scope entry
/// follows `max-age`.
pub fn freshness(ttl: Duration, cc: &CacheControl, scope: StoreScope) -> Duration {
    let backend = match scope {
        StoreScope::Global => cc.s_maxage.or(cc.max_age),
        StoreScope::User => cc.max_age.or(cc.s_maxage),
    };
    match backend {
        Some(secs) => ttl.min(Duration::from_secs(secs)),
        None => ttl,
    }
}

/// Every header a `Vary` names must be one the key includes; the key
/// always holds the normalized `Accept-Encoding`.
fn vary_is_keyed(headers: &HeaderMap, keyed: &[HeaderName]) -> bool {
    headers
        .get_all(VARY)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("*").split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .all(|name| {
            name != "*"
                && (name.eq_ignore_ascii_case("accept-encoding")
                    || keyed.iter().any(|k| k.as_str().eq_ignore_ascii_case(name)))
        })
}

/// The body-dependent part of the decision. On a route that names cart
/// intents, an answer whose intent could not be read exactly as a client
/// reads it is never stored: it may be a cart answer (fail closed).
pub fn decide_body(
    meta: &SearchMeta,
    bypass_intents: &[String],
    body_len: usize,
    max_object_bytes: usize,
) -> Result<(), NotStored> {
    if body_len > max_object_bytes {
        return Err(NotStored::TooLarge);
    }
    if bypass_intents.is_empty() {
        return Ok(());
    }
    if meta.unreadable.is_some() {
        return Err(NotStored::Unreadable);
    }
    if let Some(intent) = &meta.intent
        && is_bypass_intent(intent, bypass_intents)
    {
        return Err(NotStored::BypassIntent);
    }
    Ok(())
}

/// Intents compare ASCII case-insensitively and trimmed: `Add_To_Order ` is
/// a cart intent.
pub fn is_bypass_intent(intent: &str, bypass_intents: &[String]) -> bool {
    let intent = intent.trim();
    bypass_intents
        .iter()
        .any(|b| b.trim().eq_ignore_ascii_case(intent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn only_the_normal_spelling_fills_a_shared_key() {
        let normal = Spelling::of(Some("cheese"), Some("cheese"));
        assert_eq!(normal, Spelling::Normal);
        assert_eq!(Spelling::of(None, None), Spelling::Normal);
        for sent in ["CHEESE  ", "Cheese", "ｃｈｅｅｓｅ", " cheese"] {
            let other = Spelling::of(Some(sent), Some("cheese"));
            assert_eq!(other, Spelling::Other, "{sent:?}");
            assert!(
                !may_store_spelling(other, true),
                "{sent:?} fills a shared key"
            );
            assert!(
                may_store_spelling(other, false),
                "{sent:?} in a user's own key"
            );
        }
        assert!(may_store_spelling(normal, true));
    }

    fn rules(scope: Scope, has_user: bool) -> StoreRules<'static> {
        StoreRules {
            scope,
            has_user,
            ttl: HOUR,
            cacheable_status: &[200],
            vary_headers: &[],
        }
    }

    #[test]
    fn plain_200_is_stored_in_the_user_scope_for_the_route_ttl() {
        let d = decide_headers(&rules(Scope::User, true), StatusCode::OK, &HeaderMap::new());
        assert_eq!(d, Ok((StoreScope::User, HOUR)));
    }

    #[test]
    fn user_scope_without_user_falls_back_to_global() {
        let d = decide_headers(
            &rules(Scope::User, false),
            StatusCode::OK,
            &HeaderMap::new(),
        );
        assert_eq!(d, Ok((StoreScope::Global, HOUR)));
    }

    #[test]
    fn each_store_rule_refuses() {
        let r = rules(Scope::Global, false);
        let cases: [(StatusCode, HeaderMap, NotStored); 8] = [
            (StatusCode::NOT_FOUND, HeaderMap::new(), NotStored::Status),
            (
                StatusCode::BAD_GATEWAY,
                HeaderMap::new(),
                NotStored::ServerError,
            ),
            (
                StatusCode::OK,
                headers(&[("cache-control", "no-store")]),
                NotStored::NoStore,
            ),
            (
                StatusCode::OK,
                headers(&[("cache-control", "private")]),
                NotStored::Private,
            ),
            (
                StatusCode::OK,
                headers(&[("set-cookie", "a=b")]),
                NotStored::SetCookie,
            ),
            (StatusCode::OK, headers(&[("vary", "*")]), NotStored::Vary),
            (
                StatusCode::OK,
                headers(&[("vary", "accept-language")]),
                NotStored::Vary,
            ),
            (
                StatusCode::OK,
                headers(&[("cache-control", "max-age=0")]),
                NotStored::NoReuse,
            ),
        ];
        for (status, h, want) in cases {
            assert_eq!(decide_headers(&r, status, &h), Err(want), "{status} {h:?}");
        }
    }

    #[test]
    fn private_is_stored_for_the_user() {
        let h = headers(&[("cache-control", "private, max-age=60")]);
        let d = decide_headers(&rules(Scope::User, true), StatusCode::OK, &h);
        assert_eq!(d, Ok((StoreScope::User, Duration::from_secs(60))));
    }

    #[test]
    fn auto_scope_stores_public_globally_and_the_rest_per_user() {
        let public = headers(&[("cache-control", "public")]);
        assert_eq!(
            decide_headers(&rules(Scope::Auto, true), StatusCode::OK, &public),
            Ok((StoreScope::Global, HOUR))
        );
        assert_eq!(
            decide_headers(&rules(Scope::Auto, true), StatusCode::OK, &HeaderMap::new()),
            Ok((StoreScope::User, HOUR))
        );
    }

    #[test]
    fn vary_on_a_keyed_header_is_fine() {
        let keyed = [HeaderName::from_static("accept-encoding")];
        let r = StoreRules {
            vary_headers: &keyed,
            ..rules(Scope::Global, false)
        };
        let h = headers(&[("vary", "Accept-Encoding")]);
        assert!(decide_headers(&r, StatusCode::OK, &h).is_ok());
    }

    #[test]
    fn backend_max_age_shortens_but_never_lengthens_the_ttl() {
        let short = headers(&[("cache-control", "max-age=60")]);
        let long = headers(&[("cache-control", "max-age=86400")]);
        let r = rules(Scope::Global, false);
        assert_eq!(
            decide_headers(&r, StatusCode::OK, &short).unwrap().1,
            Duration::from_secs(60)
        );
        assert_eq!(decide_headers(&r, StatusCode::OK, &long).unwrap().1, HOUR);
    }

    #[test]
    fn s_maxage_wins_in_the_shared_scope() {
        let h = headers(&[("cache-control", "max-age=60, s-maxage=30")]);
        let r = rules(Scope::Global, false);
        assert_eq!(
            decide_headers(&r, StatusCode::OK, &h).unwrap().1,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn cart_intents_and_large_bodies_are_not_stored() {
        let intents = vec!["add_to_order".to_string()];
        let meta = |intent: &str| SearchMeta {
            intent: Some(intent.into()),
            ..SearchMeta::default()
        };
        assert_eq!(
            decide_body(&meta("add_to_order"), &intents, 10, 100),
            Err(NotStored::BypassIntent)
        );
        assert_eq!(
            decide_body(&meta(" Add_To_ORDER\t"), &intents, 10, 100),
            Err(NotStored::BypassIntent)
        );
        assert_eq!(
            decide_body(&meta("product_search"), &intents, 10, 100),
            Ok(())
        );
        assert_eq!(
            decide_body(&SearchMeta::default(), &intents, 101, 100),
            Err(NotStored::TooLarge)
        );
    }

    #[test]
    fn an_unreadable_answer_is_stored_only_where_no_intent_is_a_cart() {
        let intents = vec!["add_to_order".to_string()];
        for why in crate::answer::Unreadable::ALL {
            let meta = SearchMeta {
                unreadable: Some(why),
                ..SearchMeta::default()
            };
            assert_eq!(
                decide_body(&meta, &intents, 10, 100),
                Err(NotStored::Unreadable)
            );
            assert_eq!(decide_body(&meta, &[], 10, 100), Ok(()));
        }
    }

    #[test]
    fn errors_and_oversize_do_not_set_pass() {
        assert!(!NotStored::ServerError.sets_pass());
        assert!(!NotStored::TooLarge.sets_pass());
        assert!(NotStored::SetCookie.sets_pass());
        assert!(NotStored::BypassIntent.sets_pass());
    }

    fn route(extra: &str) -> RouteConfig {
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n[[route]]\nname = \"r\"\npath = \"/s\"\n{extra}\n"
        );
        let config = crate::config::Config::parse(&text, None).expect("a valid test config");
        config.routes[0].clone()
    }

    fn arrival(method: &Method, literal: bool, declared_len: Option<u64>) -> Arrival<'_> {
        Arrival {
            method,
            literal,
            declared_len,
            max_request_body: 100,
        }
    }

    #[test]
    fn arrival_rules_run_in_order_and_need_no_body() {
        let user = route("scope = \"user\"\nmethods = [\"GET\", \"POST\"]");
        let off = route("scope = \"off\"");
        let get = Method::GET;
        let delete = Method::DELETE;
        assert_eq!(
            bypass_on_arrival(&user, &arrival(&get, true, Some(100))),
            None
        );
        assert_eq!(
            bypass_on_arrival(&off, &arrival(&get, true, None)),
            Some(BypassReason::ScopeOff)
        );
        assert_eq!(
            bypass_on_arrival(&user, &arrival(&delete, false, None)),
            Some(BypassReason::Method)
        );
        assert_eq!(
            bypass_on_arrival(&user, &arrival(&get, false, Some(1000))),
            Some(BypassReason::PathNotCanonical)
        );
        assert_eq!(
            bypass_on_arrival(&user, &arrival(&get, true, Some(101))),
            Some(BypassReason::BodyTooLarge)
        );
    }

    #[test]
    fn search_rules_run_in_order() {
        let plain = route("query = [\"query:q\"]\nbypass_query = [\"^cart\"]");
        let origin = route("freshness = \"origin\"\nmethods = [\"GET\", \"POST\"]");
        let sharing = route("share_credentialed = true");
        let no_store = CacheControl::from_request(&headers(&[("cache-control", "no-store")]));
        let none = CacheControl::default();
        let cookie = headers(&[("cookie", "s=1")]);
        let req = |method, headers, cache_control, query_normalized, has_user| SearchRequest {
            method,
            headers,
            cache_control,
            query_normalized,
            has_user,
        };
        let empty = HeaderMap::new();
        let get = &Method::GET;
        let check = |r: &RouteConfig, s: SearchRequest<'_>| bypass_search(r, &s);
        assert_eq!(
            check(&plain, req(get, &empty, &none, Some("milk"), false)),
            None
        );
        assert_eq!(
            check(&plain, req(get, &cookie, &no_store, Some("cart 1"), false)),
            Some(BypassReason::BypassQuery)
        );
        assert_eq!(
            check(&plain, req(get, &cookie, &no_store, Some("milk"), false)),
            Some(BypassReason::ClientNoStore)
        );
        assert_eq!(
            check(&origin, req(&Method::POST, &cookie, &none, None, false)),
            Some(BypassReason::Method)
        );
        assert_eq!(
            check(&plain, req(get, &cookie, &none, Some("milk"), false)),
            Some(BypassReason::Credentialed)
        );
        assert_eq!(
            check(&plain, req(get, &cookie, &none, Some("milk"), true)),
            None
        );
        assert_eq!(check(&sharing, req(get, &cookie, &none, None, false)), None);
    }

    #[test]
    fn scope_follows_the_route_and_public() {
        assert_eq!(store_scope(Scope::User, true, true), StoreScope::User);
        assert_eq!(store_scope(Scope::Auto, true, false), StoreScope::User);
        assert_eq!(store_scope(Scope::Auto, true, true), StoreScope::Global);
        assert_eq!(store_scope(Scope::User, false, false), StoreScope::Global);
        assert_eq!(store_scope(Scope::Global, true, false), StoreScope::Global);
    }

    #[test]
    fn an_announced_length_past_the_limit_is_too_large() {
        assert_eq!(declared_size(&HeaderMap::new(), 10), Ok(()));
        assert_eq!(
            declared_size(&headers(&[("content-length", "10")]), 10),
            Ok(())
        );
        assert_eq!(
            declared_size(&headers(&[("content-length", " 11 ")]), 10),
            Err(NotStored::TooLarge)
        );
        assert_eq!(
            declared_size(&headers(&[("content-length", "x")]), 10),
            Ok(())
        );
    }

    #[test]
    fn an_answer_is_stored_only_in_the_coding_asked_for() {
        let gzip = HeaderValue::from_static("gzip");
        let asked = Some(&gzip);
        for (coding, ok) in [
            ("", true),
            ("identity", true),
            ("gzip", true),
            ("GZIP", true),
            ("x-gzip", true),
            ("br", false),
            ("gzip, br", false),
            ("deflate", false),
        ] {
            let h = if coding.is_empty() {
                HeaderMap::new()
            } else {
                headers(&[("content-encoding", coding)])
            };
            assert_eq!(coding_as_asked(asked, &h, true).is_ok(), ok, "{coding}");
        }
        let gz = headers(&[("content-encoding", "gzip")]);
        assert_eq!(
            coding_as_asked(None, &gz, true),
            Err(NotStored::UnaskedCoding)
        );
        // Not keyed (an origin answer whose Vary leaves Accept-Encoding out):
        // only an uncoded answer.
        assert_eq!(
            coding_as_asked(asked, &gz, false),
            Err(NotStored::UnaskedCoding)
        );
        assert_eq!(coding_as_asked(asked, &HeaderMap::new(), false), Ok(()));
    }
}
