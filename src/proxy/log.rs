//! Turning a logged request into a [`SearchEvent`]: what is known when the
//! request is read (the [`SearchDraft`]) and what is known once the answer
//! is out (status, cache result, the answer's search facts).

use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

use crate::answer::SearchMeta;
use crate::config::Config;
use crate::events::writer::EventSink;
use crate::events::{CacheResult, SearchEvent, new_search_id};
use crate::route::Identity;
use crate::time::now_ms;

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
}

impl PendingLog {
    /// `copy` is the whole answer body, or `None` when it was larger than
    /// what is kept.
    pub fn complete(self, copy: Option<&[u8]>) {
        let meta = match (copy, self.config.routes.get(self.route_index)) {
            (Some(body), Some(route)) => crate::answer::read(route, body),
            _ => SearchMeta::default(),
        };
        self.draft
            .finish(&self.sink, self.cache, self.status, Arc::new(meta));
    }
}
