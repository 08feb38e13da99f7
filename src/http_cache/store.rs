//! Whether an origin route may store an answer (RFC 9111 section 3, docs/contract.md
//! 3b), and for how long it is fresh: a pure decision over the status, the
//! answer's headers and a few facts of the request.

use std::time::Duration;

use http::header::{AUTHORIZATION, ETAG, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use super::freshness::{self, Exchange, Lifetime};
use super::vary::Vary;
use crate::cache_control::CacheControl;
use crate::policy::{NotStored, StoreScope};

/// The facts of the request and route the decision needs.
#[derive(Clone, Copy, Debug)]
pub struct OriginRules {
    /// Where the entry would go: a user scope is a private cache, the global
    /// scope a shared one.
    pub scope: StoreScope,
    /// The route's `heuristic` setting.
    pub heuristic: bool,
}

/// A storable answer: how long it is fresh and how old it already is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storable {
    pub lifetime: Duration,
    pub initial_age: Duration,
    /// The Vary names of the answer (sorted, lowercase).
    pub vary: Vec<http::HeaderName>,
}

/// RFC 9111 section 3 for a shared cache, with docs/contract.md 3b's rule that answers
/// without explicit freshness are stored only with heuristics on, and that
/// an answer stored only to be revalidated must carry a validator.
pub fn decide(
    rules: OriginRules,
    status: StatusCode,
    request: &HeaderMap,
    response: &HeaderMap,
    exchange: Exchange,
) -> Result<Storable, NotStored> {
    // 206 needs range merging and 304 is not a whole answer; 1xx are not final.
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStored::Partial);
    }
    let cc = CacheControl::for_shared_cache(response);
    if cc.must_understand {
        if !freshness::understood(status) {
            return Err(NotStored::Status);
        }
    } else if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private && rules.scope == StoreScope::Global {
        return Err(NotStored::Private);
    }
    if rules.scope == StoreScope::Global
        && request.contains_key(AUTHORIZATION)
        && !authorized_may_share(&cc)
    {
        return Err(NotStored::Authorization);
    }
    let vary = match Vary::of(response) {
        Vary::Any => return Err(NotStored::Vary),
        Vary::Headers(names) => names,
    };
    let lifetime = match freshness::lifetime(
        &cc,
        response,
        status,
        exchange.response_time_ms,
        rules.heuristic,
    ) {
        Lifetime::Explicit(d) | Lifetime::Heuristic(d) => d,
        // no-cache: stored to be revalidated before every use.
        Lifetime::Unknown if cc.no_cache => Duration::ZERO,
        Lifetime::Unknown => return Err(NotStored::NoFreshness),
    };
    let initial_age = freshness::corrected_initial_age(response, exchange);
    let reusable_as_is = !cc.no_cache && initial_age < lifetime;
    let has_validator = response.contains_key(ETAG) || response.contains_key(LAST_MODIFIED);
    if !reusable_as_is && !has_validator {
        // Stale on arrival (or no-cache) and nothing to revalidate with.
        return Err(NotStored::NoReuse);
    }
    Ok(Storable {
        lifetime,
        initial_age,
        vary,
    })
}

/// RFC 9111 section 3.5: an answer to a request with `Authorization` may be
/// shared only when it says so.
pub fn authorized_may_share(cc: &CacheControl) -> bool {
    cc.public || cc.s_maxage.is_some() || cc.must_revalidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    const T0: u64 = 1_700_000_000_000;
    const EX: Exchange = Exchange {
        request_time_ms: T0,
        response_time_ms: T0,
    };
    const SHARED: OriginRules = OriginRules {
        scope: StoreScope::Global,
        heuristic: false,
    };

    fn ok(resp: &[(&'static str, &str)]) -> Result<Storable, NotStored> {
        decide(
            SHARED,
            StatusCode::OK,
            &HeaderMap::new(),
            &headers(resp),
            EX,
        )
    }

    #[test]
    fn explicit_freshness_is_stored_for_its_lifetime() {
        let s = ok(&[("cache-control", "max-age=60")]).unwrap();
        assert_eq!(s.lifetime, Duration::from_secs(60));
        assert_eq!(s.initial_age, Duration::ZERO);
    }

    #[test]
    fn no_explicit_freshness_is_not_stored_without_heuristics() {
        let lm = [("last-modified", "Wed, 01 Jan 2020 00:00:00 GMT")];
        assert_eq!(ok(&lm), Err(NotStored::NoFreshness));
        let heuristic = OriginRules {
            heuristic: true,
            ..SHARED
        };
        let s = decide(
            heuristic,
            StatusCode::OK,
            &HeaderMap::new(),
            &headers(&lm),
            EX,
        );
        assert!(s.unwrap().lifetime > Duration::ZERO);
        let created = decide(
            heuristic,
            StatusCode::CREATED,
            &HeaderMap::new(),
            &headers(&lm),
            EX,
        );
        assert_eq!(created, Err(NotStored::NoFreshness));
    }

    #[test]
    fn any_final_status_with_explicit_freshness_is_stored() {
        for code in [200, 203, 204, 299, 301, 302, 404, 410, 499, 500, 503, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            let h = headers(&[("cache-control", "max-age=60")]);
            assert!(
                decide(SHARED, status, &HeaderMap::new(), &h, EX).is_ok(),
                "{code}"
            );
        }
        let h = headers(&[("cache-control", "max-age=60")]);
        assert_eq!(
            decide(
                SHARED,
                StatusCode::PARTIAL_CONTENT,
                &HeaderMap::new(),
                &h,
                EX
            ),
            Err(NotStored::Partial)
        );
    }

    #[test]
    fn response_directives_refuse() {
        assert_eq!(
            ok(&[("cache-control", "max-age=60, no-store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            ok(&[("cache-control", "max-age=60, private")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            ok(&[("cache-control", "max-age=60"), ("vary", "a, *")]),
            Err(NotStored::Vary)
        );
        // no-cache without a validator: nothing to revalidate with.
        assert_eq!(
            ok(&[("cache-control", "no-cache, max-age=60")]),
            Err(NotStored::NoReuse)
        );
        let s = ok(&[("cache-control", "no-cache"), ("etag", "\"a\"")]).unwrap();
        assert_eq!(s.lifetime, Duration::ZERO);
    }

    #[test]
    fn private_is_fine_in_a_user_scope() {
        let user = OriginRules {
            scope: StoreScope::User,
            ..SHARED
        };
        let h = headers(&[("cache-control", "private, max-age=60")]);
        assert!(decide(user, StatusCode::OK, &HeaderMap::new(), &h, EX).is_ok());
    }

    #[test]
    fn must_understand_overrides_no_store_for_known_statuses_only() {
        let h = headers(&[("cache-control", "must-understand, no-store, max-age=60")]);
        assert!(decide(SHARED, StatusCode::OK, &HeaderMap::new(), &h, EX).is_ok());
        let unknown = StatusCode::from_u16(599).unwrap();
        assert_eq!(
            decide(SHARED, unknown, &HeaderMap::new(), &h, EX),
            Err(NotStored::Status)
        );
    }

    #[test]
    fn authorization_needs_public_s_maxage_or_must_revalidate_to_share() {
        let auth = headers(&[("authorization", "Bearer x")]);
        let plain = headers(&[("cache-control", "max-age=60")]);
        assert_eq!(
            decide(SHARED, StatusCode::OK, &auth, &plain, EX),
            Err(NotStored::Authorization)
        );
        for cc in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            let h = headers(&[("cache-control", cc)]);
            assert!(
                decide(SHARED, StatusCode::OK, &auth, &h, EX).is_ok(),
                "{cc}"
            );
        }
    }

    #[test]
    fn an_answer_older_than_its_lifetime_needs_a_validator() {
        assert_eq!(
            ok(&[("cache-control", "max-age=60"), ("age", "120")]),
            Err(NotStored::NoReuse)
        );
        assert!(
            ok(&[
                ("cache-control", "max-age=60"),
                ("age", "120"),
                ("etag", "\"x\"")
            ])
            .is_ok()
        );
        // An invalid Age is ignored (RFC 9111 section 5.1); a list counts
        // by its first member.
        assert!(ok(&[("cache-control", "max-age=60"), ("age", "bogus")]).is_ok());
        assert_eq!(
            ok(&[("cache-control", "max-age=60"), ("age", "120, 0")]),
            Err(NotStored::NoReuse)
        );
    }

    #[test]
    fn cdn_cache_control_decides_over_cache_control() {
        let s = ok(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=30"),
        ])
        .unwrap();
        assert_eq!(s.lifetime, Duration::from_secs(30));
        assert_eq!(
            ok(&[
                ("cache-control", "max-age=30"),
                ("cdn-cache-control", "no-store")
            ]),
            Err(NotStored::NoStore)
        );
    }
}
