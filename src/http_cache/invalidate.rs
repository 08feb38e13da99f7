//! Invalidation after unsafe requests (RFC 9111 section 4.4): which methods
//! invalidate, which answers count, and which same-origin URIs a
//! `Location` or `Content-Location` names.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, StatusCode, Uri};

/// Methods that are not known to be safe, including ones leafcache has never
/// heard of (RFC 9111 section 4.4: "including methods whose safety is unknown").
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Only a non-error answer (2xx, 3xx) invalidates.
pub fn invalidates(status: StatusCode) -> bool {
    status.is_success() || status.is_redirection()
}

/// The path-and-query of each URI in the answer's `Location` and
/// `Content-Location` that is on the same origin as the request (`host`,
/// the request's Host), resolved against the request's path.
pub fn related_targets(
    response: &HeaderMap,
    request_path: &str,
    host: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    for name in [LOCATION, CONTENT_LOCATION] {
        for value in response.get_all(name) {
            let Ok(text) = value.to_str() else { continue };
            if let Some(target) = resolve(text.trim(), request_path, host)
                && !out.contains(&target)
            {
                out.push(target);
            }
        }
    }
    out
}

/// Resolves a URI reference to a same-origin path-and-query, or `None` when
/// it points elsewhere or cannot be read.
fn resolve(reference: &str, base_path: &str, host: Option<&str>) -> Option<String> {
    if reference.is_empty() || reference.starts_with("//") {
        // A network-path reference names an authority: compare it.
        let uri: Uri = format!("http:{reference}").parse().ok()?;
        return same_origin(&uri, host);
    }
    if reference.contains("://") {
        let uri: Uri = reference.parse().ok()?;
        return same_origin(&uri, host);
    }
    let (path, query) = match reference.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (reference, None),
    };
    let path = path.split('#').next().unwrap_or("");
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{path}")
    };
    let mut resolved = remove_dot_segments(&joined);
    if let Some(q) = query {
        resolved.push('?');
        resolved.push_str(q.split('#').next().unwrap_or(""));
    }
    resolved.parse::<http::uri::PathAndQuery>().ok()?;
    Some(resolved)
}

fn same_origin(uri: &Uri, host: Option<&str>) -> Option<String> {
    let authority = uri.authority()?;
    let host = host?;
    if !authority.as_str().eq_ignore_ascii_case(host) {
        return None;
    }
    Some(uri.path_and_query().map_or("/", |p| p.as_str()).to_owned())
}

/// RFC 3986 section 5.2.4, for absolute paths.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;
    use http::HeaderValue;
    use proptest::prelude::*;

    #[test]
    fn unknown_methods_are_unsafe() {
        for m in ["POST", "PUT", "DELETE", "PATCH", "M-SEARCH"] {
            assert!(is_unsafe(&Method::from_bytes(m.as_bytes()).unwrap()), "{m}");
        }
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert!(
                !is_unsafe(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
    }

    #[test]
    fn only_non_error_answers_invalidate() {
        assert!(invalidates(StatusCode::OK));
        assert!(invalidates(StatusCode::SEE_OTHER));
        assert!(!invalidates(StatusCode::NOT_FOUND));
        assert!(!invalidates(StatusCode::BAD_GATEWAY));
    }

    #[test]
    fn location_and_content_location_resolve_on_the_same_origin() {
        let h = headers(&[("location", "/items/2?x=1"), ("content-location", "other")]);
        assert_eq!(
            related_targets(&h, "/items/1", Some("shop.example")),
            vec!["/items/2?x=1".to_string(), "/items/other".to_string()]
        );
        let abs = headers(&[("location", "http://shop.example/a")]);
        assert_eq!(related_targets(&abs, "/", Some("shop.example")), vec!["/a"]);
        let foreign = headers(&[
            ("location", "http://evil.example/a"),
            ("content-location", "//evil.example/b"),
        ]);
        assert!(related_targets(&foreign, "/", Some("shop.example")).is_empty());
        let dots = headers(&[("location", "../b/./c")]);
        assert_eq!(related_targets(&dots, "/x/y/z", None), vec!["/x/b/c"]);
    }

    proptest! {
        #[test]
        fn never_panics_and_always_yields_a_path(loc in "\\PC{0,40}", base in "/[a-z/.]{0,20}") {
            if let Ok(v) = HeaderValue::from_str(&loc) {
                let mut h = HeaderMap::new();
                h.insert(LOCATION, v);
                for t in related_targets(&h, &base, Some("a.example")) {
                    prop_assert!(t.starts_with('/'));
                }
            }
        }
    }
}
