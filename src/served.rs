//! How a request was served: the one outcome the request flow returns.
//!
//! The flow decides it once; the `X-Cache` header, the request metrics and
//! the search log's `cache` field are all read from it (on the model of
//! pingora's `CachePhase`), so the three can never disagree.

use http::HeaderValue;

use crate::events::CacheResult;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// A fresh stored answer.
    Hit,
    /// Asked the backend (stored or not), or waited for another request's
    /// answer.
    Miss,
    /// Forwarded without the cache (a bypass rule).
    Bypass,
    /// An expired stored answer (stale-if-error, max-stale,
    /// stale-while-revalidate).
    Stale,
    /// A stale stored answer the backend confirmed with `304 Not Modified`.
    Revalidated,
    /// The backend failed and nothing stored could stand in: the proxy's
    /// own 502 or 504. Logged as the miss it was.
    Failed,
    /// Not the cache's: an unmatched request, or a request the proxy could
    /// not read.
    None,
}

impl Served {
    /// Every outcome, in the order metrics lay out their counters.
    pub const ALL: [Served; 7] = [
        Served::Hit,
        Served::Miss,
        Served::Bypass,
        Served::Stale,
        Served::Revalidated,
        Served::Failed,
        Served::None,
    ];

    /// The `X-Cache` header, on answers that went through the cache.
    pub fn header(self) -> Option<HeaderValue> {
        let v = match self {
            Served::Hit => "HIT",
            Served::Miss => "MISS",
            Served::Bypass => "BYPASS",
            Served::Stale => "STALE",
            Served::Revalidated => "REVALIDATED",
            Served::Failed | Served::None => return None,
        };
        Some(HeaderValue::from_static(v))
    }

    /// The `cache` label of the request metrics.
    pub fn label(self) -> &'static str {
        match self {
            Served::Hit => "hit",
            Served::Miss => "miss",
            Served::Bypass => "bypass",
            Served::Stale => "stale",
            Served::Revalidated => "revalidated",
            // The answer did not come through the cache.
            Served::Failed | Served::None => "none",
        }
    }

    /// The search log's `cache` field: a revalidated answer is a hit, and
    /// a failed backend request a miss (docs/contract.md section 5).
    pub fn logged_as(self) -> CacheResult {
        match self {
            Served::Hit | Served::Revalidated => CacheResult::Hit,
            Served::Miss | Served::Failed => CacheResult::Miss,
            Served::Bypass => CacheResult::Bypass,
            Served::Stale => CacheResult::Stale,
            Served::None => CacheResult::None,
        }
    }
}
