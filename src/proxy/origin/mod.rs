//! The request flow of an origin route (docs/contract.md section 3b): RFC 9111
//! semantics of the backend's own headers.
//!
//! The decisions are the pure functions of [`crate::http_cache`]; this module
//! strings them together with the cache tiers and the backend:
//!
//! 1. find the stored variant of the URI that matches the request's `Vary`
//!    headers ([`Proxy::find_variant`]);
//! 2. ask [`freshness::reuse`] whether it serves as is, stale, or only after
//!    validation; answer the client's own preconditions from it;
//! 3. otherwise ask the backend, conditionally when the entry has
//!    validators: a `304` refreshes the entry (`X-Cache: REVALIDATED`), a
//!    failure falls back on the entry where the answer allows it (504 where
//!    it must be revalidated), and a new answer is stored per
//!    [`store::decide`].
//!
//! Variants: every variant is stored under its URI's key *and* under a
//! variant key (`<key>:v:<generation>:<selection id>`). The URI key holds the
//! latest variant, whose `Vary` names tell which variant key another request
//! needs. A new generation starts whenever the URI key is gone (expired,
//! purged or invalidated), so variants of an invalidated URI are never
//! reached again.
//!
//! - [`revalidate`]: the 304 update, stale-if-error and the background
//!   refresh of stale-while-revalidate.
//! - [`reply`]: how a stored answer goes out (Age, 304, 206).

pub(super) mod reply;
mod revalidate;
pub(super) mod variant;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use tokio::time::Instant;

use super::error::ProxyError;
use super::lookup::Flight;
use super::request::Cacheable;
use super::request::Usable;
use super::respond::{self, MissDetail};
use super::{Flow, Proxy, Reply, mark};
use crate::cache::envelope::{Entry, Variant};
use crate::cache_control::CacheControl;
use crate::http_cache::conditional;
use crate::http_cache::freshness::{self, Reuse, StaleAllowance};
use crate::http_cache::store;
use crate::http_cache::vary;
use crate::redis::keys;
use crate::served::Served;
use crate::time::now_ms;
use reply::answer_stored;

/// How long past its freshness Redis keeps an entry that has a validator,
/// when `stale_if_error` is shorter: long enough that a URI asked for now
/// and then is revalidated (a 304) instead of fetched in full.
pub const REVALIDATION_KEEP: Duration = Duration::from_secs(3600);

/// What the lookup found: the usable variant, and for each key the variant
/// its URI entry holds (whose generation a new variant joins).
#[derive(Clone, Default)]
struct Stored {
    usable: Option<Usable>,
    primaries: Vec<Option<Arc<Variant>>>,
}

impl Proxy {
    /// Serves a cacheable request on an origin route.
    pub(super) async fn serve_origin(
        &self,
        flow: &mut Flow<'_>,
        c: Cacheable,
        client: SocketAddr,
    ) -> Reply {
        let req_cc = CacheControl::from_request(&c.parts.headers);
        let deadline = Instant::now() + self.config.redis.timeout;
        let stored = self.find_variant(&c, deadline).await;
        if let Some(found) = &stored.usable {
            let entry = &found.entry;
            let resp_cc = CacheControl::for_shared_cache(&entry.headers);
            let age = entry.age(now_ms());
            let reused = match freshness::reuse(&resp_cc, &req_cc, entry.fresh_for, age) {
                Reuse::Fresh => {
                    let ttl = entry.remaining(now_ms()).as_secs();
                    Some((Served::Hit, respond::hit_status(&c.hash, ttl)))
                }
                Reuse::Stale(allowance) => {
                    let detail = match allowance {
                        StaleAllowance::MaxStale => "max-stale",
                        StaleAllowance::WhileRevalidate => {
                            self.revalidate_in_background(flow.route_index, &c, &stored, client);
                            "stale-while-revalidate"
                        }
                    };
                    let stale_for = age.saturating_sub(entry.fresh_for).as_secs();
                    let status = respond::stale_hit_status(&c.hash, stale_for, detail);
                    Some((Served::Stale, status))
                }
                Reuse::Validate => None,
            };
            if let Some((served, status)) = reused {
                let (method, headers) = (&c.parts.method, &c.parts.headers);
                let resp = answer_stored(method, headers, entry, served, status);
                return self.log_now(flow, resp, served, entry.meta.clone());
            }
        }
        if req_cc.only_if_cached {
            let mut resp = ProxyError::NotCached.response();
            let status = respond::origin_error_status(&c.hash, "only-if-cached");
            mark(&mut resp, Served::Miss, status);
            return self.log_now(flow, resp, Served::Miss, Arc::default());
        }
        let mut detail = MissDetail {
            refresh: req_cc.no_cache,
            ..MissDetail::default()
        };
        // Plain misses coalesce; revalidations of a stored entry do not.
        let mut guard = None;
        if stored.usable.is_none() {
            if self.cache.is_pass(c.primary_key()) {
                detail.pass = true;
            } else {
                match self.join_flight(c.primary_key()).await {
                    Flight::Lead(g) => guard = Some(g),
                    Flight::Stored(entry)
                        if fits(&entry, &c.parts.headers, c.user_key_index.is_none())
                            && entry.is_fresh(now_ms()) =>
                    {
                        detail.collapsed = true;
                        let status = respond::miss_status(&c.hash, detail);
                        let (method, headers) = (&c.parts.method, &c.parts.headers);
                        let resp = answer_stored(method, headers, &entry, Served::Miss, status);
                        return self.log_now(flow, resp, Served::Miss, entry.meta.clone());
                    }
                    Flight::Stored(_) | Flight::Retry | Flight::Alone => {}
                }
            }
        }
        let Stored { usable, primaries } = stored;
        let (parts, body, miss) = c.into_miss(Some(primaries), usable, guard, detail);
        self.fetch(flow, parts, body, client, miss).await
    }

    /// Looks up each of the request's keys: the URI entry, then, when its
    /// `Vary` selection does not fit, the variant key the request's own
    /// values name.
    async fn find_variant(&self, c: &Cacheable, deadline: Instant) -> Stored {
        let mut stored = Stored {
            usable: None,
            primaries: vec![None; c.keys.len()],
        };
        for (i, key) in c.keys.iter().enumerate() {
            let shared = Some(i) != c.user_key_index;
            let Some(primary) = self.cache.lookup_any(key, deadline).await else {
                continue;
            };
            // A "route" entry (the route changed its freshness): not ours.
            let Some(variant) = primary.variant.clone() else {
                continue;
            };
            stored.primaries[i] = Some(variant.clone());
            if fits(&primary, &c.parts.headers, shared) {
                stored.usable = Some(Usable {
                    entry: primary,
                    key_index: i,
                });
                return stored;
            }
            if variant.selection.is_empty() {
                continue;
            }
            let names: Vec<_> = variant.selection.iter().map(|(n, _)| n.clone()).collect();
            let selection = vary::select(&names, &c.parts.headers);
            let vkey =
                keys::variant_cache(key, variant.generation, &vary::selection_id(&selection));
            if let Some(entry) = self.cache.lookup_any(&vkey, deadline).await
                && entry
                    .variant
                    .as_ref()
                    .is_some_and(|v| v.generation == variant.generation)
                && fits(&entry, &c.parts.headers, shared)
            {
                stored.usable = Some(Usable {
                    entry,
                    key_index: i,
                });
                return stored;
            }
        }
        stored
    }

    /// Stores a variant under its URI key and, when it varies, its variant key.
    pub(in crate::proxy) fn store_variant(&self, key: &str, entry: &Arc<Entry>) {
        let mut names = vec![key.to_owned()];
        if let Some(v) = &entry.variant
            && !v.selection.is_empty()
        {
            names.push(keys::variant_cache(
                key,
                v.generation,
                &vary::selection_id(&v.selection),
            ));
        }
        let keep = if conditional::has_validators(&entry.headers) {
            self.config.cache.stale_if_error.max(REVALIDATION_KEEP)
        } else {
            self.config.cache.stale_if_error
        };
        self.cache.store_kept(&names, entry.clone(), keep);
    }
}

/// Whether a stored variant may serve a request: its `Vary` selection
/// matches, and in a shared scope a request with `Authorization` gets only
/// answers that say they may be shared (RFC 9111 section 3.5).
fn fits(entry: &Entry, request: &HeaderMap, shared: bool) -> bool {
    let Some(variant) = &entry.variant else {
        return false;
    };
    if !vary::matches(&variant.selection, request) {
        return false;
    }
    !(shared
        && request.contains_key(AUTHORIZATION)
        && !store::authorized_may_share(&CacheControl::for_shared_cache(&entry.headers)))
}
