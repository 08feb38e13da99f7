//! The `[[route]]` tables: schema, defaults and the checks across a route's keys.

use std::time::Duration;

use serde::Deserialize;

use super::positive;
use crate::config::locate::{Locator, Seg};
use crate::config::units::Dur;
use crate::config::values::{
    HeaderSpec, MethodName, Pattern, Pointer, SourceSpec, UrlPath, one_line,
};
use crate::config::{ConfigError, Freshness, Methods, PathMatch, RouteConfig, Scope, Source};

/// `methods` when a route leaves it out: GET and HEAD, except on a
/// `scope = "off"` route, which matches every method so that order and cart
/// POSTs are matched and marked BYPASS rather than passed through unmarked.
fn default_methods(scope: Scope) -> Methods {
    match scope {
        Scope::Off => Methods::Any,
        _ => Methods::Only(vec![http::Method::GET, http::Method::HEAD]),
    }
}

fn pointer(p: &str) -> Pointer {
    Pointer(p.to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    name: String,
    methods: Option<Vec<MethodName>>,
    path: Option<UrlPath>,
    path_prefix: Option<UrlPath>,
    #[serde(default)]
    query: Vec<SourceSpec>,
    #[serde(default)]
    scope: Scope,
    ttl: Option<Dur>,
    #[serde(default)]
    freshness: Freshness,
    #[serde(default)]
    heuristic: bool,
    log: Option<bool>,
    #[serde(default)]
    share_credentialed: bool,
    #[serde(default)]
    key_ignore: Vec<SourceSpec>,
    #[serde(default)]
    vary_headers: Vec<HeaderSpec>,
    #[serde(default)]
    bypass_query: Vec<Pattern>,
    #[serde(default)]
    bypass_intents: Vec<String>,
    #[serde(default = "default_intent")]
    intent: Pointer,
    #[serde(default = "default_confidence")]
    confidence: Pointer,
    #[serde(default = "default_results")]
    results: Pointer,
    #[serde(default = "default_product_id")]
    product_id: Pointer,
    #[serde(default = "default_supplier_id")]
    supplier_id: Pointer,
}

fn default_intent() -> Pointer {
    pointer("/intent")
}
fn default_confidence() -> Pointer {
    pointer("/confidence")
}
fn default_results() -> Pointer {
    pointer("/products")
}
fn default_product_id() -> Pointer {
    pointer("/product_id")
}
fn default_supplier_id() -> Pointer {
    pointer("/supplier")
}

impl RawRoute {
    pub fn into_route(self, loc: &Locator, i: usize) -> Result<RouteConfig, ConfigError> {
        let at = |key: &'static str| [Seg::Key("route"), Seg::Index(i), Seg::Key(key)];
        let header = [Seg::Key("route"), Seg::Index(i)];
        if self.name.trim().is_empty() {
            return Err(loc.error(&at("name"), "route name must not be empty"));
        }
        let path = match (self.path, self.path_prefix) {
            (Some(p), None) => PathMatch::Exact(p.0),
            (None, Some(p)) => PathMatch::Prefix(p.0),
            (Some(_), Some(_)) => {
                return Err(loc.error(
                    &at("path_prefix"),
                    "set either path (exact) or path_prefix, not both",
                ));
            }
            (None, None) => {
                return Err(loc.error(
                    &header,
                    format!("route {:?} needs path (exact) or path_prefix", self.name),
                ));
            }
        };
        let methods = match self.methods {
            None => default_methods(self.scope),
            Some(list) if list.is_empty() => {
                return Err(loc.error(&at("methods"), "a route needs at least one method"));
            }
            Some(list) => Methods::Only(list.into_iter().map(|m| m.0).collect()),
        };
        let query: Vec<Source> = self.query.into_iter().map(|s| s.0).collect();
        let log = match self.log {
            Some(true) if query.is_empty() => {
                return Err(loc.error(
                    &at("log"),
                    "log = true needs a query rule (query = [\"json:/query\", ...]) to know what was searched",
                ));
            }
            Some(log) => log,
            None => !query.is_empty(),
        };
        if self.heuristic && self.freshness != Freshness::Origin {
            return Err(loc.error(
                &at("heuristic"),
                "heuristic applies only to routes with freshness = \"origin\"",
            ));
        }
        let ttl = match self.ttl {
            Some(d) => Some(positive(loc, &at("ttl"), d, Duration::from_nanos(1))?),
            None => None,
        };
        let mut key_ignore = Vec::with_capacity(self.key_ignore.len());
        for (j, spec) in self.key_ignore.into_iter().enumerate() {
            if let Source::Header(_) = spec.0 {
                let path = [
                    Seg::Key("route"),
                    Seg::Index(i),
                    Seg::Key("key_ignore"),
                    Seg::Index(j),
                ];
                return Err(loc.error(
                    &path,
                    "key_ignore takes json: and query: sources only (headers enter the key only through vary_headers)",
                ));
            }
            key_ignore.push(spec.0);
        }
        let patterns: Vec<String> = self.bypass_query.into_iter().map(|p| p.0).collect();
        let bypass_query = regex::RegexSet::new(&patterns).map_err(|e| {
            loc.error(
                &at("bypass_query"),
                format!("invalid patterns: {}", one_line(&e.to_string())),
            )
        })?;
        Ok(RouteConfig {
            name: self.name,
            methods,
            path,
            query,
            scope: self.scope,
            ttl,
            freshness: self.freshness,
            heuristic: self.heuristic,
            log,
            share_credentialed: self.share_credentialed,
            key_ignore,
            vary_headers: self.vary_headers.into_iter().map(|h| h.0).collect(),
            bypass_query,
            bypass_query_patterns: patterns,
            bypass_intents: self.bypass_intents,
            intent: self.intent.0,
            confidence: self.confidence.0,
            results: self.results.0,
            product_id: self.product_id.0,
            supplier_id: self.supplier_id.0,
        })
    }
}
