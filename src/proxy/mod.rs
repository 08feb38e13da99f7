//! The request flow of SPEC section 3: route, read, decide, look up, forward,
//! store, log.
//!
//! - [`request`]: reading a routed request into its cache facts.
//! - [`forward`]: the backend client and header hygiene.
//! - [`body`]: the body type that carries whole, streamed or resumed bodies.
//! - [`respond`]: answers the proxy writes itself and the cache headers.
//! - [`log`]: the search event of a logged request.
//! - [`origin`]: the flow of `freshness = "origin"` routes (RFC 9111).
//! - [`invalidate`]: what unsafe requests drop on origin routes.

pub mod body;
pub mod forward;
mod invalidate;
pub mod log;
mod origin;
mod request;
pub mod respond;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::answer;
use crate::answer::SearchMeta;
use crate::cache::coalesce::{self, FlightGuard, Join, Outcome};
use crate::cache::envelope::Entry;
use crate::cache::{Cache, Found};
use crate::config::{Config, Freshness, RouteConfig};
use crate::events::CacheResult;
use crate::events::writer::EventSink;
use crate::http_cache::conditional;
use crate::metrics::{self, Metrics, Sources};
use crate::policy::{self, NotStored, StoreRules, StoreScope};
use crate::time::now_ms;
use body::{Collected, ProxyBody, collect_backend};
use forward::{InvalidFraming, Upstream, UpstreamError, strip_hop_by_hop};
use log::{PendingLog, SearchDraft, X_SEARCH_ID};
use request::{Cacheable, ReadCtx, Routed};
use respond::{CACHE_STATUS, MissDetail, Verdict, X_CACHE};

/// How many times a waiter contends again after its leader went away before
/// it stops waiting and asks the backend itself.
const MAX_COALESCE_ROUNDS: u32 = 3;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    pub config: Arc<Config>,
    upstream: Upstream,
    pub cache: Cache,
    /// `None` when nothing is logged (no Redis writer configured).
    pub events: Option<EventSink>,
    /// Route names as shared strings, so events do not copy them.
    route_names: Vec<Arc<str>>,
    pub metrics: Arc<Metrics>,
    /// This proxy, for work that outlives a request (background
    /// revalidation on origin routes).
    this: Weak<Proxy>,
}

/// Where a routed request is in the flow: its route and its log entry.
struct Flow<'a> {
    route: &'a RouteConfig,
    route_index: usize,
    draft: Option<SearchDraft>,
}

impl Proxy {
    pub fn new(config: Arc<Config>, cache: Cache, events: Option<EventSink>) -> Arc<Proxy> {
        let upstream = Upstream::new(&config.upstream, config.trust_forwarded);
        let route_names: Vec<Arc<str>> = config
            .routes
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .collect();
        let metrics = Arc::new(Metrics::new(
            &route_names,
            Sources {
                l1: cache.l1().cloned(),
                cache_stats: cache.stats.clone(),
                coalescer: cache.coalescer.clone(),
                redis_health: cache.redis().map(|r| r.health().clone()),
                events: events.clone(),
            },
        ));
        let upstream = upstream.with_metrics(metrics.clone());
        Arc::new_cyclic(|this| Proxy {
            config,
            upstream,
            cache,
            events,
            route_names,
            metrics,
            this: this.clone(),
        })
    }

    /// Answers one client request. Never fails: every error becomes a
    /// response.
    pub async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let started = Instant::now();
        let (route, resp) = self.route(req, client, started).await;
        let outcome = match resp.headers().get(&X_CACHE).map(|v| v.as_bytes()) {
            Some(b"HIT") => metrics::Outcome::Hit,
            Some(b"MISS") => metrics::Outcome::Miss,
            Some(b"BYPASS") => metrics::Outcome::Bypass,
            Some(b"STALE") => metrics::Outcome::Stale,
            Some(b"REVALIDATED") => metrics::Outcome::Revalidated,
            _ => metrics::Outcome::None,
        };
        self.metrics.request(route, outcome, started.elapsed());
        resp
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        started: Instant,
    ) -> (Option<usize>, Response<ProxyBody>) {
        // Cheap for safe methods: nothing is allocated unless the method is
        // unsafe and an origin route covers the path.
        match self.unsafe_request(req.method(), req.uri(), req.headers()) {
            None => self.route_inner(req, client, started).await,
            Some(unsafe_req) => {
                let routed = self.route_inner(req, client, started).await;
                self.invalidate_after(unsafe_req, &routed.1).await;
                routed
            }
        }
    }

    async fn route_inner(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        started: Instant,
    ) -> (Option<usize>, Response<ProxyBody>) {
        let routes = &self.config.routes;
        let Some(crate::route::RouteMatch {
            index: route_index,
            route,
            literal,
        }) = crate::route::match_route(routes, req.method(), req.uri().path())
        else {
            let (parts, body) = req.into_parts();
            let resp = self
                .forward_streaming(parts, ProxyBody::stream(body), client)
                .await;
            return (None, resp);
        };
        let ctx = ReadCtx {
            started,
            route_name: &self.route_names[route_index],
            literal,
        };
        let resp = match request::read(&self.config, route, req, ctx).await {
            Routed::Bypass(reason, parts, body, draft) => {
                let mut resp = self.forward_streaming(parts, body, client).await;
                mark(&mut resp, Verdict::Bypass, respond::bypass_status(reason));
                let mut flow = Flow {
                    route,
                    route_index,
                    draft,
                };
                self.log_streaming(&mut flow, resp, CacheResult::Bypass)
            }
            Routed::ClientError(resp) => resp,
            Routed::Cacheable(mut c) => {
                let mut flow = Flow {
                    route,
                    route_index,
                    draft: c.draft.take(),
                };
                self.serve_cacheable(&mut flow, c, client).await
            }
        };
        (Some(route_index), resp)
    }

    async fn serve_cacheable(
        &self,
        flow: &mut Flow<'_>,
        c: Cacheable,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        if flow.route.freshness == Freshness::Origin {
            return self.serve_origin(flow, c, client).await;
        }
        let keys: Vec<&str> = c.keys.iter().map(String::as_str).collect();
        let mut rounds = 0;
        let mut detail = MissDetail {
            refresh: c.refresh,
            ..MissDetail::default()
        };
        // One budget for every Redis lookup of this request (SPEC step 14),
        // however many coalescing rounds it takes.
        let deadline = Instant::now() + self.config.redis.timeout;
        let mut stale = None;
        let guard = loop {
            if !c.refresh {
                let lookup = self.cache.lookup(&keys, deadline).await;
                if let Some(found) = lookup.fresh {
                    return self.hit(flow, &c, found);
                }
                stale = lookup.stale.map(|f| f.entry).or(stale);
            }
            if c.refresh {
                break None;
            }
            if self.cache.is_pass(c.primary_key()) {
                detail.pass = true;
                break None;
            }
            match self.cache.coalescer.join(c.primary_key()) {
                Join::Leader(guard) => break Some(guard),
                Join::Waiter(rx) => {
                    let limit = self.upstream.timeout + Duration::from_secs(1);
                    match coalesce::wait(rx, limit).await {
                        Outcome::Stored(entry) => {
                            detail.collapsed = true;
                            let status = respond::miss_status(&c.hash, detail);
                            let resp = respond::from_entry(&entry, Verdict::Miss, status);
                            return self.log_now(flow, resp, CacheResult::Miss, entry.meta.clone());
                        }
                        Outcome::Retry if rounds + 1 < MAX_COALESCE_ROUNDS => rounds += 1,
                        _ => break None,
                    }
                }
            }
        };
        self.fetch(flow, c, client, guard, detail, stale).await
    }

    fn hit(&self, flow: &mut Flow<'_>, c: &Cacheable, found: Found) -> Response<ProxyBody> {
        let ttl = found.entry.remaining(now_ms()).as_secs();
        let resp = respond::from_entry(
            &found.entry,
            Verdict::Hit,
            respond::hit_status(&c.hash, ttl),
        );
        self.log_now(flow, resp, CacheResult::Hit, found.entry.meta.clone())
    }

    /// Asks the backend, decides whether the answer may be stored, stores it,
    /// and tells any waiters (through `guard`) what came of it.
    async fn fetch(
        &self,
        flow: &mut Flow<'_>,
        c: Cacheable,
        client: SocketAddr,
        guard: Option<FlightGuard>,
        mut detail: MissDetail,
        stale: Option<Arc<Entry>>,
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
            ..
        } = c;
        let user_key = c.user_key_index.map(|i| keys[i].clone());
        // HEAD shares the GET's entry: fetch the whole answer to store it
        // (as nginx and Varnish do); the client still gets no body.
        if parts.method == http::Method::HEAD {
            parts.method = http::Method::GET;
        }
        // A stale copy with validators is revalidated rather than fetched
        // again, unless the client asks a condition of its own.
        let validating = stale
            .clone()
            .filter(|e| conditional::has_validators(&e.headers))
            .filter(|_| !conditional::has_preconditions(&parts.headers));
        if let Some(e) = &validating {
            conditional::set_validators(&mut parts.headers, &e.headers);
        }
        self.upstream.prepare(&mut parts, client);
        let deadline = Instant::now() + self.upstream.timeout;
        let req = Request::from_parts(parts, ProxyBody::full(body));
        let resp = match self.upstream.send(req, deadline).await {
            Ok(r) => r,
            Err(e) => {
                finish(Outcome::GoDirect);
                if let Some(resp) = self.serve_stale(flow, stale.as_deref(), &hash, None) {
                    return resp;
                }
                return self.backend_failed(flow, &e);
            }
        };
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        let misframed = rparts.extensions.get::<InvalidFraming>().is_some();
        let idle = self.upstream.idle_timeout;

        let rules = StoreRules {
            scope: route.scope,
            has_user: user_key.is_some(),
            ttl: route.ttl.unwrap_or(self.config.cache.ttl),
            cacheable_status: &self.config.cache.cacheable_status,
            vary_headers: &route.vary_headers,
        };
        if rparts.status == StatusCode::NOT_MODIFIED
            && let Some(old) = validating
        {
            if misframed {
                // Not a confirmation to build on: what followed it on the
                // connection is unknown.
                finish(Outcome::GoDirect);
                if let Some(resp) = self.serve_stale(flow, stale.as_deref(), &hash, None) {
                    return resp;
                }
                let e = UpstreamError::Unavailable("a 304 with invalid framing".into());
                return self.backend_failed(flow, &e);
            }
            let headers = conditional::merge_304(&old.headers, &rparts.headers);
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
                    let key = match (scope, user_key) {
                        (StoreScope::User, Some(k)) => k,
                        _ => keys.last().cloned().unwrap_or_default(),
                    };
                    self.cache.store(key, entry.clone());
                    finish(Outcome::Stored(entry.clone()));
                    true
                }
                Err(_) => {
                    finish(Outcome::GoDirect);
                    false
                }
            };
            let ttl = entry.remaining(now_ms()).as_secs();
            let status = respond::revalidated_status(&hash, ttl, stored);
            let resp = respond::from_entry(&entry, Verdict::Revalidated, status);
            return self.log_now(flow, resp, CacheResult::Hit, entry.meta.clone());
        }

        let max_object = self.config.cache.max_object_bytes;
        let decision = if misframed {
            // Never stored (SPEC section 7), and no hit-for-pass: the next
            // answer may well be framed right.
            Err(None)
        } else {
            policy::decide_headers(&rules, rparts.status, &rparts.headers)
                .and_then(|ok| match content_length(&rparts.headers) {
                    Some(len) if len > max_object as u64 => Err(NotStored::TooLarge),
                    _ => Ok(ok),
                })
                .map_err(Some)
        };
        let (scope, fresh_for) = match decision {
            Ok(d) => d,
            Err(reason) => {
                if let Some(reason) = reason {
                    self.not_stored(&keys[0], reason);
                }
                finish(Outcome::GoDirect);
                if rparts.status.is_server_error()
                    && let Some(resp) =
                        self.serve_stale(flow, stale.as_deref(), &hash, Some(rparts.status))
                {
                    return resp;
                }
                let body = ProxyBody::from_backend(rbody, idle);
                return self.stream_miss(flow, rparts, body, respond::miss_status(&hash, detail));
            }
        };

        let body = match collect_backend(rbody, max_object, idle).await {
            Ok(Collected::Complete(b)) => b,
            Ok(Collected::Overflow(prefix, rest)) => {
                finish(Outcome::GoDirect);
                let body = ProxyBody::resume(prefix, rest, Some(idle));
                return self.stream_miss(flow, rparts, body, respond::miss_status(&hash, detail));
            }
            Err(e) => {
                finish(Outcome::GoDirect);
                if let Some(resp) = self.serve_stale(flow, stale.as_deref(), &hash, None) {
                    return resp;
                }
                let err = match e {
                    body::CollectError::Timeout => UpstreamError::Stalled(idle),
                    body::CollectError::Body(_) => UpstreamError::Unavailable(e.to_string()),
                };
                return self.backend_failed(flow, &err);
            }
        };

        let meta = if route.log || !route.bypass_intents.is_empty() {
            Arc::new(answer::read(route, &body))
        } else {
            Arc::new(SearchMeta::default())
        };
        if let Err(reason) = policy::decide_body(
            meta.intent.as_deref(),
            &route.bypass_intents,
            body.len(),
            max_object,
        ) {
            self.not_stored(&keys[0], reason);
            finish(Outcome::GoDirect);
            let resp = full_response(rparts, body, respond::miss_status(&hash, detail));
            return self.log_now(flow, resp, CacheResult::Miss, meta);
        }

        let entry = Arc::new(Entry {
            status: rparts.status,
            headers: rparts.headers.clone(),
            body: body.clone(),
            stored_at_ms: now_ms(),
            fresh_for,
            meta: meta.clone(),
            initial_age: Duration::ZERO,
            variant: None,
        });
        let key = match (scope, user_key) {
            (StoreScope::User, Some(k)) => k,
            // The global key is always the last one looked up.
            _ => keys.last().cloned().unwrap_or_default(),
        };
        self.cache.store(key, entry.clone());
        finish(Outcome::Stored(entry));
        detail.stored = true;
        let resp = full_response(rparts, body, respond::miss_status(&hash, detail));
        self.log_now(flow, resp, CacheResult::Miss, meta)
    }

    /// stale-if-error (SPEC step 11): the backend failed, and an expired copy
    /// younger than its freshness plus `stale_if_error` is at hand.
    fn serve_stale(
        &self,
        flow: &mut Flow<'_>,
        stale: Option<&Entry>,
        hash: &crate::key::KeyHash,
        backend_status: Option<StatusCode>,
    ) -> Option<Response<ProxyBody>> {
        let entry = stale?;
        let now = now_ms();
        if entry.age(now) >= entry.fresh_for + self.config.cache.stale_if_error {
            return None;
        }
        let stale_for = entry.age(now).saturating_sub(entry.fresh_for).as_secs();
        let status = respond::stale_status(hash, stale_for, backend_status);
        let resp = respond::from_entry(entry, Verdict::Stale, status);
        Some(self.log_now(flow, resp, CacheResult::Stale, entry.meta.clone()))
    }

    /// The backend gave no answer: 502 or 504 (logged as a miss).
    fn backend_failed(&self, flow: &mut Flow<'_>, e: &UpstreamError) -> Response<ProxyBody> {
        tracing::debug!(error = %e, "backend failed");
        let resp = respond::upstream_error(e);
        self.log_now(
            flow,
            resp,
            CacheResult::Miss,
            Arc::new(SearchMeta::default()),
        )
    }

    fn not_stored(&self, primary_key: &str, reason: NotStored) {
        tracing::debug!(?reason, "answer not stored");
        if reason.sets_pass() {
            self.cache.mark_pass(primary_key);
        }
    }

    /// Logs a search whose answer is complete, and tags the response with
    /// its search id.
    fn log_now(
        &self,
        flow: &mut Flow<'_>,
        mut resp: Response<ProxyBody>,
        cache: CacheResult,
        meta: Arc<SearchMeta>,
    ) -> Response<ProxyBody> {
        if let (Some(draft), Some(sink)) = (flow.draft.take(), &self.events) {
            resp.headers_mut().insert(&X_SEARCH_ID, draft.header());
            draft.finish(sink, cache, resp.status().as_u16(), meta);
        }
        resp
    }

    /// A miss that is not stored, its body streaming on to the client.
    fn stream_miss(
        &self,
        flow: &mut Flow<'_>,
        parts: http::response::Parts,
        body: ProxyBody,
        status: http::HeaderValue,
    ) -> Response<ProxyBody> {
        let mut resp = Response::from_parts(parts, body);
        mark(&mut resp, Verdict::Miss, status);
        self.log_streaming(flow, resp, CacheResult::Miss)
    }

    /// Logs a search whose answer is still streaming: the body keeps a copy
    /// and completes the log entry when it ends.
    fn log_streaming(
        &self,
        flow: &mut Flow<'_>,
        resp: Response<ProxyBody>,
        cache: CacheResult,
    ) -> Response<ProxyBody> {
        let (Some(draft), Some(sink)) = (flow.draft.take(), &self.events) else {
            return resp;
        };
        let (mut parts, body) = resp.into_parts();
        parts.headers.insert(&X_SEARCH_ID, draft.header());
        let log = PendingLog {
            draft,
            sink: sink.clone(),
            cache,
            status: parts.status.as_u16(),
            config: self.config.clone(),
            route_index: flow.route_index,
        };
        let body = body.logged(log, self.config.cache.max_object_bytes);
        Response::from_parts(parts, body)
    }

    /// Forwards a request whose answer is not cached, streaming both ways.
    async fn forward_streaming(
        &self,
        mut parts: http::request::Parts,
        body: ProxyBody,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        self.upstream.prepare(&mut parts, client);
        let deadline = Instant::now() + self.upstream.timeout;
        match self
            .upstream
            .send(Request::from_parts(parts, body), deadline)
            .await
        {
            Ok(resp) => {
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                let body = ProxyBody::from_backend(rbody, self.upstream.idle_timeout);
                Response::from_parts(rparts, body)
            }
            Err(e) => respond::upstream_error(&e),
        }
    }
}

/// A backend answer read whole. Its `Content-Length` goes: hyper writes the
/// length of the body actually sent, which the backend's header cannot
/// contradict.
fn full_response(
    mut parts: http::response::Parts,
    body: Bytes,
    status: http::HeaderValue,
) -> Response<ProxyBody> {
    parts.headers.remove(CONTENT_LENGTH);
    let mut resp = Response::from_parts(parts, ProxyBody::full(body));
    mark(&mut resp, Verdict::Miss, status);
    resp
}

fn mark(resp: &mut Response<ProxyBody>, verdict: Verdict, status: http::HeaderValue) {
    let h = resp.headers_mut();
    h.insert(&X_CACHE, verdict.header());
    h.insert(&CACHE_STATUS, status);
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A status the proxy gives when the client's own request cannot be read.
pub(crate) fn client_error(detail: &str) -> Response<ProxyBody> {
    respond::json_error(StatusCode::BAD_REQUEST, "bad_request", detail)
}
