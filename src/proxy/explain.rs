//! `leafcache explain` and `POST /v1/explain` (docs/contract.md section 1): what the
//! proxy would do with a request under the config, without contacting the
//! backend. It runs the request flow's own steps (route matching, the bypass
//! rules, field extraction, key derivation), so the hash it shows is the
//! hash in the real request's `Cache-Status`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::request::{self, Observe, ReadCtx, Routed};
use super::respond;
use crate::config::{Config, Freshness, Scope};
use crate::key::{BodyKey, KEY_VERSION, KeyInput};
use crate::policy::{self, BypassReason};
use crate::route::{self, Identity};

/// A request to explain, as a client would send it.
#[derive(Clone, Debug, Default)]
pub struct ExplainRequest {
    pub method: String,
    /// Path and query, as sent (`/api/v1/search?q=milk`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What `explain` saw on its way through the request steps.
struct Seen<'a> {
    /// The route's `vary_headers`, which name the key's `vary` values.
    vary_names: &'a [HeaderName],
    fields: Option<Value>,
    key: Option<Value>,
}

impl Observe for Seen<'_> {
    fn fields(&mut self, query: Option<&str>, normalized: Option<&str>, identity: &Identity) {
        self.fields = Some(json!({
            "query": query,
            "query_normalized": normalized,
            "identity": {
                "user_id": identity.user_id,
                "user_uuid": identity.user_uuid,
                "session_id": identity.session_id,
            },
        }));
    }

    fn key(&mut self, input: &KeyInput<'_>) {
        self.key = Some(key_inputs(input, self.vary_names));
    }
}

/// Explains `req` under `config`: one JSON object (the output of
/// `explain --json`). Fails only when the request itself cannot be built
/// (a bad method, target or header).
pub fn explain(config: &Config, req: &ExplainRequest) -> Result<Value, String> {
    let parts = build(req)?;
    let mut out = json!({
        "request": {
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
        },
    });
    let Some(m) = route::match_route(&config.routes, &parts.method, parts.uri.path()) else {
        out["decision"] = json!("unmatched");
        out["note"] = json!("no route matches: forwarded as is, never cached or logged");
        return Ok(out);
    };
    let route = m.route;
    out["route"] = json!(route.name);
    out["scope"] = json!(scope_name(route.scope));
    out["freshness"] = json!(match route.freshness {
        Freshness::Route => "route",
        Freshness::Origin => "origin",
    });
    let arrival = request::arrival(config, &parts, m.literal);
    let early = policy::bypass_on_arrival(route, &arrival).or_else(|| {
        (req.body.len() > config.max_request_body).then_some(BypassReason::BodyTooLarge)
    });
    if let Some(reason) = early {
        bypass(&mut out, reason, false);
        return Ok(out);
    }
    let mut seen = Seen {
        vary_names: &route.vary_headers,
        fields: None,
        key: None,
    };
    let name: Arc<str> = Arc::from(route.name.as_str());
    let ctx = ReadCtx {
        started: Instant::now(),
        route_name: &name,
        literal: m.literal,
    };
    let routed = request::decide_observed(config, route, parts, req.body.clone(), ctx, &mut seen);
    if let Some(Value::Object(fields)) = seen.fields {
        for (k, v) in fields {
            out[k] = v;
        }
    }
    let has_query = out["query"].is_string();
    match routed {
        Routed::Bypass(reason, ..) => bypass(&mut out, reason, route.log && has_query),
        Routed::ClientError(e) => {
            out["decision"] = json!("client_error");
            out["error"] = json!(e.to_string());
        }
        Routed::Cacheable(c) => {
            out["decision"] = json!("cacheable");
            out["key"] = seen.key.unwrap_or(Value::Null);
            out["hash"] = json!(c.hash.to_hex());
            out["keys"] = lookup_keys(&c.keys, c.user_key_index);
            out["refresh"] = json!(c.refresh);
            out["logged"] = json!(route.log && has_query);
        }
    }
    Ok(out)
}

fn bypass(out: &mut Value, reason: BypassReason, logged: bool) {
    out["decision"] = json!("bypass");
    out["bypass"] = json!({
        "reason": reason.detail(),
        "cache_status": respond::bypass_status(reason).to_str().unwrap_or_default(),
    });
    out["logged"] = json!(logged && reason.logged());
}

/// The request's parts: the method, the target and the headers.
fn build(req: &ExplainRequest) -> Result<http::request::Parts, String> {
    let method = if req.method.is_empty() {
        Method::GET
    } else {
        Method::from_bytes(req.method.as_bytes())
            .map_err(|_| format!("{:?} is not an HTTP method", req.method))?
    };
    let uri: http::Uri = req
        .target
        .parse()
        .map_err(|e| format!("{:?} is not a request target: {e}", req.target))?;
    if uri.path_and_query().is_none() || !uri.path().starts_with('/') {
        return Err(format!(
            "{:?} is not a path and query (it must start with /)",
            req.target
        ));
    }
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in &req.headers {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("the value of {name} is not a header value"))?;
        builder = builder.header(name, value);
    }
    let (parts, ()) = builder.body(()).map_err(|e| e.to_string())?.into_parts();
    Ok(parts)
}

/// Every input of the key (docs/contract.md section 3, step 5), as it is hashed.
fn key_inputs(input: &KeyInput<'_>, vary_names: &[HeaderName]) -> Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let body = match &input.body {
        BodyKey::None => Value::Null,
        // Hashed in canonical form: object members sorted at every depth.
        BodyKey::Json(doc) => json!({ "json": doc }),
        BodyKey::Raw(bytes) => json!({ "raw": text(bytes), "bytes": bytes.len() }),
    };
    json!({
        "version": text(KEY_VERSION),
        "route": input.route,
        "method": input.method,
        "path": input.path,
        "query": input.query,
        "body": body,
        "params": input.params,
        // One value per `vary_headers` name, in config order (none on an
        // origin route, whose variants follow the answer's own Vary).
        "vary": vary_names
            .iter()
            .zip(input.vary)
            .map(|(name, value)| json!({ "name": name.as_str(), "value": value.map(text) }))
            .collect::<Vec<_>>(),
        "headers": input
            .headers
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": text(value) }))
            .collect::<Vec<_>>(),
    })
}

/// The keys looked up, in order, with their scope.
fn lookup_keys(keys: &[String], user_key_index: Option<usize>) -> Value {
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let scope = if Some(i) == user_key_index {
                "user"
            } else {
                "global"
            };
            json!({ "scope": scope, "key": key })
        })
        .collect()
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::User => "user",
        Scope::Global => "global",
        Scope::Auto => "auto",
        Scope::Off => "off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "[upstream]\nurl = \"http://127.0.0.1:9\"\n\
            [[route]]\nname = \"search\"\npath = \"/s\"\nmethods = [\"GET\", \"POST\"]\n\
            query = [\"json:/query\", \"query:q\"]\nscope = \"auto\"\n\
            vary_headers = [\"accept-language\"]\n\
            [[route]]\nname = \"orders\"\npath_prefix = \"/order\"\nscope = \"off\"\n";
        Config::parse(text, None).expect("a valid test config")
    }

    fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> ExplainRequest {
        ExplainRequest {
            method: method.into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn a_cacheable_search_shows_its_fields_key_inputs_and_keys() {
        let headers = [
            ("host", "shop.example"),
            ("x-user-id", "u1"),
            ("accept-language", "en"),
        ];
        let out = explain(
            &config(),
            &req("GET", "/s?q=Milk%20%20Bread&page=2", &headers, ""),
        )
        .expect("explained");
        assert_eq!(out["decision"], "cacheable");
        assert_eq!(out["route"], "search");
        assert_eq!(out["query"], "Milk  Bread");
        assert_eq!(out["query_normalized"], "milk bread");
        assert_eq!(out["identity"]["user_id"], "u1");
        assert_eq!(out["key"]["params"], json!(["page=2"]));
        assert_eq!(out["key"]["vary"][0]["name"], "accept-language");
        assert_eq!(out["key"]["vary"][0]["value"], "en");
        assert_eq!(out["key"]["headers"][0]["name"], "host");
        let hash = out["hash"].as_str().expect("a hash");
        assert_eq!(hash.len(), 64);
        assert_eq!(out["keys"][0]["scope"], "user");
        assert!(
            out["keys"][1]["key"]
                .as_str()
                .expect("a key")
                .ends_with(hash)
        );
    }

    #[test]
    fn the_hash_changes_with_a_keyed_input_only() {
        let c = config();
        let hash = |target: &str, lang: &str| {
            let headers = [("host", "h"), ("accept-language", lang)];
            explain(&c, &req("GET", target, &headers, "")).expect("explained")["hash"].clone()
        };
        assert_eq!(hash("/s?q=milk", "en"), hash("/s?q=%20MILK", "en"));
        assert_ne!(hash("/s?q=milk", "en"), hash("/s?q=milk", "de"));
        assert_ne!(hash("/s?q=milk", "en"), hash("/s?q=milk&x=1", "en"));
    }

    #[test]
    fn bypasses_name_their_reason_and_cache_status() {
        let c = config();
        let out = explain(&c, &req("POST", "/order/1", &[], "{}")).expect("explained");
        assert_eq!(out["decision"], "bypass");
        assert_eq!(out["bypass"]["reason"], "scope-off");
        let out =
            explain(&c, &req("GET", "/s?q=milk", &[("cookie", "s=1")], "")).expect("explained");
        assert_eq!(out["bypass"]["reason"], "credentialed");
        assert_eq!(
            out["bypass"]["cache_status"],
            "leafcache; fwd=bypass; detail=credentialed"
        );
        assert_eq!(out["query_normalized"], "milk");
        let out = explain(&c, &req("GET", "/elsewhere", &[], "")).expect("explained");
        assert_eq!(out["decision"], "unmatched");
    }

    #[test]
    fn a_bad_request_is_a_clear_error() {
        let c = config();
        assert!(explain(&c, &req("G ET", "/s", &[], "")).is_err());
        assert!(explain(&c, &req("GET", "s?q=1", &[], "")).is_err());
        assert!(explain(&c, &req("GET", "/s", &[("bad name", "v")], "")).is_err());
    }
}
