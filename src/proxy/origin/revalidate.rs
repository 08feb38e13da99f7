//! The stale side of an origin route: a `304` that refreshes an entry, and
//! the background refresh of `stale-while-revalidate`. (What may stand in
//! for a failing backend is decided in the miss pipeline's `stand_in`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::Stored;
use super::reply::answer_stored;
use crate::cache::coalesce::Join;
use crate::cache::envelope::Entry;
use crate::cache_control::CacheControl;
use crate::http_cache::conditional;
use crate::http_cache::freshness::{self, Exchange};
use crate::proxy::miss::{Miss, OriginAsk};
use crate::proxy::request::Cacheable;
use crate::proxy::request::Usable;
use crate::proxy::respond;
use crate::proxy::{Flow, Proxy, Reply};
use crate::served::Served;
use crate::time::now_ms;

impl Proxy {
    /// A `304` confirmed the stored entry: update its headers and freshness
    /// (RFC 9111 section 4.3.4), store it again, serve it.
    pub(in crate::proxy) fn revalidated(
        &self,
        flow: &mut Flow<'_>,
        miss: &Miss,
        ask: &OriginAsk,
        stale: &Usable,
        not_modified: &HeaderMap,
        exchange: Exchange,
    ) -> Reply {
        let old = &stale.entry;
        let headers = conditional::merge_304(&old.headers, not_modified);
        let cc = CacheControl::for_shared_cache(&headers);
        let lifetime = freshness::lifetime(
            &cc,
            &headers,
            old.status,
            exchange.response_time_ms,
            flow.route.heuristic,
        )
        .duration()
        .unwrap_or(Duration::ZERO);
        let entry = Arc::new(Entry {
            status: old.status,
            headers,
            body: old.body.clone(),
            stored_at_ms: exchange.response_time_ms,
            fresh_for: lifetime,
            meta: old.meta.clone(),
            initial_age: freshness::corrected_initial_age(not_modified, exchange),
            variant: old.variant.clone(),
        });
        let may_store = !cc.no_store || cc.must_understand;
        if may_store {
            // The URI key then holds this variant: it is the latest one.
            self.store_variant(&miss.keys[stale.key_index], &entry);
        }
        let ttl = entry.remaining(now_ms()).as_secs();
        let status = respond::revalidated_status(&miss.hash, ttl, may_store);
        let resp = answer_stored(
            &ask.method,
            &ask.headers,
            &entry,
            Served::Revalidated,
            status,
        );
        self.log_now(flow, resp, Served::Revalidated, entry.meta.clone())
    }

    /// stale-while-revalidate: the client has its stale answer; one request
    /// per key refreshes the entry in the background.
    pub(super) fn revalidate_in_background(
        &self,
        route_index: usize,
        c: &Cacheable,
        stored: &Stored,
        client: SocketAddr,
    ) {
        // The refetch asks with this request's text: another spelling's
        // answer would not be stored anyway (docs/keys-and-security.md, "Security model").
        if c.spelling != crate::policy::Spelling::Normal {
            return;
        }
        let Some(proxy) = self.this.upgrade() else {
            return;
        };
        let Join::Leader(guard) = self.cache.coalescer.join(c.primary_key()) else {
            return; // someone is already asking the backend for this key
        };
        let Stored { usable, primaries } = stored.clone();
        proxy.fetch_in_background(
            route_index,
            c.for_background(),
            Some(primaries),
            usable,
            guard,
            client,
        );
    }
}
