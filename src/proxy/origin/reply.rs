//! How a stored answer goes out on an origin route: `Age` and the verdict,
//! the fields meant for leafcache alone left out, and the client's own
//! preconditions and byte range answered from it.

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::cache::envelope::Entry;
use crate::cache_control::{CDN_CACHE_CONTROL, SURROGATE_CONTROL};
use crate::http_cache::conditional::{self, Condition};
use crate::http_cache::range::{self, RangeAnswer};
use crate::proxy::body::ProxyBody;
use crate::proxy::respond;
use crate::served::Served;

/// A stored answer as the client gets it: `Age`, the verdict, CDN-Cache-Control
/// left out, and `304` when the client's own preconditions say its copy is current.
pub(crate) fn answer_stored(
    method: &Method,
    request: &HeaderMap,
    entry: &Entry,
    served: Served,
    status: HeaderValue,
) -> Response<ProxyBody> {
    let mut resp = respond::from_entry(entry, served, status);
    strip_targeted(resp.headers_mut());
    if conditional::evaluate(method, request, &entry.headers) == Condition::NotModified {
        return respond::into_not_modified(resp);
    }
    let len = entry.body.len() as u64;
    let (start, end) = match range::evaluate(method, request, entry.status, &entry.headers, len) {
        RangeAnswer::Full => return resp,
        RangeAnswer::Partial { start, end } => (start, end),
        RangeAnswer::Unsatisfiable => {
            let (mut parts, _) = resp.into_parts();
            parts.status = StatusCode::RANGE_NOT_SATISFIABLE;
            set_header(&mut parts.headers, CONTENT_RANGE, format!("bytes */{len}"));
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            return Response::from_parts(parts, ProxyBody::Empty);
        }
    };
    // Bounds come from `range::evaluate`: start <= end < len.
    let body = entry.body.slice(start as usize..=end as usize);
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::PARTIAL_CONTENT;
    set_header(
        &mut parts.headers,
        CONTENT_RANGE,
        format!("bytes {start}-{end}/{len}"),
    );
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, ProxyBody::full(body))
}

fn set_header(headers: &mut HeaderMap, name: http::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

/// The fields meant for leafcache alone are not passed on (RFC 9213
/// section 2.1, Edge Architecture section 2.2).
pub(crate) fn strip_targeted(headers: &mut HeaderMap) {
    headers.remove(&CDN_CACHE_CONTROL);
    headers.remove(&SURROGATE_CONTROL);
}
