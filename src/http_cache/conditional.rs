//! Conditional requests (RFC 9110 section 13, RFC 9111 section 4.3): a
//! client's `If-None-Match` / `If-Modified-Since` evaluated against a stored
//! answer, the validators leafcache sends when it revalidates, and the
//! header update a `304 Not Modified` brings.

use http::header::{
    self, CONTENT_LENGTH, DATE, ETAG, HeaderName, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use http::{HeaderMap, Method};

use super::date;

/// The answer to a client's conditional request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// No precondition leafcache evaluates.
    None,
    /// The client's copy is current: answer 304.
    NotModified,
    /// The client's copy is not current: answer the stored answer in full.
    Modified,
}

/// Evaluates `If-None-Match` (weak comparison) and, only without it,
/// `If-Modified-Since` (GET and HEAD), against a stored answer's headers
/// (RFC 9110 section 13.2.2 order).
pub fn evaluate(method: &Method, request: &HeaderMap, stored: &HeaderMap) -> Condition {
    if request.contains_key(IF_NONE_MATCH) {
        let etag = stored.get(ETAG).and_then(|v| v.to_str().ok());
        let matched = request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|list| none_match_list_matches(list, etag));
        return if matched {
            Condition::NotModified
        } else {
            Condition::Modified
        };
    }
    if method != Method::GET && method != Method::HEAD {
        return Condition::None;
    }
    let Some(since) = date::parse_header(request, IF_MODIFIED_SINCE).valid() else {
        return Condition::None;
    };
    let modified = date::parse_header(stored, LAST_MODIFIED)
        .valid()
        .or_else(|| date::parse_header(stored, DATE).valid());
    match modified {
        Some(m) if m <= since => Condition::NotModified,
        Some(_) => Condition::Modified,
        None => Condition::None,
    }
}

/// Whether an `If-None-Match` list matches the stored entity tag: `*` matches
/// any stored answer, otherwise a weak comparison of each listed tag.
fn none_match_list_matches(list: &str, etag: Option<&str>) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let Some(etag) = etag else {
        return false;
    };
    split_tags(list).any(|tag| weak_eq(tag, etag))
}

/// Entity tags in a list; a comma inside a quoted tag does not split it.
fn split_tags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                return None;
            }
            let start = if rest.starts_with("W/") { 2 } else { 0 };
            let end = if rest[start..].starts_with('"') {
                rest[start + 1..]
                    .find('"')
                    .map_or(rest.len(), |i| start + i + 2)
            } else {
                rest.find(',').unwrap_or(rest.len())
            };
            let (tag, tail) = rest.split_at(end);
            rest = tail;
            let tag = tag.trim();
            if !tag.is_empty() {
                return Some(tag);
            }
        }
    })
}

/// RFC 9110 section 8.8.3.2: weak comparison ignores the `W/` prefix of
/// either tag; the opaque tags must be equal character for character.
pub fn weak_eq(a: &str, b: &str) -> bool {
    let opaque = |t: &str| {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t).to_owned()
    };
    let (a, b) = (opaque(a), opaque(b));
    !a.is_empty() && a == b
}

/// Whether a stored answer can be revalidated at all.
pub fn has_validators(stored: &HeaderMap) -> bool {
    stored.contains_key(ETAG) || stored.contains_key(LAST_MODIFIED)
}

/// Puts the stored answer's validators on a request to the backend, in
/// place of whatever preconditions the client sent (RFC 9111 section 4.3.1).
pub fn set_validators(request: &mut HeaderMap, stored: &HeaderMap) {
    strip_preconditions(request);
    if let Some(etag) = stored.get(ETAG) {
        request.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.get(LAST_MODIFIED) {
        request.insert(IF_MODIFIED_SINCE, modified.clone());
    }
}

/// Whether the client made its request conditional.
pub fn has_preconditions(request: &HeaderMap) -> bool {
    [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|name| request.contains_key(name))
}

/// Removes the client's preconditions from a request the cache makes for
/// itself: it wants a full answer it can store, and answers the client's
/// condition from that.
pub fn strip_preconditions(request: &mut HeaderMap) {
    for name in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        request.remove(name);
    }
}

/// Headers a `304` may not change in the stored answer (RFC 9111 section
/// 3.2): framing, the representation's encoding and integrity, and the
/// validator that selected it.
const KEPT_ON_UPDATE: [&str; 5] = [
    "content-length",
    "content-encoding",
    "content-md5",
    "content-range",
    "etag",
];

/// Updates a stored answer's headers from a `304` (RFC 9111 sections 3.2 and
/// 4.3.4): every header the 304 carries replaces the stored one, except those
/// in [`KEPT_ON_UPDATE`]; `Age` is never stored (leafcache computes it).
pub fn merge_304(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in fresh {
        if KEPT_ON_UPDATE.contains(&name.as_str()) || name == header::AGE {
            continue;
        }
        if !replaced.contains(&name) {
            merged.remove(name);
            replaced.push(name);
        }
        merged.append(name.clone(), value.clone());
    }
    merged.remove(header::AGE);
    merged
}

/// The headers of a `304` answered from a stored answer: all but those that
/// describe the body it leaves out (RFC 9110 section 15.4.5).
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut h = stored.clone();
    for name in [
        CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
    ] {
        h.remove(name);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;
    use http::HeaderValue;
    use proptest::prelude::*;

    const LM: &str = "Wed, 01 Jan 2020 00:00:00 GMT";
    const LATER: &str = "Thu, 02 Jan 2020 00:00:00 GMT";
    const EARLIER: &str = "Tue, 31 Dec 2019 00:00:00 GMT";

    #[test]
    fn weak_comparison_ignores_w_prefix() {
        assert!(weak_eq("\"a\"", "W/\"a\""));
        assert!(weak_eq("W/\"a\"", "W/\"a\""));
        assert!(!weak_eq("\"a\"", "\"b\""));
    }

    #[test]
    fn if_none_match_lists_and_star() {
        let stored = headers(&[("etag", "\"abc\"")]);
        let get = Method::GET;
        for (inm, want) in [
            ("\"abc\"", Condition::NotModified),
            ("W/\"abc\"", Condition::NotModified),
            ("\"x\", \"abc\"", Condition::NotModified),
            ("\"x\",W/\"abc\"", Condition::NotModified),
            ("*", Condition::NotModified),
            ("\"x\"", Condition::Modified),
            ("\"a,bc\"", Condition::Modified),
        ] {
            let req = headers(&[("if-none-match", inm)]);
            assert_eq!(evaluate(&get, &req, &stored), want, "{inm}");
        }
        let req = headers(&[("if-none-match", "\"abc\"")]);
        assert_eq!(evaluate(&get, &req, &HeaderMap::new()), Condition::Modified);
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let stored = headers(&[("etag", "\"abc\""), ("last-modified", LM)]);
        let req = headers(&[("if-none-match", "\"other\""), ("if-modified-since", LATER)]);
        assert_eq!(evaluate(&Method::GET, &req, &stored), Condition::Modified);
    }

    #[test]
    fn if_modified_since_compares_last_modified_then_date() {
        let stored = headers(&[("last-modified", LM)]);
        let at = |d: &str| headers(&[("if-modified-since", d)]);
        assert_eq!(
            evaluate(&Method::GET, &at(LM), &stored),
            Condition::NotModified
        );
        assert_eq!(
            evaluate(&Method::GET, &at(LATER), &stored),
            Condition::NotModified
        );
        assert_eq!(
            evaluate(&Method::GET, &at(EARLIER), &stored),
            Condition::Modified
        );
        assert_eq!(
            evaluate(&Method::GET, &at("garbage"), &stored),
            Condition::None
        );
        let dated = headers(&[("date", LM)]);
        assert_eq!(
            evaluate(&Method::HEAD, &at(LATER), &dated),
            Condition::NotModified
        );
        assert_eq!(
            evaluate(&Method::POST, &at(LATER), &stored),
            Condition::None
        );
    }

    #[test]
    fn any_precondition_counts() {
        assert!(!has_preconditions(&HeaderMap::new()));
        for name in [
            "if-none-match",
            "if-modified-since",
            "if-match",
            "if-unmodified-since",
            "if-range",
        ] {
            assert!(has_preconditions(&headers(&[(name, "x")])), "{name}");
        }
    }

    #[test]
    fn revalidation_sends_the_stored_validators_only() {
        let stored = headers(&[("etag", "\"v1\""), ("last-modified", LM)]);
        let mut req = headers(&[("if-none-match", "\"client\""), ("if-match", "\"x\"")]);
        set_validators(&mut req, &stored);
        assert_eq!(req["if-none-match"], "\"v1\"");
        assert_eq!(req["if-modified-since"], LM);
        assert!(!req.contains_key("if-match"));
    }

    #[test]
    fn a_304_updates_headers_but_not_framing_or_the_validator() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("content-length", "10"),
            ("content-encoding", "gzip"),
            ("cache-control", "max-age=1"),
            ("test-header", "A"),
            ("x-multi", "1"),
            ("x-multi", "2"),
            ("kept", "yes"),
        ]);
        let fresh = headers(&[
            ("etag", "\"v2\""),
            ("content-length", "0"),
            ("content-encoding", "br"),
            ("cache-control", "max-age=3600"),
            ("test-header", "B"),
            ("x-multi", "3"),
            ("age", "5"),
        ]);
        let m = merge_304(&stored, &fresh);
        assert_eq!(m["etag"], "\"v1\"");
        assert_eq!(m["content-length"], "10");
        assert_eq!(m["content-encoding"], "gzip");
        assert_eq!(m["cache-control"], "max-age=3600");
        assert_eq!(m["test-header"], "B");
        assert_eq!(m.get_all("x-multi").iter().count(), 1);
        assert_eq!(m["kept"], "yes");
        assert!(!m.contains_key("age"));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_precondition(inm in "\\PC{0,40}", ims in "\\PC{0,40}") {
            let mut req = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&inm) { req.insert(IF_NONE_MATCH, v); }
            if let Ok(v) = HeaderValue::from_str(&ims) { req.insert(IF_MODIFIED_SINCE, v); }
            let stored = headers(&[("etag", "\"abc\""), ("last-modified", LM)]);
            let _ = evaluate(&Method::GET, &req, &stored);
        }

        #[test]
        fn a_tag_always_matches_itself(tag in "[!#-~]{1,20}", weak in any::<bool>()) {
            let quoted = format!("\"{tag}\"");
            let listed = if weak { format!("W/{quoted}") } else { quoted.clone() };
            let stored = headers(&[("etag", &quoted)]);
            let req = headers(&[("if-none-match", &format!("\"zz\", {listed}"))]);
            prop_assert_eq!(evaluate(&Method::GET, &req, &stored), Condition::NotModified);
        }
    }
}
