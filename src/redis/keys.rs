//! Every Redis key name leafcache reads or writes (docs/contract.md section 4), in one
//! place, so the layout can be checked against a single file. Each function
//! takes the configured `key_prefix` as a [`Prefix`].
//!
//! In cluster mode (`redis.cluster = true`) the keys that belong to one user
//! or one search carry a hash tag, so that Redis Cluster keeps them in one
//! slot: `user:{<id>}:cache:<hash>`, `user:{<id>}:searches`,
//! `user:{<id>}:profile`, `search:{<id>}` and `search:{<id>}:feedback`. A
//! user's history and profile are then written in one transaction, and a
//! search's record and feedback list read and written together. On a single
//! node the layout is exactly docs/contract.md section 4, without braces.
//!
//! In cluster mode the keys of a day (`searches:daily:{<date>}`, the
//! analytics counters such as `intent:stats:{<date>}` and
//! `supplier:<id>:queries:{<date>}`) carry the date as their tag: a flush of
//! the summed counters then goes to one slot, so it succeeds or fails whole
//! and is never half applied and then sent again (which would count the
//! applied half twice).

use std::fmt;
use std::ops::Deref;

use crate::key::KeyHash;

/// The configured `key_prefix`, and whether per-user and per-search keys
/// carry a cluster hash tag. Derefs to the prefix text, so the key functions
/// of shared, untagged keys take a plain `&str`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefix {
    text: String,
    hash_tags: bool,
}

impl Prefix {
    /// `hash_tags`: true in cluster mode.
    pub fn new(text: impl Into<String>, hash_tags: bool) -> Prefix {
        Prefix {
            text: text.into(),
            hash_tags,
        }
    }

    /// The single-node layout of docs/contract.md section 4, under `text`.
    pub fn single_node(text: impl Into<String>) -> Prefix {
        Prefix::new(text, false)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn hash_tags(&self) -> bool {
        self.hash_tags
    }

    /// `<prefix><kind>:<id>` or, in cluster mode, `<prefix><kind>:{<id>}`.
    fn tagged(&self, out: &mut String, kind: &str, id: &str) {
        out.push_str(&self.text);
        out.push_str(kind);
        out.push(':');
        if self.hash_tags {
            out.push('{');
            out.push_str(id);
            out.push('}');
        } else {
            out.push_str(id);
        }
    }

    /// `<prefix><head><date>` or, in cluster mode, `<prefix><head>{<date>}`:
    /// a day's log and analytics keys share one slot.
    fn with_date(&self, head: &str, date: &str) -> String {
        let mut k = String::with_capacity(self.text.len() + head.len() + date.len() + 2);
        k.push_str(&self.text);
        k.push_str(head);
        if self.hash_tags {
            k.push('{');
            k.push_str(date);
            k.push('}');
        } else {
            k.push_str(date);
        }
        k
    }

    fn with_id(&self, kind: &str, id: &str, tail: &str) -> String {
        let mut k = String::with_capacity(self.text.len() + kind.len() + id.len() + tail.len() + 3);
        self.tagged(&mut k, kind, id);
        k.push_str(tail);
        k
    }
}

impl Deref for Prefix {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `user:<user_id>:cache:<hash>`: a user-scope cache entry.
pub fn user_cache(prefix: &Prefix, user_id: &str, hash: &KeyHash) -> String {
    let mut k = String::with_capacity(prefix.len() + user_id.len() + 79);
    prefix.tagged(&mut k, "user", user_id);
    k.push_str(":cache:");
    k.push_str(hash.hex().as_str());
    k
}

/// `cache:global:<hash>`: a global-scope cache entry.
pub fn global_cache(prefix: &str, hash: &KeyHash) -> String {
    let mut k = String::with_capacity(prefix.len() + 77);
    k.push_str(prefix);
    k.push_str("cache:global:");
    k.push_str(hash.hex().as_str());
    k
}

/// `<cache key>:v:<generation>:<selection id>`: one `Vary` variant of an
/// origin-route entry (docs/contract.md 3b). A new generation starts whenever the URI
/// key is gone, so variants of an invalidated URI are never reached again.
pub fn variant_cache(key: &str, generation: u64, selection_id: &str) -> String {
    format!("{key}:v:{generation:016x}:{selection_id}")
}

/// `user:<user_id>:cache:`: what every cache key of a user starts with
/// (a purge takes the keys of this head followed by exactly one hash).
pub fn user_cache_head(prefix: &Prefix, user_id: &str) -> String {
    prefix.with_id("user", user_id, ":cache:")
}

/// `cache:global:`: what every global cache key starts with.
pub fn global_cache_head(prefix: &str) -> String {
    format!("{prefix}cache:global:")
}

/// `cache:tag:product:<id>`: the tag index of a product (docs/contract.md section 9),
/// a zset of the cache keys whose stored answer shows the product, each
/// scored by the time (ms) its entry expires. Not tagged for the cluster:
/// the index is read alone, and the keys it names are removed one by one.
pub fn product_tag(prefix: &str, product_id: &str) -> String {
    format!("{prefix}cache:tag:product:{product_id}")
}

/// `cache:tag:supplier:<id>`: the tag index of a supplier, as
/// [`product_tag`].
pub fn supplier_tag(prefix: &str, supplier_id: &str) -> String {
    format!("{prefix}cache:tag:supplier:{supplier_id}")
}

/// `cache:tag:overflow`: the tag index of answers that show too many
/// products to be filed under each (every tag purge reads it too).
pub fn overflow_tag(prefix: &str) -> String {
    format!("{prefix}cache:tag:overflow")
}

/// `leafcache:invalidate`: the pub/sub channel for L1 invalidation.
pub fn invalidate_channel(prefix: &str) -> String {
    format!("{prefix}leafcache:invalidate")
}

/// `search:<search_id>`: the search record (a string of compact JSON).
pub fn search(prefix: &Prefix, search_id: &str) -> String {
    prefix.with_id("search", search_id, "")
}

/// `search:<search_id>:feedback`: what the user did with the results (list).
pub fn search_feedback(prefix: &Prefix, search_id: &str) -> String {
    prefix.with_id("search", search_id, ":feedback")
}

/// `searches:daily:<date>`: search ids of a day by time (zset).
pub fn searches_daily(prefix: &Prefix, date: &str) -> String {
    prefix.with_date("searches:daily:", date)
}

/// `searches:hourly:<date>`: `00`..`23` → count (hash).
pub fn searches_hourly(prefix: &Prefix, date: &str) -> String {
    prefix.with_date("searches:hourly:", date)
}

/// `user:<user_id>:searches`: the user's recent searches, newest first (list).
pub fn user_searches(prefix: &Prefix, user_id: &str) -> String {
    prefix.with_id("user", user_id, ":searches")
}

/// `user:<user_id>:profile`: first/last seen, counts (hash; shared with the
/// application, which owns every other field).
pub fn user_profile(prefix: &Prefix, user_id: &str) -> String {
    prefix.with_id("user", user_id, ":profile")
}

/// `intent:stats:<date>`: intent → count (hash).
pub fn intent_stats(prefix: &Prefix, date: &str) -> String {
    prefix.with_date("intent:stats:", date)
}

/// `products:popular:<date>`: product → times returned (zset).
pub fn products_popular(prefix: &Prefix, date: &str) -> String {
    prefix.with_date("products:popular:", date)
}

/// `supplier:<id>:queries:<date>`: normalized query → count (zset).
pub fn supplier_queries(prefix: &Prefix, supplier: &str, date: &str) -> String {
    prefix.with_date(&format!("supplier:{supplier}:queries:"), date)
}

/// `queries:popular:<date>`: normalized query → count (zset).
pub fn queries_popular(prefix: &Prefix, date: &str) -> String {
    prefix.with_date("queries:popular:", date)
}

/// `queries:zero:<date>`: normalized queries that found nothing (zset).
pub fn queries_zero(prefix: &Prefix, date: &str) -> String {
    prefix.with_date("queries:zero:", date)
}

/// `cache:stats:<date>`: hit, miss, bypass, stale → count (hash).
pub fn cache_stats(prefix: &Prefix, date: &str) -> String {
    prefix.with_date("cache:stats:", date)
}

/// `products:clicked:<date>` / `products:ordered:<date>` /
/// `products:purchased:<date>`: product → count (zset), by feedback event.
pub fn products_feedback(prefix: &Prefix, event: &str, date: &str) -> String {
    prefix.with_date(&format!("products:{event}:"), date)
}

/// `supplier:<id>:clicks:<date>`: product → clicks (zset).
pub fn supplier_clicks(prefix: &Prefix, supplier: &str, date: &str) -> String {
    prefix.with_date(&format!("supplier:{supplier}:clicks:"), date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::sample_hash as hash;

    #[test]
    fn cache_keys_follow_the_spec_layout() {
        let h = hash();
        let none = Prefix::single_node("");
        let app = Prefix::single_node("app:");
        assert_eq!(
            user_cache(&none, "u1", &h),
            format!("user:u1:cache:{}", h.to_hex())
        );
        assert_eq!(global_cache("", &h), format!("cache:global:{}", h.to_hex()));
        assert_eq!(
            global_cache(&app, &h),
            format!("app:cache:global:{}", h.to_hex())
        );
        assert_eq!(
            user_cache_head(&app, "u1") + &h.to_hex(),
            user_cache(&app, "u1", &h)
        );
        assert_eq!(
            global_cache_head("app:") + &h.to_hex(),
            global_cache("app:", &h)
        );
    }

    #[test]
    fn single_node_keys_have_no_braces() {
        let p = Prefix::single_node("app:");
        assert_eq!(search(&p, "s1"), "app:search:s1");
        assert_eq!(search_feedback(&p, "s1"), "app:search:s1:feedback");
        assert_eq!(user_searches(&p, "u1"), "app:user:u1:searches");
        assert_eq!(user_profile(&p, "u1"), "app:user:u1:profile");
    }

    #[test]
    fn cluster_keys_of_one_user_or_search_share_a_hash_tag() {
        let h = hash();
        let p = Prefix::new("app:", true);
        assert_eq!(
            user_cache(&p, "u1", &h),
            format!("app:user:{{u1}}:cache:{}", h.to_hex())
        );
        assert_eq!(
            user_cache_head(&p, "u1") + &h.to_hex(),
            user_cache(&p, "u1", &h)
        );
        assert_eq!(user_searches(&p, "u1"), "app:user:{u1}:searches");
        assert_eq!(user_profile(&p, "u1"), "app:user:{u1}:profile");
        assert_eq!(search(&p, "s1"), "app:search:{s1}");
        assert_eq!(search_feedback(&p, "s1"), "app:search:{s1}:feedback");
        // The keys of a day share the date's slot.
        let d = "2026-01-02";
        assert_eq!(searches_daily(&p, d), "app:searches:daily:{2026-01-02}");
        assert_eq!(
            supplier_queries(&p, "s1", d),
            "app:supplier:s1:queries:{2026-01-02}"
        );
        assert_eq!(
            products_feedback(&p, "clicked", d),
            "app:products:clicked:{2026-01-02}"
        );
        assert_eq!(
            cache_stats(&Prefix::single_node("app:"), d),
            "app:cache:stats:2026-01-02"
        );
        assert_eq!(
            global_cache(&p, &h),
            format!("app:cache:global:{}", h.to_hex())
        );
    }
}
