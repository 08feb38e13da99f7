//! leafcache: a caching, logging sidecar for search APIs.
//!
//! A request enters in [`server`] (accept loop), is handled by [`proxy`]
//! (the request flow of SPEC section 3), which asks [`route`] which rule it
//! falls under, [`key`] for its cache key, [`policy`] whether it may be
//! served or stored, and [`cache`] for a stored answer (L1, then Redis); the
//! backend is called in [`proxy::forward`]. The rest:
//!
//! - [`request_json`]: reading a request body as JSON one way only (no
//!   duplicate members, numbers by their exact text), for the key.
//! - [`config`]: proxy.toml schema, defaults, validation, overrides.
//! - [`cache_control`]: Cache-Control parsing (RFC 9111).
//! - [`http_cache`]: standard HTTP caching for `freshness = "origin"` routes
//!   (freshness and age, Vary, conditional requests, invalidation).
//! - [`answer`]: the search facts of a backend answer (intent, products).
//! - [`events`]: the search log: events, the batching writer, the spool.
//! - [`redis`]: the pool (one node or a cluster), its health, every Redis
//!   key name, the event writer's own connection speaking raw RESP, and the
//!   pipelined connections cache lookups and stores share.
//! - [`admin`]: health and readiness probes, metrics, and the `/v1` API
//!   (feedback, manual logging, history, stats, export, purge).
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`cli`]: the batch commands (export, history, stats, purge, replay).
//! - [`app`]: building the parts from a config and running them.
//! - [`demo`]: a small search backend for the quick start and benchmarks.
//! - [`telemetry`]: logging setup.

pub mod admin;
pub mod answer;
pub mod app;
pub mod cache;
pub mod cache_control;
pub mod cli;
pub mod config;
pub mod demo;
pub mod events;
pub mod http_cache;
pub mod key;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod redis;
pub mod request_json;
pub mod route;
pub mod served;
pub mod server;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod time;
