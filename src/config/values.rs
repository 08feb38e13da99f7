//! Parsers for single values of proxy.toml, shared by the file, the CLI flags
//! and the environment so that each value is checked the same way wherever it
//! comes from. Each returns a one-line message that names what is allowed.

use std::net::SocketAddr;
use std::str::FromStr;

use http::uri::{Scheme, Uri};
use http::{HeaderName, Method};
use serde::{Deserialize, Deserializer, de};

use super::Source;

const SOURCE_FORMS: &str = r#"use "header:NAME", "json:/pointer" or "query:NAME""#;

impl FromStr for Source {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(format!("invalid source {text:?} ({SOURCE_FORMS})"));
        };
        match kind {
            "header" => parse_header_name(rest)
                .map(Source::Header)
                .map_err(|e| format!("invalid source {text:?}: {e}")),
            "json" => parse_json_pointer(rest)
                .and_then(|()| {
                    if rest.is_empty() {
                        Err("the pointer must start with '/'".to_owned())
                    } else {
                        Ok(Source::Json(rest.to_owned()))
                    }
                })
                .map_err(|e| format!("invalid source {text:?}: {e}")),
            "query" if !rest.is_empty() => Ok(Source::Query(rest.to_owned())),
            "query" => Err(format!("invalid source {text:?}: empty parameter name")),
            _ => Err(format!("invalid source {text:?} ({SOURCE_FORMS})")),
        }
    }
}

/// Header names are lowercased: HTTP/2 requires it and users write both cases.
pub fn parse_header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{text:?} is not a valid header name"))
}

/// An RFC 6901 pointer: empty (the whole document) or '/'-separated tokens in
/// which '~' is only ever followed by '0' or '1'.
pub fn parse_json_pointer(text: &str) -> Result<(), String> {
    if !text.is_empty() && !text.starts_with('/') {
        return Err(format!("JSON pointer {text:?} must start with '/'"));
    }
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "JSON pointer {text:?}: '~' must be followed by 0 or 1 (\"~0\" is '~', \"~1\" is '/')"
            ));
        }
    }
    Ok(())
}

/// Methods are taken as written, so `get` is refused rather than silently
/// becoming an extension method that never matches a real GET.
pub fn parse_method(text: &str) -> Result<Method, String> {
    if text.is_empty() || text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "invalid method {text:?} (write methods in uppercase, e.g. \"GET\")"
        ));
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("invalid method {text:?}"))
}

/// The backend: http or https with a host and no path, because requests
/// are forwarded with their own path and a base path would silently be
/// dropped.
pub fn parse_upstream_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("invalid URL {text:?}: {e}"))?;
    match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => {}
        _ => {
            return Err(format!(
                "invalid URL {text:?} (use http://host:port or https://host[:port], e.g. \"http://127.0.0.1:8000\")"
            ));
        }
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(format!("invalid URL {text:?}: no host"));
    }
    if let Some(pq) = uri.path_and_query()
        && (!matches!(pq.path(), "" | "/") || pq.query().is_some())
    {
        return Err(format!(
            "URL {text:?} has a path or query; give only scheme, host and port (requests keep their own path)"
        ));
    }
    Ok(uri)
}

/// The message never repeats the URL: it may carry a password.
pub fn parse_redis_url(text: &str) -> Result<String, String> {
    const SCHEMES: [&str; 4] = ["redis://", "rediss://", "unix://", "redis+unix://"];
    if SCHEMES
        .iter()
        .any(|s| text.len() > s.len() && text.starts_with(s))
    {
        Ok(text.to_owned())
    } else {
        Err(
            "invalid Redis URL (use redis://host:port, rediss:// for TLS, or unix:///path)"
                .to_owned(),
        )
    }
}

pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("invalid address {text:?} (use IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::1]:9091\")")
    })
}

/// A serde visitor that checks a scalar with one of the parsers above while
/// toml's deserializer is still on the stack, so the error carries the
/// value's own span (an array element's, not the whole array's) and
/// serde_path_to_error the field's path.
/// Parsers of one value: the value, or a message for the user.
pub type ParseText<T> = fn(&str) -> Result<T, String>;
pub type ParseInteger<T> = fn(i64) -> Result<T, String>;

pub struct Checked<T> {
    /// Completes serde's "invalid type: ..., expected ...".
    pub expected: &'static str,
    pub text: Option<ParseText<T>>,
    pub integer: Option<ParseInteger<T>>,
}

impl<T> de::Visitor<'_> for Checked<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        match self.text {
            Some(parse) => parse(v).map_err(E::custom),
            None => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match self.integer {
            Some(parse) => parse(v).map_err(E::custom),
            None => Err(E::invalid_type(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
        }
    }
}

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident($ty:ty) = $parse:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(pub $ty);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(Checked {
                    expected: "a string",
                    text: Some(|s| {
                        let parse: ParseText<$ty> = $parse;
                        parse(s).map($name)
                    }),
                    integer: None,
                })
            }
        }
    };
}

checked_string!(SourceSpec(Source) = str::parse);
checked_string!(MethodName(Method) = parse_method);
checked_string!(HeaderSpec(HeaderName) = parse_header_name);
checked_string!(UpstreamUrl(Uri) = parse_upstream_url);
checked_string!(RedisUrl(String) = parse_redis_url);
checked_string!(Addr(SocketAddr) = parse_socket_addr);
checked_string!(
    /// A pointer into the backend's JSON response.
    Pointer(String) = |s| parse_json_pointer(s).map(|()| s.to_owned())
);
checked_string!(
    /// A request path to match: must start with '/', as every request path does.
    UrlPath(String) = |s| {
        if s.starts_with('/') {
            Ok(s.to_owned())
        } else {
            Err(format!("path {s:?} must start with '/'"))
        }
    }
);
checked_string!(
    /// A `bypass_query` pattern, compiled once here only to report errors
    /// at the pattern's own line; the route compiles them into one RegexSet.
    Pattern(String) = |s| match regex::Regex::new(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(format!("invalid regex {s:?}: {}", one_line(&e.to_string()))),
    }
);
checked_string!(
    /// An admin token; an empty one would let an empty bearer in. Trimmed
    /// as the presented bearer is, so a token written with a trailing
    /// newline (a heredoc, a secret file) still lets its admin in.
    Token(String) = |s| {
        if s.trim().is_empty() {
            Err("admin_token must not be empty".to_owned())
        } else {
            Ok(s.trim().to_owned())
        }
    }
);

/// regex renders syntax errors as a multi-line diagram; keep its last line,
/// which is the explanation ("error: unclosed group").
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(message)
        .trim_start_matches("error: ")
        .to_owned()
}

/// An HTTP status code in 100..=599.
#[derive(Clone, Copy, Debug)]
pub struct Status(pub u16);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checked {
            expected: "a status code such as 200",
            text: None,
            integer: Some(|code| match u16::try_from(code) {
                Ok(c) if (100..=599).contains(&c) => Ok(Status(c)),
                _ => Err(format!("invalid status code {code} (must be 100..=599)")),
            }),
        })
    }
}

/// A count that must be at least 1 (queue sizes, pool sizes, batch sizes).
#[derive(Clone, Copy, Debug)]
pub struct Count<T>(pub T);

impl<'de, T> Deserialize<'de> for Count<T>
where
    T: Deserialize<'de> + PartialOrd + From<u8> + std::fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = T::deserialize(d)?;
        if n < T::from(1) {
            return Err(de::Error::custom(format!("must be at least 1, not {n}")));
        }
        Ok(Count(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_each_kind() {
        assert_eq!(
            "header:X-User-Id".parse(),
            Ok(Source::Header(HeaderName::from_static("x-user-id")))
        );
        assert_eq!("json:/user_id".parse(), Ok(Source::Json("/user_id".into())));
        assert_eq!("query:q".parse(), Ok(Source::Query("q".into())));
    }

    #[test]
    fn bad_sources_name_the_allowed_forms() {
        for bad in ["cookie:sid", "user_id", ""] {
            let err = bad.parse::<Source>().unwrap_err();
            assert!(err.contains("header:NAME"), "{bad}: {err}");
        }
        assert!("json:user_id".parse::<Source>().is_err());
        assert!("json:".parse::<Source>().is_err());
        assert!("json:/a~2".parse::<Source>().is_err());
        assert!("query:".parse::<Source>().is_err());
        assert!("header:bad header".parse::<Source>().is_err());
    }

    #[test]
    fn lowercase_methods_are_refused_with_a_hint() {
        assert!(parse_method("get").unwrap_err().contains("uppercase"));
        assert_eq!(parse_method("PURGE").unwrap().as_str(), "PURGE");
    }

    #[test]
    fn upstream_must_be_http_or_https_without_path() {
        assert!(parse_upstream_url("http://127.0.0.1:8000").is_ok());
        assert!(parse_upstream_url("http://backend:8000/").is_ok());
        assert!(parse_upstream_url("https://backend").is_ok());
        assert!(parse_upstream_url("https://backend.run.app:8443").is_ok());
        assert!(parse_upstream_url("https://backend/api").is_err());
        assert!(parse_upstream_url("http://backend/api").is_err());
        assert!(parse_upstream_url("http://backend/?x=1").is_err());
        assert!(parse_upstream_url("127.0.0.1:8000").is_err());
        assert!(parse_upstream_url("ftp://backend").is_err());
    }

    #[test]
    fn redis_url_schemes_are_checked_without_echoing_secrets() {
        for ok in [
            "redis://h:6379",
            "rediss://h",
            "unix:///tmp/r.sock",
            "redis+unix:///r",
        ] {
            assert!(parse_redis_url(ok).is_ok(), "{ok}");
        }
        let err = parse_redis_url("http://:hunter2@h").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(parse_redis_url("redis://").is_err());
    }

    #[test]
    fn regex_errors_fit_on_one_line() {
        let pattern = String::from("(unclosed");
        let err = regex::Regex::new(&pattern).unwrap_err().to_string();
        let line = one_line(&err);
        assert!(!line.contains('\n'));
        assert!(line.contains("unclosed"), "{line}");
    }
}
