//! What a search answer says: its intent, confidence and products, read once
//! through the route's JSON pointers when the answer is fetched, and kept in
//! the cache envelope so hits never parse the body again.

pub mod decode;
pub mod facts;

use http::HeaderMap;
use serde_json::Value;

use crate::config::RouteConfig;
use crate::request_json::{self, Body};
use crate::route::json_pointer;

/// Why an answer's search facts could not be read exactly as a client reads
/// them (the record's `answer_unreadable`). On a route with
/// `bypass_intents` such an answer is never stored: what cannot be read may
/// be a cart answer (docs/keys-and-security.md, "Compressed answers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreadable {
    /// A `Content-Encoding` leafcache does not know, or that does not decode.
    Coding,
    /// More decoded bytes than `max_object_bytes`.
    TooLarge,
    /// Not one strict JSON document in UTF-8: a byte-order mark, another
    /// charset, `NaN`, bytes after the document, a lone surrogate.
    NotJson,
    /// A member named twice in an object: parsers disagree on which counts.
    Ambiguous,
    /// An intent that is neither a string nor null.
    IntentType,
}

impl Unreadable {
    pub const ALL: [Unreadable; 5] = [
        Unreadable::Coding,
        Unreadable::TooLarge,
        Unreadable::NotJson,
        Unreadable::Ambiguous,
        Unreadable::IntentType,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Unreadable::Coding => "coding",
            Unreadable::TooLarge => "too_large",
            Unreadable::NotJson => "not_json",
            Unreadable::Ambiguous => "ambiguous",
            Unreadable::IntentType => "intent_type",
        }
    }

    pub fn parse(text: &str) -> Option<Unreadable> {
        Unreadable::ALL.into_iter().find(|u| u.as_str() == text)
    }

    /// Its one-byte tag in the cache envelope (0 is "readable").
    pub fn tag(self) -> u8 {
        self as u8 + 1
    }

    pub fn from_tag(tag: u8) -> Option<Unreadable> {
        Unreadable::ALL
            .get(usize::from(tag).checked_sub(1)?)
            .copied()
    }
}

/// Reads the search facts of a backend answer as a client would: its
/// codings undone (at most `limit` decoded bytes), then parsed as strict
/// JSON. An answer that does not read says why in
/// [`SearchMeta::unreadable`]; it is still served.
pub fn read(route: &RouteConfig, headers: &HeaderMap, body: &[u8], limit: usize) -> SearchMeta {
    let unreadable = |why| SearchMeta {
        unreadable: Some(why),
        ..SearchMeta::default()
    };
    if !utf8_charset(headers) {
        return unreadable(Unreadable::NotJson);
    }
    let decoded = match decode::decoded(headers, body, limit) {
        Ok(d) => d,
        Err(why) => return unreadable(why),
    };
    match request_json::parse(&decoded) {
        Body::Json(doc) => read_value(route, &doc),
        Body::NotJson => unreadable(Unreadable::NotJson),
        Body::Ambiguous => unreadable(Unreadable::Ambiguous),
    }
}

/// Whether the answer's declared charset, if any, is one JSON may be read
/// in (RFC 8259 section 8.1: UTF-8; ASCII is a subset of it).
fn utf8_charset(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(ct) = ct.to_str() else {
        return false;
    };
    ct.split(';').skip(1).all(|param| {
        let Some((name, value)) = param.split_once('=') else {
            return true;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            return true;
        }
        let value = value.trim().trim_matches('"');
        value.eq_ignore_ascii_case("utf-8")
            || value.eq_ignore_ascii_case("utf8")
            || value.eq_ignore_ascii_case("us-ascii")
    })
}

pub fn read_value(route: &RouteConfig, doc: &Value) -> SearchMeta {
    let intent_value = json_pointer(doc, &route.intent);
    let unreadable = match intent_value {
        None | Some(Value::Null | Value::String(_)) => None,
        Some(_) => Some(Unreadable::IntentType),
    };
    let intent = intent_value.and_then(scalar_text);
    let confidence = json_pointer(doc, &route.confidence).and_then(Value::as_f64);
    let results = json_pointer(doc, &route.results).and_then(Value::as_array);
    let products = results
        .map(|items| {
            // Sized once: the list lives as long as the cached answer.
            let mut products = Vec::with_capacity(items.len());
            products.extend(items.iter().filter_map(|item| {
                let id = json_pointer(item, &route.product_id).and_then(scalar_text)?;
                let supplier = json_pointer(item, &route.supplier_id).and_then(scalar_text);
                Some((id, supplier))
            }));
            products.shrink_to_fit();
            products
        })
        .unwrap_or_default();
    SearchMeta {
        intent,
        confidence,
        results_count: results.map_or(0, |r| r.len().min(u32::MAX as usize) as u32),
        products,
        unreadable,
        facts: Default::default(),
    }
}
/// Strings as they are, numbers as their text; anything else is absent.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What a search answer said, read once when it was fetched.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchMeta {
    pub intent: Option<String>,
    pub confidence: Option<f64>,
    /// Number of results as returned.
    pub results_count: u32,
    /// Product ids in result order, each with its supplier when known.
    pub products: Vec<(String, Option<String>)>,
    /// Why the answer could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<Unreadable>,
    /// What the search log derives from these facts, once per answer rather
    /// than once per logged hit (see [`facts`]).
    #[serde(skip)]
    pub facts: facts::LazyFacts,
}

/// What an allocation of `n` bytes takes: small ones are rounded up to a
/// 16-byte size class (mimalloc's are finer, glibc's are 16 plus a header).
pub fn alloc_size(n: usize) -> usize {
    if n == 0 { 0 } else { (n + 15) & !15 }
}

impl SearchMeta {
    /// The heap the meta holds, its log facts included once derived.
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self
            .products
            .iter()
            .map(|(p, s)| {
                alloc_size(p.capacity()) + s.as_ref().map_or(0, |s| alloc_size(s.capacity()))
            })
            .sum();
        let list =
            alloc_size(self.products.capacity() * std::mem::size_of::<(String, Option<String>)>());
        let intent = self.intent.as_ref().map_or(0, |i| alloc_size(i.capacity()));
        let facts = self.facts.get().map_or(0, |f| f.heap_bytes());
        std::mem::size_of::<SearchMeta>() + 16 + list + strings + intent + facts
    }

    /// What deriving the log facts will add to [`SearchMeta::heap_bytes`]
    /// (0 once they are derived): the L1 tier of a proxy that logs counts it
    /// up front, since every answer it serves gets them.
    pub fn facts_to_come(&self) -> usize {
        match self.facts.get() {
            Some(_) => 0,
            None => facts::LogFacts::predicted_heap_bytes(self),
        }
    }
}

/// Search facts of an answer that shows these products, each with its
/// supplier when known (for unit tests).
#[cfg(test)]
pub(crate) fn meta_showing(products: &[(&str, Option<&str>)]) -> SearchMeta {
    SearchMeta {
        products: products
            .iter()
            .map(|(p, s)| (p.to_string(), s.map(str::to_string)))
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    fn route() -> RouteConfig {
        let text = "[upstream]\nurl = \"http://127.0.0.1:9\"\n[[route]]\nname = \"r\"\n\
                    path = \"/s\"\nquery = [\"query:q\"]\n";
        let config = crate::config::Config::parse(text, None).expect("a valid test config");
        config.routes[0].clone()
    }

    fn read_plain(body: &[u8]) -> SearchMeta {
        read(&route(), &HeaderMap::new(), body, 1 << 20)
    }

    #[test]
    fn a_plain_answer_reads_its_facts() {
        let meta = read_plain(
            br#"{"intent":"product_search","confidence":0.5,"products":[{"product_id":"p1","supplier":"s1"}]}"#,
        );
        assert_eq!(meta.unreadable, None);
        assert_eq!(meta.intent.as_deref(), Some("product_search"));
        assert_eq!(meta.results_count, 1);
        assert_eq!(meta.products, vec![("p1".into(), Some("s1".into()))]);
    }

    #[test]
    fn a_gzipped_answer_reads_as_the_plain_one() {
        let plain = br#"{"intent":"add_to_order","products":[{"product_id":"p1"}]}"#;
        let coded = decode::tests::gzip(plain);
        let meta = read(
            &route(),
            &headers(&[("content-encoding", "gzip")]),
            &coded,
            1 << 20,
        );
        assert_eq!(meta, read_plain(plain));
        assert_eq!(meta.intent.as_deref(), Some("add_to_order"));
    }

    #[test]
    fn what_a_client_may_read_otherwise_is_unreadable() {
        use Unreadable::*;
        let cases: [(&[u8], Unreadable); 9] = [
            (b"\xEF\xBB\xBF{\"intent\":\"add_to_order\"}", NotJson),
            (br#"{"intent":"add_to_order","confidence":NaN}"#, NotJson),
            (
                br#"{"intent":"product_search"} {"intent":"add_to_order"}"#,
                NotJson,
            ),
            (br#"{"intent":"product_search"}x"#, NotJson),
            (br#"{"intent":"a\ud800"}"#, NotJson),
            (b"{\"intent\":\"add\xFF\"}", NotJson),
            (
                br#"{"intent":"product_search","intent":"add_to_order"}"#,
                Ambiguous,
            ),
            (
                br#"{"products":[],"products":[{"product_id":"p"}]}"#,
                Ambiguous,
            ),
            (br#"{"intent":["add_to_order"]}"#, IntentType),
        ];
        for (body, why) in cases {
            assert_eq!(
                read_plain(body).unreadable,
                Some(why),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(read_plain(br#"{"intent":7}"#).unreadable, Some(IntentType));
        assert_eq!(read_plain(br#"{"intent":null}"#).unreadable, None);
        assert_eq!(read_plain(b" {\"products\":[]}\n").unreadable, None);
    }

    #[test]
    fn a_charset_other_than_utf8_is_unreadable() {
        let body = br#"{"intent":"add_to_order"}"#;
        for (ct, readable) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("application/json; charset=\"UTF-8\"", true),
            ("application/json; charset=utf-16", false),
            ("application/json; charset=iso-8859-1", false),
        ] {
            let meta = read(&route(), &headers(&[("content-type", ct)]), body, 1 << 20);
            assert_eq!(meta.unreadable.is_none(), readable, "{ct}");
        }
    }

    #[test]
    fn reasons_round_trip_through_their_names_and_tags() {
        for why in Unreadable::ALL {
            assert_eq!(Unreadable::parse(why.as_str()), Some(why));
            assert_eq!(Unreadable::from_tag(why.tag()), Some(why));
        }
        assert_eq!(Unreadable::from_tag(0), None);
    }
}
