//! The miss pipeline (docs/contract.md section 3, steps 10 to 13; section 3b): what the
//! cache could not answer goes to the backend, and the answer is judged,
//! collected, read and stored, in phases that route and origin freshness
//! share:
//!
//! 1. [`Proxy::ask_backend`]: the request as the cache wants it (HEAD as
//!    GET, the stored copy's validators), sent.
//! 2. a `304` to that validation refreshes the stored copy
//!    ([`Proxy::refreshed`]).
//! 3. [`Proxy::judge`]: storable or not, from the status and headers (the
//!    pure decisions of [`crate::policy`] and [`crate::http_cache::store`]).
//! 4. [`collect_for_store`]: the body read whole, up to `max_object_bytes`.
//! 5. the answer's search facts, read from the decoded body
//!    ([`crate::answer::read`]), and the body decision
//!    ([`policy::decide_body`]), which fails closed on what it cannot read.
//! 6. [`Proxy::store_answer`]: the entry, under the key its scope names.
//!
//! What differs between the two freshness models sits behind [`Rules`]: how
//! the request is made conditional, how the answer is judged, what the entry
//! holds, and what may stand in for a failing backend ([`Proxy::stand_in`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_LENGTH, DATE, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{self, Collected, ProxyBody, collect_backend};
use super::error::ProxyError;
use super::forward::{InvalidFraming, UpstreamError, strip_hop_by_hop};
use super::origin::{reply::strip_targeted, variant::variant_generation};
use super::request::{Cacheable, Usable};
use super::respond::{self, MissDetail};
use super::{Flow, Proxy, Reply, mark};
use crate::answer::SearchMeta;
use crate::cache::coalesce::{FlightGuard, Outcome};
use crate::cache::envelope::{Entry, Variant};
use crate::cache_control::{CacheControl, SURROGATE_CAPABILITY, SURROGATE_CAPABILITY_VALUE};
use crate::config::RouteConfig;
use crate::http_cache::freshness::Exchange;
use crate::http_cache::store::{self, OriginRules};
use crate::http_cache::{conditional, date, vary};
use crate::key::KeyHash;
use crate::policy::{self, NotStored, Spelling, StoreRules, StoreScope};
use crate::served::Served;
use crate::time::now_ms;

/// A request on its way to the backend: what the later phases need of it
/// once its parts have gone.
pub(super) struct Miss {
    pub hash: KeyHash,
    pub keys: Vec<String>,
    pub user_key_index: Option<usize>,
    /// The stored copy a failure may fall back on, and a `304` refreshes.
    pub stale: Option<Usable>,
    pub detail: MissDetail,
    /// Held when this request leads the key's coalesced request: the
    /// waiters learn what came of it.
    pub guard: Option<FlightGuard>,
    pub rules: Rules,
    /// The one content coding the backend was asked for (the normalized
    /// `Accept-Encoding`): the only one an entry may be stored in.
    pub asked_coding: Option<HeaderValue>,
    /// How the request spelled its search text: another spelling than the
    /// normal form never fills, passes or revalidates a shared key.
    pub spelling: Spelling,
}

/// The seam between the two freshness models.
pub(super) enum Rules {
    /// `freshness = "route"`: the route's ttl, shortened by the backend's
    /// `max-age` (docs/contract.md section 3).
    Route,
    /// `freshness = "origin"`: RFC 9111 (docs/contract.md section 3b).
    Origin(OriginAsk),
}

/// What an origin route judges the answer by after the request has gone.
pub(super) struct OriginAsk {
    /// The client's method and headers: the answer's `Vary` selects by
    /// them, and the client's own preconditions are answered from them.
    pub method: Method,
    pub headers: HeaderMap,
    /// For each key, the variant its URI entry holds (whose generation a
    /// new variant joins).
    pub primaries: Vec<Option<Arc<Variant>>>,
}

/// Where and for how long an answer may be kept.
struct Judged {
    scope: StoreScope,
    fresh_for: Duration,
    initial_age: Duration,
    /// Origin routes: the answer's `Vary` names.
    vary: Vec<http::HeaderName>,
    /// Origin routes: the answer's `Cache-Control`, whose qualified
    /// `no-cache` fields stay out of the stored copy.
    cc: Option<CacheControl>,
}

/// The backend's answer, headers read.
struct Answer {
    parts: http::response::Parts,
    body: Incoming,
    /// Its framing was invalid: never stored, never built on.
    misframed: bool,
    exchange: Exchange,
}

impl Cacheable {
    /// The request parts and body for the backend, and what the miss
    /// pipeline keeps of the rest. `primaries` is `Some` on origin routes:
    /// the variants the URI entries hold.
    pub(super) fn into_miss(
        self,
        primaries: Option<Vec<Option<Arc<Variant>>>>,
        stale: Option<Usable>,
        guard: Option<FlightGuard>,
        detail: MissDetail,
    ) -> (Parts, Bytes, Miss) {
        let rules = match primaries {
            None => Rules::Route,
            Some(primaries) => Rules::Origin(OriginAsk {
                method: self.parts.method.clone(),
                headers: self.parts.headers.clone(),
                primaries,
            }),
        };
        let asked_coding = self.parts.headers.get(ACCEPT_ENCODING).cloned();
        let miss = Miss {
            asked_coding,
            hash: self.hash,
            keys: self.keys,
            user_key_index: self.user_key_index,
            stale,
            detail,
            guard,
            rules,
            spelling: self.spelling,
        };
        (self.parts, self.body, miss)
    }
}

impl Miss {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(guard) = self.guard.take() {
            guard.finish(outcome);
        }
    }

    pub(super) fn origin(&self) -> Option<&OriginAsk> {
        match &self.rules {
            Rules::Route => None,
            Rules::Origin(ask) => Some(ask),
        }
    }

    /// The key an answer of `scope` is stored under: the user's own, or
    /// the global key, always the last one looked up.
    fn store_key_index(&self, scope: StoreScope) -> usize {
        match (scope, self.user_key_index) {
            (StoreScope::User, Some(i)) => i,
            _ => self.keys.len().saturating_sub(1),
        }
    }

    /// Whether this request's own answer may be kept under the key an
    /// answer of `scope` goes to ([`policy::may_store_spelling`]).
    /// Whether this request's own answer may fill, pass or revalidate the
    /// key at `key_index`: a shared key only by the normal spelling of the
    /// search text (docs/keys-and-security.md, "Security model").
    fn may_fill(&self, key_index: usize) -> bool {
        let shared = Some(key_index) != self.user_key_index;
        policy::may_store_spelling(self.spelling, shared)
    }

    /// An answer the client gets whole, marked a miss.
    fn full_response(&self, mut parts: http::response::Parts, body: Bytes) -> Response<ProxyBody> {
        if self.origin().is_some() {
            strip_targeted(&mut parts.headers);
        }
        // hyper writes the length of the body actually sent, which the
        // backend's header cannot contradict.
        parts.headers.remove(CONTENT_LENGTH);
        let mut resp = Response::from_parts(parts, ProxyBody::full(body));
        mark(
            &mut resp,
            Served::Miss,
            respond::miss_status(&self.hash, self.detail),
        );
        resp
    }
}

impl Proxy {
    /// Asks the backend, judges, collects, reads and stores its answer, and
    /// tells any waiters what came of it.
    pub(super) async fn fetch(
        &self,
        flow: &mut Flow<'_>,
        parts: http::request::Parts,
        body: Bytes,
        client: SocketAddr,
        mut miss: Miss,
    ) -> Reply {
        let validating = self.validating(&miss, &parts.headers);
        let answer = match self
            .ask_backend(&miss, parts, body, client, validating.as_ref())
            .await
        {
            Ok(a) => a,
            Err(e) => {
                miss.finish(Outcome::GoDirect);
                return self.failed(flow, &miss, e);
            }
        };
        if answer.parts.status == StatusCode::NOT_MODIFIED
            && let Some(stale) = validating
        {
            if answer.misframed {
                // Not a confirmation to build on: what followed it on the
                // connection is unknown.
                miss.finish(Outcome::GoDirect);
                let e = UpstreamError::Unavailable("a 304 with invalid framing".into());
                return self.failed(flow, &miss, e);
            }
            return self.refreshed(flow, miss, stale, &answer.parts.headers, answer.exchange);
        }
        let status = answer.parts.status;
        if status.is_server_error()
            && let Some(reply) = self.stand_in(flow, &miss, Some(status))
        {
            miss.finish(Outcome::GoDirect);
            return reply;
        }
        let judged = if answer.misframed {
            // Never stored (docs/contract.md section 7), and no hit-for-pass: the next
            // answer may well be framed right.
            Err(None)
        } else {
            self.judge(flow, &miss, &answer).map_err(Some)
        };
        // Another spelling's answer streams on, neither stored nor marking
        // the shared key (docs/keys-and-security.md, "Security model").
        let judged = judged.and_then(|j| {
            if miss.may_fill(miss.store_key_index(j.scope)) {
                Ok(j)
            } else {
                Err(None)
            }
        });
        match judged {
            Ok(judged) => self.collect_and_store(flow, miss, answer, judged).await,
            Err(reason) => {
                if let Some(reason) = reason {
                    self.not_stored(&miss, reason);
                }
                miss.finish(Outcome::GoDirect);
                let body = ProxyBody::from_backend(answer.body, self.upstream.idle_timeout);
                self.pass_on(flow, &miss, answer.parts, body)
            }
        }
    }

    /// Phases 4 to 6 of a storable answer: collect, read, store.
    async fn collect_and_store(
        &self,
        flow: &mut Flow<'_>,
        mut miss: Miss,
        answer: Answer,
        judged: Judged,
    ) -> Reply {
        let idle = self.upstream.idle_timeout;
        let max_object = self.config.cache.max_object_bytes;
        let Answer {
            mut parts,
            body,
            exchange,
            ..
        } = answer;
        let body = match collect_for_store(body, max_object, idle).await {
            Ok(Collected::Complete(b)) => b,
            Ok(Collected::Overflow(prefix, rest)) => {
                miss.finish(Outcome::GoDirect);
                let body = ProxyBody::resume(prefix, rest, Some(idle));
                return self.pass_on(flow, &miss, parts, body);
            }
            Err(e) => {
                miss.finish(Outcome::GoDirect);
                return self.failed(flow, &miss, e);
            }
        };
        let route = flow.route;
        let meta = if route.log || !route.bypass_intents.is_empty() {
            Arc::new(crate::answer::read(
                route,
                &parts.headers,
                &body,
                max_object,
            ))
        } else {
            Arc::new(SearchMeta::default())
        };
        self.metrics.answer_read(&meta);
        if let Err(reason) =
            policy::decide_body(&meta, &route.bypass_intents, body.len(), max_object)
        {
            self.not_stored(&miss, reason);
            miss.finish(Outcome::GoDirect);
            let resp = miss.full_response(parts, body);
            return self.log_now(flow, resp, Served::Miss, meta);
        }
        let entry = self.store_answer(&miss, &mut parts, &body, meta.clone(), judged, exchange);
        miss.finish(Outcome::Stored(entry.clone()));
        miss.detail.stored = true;
        let resp = miss.full_response(parts, body);
        let resp = match miss.origin() {
            // The client's own preconditions, answered from the new entry.
            Some(ask)
                if conditional::evaluate(&ask.method, &ask.headers, &entry.headers)
                    == conditional::Condition::NotModified =>
            {
                respond::into_not_modified(resp)
            }
            _ => resp,
        };
        self.log_now(flow, resp, Served::Miss, meta)
    }

    /// Whether the request goes out conditional on the stored copy: it has
    /// validators, and on a route-freshness route the client asks no
    /// condition of its own (an origin route answers those itself).
    /// Another spelling never validates a shared entry: a `304` to it
    /// would keep the entry fresh on the word of another text.
    fn validating(&self, miss: &Miss, request: &HeaderMap) -> Option<Usable> {
        miss.stale
            .as_ref()
            .filter(|s| miss.may_fill(s.key_index))
            .filter(|s| {
                conditional::has_validators(&s.entry.headers)
                    && (miss.origin().is_some() || !conditional::has_preconditions(request))
            })
            .cloned()
    }

    /// Phase 1: the request as the cache wants the answer, sent.
    async fn ask_backend(
        &self,
        miss: &Miss,
        mut parts: http::request::Parts,
        body: Bytes,
        client: SocketAddr,
        validating: Option<&Usable>,
    ) -> Result<Answer, UpstreamError> {
        // HEAD shares the GET's entry: fetch the whole answer to store it
        // (as nginx and Varnish do); the client still gets no body.
        if parts.method == Method::HEAD {
            parts.method = Method::GET;
        }
        match validating {
            Some(s) => conditional::set_validators(&mut parts.headers, &s.entry.headers),
            // An origin route answers the client's preconditions itself,
            // from the whole answer.
            _ if miss.origin().is_some() => conditional::strip_preconditions(&mut parts.headers),
            _ => {}
        }
        self.upstream.prepare(&mut parts, client);
        if miss.origin().is_some() {
            parts.headers.append(
                &SURROGATE_CAPABILITY,
                HeaderValue::from_static(SURROGATE_CAPABILITY_VALUE),
            );
        }
        let request_time_ms = now_ms();
        let deadline = Instant::now() + self.upstream.timeout;
        let req = Request::from_parts(parts, ProxyBody::full(body));
        let resp = self.upstream.send(req, deadline).await?;
        let exchange = Exchange {
            request_time_ms,
            response_time_ms: now_ms(),
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let misframed = parts.extensions.get::<InvalidFraming>().is_some();
        Ok(Answer {
            parts,
            body,
            misframed,
            exchange,
        })
    }

    /// Phase 3: may the answer be stored, from its status and headers, and
    /// an announced length within `max_object_bytes`.
    fn judge(&self, flow: &Flow<'_>, miss: &Miss, answer: &Answer) -> Result<Judged, NotStored> {
        let route = flow.route;
        let (status, headers) = (answer.parts.status, &answer.parts.headers);
        let has_user = miss.user_key_index.is_some();
        let judged = match miss.origin() {
            None => {
                let rules = self.route_rules(route, miss);
                let (scope, fresh_for) = policy::decide_headers(&rules, status, headers)?;
                Judged {
                    scope,
                    fresh_for,
                    initial_age: Duration::ZERO,
                    vary: Vec::new(),
                    cc: None,
                }
            }
            Some(ask) => {
                let cc = CacheControl::for_shared_cache(headers);
                let scope = policy::store_scope(route.scope, has_user, cc.public);
                let rules = OriginRules {
                    scope,
                    heuristic: route.heuristic,
                };
                let s = store::decide(rules, status, &ask.headers, headers, answer.exchange)?;
                Judged {
                    scope,
                    fresh_for: s.lifetime,
                    initial_age: s.initial_age,
                    vary: s.vary,
                    cc: Some(cc),
                }
            }
        };
        policy::declared_size(headers, self.config.cache.max_object_bytes)?;
        // A route-freshness key always holds the asked coding; an origin
        // entry is told apart by the answer's own Vary, which must name it.
        let coding_keyed = miss.origin().is_none() || judged.vary.contains(&ACCEPT_ENCODING);
        policy::coding_as_asked(miss.asked_coding.as_ref(), headers, coding_keyed)?;
        Ok(judged)
    }

    /// Phase 6: the entry, stored under the key its scope names.
    fn store_answer(
        &self,
        miss: &Miss,
        parts: &mut http::response::Parts,
        body: &Bytes,
        meta: Arc<SearchMeta>,
        judged: Judged,
        exchange: Exchange,
    ) -> Arc<Entry> {
        let key_index = miss.store_key_index(judged.scope);
        let Some(ask) = miss.origin() else {
            let entry = Arc::new(Entry {
                status: parts.status,
                headers: parts.headers.clone(),
                body: body.clone(),
                stored_at_ms: now_ms(),
                fresh_for: judged.fresh_for,
                meta,
                initial_age: Duration::ZERO,
                variant: None,
            });
            let key = miss.keys.get(key_index).cloned().unwrap_or_default();
            self.cache.store(key, entry.clone());
            return entry;
        };
        let selection = vary::select(&judged.vary, &ask.headers);
        let generation = variant_generation(ask.primaries.get(key_index), &selection);
        let mut headers = parts.headers.clone();
        headers.remove(http::header::AGE);
        // Fields a qualified no-cache names are not reused without
        // revalidation: leafcache keeps them out of the stored copy.
        for field in judged.cc.iter().flat_map(|cc| &cc.no_cache_fields) {
            headers.remove(field.as_str());
        }
        if !headers.contains_key(DATE) {
            // RFC 9110 section 6.6.1: a cache adds the Date it received it at.
            let now = date::format((exchange.response_time_ms / 1000) as i64);
            if let Ok(v) = HeaderValue::from_str(&now) {
                headers.insert(DATE, v.clone());
                parts.headers.insert(DATE, v);
            }
        }
        let entry = Arc::new(Entry {
            status: parts.status,
            headers,
            body: body.clone(),
            stored_at_ms: exchange.response_time_ms,
            fresh_for: judged.fresh_for,
            meta,
            initial_age: judged.initial_age,
            variant: Some(Arc::new(Variant {
                generation,
                selection,
            })),
        });
        self.store_variant(&miss.keys[key_index], &entry);
        entry
    }

    /// An answer that is not stored, its body streaming on to the client.
    fn pass_on(
        &self,
        flow: &mut Flow<'_>,
        miss: &Miss,
        mut parts: http::response::Parts,
        body: ProxyBody,
    ) -> Reply {
        if miss.origin().is_some() {
            strip_targeted(&mut parts.headers);
        }
        let status = respond::miss_status(&miss.hash, miss.detail);
        self.stream_miss(flow, parts, body, status)
    }

    /// The backend gave no usable answer: the stored copy where it may
    /// stand in, else the error (docs/contract.md step 11).
    fn failed(&self, flow: &mut Flow<'_>, miss: &Miss, e: impl Into<ProxyError>) -> Reply {
        let e = e.into();
        if let Some(reply) = self.stand_in(flow, miss, None) {
            return reply;
        }
        tracing::debug!(error = %e, "backend failed");
        if miss.origin().is_some() && miss.stale.is_some() {
            // An origin entry that may not be served stale must be
            // revalidated, which the backend cannot do now.
            let mut resp = ProxyError::MustRevalidate.response();
            let status = respond::origin_error_status(&miss.hash, "must-revalidate");
            mark(&mut resp, Served::Miss, status);
            return self.log_now(flow, resp, Served::Miss, Arc::default());
        }
        self.log_now(flow, e.response(), Served::Failed, Arc::default())
    }

    /// stale-if-error: the stored copy stands in for a failing backend
    /// (`backend_status` when it answered with an error of its own).
    fn stand_in(
        &self,
        flow: &mut Flow<'_>,
        miss: &Miss,
        backend_status: Option<StatusCode>,
    ) -> Option<Reply> {
        let entry = &miss.stale.as_ref()?.entry;
        let window = self.config.cache.stale_if_error;
        let age = entry.age(now_ms());
        let stale_for = age.saturating_sub(entry.fresh_for);
        let resp = match miss.origin() {
            None => {
                // docs/contract.md step 11: younger than its freshness plus the window.
                if age >= entry.fresh_for + window {
                    return None;
                }
                let status = respond::stale_status(&miss.hash, stale_for.as_secs(), backend_status);
                respond::from_entry(entry, Served::Stale, status)
            }
            Some(ask) => {
                // RFC 5861 and RFC 9111 section 4.2.4, as the answer allows.
                let cc = CacheControl::for_shared_cache(&entry.headers);
                let grace = crate::http_cache::freshness::error_grace(&cc, window);
                if cc.forbids_stale() || stale_for > grace {
                    return None;
                }
                let status = respond::stale_status(&miss.hash, stale_for.as_secs(), backend_status);
                super::origin::reply::answer_stored(
                    &ask.method,
                    &ask.headers,
                    entry,
                    Served::Stale,
                    status,
                )
            }
        };
        Some(self.log_now(flow, resp, Served::Stale, entry.meta.clone()))
    }

    /// Phase 2: a `304` confirmed the stored copy.
    fn refreshed(
        &self,
        flow: &mut Flow<'_>,
        mut miss: Miss,
        stale: Usable,
        not_modified: &HeaderMap,
        exchange: Exchange,
    ) -> Reply {
        // On an origin route the waiters are told before the entry is
        // stored again (revalidations are not shared).
        if miss.origin().is_some() {
            miss.finish(Outcome::GoDirect);
        }
        if let Some(ask) = miss.origin() {
            return self.revalidated(flow, &miss, ask, &stale, not_modified, exchange);
        }
        let old = &stale.entry;
        let headers = conditional::merge_304(&old.headers, not_modified);
        let rules = self.route_rules(flow.route, &miss);
        let decision = policy::decide_headers(&rules, old.status, &headers);
        let entry = Arc::new(Entry {
            status: old.status,
            headers,
            body: old.body.clone(),
            stored_at_ms: now_ms(),
            fresh_for: decision.map_or(Duration::ZERO, |(_, fresh)| fresh),
            meta: old.meta.clone(),
            initial_age: Duration::ZERO,
            variant: None,
        });
        let stored = match decision {
            Ok((scope, _)) => {
                let key = miss.keys[miss.store_key_index(scope)].clone();
                self.cache.store(key, entry.clone());
                miss.finish(Outcome::Stored(entry.clone()));
                true
            }
            Err(_) => {
                miss.finish(Outcome::GoDirect);
                false
            }
        };
        let ttl = entry.remaining(now_ms()).as_secs();
        let status = respond::revalidated_status(&miss.hash, ttl, stored);
        let resp = respond::from_entry(&entry, Served::Revalidated, status);
        self.log_now(flow, resp, Served::Revalidated, entry.meta.clone())
    }

    /// What a route-freshness route stores by (docs/contract.md section 3, step 9).
    fn route_rules<'a>(&'a self, route: &'a RouteConfig, miss: &Miss) -> StoreRules<'a> {
        StoreRules {
            scope: route.scope,
            has_user: miss.user_key_index.is_some(),
            ttl: route.ttl.unwrap_or(self.config.cache.ttl),
            cacheable_status: &self.config.cache.cacheable_status,
            vary_headers: &route.vary_headers,
        }
    }

    /// An answer not stored; the key it coalesces on is remembered as
    /// "pass" when the reason says the next answer will be alike, and when
    /// this request may fill that key at all.
    pub(super) fn not_stored(&self, miss: &Miss, reason: NotStored) {
        tracing::debug!(?reason, "answer not stored");
        if reason.sets_pass() && miss.may_fill(0) {
            self.cache.mark_pass(&miss.keys[0]);
        }
    }
}

/// Phase 4: the body read whole for the store, up to `max_object_bytes`,
/// pausing at most `idle` between chunks; what goes past the limit streams
/// on ([`Collected::Overflow`]).
async fn collect_for_store(
    body: Incoming,
    max_object: usize,
    idle: Duration,
) -> Result<Collected, UpstreamError> {
    collect_backend(body, max_object, idle)
        .await
        .map_err(|e| match e {
            body::CollectError::Timeout => UpstreamError::Stalled(idle),
            body::CollectError::Body(_) => UpstreamError::Unavailable(e.to_string()),
        })
}
