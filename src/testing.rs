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

/// Search facts of an answer that shows these products, each with its
/// supplier when known.
pub(crate) fn meta_showing(products: &[(&str, Option<&str>)]) -> crate::answer::SearchMeta {
    crate::answer::SearchMeta {
        products: products
            .iter()
            .map(|(p, s)| (p.to_string(), s.map(str::to_string)))
            .collect(),
        ..Default::default()
    }
}
