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
    k.push_str(&hash.to_hex());
    k
}

/// `cache:global:<hash>`: a global-scope cache entry.
pub fn global_cache(prefix: &str, hash: &KeyHash) -> String {
    let mut k = String::with_capacity(prefix.len() + 77);
    k.push_str(prefix);
    k.push_str("cache:global:");
    k.push_str(&hash.to_hex());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{BodyKey, KeyInput, derive};

    fn hash() -> KeyHash {
        derive(&KeyInput {
            route: "r",
            method: "GET",
            path: "/",
            query: None,
            body: BodyKey::None,
            params: &[],
            vary: &[],
        })
    }

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
    }
}
