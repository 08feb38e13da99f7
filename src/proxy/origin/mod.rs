//! The request flow of an origin route (SPEC section 3b): RFC 9111
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

mod reply;
mod revalidate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, DATE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::time::Instant;

use super::body::{self, Collected, ProxyBody, collect_backend};
use super::forward::{InvalidFraming, UpstreamError, strip_hop_by_hop};
use super::request::Cacheable;
use super::respond::{self, MissDetail, Verdict};
use super::{Flow, Proxy, content_length, mark};
use crate::answer;
use crate::answer::SearchMeta;
use crate::cache::coalesce::{self, FlightGuard, Join, Outcome};
use crate::cache::envelope::{Entry, Variant};
use crate::cache_control::{CacheControl, SURROGATE_CAPABILITY, SURROGATE_CAPABILITY_VALUE};
use crate::config::Scope;
use crate::events::CacheResult;
use crate::http_cache::conditional::{self, Condition};
use crate::http_cache::freshness::{self, Exchange, Reuse, StaleAllowance};
use crate::http_cache::store::{self, OriginRules};
use crate::http_cache::{date, vary};
use crate::key::KeyHash;
use crate::policy::{self, NotStored, StoreScope};
use crate::time::now_ms;
use reply::{answer_stored, strip_targeted};

/// How long past its freshness Redis keeps an entry that has a validator,
/// when `stale_if_error` is shorter: long enough that a URI asked for now
/// and then is revalidated (a 304) instead of fetched in full.
pub const REVALIDATION_KEEP: Duration = Duration::from_secs(3600);

/// A stored variant that fits the request's `Vary` headers.
#[derive(Clone)]
struct Usable {
    entry: Arc<Entry>,
    /// Which of the request's keys it was found under.
    key_index: usize,
}

/// What the lookup found: the usable variant, and for each key the variant
/// its URI entry holds (whose generation a new variant joins).
#[derive(Clone, Default)]
struct Stored {
    usable: Option<Usable>,
    primaries: Vec<Option<Arc<Variant>>>,
}

/// The request facts that outlive the moved request parts.
struct Asked {
    method: Method,
    headers: HeaderMap,
    hash: KeyHash,
    keys: Vec<String>,
    user_key_index: Option<usize>,
}

impl Proxy {
    /// Serves a cacheable request on an origin route.
    pub(super) async fn serve_origin(
        &self,
        flow: &mut Flow<'_>,
        c: Cacheable,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let req_cc = CacheControl::from_request(&c.parts.headers);
        let deadline = Instant::now() + self.config.redis.timeout;
        let stored = self.find_variant(&c, deadline).await;
        if let Some(found) = &stored.usable {
            let entry = &found.entry;
            let resp_cc = CacheControl::for_shared_cache(&entry.headers);
            let age = entry.age(now_ms());
            match freshness::reuse(&resp_cc, &req_cc, entry.fresh_for, age) {
                Reuse::Fresh => {
                    let ttl = entry.remaining(now_ms()).as_secs();
                    let status = respond::hit_status(&c.hash, ttl);
                    let resp = answer_stored(
                        &c.parts.method,
                        &c.parts.headers,
                        entry,
                        Verdict::Hit,
                        status,
                    );
                    return self.log_now(flow, resp, CacheResult::Hit, entry.meta.clone());
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
                    let resp = answer_stored(
                        &c.parts.method,
                        &c.parts.headers,
                        entry,
                        Verdict::Stale,
                        status,
                    );
                    return self.log_now(flow, resp, CacheResult::Stale, entry.meta.clone());
                }
                Reuse::Validate => {}
            }
        }
        if req_cc.only_if_cached {
            let mut resp = respond::json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "not_cached",
                "only-if-cached, and no stored answer fits the request",
            );
            mark(
                &mut resp,
                Verdict::Miss,
                respond::origin_error_status(&c.hash, "only-if-cached"),
            );
            return self.log_now(
                flow,
                resp,
                CacheResult::Miss,
                Arc::new(SearchMeta::default()),
            );
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
                match self.cache.coalescer.join(c.primary_key()) {
                    Join::Leader(g) => guard = Some(g),
                    Join::Waiter(rx) => {
                        let limit = self.upstream.timeout + Duration::from_secs(1);
                        if let Outcome::Stored(entry) = coalesce::wait(rx, limit).await
                            && fits(&entry, &c.parts.headers, c.user_key_index.is_none())
                            && entry.is_fresh(now_ms())
                        {
                            detail.collapsed = true;
                            let status = respond::miss_status(&c.hash, detail);
                            let resp = answer_stored(
                                &c.parts.method,
                                &c.parts.headers,
                                &entry,
                                Verdict::Miss,
                                status,
                            );
                            return self.log_now(flow, resp, CacheResult::Miss, entry.meta.clone());
                        }
                    }
                }
            }
        }
        self.origin_fetch(flow, c, client, stored, guard, detail)
            .await
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
            let vkey = variant_key(key, variant.generation, &selection);
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

    /// Asks the backend (conditionally when a stored entry has validators),
    /// then refreshes, stores or passes on its answer.
    async fn origin_fetch(
        &self,
        flow: &mut Flow<'_>,
        c: Cacheable,
        client: SocketAddr,
        stored: Stored,
        guard: Option<FlightGuard>,
        mut detail: MissDetail,
    ) -> Response<ProxyBody> {
        let finish = |outcome: Outcome| {
            if let Some(g) = guard {
                g.finish(outcome);
            }
        };
        let route = flow.route;
        let Cacheable {
            mut parts,
            body,
            hash,
            keys,
            user_key_index,
            ..
        } = c;
        let asked = Asked {
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            hash,
            keys,
            user_key_index,
        };
        // The cache wants the whole answer: HEAD is fetched as GET, and the
        // client's preconditions are answered here, not by the backend.
        if parts.method == Method::HEAD {
            parts.method = Method::GET;
        }
        let stale = stored.usable.clone();
        let validating = stale
            .as_ref()
            .filter(|s| conditional::has_validators(&s.entry.headers));
        match validating {
            Some(s) => conditional::set_validators(&mut parts.headers, &s.entry.headers),
            None => conditional::strip_preconditions(&mut parts.headers),
        }
        self.upstream.prepare(&mut parts, client);
        parts.headers.append(
            &SURROGATE_CAPABILITY,
            HeaderValue::from_static(SURROGATE_CAPABILITY_VALUE),
        );
        let request_time_ms = now_ms();
        let deadline = Instant::now() + self.upstream.timeout;
        let req = Request::from_parts(parts, ProxyBody::full(body));
        let resp = match self.upstream.send(req, deadline).await {
            Ok(r) => r,
            Err(e) => {
                finish(Outcome::GoDirect);
                return self.origin_failed(flow, &asked, stale.as_ref(), &e);
            }
        };
        let exchange = Exchange {
            request_time_ms,
            response_time_ms: now_ms(),
        };
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        let misframed = rparts.extensions.get::<InvalidFraming>().is_some();
        let idle = self.upstream.idle_timeout;

        if rparts.status == StatusCode::NOT_MODIFIED
            && let Some(s) = validating
        {
            finish(Outcome::GoDirect);
            if misframed {
                // Not a confirmation to build on: what followed it on the
                // connection is unknown.
                let e = UpstreamError::Unavailable("a 304 with invalid framing".into());
                return self.origin_failed(flow, &asked, stale.as_ref(), &e);
            }
            return self.revalidated(flow, &asked, s, &rparts.headers, exchange);
        }
        if rparts.status.is_server_error()
            && let Some(resp) =
                self.serve_on_error(flow, &asked, stale.as_ref(), Some(rparts.status))
        {
            finish(Outcome::GoDirect);
            return resp;
        }

        let cc = CacheControl::for_shared_cache(&rparts.headers);
        let scope = match (route.scope, asked.user_key_index.is_some()) {
            (Scope::User, true) => StoreScope::User,
            (Scope::Auto, true) if !cc.public => StoreScope::User,
            _ => StoreScope::Global,
        };
        let rules = OriginRules {
            scope,
            heuristic: route.heuristic,
        };
        let max_object = self.config.cache.max_object_bytes;
        let decision = if misframed {
            // Never stored (SPEC section 7), and no hit-for-pass: the next
            // answer may well be framed right.
            Err(None)
        } else {
            store::decide(
                rules,
                rparts.status,
                &asked.headers,
                &rparts.headers,
                exchange,
            )
            .and_then(|ok| match content_length(&rparts.headers) {
                Some(len) if len > max_object as u64 => Err(NotStored::TooLarge),
                _ => Ok(ok),
            })
            .map_err(Some)
        };
        let storable = match decision {
            Ok(s) => s,
            Err(reason) => {
                if let Some(reason) = reason {
                    self.not_stored(&asked.keys[0], reason);
                }
                finish(Outcome::GoDirect);
                strip_targeted(&mut rparts.headers);
                let body = ProxyBody::from_backend(rbody, idle);
                let status = respond::miss_status(&asked.hash, detail);
                return self.stream_miss(flow, rparts, body, status);
            }
        };

        let body = match collect_backend(rbody, max_object, idle).await {
            Ok(Collected::Complete(b)) => b,
            Ok(Collected::Overflow(prefix, rest)) => {
                finish(Outcome::GoDirect);
                strip_targeted(&mut rparts.headers);
                let body = ProxyBody::resume(prefix, rest, Some(idle));
                let status = respond::miss_status(&asked.hash, detail);
                return self.stream_miss(flow, rparts, body, status);
            }
            Err(e) => {
                finish(Outcome::GoDirect);
                let err = match e {
                    body::CollectError::Timeout => UpstreamError::Stalled(idle),
                    body::CollectError::Body(_) => UpstreamError::Unavailable(e.to_string()),
                };
                return self.origin_failed(flow, &asked, stale.as_ref(), &err);
            }
        };

        let meta = if route.log || !route.bypass_intents.is_empty() {
            Arc::new(answer::read(route, &body))
        } else {
            Arc::new(SearchMeta::default())
        };
        let full = |mut rparts: http::response::Parts, detail| {
            strip_targeted(&mut rparts.headers);
            // hyper writes the length of the body actually sent.
            rparts.headers.remove(http::header::CONTENT_LENGTH);
            let mut resp = Response::from_parts(rparts, ProxyBody::full(body.clone()));
            mark(
                &mut resp,
                Verdict::Miss,
                respond::miss_status(&asked.hash, detail),
            );
            resp
        };
        if let Err(reason) = policy::decide_body(
            meta.intent.as_deref(),
            &route.bypass_intents,
            body.len(),
            max_object,
        ) {
            self.not_stored(&asked.keys[0], reason);
            finish(Outcome::GoDirect);
            return self.log_now(flow, full(rparts, detail), CacheResult::Miss, meta);
        }

        let key_index = match (scope, asked.user_key_index) {
            (StoreScope::User, Some(i)) => i,
            // The global key is always the last one looked up.
            _ => asked.keys.len() - 1,
        };
        let selection = vary::select(&storable.vary, &asked.headers);
        let generation = stored
            .primaries
            .get(key_index)
            .and_then(Option::as_ref)
            .filter(|v| same_names(&v.selection, &selection))
            .map_or_else(new_generation, |v| v.generation);
        let mut headers = rparts.headers.clone();
        headers.remove(http::header::AGE);
        // Fields a qualified no-cache names are not reused without
        // revalidation: leafcache keeps them out of the stored copy.
        for field in &cc.no_cache_fields {
            headers.remove(field.as_str());
        }
        if !headers.contains_key(DATE) {
            // RFC 9110 section 6.6.1: a cache adds the Date it received it at.
            let now = date::format((exchange.response_time_ms / 1000) as i64);
            if let Ok(v) = HeaderValue::from_str(&now) {
                headers.insert(DATE, v.clone());
                rparts.headers.insert(DATE, v);
            }
        }
        let entry = Arc::new(Entry {
            status: rparts.status,
            headers,
            body: body.clone(),
            stored_at_ms: exchange.response_time_ms,
            fresh_for: storable.lifetime,
            meta: meta.clone(),
            initial_age: storable.initial_age,
            variant: Some(Arc::new(Variant {
                generation,
                selection,
            })),
        });
        self.store_variant(&asked.keys[key_index], &entry);
        finish(Outcome::Stored(entry.clone()));
        detail.stored = true;
        let resp = full(rparts, detail);
        let resp = match conditional::evaluate(&asked.method, &asked.headers, &entry.headers) {
            Condition::NotModified => respond::into_not_modified(resp),
            _ => resp,
        };
        self.log_now(flow, resp, CacheResult::Miss, meta)
    }

    /// Stores a variant under its URI key and, when it varies, its variant key.
    fn store_variant(&self, key: &str, entry: &Arc<Entry>) {
        let mut keys = vec![key.to_owned()];
        if let Some(v) = &entry.variant
            && !v.selection.is_empty()
        {
            keys.push(variant_key(key, v.generation, &v.selection));
        }
        let keep = if conditional::has_validators(&entry.headers) {
            self.config.cache.stale_if_error.max(REVALIDATION_KEEP)
        } else {
            self.config.cache.stale_if_error
        };
        self.cache.store_kept(&keys, entry.clone(), keep);
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

fn variant_key(key: &str, generation: u64, selection: &vary::Selection) -> String {
    format!(
        "{key}:v:{generation:016x}:{}",
        vary::selection_id(selection)
    )
}

fn same_names(a: &vary::Selection, b: &vary::Selection) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((x, _), (y, _))| x == y)
}

fn new_generation() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}
