//! Byte ranges served from a stored complete answer (RFC 9110 section 14):
//! one `bytes=` range, honouring `If-Range`. Several ranges, other units or
//! a malformed `Range` get the whole answer, as RFC 9110 allows.

use http::header::{ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, Method, StatusCode};

/// How to answer a request from a stored answer of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole answer (no usable `Range`).
    Full,
    /// `206 Partial Content` with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// `416 Range Not Satisfiable`.
    Unsatisfiable,
}

pub fn evaluate(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
    len: u64,
) -> RangeAnswer {
    if method != Method::GET || status != StatusCode::OK {
        return RangeAnswer::Full;
    }
    let mut ranges = request.get_all(RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return RangeAnswer::Full;
    };
    if !if_range_holds(request, stored) {
        return RangeAnswer::Full;
    }
    let Some(spec) = range.to_str().ok().and_then(|r| {
        let (unit, set) = r.trim().split_once('=')?;
        unit.trim()
            .eq_ignore_ascii_case("bytes")
            .then_some(set.trim())
    }) else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAnswer::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // suffix-range: the last n bytes
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        (false, Some(start), last_pos) if last.trim().is_empty() || last_pos.is_some() => {
            if last_pos.is_some_and(|l| l < start) {
                return RangeAnswer::Full;
            }
            if start >= len {
                return RangeAnswer::Unsatisfiable;
            }
            let end = last_pos.map_or(len - 1, |l| l.min(len - 1));
            RangeAnswer::Partial { start, end }
        }
        _ => RangeAnswer::Full,
    }
}

/// `If-Range` (RFC 9110 section 13.1.5): a strong entity tag equal to the
/// stored one, or exactly the stored `Last-Modified`; absent means yes.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(cond) = request.get(IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let cond = cond.trim();
    if cond.starts_with('"') {
        return stored
            .get(ETAG)
            .and_then(|e| e.to_str().ok())
            .is_some_and(|e| !e.starts_with("W/") && e.trim() == cond);
    }
    if cond.starts_with("W/") {
        return false;
    }
    let stored_lm = stored
        .get(LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(super::date::parse);
    stored_lm.is_some() && stored_lm == super::date::parse(cond)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn req(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    fn eval(range: &str, len: u64) -> RangeAnswer {
        evaluate(
            &Method::GET,
            &req(range),
            StatusCode::OK,
            &HeaderMap::new(),
            len,
        )
    }

    #[test]
    fn the_three_forms_of_a_byte_range() {
        assert_eq!(
            eval("bytes=0-1", 11),
            RangeAnswer::Partial { start: 0, end: 1 }
        );
        assert_eq!(
            eval("bytes=1-", 11),
            RangeAnswer::Partial { start: 1, end: 10 }
        );
        assert_eq!(
            eval("bytes=-1", 11),
            RangeAnswer::Partial { start: 10, end: 10 }
        );
        assert_eq!(
            eval("bytes=-50", 11),
            RangeAnswer::Partial { start: 0, end: 10 }
        );
        assert_eq!(
            eval("bytes=5-500", 11),
            RangeAnswer::Partial { start: 5, end: 10 }
        );
    }

    #[test]
    fn unsatisfiable_and_ignored_ranges() {
        assert_eq!(eval("bytes=20-", 11), RangeAnswer::Unsatisfiable);
        assert_eq!(eval("bytes=-0", 11), RangeAnswer::Unsatisfiable);
        for ignored in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes",
            "bytes=-",
        ] {
            assert_eq!(eval(ignored, 11), RangeAnswer::Full, "{ignored}");
        }
        let head = evaluate(
            &Method::HEAD,
            &req("bytes=0-1"),
            StatusCode::OK,
            &HeaderMap::new(),
            11,
        );
        assert_eq!(head, RangeAnswer::Full);
    }

    #[test]
    fn if_range_needs_the_same_strong_etag_or_date() {
        let mut stored = HeaderMap::new();
        stored.insert(ETAG, HeaderValue::from_static("\"v1\""));
        let mut r = req("bytes=0-1");
        r.insert(IF_RANGE, HeaderValue::from_static("\"v1\""));
        let partial = RangeAnswer::Partial { start: 0, end: 1 };
        assert_eq!(
            evaluate(&Method::GET, &r, StatusCode::OK, &stored, 11),
            partial
        );
        r.insert(IF_RANGE, HeaderValue::from_static("\"v2\""));
        assert_eq!(
            evaluate(&Method::GET, &r, StatusCode::OK, &stored, 11),
            RangeAnswer::Full
        );
    }

    proptest! {
        #[test]
        fn a_partial_answer_is_always_inside_the_body(spec in "bytes=[0-9]{0,3}-[0-9]{0,3}", len in 0u64..500) {
            if let RangeAnswer::Partial { start, end } = eval(&spec, len) {
                prop_assert!(start <= end && end < len);
            }
        }
    }
}
