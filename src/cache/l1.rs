//! The in-process tier: a concurrent cache bounded by bytes (`l1_max_bytes`),
//! where a copy is served as fresh at most `l1_ttl` and never past its own
//! freshness, and is kept past that for the stale window, as Redis keeps
//! it: to be revalidated, or to stand in for a failing backend, when Redis
//! is unset or unreachable (docs/failures.md).
//!
//! Built on `quick_cache` (S3-FIFO eviction, sharded, weight-aware): a read
//! takes a shard's read lock and bumps a frequency counter, an insertion
//! evicts inline. moka, used before, recorded every read and write in
//! channels for a housekeeping pass and rehashed its table under churn:
//! 15% of a miss's CPU and ~9% of a hit's (bench/RESULTS.md). Expiry is
//! checked on lookup: a copy past its stale window is dropped when it is
//! next asked for, or evicted like any other once space is needed.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;

use super::envelope::Entry;
use crate::time::now_ms;

/// Each shard holds at least this much (when `l1_max_bytes` allows), so one
/// large answer still fits in a shard.
const SHARD_BYTES_MIN: u64 = 16 << 20;
/// Typical answer size, for the table's initial capacity.
const TYPICAL_ENTRY_BYTES: u64 = 4096;

/// What L1 holds per key: the entry, when this copy stops being served as
/// fresh (the shorter of `l1_ttl` and the entry's own freshness), and when
/// it goes (its freshness plus the stale window it was stored with).
#[derive(Clone)]
struct Slot {
    entry: Arc<Entry>,
    until_ms: u64,
    keep_until_ms: u64,
    /// Key and entry, counted once (the weigher is asked on every move).
    weight: u64,
}

#[derive(Clone)]
struct Weigher;

impl quick_cache::Weighter<String, Slot> for Weigher {
    fn weight(&self, _: &String, slot: &Slot) -> u64 {
        slot.weight
    }
}

type Table = Cache<
    String,
    Slot,
    Weigher,
    foldhash::fast::RandomState,
    quick_cache::sync::DefaultLifecycle<String, Slot>,
>;

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

/// A copy L1 holds for a key.
pub enum Held {
    /// Within `l1_ttl` and its freshness: served as a hit.
    Fresh(Arc<Entry>),
    /// Past `l1_ttl` or its freshness, within its stale window: what Redis
    /// would hold, for when Redis cannot be asked.
    Kept(Arc<Entry>),
}

#[derive(Clone)]
pub struct L1 {
    cache: Arc<Table>,
    ttl_ms: u64,
    /// How long past its freshness [`L1::insert`] keeps a copy.
    keep: Duration,
    /// Some route logs searches: every answer served will carry its derived
    /// log facts, so their size counts from insertion on.
    counts_log_facts: bool,
}

impl L1 {
    /// `None` when `max_bytes` is 0 (the tier is disabled).
    pub fn new(max_bytes: u64, l1_ttl: Duration) -> Option<L1> {
        if max_bytes == 0 || l1_ttl.is_zero() {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let shards = (cores * 4).min(max_bytes / SHARD_BYTES_MIN).max(1);
        let options = quick_cache::OptionsBuilder::new()
            .shards(shards as usize)
            .weight_capacity(max_bytes)
            .estimated_items_capacity((max_bytes / TYPICAL_ENTRY_BYTES).clamp(16, 1 << 20) as usize)
            .build()
            // Fails only when a size above is not set.
            .ok()?;
        let cache = Cache::with_options(
            options,
            Weigher,
            foldhash::fast::RandomState::default(),
            Default::default(),
        );
        Some(L1 {
            cache: Arc::new(cache),
            ttl_ms: u64::try_from(l1_ttl.as_millis()).unwrap_or(u64::MAX),
            keep: Duration::ZERO,
            counts_log_facts: false,
        })
    }

    /// Keeps every copy `window` past its freshness (the stale window of
    /// `[cache] stale_if_error`); without it an expired copy is dropped.
    pub fn keeping_expired(mut self, window: Duration) -> L1 {
        self.keep = window;
        self
    }

    /// Counts, for each entry, the log facts the search log will derive
    /// for it (when some route logs).
    pub fn counting_log_facts(mut self, yes: bool) -> L1 {
        self.counts_log_facts = yes;
        self
    }

    /// A fresh copy, if there is one.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        match self.lookup(key)? {
            Held::Fresh(entry) => Some(entry),
            Held::Kept(_) => None,
        }
    }

    /// The copy held for `key`: fresh, or kept within its stale window.
    pub fn lookup(&self, key: &str) -> Option<Held> {
        let slot = self.cache.get(key)?;
        // Checked to the millisecond, against the entry's own freshness too.
        let now = now_ms();
        if now < slot.until_ms && slot.entry.is_fresh(now) {
            return Some(Held::Fresh(slot.entry));
        }
        if now < slot.keep_until_ms {
            return Some(Held::Kept(slot.entry));
        }
        self.cache.remove(key);
        None
    }

    /// Holds `entry`, kept the L1's stale window past its freshness.
    pub fn insert(&self, key: String, entry: Arc<Entry>) {
        self.insert_kept(key, entry, self.keep);
    }

    /// Holds `entry`, kept `keep` past its freshness (origin routes keep
    /// an entry with validators longer, to revalidate it).
    pub fn insert_kept(&self, key: String, entry: Arc<Entry>, keep: Duration) {
        let now = now_ms();
        let left = entry
            .fresh_for
            .saturating_add(keep)
            .saturating_sub(entry.age(now));
        if left.is_zero() {
            return;
        }
        let lives = self.ttl_ms.min(entry.remaining(now).as_millis() as u64);
        let keep_until_ms = now.saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
        let entry = compact(entry);
        let slot = Slot {
            weight: (key.len()
                + entry.weight()
                + if self.counts_log_facts {
                    entry.meta.facts_to_come()
                } else {
                    0
                }) as u64,
            entry,
            until_ms: now.saturating_add(lives),
            keep_until_ms,
        };
        self.cache.insert(key, slot);
    }

    pub fn remove(&self, key: &str) {
        self.cache.remove(key);
    }

    /// Drops every copy for which `pred` holds, given its key and entry
    /// (purge by user, all global, by product).
    pub fn remove_matching(&self, pred: impl Fn(&str, &Entry) -> bool) {
        self.cache.retain(|k, slot| !pred(k, &slot.entry));
    }

    pub fn clear(&self) {
        self.cache.clear();
    }

    /// (bytes, entries), for metrics.
    pub fn usage(&self) -> (u64, u64) {
        (self.cache.weight(), self.cache.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::SearchMeta;
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
        let (bytes, _) = l1.usage();
        assert!(bytes <= 64 * 1024, "{bytes} bytes held");
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_not_kept() {
        let l1 = L1::new(64 * 1024, Duration::from_secs(30)).unwrap();
        l1.insert("small".into(), entry(60_000, 1024));
        l1.insert("huge".into(), entry(60_000, 100 * 1024));
        assert!(l1.get("huge").is_none());
        assert!(l1.get("small").is_some(), "it did not push out the rest");
        assert!(l1.usage().0 <= 64 * 1024);
    }

    #[test]
    fn an_expired_copy_is_kept_for_the_stale_window() {
        let l1 = L1::new(1 << 20, Duration::from_secs(30))
            .unwrap()
            .keeping_expired(Duration::from_secs(60));
        l1.insert("k".into(), entry(1, 10));
        std::thread::sleep(Duration::from_millis(5));
        assert!(l1.get("k").is_none(), "not served as fresh");
        assert!(matches!(l1.lookup("k"), Some(Held::Kept(_))));
    }

    #[test]
    fn a_copy_past_its_stale_window_goes() {
        let l1 = L1::new(1 << 20, Duration::from_secs(30))
            .unwrap()
            .keeping_expired(Duration::from_secs(60));
        l1.insert_kept("k".into(), entry(1, 10), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(l1.lookup("k").is_none());
        assert_eq!(l1.usage().1, 0, "dropped on lookup");
        // Stored already older than freshness plus window: never held.
        let old = Arc::new(Entry {
            stored_at_ms: now_ms() - 120_000,
            ..Entry::clone(&entry(1_000, 10))
        });
        l1.insert("old".into(), old);
        assert!(l1.lookup("old").is_none());
    }

    #[test]
    fn a_copy_is_served_at_most_l1_ttl_and_kept_while_fresh() {
        let l1 = L1::new(1 << 20, Duration::from_millis(1))
            .unwrap()
            .keeping_expired(Duration::from_secs(60));
        l1.insert("k".into(), entry(60_000, 10));
        std::thread::sleep(Duration::from_millis(5));
        assert!(l1.get("k").is_none());
        assert!(matches!(l1.lookup("k"), Some(Held::Kept(_))));
    }

    #[test]
    fn remove_matching_drops_only_matching_keys() {
        let l1 = L1::new(1 << 20, Duration::from_secs(30)).unwrap();
        l1.insert("user:a:cache:1".into(), entry(60_000, 1));
        l1.insert("user:b:cache:1".into(), entry(60_000, 1));
        l1.remove_matching(|k, _| k.starts_with("user:a:"));
        assert!(l1.get("user:a:cache:1").is_none());
        assert!(l1.get("user:b:cache:1").is_some());
    }
}
