//! The stale side of an origin route: a `304` that refreshes an entry, a
//! failing backend that an entry may stand in for, and the background
//! refresh of `stale-while-revalidate`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};

use super::reply::answer_stored;
use super::{Asked, Stored, Usable};
use crate::answer::SearchMeta;
use crate::cache::coalesce::Join;
use crate::cache::envelope::Entry;
use crate::cache_control::CacheControl;
use crate::events::CacheResult;
use crate::http_cache::conditional;
use crate::http_cache::freshness::{self, Exchange};
use crate::proxy::body::ProxyBody;
use crate::proxy::forward::UpstreamError;
use crate::proxy::request::Cacheable;
use crate::proxy::respond::{self, MissDetail, Verdict};
use crate::proxy::{Flow, Proxy, mark};
use crate::time::now_ms;

impl Proxy {
    /// A `304` confirmed the stored entry: update its headers and freshness
    /// (RFC 9111 section 4.3.4), store it again, serve it.
    pub(super) fn revalidated(
        &self,
        flow: &mut Flow<'_>,
        asked: &Asked,
        stale: &Usable,
        not_modified: &HeaderMap,
        exchange: Exchange,
    ) -> Response<ProxyBody> {
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
            self.store_variant(&asked.keys[stale.key_index], &entry);
        }
        let ttl = entry.remaining(now_ms()).as_secs();
        let status = respond::revalidated_status(&asked.hash, ttl, may_store);
        let resp = answer_stored(
            &asked.method,
            &asked.headers,
            &entry,
            Verdict::Revalidated,
            status,
        );
        self.log_now(flow, resp, CacheResult::Hit, entry.meta.clone())
    }

    /// The backend gave no answer: serve the stored entry when the answer
    /// allows serving it stale that long, answer 504 when it must be
    /// revalidated, else the 502/504 of SPEC step 11.
    pub(super) fn origin_failed(
        &self,
        flow: &mut Flow<'_>,
        asked: &Asked,
        stale: Option<&Usable>,
        error: &UpstreamError,
    ) -> Response<ProxyBody> {
        if let Some(resp) = self.serve_on_error(flow, asked, stale, None) {
            return resp;
        }
        if stale.is_none() {
            return self.backend_failed(flow, error);
        }
        let mut resp = respond::json_error(
            StatusCode::GATEWAY_TIMEOUT,
            "revalidation_failed",
            "the stored answer must be revalidated and the backend cannot be reached",
        );
        mark(
            &mut resp,
            Verdict::Miss,
            respond::origin_error_status(&asked.hash, "must-revalidate"),
        );
        let meta = Arc::new(SearchMeta::default());
        self.log_now(flow, resp, CacheResult::Miss, meta)
    }

    /// stale-if-error on an origin route: the entry stands in for a failing
    /// backend within [`freshness::error_grace`].
    pub(super) fn serve_on_error(
        &self,
        flow: &mut Flow<'_>,
        asked: &Asked,
        stale: Option<&Usable>,
        backend_status: Option<StatusCode>,
    ) -> Option<Response<ProxyBody>> {
        let entry = &stale?.entry;
        let cc = CacheControl::for_shared_cache(&entry.headers);
        let age = entry.age(now_ms());
        let stale_for = age.saturating_sub(entry.fresh_for);
        let grace = freshness::error_grace(&cc, self.config.cache.stale_if_error);
        if cc.forbids_stale() || stale_for > grace {
            return None;
        }
        let status = respond::stale_status(&asked.hash, stale_for.as_secs(), backend_status);
        let resp = answer_stored(&asked.method, &asked.headers, entry, Verdict::Stale, status);
        Some(self.log_now(flow, resp, CacheResult::Stale, entry.meta.clone()))
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
        let Some(proxy) = self.this.upgrade() else {
            return;
        };
        let Join::Leader(guard) = self.cache.coalescer.join(c.primary_key()) else {
            return; // someone is already asking the backend for this key
        };
        let mut parts = c.parts.clone();
        // The background request must not be answered from the cache.
        parts.headers.remove(http::header::CACHE_CONTROL);
        let background = Cacheable {
            parts,
            body: c.body.clone(),
            hash: c.hash,
            keys: c.keys.clone(),
            user_key_index: c.user_key_index,
            refresh: false,
            draft: None,
            user_id: c.user_id.clone(),
        };
        let stored = stored.clone();
        tokio::spawn(async move {
            let Some(route) = proxy.config.routes.get(route_index) else {
                return;
            };
            let mut flow = Flow {
                route,
                route_index,
                draft: None,
            };
            let detail = MissDetail::default();
            let resp = proxy
                .origin_fetch(&mut flow, background, client, stored, Some(guard), detail)
                .await;
            // A streamed (not stored) answer has no reader: drop it.
            drop(resp);
        });
    }
}
