//! The request flow of SPEC section 3: route, read, decide, look up, forward,
//! store.
//!
//! - [`body`]: the body type that carries whole, streamed or resumed bodies.
//! - [`forward`]: the backend client and header hygiene.
//! - [`respond`]: answers the proxy writes itself and the cache headers.
//! - [`request`]: reading a routed request into its cache facts.

pub mod body;
pub mod forward;
mod request;
pub mod respond;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::answer;
use crate::cache::coalesce::{self, Join, Outcome};
use crate::cache::envelope::{Entry, SearchMeta, now_ms};
use crate::cache::{Cache, Found};
use crate::config::{Config, RouteConfig};
use crate::policy::{self, NotStored, StoreRules, StoreScope};
use body::{Collected, ProxyBody, collect_limited};
use forward::{Upstream, strip_hop_by_hop};
use request::{Cacheable, Routed};
use respond::{CACHE_STATUS, MissDetail, Verdict, X_CACHE};

/// How many times a waiter contends again after its leader went away before
/// it stops waiting and asks the backend itself.
const MAX_COALESCE_ROUNDS: u32 = 3;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    pub config: Arc<Config>,
    upstream: Upstream,
    pub cache: Cache,
}

impl Proxy {
    pub fn new(config: Arc<Config>, cache: Cache) -> Proxy {
        let upstream = Upstream::new(&config.upstream, config.trust_forwarded);
        Proxy {
            config,
            upstream,
            cache,
        }
    }

    /// Answers one client request. Never fails: every error becomes a
    /// response.
    pub async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let routes = &self.config.routes;
        let Some(route) = crate::route::match_route(routes, req.method(), req.uri().path()) else {
            let (parts, body) = req.into_parts();
            return self
                .forward_streaming(parts, ProxyBody::stream(body), client)
                .await;
        };
        match request::read(&self.config, route, req).await {
            Routed::Bypass(reason, parts, body) => {
                let mut resp = self.forward_streaming(parts, body, client).await;
                mark(&mut resp, Verdict::Bypass, respond::bypass_status(reason));
                resp
            }
            Routed::ClientError(resp) => resp,
            Routed::Cacheable(c) => self.serve_cacheable(route, c, client).await,
        }
    }

    async fn serve_cacheable(
        &self,
        route: &RouteConfig,
        c: Cacheable,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let keys: Vec<&str> = c.keys.iter().map(String::as_str).collect();
        let mut rounds = 0;
        let (guard, detail) = loop {
            if !c.refresh {
                let deadline = Instant::now() + self.config.redis.timeout;
                if let Some(found) = self.cache.lookup(&keys, deadline).await.fresh {
                    return self.hit(&c, found);
                }
            }
            let mut detail = MissDetail {
                refresh: c.refresh,
                ..MissDetail::default()
            };
            if c.refresh {
                break (None, detail);
            }
            if self.cache.is_pass(c.primary_key()) {
                detail.pass = true;
                break (None, detail);
            }
            match self.cache.coalescer.join(c.primary_key()) {
                Join::Leader(guard) => break (Some(guard), detail),
                Join::Waiter(rx) => {
                    let limit = self.upstream.timeout + Duration::from_secs(1);
                    match coalesce::wait(rx, limit).await {
                        Outcome::Stored(entry) => {
                            detail.collapsed = true;
                            let status = respond::miss_status(&c.hash, detail);
                            return respond::from_entry(&entry, Verdict::Miss, status);
                        }
                        Outcome::Retry if rounds + 1 < MAX_COALESCE_ROUNDS => rounds += 1,
                        _ => break (None, detail),
                    }
                }
            }
        };
        self.fetch(route, c, client, guard, detail).await
    }

    fn hit(&self, c: &Cacheable, found: Found) -> Response<ProxyBody> {
        let ttl = found.entry.remaining(now_ms()).as_secs();
        respond::from_entry(
            &found.entry,
            Verdict::Hit,
            respond::hit_status(&c.hash, ttl),
        )
    }

    /// Asks the backend, decides whether the answer may be stored, stores it,
    /// and tells any waiters (through `guard`) what came of it.
    async fn fetch(
        &self,
        route: &RouteConfig,
        c: Cacheable,
        client: SocketAddr,
        guard: Option<coalesce::FlightGuard>,
        mut detail: MissDetail,
    ) -> Response<ProxyBody> {
        let finish = |outcome: Outcome| {
            if let Some(g) = guard {
                g.finish(outcome);
            }
        };
        let mut parts = c.parts.clone();
        self.upstream.prepare(&mut parts, client);
        let deadline = Instant::now() + self.upstream.timeout;
        let req = Request::from_parts(parts, ProxyBody::full(c.body.clone()));
        let resp = match self.upstream.send(req, deadline).await {
            Ok(r) => r,
            Err(e) => {
                finish(Outcome::GoDirect);
                return respond::upstream_error(&e);
            }
        };
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);

        let rules = StoreRules {
            scope: route.scope,
            has_user: c.user_id.is_some(),
            ttl: route.ttl.unwrap_or(self.config.cache.ttl),
            cacheable_status: &self.config.cache.cacheable_status,
            vary_headers: &route.vary_headers,
        };
        let max_object = self.config.cache.max_object_bytes;
        let decision =
            policy::decide_headers(&rules, rparts.status, &rparts.headers).and_then(|ok| {
                match content_length(&rparts.headers) {
                    Some(len) if len > max_object as u64 => Err(NotStored::TooLarge),
                    _ => Ok(ok),
                }
            });
        let (scope, fresh_for) = match decision {
            Ok(d) => d,
            Err(reason) => {
                self.not_stored(&c.keys, reason);
                finish(Outcome::GoDirect);
                let mut resp =
                    Response::from_parts(rparts, ProxyBody::with_deadline(rbody, deadline));
                mark(
                    &mut resp,
                    Verdict::Miss,
                    respond::miss_status(&c.hash, detail),
                );
                return resp;
            }
        };

        let remaining = deadline.saturating_duration_since(Instant::now());
        let body = match collect_limited(rbody, max_object, Some(remaining)).await {
            Ok(Collected::Complete(b)) => b,
            Ok(Collected::Overflow(prefix, rest)) => {
                finish(Outcome::GoDirect);
                let body = ProxyBody::resume(prefix, rest, Some(deadline));
                let mut resp = Response::from_parts(rparts, body);
                mark(
                    &mut resp,
                    Verdict::Miss,
                    respond::miss_status(&c.hash, detail),
                );
                return resp;
            }
            Err(body::CollectError::Timeout) => {
                finish(Outcome::GoDirect);
                return respond::upstream_error(&forward::UpstreamError::Timeout(
                    self.upstream.timeout,
                ));
            }
            Err(e @ body::CollectError::Body(_)) => {
                finish(Outcome::GoDirect);
                return respond::upstream_error(&forward::UpstreamError::Unavailable(
                    e.to_string(),
                ));
            }
        };

        let meta = if route.log || !route.bypass_intents.is_empty() {
            answer::read(route, &body)
        } else {
            SearchMeta::default()
        };
        if let Err(reason) = policy::decide_body(
            meta.intent.as_deref(),
            &route.bypass_intents,
            body.len(),
            max_object,
        ) {
            self.not_stored(&c.keys, reason);
            finish(Outcome::GoDirect);
            return full_response(rparts, body, respond::miss_status(&c.hash, detail));
        }

        let entry = Arc::new(Entry {
            status: rparts.status,
            headers: rparts.headers.clone(),
            body: body.clone(),
            stored_at_ms: now_ms(),
            fresh_for,
            meta,
        });
        let key = match scope {
            StoreScope::User => c.user_key().unwrap_or(c.primary_key()),
            StoreScope::Global => c.global_key(),
        };
        self.cache.store(key.to_owned(), entry.clone());
        finish(Outcome::Stored(entry));
        detail.stored = true;
        full_response(rparts, body, respond::miss_status(&c.hash, detail))
    }

    fn not_stored(&self, keys: &[String], reason: NotStored) {
        tracing::debug!(?reason, "answer not stored");
        if reason.sets_pass()
            && let Some(key) = keys.first()
        {
            self.cache.mark_pass(key);
        }
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
                Response::from_parts(rparts, ProxyBody::with_deadline(rbody, deadline))
            }
            Err(e) => respond::upstream_error(&e),
        }
    }
}

fn full_response(
    parts: http::response::Parts,
    body: Bytes,
    status: http::HeaderValue,
) -> Response<ProxyBody> {
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
