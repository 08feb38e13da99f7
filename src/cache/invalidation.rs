//! Invalidation notices: what one proxy tells the others, on the
//! `leafcache:invalidate` channel (under `key_prefix`), when it drops cache
//! entries. The message is the purge request itself, as JSON
//! (`{"user_id": "u"}`, `{"hash": "…"}`, `{"user_id": "u", "hash": "…"}`,
//! `{"all_global": true}`, `{"product_ids": [...]}`, `{"supplier_ids":
//! [...]}`, each perhaps with `"soft": true`); each proxy drops the L1
//! copies it names. An
//! admin purge, and an unsafe request on an origin route, send them alike.

use serde::{Deserialize, Serialize};

use crate::redis::keys::{self, Prefix};

/// The wire form: the body of `POST /v1/cache/purge` and the invalidation
/// message.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PurgeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_global: bool,
    /// Answers that show any of these products (docs/contract.md section 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_ids: Option<Vec<String>>,
    /// Answers that show a product of any of these suppliers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier_ids: Option<Vec<String>>,
    /// Mark the entries stale instead of removing them; a proxy drops its
    /// L1 copies either way (a purge needs Redis, which keeps the stale one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft: bool,
}

/// The channel and message that announce `request` to every proxy.
pub fn notice(prefix: &Prefix, request: &PurgeRequest) -> (String, String) {
    let message = serde_json::to_string(request).unwrap_or_default();
    (keys::invalidate_channel(prefix), message)
}
