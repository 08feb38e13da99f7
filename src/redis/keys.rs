//! Every Redis key name leafcache reads or writes (SPEC section 4), in one
//! place, so the layout can be checked against a single file. Each function
//! takes the configured `key_prefix`.

use crate::key::KeyHash;

/// `user:<user_id>:cache:<hash>`: a user-scope cache entry.
pub fn user_cache(prefix: &str, user_id: &str, hash: &KeyHash) -> String {
    let mut k = String::with_capacity(prefix.len() + user_id.len() + 77);
    k.push_str(prefix);
    k.push_str("user:");
    k.push_str(user_id);
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

/// `user:<user_id>:cache:`: what every cache key of a user starts with
/// (a purge takes the keys of this head followed by exactly one hash).
pub fn user_cache_head(prefix: &str, user_id: &str) -> String {
    format!("{prefix}user:{user_id}:cache:")
}

/// `cache:global:`: what every global cache key starts with.
pub fn global_cache_head(prefix: &str) -> String {
    format!("{prefix}cache:global:")
}

/// `leafcache:invalidate`: the pub/sub channel for L1 invalidation.
pub fn invalidate_channel(prefix: &str) -> String {
    format!("{prefix}leafcache:invalidate")
}

/// `search:<search_id>`: the search record (hash).
pub fn search(prefix: &str, search_id: &str) -> String {
    format!("{prefix}search:{search_id}")
}

/// `search:<search_id>:feedback`: what the user did with the results (list).
pub fn search_feedback(prefix: &str, search_id: &str) -> String {
    format!("{prefix}search:{search_id}:feedback")
}

/// `searches:daily:<date>`: search ids of a day by time (zset).
pub fn searches_daily(prefix: &str, date: &str) -> String {
    format!("{prefix}searches:daily:{date}")
}

/// `searches:hourly:<date>`: `00`..`23` → count (hash).
pub fn searches_hourly(prefix: &str, date: &str) -> String {
    format!("{prefix}searches:hourly:{date}")
}

/// `user:<user_id>:searches`: the user's recent searches, newest first (list).
pub fn user_searches(prefix: &str, user_id: &str) -> String {
    format!("{prefix}user:{user_id}:searches")
}

/// `user:<user_id>:profile`: first/last seen, counts (hash; shared with the
/// application, which owns every other field).
pub fn user_profile(prefix: &str, user_id: &str) -> String {
    format!("{prefix}user:{user_id}:profile")
}

/// `intent:stats:<date>`: intent → count (hash).
pub fn intent_stats(prefix: &str, date: &str) -> String {
    format!("{prefix}intent:stats:{date}")
}

/// `products:popular:<date>`: product → times returned (zset).
pub fn products_popular(prefix: &str, date: &str) -> String {
    format!("{prefix}products:popular:{date}")
}

/// `supplier:<id>:queries:<date>`: normalized query → count (zset).
pub fn supplier_queries(prefix: &str, supplier: &str, date: &str) -> String {
    format!("{prefix}supplier:{supplier}:queries:{date}")
}

/// `queries:popular:<date>`: normalized query → count (zset).
pub fn queries_popular(prefix: &str, date: &str) -> String {
    format!("{prefix}queries:popular:{date}")
}

/// `queries:zero:<date>`: normalized queries that found nothing (zset).
pub fn queries_zero(prefix: &str, date: &str) -> String {
    format!("{prefix}queries:zero:{date}")
}

/// `cache:stats:<date>`: hit, miss, bypass, stale → count (hash).
pub fn cache_stats(prefix: &str, date: &str) -> String {
    format!("{prefix}cache:stats:{date}")
}

/// `products:clicked:<date>` / `products:ordered:<date>` /
/// `products:purchased:<date>`: product → count (zset), by feedback event.
pub fn products_feedback(prefix: &str, event: &str, date: &str) -> String {
    format!("{prefix}products:{event}:{date}")
}

/// `supplier:<id>:clicks:<date>`: product → clicks (zset).
pub fn supplier_clicks(prefix: &str, supplier: &str, date: &str) -> String {
    format!("{prefix}supplier:{supplier}:clicks:{date}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::sample_hash as hash;

    #[test]
    fn cache_keys_follow_the_spec_layout() {
        let h = hash();
        assert_eq!(
            user_cache("", "u1", &h),
            format!("user:u1:cache:{}", h.to_hex())
        );
        assert_eq!(global_cache("", &h), format!("cache:global:{}", h.to_hex()));
        assert_eq!(
            global_cache("app:", &h),
            format!("app:cache:global:{}", h.to_hex())
        );
        assert_eq!(
            user_cache_head("app:", "u1") + &h.to_hex(),
            user_cache("app:", "u1", &h)
        );
        assert_eq!(
            global_cache_head("app:") + &h.to_hex(),
            global_cache("app:", &h)
        );
    }
}
