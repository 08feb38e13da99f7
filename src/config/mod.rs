//! proxy.toml: the schema with its defaults, validation with precise errors,
//! and the flag/environment overrides (docs/contract.md sections 1 and 2).
//!
//! Everything is checked here, before any port is bound: the rest of the crate
//! receives a `Config` whose values are all usable as they are.
//!
//! - `raw` (and `raw/route.rs`): the serde schema, its defaults and the checks across fields,
//! - `values`, `units`: parsers of single values (sources, URLs, durations, sizes),
//! - `locate`: file/line/column/field for every error.

mod locate;
mod raw;
mod units;
mod values;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use locate::{Locator, line_col};

pub use crate::redis::RedisConfig;

pub use units::{parse_duration, parse_size};

/// The shipped proxy.toml, served when no file is given or found.
const BUILTIN: &str = include_str!("../../proxy.toml");
const BUILTIN_NAME: &str = "<built-in proxy.toml>";

#[derive(Clone)]
pub struct Config {
    /// The file it was read from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Metrics, health and the admin API.
    pub admin_listen: SocketAddr,
    /// Bodies up to this size are read for the key and the log; larger ones stream through.
    pub max_request_body: usize,
    /// A client must send a request's headers within this long, or its
    /// connection is closed: a slow-loris client cannot hold a connection.
    pub header_read_timeout: Duration,
    /// Client connections served at once; at the bound the proxy stops
    /// accepting, so file descriptors and memory stay bounded under a flood.
    pub max_connections: usize,
    /// Keep and extend the client's X-Forwarded-* headers instead of replacing them.
    pub trust_forwarded: bool,
    /// Required when `admin_listen` is not loopback (see `validate_listeners`).
    pub admin_token: Option<String>,
    pub upstream: UpstreamConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub identity: IdentityConfig,
    pub events: EventsConfig,
    /// In file order: the first route that matches a request wins.
    pub routes: Vec<RouteConfig>,
}

/// Secrets stay out of logs: the token and the Redis password are redacted.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("source", &self.source)
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("max_request_body", &self.max_request_body)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("trust_forwarded", &self.trust_forwarded)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("upstream", &self.upstream)
            .field("redis", &self.redis)
            .field("cache", &self.cache)
            .field("identity", &self.identity)
            .field("events", &self.events)
            .field("routes", &self.routes)
            .finish()
    }
}

#[derive(Clone)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host[:port]`, without a path:
    /// requests keep their own path.
    pub url: http::uri::Uri,
    /// `ca_file`, resolved against the config file's folder: extra roots
    /// an https backend's certificate may chain to (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Its PEM text, read and checked at load.
    pub ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    /// Until the backend's status and headers arrive.
    pub timeout: Duration,
    /// The longest pause between two chunks of the backend's body: a slow
    /// but steady body is never cut, a stalled one is.
    pub idle_timeout: Duration,
}

/// The CA's PEM text is left out: the file names it.
impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("url", &self.url)
            .field("ca_file", &self.ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Default freshness of a stored answer.
    pub ttl: Duration,
    /// Size of the in-process tier; 0 disables it.
    pub l1_max_bytes: u64,
    /// An L1 copy lives at most this long (and never past its own freshness).
    pub l1_ttl: Duration,
    /// Larger responses are passed through, not stored.
    pub max_object_bytes: usize,
    /// How long past freshness a copy may be served when the backend fails.
    pub stale_if_error: Duration,
    pub cacheable_status: Vec<u16>,
    /// How long a key whose answer could not be stored skips coalescing.
    pub hit_for_pass: Duration,
    /// Refetch the global entries of this many of the day's most popular
    /// queries shortly before they expire (docs/contract.md section 9); 0 is off.
    pub refresh_ahead: usize,
    /// At most this many refresh-ahead backend requests per second.
    pub refresh_rate: f64,
}

/// Where each identity field is read from; the first source that yields a value wins.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub user_id: Vec<Source>,
    pub user_uuid: Vec<Source>,
    pub session_id: Vec<Source>,
    /// SHA-256 the user id before it is keyed and logged (e.g. when it is a bearer token).
    pub hash_user_id: bool,
    /// The longest identity value, in bytes, a request may carry and still
    /// be cached and logged with it: client-chosen ids end up in cache keys,
    /// hit-for-pass marks and Redis key names, so their length is bounded
    /// (docs/keys-and-security.md, "Security model"). Compared with the value as kept: with
    /// `hash_user_id`, the 64-digit hash.
    pub max_bytes: usize,
}

/// Where a value is found in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `header:x-user-id`, name lowercased.
    Header(http::HeaderName),
    /// `json:/user_id`, an RFC 6901 pointer into the JSON body.
    Json(String),
    /// `query:user_id`, a query-string parameter.
    Query(String),
}

#[derive(Clone, Debug)]
pub struct EventsConfig {
    pub queue_capacity: usize,
    pub batch_max: usize,
    pub flush_interval: Duration,
    /// How long the shared counters (products, queries, suppliers, intents,
    /// hours, cache results) are summed in process before they are written:
    /// one `ZINCRBY` per distinct member per interval, however many
    /// searches counted it.
    pub counter_flush: Duration,
    /// `user:<id>:searches` keeps the last N.
    pub history_limit: usize,
    /// EXPIRE set on history, counter and feedback keys.
    pub retention: Duration,
    /// EXPIRE set on `search:<id>` and `searches:daily:<date>`: the export
    /// is the durable copy of the records.
    pub record_retention: Duration,
    /// Disk buffer while Redis is unreachable; absolute once loaded.
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Unique among routes; part of every cache key of the route.
    pub name: String,
    pub methods: Methods,
    pub path: PathMatch,
    /// Where the search text is; empty for a plain caching route.
    pub query: Vec<Source>,
    pub scope: Scope,
    /// Overrides `cache.ttl` for this route.
    pub ttl: Option<Duration>,
    pub freshness: Freshness,
    /// Origin routes only: heuristic freshness for answers without explicit freshness.
    pub heuristic: bool,
    pub log: bool,
    /// Requests with `Authorization` or `Cookie` and no user id may use the
    /// global scope; off by default, as RFC 9111 section 3.5 and Varnish's
    /// default say, because a backend may personalize by them.
    pub share_credentialed: bool,
    /// Volatile body fields or query params left out of the key (never headers).
    pub key_ignore: Vec<Source>,
    /// Request headers that enter the key, lowercased.
    pub vary_headers: Vec<http::HeaderName>,
    /// A query matching any of these is forwarded uncached.
    pub bypass_query: regex::RegexSet,
    /// The source text of `bypass_query`, for display.
    pub bypass_query_patterns: Vec<String>,
    /// Answers with one of these intents are not stored.
    pub bypass_intents: Vec<String>,
    /// JSON pointers into the backend's response.
    pub intent: String,
    pub confidence: String,
    pub results: String,
    /// Relative to each result.
    pub product_id: String,
    /// Relative to each result.
    pub supplier_id: String,
}

impl RouteConfig {
    pub fn matches(&self, method: &http::Method, path: &str) -> bool {
        self.methods.contains(method) && self.path.matches(path)
    }
}

/// The methods a route matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Methods {
    /// Every method: the default of `scope = "off"` routes.
    Any,
    Only(Vec<http::Method>),
}

impl Methods {
    pub fn contains(&self, method: &http::Method) -> bool {
        match self {
            Methods::Any => true,
            Methods::Only(list) => list.contains(method),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        }
    }

    /// As [`PathMatch::matches`], ASCII case ignored.
    pub fn matches_ignoring_case(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path.eq_ignore_ascii_case(p),
            PathMatch::Prefix(p) => path
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
        }
    }
}

/// Whose entry an answer is stored under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One entry per user id (global when the request has none).
    #[default]
    User,
    /// One entry shared by everyone.
    Global,
    /// Global for `Cache-Control: public` answers, per user otherwise.
    Auto,
    /// Never cached.
    Off,
}

/// Who decides how long an answer stays fresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Freshness {
    /// The route's `ttl`, shortened by the backend's max-age.
    #[default]
    Route,
    /// RFC 9111 semantics of the backend's headers (docs/contract.md 3b).
    Origin,
}

/// Values given on the command line; `None` where the flag was absent.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub redis_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is wrong: where and which field.
    #[error("{path}:{line}:{column}: {field}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    /// A flag or environment variable is wrong.
    #[error("{origin}: {message}")]
    Override { origin: String, message: String },
    #[error("{message}")]
    Listener { message: String },
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, Some(path))
    }

    /// Parses and validates config text; `path` names it in errors and
    /// anchors a relative `events.spool_dir`, `redis.tls_ca_file` and
    /// `upstream.ca_file`.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let path_text = path.map_or_else(|| BUILTIN_NAME.to_owned(), |p| p.display().to_string());
        let syntax_error = |e: toml::de::Error| {
            let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
            ConfigError::Invalid {
                path: path_text.clone(),
                line,
                column,
                field: "syntax".to_owned(),
                message: e.message().trim().to_owned(),
            }
        };
        let de = toml::Deserializer::parse(text).map_err(syntax_error)?;
        let loc = Locator::new(text, path_text.clone());
        let raw: raw::RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = serde_field(&e.path().to_string(), e.inner().message());
            let inner = e.into_inner();
            loc.error_at_span(inner.span(), field, inner.message().trim().to_owned())
        })?;
        raw.into_config(&loc, path)
    }

    /// The shipped proxy.toml, used when no `--config` is given and
    /// `./proxy.toml` does not exist.
    pub fn builtin() -> Config {
        Config::parse(BUILTIN, None).expect("the shipped proxy.toml is valid (tested)")
    }

    /// Flags override the environment, which overrides the file.
    /// `env` looks a variable up (tests pass a map instead of the process
    /// environment); an empty variable counts as unset.
    pub fn apply_overrides(
        &mut self,
        flags: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let bad = |origin: &str| {
            let origin = origin.to_owned();
            move |message| ConfigError::Override { origin, message }
        };

        if let Some(v) = &flags.listen {
            self.listen = values::parse_socket_addr(v).map_err(bad("--listen"))?;
        } else if let Some(v) = env("LEAFCACHE_LISTEN") {
            self.listen = values::parse_socket_addr(&v).map_err(bad("LEAFCACHE_LISTEN"))?;
        } else if let Some(v) = env("PORT") {
            let port: u16 = v
                .trim()
                .parse()
                .map_err(|_| bad("PORT")(format!("invalid port {v:?} (use 1-65535)")))?;
            self.listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        }

        if let Some(v) = &flags.upstream {
            self.upstream.url = values::parse_upstream_url(v).map_err(bad("--upstream"))?;
        } else if let Some(v) = env("LEAFCACHE_UPSTREAM") {
            self.upstream.url =
                values::parse_upstream_url(&v).map_err(bad("LEAFCACHE_UPSTREAM"))?;
        }

        if let Some(v) = &flags.redis_url {
            self.redis.url = values::parse_redis_url(v).map_err(bad("--redis-url"))?;
        } else if let Some(v) = env("REDIS_URL") {
            self.redis.url = values::parse_redis_url(&v).map_err(bad("REDIS_URL"))?;
        }

        if let Some(token) = env("LEAFCACHE_ADMIN_TOKEN") {
            // Trimmed as the file's token and the presented bearer are.
            let token = token.trim();
            if token.is_empty() {
                return Err(bad("LEAFCACHE_ADMIN_TOKEN")(
                    "admin_token must not be empty".to_owned(),
                ));
            }
            self.admin_token = Some(token.to_owned());
        }
        Ok(())
    }

    /// Checks the listeners once overrides are applied: the admin API can
    /// purge the cache and read every user's history, so off loopback it
    /// needs a token.
    pub fn validate_listeners(&self) -> Result<(), ConfigError> {
        if !self.admin_listen.ip().is_loopback() && self.admin_token.is_none() {
            return Err(ConfigError::Listener {
                message: format!(
                    "admin_listen {} is not loopback: set admin_token (or LEAFCACHE_ADMIN_TOKEN), or listen on 127.0.0.1",
                    self.admin_listen
                ),
            });
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(ConfigError::Listener {
                message: format!("listen and admin_listen are both {}", self.listen),
            });
        }
        Ok(())
    }
}

/// serde reports a missing key at the enclosing table (unknown keys come
/// with their own path already); name the key itself, as the user looks for it.
fn serde_field(path: &str, message: &str) -> String {
    let path = if path == "." { "" } else { path };
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (missing, path) {
        (Some(key), "") => key.to_owned(),
        (Some(key), _) => format!("{path}.{key}"),
        (None, "") => "(top level)".to_owned(),
        (None, _) => path.to_owned(),
    }
}
