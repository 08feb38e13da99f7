//! leafcache: a caching, logging sidecar for search APIs.
//!
//! A request's way through the crate (docs/contract.md section 3):
//!
//! 1. it enters in [`server`] (the accept loop; [`app::run`] starts it on
//!    bound listeners) and is answered by [`proxy::Proxy::handle`];
//! 2. [`route`] says which rule it falls under, [`proxy`]'s `request` step
//!    reads its search text and identity, [`policy`] decides bypasses, and
//!    [`key`] makes its cache key (pure functions, property-tested);
//! 3. [`cache`] is asked (L1, then Redis through [`redis::CacheTier`]), and
//!    concurrent misses coalesce;
//! 4. a miss goes down `proxy`'s one miss pipeline: the backend is called in
//!    [`proxy::forward`], the answer judged by [`policy`] (or by
//!    [`http_cache`] on origin routes), read by [`answer`], and stored;
//! 5. the search is logged in [`proxy::log`] and written by [`events`];
//!    how it was [`served`] drives `X-Cache`, the metrics and the log.
//!
//! The rest:
//!
//! - [`request_json`]: reading a request body as JSON one way only (no
//!   duplicate members, numbers by their exact text), for the key.
//! - [`config`]: proxy.toml schema, defaults, validation, overrides.
//! - [`cache_control`]: Cache-Control parsing (RFC 9111).
//! - [`redis`]: the pool (one node or a cluster), its health, every Redis
//!   key name, the cache tier's handle, the event writer's own connection
//!   speaking raw RESP.
//! - [`admin`]: health and readiness probes, metrics, and the `/v1` API
//!   (feedback, manual logging, history, stats, export, purge, explain).
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`cli`]: the batch commands (export, history, stats, purge, replay,
//!   explain).
//! - [`export`]: where an export goes (stdout, files, `gs://`, `s3://`) and
//!   in what form (JSONL, Parquet, chat pairs); objects appear whole or not
//!   at all.
//! - [`app`]: building the parts from a config and running them.
//! - [`time`]: the clock in milliseconds and its RFC 3339 form.
//! - [`demo`]: a small search backend for the quick start and benchmarks.
//! - [`telemetry`]: logging setup; each subsystem logs in its own span
//!   (`proxy`, `writer`, `spool`, `admin`, `invalidation`, `redis.monitor`,
//!   `cache.writer`).
//!
//! Top-level modules depend on one another without cycles.

pub mod admin;
pub mod answer;
pub mod app;
pub mod cache;
pub mod cache_control;
pub mod cli;
pub mod config;
pub mod demo;
pub mod events;
pub mod export;
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
