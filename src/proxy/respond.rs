//! Building the answers the proxy itself writes: replays of stored entries,
//! error bodies, and the `X-Cache` / `Cache-Status` headers (RFC 9211).

use std::fmt::Write as _;

use http::header::{AGE, CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::body::ProxyBody;
use crate::cache::envelope::Entry;
use crate::key::KeyHash;
use crate::policy::BypassReason;
use crate::served::Served;
use crate::time::now_ms;

pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// How a forwarded request relates to the cache, for `Cache-Status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MissDetail {
    /// The client asked for a fresh answer (`no-cache`): `fwd=request`.
    pub refresh: bool,
    pub stored: bool,
    /// Served from another request's backend answer.
    pub collapsed: bool,
    /// The key was in hit-for-pass.
    pub pass: bool,
}

pub fn hit_status(hash: &KeyHash, ttl_secs: u64) -> HeaderValue {
    let mut s = String::with_capacity(96);
    s.push_str("leafcache; hit; ttl=");
    s.push_str(itoa::Buffer::new().format(ttl_secs));
    s.push_str("; key=\"");
    s.push_str(hash.hex().as_str());
    s.push('"');
    header_value(s)
}

pub fn miss_status(hash: &KeyHash, d: MissDetail) -> HeaderValue {
    let mut s = String::with_capacity(112);
    s.push_str(if d.refresh {
        "leafcache; fwd=request"
    } else {
        "leafcache; fwd=uri-miss"
    });
    if d.stored {
        s.push_str("; stored");
    }
    if d.collapsed {
        s.push_str("; collapsed");
    }
    if d.pass {
        s.push_str("; detail=hit-for-pass");
    }
    let _ = write!(s, "; key=\"{hash}\"");
    header_value(s)
}

/// An expired copy served because the backend failed: RFC 9211's negative
/// `ttl` says how long ago it went stale; `fwd-status` what the backend said.
pub fn stale_status(
    hash: &KeyHash,
    stale_secs: u64,
    backend: Option<http::StatusCode>,
) -> HeaderValue {
    let mut s = String::with_capacity(128);
    s.push_str("leafcache; fwd=uri-miss");
    if let Some(status) = backend {
        let _ = write!(s, "; fwd-status={}", status.as_u16());
    }
    let _ = write!(
        s,
        "; ttl=-{stale_secs}; detail=stale-if-error; key=\"{hash}\""
    );
    header_value(s)
}

/// A stale entry served because the request (`max-stale`) or the answer
/// (`stale-while-revalidate`) allowed it.
pub fn stale_hit_status(hash: &KeyHash, stale_secs: u64, detail: &str) -> HeaderValue {
    let mut s = String::with_capacity(128);
    let _ = write!(
        s,
        "leafcache; hit; ttl=-{stale_secs}; detail={detail}; key=\"{hash}\""
    );
    header_value(s)
}

/// A stale entry revalidated with the backend (`304`), then served.
pub fn revalidated_status(hash: &KeyHash, ttl_secs: u64, stored: bool) -> HeaderValue {
    let mut s = String::with_capacity(128);
    s.push_str("leafcache; fwd=stale; fwd-status=304");
    if stored {
        s.push_str("; stored");
    }
    let _ = write!(s, "; ttl={ttl_secs}; key=\"{hash}\"");
    header_value(s)
}

/// A request leafcache answers with an error of its own on an origin route
/// (`only-if-cached` with nothing stored, a must-revalidate entry with the
/// backend down).
pub fn origin_error_status(hash: &KeyHash, detail: &str) -> HeaderValue {
    let mut s = String::with_capacity(112);
    let _ = write!(s, "leafcache; detail={detail}; key=\"{hash}\"");
    header_value(s)
}

/// Turns a full answer into the `304 Not Modified` of a client whose copy is
/// current: same headers but those describing the body, no body.
pub fn into_not_modified(resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::NOT_MODIFIED;
    parts.headers = crate::http_cache::conditional::not_modified_headers(&parts.headers);
    Response::from_parts(parts, ProxyBody::Empty)
}

pub fn bypass_status(reason: BypassReason) -> HeaderValue {
    HeaderValue::from_static(match reason {
        BypassReason::Method => "leafcache; fwd=method",
        BypassReason::ScopeOff => "leafcache; fwd=bypass; detail=scope-off",
        BypassReason::BypassQuery => "leafcache; fwd=bypass; detail=bypass-query",
        BypassReason::ClientNoStore => "leafcache; fwd=bypass; detail=no-store",
        BypassReason::NoQuery => "leafcache; fwd=bypass; detail=no-query",
        BypassReason::BodyTooLarge => "leafcache; fwd=bypass; detail=body-too-large",
        BypassReason::BodyNotJson => "leafcache; fwd=bypass; detail=body-not-json",
        BypassReason::AmbiguousIdentity => "leafcache; fwd=bypass; detail=ambiguous-identity",
        BypassReason::AmbiguousBody => "leafcache; fwd=bypass; detail=ambiguous-body",
        BypassReason::Credentialed => "leafcache; fwd=bypass; detail=credentialed",
        BypassReason::PathNotCanonical => "leafcache; fwd=bypass; detail=path-not-canonical",
        BypassReason::IdentityTooLong => "leafcache; fwd=bypass; detail=identity-too-long",
    })
}

fn header_value(s: String) -> HeaderValue {
    // Built from ASCII we control (the hash is hex); the value takes the
    // string's buffer rather than a copy.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
        .unwrap_or_else(|_| HeaderValue::from_static("leafcache"))
}

/// Replays a stored entry with `Age`, `X-Cache` and `Cache-Status`.
///
/// The stored `Content-Length` is left out: hyper writes the length of the
/// body actually sent, so an entry stored with a length that disagrees with
/// its body (from before framing was checked) cannot desync the client.
pub fn from_entry(entry: &Entry, served: Served, status: HeaderValue) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(entry.body.clone()));
    *resp.status_mut() = entry.status;
    // Sized for the stored headers, the three added here and the
    // `X-Search-Id` of a logged search: a clone of the stored map would
    // have to grow (and rehash) to take them.
    let mut headers = HeaderMap::with_capacity(entry.headers.len() + 4);
    for (name, value) in &entry.headers {
        if name != CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(AGE, HeaderValue::from(entry.age(now_ms()).as_secs()));
    if let Some(v) = served.header() {
        headers.insert(&X_CACHE, v);
    }
    headers.insert(&CACHE_STATUS, status);
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::sample_hash as hash;

    #[test]
    fn cache_status_follows_rfc_9211() {
        let h = hash();
        assert_eq!(
            hit_status(&h, 3512),
            format!("leafcache; hit; ttl=3512; key=\"{h}\"").as_str()
        );
        let stored = MissDetail {
            stored: true,
            ..Default::default()
        };
        assert_eq!(
            miss_status(&h, stored),
            format!("leafcache; fwd=uri-miss; stored; key=\"{h}\"").as_str()
        );
        let refresh = MissDetail {
            refresh: true,
            stored: true,
            ..Default::default()
        };
        assert!(
            miss_status(&h, refresh)
                .to_str()
                .unwrap()
                .starts_with("leafcache; fwd=request; stored")
        );
        assert_eq!(bypass_status(BypassReason::Method), "leafcache; fwd=method");
    }

    #[test]
    fn a_hit_has_room_for_its_search_id_without_growing_its_headers() {
        for stored in 0..12 {
            let mut headers = HeaderMap::new();
            for i in 0..stored {
                headers.insert(
                    HeaderName::try_from(format!("x-h{i}")).expect("a header name"),
                    HeaderValue::from_static("v"),
                );
            }
            let entry = Entry {
                status: StatusCode::OK,
                headers,
                body: bytes::Bytes::from_static(b"{}"),
                stored_at_ms: now_ms(),
                fresh_for: std::time::Duration::from_secs(60),
                meta: Default::default(),
                initial_age: std::time::Duration::ZERO,
                variant: None,
            };
            let mut resp = from_entry(&entry, Served::Hit, HeaderValue::from_static("s"));
            let room = resp.headers().capacity();
            resp.headers_mut().insert(
                &crate::proxy::log::X_SEARCH_ID,
                HeaderValue::from_static("id"),
            );
            assert_eq!(resp.headers().len(), stored + 4);
            assert_eq!(resp.headers().capacity(), room, "{stored} stored headers");
        }
    }

    #[test]
    fn a_replay_carries_no_stored_length_that_disagrees_with_its_body() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
        let entry = Entry {
            status: StatusCode::OK,
            headers,
            body: bytes::Bytes::from_static(b"{\"n\":1}"),
            stored_at_ms: now_ms(),
            fresh_for: std::time::Duration::from_secs(60),
            meta: Default::default(),
            initial_age: std::time::Duration::ZERO,
            variant: None,
        };
        let resp = from_entry(&entry, Served::Hit, HeaderValue::from_static("s"));
        assert!(!resp.headers().contains_key(CONTENT_LENGTH));
        // hyper frames the body by its exact size instead.
        let hint = hyper::body::Body::size_hint(resp.body());
        assert_eq!(hint.exact(), Some(entry.body.len() as u64));
    }
}
