//! `Cache-Control` parsing (RFC 9111 section 5.2), for requests and responses.
//!
//! Lenient where RFC 9111 asks for leniency: directive names are
//! case-insensitive, values may be quoted, unknown directives are ignored, and
//! a delta-seconds value that is not a number makes the directive count as
//! invalid. Per section 4.2.1, an invalid `max-age`/`s-maxage` on a response
//! means the answer is stale (we record it as `Some(0)`); on a request an
//! invalid value is ignored.
//!
//! `CDN-Cache-Control` (RFC 9213) is read by [`CacheControl::for_shared_cache`]:
//! when the backend sends it, it replaces `Cache-Control` for leafcache.

use http::HeaderMap;
use http::HeaderName;
use http::header::{CACHE_CONTROL, PRAGMA};

/// RFC 9213's targeted field for CDNs and other shared caches.
pub static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// The Edge Architecture (W3C note) field for surrogates: directives may
/// name the surrogate they are for (`max-age=60;leafcache`).
pub static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
/// The request header with which a surrogate announces itself upstream.
pub static SURROGATE_CAPABILITY: HeaderName = HeaderName::from_static("surrogate-capability");
/// leafcache's device token in `Surrogate-Capability` and targeted
/// `Surrogate-Control` directives.
pub const SURROGATE_TOKEN: &str = "leafcache";
/// The `Surrogate-Capability` value leafcache sends on origin routes.
pub const SURROGATE_CAPABILITY_VALUE: &str = "leafcache=\"Surrogate/1.0\"";

/// The directives leafcache acts on. Delta-seconds are capped at 2^31 as RFC
/// 9111 section 1.2.2 recommends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    /// Unqualified `no-cache`: revalidate before every reuse.
    pub no_cache: bool,
    /// Qualified `no-cache="a, b"` (RFC 9111 section 5.2.2.4): the named
    /// fields may not be reused without revalidation; the rest may.
    /// Lowercase.
    pub no_cache_fields: Vec<String>,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub only_if_cached: bool,
    /// RFC 9111 section 5.2.2.3: store only when the status is understood.
    pub must_understand: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// `Some(None)`: `max-stale` without a value (any staleness is fine).
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

const DELTA_MAX: u64 = 1 << 31;

/// Whether an unparsable delta-seconds becomes `Some(0)` (responses) or is
/// dropped (requests).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

impl CacheControl {
    /// The request's directives, with `Pragma: no-cache` honoured when the
    /// request carries no `Cache-Control` at all (RFC 9111 section 5.4).
    pub fn from_request(headers: &HeaderMap) -> CacheControl {
        let mut cc = parse_all(headers, Side::Request);
        if !headers.contains_key(CACHE_CONTROL) {
            cc.no_cache |= headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| {
                    v.split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
                });
        }
        cc
    }

    /// The response's directives.
    pub fn from_response(headers: &HeaderMap) -> CacheControl {
        parse_all(headers, Side::Response)
    }

    /// The directives a shared cache follows: `CDN-Cache-Control` when the
    /// answer carries a valid one (RFC 9213 section 2.2: it then replaces
    /// `Cache-Control`), else `Cache-Control`.
    ///
    /// Next in line, `Surrogate-Control` replaces `Cache-Control` when it
    /// holds directives for leafcache (untargeted ones, or those targeted at
    /// [`SURROGATE_TOKEN`]).
    pub fn for_shared_cache(headers: &HeaderMap) -> CacheControl {
        if headers.contains_key(&CDN_CACHE_CONTROL)
            && let Some(cc) = targeted(headers)
        {
            return cc;
        }
        if headers.contains_key(&SURROGATE_CONTROL) {
            let mut ours = String::new();
            for value in headers.get_all(&SURROGATE_CONTROL) {
                let text = String::from_utf8_lossy(value.as_bytes());
                for part in split_outside_quotes(&text) {
                    let (directive, target) = match part.rsplit_once(';') {
                        Some((d, t)) if !t.contains('"') => (d, Some(t.trim())),
                        _ => (part, None),
                    };
                    if target.is_none_or(|t| t.eq_ignore_ascii_case(SURROGATE_TOKEN))
                        && !directive.trim().is_empty()
                    {
                        ours.push_str(directive);
                        ours.push(',');
                    }
                }
            }
            if !ours.is_empty() {
                let mut cc = CacheControl::default();
                cc.apply(&ours, Side::Response);
                return cc;
            }
        }
        parse_all(headers, Side::Response)
    }

    /// Whether a stored answer may be served stale at all (RFC 9111 sections
    /// 4.2.4, 5.2.2.2, 5.2.2.8 and 5.2.2.10: `s-maxage` implies
    /// proxy-revalidate for a shared cache).
    pub fn forbids_stale(&self) -> bool {
        self.no_cache || self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }

    /// Parses one header value (test and reuse helper).
    pub fn parse_response_value(value: &str) -> CacheControl {
        let mut cc = CacheControl::default();
        cc.apply(value, Side::Response);
        cc
    }

    fn apply(&mut self, value: &str, side: Side) {
        for (name, arg) in directives(value) {
            let delta = || parse_delta(arg, side);
            match name.to_ascii_lowercase().as_str() {
                "no-store" => self.no_store = true,
                "no-cache" => match arg.map(str::trim).filter(|a| !a.is_empty()) {
                    Some(fields) => self.no_cache_fields.extend(
                        fields
                            .split(',')
                            .map(|f| f.trim().to_ascii_lowercase())
                            .filter(|f| !f.is_empty()),
                    ),
                    None => self.no_cache = true,
                },
                "private" => self.private = true,
                "public" => self.public = true,
                "must-revalidate" => self.must_revalidate = true,
                "proxy-revalidate" => self.proxy_revalidate = true,
                "only-if-cached" => self.only_if_cached = true,
                "must-understand" => self.must_understand = true,
                // With duplicates, the most restrictive value wins.
                "max-age" => self.max_age = min_opt(self.max_age, delta()),
                "s-maxage" => self.s_maxage = min_opt(self.s_maxage, delta()),
                "min-fresh" => self.min_fresh = delta().or(self.min_fresh),
                "stale-while-revalidate" => self.stale_while_revalidate = delta(),
                "stale-if-error" => self.stale_if_error = delta(),
                "max-stale" => {
                    self.max_stale = match arg {
                        None => Some(None),
                        Some(_) => delta().map(Some).or(self.max_stale),
                    }
                }
                _ => {}
            }
        }
    }
}

/// `CDN-Cache-Control` as RFC 9213 section 2.1 reads it: a Structured Field
/// Dictionary (RFC 8941; its field lines joined by commas) whose known
/// directives have their types: an Integer of at least 0 for `max-age`,
/// `s-maxage`, `stale-while-revalidate` and `stale-if-error`, a Boolean for
/// the others (a String of field names for `no-cache` and `private`).
/// `None` when the field is not such a dictionary: it is then ignored
/// entirely, and the answer read as if it had none. Unknown members are
/// extensions and are skipped.
fn targeted(headers: &HeaderMap) -> Option<CacheControl> {
    let mut values = headers.get_all(&CDN_CACHE_CONTROL).iter();
    let first = values.next()?.as_bytes();
    // One field line (the common case) is parsed as it is; several are
    // joined by commas first, as RFC 8941 section 4.2 says.
    let joined: std::borrow::Cow<'_, [u8]> = match values.next() {
        None => first.into(),
        Some(second) => {
            let mut all = first.to_vec();
            for more in std::iter::once(second).chain(values) {
                all.extend_from_slice(b", ");
                all.extend_from_slice(more.as_bytes());
            }
            all.into()
        }
    };
    let dict: sfv::Dictionary = sfv::Parser::new(joined.as_ref()).parse_dictionary().ok()?;
    let mut cc = CacheControl::default();
    for (key, entry) in &dict {
        let name = key.as_str();
        let known = matches!(
            name,
            "max-age"
                | "s-maxage"
                | "stale-while-revalidate"
                | "stale-if-error"
                | "no-store"
                | "no-cache"
                | "private"
                | "public"
                | "must-revalidate"
                | "proxy-revalidate"
                | "must-understand"
        );
        let item = match entry {
            sfv::ListEntry::Item(item) => &item.bare_item,
            sfv::ListEntry::InnerList(_) if known => return None,
            sfv::ListEntry::InnerList(_) => continue,
        };
        let delta = || -> Option<u64> {
            let n = i64::from(item.as_integer()?);
            u64::try_from(n).ok().map(|n| n.min(DELTA_MAX))
        };
        let flag = || item.as_boolean();
        match name {
            "max-age" => cc.max_age = Some(delta()?),
            "s-maxage" => cc.s_maxage = Some(delta()?),
            "stale-while-revalidate" => cc.stale_while_revalidate = Some(delta()?),
            "stale-if-error" => cc.stale_if_error = Some(delta()?),
            "no-cache" => match item.as_string() {
                Some(fields) => cc.no_cache_fields.extend(
                    fields
                        .as_str()
                        .split(',')
                        .map(|f| f.trim().to_ascii_lowercase())
                        .filter(|f| !f.is_empty()),
                ),
                None => cc.no_cache = flag()?,
            },
            "private" => cc.private = item.as_string().is_some() || flag()?,
            "no-store" => cc.no_store = flag()?,
            "public" => cc.public = flag()?,
            "must-revalidate" => cc.must_revalidate = flag()?,
            "proxy-revalidate" => cc.proxy_revalidate = flag()?,
            "must-understand" => cc.must_understand = flag()?,
            _ => {}
        }
    }
    Some(cc)
}

fn parse_all(headers: &HeaderMap, side: Side) -> CacheControl {
    let mut cc = CacheControl::default();
    for value in headers.get_all(CACHE_CONTROL) {
        // A header value that is not visible ASCII cannot carry directives we
        // understand; read what we can of it.
        let text = String::from_utf8_lossy(value.as_bytes());
        cc.apply(&text, side);
    }
    cc
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn parse_delta(arg: Option<&str>, side: Side) -> Option<u64> {
    let parsed = arg.and_then(|a| {
        let a = a.trim();
        if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Overflowing values are capped rather than rejected.
        Some(a.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX))
    });
    match (parsed, side) {
        (Some(v), _) => Some(v),
        (None, Side::Response) => Some(0),
        (None, Side::Request) => None,
    }
}

/// Splits a Cache-Control value into `(name, argument)` pairs, honouring
/// quoted strings (a comma inside quotes does not end a directive).
fn directives(value: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    split_outside_quotes(value).filter_map(|part| {
        let part = part.trim();
        if part.is_empty() {
            return None;
        }
        Some(match part.split_once('=') {
            Some((name, arg)) => (name.trim(), Some(unquote(arg.trim()))),
            None => (part, None),
        })
    })
}

fn split_outside_quotes(value: &str) -> impl Iterator<Item = &str> {
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < bytes.len() {
            let b = bytes[pos];
            pos += 1;
            if escaped {
                escaped = false;
            } else if in_quotes && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = !in_quotes;
            } else if b == b',' && !in_quotes {
                let part = &value[start..pos - 1];
                start = pos;
                return Some(part);
            }
        }
        if start <= bytes.len() && start != usize::MAX {
            let part = &value[start..];
            start = usize::MAX;
            return Some(part);
        }
        None
    })
}

fn unquote(arg: &str) -> &str {
    arg.strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or(arg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn resp(v: &str) -> CacheControl {
        CacheControl::parse_response_value(v)
    }

    #[test]
    fn reads_common_directives_case_insensitively() {
        let cc = resp("Public, MAX-AGE=60, s-maxage=30 , no-cache");
        assert!(cc.public && cc.no_cache);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(30));
    }

    #[test]
    fn quoted_values_and_commas_inside_quotes() {
        let cc = resp(r#"max-age="120", private="set-cookie, x-a", no-store"#);
        assert_eq!(cc.max_age, Some(120));
        assert!(cc.private && cc.no_store);
    }

    #[test]
    fn invalid_response_max_age_means_stale() {
        assert_eq!(resp("max-age=abc").max_age, Some(0));
        assert_eq!(resp("max-age=").max_age, Some(0));
        assert_eq!(resp("max-age=-1").max_age, Some(0));
    }

    #[test]
    fn duplicate_max_age_takes_the_smallest() {
        assert_eq!(resp("max-age=100, max-age=10").max_age, Some(10));
    }

    #[test]
    fn huge_delta_is_capped() {
        assert_eq!(
            resp("max-age=99999999999999999999999").max_age,
            Some(DELTA_MAX)
        );
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(CacheControl::from_request(&h).no_cache);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=10"));
        assert!(!CacheControl::from_request(&h).no_cache);
    }

    #[test]
    fn request_max_stale_without_value_means_any() {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-stale"));
        assert_eq!(CacheControl::from_request(&h).max_stale, Some(None));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-stale=5, min-fresh=x"),
        );
        let cc = CacheControl::from_request(&h);
        assert_eq!(cc.max_stale, Some(Some(5)));
        assert_eq!(cc.min_fresh, None);
    }

    #[test]
    fn several_header_lines_combine() {
        let mut h = HeaderMap::new();
        h.append(CACHE_CONTROL, HeaderValue::from_static("public"));
        h.append(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        let cc = CacheControl::from_response(&h);
        assert!(cc.public);
        assert_eq!(cc.max_age, Some(5));
    }

    #[test]
    fn max_age_inside_a_quoted_string_is_not_a_directive() {
        assert_eq!(
            resp(r#"extension="max-age=3600", max-age=1"#).max_age,
            Some(1)
        );
        assert_eq!(
            resp(r#"max-age=1, extension="max-age=3600""#).max_age,
            Some(1)
        );
        assert_eq!(
            resp(r#"extension="max-age=3600", max-age="1""#).max_age,
            Some(1)
        );
        assert_eq!(
            resp(r#"extension="a,\"max-age=9\"", no-store"#).max_age,
            None
        );
        assert!(resp(r#"extension="a,\"max-age=9\"", no-store"#).no_store);
    }

    #[test]
    fn odd_numbers_make_a_response_max_age_stale() {
        for v in [
            "max-age='3600'",
            "max-age=3600.0",
            "max-age=a3600",
            "max-age=3600a",
        ] {
            assert_eq!(resp(v).max_age, Some(0), "{v}");
        }
        assert_eq!(resp("max-age=003600").max_age, Some(3600));
    }

    #[test]
    fn qualified_no_cache_names_fields_instead() {
        let cc = resp("no-cache=\"Set-Cookie, X-A\", max-age=60");
        assert!(!cc.no_cache);
        assert_eq!(cc.no_cache_fields, vec!["set-cookie", "x-a"]);
        assert!(resp("no-cache").no_cache);
        assert!(
            resp("no-cache=\"\"").no_cache,
            "an empty list is unqualified"
        );
    }

    #[test]
    fn cdn_cache_control_replaces_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert!(CacheControl::for_shared_cache(&h).no_store);
        h.insert(&CDN_CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        let cc = CacheControl::for_shared_cache(&h);
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(60));
    }

    #[test]
    fn cdn_cache_control_is_a_structured_field_dictionary_or_ignored() {
        let shared = |cdn: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(&CDN_CACHE_CONTROL, HeaderValue::from_static(cdn));
            CacheControl::for_shared_cache(&h)
        };
        // Valid: it replaces Cache-Control; extensions are skipped.
        let cc = shared("foobar, max-age=3600, must-revalidate");
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(3600));
        assert!(cc.must_revalidate);
        let cc = shared("no-cache=\"set-cookie, x-a\", private");
        assert_eq!(cc.no_cache_fields, ["set-cookie", "x-a"]);
        assert!(cc.private && !cc.no_cache);
        assert!(!shared("public=?0").public, "a false Boolean is absent");
        // Field lines are one dictionary, joined by commas.
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.append(&CDN_CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        h.append(
            &CDN_CACHE_CONTROL,
            HeaderValue::from_static("must-revalidate"),
        );
        let cc = CacheControl::for_shared_cache(&h);
        assert_eq!(cc.max_age, Some(60));
        assert!(cc.must_revalidate && !cc.no_store);
        h.append(&CDN_CACHE_CONTROL, HeaderValue::from_static("s-maxage=x"));
        assert!(
            CacheControl::for_shared_cache(&h).no_store,
            "one bad line spoils the field"
        );
        // Not a dictionary, or a known member of the wrong type: the field is
        // ignored, and Cache-Control's no-store rules.
        for invalid in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age=-1",
            "max-age=1.5",
            "max-age =100",
            "MaX-aGe=100",
            "no-store=3",
            "max-age=(1 2)",
        ] {
            let cc = shared(invalid);
            assert!(cc.no_store, "{invalid}: ignored");
            assert_eq!(cc.max_age, None, "{invalid}");
        }
    }

    #[test]
    fn surrogate_control_directives_for_us_replace_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            &SURROGATE_CONTROL,
            HeaderValue::from_static("max-age=60;leafcache"),
        );
        let cc = CacheControl::for_shared_cache(&h);
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(60));
        h.insert(
            &SURROGATE_CONTROL,
            HeaderValue::from_static("max-age=60;other"),
        );
        assert!(
            CacheControl::for_shared_cache(&h).no_store,
            "not for us: Cache-Control rules"
        );
        h.insert(
            &SURROGATE_CONTROL,
            HeaderValue::from_static("foobar, MaX-aGe=5"),
        );
        assert_eq!(CacheControl::for_shared_cache(&h).max_age, Some(5));
        h.insert(&CDN_CACHE_CONTROL, HeaderValue::from_static("max-age=7"));
        assert_eq!(
            CacheControl::for_shared_cache(&h).max_age,
            Some(7),
            "CDN-Cache-Control first"
        );
    }

    #[test]
    fn stale_is_forbidden_by_revalidation_directives() {
        assert!(!resp("max-age=1").forbids_stale());
        for v in [
            "no-cache",
            "must-revalidate",
            "proxy-revalidate",
            "s-maxage=5",
        ] {
            assert!(resp(v).forbids_stale(), "{v}");
        }
    }

    proptest! {
        #[test]
        fn duplicates_keep_the_most_restrictive_max_age(a in 0u64..100000, b in 0u64..100000, lines in any::<bool>()) {
            let mut h = HeaderMap::new();
            if lines {
                h.append(CACHE_CONTROL, HeaderValue::from_str(&format!("max-age={a}")).unwrap());
                h.append(CACHE_CONTROL, HeaderValue::from_str(&format!("max-age={b}")).unwrap());
            } else {
                h.append(CACHE_CONTROL, HeaderValue::from_str(&format!("max-age={a}, max-age={b}")).unwrap());
            }
            prop_assert_eq!(CacheControl::from_response(&h).max_age, Some(a.min(b)));
        }

        #[test]
        fn a_quoted_value_never_leaks_directives(inner in "[a-z=0-9, -]{0,30}") {
            let cc = resp(&format!("x=\"{inner}\""));
            prop_assert_eq!(cc, CacheControl::default());
        }

        #[test]
        fn request_directives_ignore_invalid_numbers(junk in "[a-z.]{1,5}") {
            let mut h = HeaderMap::new();
            h.insert(CACHE_CONTROL, HeaderValue::from_str(&format!("max-age={junk}, min-fresh={junk}")).unwrap());
            let cc = CacheControl::from_request(&h);
            prop_assert_eq!(cc.max_age, None);
            prop_assert_eq!(cc.min_fresh, None);
        }

        #[test]
        fn never_panics_on_any_input(s in "\\PC{0,80}") {
            let _ = resp(&s);
        }

        #[test]
        fn spacing_and_case_do_not_matter(n in 0u64..100000, upper in any::<bool>(), pad in " {0,3}") {
            let name = if upper { "MAX-AGE" } else { "max-age" };
            let v = format!("{pad}{name}={n}{pad},{pad}no-store");
            let cc = resp(&v);
            prop_assert_eq!(cc.max_age, Some(n));
            prop_assert!(cc.no_store);
        }
    }
}
