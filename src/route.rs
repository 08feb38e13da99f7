//! Route matching and field extraction: which rule a request falls under, and
//! where its query and identity come from (`header:`, `json:`, `query:`).

use std::borrow::Cow;

use http::{HeaderMap, Method};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{IdentityConfig, RouteConfig, Source};

/// The first route whose method and path match (SPEC section 3, step 1),
/// with its index (metrics and route names are kept per index).
pub fn match_route<'a>(
    routes: &'a [RouteConfig],
    method: &Method,
    path: &str,
) -> Option<(usize, &'a RouteConfig)> {
    routes
        .iter()
        .enumerate()
        .find(|(_, r)| r.matches(method, path))
}

/// What one request offers the sources to read from.
pub struct RequestView<'a> {
    pub headers: &'a HeaderMap,
    pub json: Option<&'a Value>,
    pub params: &'a [(Cow<'a, str>, Cow<'a, str>)],
}

/// A source that gave conflicting values (a header or parameter sent twice
/// with different values), or a header value that is not UTF-8. Caching on
/// either one could serve one user's answer to another, and an unreadable
/// value still reaches the backend, so treating it as absent would store a
/// garbage user's answer in the global scope: the request is bypassed.
#[derive(Debug, PartialEq, Eq)]
pub struct Ambiguous;

/// Reads the first source in the list that yields a value.
///
/// Only strings count for the search text (`string_only`); identity fields
/// may also be JSON numbers. Empty values count as absent.
pub fn extract(
    sources: &[Source],
    view: &RequestView<'_>,
    string_only: bool,
) -> Result<Option<String>, Ambiguous> {
    for source in sources {
        if let Some(v) = read_source(source, view, string_only)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

fn read_source(
    source: &Source,
    view: &RequestView<'_>,
    string_only: bool,
) -> Result<Option<String>, Ambiguous> {
    match source {
        Source::Header(name) => {
            let mut values = view.headers.get_all(name).iter();
            let Some(first) = values.next() else {
                return Ok(None);
            };
            if values.any(|other| other != first) {
                return Err(Ambiguous);
            }
            let text = first.to_str().map_err(|_| Ambiguous)?.trim();
            Ok((!text.is_empty()).then(|| text.to_owned()))
        }
        Source::Json(pointer) => Ok(view
            .json
            .and_then(|doc| json_pointer(doc, pointer))
            .and_then(|v| match v {
                Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
                Value::Number(n) if !string_only => Some(n.to_string()),
                _ => None,
            })),
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
            Ok(found.filter(|s| !s.trim().is_empty()).map(str::to_owned))
        }
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

impl Identity {
    pub fn extract(cfg: &IdentityConfig, view: &RequestView<'_>) -> Result<Identity, Ambiguous> {
        let user_id = extract(&cfg.user_id, view, false)?.map(|raw| {
            if cfg.hash_user_id {
                hex::encode(Sha256::digest(raw.as_bytes()))
            } else {
                raw
            }
        });
        Ok(Identity {
            user_id,
            user_uuid: extract(&cfg.user_uuid, view, false)?,
            session_id: extract(&cfg.session_id, view, false)?,
        })
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

/// Query-string parameter names that never enter the key: identity params,
/// ignored params and the search-text param (which enters normalized).
pub fn unkeyed_param(route: &RouteConfig, identity: &IdentityConfig, name: &str) -> bool {
    let named = |s: &Source| matches!(s, Source::Query(q) if q == name);
    route.query.iter().any(named)
        || route.key_ignore.iter().any(named)
        || identity.user_id.iter().any(named)
        || identity.user_uuid.iter().any(named)
        || identity.session_id.iter().any(named)
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

/// JSON pointers whose members never enter the key.
pub fn unkeyed_pointers<'a>(
    route: &'a RouteConfig,
    identity: &'a IdentityConfig,
) -> impl Iterator<Item = &'a str> {
    route
        .query
        .iter()
        .chain(&route.key_ignore)
        .chain(&identity.user_id)
        .chain(&identity.user_uuid)
        .chain(&identity.session_id)
        .filter_map(|s| match s {
            Source::Json(p) => Some(p.as_str()),
            _ => None,
        })
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
    fn first_matching_source_wins() {
        let mut h = HeaderMap::new();
        let body = json!({"user_id": "from-json"});
        let params = [(Cow::from("user_id"), Cow::from("from-query"))];
        assert_eq!(
            extract(&sources(), &view(&h, Some(&body), &params), false),
            Ok(Some("from-json".into()))
        );
        h.insert("x-user-id", HeaderValue::from_static("from-header"));
        assert_eq!(
            extract(&sources(), &view(&h, Some(&body), &params), false),
            Ok(Some("from-header".into()))
        );
    }

    #[test]
    fn conflicting_duplicate_headers_are_ambiguous() {
        let mut h = HeaderMap::new();
        h.append("x-user-id", HeaderValue::from_static("alice"));
        h.append("x-user-id", HeaderValue::from_static("bob"));
        assert_eq!(
            extract(&sources(), &view(&h, None, &[]), false),
            Err(Ambiguous)
        );
        let mut same = HeaderMap::new();
        same.append("x-user-id", HeaderValue::from_static("alice"));
        same.append("x-user-id", HeaderValue::from_static("alice"));
        assert_eq!(
            extract(&sources(), &view(&same, None, &[]), false),
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
            extract(&sources(), &view(&h, Some(&body), &[]), false),
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
            extract(&sources(), &view(&h, None, &params), false),
            Err(Ambiguous)
        );
    }

    #[test]
    fn search_text_must_be_a_string() {
        let h = HeaderMap::new();
        let q = [Source::Json("/query".into())];
        let num = json!({"query": 42});
        assert_eq!(extract(&q, &view(&h, Some(&num), &[]), true), Ok(None));
        let empty = json!({"query": "   "});
        assert_eq!(extract(&q, &view(&h, Some(&empty), &[]), true), Ok(None));
        let numeric_user = json!({"user_id": 42});
        assert_eq!(
            extract(&sources(), &view(&h, Some(&numeric_user), &[]), false),
            Ok(Some("42".into()))
        );
    }

    #[test]
    fn hashed_user_id_never_keeps_the_raw_value() {
        let cfg = IdentityConfig {
            user_id: vec![Source::Header(HeaderName::from_static("authorization"))],
            user_uuid: vec![],
            session_id: vec![],
            hash_user_id: true,
        };
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer secret-token"),
        );
        let id = Identity::extract(&cfg, &view(&h, None, &[])).unwrap();
        let uid = id.user_id.unwrap();
        assert_eq!(uid.len(), 64);
        assert!(!uid.contains("secret"));
    }
}
