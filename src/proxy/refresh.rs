//! Refresh-ahead (docs/contract.md section 9): the global entries of the day's most
//! popular queries are refetched in the background shortly before they
//! expire, so a popular key does not go cold and a warm cache does not
//! expire all at once.
//!
//! - Popular: the first `refresh_ahead` members of `queries:popular:<today>`
//!   (the search log's own ranking), read every [`POPULAR_EVERY`]; while
//!   Redis cannot be read the last list stays. Routes that do not log have
//!   no normalized query to rank and are never refreshed.
//! - Due: a hit on a global entry within the last tenth of its freshness
//!   (at least the last second, at most half of it) starts one refresh.
//! - Bounded: one refresh per key in flight (the miss coalescer's), and a
//!   token bucket of `refresh_rate` backend requests a second for the whole
//!   process; a refresh that finds no token is skipped, not queued.
//!
//! A refresh is a miss without a client: it goes down the same pipeline,
//! stores what the route's rules allow, and is not logged as a search.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bb8_redis::redis;
use tokio::time::Instant;

use crate::cache::envelope::Entry;
use crate::metrics::RefreshStats;
use crate::redis::RedisPool;
use crate::redis::keys::{self, Prefix};
use crate::redis::pool::Command;

/// How often the list of popular queries is read again.
pub const POPULAR_EVERY: Duration = Duration::from_secs(5);

pub struct RefreshAhead {
    popular: RwLock<Arc<HashSet<String>>>,
    bucket: Mutex<Bucket>,
    rate: f64,
    /// For `/metrics` (`leafcache_refreshes_started_total`,
    /// `leafcache_refreshes_rate_limited_total`).
    pub stats: Arc<RefreshStats>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RefreshAhead {
    pub fn new(rate: f64) -> RefreshAhead {
        RefreshAhead {
            popular: RwLock::new(Arc::default()),
            bucket: Mutex::new(Bucket {
                tokens: rate.min(1.0),
                at: Instant::now(),
            }),
            rate,
            stats: Arc::default(),
        }
    }

    /// Whether a hit on `entry` (fresh, global) for `query` should refresh
    /// it now: it is in its last stretch and the query is popular.
    pub fn due(&self, entry: &Entry, now_ms: u64, query: &str) -> bool {
        let fresh = entry.fresh_for;
        let window = (fresh / 10).max(Duration::from_secs(1)).min(fresh / 2);
        entry.remaining(now_ms) <= window
            && self
                .popular
                .read()
                .is_ok_and(|popular| popular.contains(query))
    }

    /// Takes one backend request from the budget, if there is one.
    pub fn take_token(&self) -> bool {
        let Ok(mut b) = self.bucket.lock() else {
            return false;
        };
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * self.rate;
        // At most one second's worth saved up.
        b.tokens = (b.tokens + refill).min(self.rate.max(1.0));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            self.stats.started.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    fn set_popular(&self, queries: HashSet<String>) {
        if let Ok(mut popular) = self.popular.write() {
            *popular = Arc::new(queries);
        }
    }
}

/// Reads the day's `n` most popular queries into `refresh` every
/// [`POPULAR_EVERY`], for as long as the process runs.
pub fn spawn_popularity(
    redis: RedisPool,
    prefix: Prefix,
    n: usize,
    refresh: Arc<RefreshAhead>,
) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("refresh_ahead");
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let mut tick = tokio::time::interval(POPULAR_EVERY);
            loop {
                tick.tick().await;
                let day = crate::time::utc_date(crate::time::now_ms());
                let read = redis::cmd("ZREVRANGE")
                    .arg(keys::queries_popular(&prefix, &day))
                    .arg(0)
                    .arg(n.saturating_sub(1))
                    .to_owned();
                let deadline = Instant::now() + Duration::from_secs(2);
                match redis
                    .query::<Vec<String>>(Command::Cmd(&read), deadline)
                    .await
                {
                    Ok(queries) => refresh.set_popular(queries.into_iter().collect()),
                    Err(e) => {
                        tracing::debug!(error = %e, "popular queries not read; keeping the last")
                    }
                }
            }
        },
        span,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::SearchMeta;

    fn entry(fresh_secs: u64, stored_at_ms: u64) -> Entry {
        Entry {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
            stored_at_ms,
            fresh_for: Duration::from_secs(fresh_secs),
            meta: Arc::new(SearchMeta::default()),
            initial_age: Duration::ZERO,
            variant: None,
        }
    }

    #[test]
    fn due_in_the_last_tenth_of_freshness_and_only_for_popular_queries() {
        let r = RefreshAhead::new(10.0);
        r.set_popular(["milk".to_string()].into_iter().collect());
        let e = entry(100, 0);
        assert!(!r.due(&e, 89_000, "milk"), "11 s left of 100");
        assert!(r.due(&e, 91_000, "milk"), "9 s left");
        assert!(!r.due(&e, 91_000, "bread"), "not popular");
        // Short lifetimes: the last second, at most half.
        let short = entry(2, 0);
        assert!(!r.due(&short, 900, "milk"));
        assert!(r.due(&short, 1_100, "milk"));
    }

    #[test]
    fn the_budget_is_the_rate() {
        let r = RefreshAhead::new(2.0);
        let taken = (0..10).filter(|_| r.take_token()).count();
        assert_eq!(taken, 1, "a fresh bucket holds one request");
        assert_eq!(r.stats.rate_limited.load(Ordering::Relaxed), 9);
    }
}
