//! Freshness and age (RFC 9111 section 4.2): how long a stored answer is
//! fresh, how old it is, and whether a request may have it as it is.
//!
//! Times are milliseconds since the Unix epoch; HTTP dates have whole seconds.

use std::time::Duration;

use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use super::date::{self, DateField};
use crate::cache_control::CacheControl;

/// Heuristic freshness is capped at one day (docs/contract.md 3b).
pub const HEURISTIC_CAP: Duration = Duration::from_secs(86_400);

/// When the request that fetched an answer was sent and when its answer
/// arrived: the `request_time` and `response_time` of RFC 9111 section 4.2.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub request_time_ms: u64,
    pub response_time_ms: u64,
}

/// What the answer's `Age` field held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgeField {
    Absent,
    Valid(u64),
    Invalid,
}

/// `Age` per RFC 9111 section 5.1: a list-based value counts by its first
/// member (`Age: 1, 2` is 1), and a first member that is not delta-seconds
/// is invalid, which a cache ignores. A parameter on it is dropped.
pub fn age_field(headers: &HeaderMap) -> AgeField {
    let Some(first) = headers.get(AGE) else {
        return AgeField::Absent;
    };
    let bytes = first.as_bytes();
    // The first list member, without parameters: `7200;foo=bar` is 7200
    // (taking it as older errs toward revalidating, never toward reuse).
    let member = bytes
        .split(|b| *b == b',')
        .next()
        .and_then(|m| m.split(|b| *b == b';').next())
        .unwrap_or(bytes)
        .trim_ascii();
    if member.is_empty() || !member.iter().all(u8::is_ascii_digit) {
        return AgeField::Invalid;
    }
    // Overflowing values are capped (RFC 9111 section 1.2.2).
    let secs = std::str::from_utf8(member)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1 << 31)
        .min(1 << 31);
    AgeField::Valid(secs)
}

/// The answer's `Date` in milliseconds, or the time it arrived when it has
/// none (RFC 9110 section 6.6.1).
pub fn date_value_ms(headers: &HeaderMap, response_time_ms: u64) -> i64 {
    match date::parse_header(headers, DATE) {
        DateField::Valid(secs) => secs.saturating_mul(1000),
        _ => response_time_ms as i64,
    }
}

/// `corrected_initial_age` of RFC 9111 section 4.2.3:
///
/// ```text
/// apparent_age = max(0, response_time - date_value)
/// response_delay = response_time - request_time
/// corrected_age_value = age_value + response_delay
/// corrected_initial_age = max(apparent_age, corrected_age_value)
/// ```
pub fn corrected_initial_age(headers: &HeaderMap, ex: Exchange) -> Duration {
    let age_value_ms = match age_field(headers) {
        // An invalid Age is ignored (RFC 9111 section 5.1).
        AgeField::Absent | AgeField::Invalid => 0,
        AgeField::Valid(secs) => secs * 1000,
    };
    let date = date_value_ms(headers, ex.response_time_ms);
    let apparent_age = (ex.response_time_ms as i64).saturating_sub(date).max(0) as u64;
    let response_delay = ex.response_time_ms.saturating_sub(ex.request_time_ms);
    let corrected_age_value = age_value_ms.saturating_add(response_delay);
    Duration::from_millis(apparent_age.max(corrected_age_value))
}

/// `current_age` of RFC 9111 section 4.2.3: the corrected initial age plus
/// the time the answer has been resident since it arrived.
pub fn current_age(initial_age: Duration, response_time_ms: u64, now_ms: u64) -> Duration {
    initial_age.saturating_add(Duration::from_millis(
        now_ms.saturating_sub(response_time_ms),
    ))
}

/// Where an answer's freshness lifetime comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// `s-maxage`, `max-age` or `Expires`.
    Explicit(Duration),
    /// 10% of the time since `Last-Modified` (heuristics on).
    Heuristic(Duration),
    /// Nothing says how long the answer stays fresh.
    Unknown,
}

impl Lifetime {
    pub fn duration(self) -> Option<Duration> {
        match self {
            Lifetime::Explicit(d) | Lifetime::Heuristic(d) => Some(d),
            Lifetime::Unknown => None,
        }
    }
}

/// Statuses that RFC 9110 section 15.1 lets a cache store heuristically.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 451 | 501
    )
}

/// Statuses whose caching semantics leafcache knows (those RFC 9110
/// defines), for `must-understand` (RFC 9111 section 5.2.2.3).
pub fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=418 | 421 | 422 | 426 | 500..=505
    )
}

/// The freshness lifetime of RFC 9111 section 4.2.1, for a shared cache:
/// `s-maxage`, then `max-age`, then `Expires` minus `Date` (an invalid
/// `Expires` meaning already expired), then, when `heuristic` is on and the
/// status allows it (or the answer is `public`), a heuristic one.
pub fn lifetime(
    cc: &CacheControl,
    headers: &HeaderMap,
    status: StatusCode,
    response_time_ms: u64,
    heuristic: bool,
) -> Lifetime {
    if let Some(secs) = cc.s_maxage.or(cc.max_age) {
        return Lifetime::Explicit(Duration::from_secs(secs));
    }
    let date = date_value_ms(headers, response_time_ms);
    match date::parse_header(headers, EXPIRES) {
        DateField::Valid(expires) => {
            let ms = expires.saturating_mul(1000).saturating_sub(date).max(0);
            return Lifetime::Explicit(Duration::from_millis(ms as u64));
        }
        DateField::Invalid => return Lifetime::Explicit(Duration::ZERO),
        DateField::Absent => {}
    }
    if heuristic
        && (heuristically_cacheable(status) || cc.public)
        && let DateField::Valid(modified) = date::parse_header(headers, LAST_MODIFIED)
    {
        let since = date.saturating_sub(modified.saturating_mul(1000)).max(0) as u64;
        let tenth = Duration::from_millis(since / 10);
        return Lifetime::Heuristic(tenth.min(HEURISTIC_CAP));
    }
    Lifetime::Unknown
}

/// Whether a stored answer may be used for a request as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Fresh enough for this request.
    Fresh,
    /// Stale, but the request (`max-stale`) or the answer
    /// (`stale-while-revalidate`) allows serving it.
    Stale(StaleAllowance),
    /// Ask the backend first (conditionally when the answer has validators).
    Validate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleAllowance {
    /// The client's `max-stale`.
    MaxStale,
    /// The answer's `stale-while-revalidate`: serve, then refresh in the background.
    WhileRevalidate,
}

/// RFC 9111 sections 4.2 and 5.2.1: whether an answer of `lifetime` and
/// current `age` may serve a request with directives `req`.
pub fn reuse(resp: &CacheControl, req: &CacheControl, lifetime: Duration, age: Duration) -> Reuse {
    if resp.no_cache || req.no_cache {
        return Reuse::Validate;
    }
    if let Some(max_age) = req.max_age
        && age > Duration::from_secs(max_age)
    {
        return Reuse::Validate;
    }
    if let Some(min_fresh) = req.min_fresh
        && lifetime.saturating_sub(age) < Duration::from_secs(min_fresh)
    {
        return Reuse::Validate;
    }
    if age < lifetime {
        return Reuse::Fresh;
    }
    if resp.forbids_stale() {
        return Reuse::Validate;
    }
    let staleness = age - lifetime;
    match req.max_stale {
        Some(None) => return Reuse::Stale(StaleAllowance::MaxStale),
        Some(Some(secs)) if staleness <= Duration::from_secs(secs) => {
            return Reuse::Stale(StaleAllowance::MaxStale);
        }
        _ => {}
    }
    match resp.stale_while_revalidate {
        Some(secs) if staleness <= Duration::from_secs(secs) => {
            Reuse::Stale(StaleAllowance::WhileRevalidate)
        }
        _ => Reuse::Validate,
    }
}

/// How long past its freshness a stored answer may stand in for a failing
/// backend: the configured `stale_if_error` at most, shortened by the
/// answer's own `stale-if-error` (RFC 5861), and none when the answer
/// forbids serving stale.
pub fn error_grace(resp: &CacheControl, configured: Duration) -> Duration {
    if resp.forbids_stale() {
        return Duration::ZERO;
    }
    match resp.stale_if_error {
        Some(secs) => configured.min(Duration::from_secs(secs)),
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;
    use http::HeaderValue;
    use proptest::prelude::*;

    const T0: u64 = 1_700_000_000_000;

    fn at(ms: u64) -> String {
        date::format((ms / 1000) as i64)
    }

    fn cc(v: &str) -> CacheControl {
        CacheControl::parse_response_value(v)
    }

    fn req(v: &str) -> CacheControl {
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_str(v).unwrap());
        CacheControl::from_request(&h)
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn age_counts_by_its_first_member_and_an_invalid_one_is_ignored() {
        assert_eq!(age_field(&headers(&[("age", "30")])), AgeField::Valid(30));
        assert_eq!(age_field(&HeaderMap::new()), AgeField::Absent);
        for (value, first) in [
            ("1, 2", 1),
            ("0, old", 0),
            (" 7 ,8", 7),
            ("7200;foo=bar", 7200),
        ] {
            assert_eq!(
                age_field(&headers(&[("age", value)])),
                AgeField::Valid(first),
                "{value}"
            );
        }
        let two = headers(&[("age", "5"), ("age", "9")]);
        assert_eq!(age_field(&two), AgeField::Valid(5));
        for bad in ["abc", "-7200", "7200.0", "old, 0", ";1", ""] {
            assert_eq!(
                age_field(&headers(&[("age", bad)])),
                AgeField::Invalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn corrected_initial_age_takes_the_larger_of_apparent_and_corrected_age() {
        // Date says the answer left the origin 10 s before it arrived.
        let h = headers(&[("date", &at(T0 - 10_000))]);
        let ex = Exchange {
            request_time_ms: T0 - 500,
            response_time_ms: T0,
        };
        assert_eq!(corrected_initial_age(&h, ex), S(10));
        // Age 30 plus a 500 ms response delay beats a 10 s apparent age.
        let h = headers(&[("date", &at(T0 - 10_000)), ("age", "30")]);
        assert_eq!(corrected_initial_age(&h, ex), Duration::from_millis(30_500));
        // A Date in the future gives no negative apparent age.
        let h = headers(&[("date", &at(T0 + 60_000))]);
        assert_eq!(
            corrected_initial_age(&h, ex),
            Duration::from_millis(500),
            "the response delay alone"
        );
        // An invalid Age is ignored: the response delay alone.
        let h = headers(&[("age", "nope")]);
        assert_eq!(corrected_initial_age(&h, ex), Duration::from_millis(500));
    }

    #[test]
    fn current_age_adds_resident_time() {
        assert_eq!(current_age(S(30), T0, T0 + 2_000), S(32));
        assert_eq!(current_age(S(30), T0, T0 - 5), S(30), "clock steps back");
    }

    #[test]
    fn lifetime_prefers_s_maxage_then_max_age_then_expires() {
        let ok = StatusCode::OK;
        let h = headers(&[("date", &at(T0)), ("expires", &at(T0 + 100_000))]);
        assert_eq!(
            lifetime(&cc("max-age=60, s-maxage=5"), &h, ok, T0, false),
            Lifetime::Explicit(S(5))
        );
        assert_eq!(
            lifetime(&cc("max-age=60"), &h, ok, T0, false),
            Lifetime::Explicit(S(60))
        );
        assert_eq!(
            lifetime(&cc(""), &h, ok, T0, false),
            Lifetime::Explicit(S(100))
        );
    }

    #[test]
    fn expires_counts_from_date_or_arrival_and_invalid_means_expired() {
        let ok = StatusCode::OK;
        // No Date: from the arrival time.
        let h = headers(&[("expires", &at(T0 + 50_000))]);
        assert_eq!(
            lifetime(&cc(""), &h, ok, T0, false),
            Lifetime::Explicit(S(50))
        );
        // Expires before Date: already expired.
        let h = headers(&[("date", &at(T0)), ("expires", &at(T0 - 50_000))]);
        assert_eq!(
            lifetime(&cc(""), &h, ok, T0, false),
            Lifetime::Explicit(S(0))
        );
        let h = headers(&[("expires", "0")]);
        assert_eq!(
            lifetime(&cc(""), &h, ok, T0, false),
            Lifetime::Explicit(S(0))
        );
        let h = headers(&[("expires", &at(T0 + 50_000)), ("expires", &at(T0 + 50_000))]);
        assert_eq!(
            lifetime(&cc(""), &h, ok, T0, false),
            Lifetime::Explicit(S(0))
        );
    }

    #[test]
    fn heuristic_is_a_tenth_since_last_modified_capped_at_a_day() {
        let ok = StatusCode::OK;
        let h = headers(&[("date", &at(T0)), ("last-modified", &at(T0 - 1_000_000))]);
        assert_eq!(lifetime(&cc(""), &h, ok, T0, false), Lifetime::Unknown);
        assert_eq!(
            lifetime(&cc(""), &h, ok, T0, true),
            Lifetime::Heuristic(S(100))
        );
        let old = headers(&[
            ("date", &at(T0)),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert_eq!(
            lifetime(&cc(""), &old, ok, T0, true),
            Lifetime::Heuristic(HEURISTIC_CAP)
        );
        let created = StatusCode::CREATED;
        assert_eq!(lifetime(&cc(""), &h, created, T0, true), Lifetime::Unknown);
        assert_eq!(
            lifetime(&cc("public"), &h, created, T0, true),
            Lifetime::Heuristic(S(100)),
            "public allows heuristics on any status"
        );
    }

    #[test]
    fn fresh_answers_serve_and_stale_ones_validate() {
        let none = CacheControl::default();
        assert_eq!(reuse(&cc("max-age=60"), &none, S(60), S(10)), Reuse::Fresh);
        assert_eq!(
            reuse(&cc("max-age=60"), &none, S(60), S(60)),
            Reuse::Validate
        );
        assert_eq!(reuse(&cc("no-cache"), &none, S(60), S(1)), Reuse::Validate);
    }

    #[test]
    fn request_directives_tighten_or_loosen_reuse() {
        let r = cc("max-age=60");
        assert_eq!(reuse(&r, &req("no-cache"), S(60), S(1)), Reuse::Validate);
        assert_eq!(reuse(&r, &req("max-age=5"), S(60), S(10)), Reuse::Validate);
        assert_eq!(reuse(&r, &req("max-age=50"), S(60), S(10)), Reuse::Fresh);
        assert_eq!(
            reuse(&r, &req("min-fresh=55"), S(60), S(10)),
            Reuse::Validate
        );
        assert_eq!(reuse(&r, &req("min-fresh=5"), S(60), S(10)), Reuse::Fresh);
        assert_eq!(
            reuse(&r, &req("max-stale"), S(60), S(600)),
            Reuse::Stale(StaleAllowance::MaxStale)
        );
        assert_eq!(
            reuse(&r, &req("max-stale=30"), S(60), S(80)),
            Reuse::Stale(StaleAllowance::MaxStale)
        );
        assert_eq!(
            reuse(&r, &req("max-stale=30"), S(60), S(100)),
            Reuse::Validate
        );
    }

    #[test]
    fn revalidation_directives_forbid_stale_even_with_max_stale() {
        for v in [
            "max-age=1, must-revalidate",
            "max-age=1, proxy-revalidate",
            "s-maxage=1",
        ] {
            assert_eq!(
                reuse(&cc(v), &req("max-stale"), S(1), S(5)),
                Reuse::Validate,
                "{v}"
            );
        }
    }

    #[test]
    fn stale_while_revalidate_serves_within_its_window() {
        let r = cc("max-age=1, stale-while-revalidate=10");
        let none = CacheControl::default();
        assert_eq!(
            reuse(&r, &none, S(1), S(5)),
            Reuse::Stale(StaleAllowance::WhileRevalidate)
        );
        assert_eq!(reuse(&r, &none, S(1), S(20)), Reuse::Validate);
    }

    #[test]
    fn error_grace_is_capped_by_config_and_forbidden_by_revalidation() {
        let ten_min = S(600);
        assert_eq!(error_grace(&cc("max-age=1"), ten_min), ten_min);
        assert_eq!(error_grace(&cc("stale-if-error=30"), ten_min), S(30));
        assert_eq!(error_grace(&cc("stale-if-error=9999"), ten_min), ten_min);
        assert_eq!(error_grace(&cc("must-revalidate"), ten_min), S(0));
    }

    proptest! {
        /// RFC 9111 4.2.3 by construction: never below the upstream Age,
        /// never below the apparent age, never below the response delay.
        #[test]
        fn corrected_initial_age_bounds(
            age in 0u64..100_000,
            date_offset in -100_000i64..100_000,
            delay in 0u64..10_000,
        ) {
            let response = T0;
            let date_ms = (response as i64 + date_offset * 1000) as u64;
            let h = headers(&[("age", &age.to_string()), ("date", &at(date_ms))]);
            let ex = Exchange { request_time_ms: response - delay, response_time_ms: response };
            let got = corrected_initial_age(&h, ex);
            prop_assert!(got >= Duration::from_millis(age * 1000 + delay));
            let apparent = (response as i64 - (date_ms as i64 / 1000) * 1000).max(0) as u64;
            prop_assert!(got >= Duration::from_millis(apparent));
            prop_assert_eq!(got, Duration::from_millis((age * 1000 + delay).max(apparent)));
        }

        /// Tightening the request never turns a validation into a reuse.
        #[test]
        fn max_age_and_min_fresh_only_tighten(lifetime in 0u64..1000, age in 0u64..1000, m in 0u64..1000) {
            let r = cc("");
            let base = reuse(&r, &CacheControl::default(), S(lifetime), S(age));
            let with_max_age = reuse(&r, &req(&format!("max-age={m}")), S(lifetime), S(age));
            let with_min_fresh = reuse(&r, &req(&format!("min-fresh={m}")), S(lifetime), S(age));
            if base == Reuse::Validate {
                prop_assert_eq!(with_max_age, Reuse::Validate);
                prop_assert_eq!(with_min_fresh, Reuse::Validate);
            }
        }
    }
}
