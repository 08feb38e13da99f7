//! Route matching and field extraction: which rule a request falls under, and
//! where its query and identity come from (`header:`, `json:`, `query:`).

use std::borrow::Cow;

use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{IdentityConfig, RouteConfig, Scope, Source};

/// The route a request falls under (docs/contract.md section 3, step 1).
#[derive(Clone, Copy, Debug)]
pub struct RouteMatch<'a> {
    /// Metrics and route names are kept per index.
    pub index: usize,
    pub route: &'a RouteConfig,
    /// The path as sent matches the route: no normalization was needed. A
    /// request that meets a route only through normalization is served on it
    /// but never cached there, because the key holds the path the backend
    /// gets, and a backend that does not normalize may answer it otherwise.
    pub literal: bool,
}

/// The first route whose method and path match, the path taken in its
/// normalized form ([`normalize_path`]), so that `//api/v1/order`,
/// `/api/v1/%6Frder` and `/api/v1/x/../order` meet the orders route.
///
/// A path that only a lenient backend would read as a `scope = "off"` route's
/// (any case, any percent-encoding, backslashes, `;` parameters; see
/// [`lenient_path`]) is held to that route, whatever route it matches
/// otherwise: order and cart traffic is never cached under another name.
pub fn match_route<'a>(
    routes: &'a [RouteConfig],
    method: &Method,
    path: &str,
) -> Option<RouteMatch<'a>> {
    let normalized = normalize_path(path);
    let found = routes
        .iter()
        .enumerate()
        .find(|(_, r)| r.matches(method, &normalized))
        .map(|(index, route)| RouteMatch {
            index,
            route,
            literal: route.matches(method, path),
        });
    if found.is_some_and(|m| m.route.scope == Scope::Off) {
        return found;
    }
    // Only worth the lenient form when some off route could claim the path.
    if routes
        .iter()
        .any(|r| r.scope == Scope::Off && r.methods.contains(method))
    {
        let lenient = lenient_path(path);
        let held = routes.iter().enumerate().find(|(_, r)| {
            r.scope == Scope::Off
                && r.methods.contains(method)
                && r.path.matches_ignoring_case(&lenient)
        });
        if let Some((index, route)) = held {
            return Some(RouteMatch {
                index,
                route,
                literal: false,
            });
        }
    }
    found
}

/// The path in the normal form of RFC 3986 section 6.2.2: percent-encoded
/// unreserved characters decoded, dot segments removed (5.2.4), and repeated
/// slashes merged. Borrowed when the path is already normal, as nearly every
/// path is.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let needs = path.contains("//")
        || path.contains('%')
        || path.split('/').any(|seg| seg == "." || seg == "..");
    if !needs {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    Cow::Owned(remove_dot_segments(&decoded))
}

/// The path as the most lenient backend could read it: every percent-escape
/// decoded (twice, for double encoding), `\\` as `/`, `;` parameters dropped
/// from each segment, then normalized; compared ignoring ASCII case. Used only
/// to keep `scope = "off"` traffic away from caching routes. Borrowed for the
/// plain paths nearly every request has.
pub fn lenient_path(path: &str) -> Cow<'_, str> {
    if !path.contains(['%', '\\', ';']) {
        return normalize_path(path);
    }
    let once = percent_decode_str(path).decode_utf8_lossy();
    let twice = percent_decode_str(&once).decode_utf8_lossy();
    let slashed = twice.replace('\\', "/");
    let unparam: Vec<&str> = slashed
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect();
    Cow::Owned(remove_dot_segments(&unparam.join("/")))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes `%XX` escapes of unreserved characters only; others stay encoded
/// (`%2F` is not a slash).
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            )
            && unreserved(h * 16 + l)
        {
            out.push(char::from(h * 16 + l));
            i += 3;
            continue;
        }
        // Copy up to the next escape in one piece (UTF-8 stays whole).
        let next = bytes[i + 1..]
            .iter()
            .position(|&b| b == b'%')
            .map_or(bytes.len(), |p| i + 1 + p);
        out.push_str(&path[i..next]);
        i = next;
    }
    out
}

/// RFC 3986 section 5.2.4 over `/`-separated segments, with empty segments
/// (repeated slashes) merged; a trailing slash is kept.
fn remove_dot_segments(path: &str) -> String {
    if !path.starts_with('/') {
        // Not an origin-form path ("*", or empty): leave it as it came.
        return path.to_owned();
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" => trailing = i == last && i > 0,
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normal = String::with_capacity(path.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if trailing || normal.is_empty() {
        normal.push('/');
    }
    normal
}

/// What one request offers the sources to read from.
pub struct RequestView<'a> {
    pub headers: &'a HeaderMap,
    pub json: Option<&'a Value>,
    pub params: &'a [(Cow<'a, str>, Cow<'a, str>)],
}

/// A field read two ways: a header or parameter sent twice with different
/// values, two sources of one identity field that disagree, a header value
/// that is not UTF-8, or an identity value that is neither a string nor an
/// integer (`true`, a list, an object, a fraction, an integer beyond 64
/// bits). Caching on any of them could serve one user's answer to another,
/// and the value still reaches the backend, so treating it as absent would
/// store that user's answer in the global scope: the request is bypassed.
#[derive(Debug, PartialEq, Eq)]
pub struct Ambiguous;

/// What a field holds: the search text (strings only) or an identity
/// (strings, and integers keyed by their exact decimal text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Id,
}

/// A field read from the request: its value, and which source (by index in
/// its list) supplied it. That source alone leaves the key, since its value
/// enters the key (the search text, normalized) or decides the scope (the
/// user id) in its place; every other source stays in the key as sent, even
/// when it holds the same value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Field {
    pub value: Option<String>,
    pub source: Option<usize>,
}

/// What one source holds.
enum Read {
    /// Missing, JSON `null`, or empty: the field says nothing here.
    Absent,
    Value(String),
    /// Present with a value the field cannot take.
    Invalid,
}

/// Reads a field from its sources, the first that yields a value winning.
///
/// An identity field must read one way: every source that holds it must
/// hold the same value, and a value that is not a string or an integer is
/// [`Ambiguous`]. The search text skips sources that hold no string, and a
/// later source that disagrees stays in the key (a query parameter or body
/// member) or, being a header the key cannot hold, makes the request
/// ambiguous.
pub fn read_field(
    sources: &[Source],
    view: &RequestView<'_>,
    kind: Kind,
) -> Result<Field, Ambiguous> {
    let mut field = Field::default();
    for (i, source) in sources.iter().enumerate() {
        let read = read_source(source, view, kind)?;
        match (&field.value, read) {
            (_, Read::Absent) => {}
            (None, Read::Value(v)) => {
                field.value = Some(v);
                field.source = Some(i);
            }
            (Some(first), Read::Value(v)) if *first == v => {}
            (None, Read::Invalid) if kind == Kind::Text => {}
            _ if kind == Kind::Id || matches!(source, Source::Header(_)) => {
                return Err(Ambiguous);
            }
            _ => {}
        }
    }
    Ok(field)
}

/// The first value of `sources`, as [`read_field`] reads it.
pub fn extract(
    sources: &[Source],
    view: &RequestView<'_>,
    kind: Kind,
) -> Result<Option<String>, Ambiguous> {
    read_field(sources, view, kind).map(|f| f.value)
}

fn read_source(source: &Source, view: &RequestView<'_>, kind: Kind) -> Result<Read, Ambiguous> {
    match source {
        Source::Header(name) => {
            let mut values = view.headers.get_all(name).iter();
            let Some(first) = values.next() else {
                return Ok(Read::Absent);
            };
            if values.any(|other| other != first) {
                return Err(Ambiguous);
            }
            let text = first.to_str().map_err(|_| Ambiguous)?.trim();
            Ok(present(text))
        }
        Source::Json(pointer) => Ok(match view.json.and_then(|doc| json_pointer(doc, pointer)) {
            None | Some(Value::Null) => Read::Absent,
            Some(Value::String(s)) if s.trim().is_empty() => Read::Absent,
            Some(Value::String(s)) => Read::Value(s.clone()),
            // Exact decimal text: integers are never read through a float,
            // so 2^64 and 2^64 + 1 stay two users.
            Some(Value::Number(n)) if kind == Kind::Id && (n.is_u64() || n.is_i64()) => {
                Read::Value(n.to_string())
            }
            Some(_) => Read::Invalid,
        }),
        Source::Query(name) => {
            let mut found: Option<&str> = None;
            for (k, v) in view.params {
                if k == name {
                    match found {
                        Some(prev) if prev != v => return Err(Ambiguous),
                        _ => found = Some(v),
                    }
                }
            }
            // A value that was not UTF-8 decodes lossily: `%FF` and `%FE`
            // both read as U+FFFD, though the backend tells them apart.
            match found {
                Some(v) if v.contains(char::REPLACEMENT_CHARACTER) => Err(Ambiguous),
                _ => Ok(found.map_or(Read::Absent, present)),
            }
        }
    }
}

fn present(text: &str) -> Read {
    if text.trim().is_empty() {
        Read::Absent
    } else {
        Read::Value(text.to_owned())
    }
}

/// The identity of the caller, read per `[identity]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The id that scopes user entries: the raw id, or its SHA-256 when
    /// `hash_user_id` is on (the raw value then never leaves this struct).
    pub user_id: Option<String>,
    pub user_uuid: Option<String>,
    pub session_id: Option<String>,
}

/// The source that supplied each field, for [`Unkeyed`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Supplied {
    pub query: Option<usize>,
    pub user_id: Option<usize>,
    pub user_uuid: Option<usize>,
    pub session_id: Option<usize>,
}

impl Identity {
    /// Reads the identity; `supplied` learns which sources supplied it.
    pub fn extract(
        cfg: &IdentityConfig,
        view: &RequestView<'_>,
        supplied: &mut Supplied,
    ) -> Result<Identity, Ambiguous> {
        let user = read_field(&cfg.user_id, view, Kind::Id)?;
        let uuid = read_field(&cfg.user_uuid, view, Kind::Id)?;
        let session = read_field(&cfg.session_id, view, Kind::Id)?;
        supplied.user_id = user.source;
        // A user uuid leaves the key only when a user id scopes the entry:
        // without one it is all that tells two anonymous callers apart, and
        // a backend may personalize by it.
        supplied.user_uuid = uuid.source.filter(|_| user.value.is_some());
        supplied.session_id = session.source;
        let user_id = user.value.map(|raw| {
            if cfg.hash_user_id {
                hex::encode(Sha256::digest(raw.as_bytes()))
            } else {
                raw
            }
        });
        Ok(Identity {
            user_id,
            user_uuid: uuid.value,
            session_id: session.value,
        })
    }
}

impl Identity {
    /// The identity without any value longer than `max_bytes`, and whether
    /// one was dropped (`identity-too-long`). Borrows nothing and costs a
    /// length check per field when every value fits.
    pub fn bounded(mut self, max_bytes: usize) -> (Identity, bool) {
        let mut dropped = false;
        for field in [&mut self.user_id, &mut self.user_uuid, &mut self.session_id] {
            if field.as_ref().is_some_and(|v| v.len() > max_bytes) {
                *field = None;
                dropped = true;
            }
        }
        (self, dropped)
    }
}

/// Whether any identity, query or ignore rule of the route reads the JSON
/// body, i.e. whether the body must be parsed at all.
pub fn reads_json(route: &RouteConfig, identity: &IdentityConfig) -> bool {
    let json = |s: &Source| matches!(s, Source::Json(_));
    route.query.iter().any(json)
        || route.key_ignore.iter().any(json)
        || identity.user_id.iter().any(json)
        || identity.user_uuid.iter().any(json)
        || identity.session_id.iter().any(json)
}

/// What leaves the key of one request: the route's `key_ignore`, and the
/// source that supplied the search text or an identity field ([`Field`]).
/// Only those: a `q` parameter that did not supply the search text, or a
/// body `user_id` beside a header that did, reaches the backend and so
/// stays in the key.
pub struct Unkeyed<'r> {
    pub route: &'r RouteConfig,
    pub identity: &'r IdentityConfig,
    pub supplied: Supplied,
}

impl<'r> Unkeyed<'r> {
    fn sources(&self) -> impl Iterator<Item = &'r Source> + '_ {
        let pick = |list: &'r [Source], i: Option<usize>| i.and_then(|i| list.get(i));
        self.route.key_ignore.iter().chain(
            [
                pick(&self.route.query, self.supplied.query),
                pick(&self.identity.user_id, self.supplied.user_id),
                pick(&self.identity.user_uuid, self.supplied.user_uuid),
                pick(&self.identity.session_id, self.supplied.session_id),
            ]
            .into_iter()
            .flatten(),
        )
    }

    /// Whether the query-string parameter `name` (decoded) leaves the key.
    pub fn param(&self, name: &str) -> bool {
        self.sources()
            .any(|s| matches!(s, Source::Query(q) if q == name))
    }

    /// The JSON pointers whose members leave the key.
    pub fn pointers(&self) -> impl Iterator<Item = &'r str> + '_ {
        self.sources().filter_map(|s| match s {
            Source::Json(p) => Some(p.as_str()),
            _ => None,
        })
    }
}

/// `doc.pointer(pointer)` (RFC 6901) without its allocations: serde_json
/// unescapes every token into a new `String`, twice, on every call, and this
/// runs for each identity and query field of every request. Tokens holding an
/// escape (`~0`, `~1`) take serde_json's own path.
pub fn json_pointer<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(doc);
    }
    let rest = pointer.strip_prefix('/')?;
    if rest.contains('~') {
        return doc.pointer(pointer);
    }
    rest.split('/').try_fold(doc, |target, token| match target {
        Value::Object(map) => map.get(token),
        Value::Array(list) => array_index(token).and_then(|i| list.get(i)),
        _ => None,
    })
}

/// An array index as RFC 6901 (and serde_json) reads it: digits, no sign,
/// no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_resolve_as_serde_json_does() {
        let doc = serde_json::json!({
            "query": "milk",
            "a": {"b": [10, {"c": true}], "": 1, "x/y": 2, "t~": 3},
            "list": [1, 2, 3],
            "05": "five",
        });
        for p in [
            "",
            "/query",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/2",
            "/a/b/01",
            "/a/b/+1",
            "/a/b/-",
            "/a/",
            "/a/x~1y",
            "/a/t~0",
            "/list/2",
            "/list/3",
            "/05",
            "/query/x",
            "/missing",
            "query",
            "/a/b/1/c/d",
        ] {
            assert_eq!(json_pointer(&doc, p), doc.pointer(p), "{p:?}");
        }
    }
    use http::{HeaderName, HeaderValue};
    use serde_json::json;

    fn view<'a>(
        headers: &'a HeaderMap,
        json: Option<&'a Value>,
        params: &'a [(Cow<'a, str>, Cow<'a, str>)],
    ) -> RequestView<'a> {
        RequestView {
            headers,
            json,
            params,
        }
    }

    fn sources() -> Vec<Source> {
        vec![
            Source::Header(HeaderName::from_static("x-user-id")),
            Source::Json("/user_id".into()),
            Source::Query("user_id".into()),
        ]
    }

    #[test]
    fn the_first_source_with_a_value_wins_and_others_must_agree() {
        let h = HeaderMap::new();
        let body = json!({"user_id": "alice"});
        let params = [(Cow::from("user_id"), Cow::from("alice"))];
        let field = read_field(&sources(), &view(&h, Some(&body), &params), Kind::Id).unwrap();
        assert_eq!(field.value.as_deref(), Some("alice"));
        assert_eq!(field.source, Some(1));
        let empty = json!({"user_id": ""});
        assert_eq!(
            extract(&sources(), &view(&h, Some(&empty), &params), Kind::Id),
            Ok(Some("alice".into())),
            "an empty value is no value"
        );
    }

    #[test]
    fn identity_sources_that_disagree_are_ambiguous() {
        let mut h = HeaderMap::new();
        h.insert("x-user-id", HeaderValue::from_static("alice"));
        let body = json!({"user_id": "bob"});
        assert_eq!(
            extract(&sources(), &view(&h, Some(&body), &[]), Kind::Id),
            Err(Ambiguous)
        );
        let params = [(Cow::from("user_id"), Cow::from("bob"))];
        assert_eq!(
            extract(&sources(), &view(&h, None, &params), Kind::Id),
            Err(Ambiguous)
        );
    }

    #[test]
    fn an_identity_that_is_not_a_string_or_an_integer_is_ambiguous() {
        let h = HeaderMap::new();
        for value in [
            json!(true),
            json!(["alice"]),
            json!({"id": "alice"}),
            json!(1.5),
            serde_json::from_str::<Value>("18446744073709551616").unwrap(),
            serde_json::from_str::<Value>("1e3").unwrap(),
        ] {
            let body = json!({ "user_id": value });
            assert_eq!(
                extract(&sources(), &view(&h, Some(&body), &[]), Kind::Id),
                Err(Ambiguous),
                "{body}"
            );
        }
        for (text, id) in [
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("0", "0"),
        ] {
            let body: Value = serde_json::from_str(&format!("{{\"user_id\": {text}}}")).unwrap();
            assert_eq!(
                extract(&sources(), &view(&h, Some(&body), &[]), Kind::Id),
                Ok(Some(id.into()))
            );
        }
        let null = json!({"user_id": null});
        assert_eq!(
            extract(&sources(), &view(&h, Some(&null), &[]), Kind::Id),
            Ok(None)
        );
    }

    #[test]
    fn a_search_text_source_that_disagrees_stays_keyed_unless_it_is_a_header() {
        let h = HeaderMap::new();
        let q = [Source::Json("/query".into()), Source::Query("q".into())];
        let body = json!({"query": "eggs"});
        let params = [(Cow::from("q"), Cow::from("EVIL"))];
        let field = read_field(&q, &view(&h, Some(&body), &params), Kind::Text).unwrap();
        assert_eq!(field.value.as_deref(), Some("eggs"));
        assert_eq!(field.source, Some(0));
        let mut with_header = HeaderMap::new();
        with_header.insert("x-q", HeaderValue::from_static("EVIL"));
        let hq = [
            Source::Json("/query".into()),
            Source::Header(HeaderName::from_static("x-q")),
        ];
        assert_eq!(
            read_field(&hq, &view(&with_header, Some(&body), &[]), Kind::Text),
            Err(Ambiguous)
        );
    }

    #[test]
    fn paths_are_matched_in_their_normal_form() {
        for (raw, normal) in [
            ("/api/v1/order", "/api/v1/order"),
            ("//api/v1/order/5", "/api/v1/order/5"),
            ("/api/v1/%6Frder", "/api/v1/order"),
            ("/api/v1/%6frder", "/api/v1/order"),
            ("/api/v1/./order", "/api/v1/order"),
            ("/api/v1/x/../order", "/api/v1/order"),
            ("/api/v1/order/", "/api/v1/order/"),
            ("/../../api", "/api"),
            ("/a%2Fb", "/a%2Fb"),
            ("/", "/"),
            ("*", "*"),
        ] {
            assert_eq!(normalize_path(raw), normal, "{raw}");
        }
        assert!(matches!(normalize_path("/api/v1/search"), Cow::Borrowed(_)));
        assert_eq!(lenient_path("/api/v1/%256Frder;x=1"), "/api/v1/order");
        assert_eq!(lenient_path("\\api\\v1\\order"), "/api/v1/order");
    }

    #[test]
    fn conflicting_duplicate_headers_are_ambiguous() {
        let mut h = HeaderMap::new();
        h.append("x-user-id", HeaderValue::from_static("alice"));
        h.append("x-user-id", HeaderValue::from_static("bob"));
        assert_eq!(
            extract(&sources(), &view(&h, None, &[]), Kind::Id),
            Err(Ambiguous)
        );
        let mut same = HeaderMap::new();
        same.append("x-user-id", HeaderValue::from_static("alice"));
        same.append("x-user-id", HeaderValue::from_static("alice"));
        assert_eq!(
            extract(&sources(), &view(&same, None, &[]), Kind::Id),
            Ok(Some("alice".into()))
        );
    }

    #[test]
    fn a_header_value_that_is_not_utf8_is_ambiguous_not_absent() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-user-id",
            HeaderValue::from_bytes(b"\xff\xfegarbage").expect("obs-text is a valid value"),
        );
        let body = json!({"user_id": "from-json"});
        assert_eq!(
            extract(&sources(), &view(&h, Some(&body), &[]), Kind::Id),
            Err(Ambiguous)
        );
    }

    #[test]
    fn conflicting_duplicate_params_are_ambiguous() {
        let h = HeaderMap::new();
        let params = [
            (Cow::from("user_id"), Cow::from("a")),
            (Cow::from("user_id"), Cow::from("b")),
        ];
        assert_eq!(
            extract(&sources(), &view(&h, None, &params), Kind::Id),
            Err(Ambiguous)
        );
    }

    #[test]
    fn a_parameter_that_is_not_utf8_is_ambiguous_not_merged() {
        let h = HeaderMap::new();
        for raw in ["user_id=%FF", "user_id=%FE"] {
            let params: Vec<_> = form_urlencoded::parse(raw.as_bytes()).collect();
            assert_eq!(
                extract(&sources(), &view(&h, None, &params), Kind::Id),
                Err(Ambiguous),
                "{raw}"
            );
        }
    }

    #[test]
    fn search_text_must_be_a_string() {
        let h = HeaderMap::new();
        let q = [Source::Json("/query".into())];
        let num = json!({"query": 42});
        assert_eq!(
            extract(&q, &view(&h, Some(&num), &[]), Kind::Text),
            Ok(None)
        );
        let empty = json!({"query": "   "});
        assert_eq!(
            extract(&q, &view(&h, Some(&empty), &[]), Kind::Text),
            Ok(None)
        );
        let numeric_user = json!({"user_id": 42});
        assert_eq!(
            extract(&sources(), &view(&h, Some(&numeric_user), &[]), Kind::Id),
            Ok(Some("42".into()))
        );
    }

    #[test]
    fn an_identity_value_past_max_bytes_is_dropped_and_said_so() {
        let id = Identity {
            user_id: Some("u".repeat(8)),
            user_uuid: Some("g".repeat(9)),
            session_id: Some("s".repeat(3)),
        };
        let (fits, dropped) = id.clone().bounded(9);
        assert_eq!((fits, dropped), (id.clone(), false));
        let (bounded, dropped) = id.bounded(8);
        assert!(dropped);
        assert_eq!(bounded.user_id.as_deref(), Some("uuuuuuuu"));
        assert_eq!(bounded.user_uuid, None);
        assert_eq!(bounded.session_id.as_deref(), Some("sss"));
    }

    #[test]
    fn hashed_user_id_never_keeps_the_raw_value() {
        let cfg = IdentityConfig {
            user_id: vec![Source::Header(HeaderName::from_static("authorization"))],
            user_uuid: vec![],
            session_id: vec![],
            hash_user_id: true,
            max_bytes: 256,
        };
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer secret-token"),
        );
        let id = Identity::extract(&cfg, &view(&h, None, &[]), &mut Supplied::default()).unwrap();
        let uid = id.user_id.unwrap();
        assert_eq!(uid.len(), 64);
        assert!(!uid.contains("secret"));
    }
}
