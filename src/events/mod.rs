//! The search log: every logged search becomes a [`SearchEvent`], queued
//! without blocking the request, written to Redis in batches by one writer
//! (SPEC section 5).
//!
//! - [`counters`]: analytics counters summed in process between flushes.
//! - [`write`]: the Redis commands for records and counters (key names come
//!   from [`crate::redis::keys`]).
//! - [`writer`]: the batching writer (a queue task and a Redis task),
//!   spilling to the spool under load, and replay.
//! - [`spool`]: the append-only disk buffer used while Redis is unreachable.

pub mod counters;
pub mod facts;
pub mod spool;
pub mod write;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cache::envelope::SearchMeta;

/// How a logged search was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheResult {
    Hit,
    Miss,
    Bypass,
    Stale,
    /// Logged by the application through `POST /v1/searches`.
    None,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
            CacheResult::Stale => "stale",
            CacheResult::None => "none",
        }
    }
}

/// One logged search, as the writer needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchEvent {
    pub search_id: Uuid,
    /// Milliseconds since the Unix epoch, when the request arrived.
    pub timestamp_ms: u64,
    pub user_id: Option<String>,
    pub user_uuid: Option<String>,
    pub session_id: Option<String>,
    /// The search text as received.
    pub query: String,
    /// As keyed (NFKC, lowercase, collapsed whitespace).
    pub query_normalized: String,
    /// Intent, confidence and products of the answer; shared with the cache
    /// entry on hits rather than copied.
    pub meta: Arc<SearchMeta>,
    pub response_time_ms: f64,
    pub cache: CacheResult,
    /// HTTP status of the answer (0 for manual logging without one).
    pub status: u16,
    pub route: Arc<str>,
}

impl SearchEvent {
    /// RFC 3339 with milliseconds, UTC: `2026-11-25T21:27:36.927Z`.
    pub fn timestamp(&self) -> String {
        rfc3339_ms(self.timestamp_ms)
    }

    /// Product ids de-duplicated, first occurrence first.
    pub fn product_ids(&self) -> impl Iterator<Item = &str> {
        self.meta.product_ids()
    }

    /// Supplier ids de-duplicated: a supplier counts once per search however
    /// many of its products match.
    pub fn supplier_ids(&self) -> impl Iterator<Item = &str> {
        self.meta.supplier_ids()
    }
}

/// A new search id: a UUID v7, so ids sort by time.
pub fn new_search_id() -> Uuid {
    Uuid::now_v7()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let mut buf = [0; RFC3339_MS_LEN];
    match rfc3339_ms_into(ms, &mut buf) {
        Some(s) => s.to_owned(),
        None => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
    }
}

/// Length of [`rfc3339_ms_into`]'s output: `2026-11-25T21:27:36.927Z`.
pub const RFC3339_MS_LEN: usize = 24;

/// Formats `ms` since the Unix epoch into `buf` without allocating (once
/// per logged search, so it is on the writer's hot path). `None` past the
/// year 9999, where the format needs more digits.
pub fn rfc3339_ms_into(ms: u64, buf: &mut [u8; RFC3339_MS_LEN]) -> Option<&str> {
    let days = i64::try_from(ms / 86_400_000).ok()?;
    let in_day = ms % 86_400_000;
    let (year, month, day) = crate::http_cache::date::civil_from_days(days);
    if year > 9999 {
        return None;
    }
    let (year, month, day) = (year as u64, month as u64, day as u64);
    let mut put = |at: usize, value: u64, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, in_day / 3_600_000, 2);
    put(14, in_day / 60_000 % 60, 2);
    put(17, in_day / 1000 % 60, 2);
    put(20, in_day % 1000, 3);
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        buf[at] = sep;
    }
    std::str::from_utf8(buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339_ms(1_764_106_056_927), "2025-11-25T21:27:36.927Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_fast_formatter_agrees_with_humantime() {
        let mut ms: u64 = 0;
        // Every day boundary region of 1970-2200 and odd milliseconds.
        while ms < 7_258_118_400_000 {
            for probe in [ms, ms + 1, ms + 86_399_999, ms + 43_261_001] {
                let expected =
                    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(probe))
                        .to_string();
                assert_eq!(rfc3339_ms(probe), expected, "{probe}");
            }
            ms += 86_400_000 * 13 + 7;
        }
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        let mut buf = [0; RFC3339_MS_LEN];
        assert_eq!(rfc3339_ms_into(253_402_300_800_000, &mut buf), None);
    }

    #[test]
    fn suppliers_count_once_per_search() {
        let ev = SearchEvent {
            search_id: new_search_id(),
            timestamp_ms: 0,
            user_id: None,
            user_uuid: None,
            session_id: None,
            query: "q".into(),
            query_normalized: "q".into(),
            meta: Arc::new(SearchMeta {
                products: vec![
                    ("p1".into(), Some("s1".into())),
                    ("p2".into(), Some("s1".into())),
                    ("p1".into(), Some("s1".into())),
                    ("p3".into(), None),
                ],
                ..SearchMeta::default()
            }),
            response_time_ms: 1.0,
            cache: CacheResult::Miss,
            status: 200,
            route: "search".into(),
        };
        assert_eq!(ev.product_ids().collect::<Vec<_>>(), ["p1", "p2", "p3"]);
        assert_eq!(ev.supplier_ids().collect::<Vec<_>>(), ["s1"]);
    }
}
