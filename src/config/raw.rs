//! The serde schema of proxy.toml, with the spec's defaults, and the checks
//! that look at more than one value (done after deserializing, located with
//! toml_edit).
//!
//! Checks of a single value live in the value's type (`Dur`, `SourceSpec`, ...)
//! so that serde reports them with the value's own path and span.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod route;

use super::locate::{Locator, Seg};
use super::units::{Dur, Size};
use crate::redis::keys::Prefix;

use super::values::{Addr, Count, RedisUrl, SourceSpec, Status, Token, UpstreamUrl};
use super::{
    CacheConfig, Config, ConfigError, EventsConfig, IdentityConfig, RedisConfig, RouteConfig,
    UpstreamConfig,
};

fn secs(s: u64) -> Dur {
    Dur(Duration::from_secs(s))
}

fn millis(ms: u64) -> Dur {
    Dur(Duration::from_millis(ms))
}

fn sources(specs: &[&str]) -> Vec<SourceSpec> {
    specs
        .iter()
        .map(|s| SourceSpec(s.parse().expect("built-in sources are valid")))
        .collect()
}

fn addr(s: &str) -> Addr {
    Addr(s.parse().expect("built-in addresses are valid"))
}

use Seg::Key as K;

/// The least a duration that must be positive may be.
const TINY: Duration = Duration::from_nanos(1);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    listen: Addr,
    admin_listen: Addr,
    max_request_body: Size,
    header_read_timeout: Dur,
    max_connections: Count<usize>,
    trust_forwarded: bool,
    admin_token: Option<Token>,
    upstream: RawUpstream,
    redis: RawRedis,
    cache: RawCache,
    identity: RawIdentity,
    events: RawEvents,
    route: Vec<route::RawRoute>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen: addr("0.0.0.0:8080"),
            admin_listen: addr("127.0.0.1:9091"),
            max_request_body: Size(64 * 1024),
            header_read_timeout: secs(10),
            max_connections: Count(10_000),
            trust_forwarded: false,
            admin_token: None,
            upstream: RawUpstream::default(),
            redis: RawRedis::default(),
            cache: RawCache::default(),
            identity: RawIdentity::default(),
            events: RawEvents::default(),
            route: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    url: UpstreamUrl,
    ca_file: Option<PathBuf>,
    connect_timeout: Dur,
    timeout: Dur,
    idle_timeout: Dur,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: UpstreamUrl(http::Uri::from_static("http://127.0.0.1:8000")),
            ca_file: None,
            connect_timeout: secs(1),
            timeout: secs(10),
            idle_timeout: secs(30),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRedis {
    url: RedisUrl,
    pool_size: Count<u32>,
    timeout: Dur,
    key_prefix: String,
    cluster: bool,
    tls_ca_file: Option<PathBuf>,
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: RedisUrl("redis://127.0.0.1:6379".to_owned()),
            pool_size: Count(16),
            timeout: millis(50),
            key_prefix: String::new(),
            cluster: false,
            tls_ca_file: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    ttl: Dur,
    l1_max_bytes: Size,
    l1_ttl: Dur,
    max_object_bytes: Size,
    stale_if_error: Dur,
    cacheable_status: Vec<Status>,
    hit_for_pass: Dur,
    refresh_ahead: usize,
    refresh_rate: f64,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            ttl: secs(3600),
            l1_max_bytes: Size(64 << 20),
            l1_ttl: secs(30),
            max_object_bytes: Size(1 << 20),
            stale_if_error: secs(600),
            cacheable_status: vec![Status(200)],
            hit_for_pass: secs(120),
            refresh_ahead: 0,
            refresh_rate: 10.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIdentity {
    user_id: Vec<SourceSpec>,
    user_uuid: Vec<SourceSpec>,
    session_id: Vec<SourceSpec>,
    hash_user_id: bool,
    max_bytes: Count<usize>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        RawIdentity {
            user_id: sources(&["header:x-user-id", "json:/user_id", "query:user_id"]),
            user_uuid: sources(&["header:x-user-uuid", "json:/user_uuid"]),
            session_id: sources(&["header:x-session-id", "json:/session_id"]),
            hash_user_id: false,
            max_bytes: Count(256),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEvents {
    queue_capacity: Count<usize>,
    batch_max: Count<usize>,
    flush_interval: Dur,
    counter_flush: Dur,
    history_limit: Count<usize>,
    retention: Dur,
    record_retention: Dur,
    spool_dir: PathBuf,
    spool_max_bytes: Size,
}

impl Default for RawEvents {
    fn default() -> Self {
        RawEvents {
            queue_capacity: Count(100_000),
            batch_max: Count(512),
            flush_interval: millis(20),
            counter_flush: secs(10),
            history_limit: Count(1000),
            retention: secs(90 * 86_400),
            record_retention: secs(14 * 86_400),
            spool_dir: PathBuf::from("spool"),
            spool_max_bytes: Size(1 << 30),
        }
    }
}

/// Durations that must not be zero: a zero timeout fails every call, a zero
/// flush interval spins, a zero EXPIRE deletes the key it is meant to keep.
pub(super) fn positive(
    loc: &Locator,
    path: &[Seg],
    d: Dur,
    at_least: Duration,
) -> Result<Duration, ConfigError> {
    if d.0 < at_least {
        let min = if at_least == Duration::from_secs(1) {
            "1s"
        } else {
            "more than 0"
        };
        return Err(loc.error(path, format!("must be at least {min}")));
    }
    Ok(d.0)
}

impl RawConfig {
    /// `config_file` is the file the text came from, used to resolve
    /// `events.spool_dir` and `redis.tls_ca_file`; `None` resolves them
    /// against the working directory.
    pub fn into_config(
        self,
        loc: &Locator,
        config_file: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let header_read_timeout = positive(
            loc,
            &[K("header_read_timeout")],
            self.header_read_timeout,
            TINY,
        )?;
        let c = self.cache;
        let cache = CacheConfig {
            ttl: positive(loc, &[K("cache"), K("ttl")], c.ttl, TINY)?,
            l1_max_bytes: c.l1_max_bytes.0,
            l1_ttl: c.l1_ttl.0,
            max_object_bytes: c.max_object_bytes.as_usize(),
            stale_if_error: c.stale_if_error.0,
            cacheable_status: c.cacheable_status.iter().map(|s| s.0).collect(),
            hit_for_pass: c.hit_for_pass.0,
            refresh_ahead: c.refresh_ahead,
            refresh_rate: if c.refresh_rate.is_finite() && c.refresh_rate > 0.0 {
                c.refresh_rate
            } else {
                return Err(loc.error(
                    &[K("cache"), K("refresh_rate")],
                    "must be a number of requests per second above 0".to_string(),
                ));
            },
        };
        let unwrap = |v: Vec<SourceSpec>| v.into_iter().map(|s| s.0).collect();
        let identity = IdentityConfig {
            user_id: unwrap(self.identity.user_id),
            user_uuid: unwrap(self.identity.user_uuid),
            session_id: unwrap(self.identity.session_id),
            hash_user_id: self.identity.hash_user_id,
            max_bytes: self.identity.max_bytes.0,
        };
        Ok(Config {
            source: config_file.map(Path::to_path_buf),
            listen: self.listen.0,
            admin_listen: self.admin_listen.0,
            max_request_body: self.max_request_body.as_usize(),
            header_read_timeout,
            max_connections: self.max_connections.0,
            trust_forwarded: self.trust_forwarded,
            admin_token: self.admin_token.map(|t| t.0),
            upstream: self.upstream.into_upstream(loc, config_file)?,
            redis: self.redis.into_redis(loc, config_file)?,
            cache,
            identity,
            events: self.events.into_events(loc, config_file)?,
            routes: into_routes(self.route, loc)?,
        })
    }
}

/// A path from the file, relative to the file's folder (the working
/// directory for the built-in config).
fn resolve_path(path: PathBuf, config_file: Option<&Path>) -> PathBuf {
    let joined = match config_file.and_then(Path::parent) {
        Some(folder) if path.is_relative() => folder.join(&path),
        _ => path,
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

impl RawUpstream {
    fn into_upstream(
        self,
        loc: &Locator,
        config_file: Option<&Path>,
    ) -> Result<UpstreamConfig, ConfigError> {
        let (ca_file, ca_pem) = match self.ca_file {
            Some(file) => {
                let file = resolve_path(file, config_file);
                let pem = read_ca_file(&file)
                    .map_err(|m| loc.error(&[K("upstream"), K("ca_file")], m))?;
                (Some(file), Some(pem))
            }
            None => (None, None),
        };
        Ok(UpstreamConfig {
            url: self.url.0,
            ca_file,
            ca_pem,
            connect_timeout: positive(
                loc,
                &[K("upstream"), K("connect_timeout")],
                self.connect_timeout,
                TINY,
            )?,
            timeout: positive(loc, &[K("upstream"), K("timeout")], self.timeout, TINY)?,
            idle_timeout: positive(
                loc,
                &[K("upstream"), K("idle_timeout")],
                self.idle_timeout,
                TINY,
            )?,
        })
    }
}

impl RawRedis {
    fn into_redis(
        self,
        loc: &Locator,
        config_file: Option<&Path>,
    ) -> Result<RedisConfig, ConfigError> {
        let (tls_ca_file, tls_ca_pem) = match self.tls_ca_file {
            Some(file) => {
                let file = resolve_path(file, config_file);
                let pem = read_ca_file(&file)
                    .map_err(|m| loc.error(&[K("redis"), K("tls_ca_file")], m))?;
                (Some(file), Some(pem))
            }
            None => (None, None),
        };
        if self.cluster && self.key_prefix.contains(['{', '}']) {
            // A tag in the prefix would override the per-user tags and put
            // every key of the deployment in one slot.
            return Err(loc.error(
                &[K("redis"), K("key_prefix")],
                "must not contain '{' or '}' when cluster = true (Redis Cluster reads them as a hash tag)",
            ));
        }
        Ok(RedisConfig {
            url: self.url.0,
            pool_size: self.pool_size.0,
            timeout: positive(loc, &[K("redis"), K("timeout")], self.timeout, TINY)?,
            key_prefix: Prefix::new(self.key_prefix, self.cluster),
            cluster: self.cluster,
            tls_ca_file,
            tls_ca_pem,
        })
    }
}

impl RawEvents {
    fn into_events(
        self,
        loc: &Locator,
        config_file: Option<&Path>,
    ) -> Result<EventsConfig, ConfigError> {
        let e = self;
        Ok(EventsConfig {
            queue_capacity: e.queue_capacity.0,
            batch_max: e.batch_max.0,
            flush_interval: positive(
                loc,
                &[K("events"), K("flush_interval")],
                e.flush_interval,
                TINY,
            )?,
            counter_flush: positive(
                loc,
                &[K("events"), K("counter_flush")],
                e.counter_flush,
                TINY,
            )?,
            history_limit: e.history_limit.0,
            retention: positive(
                loc,
                &[K("events"), K("retention")],
                e.retention,
                Duration::from_secs(1),
            )?,
            record_retention: positive(
                loc,
                &[K("events"), K("record_retention")],
                e.record_retention,
                Duration::from_secs(1),
            )?,
            spool_dir: resolve_path(e.spool_dir, config_file),
            spool_max_bytes: e.spool_max_bytes.0,
        })
    }
}

/// The routes, each validated, with unique names.
fn into_routes(raw: Vec<route::RawRoute>, loc: &Locator) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.len());
    for (i, raw) in raw.into_iter().enumerate() {
        let route = raw.into_route(loc, i)?;
        if let Some(first) = routes.iter().position(|r| r.name == route.name) {
            return Err(loc.error(
                &[K("route"), Seg::Index(i), K("name")],
                format!(
                    "duplicate route name {:?} (also route[{first}]); names must be unique",
                    route.name
                ),
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

/// Reads a CA bundle and checks that it holds at least one PEM certificate,
/// so a wrong file fails at startup rather than at every TLS handshake.
fn read_ca_file(file: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    // The same checks redis-rs makes when it builds the client, so that a
    // bad file is reported here, at its key.
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| format!("{}: not a PEM certificate bundle: {e}", file.display()))?;
        roots.add(cert).map_err(|e| {
            format!(
                "{}: a certificate is not a usable CA certificate: {e}",
                file.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            file.display()
        ));
    }
    Ok(pem)
}
