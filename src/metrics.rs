//! Prometheus metrics (`GET /metrics` on the admin listener).
//!
//! Request counters are created once per (route, cache result) at startup, so
//! the hot path increments an atomic without looking a label set up. Values
//! that already live elsewhere (L1 usage, queue depth, event and Redis
//! counters) are read at scrape time by a collector instead of being copied
//! on every change.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::answer::{SearchMeta, Unreadable};
use crate::cache::l1::L1;
use crate::cache::{CacheStats, coalesce::Coalescer};
use crate::events::writer::EventSink;
use crate::redis::Health;
use crate::served::Served;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    cache: String,
}

/// The `cache` label's columns: every [`Served`] outcome but `Failed`,
/// which counts as `none` (the answer did not come through the cache).
const OUTCOMES: [Served; 6] = [
    Served::Hit,
    Served::Miss,
    Served::Bypass,
    Served::Stale,
    Served::Revalidated,
    Served::None,
];

/// Latency buckets in seconds, from 50 us to 10 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

pub struct Metrics {
    registry: Registry,
    /// `[route][outcome]`; the last row is for unmatched requests.
    requests: Vec<[Counter; 6]>,
    proxy_latency: Histogram,
    backend_latency: Histogram,
    /// By [`Unreadable::ALL`] order.
    unreadable: [Counter; Unreadable::ALL.len()],
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Where the scrape-time values come from.
pub struct Sources {
    pub l1: Option<L1>,
    pub cache_stats: Arc<CacheStats>,
    pub coalescer: Arc<Coalescer>,
    pub redis_health: Option<Arc<Health>>,
    pub events: Option<EventSink>,
    /// Refresh-ahead's counts, when it is on.
    pub refresh: Option<Arc<RefreshStats>>,
}

/// What refresh-ahead did (`proxy::refresh` counts, the scrape reads).
#[derive(Default)]
pub struct RefreshStats {
    pub started: AtomicU64,
    /// Due, but the rate limit had no token left.
    pub rate_limited: AtomicU64,
}

impl Metrics {
    pub fn new(route_names: &[Arc<str>], sources: Sources) -> Metrics {
        let mut registry = Registry::with_prefix("leafcache");
        let family = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and cache result",
            family.clone(),
        );
        let names = route_names
            .iter()
            .map(|n| n.to_string())
            .chain(std::iter::once("unmatched".to_string()));
        let requests = names
            .map(|route| {
                OUTCOMES.map(|outcome| {
                    family
                        .get_or_create(&RequestLabels {
                            route: route.clone(),
                            cache: outcome.label().to_string(),
                        })
                        .clone()
                })
            })
            .collect();
        let proxy_latency = Histogram::new(latency_buckets());
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer's headers",
            proxy_latency.clone(),
        );
        let backend_latency = Histogram::new(latency_buckets());
        registry.register(
            "backend_duration_seconds",
            "Time the backend took to send its answer's headers",
            backend_latency.clone(),
        );
        let reasons = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "answers_unreadable",
            "Backend answers whose search facts could not be read as a client reads them \
             (never stored on a route with bypass_intents), by reason",
            reasons.clone(),
        );
        let unreadable = Unreadable::ALL.map(|why| {
            reasons
                .get_or_create(&ReasonLabels {
                    reason: why.as_str(),
                })
                .clone()
        });
        registry.register_collector(Box::new(Snapshot(sources)));
        Metrics {
            registry,
            requests,
            proxy_latency,
            backend_latency,
            unreadable,
        }
    }

    /// Counts one answered request. `route` is `None` for unmatched ones.
    pub fn request(&self, route: Option<usize>, served: Served, elapsed: Duration) {
        let row = route
            .filter(|i| *i < self.requests.len() - 1)
            .unwrap_or(self.requests.len() - 1);
        let col = OUTCOMES.iter().position(|o| *o == served).unwrap_or(5);
        self.requests[row][col].inc();
        self.proxy_latency.observe(elapsed.as_secs_f64());
    }

    /// Counts an answer that could not be read, when `meta` says so.
    pub fn answer_read(&self, meta: &SearchMeta) {
        if let Some(why) = meta.unreadable {
            self.unreadable[why as usize].inc();
        }
    }

    pub fn backend(&self, elapsed: Duration) {
        self.backend_latency.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Values read at scrape time.
struct Snapshot(Sources);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// The search log's counters and gauges.
fn events(enc: &mut DescriptorEncoder, ev: &EventSink) -> std::fmt::Result {
    let st = &ev.stats;
    for (name, help, v) in [
        ("events_enqueued", "Search events queued", &st.enqueued),
        (
            "events_written",
            "Search events written to Redis",
            &st.written,
        ),
        (
            "events_spooled",
            "Search events written to the disk spool",
            &st.spooled,
        ),
        (
            "events_replayed",
            "Spooled search events replayed into Redis",
            &st.replayed,
        ),
        (
            "events_dropped",
            "Search events lost: queue and spool both full",
            &st.dropped,
        ),
    ] {
        counter(enc, name, help, v.load(Ordering::Relaxed))?;
    }
    gauge(
        enc,
        "events_queue_depth",
        "Search events waiting in the queue",
        ev.queue_depth() as i64,
    )?;
    gauge(
        enc,
        "spool_bytes",
        "Bytes in the disk spool still to replay",
        st.spool_bytes.load(Ordering::Relaxed) as i64,
    )?;
    gauge(
        enc,
        "events_waiting",
        "Search events the spool could not take (full, or the disk failing), held in memory against queue_capacity",
        st.held.load(Ordering::Relaxed) as i64,
    )?;
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let (bytes, entries) = s.l1.as_ref().map_or((0, 0), L1::usage);
        gauge(
            &mut enc,
            "l1_bytes",
            "Bytes held by the in-process cache",
            bytes as i64,
        )?;
        gauge(
            &mut enc,
            "l1_entries",
            "Entries in the in-process cache",
            entries as i64,
        )?;
        counter(
            &mut enc,
            "coalesced_waits",
            "Requests that waited for another request's backend answer",
            s.coalescer.waits(),
        )?;
        let cs = &s.cache_stats;
        let redis_errors = [
            ("lookup", cs.tier.lookup_errors.load(Ordering::Relaxed)),
            ("store", cs.tier.store_errors.load(Ordering::Relaxed)),
            (
                "events",
                s.events
                    .as_ref()
                    .map_or(0, |e| e.stats.write_failures.load(Ordering::Relaxed)),
            ),
            ("any", s.redis_health.as_ref().map_or(0, |h| h.errors())),
        ];
        for (op, n) in redis_errors {
            counter(
                &mut enc,
                &format!("redis_errors_{op}"),
                "Redis calls that failed or timed out (any: all of them, probes included)",
                n,
            )?;
        }
        gauge(
            &mut enc,
            "redis_up",
            "1 while Redis answers, 0 while the breaker is open",
            i64::from(s.redis_health.as_ref().is_some_and(|h| h.is_up())),
        )?;
        counter(
            &mut enc,
            "cache_writes_dropped",
            "Cache stores that skipped Redis because its write backlog was full",
            cs.tier.writes_dropped.load(Ordering::Relaxed),
        )?;
        let (started, rate_limited) = s.refresh.as_deref().map_or((0, 0), |r| {
            let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
            (read(&r.started), read(&r.rate_limited))
        });
        counter(
            &mut enc,
            "refreshes_started",
            "Refresh-ahead refetches started (popular entries near their expiry)",
            started,
        )?;
        counter(
            &mut enc,
            "refreshes_rate_limited",
            "Hits on a due popular entry that found no refresh_rate token (a later hit may still refresh it)",
            rate_limited,
        )?;
        if let Some(ev) = &s.events {
            events(&mut enc, ev)?;
        }
        Ok(())
    }
}
