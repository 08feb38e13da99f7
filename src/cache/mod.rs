//! The two cache tiers behind one interface: L1 in process, then Redis.
//!
//! - [`envelope`]: the stored binary form of an answer.
//! - [`l1`]: the byte-bounded in-process tier.
//! - [`coalesce`]: one backend request per key at a time.
//! - [`invalidation`]: the notices that tell every proxy to drop L1 copies.
//! - [`tags`]: the products and suppliers a stored answer is filed under,
//!   for purges by product (docs/contract.md section 9).
//!
//! Lookups are bounded by one deadline per request (`redis.timeout` in total,
//! however many scopes are asked); stores never make the client wait. Redis
//! is reached through [`crate::redis::CacheTier`], which hides the topology.
//!
//! Both tiers keep an expired entry for its stale window. While Redis
//! answers, its copy is the one that counts, and L1 serves only fresh copies
//! within `l1_ttl`; when Redis is unset or cannot be asked, L1's own copies
//! stand in: fresh ones as hits, expired ones to revalidate or to serve
//! stale, so stale-if-error, revalidation and RFC 9111 behave the same
//! without Redis (docs/failures.md).

pub mod coalesce;
pub mod envelope;
pub mod invalidation;
pub mod l1;
pub mod tags;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::redis::{CacheTier, RedisPool, TierStats};
use crate::time::now_ms;
use coalesce::Coalescer;
use envelope::Entry;
use l1::{Held, L1};

/// Where a hit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    L1,
    Redis,
}

/// A fresh entry found by a lookup, with the key it was found under.
pub struct Found {
    pub entry: Arc<Entry>,
    pub tier: Tier,
    pub key_index: usize,
}

/// What a lookup found: a fresh entry, or else an expired one still inside
/// its stale window (kept for stale-if-error).
#[derive(Default)]
pub struct Lookup {
    pub fresh: Option<Found>,
    pub stale: Option<Found>,
}

/// Counters the metrics endpoint reads.
#[derive(Default)]
pub struct CacheStats {
    pub redis_decode_errors: AtomicU64,
    /// Lookups, stores and dropped writes of the Redis tier.
    pub tier: Arc<TierStats>,
}

pub struct Cache {
    l1: Option<L1>,
    redis: Option<CacheTier>,
    /// Added to freshness for the Redis `EX`, so stale copies stay for
    /// stale-if-error.
    stale_window: Duration,
    /// Keys whose last answer could not be stored (hit-for-pass), with the
    /// time (ms) the mark lapses.
    pass: PassMarks,
    pub coalescer: Arc<Coalescer>,
    pub stats: Arc<CacheStats>,
    /// The key prefix of the tag indexes stores file answers under; `None`
    /// files nothing.
    tag_prefix: Option<String>,
    /// Stored lifetimes shortened by up to 10% (refresh-ahead is on), so
    /// that entries stored together do not expire together.
    jitter: bool,
}

impl Cache {
    /// Builds the tiers; must run inside the Tokio runtime when `redis` is
    /// set (the Redis tier starts its writer).
    pub fn new(
        l1: Option<L1>,
        redis: Option<RedisPool>,
        stale_window: Duration,
        hit_for_pass: Duration,
    ) -> Cache {
        let redis = redis.map(CacheTier::new);
        let l1 = l1.map(|l1| l1.keeping_expired(stale_window));
        let stats = Arc::new(CacheStats {
            redis_decode_errors: AtomicU64::new(0),
            tier: redis
                .as_ref()
                .map(|t| t.stats().clone())
                .unwrap_or_default(),
        });
        Cache {
            l1,
            redis,
            stale_window,
            pass: PassMarks::new(hit_for_pass),
            coalescer: Arc::new(Coalescer::default()),
            stats,
            tag_prefix: None,
            jitter: false,
        }
    }

    /// Files every answer stored in Redis under the tag indexes of its
    /// products and suppliers (docs/contract.md section 9), under `prefix`.
    pub fn tagging(mut self, prefix: &str) -> Cache {
        self.tag_prefix = Some(prefix.to_owned());
        self
    }

    /// Shortens the freshness of every answer [`Cache::store`] keeps by up
    /// to 10%, the same for one key within a process.
    pub fn jittered(mut self, yes: bool) -> Cache {
        self.jitter = yes;
        self
    }

    /// The tag indexes `entry` is filed under.
    fn tags_of(&self, entry: &Entry) -> Vec<String> {
        match &self.tag_prefix {
            Some(prefix) => tags::index_keys_of(&entry.meta, prefix),
            None => Vec::new(),
        }
    }

    pub fn l1(&self) -> Option<&L1> {
        self.l1.as_ref()
    }

    pub fn redis(&self) -> Option<&RedisPool> {
        self.redis.as_ref().map(CacheTier::pool)
    }

    /// Looks the keys up in order, L1 first for all of them, then Redis in one
    /// round trip. The first fresh entry wins. When Redis is unset or cannot
    /// be asked, L1's kept copies answer for it (see the module's doc).
    pub async fn lookup(&self, keys: &[&str], deadline: Instant) -> Lookup {
        // L1's kept copies, for when Redis cannot be asked: the first still
        // fresh (past `l1_ttl`), and the first expired.
        let mut kept = Lookup::default();
        if let Some(l1) = &self.l1 {
            for (i, key) in keys.iter().enumerate() {
                match l1.lookup(key) {
                    Some(Held::Fresh(entry)) => {
                        return Lookup {
                            fresh: Some(Found {
                                entry,
                                tier: Tier::L1,
                                key_index: i,
                            }),
                            stale: None,
                        };
                    }
                    Some(Held::Kept(entry)) => {
                        let slot = if entry.is_fresh(now_ms()) {
                            &mut kept.fresh
                        } else {
                            &mut kept.stale
                        };
                        slot.get_or_insert(Found {
                            entry,
                            tier: Tier::L1,
                            key_index: i,
                        });
                    }
                    None => {}
                }
            }
        }
        let values = match &self.redis {
            Some(redis) => redis.get_many(keys, deadline).await,
            None => None,
        };
        let Some(values) = values else {
            // A fresh entry is a hit: `l1_ttl` bounds how long a copy is
            // trusted over Redis's, and there is no Redis to ask.
            return kept;
        };
        let now = now_ms();
        let mut found = Lookup::default();
        for (i, value) in values.into_iter().enumerate() {
            let Some(raw) = value else { continue };
            let entry = match envelope::decode(raw) {
                Ok(e) => Arc::new(e),
                Err(err) => {
                    self.stats
                        .redis_decode_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(key = keys[i], error = %err, "unreadable cache entry; treated as a miss");
                    continue;
                }
            };
            if entry.is_fresh(now) {
                if let Some(l1) = &self.l1 {
                    l1.insert(keys[i].to_owned(), entry.clone());
                }
                found.fresh = Some(Found {
                    entry,
                    tier: Tier::Redis,
                    key_index: i,
                });
                return found;
            }
            if found.stale.is_none() {
                found.stale = Some(Found {
                    entry,
                    tier: Tier::Redis,
                    key_index: i,
                });
            }
        }
        found
    }

    /// Stores an answer in both tiers. Returns at once; Redis is written in
    /// the background.
    pub fn store(&self, key: String, mut entry: Arc<Entry>) {
        self.pass.invalidate(&key);
        if self.jitter {
            entry = Arc::new(jitter(&key, &entry));
        }
        let ex = entry.fresh_for + self.stale_window;
        if let Some(redis) = &self.redis {
            let tags = self.tags_of(&entry);
            redis.set_ex(&key, &envelope::encode(&entry), ex.as_secs().max(1), &tags);
        }
        if let Some(l1) = &self.l1 {
            l1.insert(key, entry);
        }
    }

    /// Origin routes: the entry under `key`, fresh or stale: L1's fresh
    /// copy, else Redis's within `deadline`, else (Redis unset or not
    /// answering) L1's kept one.
    pub async fn lookup_any(&self, key: &str, deadline: Instant) -> Option<Arc<Entry>> {
        let kept = match self.l1.as_ref().and_then(|l1| l1.lookup(key)) {
            Some(Held::Fresh(entry)) => return Some(entry),
            Some(Held::Kept(entry)) => Some(entry),
            None => None,
        };
        let Some(redis) = self.redis.as_ref() else {
            return kept;
        };
        let Some(mut values) = redis.get_many(&[key], deadline).await else {
            return kept;
        };
        let raw = values.pop().flatten()?;
        match envelope::decode(raw) {
            Ok(entry) => {
                let entry = Arc::new(entry);
                if let Some(l1) = &self.l1 {
                    l1.insert(key.to_owned(), entry.clone());
                }
                Some(entry)
            }
            Err(err) => {
                self.stats
                    .redis_decode_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(key, error = %err, "unreadable cache entry; treated as a miss");
                None
            }
        }
    }

    /// Origin routes: stores one entry under each of `keys` (its URI's
    /// primary key and its variant key). Both tiers keep it `keep` past its
    /// freshness, so that a stale entry can still be revalidated or stand
    /// in for a failing backend.
    pub fn store_kept(&self, keys: &[String], entry: Arc<Entry>, keep: Duration) {
        let remaining = entry.remaining(now_ms());
        let ex_secs = (remaining + keep).as_secs().max(1);
        let value = envelope::encode(&entry);
        let tags = self.tags_of(&entry);
        for key in keys {
            self.pass.invalidate(key);
            if let Some(redis) = &self.redis {
                redis.set_ex(key, &value, ex_secs, &tags);
            }
            if let Some(l1) = &self.l1 {
                l1.insert_kept(key.clone(), entry.clone(), keep);
            }
        }
    }

    /// Drops entries from both tiers and tells the other proxies (each
    /// notice is a channel and message); waits, at most `wait`, until Redis
    /// has them gone, so that the next request cannot find them there.
    pub async fn invalidate(
        &self,
        keys: Vec<String>,
        notices: Vec<(String, String)>,
        wait: Duration,
    ) {
        for key in &keys {
            self.forget_local(key);
        }
        if let Some(redis) = &self.redis {
            redis.invalidate(keys, notices, wait).await;
        }
    }

    /// Drops an L1 copy (purge, invalidation).
    pub fn forget_local(&self, key: &str) {
        if let Some(l1) = &self.l1 {
            l1.remove(key);
        }
    }

    pub fn mark_pass(&self, key: &str) {
        self.pass.mark(key);
    }

    pub fn is_pass(&self, key: &str) -> bool {
        self.pass.contains(key)
    }
}

/// Hit-for-pass marks: at most [`PASS_MARKS_BYTES`] of keys (the least used
/// go first), each for `hit_for_pass`.
struct PassMarks {
    marks: quick_cache::sync::Cache<String, u64, KeyBytes, foldhash::fast::RandomState>,
    for_ms: u64,
    /// When the newest mark lapses: past it no key is marked, and lookups
    /// skip the table.
    last_until_ms: AtomicU64,
}

/// The marks' budget, in bytes of key plus a mark's own share of the table:
/// a key names a user id, so marks are bounded by what they hold, not by
/// their number (docs/keys-and-security.md, "Security model"). About 100,000 marks of usual
/// keys.
const PASS_MARKS_BYTES: u64 = 16 << 20;
/// What a mark costs besides its key: the table's slot, the expiry and the
/// `String` header.
const PASS_MARK_OVERHEAD: u64 = 64;
/// How many marks the table is sized for at first.
const PASS_MARKS_ESTIMATE: usize = 100_000;

/// Weighs a mark by its key's bytes.
#[derive(Clone)]
struct KeyBytes;

impl quick_cache::Weighter<String, u64> for KeyBytes {
    fn weight(&self, key: &String, _until: &u64) -> u64 {
        key.len() as u64 + PASS_MARK_OVERHEAD
    }
}

impl PassMarks {
    fn new(hit_for_pass: Duration) -> PassMarks {
        PassMarks {
            marks: quick_cache::sync::Cache::with(
                PASS_MARKS_ESTIMATE,
                PASS_MARKS_BYTES,
                KeyBytes,
                foldhash::fast::RandomState::default(),
                Default::default(),
            ),
            for_ms: u64::try_from(hit_for_pass.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            last_until_ms: AtomicU64::new(0),
        }
    }

    /// The time now, if some mark may still be live; `None` (without
    /// reading the clock when nothing was ever marked) otherwise.
    fn live_now(&self) -> Option<u64> {
        let last = self.last_until_ms.load(Ordering::Relaxed);
        if last == 0 {
            return None;
        }
        let now = now_ms();
        (now < last).then_some(now)
    }

    fn mark(&self, key: &str) {
        let until = now_ms().saturating_add(self.for_ms);
        self.last_until_ms.fetch_max(until, Ordering::Relaxed);
        self.marks.insert(key.to_owned(), until);
    }

    fn contains(&self, key: &str) -> bool {
        // Marks are rare: skip the table while none is live.
        let Some(now) = self.live_now() else {
            return false;
        };
        match self.marks.get(key) {
            Some(until) if now < until => true,
            Some(_) => {
                self.marks.remove(key);
                false
            }
            None => false,
        }
    }

    fn invalidate(&self, key: &str) {
        if self.live_now().is_some() {
            self.marks.remove(key);
        }
    }
}

/// `entry` with its freshness shortened by a pseudo-random 0-10%, the same
/// for one key within a process (a hash of the key with the process's seed).
fn jitter(key: &str, entry: &Entry) -> Entry {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    let permille = SEED.get_or_init(Default::default).hash_one(key) % 100;
    let cut = entry.fresh_for.mul_f64(permille as f64 / 1000.0);
    Entry {
        fresh_for: entry.fresh_for.saturating_sub(cut),
        ..entry.clone()
    }
}

#[cfg(test)]
mod pass_tests {
    use super::*;

    #[test]
    fn pass_marks_are_bounded_by_the_bytes_of_their_keys() {
        let marks = PassMarks::new(Duration::from_secs(120));
        let long = |i: usize| format!("user:{i:06}{}:cache:h", "x".repeat(64 << 10));
        for i in 0..1_000 {
            marks.mark(&long(i));
        }
        let kept = (0..1_000).filter(|&i| marks.contains(&long(i))).count();
        let fit = (PASS_MARKS_BYTES / (64 << 10)) as usize;
        assert!(kept > 0 && kept <= fit, "{kept} marks of 64 KiB keys kept");
        // Usual keys: about as many as before.
        let marks = PassMarks::new(Duration::from_secs(120));
        for i in 0..50_000 {
            marks.mark(&format!("cache:global:{i:064}"));
        }
        let usual = (0..50_000)
            .filter(|i| marks.contains(&format!("cache:global:{i:064}")))
            .count();
        assert!(usual > 40_000, "{usual} of 50,000 usual marks kept");
    }
}
