//! The search log: every logged search becomes a [`SearchEvent`], queued
//! without blocking the request, written to Redis in batches by one writer
//! (docs/contract.md section 5).
//!
//! - [`counters`]: analytics counters summed in process between flushes.
//! - [`record`]: the stored form of one search's record, and reading it
//!   back.
//! - [`write`]: the Redis commands for records and counters (key names come
//!   from [`crate::redis::keys`]).
//! - [`writer`]: the batching writer (a queue task and a Redis task),
//!   spilling to the spool under load, and replay.
//! - [`spool`]: the append-only disk buffer used while Redis is unreachable.

pub mod counters;
pub mod record;
pub mod spool;
pub mod write;
pub mod writer;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::answer::SearchMeta;
use crate::time::rfc3339_ms;

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
    /// What the event weighs in the queue: its own size and the strings it
    /// owns (search text, identities). The answer's facts are not counted:
    /// a hit shares them with its cache entry. Computed from the event
    /// alone, so the sender's and the writer's counts agree.
    pub fn queued_bytes(&self) -> u64 {
        let id = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        (std::mem::size_of::<SearchEvent>()
            + self.query.len()
            + self.query_normalized.len()
            + id(&self.user_id)
            + id(&self.user_uuid)
            + id(&self.session_id)) as u64
    }

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

#[cfg(test)]
mod tests {
    use super::*;

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
