//! Where the search is logged (docs/contract.md step 13): a logged request becomes a
//! [`SearchEvent`] from what is known when the request is read (the
//! [`SearchDraft`]) and what is known once the answer is out (status, how it
//! was served, the answer's search facts). An answer in hand is logged at
//! once ([`Proxy::log_now`]); a streaming one when its body ends
//! ([`Proxy::log_streaming`]).

use std::sync::Arc;

use http::{HeaderValue, Response};
use tokio::time::Instant;

use crate::answer::SearchMeta;
use crate::config::Config;
use crate::events::writer::EventSink;
use crate::events::{CacheResult, SearchEvent, new_search_id};
use crate::route::Identity;
use crate::served::Served;
use crate::time::now_ms;

use super::body::{OnEnd, ProxyBody};
use super::{Flow, Proxy, Reply, mark};

pub static X_SEARCH_ID: http::HeaderName = http::HeaderName::from_static("x-search-id");

/// The request half of a search event.
pub struct SearchDraft {
    pub search_id: uuid::Uuid,
    timestamp_ms: u64,
    started: Instant,
    identity: Identity,
    query: String,
    query_normalized: String,
    route: Arc<str>,
}

impl SearchDraft {
    pub fn new(
        started: Instant,
        identity: Identity,
        query: String,
        query_normalized: String,
        route: Arc<str>,
    ) -> SearchDraft {
        SearchDraft {
            search_id: new_search_id(),
            timestamp_ms: now_ms(),
            started,
            identity,
            query,
            query_normalized,
            route,
        }
    }

    /// The normalized query, as the log ranks it.
    pub fn query_normalized(&self) -> &str {
        &self.query_normalized
    }

    /// The `X-Search-Id` header value.
    pub fn header(&self) -> HeaderValue {
        let mut buf = uuid::Uuid::encode_buffer();
        let id = self.search_id.hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(id).expect("a UUID is a valid header value")
    }

    /// Completes the event and queues it; never waits.
    pub fn finish(self, sink: &EventSink, cache: CacheResult, status: u16, meta: Arc<SearchMeta>) {
        let elapsed = self.started.elapsed();
        sink.send(SearchEvent {
            search_id: self.search_id,
            timestamp_ms: self.timestamp_ms,
            user_id: self.identity.user_id,
            user_uuid: self.identity.user_uuid,
            session_id: self.identity.session_id,
            query: self.query,
            query_normalized: self.query_normalized,
            meta,
            response_time_ms: elapsed.as_secs_f64() * 1000.0,
            cache,
            status,
            route: self.route,
        });
    }
}

/// A search whose answer is still streaming: completed when the body ends
/// (or is dropped, if the client hangs up), from the copy the body kept.
pub struct PendingLog {
    pub draft: SearchDraft,
    pub sink: EventSink,
    pub cache: CacheResult,
    pub status: u16,
    pub config: Arc<Config>,
    pub route_index: usize,
    /// The answer's `Content-Encoding` and `Content-Type`, which say how its
    /// body reads.
    pub coding: http::HeaderMap,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl OnEnd for PendingLog {
    /// `copy` is the whole answer body, or `None` when it was larger than
    /// what is kept.
    fn complete(self, copy: Option<&[u8]>) {
        let meta = match (copy, self.config.routes.get(self.route_index)) {
            (Some(body), Some(route)) => {
                let limit = self.config.cache.max_object_bytes;
                let meta = crate::answer::read(route, &self.coding, body, limit);
                self.metrics.answer_read(&meta);
                meta
            }
            _ => SearchMeta::default(),
        };
        self.draft
            .finish(&self.sink, self.cache, self.status, Arc::new(meta));
    }
}

impl Proxy {
    /// Logs a search whose answer is complete, and tags the response with
    /// its search id.
    pub(super) fn log_now(
        &self,
        flow: &mut Flow<'_>,
        mut resp: Response<ProxyBody>,
        served: Served,
        meta: Arc<SearchMeta>,
    ) -> Reply {
        if let (Some(draft), Some(sink)) = (flow.draft.take(), &self.events) {
            resp.headers_mut().insert(&X_SEARCH_ID, draft.header());
            let status = resp.status().as_u16();
            draft.finish(sink, served.logged_as(), status, meta);
        }
        (resp, served)
    }

    /// A miss that is not stored, its body streaming on to the client.
    pub(super) fn stream_miss(
        &self,
        flow: &mut Flow<'_>,
        parts: http::response::Parts,
        body: ProxyBody,
        status: HeaderValue,
    ) -> Reply {
        let mut resp = Response::from_parts(parts, body);
        mark(&mut resp, Served::Miss, status);
        self.log_streaming(flow, resp, Served::Miss)
    }

    /// Logs a search whose answer is still streaming: the body keeps a copy
    /// and completes the log entry when it ends.
    pub(super) fn log_streaming(
        &self,
        flow: &mut Flow<'_>,
        resp: Response<ProxyBody>,
        served: Served,
    ) -> Reply {
        let (Some(draft), Some(sink)) = (flow.draft.take(), &self.events) else {
            return (resp, served);
        };
        let (mut parts, body) = resp.into_parts();
        parts.headers.insert(&X_SEARCH_ID, draft.header());
        let mut coding = http::HeaderMap::new();
        for name in [http::header::CONTENT_ENCODING, http::header::CONTENT_TYPE] {
            for value in parts.headers.get_all(&name) {
                coding.append(name.clone(), value.clone());
            }
        }
        let log = PendingLog {
            coding,
            metrics: self.metrics.clone(),
            draft,
            sink: sink.clone(),
            cache: served.logged_as(),
            status: parts.status.as_u16(),
            config: self.config.clone(),
            route_index: flow.route_index,
        };
        let body = body.logged(log, self.config.cache.max_object_bytes);
        (Response::from_parts(parts, body), served)
    }
}
