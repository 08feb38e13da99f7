//! Asking the cache (docs/contract.md section 3, steps 6 to 10): L1 then Redis within
//! one deadline, hit-for-pass, and the coalescing of concurrent misses.
//! What the cache cannot answer goes down the [`super::miss`] pipeline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::request::{Cacheable, Usable};
use super::respond::{self, MissDetail};
use super::{Flow, Proxy, Reply};
use crate::cache::Found;
use crate::cache::coalesce::{self, FlightGuard, Join, Outcome};
use crate::cache::envelope::{Entry, Variant};
use crate::config::Freshness;
use crate::policy::Spelling;
use crate::served::Served;
use crate::time::now_ms;

/// How many times a waiter contends again after its leader went away before
/// it stops waiting and asks the backend itself.
const MAX_COALESCE_ROUNDS: u32 = 3;

/// What joining the key's backend request came to.
pub(super) enum Flight {
    /// No request in flight: this one asks the backend and tells the others.
    Lead(FlightGuard),
    /// The leader stored its answer.
    Stored(Arc<Entry>),
    /// The leader went away: contend again.
    Retry,
    /// The answer may not be shared, or the leader took too long: ask alone.
    Alone,
}

impl Proxy {
    /// Serves a cacheable request: from the cache when it holds a fresh
    /// answer, else through the miss pipeline.
    pub(super) async fn serve_cacheable(
        &self,
        flow: &mut Flow<'_>,
        c: Cacheable,
        client: SocketAddr,
    ) -> Reply {
        if flow.route.freshness == Freshness::Origin {
            return self.serve_origin(flow, c, client).await;
        }
        let keys: Vec<&str> = c.keys.iter().map(String::as_str).collect();
        let mut rounds = 0;
        let mut detail = MissDetail {
            refresh: c.refresh,
            ..MissDetail::default()
        };
        // One budget for every Redis lookup of this request (docs/contract.md step 14),
        // however many coalescing rounds it takes.
        let deadline = Instant::now() + self.config.redis.timeout;
        let mut stale = None;
        let guard = loop {
            if c.refresh {
                break None;
            }
            let lookup = self.cache.lookup(&keys, deadline).await;
            if let Some(found) = lookup.fresh {
                self.maybe_refresh(flow, &c, &found, client);
                return self.hit(flow, &c, found);
            }
            stale = lookup.stale.or(stale);
            if self.cache.is_pass(c.primary_key()) {
                detail.pass = true;
                break None;
            }
            match self.join_flight(c.primary_key()).await {
                Flight::Lead(guard) => break Some(guard),
                Flight::Stored(entry) => {
                    detail.collapsed = true;
                    let status = respond::miss_status(&c.hash, detail);
                    let resp = respond::from_entry(&entry, Served::Miss, status);
                    return self.log_now(flow, resp, Served::Miss, entry.meta.clone());
                }
                Flight::Retry if rounds + 1 < MAX_COALESCE_ROUNDS => rounds += 1,
                Flight::Retry | Flight::Alone => break None,
            }
        };
        let stale = stale.map(|f: Found| Usable {
            entry: f.entry,
            key_index: f.key_index,
        });
        let (parts, body, miss) = c.into_miss(None, stale, guard, detail);
        self.fetch(flow, parts, body, client, miss).await
    }

    fn hit(&self, flow: &mut Flow<'_>, c: &Cacheable, found: Found) -> Reply {
        let ttl = found.entry.remaining(now_ms()).as_secs();
        let status = respond::hit_status(&c.hash, ttl);
        let resp = respond::from_entry(&found.entry, Served::Hit, status);
        self.log_now(flow, resp, Served::Hit, found.entry.meta.clone())
    }

    /// Refresh-ahead: a hit on a popular global entry near its expiry
    /// refetches it in the background (see [`super::refresh`]). Only
    /// requests whose one key is the global one: the refetch coalesces on it.
    fn maybe_refresh(&self, flow: &Flow<'_>, c: &Cacheable, found: &Found, client: SocketAddr) {
        let Some(refresh) = &self.refresh else {
            return;
        };
        // Only the normal spelling refetches a shared entry: the refetch
        // asks with this request's text.
        if c.keys.len() != 1 || c.user_key_index.is_some() || c.spelling != Spelling::Normal {
            return;
        }
        let Some(draft) = flow.draft.as_ref().or(c.draft.as_ref()) else {
            return;
        };
        if !refresh.due(&found.entry, now_ms(), draft.query_normalized()) {
            return;
        }
        let Some(proxy) = self.this.upgrade() else {
            return;
        };
        let Join::Leader(guard) = self.cache.coalescer.join(c.primary_key()) else {
            return; // a request for this key is with the backend already
        };
        if !refresh.take_token() {
            return; // the guard's drop lets the key go
        }
        proxy.fetch_in_background(
            flow.route_index,
            c.for_background(),
            None,
            None,
            guard,
            client,
        );
    }

    /// Sends `background` down the miss pipeline in a task of its own,
    /// leading its key's flight (`guard`); the answer is stored as any miss
    /// is, and dropped (a streamed one has no reader).
    pub(super) fn fetch_in_background(
        self: Arc<Proxy>,
        route_index: usize,
        background: Cacheable,
        primaries: Option<Vec<Option<Arc<Variant>>>>,
        usable: Option<Usable>,
        guard: FlightGuard,
        client: SocketAddr,
    ) {
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let Some(route) = self.config.routes.get(route_index) else {
                return;
            };
            let mut flow = Flow {
                route,
                route_index,
                draft: None,
            };
            let (parts, body, miss) =
                background.into_miss(primaries, usable, Some(guard), MissDetail::default());
            drop(self.fetch(&mut flow, parts, body, client, miss).await);
        }));
    }

    /// Joins the backend request in flight for `key`, or leads one.
    pub(super) async fn join_flight(&self, key: &str) -> Flight {
        match self.cache.coalescer.join(key) {
            Join::Leader(guard) => Flight::Lead(guard),
            Join::Waiter(rx) => {
                let limit = self.upstream.timeout + Duration::from_secs(1);
                match coalesce::wait(rx, limit).await {
                    Outcome::Stored(entry) => Flight::Stored(entry),
                    Outcome::Retry => Flight::Retry,
                    Outcome::GoDirect | Outcome::Pending => Flight::Alone,
                }
            }
        }
    }
}
