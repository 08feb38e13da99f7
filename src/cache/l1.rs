//! The in-process tier: a concurrent cache bounded by bytes (`l1_max_bytes`),
//! where a copy lives at most `l1_ttl` and never past its own freshness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

use super::envelope::{Entry, now_ms};

/// Per-entry lifetime: the shorter of `l1_ttl` and the entry's remaining
/// freshness, so an L1 copy never outlives the entry it copies.
struct Lifetime {
    l1_ttl: Duration,
}

impl Lifetime {
    fn of(&self, entry: &Entry) -> Duration {
        self.l1_ttl.min(entry.remaining(now_ms()))
    }
}

impl moka::Expiry<String, Arc<Entry>> for Lifetime {
    fn expire_after_create(&self, _: &String, v: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(self.of(v))
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(v))
    }
}

/// The entry with a body and header values that own exactly their bytes.
///
/// A fetched body and the header values parsed with it are usually views
/// into a larger buffer (hyper's read buffer, or the Redis reply an entry was
/// decoded from), which they would keep alive for as long as the copy lives
/// here, while the weigher counts only their lengths: measured with `bench/l1_memory.sh`, an entry held ~9 KiB
/// of RSS for 3.3 KiB of weight, so a 64 MiB L1 took ~230 MiB. One copy per
/// insertion (a miss or a Redis-tier hit, never an L1 hit) makes the bound
/// `l1_max_bytes` mean what it says.
fn compact(entry: Arc<Entry>) -> Arc<Entry> {
    let mut headers = http::HeaderMap::with_capacity(entry.headers.len());
    for (name, value) in &entry.headers {
        let mut copy =
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), copy);
    }
    Arc::new(Entry {
        headers,
        body: bytes::Bytes::copy_from_slice(&entry.body),
        ..Entry::clone(&entry)
    })
}

#[derive(Clone)]
pub struct L1 {
    cache: Cache<String, Arc<Entry>>,
}

impl L1 {
    /// `None` when `max_bytes` is 0 (the tier is disabled).
    pub fn new(max_bytes: u64, l1_ttl: Duration) -> Option<L1> {
        if max_bytes == 0 || l1_ttl.is_zero() {
            return None;
        }
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Arc<Entry>| {
                u32::try_from(k.len() + v.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(Lifetime { l1_ttl })
            .build();
        Some(L1 { cache })
    }

    /// A fresh copy, if there is one.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let entry = self.cache.get(key)?;
        // moka expires lazily to the millisecond; check freshness exactly.
        entry.is_fresh(now_ms()).then_some(entry)
    }

    pub fn insert(&self, key: String, entry: Arc<Entry>) {
        if entry.is_fresh(now_ms()) {
            self.cache.insert(key, compact(entry));
        }
    }

    pub fn remove(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Drops every copy whose key satisfies `pred` (purge by user, all global).
    pub fn remove_matching(&self, pred: impl Fn(&str) -> bool) {
        for (k, _) in self.cache.iter() {
            if pred(&k) {
                self.cache.invalidate(k.as_str());
            }
        }
    }

    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// (bytes, entries), for metrics.
    pub fn usage(&self) -> (u64, u64) {
        (self.cache.weighted_size(), self.cache.entry_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::envelope::SearchMeta;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn entry(fresh_ms: u64, body: usize) -> Arc<Entry> {
        Arc::new(Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            stored_at_ms: now_ms(),
            fresh_for: Duration::from_millis(fresh_ms),
            meta: Arc::new(SearchMeta::default()),
            initial_age: Duration::ZERO,
            variant: None,
        })
    }

    #[test]
    fn a_copy_does_not_keep_the_buffer_it_was_read_from() {
        // An answer read as part of a larger buffer, as hyper hands it over.
        let read_buffer = Bytes::from(vec![b'r'; 64 * 1024]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "etag",
            http::HeaderValue::from_maybe_shared(read_buffer.slice(0..8)).unwrap(),
        );
        let original = Arc::new(Entry {
            headers,
            body: read_buffer.slice(100..3100),
            ..Entry::clone(&entry(60_000, 0))
        });
        let l1 = L1::new(1 << 20, Duration::from_secs(30)).unwrap();
        l1.insert("k".into(), original.clone());
        let stored = l1.get("k").unwrap();
        assert_eq!(stored.body, original.body);
        assert_eq!(stored.headers, original.headers);
        let inside = |p: *const u8| read_buffer.as_ptr_range().contains(&p);
        assert!(!inside(stored.body.as_ptr()), "the body owns its bytes");
        assert!(
            !inside(stored.headers["etag"].as_bytes().as_ptr()),
            "header values own their bytes"
        );
    }

    #[test]
    fn disabled_when_zero_bytes() {
        assert!(L1::new(0, Duration::from_secs(30)).is_none());
    }

    #[test]
    fn serves_fresh_copies() {
        let l1 = L1::new(1 << 20, Duration::from_secs(30)).unwrap();
        l1.insert("k".into(), entry(60_000, 10));
        assert!(l1.get("k").is_some());
        l1.remove("k");
        assert!(l1.get("k").is_none());
    }

    #[test]
    fn never_serves_past_the_entrys_freshness() {
        let l1 = L1::new(1 << 20, Duration::from_secs(30)).unwrap();
        l1.insert("k".into(), entry(1, 10));
        std::thread::sleep(Duration::from_millis(5));
        assert!(l1.get("k").is_none());
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let l1 = L1::new(64 * 1024, Duration::from_secs(30)).unwrap();
        for i in 0..100 {
            l1.insert(format!("k{i}"), entry(60_000, 4096));
        }
        l1.cache.run_pending_tasks();
        let (bytes, _) = l1.usage();
        assert!(bytes <= 64 * 1024, "{bytes} bytes held");
    }

    #[test]
    fn remove_matching_drops_only_matching_keys() {
        let l1 = L1::new(1 << 20, Duration::from_secs(30)).unwrap();
        l1.insert("user:a:cache:1".into(), entry(60_000, 1));
        l1.insert("user:b:cache:1".into(), entry(60_000, 1));
        l1.remove_matching(|k| k.starts_with("user:a:"));
        assert!(l1.get("user:a:cache:1").is_none());
        assert!(l1.get("user:b:cache:1").is_some());
    }
}
