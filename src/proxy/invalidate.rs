//! Invalidation after unsafe requests (docs/contract.md 3b, RFC 9111 section 4.4): a
//! non-error answer to POST, PUT, DELETE, PATCH or any method not known to be
//! safe, on a URI that an origin route covers, drops the stored entries of
//! that URI and of its same-origin `Location` and `Content-Location`.
//!
//! The entries dropped are those a GET from the same client would use: the
//! global one, and the client's own user entry on user-scoped routes (other
//! users' entries of the URI cannot be named without scanning Redis).

use std::time::Duration;

use http::header::HOST;
use http::{HeaderMap, Method, Response, Uri};

use super::Proxy;
use super::body::ProxyBody;
use super::request;
use crate::cache::invalidation::{self, PurgeRequest};
use crate::config::{Freshness, RouteConfig};
use crate::http_cache::invalidate;

/// How long an unsafe request's answer waits for Redis to drop the entries.
const INVALIDATION_WAIT: Duration = Duration::from_millis(500);

/// An unsafe request whose answer may invalidate.
pub(super) struct Unsafe {
    uri: Uri,
    headers: HeaderMap,
}

impl Proxy {
    /// The request, when its method is unsafe and a GET of its path would be
    /// served by an origin route.
    pub(super) fn unsafe_request(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Unsafe> {
        if !invalidate::is_unsafe(method) {
            return None;
        }
        self.origin_route_for(uri.path())?;
        Some(Unsafe {
            uri: uri.clone(),
            headers: headers.clone(),
        })
    }

    /// Drops what the answer to an unsafe request invalidates.
    pub(super) async fn invalidate_after(&self, req: Unsafe, resp: &Response<ProxyBody>) {
        if !invalidate::invalidates(resp.status()) {
            return;
        }
        let host = req.headers.get(HOST).and_then(|h| h.to_str().ok());
        let mut targets = vec![req.uri.clone()];
        for pq in invalidate::related_targets(resp.headers(), req.uri.path(), host) {
            if let Ok(uri) = pq.parse::<Uri>() {
                targets.push(uri);
            }
        }
        let prefix = &self.config.redis.key_prefix;
        let mut doomed = Vec::new();
        let mut notices = Vec::new();
        for uri in targets {
            let Some((index, route)) = self.origin_route_for(uri.path()) else {
                continue;
            };
            let name = &self.route_names[index];
            let Some(c) = request::keys_for_get(&self.config, route, name, uri, &req.headers)
            else {
                continue;
            };
            for (i, key) in c.keys.iter().enumerate() {
                let user_id = (Some(i) == c.user_key_index)
                    .then(|| c.user_id.clone())
                    .flatten();
                let request = PurgeRequest {
                    user_id,
                    hash: Some(c.hash.to_hex()),
                    ..Default::default()
                };
                notices.push(invalidation::notice(prefix, &request));
                doomed.push(key.clone());
            }
        }
        if !doomed.is_empty() {
            tracing::debug!(keys = doomed.len(), "invalidated after an unsafe request");
            self.cache
                .invalidate(doomed, notices, INVALIDATION_WAIT)
                .await;
        }
    }

    /// The route a GET of `path` would take, when it is an origin route.
    fn origin_route_for(&self, path: &str) -> Option<(usize, &RouteConfig)> {
        crate::route::match_route(&self.config.routes, &Method::GET, path)
            .filter(|m| m.route.freshness == Freshness::Origin)
            .map(|m| (m.index, m.route))
    }
}
