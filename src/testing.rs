//! Helpers shared by unit tests.

/// A header map from name/value pairs.
pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            *k,
            http::HeaderValue::from_str(v).expect("a valid test header value"),
        );
    }
    h
}
