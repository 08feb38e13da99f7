//! The request flow of docs/contract.md section 3, one step per module:
//!
//! 1. [`Proxy::handle`] (here): the request enters, is matched to a route,
//!    and leaves with its response and how it was [`Served`] (which the
//!    metrics, the log and `X-Cache` all read).
//! 2. [`request`]: the routed request read into its cache facts: search
//!    text, identity, bypass rules ([`crate::policy`]) and cache keys
//!    ([`crate::key`]).
//! 3. [`lookup`]: the cache asked (L1, then Redis), hit-for-pass, and the
//!    coalescing of concurrent misses; [`origin`] does the same for
//!    `freshness = "origin"` routes (RFC 9111, with `Vary` variants).
//! 4. [`miss`]: the one miss pipeline: ask the backend, judge, collect,
//!    read the answer's facts, store.
//! 5. [`log`]: the search logged once the answer is known.
//!
//! Around them: [`forward`] (the backend client and header hygiene, over
//! TLS to an https backend with `tls`),
//! [`body`] (whole, streamed or resumed bodies), [`respond`] (stored
//! answers and the cache headers), [`error`] (the one error type and its
//! statuses), [`invalidate`] (what unsafe requests drop on origin routes),
//! [`explain`] (what the flow would do with a request, for `leafcache
//! explain`).

pub mod body;
pub mod error;
pub mod explain;
pub mod forward;
mod invalidate;
pub mod log;
mod lookup;
mod miss;
mod origin;
pub mod refresh;
mod request;
pub mod respond;
mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::{Config, RouteConfig};
use crate::events::writer::EventSink;
use crate::metrics::{Metrics, Sources};
use crate::served::Served;
use body::ProxyBody;
use forward::{Upstream, strip_hop_by_hop};
use log::SearchDraft;
use request::{ReadCtx, Routed};
use respond::{CACHE_STATUS, X_CACHE};

/// A response and how it was served: what each step of the flow returns.
pub(crate) type Reply = (Response<ProxyBody>, Served);

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    pub config: Arc<Config>,
    upstream: Upstream,
    pub cache: crate::cache::Cache,
    /// `None` when nothing is logged (no Redis writer configured).
    pub events: Option<EventSink>,
    /// Route names as shared strings, so events do not copy them.
    route_names: Vec<Arc<str>>,
    pub metrics: Arc<Metrics>,
    /// This proxy, for work that outlives a request (background
    /// revalidation on origin routes, refresh-ahead).
    this: Weak<Proxy>,
    /// `[cache] refresh_ahead` above 0.
    refresh: Option<Arc<refresh::RefreshAhead>>,
}

/// Where a routed request is in the flow: its route and its log entry.
struct Flow<'a> {
    route: &'a RouteConfig,
    route_index: usize,
    draft: Option<SearchDraft>,
}

impl Proxy {
    pub fn new(
        config: Arc<Config>,
        cache: crate::cache::Cache,
        events: Option<EventSink>,
    ) -> Arc<Proxy> {
        let upstream = Upstream::new(&config.upstream, config.trust_forwarded);
        let route_names: Vec<Arc<str>> = config
            .routes
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .collect();
        let refresh = (config.cache.refresh_ahead > 0)
            .then(|| Arc::new(refresh::RefreshAhead::new(config.cache.refresh_rate)));
        let metrics = Arc::new(Metrics::new(
            &route_names,
            Sources {
                l1: cache.l1().cloned(),
                cache_stats: cache.stats.clone(),
                coalescer: cache.coalescer.clone(),
                redis_health: cache.redis().map(|r| r.health().clone()),
                events: events.clone(),
                refresh: refresh.as_ref().map(|r| r.stats.clone()),
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
            refresh,
        })
    }

    /// The backend client, for the readiness probe.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Refresh-ahead's state, when it is on.
    pub fn refresh_ahead(&self) -> Option<&Arc<refresh::RefreshAhead>> {
        self.refresh.as_ref()
    }

    /// Answers one client request. Never fails: every error becomes a
    /// response.
    pub async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let started = Instant::now();
        let (route, (resp, served)) = self.route(req, client, started).await;
        self.metrics.request(route, served, started.elapsed());
        resp
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        started: Instant,
    ) -> (Option<usize>, Reply) {
        // Cheap for safe methods: nothing is allocated unless the method is
        // unsafe and an origin route covers the path.
        match self.unsafe_request(req.method(), req.uri(), req.headers()) {
            None => self.route_inner(req, client, started).await,
            Some(unsafe_req) => {
                let routed = self.route_inner(req, client, started).await;
                self.invalidate_after(unsafe_req, &routed.1.0).await;
                routed
            }
        }
    }

    async fn route_inner(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        started: Instant,
    ) -> (Option<usize>, Reply) {
        let routes = &self.config.routes;
        let Some(crate::route::RouteMatch {
            index: route_index,
            route,
            literal,
        }) = crate::route::match_route(routes, req.method(), req.uri().path())
        else {
            let (parts, body) = req.into_parts();
            let resp = match request::read_ahead(&self.config, &parts.headers, body).await {
                Ok(body) => self.forward_streaming(parts, body, client).await,
                Err(e) => e.response(),
            };
            return (None, (resp, Served::None));
        };
        let ctx = ReadCtx {
            started,
            route_name: &self.route_names[route_index],
            literal,
        };
        let reply = match request::read(&self.config, route, req, ctx).await {
            Routed::Bypass(reason, parts, body, draft) => {
                let mut resp = self.forward_streaming(parts, body, client).await;
                mark(&mut resp, Served::Bypass, respond::bypass_status(reason));
                let mut flow = Flow {
                    route,
                    route_index,
                    draft,
                };
                self.log_streaming(&mut flow, resp, Served::Bypass)
            }
            Routed::ClientError(e) => (e.response(), Served::None),
            Routed::Cacheable(mut c) => {
                let mut flow = Flow {
                    route,
                    route_index,
                    draft: c.draft.take(),
                };
                self.serve_cacheable(&mut flow, c, client).await
            }
        };
        (Some(route_index), reply)
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
            Err(e) => error::ProxyError::from(e).response(),
        }
    }
}

/// Sets `X-Cache` and `Cache-Status` on an answer that went through the
/// cache.
fn mark(resp: &mut Response<ProxyBody>, served: Served, status: http::HeaderValue) {
    let h = resp.headers_mut();
    if let Some(v) = served.header() {
        h.insert(&X_CACHE, v);
    }
    h.insert(&CACHE_STATUS, status);
}
