//! The cache key: query normalization and the SHA-256 over every input that
//! reaches the backend (docs/contract.md section 3, step 5). Pure functions, so that what
//! shares an entry can be read, and property-tested, in one place.
//!
//! Every field enters the hash length-prefixed (u64, big endian) and tagged, so
//! no two different field lists can produce the same byte stream: `("ab", "c")`
//! and `("a", "bc")` hash differently, and an absent field differs from an
//! empty one.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

/// Bumped whenever the meaning of a key changes, so old entries are never
/// served for requests they no longer describe.
pub const KEY_VERSION: &[u8] = b"leafcache-key-v2";

/// A derived cache key: the SHA-256 digest of the key fields.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Lowercase hex, as it appears in Redis keys and in `Cache-Status`.
    pub fn to_hex(&self) -> String {
        self.hex().as_str().to_owned()
    }

    /// The hex form on the stack, for writing without an allocation.
    pub fn hex(&self) -> HexKey {
        let mut buf = [0u8; 64];
        // 32 bytes always fit in 64 hex digits.
        let _ = hex::encode_to_slice(self.0, &mut buf);
        HexKey(buf)
    }
}

/// 64 lowercase hex digits.
pub struct HexKey([u8; 64]);

impl HexKey {
    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

/// How the request body enters the key.
#[derive(Clone, Debug, PartialEq)]
pub enum BodyKey<'a> {
    /// No body (or an empty one).
    None,
    /// A JSON body, with ignored and identity fields already removed; it is
    /// hashed in canonical form (object keys sorted at every depth).
    Json(&'a Value),
    /// Any other body, by its bytes.
    Raw(&'a [u8]),
}

/// Everything that distinguishes one cached answer from another.
#[derive(Clone, Debug)]
pub struct KeyInput<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The normalized search text, when the route has a query rule.
    pub query: Option<&'a str>,
    pub body: BodyKey<'a>,
    /// The query string's `name=value` segments as the backend gets them
    /// (undecoded), minus the unkeyed ones, in the order [`keyed_params`]
    /// gives.
    pub params: &'a [&'a str],
    /// One value per configured `vary_headers` name, in config order; `None`
    /// when the request does not carry the header.
    pub vary: &'a [Option<&'a [u8]>],
    /// Other request headers that reach the backend and may change its
    /// answer, by lowercase name, sorted: the client's host (sent on as
    /// `X-Forwarded-Host`), the body's `Content-Type`, and, when
    /// `trust_forwarded` is on, every forwarding header.
    pub headers: &'a [(&'a str, Cow<'a, [u8]>)],
}

/// The key of a bare `GET /` on route "r", for tests that need any key.
#[cfg(test)]
pub fn sample_hash() -> KeyHash {
    derive(&KeyInput {
        route: "r",
        method: "GET",
        path: "/",
        query: None,
        body: BodyKey::None,
        params: &[],
        vary: &[],
        headers: &[],
    })
}

/// Unicode NFKC, lowercase, trimmed, inner whitespace collapsed to one space.
pub fn normalize_query(query: &str) -> String {
    // ASCII is its own NFKC form: skip the Unicode tables for the common case.
    let folded: String = if query.is_ascii() {
        query.to_ascii_lowercase()
    } else {
        query.nfkc().collect::<String>().to_lowercase()
    };
    let mut out = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The one content coding leafcache asks the backend for on behalf of a
/// client's `Accept-Encoding` (docs/keys-and-security.md, "Compressed answers"): the
/// acceptable coding the client prefers most among gzip, br and zstd, ties
/// going to gzip, then br, then zstd; `identity` when it accepts none of
/// them. `gzip, deflate` (httpx, requests), `gzip` (Go, okhttp) and
/// `gzip, deflate, br, zstd` (Chrome, curl) all ask for gzip, so they share
/// one entry, while `br;q=1.0, gzip;q=0.8` asks for br. The value enters
/// the key and is what the backend receives, so a client only ever gets a
/// coding it accepted.
pub fn accept_encoding<'a>(values: impl Iterator<Item = &'a [u8]>) -> &'static str {
    const CODINGS: [&str; 3] = ["gzip", "br", "zstd"];
    // Per coding: its q as the client named it, and as `*` gives it.
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for member in text.split(',') {
            let mut params = member.split(';');
            let name = params.next().unwrap_or("").trim();
            let q = params
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1000), |(_, v)| qvalue(v.trim()));
            // A member whose weight does not parse is left out.
            let Some(q) = q else { continue };
            let slot = match name.to_ascii_lowercase().as_str() {
                "gzip" | "x-gzip" => &mut named[0],
                "br" => &mut named[1],
                "zstd" => &mut named[2],
                "*" => &mut star,
                _ => continue,
            };
            // Named twice: the higher weight (the client accepts it).
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }
    let mut best: Option<(u16, &'static str)> = None;
    for (coding, q) in CODINGS.iter().zip(named) {
        let q = q.or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, coding));
        }
    }
    best.map_or("identity", |(_, coding)| coding)
}

/// An RFC 9110 qvalue in thousandths; `None` when it is not one.
fn qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = frac.bytes().fold(0u16, |n, b| n * 10 + u16::from(b - b'0'))
        * 10u16.pow(3 - frac.len() as u32);
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// The segments of a raw query string that stay in the key, ordered by
/// their decoded name, keeping the order of repeated names (`a=2&a=1` may
/// mean something else to the backend than `a=1&a=2`). Segments are kept as
/// sent: `a=%41` and `a=A`, or `a=1&&b=2` and `a=1&b=2`, are different keys,
/// since a backend may read them differently. `unkeyed` sees decoded names.
pub fn keyed_params<'a>(
    raw: Option<&'a str>,
    mut unkeyed: impl FnMut(&str) -> bool,
) -> Vec<&'a str> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut kept: Vec<(Cow<'a, str>, &'a str)> = raw
        .split('&')
        .map(|segment| {
            let name = segment.split('=').next().unwrap_or("");
            (decode_component(name), segment)
        })
        .filter(|(name, _)| !unkeyed(name))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    kept.into_iter().map(|(_, segment)| segment).collect()
}

/// A query-string component decoded as `application/x-www-form-urlencoded`
/// (`+` as space, percent escapes), as the backend and `form_urlencoded`
/// read it.
fn decode_component(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let decoded: String = form_urlencoded::parse(text.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default();
    Cow::Owned(decoded)
}

/// Derives the key hash.
pub fn derive(input: &KeyInput<'_>) -> KeyHash {
    let mut h = Sha256::new();
    field(&mut h, b'v', KEY_VERSION);
    field(&mut h, b'r', input.route.as_bytes());
    field(&mut h, b'm', input.method.as_bytes());
    field(&mut h, b'p', input.path.as_bytes());
    match input.query {
        Some(q) => field(&mut h, b'q', q.as_bytes()),
        None => field(&mut h, b'Q', b""),
    }
    match &input.body {
        BodyKey::None => field(&mut h, b'B', b""),
        BodyKey::Raw(bytes) => field(&mut h, b'b', bytes),
        BodyKey::Json(value) => {
            let mut canonical = Vec::with_capacity(128);
            write_canonical(value, &mut canonical);
            field(&mut h, b'j', &canonical);
        }
    }
    count(&mut h, b'a', input.params.len());
    for segment in input.params {
        field(&mut h, b'n', segment.as_bytes());
    }
    count(&mut h, b'h', input.vary.len());
    for value in input.vary {
        match value {
            Some(v) => field(&mut h, b'h', v),
            None => field(&mut h, b'H', b""),
        }
    }
    count(&mut h, b'c', input.headers.len());
    for (name, value) in input.headers {
        field(&mut h, b'k', name.as_bytes());
        field(&mut h, b'w', value);
    }
    KeyHash(h.finalize().into())
}

fn field(h: &mut Sha256, tag: u8, bytes: &[u8]) {
    h.update([tag]);
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn count(h: &mut Sha256, tag: u8, n: usize) {
    h.update([tag]);
    h.update((n as u64).to_be_bytes());
}

/// Canonical JSON: object keys sorted at every depth, no whitespace, numbers
/// and strings as serde_json writes them. Written by hand rather than relying
/// on serde_json's map ordering, which a feature flag elsewhere in the build
/// could change.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Removes the member an RFC 6901 pointer names from a JSON document,
/// returning it. Only object members are removed; a pointer into an array or
/// to a missing member leaves the document as it is.
pub fn remove_pointer(doc: &mut Value, pointer: &str) -> Option<Value> {
    let (parent, last) = pointer.rsplit_once('/')?;
    let target = if parent.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(parent)
    }?;
    let name = unescape_token(last);
    target.as_object_mut()?.remove(name.as_ref())
}

fn unescape_token(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn input<'a>(
        query: Option<&'a str>,
        body: BodyKey<'a>,
        params: &'a [&'a str],
        vary: &'a [Option<&'a [u8]>],
    ) -> KeyInput<'a> {
        KeyInput {
            route: "search",
            method: "POST",
            path: "/api/v1/search",
            query,
            body,
            params,
            vary,
            headers: &[],
        }
    }

    #[test]
    fn normalization_folds_case_width_and_spacing() {
        assert_eq!(normalize_query("  Organic   MILK\t"), "organic milk");
        assert_eq!(normalize_query("ＭＩＬＫ"), "milk"); // full-width, NFKC
        assert_eq!(normalize_query("ﬁsh"), "fish"); // ligature, NFKC
        assert_eq!(normalize_query("a\u{00A0}b"), "a b"); // no-break space
        assert_eq!(normalize_query(""), "");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": "s"}});
        let mut out = Vec::new();
        write_canonical(&a, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"x":"s","y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn json_key_order_does_not_change_the_key() {
        let a: Value =
            serde_json::from_str(r#"{"limit": 10, "filters": {"b": 1, "a": 2}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"filters": {"a": 2, "b": 1}, "limit": 10}"#).unwrap();
        let ka = derive(&input(Some("milk"), BodyKey::Json(&a), &[], &[]));
        let kb = derive(&input(Some("milk"), BodyKey::Json(&b), &[], &[]));
        assert_eq!(ka, kb);
    }

    #[test]
    fn absent_and_empty_fields_differ() {
        let none = derive(&input(None, BodyKey::None, &[], &[]));
        let empty_q = derive(&input(Some(""), BodyKey::None, &[], &[]));
        let empty_raw = derive(&input(None, BodyKey::Raw(b""), &[], &[]));
        assert_ne!(none, empty_q);
        assert_ne!(none, empty_raw);
        let vary_absent = [None];
        let vary_empty = [Some(&b""[..])];
        assert_ne!(
            derive(&input(None, BodyKey::None, &[], &vary_absent)),
            derive(&input(None, BodyKey::None, &[], &vary_empty))
        );
    }

    #[test]
    fn remove_pointer_removes_nested_members_only() {
        let mut doc = json!({"session_id": "s", "ctx": {"request_id": 1, "a/b": 2}, "list": [1]});
        assert_eq!(remove_pointer(&mut doc, "/session_id"), Some(json!("s")));
        assert_eq!(remove_pointer(&mut doc, "/ctx/request_id"), Some(json!(1)));
        assert_eq!(remove_pointer(&mut doc, "/ctx/a~1b"), Some(json!(2)));
        assert_eq!(remove_pointer(&mut doc, "/list/0"), None);
        assert_eq!(remove_pointer(&mut doc, "/missing/x"), None);
        assert_eq!(doc, json!({"ctx": {}, "list": [1]}));
    }

    #[test]
    fn keyed_params_order_names_and_keep_repeats_in_order() {
        let raw = "b=2&a=9&a=1&user_id=u";
        let kept = keyed_params(Some(raw), |n| n == "user_id");
        assert_eq!(kept, vec!["a=9", "a=1", "b=2"]);
    }

    #[test]
    fn keyed_params_are_kept_as_sent_and_unkeyed_by_their_decoded_name() {
        // An encoded identity name is still the identity param.
        assert_eq!(
            keyed_params(Some("user%5Fid=u&x=%41"), |n| n == "user_id"),
            ["x=%41"]
        );
        // Spellings a backend may read apart stay apart.
        assert_ne!(
            keyed_params(Some("x=%41"), |_| false),
            keyed_params(Some("x=A"), |_| false)
        );
        assert_ne!(
            keyed_params(Some("a=1&&b=2"), |_| false),
            keyed_params(Some("a=1&b=2"), |_| false)
        );
        assert_eq!(keyed_params(None, |_| false), Vec::<&str>::new());
        assert_eq!(keyed_params(Some(""), |_| false), [""]);
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ a-zA-Z0-9ÄäＡ\t]{0,12}").expect("valid regex")
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(q in "\\PC{0,40}") {
            let once = normalize_query(&q);
            prop_assert_eq!(normalize_query(&once), once.clone());
        }

        #[test]
        fn case_and_spacing_variants_share_a_key(words in proptest::collection::vec("[a-z]{1,8}", 1..5)) {
            let plain = words.join(" ");
            let noisy = format!("  {}  ", words.iter().map(|w| w.to_uppercase()).collect::<Vec<_>>().join("   "));
            let a = normalize_query(&plain);
            let b = normalize_query(&noisy);
            prop_assert_eq!(
                derive(&input(Some(&a), BodyKey::None, &[], &[])),
                derive(&input(Some(&b), BodyKey::None, &[], &[]))
            );
        }

        #[test]
        fn equal_inputs_give_equal_keys(q in text(), p in text(), v in text(), n in 0i64..1000) {
            let body = json!({"limit": n, "filter": p.clone()});
            let segment = format!("{p}={v}");
            let params = [segment.as_str()];
            let vary = [Some(v.as_bytes())];
            prop_assert_eq!(
                derive(&input(Some(&q), BodyKey::Json(&body), &params, &vary)),
                derive(&input(Some(&q), BodyKey::Json(&body.clone()), &params, &vary))
            );
        }

        #[test]
        fn any_change_to_a_keyed_field_changes_the_key(
            q in text(), q2 in text(), p in text(), p2 in text(), n in 0i64..1000, n2 in 0i64..1000,
            which in 0usize..8,
        ) {
            let body = json!({"limit": n});
            let segment = format!("f={p}");
            let params = [segment.as_str()];
            let vary = [Some(p.as_bytes())];
            let host = [("host", Cow::Borrowed(p.as_bytes()))];
            let mut base = input(Some(&q), BodyKey::Json(&body), &params, &vary);
            base.headers = &host;

            let body2 = json!({"limit": n2});
            let segment2 = format!("f={p2}");
            let params2 = [segment2.as_str()];
            let vary2 = [Some(p2.as_bytes())];
            let host2 = [("host", Cow::Borrowed(p2.as_bytes()))];
            let mut changed = base.clone();
            let differs = match which {
                0 => { changed.query = Some(&q2); q != q2 }
                1 => { changed.body = BodyKey::Json(&body2); n != n2 }
                2 => { changed.params = &params2; p != p2 }
                3 => { changed.vary = &vary2; p != p2 }
                4 => { changed.route = "other"; true }
                5 => { changed.method = "GET"; true }
                6 => { changed.headers = &host2; p != p2 }
                _ => { changed.path = "/api/v1/other"; true }
            };
            prop_assert_eq!(derive(&base) != derive(&changed), differs);
        }

        #[test]
        fn field_boundaries_cannot_be_shifted(a in "[a-z]{0,6}", b in "[a-z]{0,6}", c in "[a-z]{1,6}") {
            // Moving characters from one field to the next must change the key.
            let (s1, s2) = (format!("{a}{b}"), c.clone());
            let joined = format!("{a}{b}{c}");
            let p1 = [s1.as_str(), s2.as_str()];
            let p2 = [joined.as_str()];
            prop_assert_ne!(
                derive(&input(None, BodyKey::None, &p1, &[])),
                derive(&input(None, BodyKey::None, &p2, &[]))
            );
        }
    }

    #[test]
    fn accept_encoding_asks_for_the_one_coding_clients_prefer() {
        let ask = |v: &str| accept_encoding(std::iter::once(v.as_bytes()));
        // Real clients' headers.
        for (client, header) in [
            ("curl --compressed", "deflate, gzip, br, zstd"),
            ("httpx, requests", "gzip, deflate"),
            ("httpx with brotli and zstandard", "gzip, deflate, br, zstd"),
            ("Chrome", "gzip, deflate, br, zstd"),
            ("Go", "gzip"),
            ("okhttp", "gzip"),
        ] {
            assert_eq!(ask(header), "gzip", "{client}");
        }
        assert_eq!(ask("br;q=1.0, gzip;q=0.8"), "br");
        assert_eq!(ask("zstd, gzip;q=0.5"), "zstd");
        assert_eq!(ask("gzip;q=0, br"), "br");
        assert_eq!(ask("gzip;q=0"), "identity");
        assert_eq!(ask("deflate"), "identity");
        assert_eq!(ask("identity"), "identity");
        assert_eq!(ask(""), "identity");
        assert_eq!(ask("*"), "gzip");
        assert_eq!(ask("*;q=0.5, br"), "br");
        assert_eq!(ask("gzip;q=2, br;q=0.1"), "br");
        assert_eq!(ask("GZIP;Q=0.9, Br;q=0.95"), "br");
        assert_eq!(ask("x-gzip"), "gzip");
        assert_eq!(accept_encoding(std::iter::empty()), "identity");
        assert_eq!(
            accept_encoding([&b"br;q=0.2"[..], &b"gzip;q=0.1"[..]].into_iter()),
            "br"
        );
    }

    proptest! {
        #[test]
        fn accept_encoding_never_names_a_coding_the_client_refused(
            members in proptest::collection::vec(
                (prop_oneof![Just("gzip"), Just("br"), Just("zstd"), Just("*"), Just("deflate"), Just("identity")],
                 proptest::option::of(0u16..=1000)),
                0..6,
            )
        ) {
            let header = members
                .iter()
                .map(|(c, q)| match q {
                    Some(q) => format!("{c};q={}.{:03}", q / 1000, q % 1000),
                    None => c.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let chosen = accept_encoding(std::iter::once(header.as_bytes()));
            if chosen != "identity" {
                let weight = |name: &str| members.iter().filter(|(c, _)| *c == name)
                    .map(|(_, q)| q.unwrap_or(1000)).max();
                let q = weight(chosen).or_else(|| weight("*"));
                prop_assert!(q.is_some_and(|q| q > 0), "{header} -> {chosen}");
            }
        }
    }
}
