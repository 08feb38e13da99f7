//! `Vary` (RFC 9111 section 4.1): which request headers an answer depends
//! on, the values a stored variant was fetched with, and whether a new
//! request matches them.
//!
//! Values are normalized as RFC 9110 section 5.3 allows: field lines are
//! combined with commas, and whitespace around list members is dropped, so
//! `a,b` and `a, b` (or two lines `a` and `b`) select the same variant. The
//! values of the content-negotiation fields whose tokens are
//! case-insensitive (`Accept-Encoding`, `Accept-Language`, `Accept-Charset`)
//! are compared without case.

use bytes::Bytes;
use http::header::VARY;
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

/// What an answer's `Vary` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vary {
    /// `*` anywhere in the list: no later request can be known to match.
    Any,
    /// The named request headers, lowercase, sorted, without duplicates
    /// (empty when the answer does not vary).
    Headers(Vec<HeaderName>),
}

impl Vary {
    pub fn of(response: &HeaderMap) -> Vary {
        let mut names = Vec::new();
        for value in response.get_all(VARY) {
            let Ok(text) = value.to_str() else {
                // Not text: we cannot know which header it names.
                return Vary::Any;
            };
            for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                if member == "*" {
                    return Vary::Any;
                }
                match HeaderName::from_bytes(member.as_bytes()) {
                    Ok(name) => names.push(name),
                    Err(_) => return Vary::Any,
                }
            }
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Vary::Headers(names)
    }
}

/// The request header values a stored variant was selected by, in the order
/// of its sorted `Vary` names (`None`: the request did not send the header).
pub type Selection = Vec<(HeaderName, Option<Bytes>)>;

/// The values of `names` in `request`, normalized.
pub fn select(names: &[HeaderName], request: &HeaderMap) -> Selection {
    names
        .iter()
        .map(|name| (name.clone(), normalized(request, name)))
        .collect()
}

/// Whether `request` carries the values a variant was stored with.
pub fn matches(selection: &Selection, request: &HeaderMap) -> bool {
    selection
        .iter()
        .all(|(name, stored)| normalized(request, name).as_deref() == stored.as_deref())
}

/// A short stable id of a selection, for the key a variant is stored under.
pub fn selection_id(selection: &Selection) -> String {
    let mut h = Sha256::new();
    for (name, value) in selection {
        h.update((name.as_str().len() as u32).to_be_bytes());
        h.update(name.as_str().as_bytes());
        match value {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u32).to_be_bytes());
                h.update(v);
            }
            None => h.update([0]),
        }
    }
    hex::encode(&h.finalize()[..12])
}

/// All field lines of `name` combined into one list value, each member
/// trimmed; `None` when the header is absent.
fn normalized(headers: &HeaderMap, name: &HeaderName) -> Option<Bytes> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let fold_case = [
        http::header::ACCEPT_ENCODING,
        http::header::ACCEPT_LANGUAGE,
        http::header::ACCEPT_CHARSET,
    ]
    .contains(name);
    let mut out = Vec::new();
    for line in lines {
        for member in line.as_bytes().split(|b| *b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(member);
        }
    }
    if fold_case {
        out.make_ascii_lowercase();
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn names(v: &[&'static str]) -> Vec<HeaderName> {
        v.iter().map(|n| HeaderName::from_static(n)).collect()
    }

    #[test]
    fn star_anywhere_means_any() {
        for v in ["*", "*, *", ", *", "*, Foo", "Foo, *"] {
            assert_eq!(Vary::of(&headers(&[("vary", v)])), Vary::Any, "{v}");
        }
        let lines = headers(&[("vary", "foo"), ("vary", "*")]);
        assert_eq!(Vary::of(&lines), Vary::Any);
    }

    #[test]
    fn names_are_lowercased_sorted_and_deduplicated() {
        let h = headers(&[("vary", "Foo, accept-language"), ("vary", "FOO,bar")]);
        assert_eq!(
            Vary::of(&h),
            Vary::Headers(names(&["accept-language", "bar", "foo"]))
        );
        assert_eq!(Vary::of(&HeaderMap::new()), Vary::Headers(vec![]));
    }

    #[test]
    fn a_variant_matches_only_the_same_values() {
        let n = names(&["foo"]);
        let stored = select(&n, &headers(&[("foo", "1")]));
        assert!(matches(&stored, &headers(&[("foo", "1")])));
        assert!(!matches(&stored, &headers(&[("foo", "2")])));
        assert!(!matches(&stored, &HeaderMap::new()), "request omits it");
        let omitted = select(&n, &HeaderMap::new());
        assert!(
            !matches(&omitted, &headers(&[("foo", "1")])),
            "stored omitted it"
        );
        assert!(matches(&omitted, &headers(&[("bar", "1")])));
    }

    #[test]
    fn list_spacing_and_lines_are_normalized() {
        let n = names(&["accept-encoding"]);
        let stored = select(&n, &headers(&[("accept-encoding", "gzip,br")]));
        assert!(matches(
            &stored,
            &headers(&[("accept-encoding", "gzip, br")])
        ));
        assert!(matches(
            &stored,
            &headers(&[("accept-encoding", "gzip"), ("accept-encoding", "br")])
        ));
        assert!(!matches(
            &stored,
            &headers(&[("accept-encoding", "br, gzip")])
        ));
    }

    #[test]
    fn language_and_encoding_tokens_compare_without_case() {
        let n = names(&["accept-language", "x-other"]);
        let stored = select(
            &n,
            &headers(&[("accept-language", "en, de"), ("x-other", "A")]),
        );
        assert!(matches(
            &stored,
            &headers(&[("accept-language", "eN,De"), ("x-other", "A")])
        ));
        assert!(!matches(
            &stored,
            &headers(&[("accept-language", "en, de"), ("x-other", "a")])
        ));
    }

    #[test]
    fn three_way_vary_checks_every_header() {
        let n = names(&["a", "b", "c"]);
        let stored = select(&n, &headers(&[("a", "1"), ("b", "2"), ("c", "3")]));
        assert!(matches(
            &stored,
            &headers(&[("c", "3"), ("b", "2"), ("a", "1")])
        ));
        assert!(!matches(
            &stored,
            &headers(&[("a", "1"), ("b", "2"), ("c", "4")])
        ));
    }

    proptest! {
        #[test]
        fn equal_selections_have_equal_ids(a in "[a-z0-9 ,]{0,20}", b in "[a-z0-9 ,]{0,20}") {
            let n = names(&["x"]);
            let sa = select(&n, &headers(&[("x", &a)]));
            let sb = select(&n, &headers(&[("x", &b)]));
            prop_assert_eq!(sa == sb, selection_id(&sa) == selection_id(&sb));
            prop_assert!(matches(&sa, &headers(&[("x", &a)])));
        }

        #[test]
        fn any_vary_value_parses(v in "\\PC{0,40}") {
            if let Ok(value) = HeaderValue::from_str(&v) {
                let mut h = HeaderMap::new();
                h.insert(VARY, value);
                let _ = Vary::of(&h);
            }
        }
    }
}
