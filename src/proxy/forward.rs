//! Talking to the backend: the pooled client (plain or TLS, see
//! [`super::tls`]), the request rewrite (hop-by-hop headers out, `Host`,
//! `X-Forwarded-*` and `Via` in), the check of the answer's framing and the
//! mapping of backend failures to 502/504.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{HttpConnector, capture_connection};
use hyper_util::rt::TokioExecutor;

use super::body::{ClientBodyError, ProxyBody};
use crate::config::UpstreamConfig;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Client headers that say where a request came from or ask to rewrite it,
/// beside `Forwarded` and every `X-Forwarded-*`. A backend (or a framework's
/// middleware) may act on any of them, so with `trust_forwarded = false`
/// they are removed before the proxy sets its own three, and with `true`
/// they are passed on and keyed ([`forwarding_headers`]).
const REWRITING: [&str; 11] = [
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
];

/// Whether `name` is a forwarding or request-rewriting header.
pub fn is_forwarding_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "forwarded" || n.starts_with("x-forwarded") || REWRITING.contains(&n)
}

/// The forwarding headers a client sent, in the request's order.
pub fn forwarding_headers(
    headers: &HeaderMap,
) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| is_forwarding_header(name))
}

/// The client's host, as the backend receives it in `X-Forwarded-Host`: the
/// `Host` header, or the authority of an absolute-form (or HTTP/2) target.
/// The key holds it, since a backend may build links or pick a tenant by it.
pub fn client_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a [u8]> {
    headers
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| uri.authority().map(|a| a.as_str().as_bytes()))
}
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Why the backend gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Refused, reset, unreachable, or closed before an answer: 502.
    #[error("{0}")]
    Unavailable(String),
    /// An https backend whose certificate does not verify (what failed is
    /// in the message): 502, like any backend that cannot be reached.
    #[error("{0}")]
    Certificate(String),
    /// No answer within `[upstream] timeout`: 504.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The body paused longer than `[upstream] idle_timeout`: 504.
    #[error("the answer paused for more than {0:?}")]
    Stalled(Duration),
    /// The client's own request body broke off while it streamed to the
    /// backend (bad framing past `max_request_body`): 400, the client's.
    #[error("{0}")]
    ClientBody(String),
}

/// Marks, in its extensions, a backend answer whose framing was invalid
/// (`Content-Length` with `Transfer-Encoding`, or a 204/304 announcing a
/// body). [`Upstream::send`] has already fixed its headers and dropped the
/// connection it came on; such an answer is never stored.
#[derive(Clone, Copy, Debug)]
pub struct InvalidFraming;

pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    scheme: Scheme,
    authority: Authority,
    /// The `Host` a plain http backend receives. An https one gets none
    /// from here: the client sets `Host` from the URL on an HTTP/1.1
    /// connection, and HTTP/2 carries the authority in `:authority` alone
    /// (nginx refuses both together, RFC 9113 section 8.3.1).
    host: Option<HeaderValue>,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    trust_forwarded: bool,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// An https backend: the TLS configuration and the name its
    /// certificate must hold, for the readiness probe's handshake.
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The backend's certificate failed to verify, and has not verified
    /// since: the warning is logged once per change, not per request.
    certificate_failing: AtomicBool,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig, trust_forwarded: bool) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        // The TLS connector below takes https URLs; plain ones pass through.
        connector.enforce_http(false);
        if cfg.ca_file.is_some() && cfg.url.scheme() != Some(&Scheme::HTTPS) {
            tracing::warn!(
                upstream = %cfg.url,
                "[upstream] ca_file is set but the backend is not https://; it is not used"
            );
        }
        let tls_config = super::tls::client_config(cfg);
        let tls = (cfg.url.scheme() == Some(&Scheme::HTTPS))
            .then(|| super::tls::server_name(&cfg.url))
            .flatten()
            .map(|name| (Arc::new(tls_config.clone()), name));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        let authority = cfg
            .url
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("127.0.0.1:8000"));
        let scheme = cfg.url.scheme().cloned().unwrap_or(Scheme::HTTP);
        let host = (scheme != Scheme::HTTPS).then(|| {
            HeaderValue::from_str(authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost"))
        });
        Upstream {
            client,
            scheme,
            authority,
            host,
            timeout: cfg.timeout,
            idle_timeout: cfg.idle_timeout,
            trust_forwarded,
            metrics: None,
            tls,
            certificate_failing: AtomicBool::new(false),
        }
    }

    /// Records backend latency in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Upstream {
        self.metrics = Some(metrics);
        self
    }

    /// Rewrites a client request for the backend, in place.
    pub fn prepare(&self, parts: &mut http::request::Parts, client: SocketAddr) {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .unwrap_or_else(|_| parts.uri.clone());
        std::mem::swap(&mut parts.uri, &mut uri);
        let client_uri = uri;

        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        if !self.trust_forwarded && forwarding_headers(headers).next().is_some() {
            let names: Vec<HeaderName> = forwarding_headers(headers)
                .map(|(name, _)| name.clone())
                .collect();
            for name in names {
                headers.remove(name);
            }
        }
        let client_host = headers.remove(header::HOST).or_else(|| {
            client_uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        if let Some(host) = &self.host {
            headers.insert(header::HOST, host.clone());
        }

        let ip = client.ip().to_string();
        let ip = HeaderValue::from_str(&ip).expect("an IP address is a valid header value");
        if self.trust_forwarded {
            let prior: Vec<&[u8]> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            let chain = if prior.is_empty() {
                ip
            } else {
                let mut joined = prior.join(&b", "[..]);
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(ip.as_bytes());
                HeaderValue::from_bytes(&joined).unwrap_or(ip)
            };
            headers.insert(&X_FORWARDED_FOR, chain);
            if !headers.contains_key(&X_FORWARDED_PROTO) {
                headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
            }
            if !headers.contains_key(&X_FORWARDED_HOST)
                && let Some(host) = client_host
            {
                headers.insert(&X_FORWARDED_HOST, host);
            }
        } else {
            headers.insert(&X_FORWARDED_FOR, ip);
            headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
            match client_host {
                Some(host) => headers.insert(&X_FORWARDED_HOST, host),
                None => headers.remove(&X_FORWARDED_HOST),
            };
        }
        append_via(headers, parts.version);
        // The backend connection is ours: HTTP/1.1 whatever the client
        // spoke, or HTTP/2 where an https backend chose h2 (the client then
        // speaks HTTP/2 whatever the request says).
        parts.version = Version::HTTP_11;
    }

    /// Sends a prepared request; bounded by `deadline` for the status and
    /// headers (the body is bounded by `idle_timeout`, enforced by whoever
    /// reads it).
    ///
    /// An answer with invalid framing (docs/contract.md section 7) comes back with its
    /// framing headers fixed to what was actually read, marked
    /// [`InvalidFraming`], and the connection it came on is never used again:
    /// whatever followed on it cannot be trusted to start the next answer.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let started = tokio::time::Instant::now();
        let connection = capture_connection(&mut req);
        let result = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
            Ok(Ok(mut resp)) => {
                if suspect_connection(resp.status(), resp.headers())
                    && let Some(conn) = connection.connection_metadata().as_ref()
                {
                    // A 304 may name its 200's length; but if its server
                    // sent those bytes too, they would start the next
                    // answer on this connection. A reconnect is cheap.
                    conn.poison();
                }
                if invalid_framing(resp.status(), resp.headers()) {
                    if let Some(conn) = connection.connection_metadata().as_ref() {
                        conn.poison();
                    }
                    tracing::debug!(status = %resp.status(), "backend answer with invalid framing");
                    let headers = resp.headers_mut();
                    // hyper read the body by `Transfer-Encoding`, or not at
                    // all on 204/304: a `Content-Length` can only disagree.
                    headers.remove(header::CONTENT_LENGTH);
                    headers.remove(header::TRANSFER_ENCODING);
                    resp.extensions_mut().insert(InvalidFraming);
                }
                Ok(resp)
            }
            Ok(Err(e)) if client_body_broke(&e) => Err(UpstreamError::ClientBody(describe(&e))),
            Ok(Err(e)) => Err(self.describe(&e)),
        };
        if let Some(m) = &self.metrics {
            m.backend(started.elapsed());
        }
        match &result {
            Err(UpstreamError::Certificate(detail)) => {
                if !self.certificate_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        backend = %self.authority,
                        "backend TLS certificate does not verify; its requests fail with 502 until it does: {detail}"
                    );
                }
            }
            Ok(_) => {
                if self.certificate_failing.load(Ordering::Relaxed)
                    && self.certificate_failing.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(backend = %self.authority, "backend TLS certificate verifies again");
                }
            }
            Err(_) => {}
        }
        result
    }

    /// The readiness probe's check (docs/operations.md, "The admin listener"): a TCP connection
    /// to the backend within `within`, and for an https backend a TLS
    /// handshake whose certificate verifies, as requests need.
    pub async fn reachable(&self, within: Duration) -> bool {
        let https = self.scheme == Scheme::HTTPS;
        let port = self
            .authority
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let addr = format!("{}:{port}", self.authority.host());
        let probe = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            match &self.tls {
                None if https => None,
                None => Some(()),
                Some((config, name)) => tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .ok()
                    .map(drop),
            }
        };
        matches!(tokio::time::timeout(within, probe).await, Ok(Some(())))
    }

    /// The most specific cause of a client error, for the 502 body: a
    /// certificate that did not verify says so and what failed.
    fn describe(&self, e: &hyper_util::client::legacy::Error) -> UpstreamError {
        if let Some(detail) = super::tls::tls_error(e)
            .and_then(|tls| super::tls::certificate_failure(tls, self.authority.host()))
        {
            return UpstreamError::Certificate(detail);
        }
        UpstreamError::Unavailable(describe(e))
    }
}

/// Framing RFC 9112 section 6 forbids: `Content-Length` together with
/// `Transfer-Encoding`, or a 204/304 that announces a body. A 304 may carry
/// the `Content-Length` its 200 would have had (RFC 9110 section 8.6), so
/// only `Transfer-Encoding` announces one there.
fn invalid_framing(status: StatusCode, headers: &HeaderMap) -> bool {
    let encoded = headers.contains_key(header::TRANSFER_ENCODING);
    let sized = headers.contains_key(header::CONTENT_LENGTH);
    if encoded && sized {
        return true;
    }
    match status {
        StatusCode::NOT_MODIFIED => encoded,
        StatusCode::NO_CONTENT => {
            encoded
                || headers
                    .get_all(header::CONTENT_LENGTH)
                    .iter()
                    .any(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0))
        }
        _ => false,
    }
}

/// A valid answer after which the connection may still hold bytes of it: a
/// 304 with a `Content-Length` above 0.
fn suspect_connection(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::NOT_MODIFIED
        && headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The most specific cause of a client error, for the 502 body.
/// Whether the request failed because the client's body did
/// ([`ClientBodyError`] somewhere in its sources).
fn client_body_broke(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<ClientBodyError>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = if e.is_connect() {
        "cannot connect to the backend".to_string()
    } else {
        "the backend closed the connection before answering".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Removes the hop-by-hop headers of RFC 9110 section 7.6.1, and those the
/// `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
}

fn append_via(headers: &mut HeaderMap, version: Version) {
    let ours: &'static str = match version {
        Version::HTTP_10 => "1.0 leafcache",
        Version::HTTP_2 => "2 leafcache",
        _ => "1.1 leafcache",
    };
    headers.append(header::VIA, HeaderValue::from_static(ours));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(trust: bool) -> Upstream {
        let cfg = UpstreamConfig {
            url: Uri::from_static("http://127.0.0.1:9000"),
            ca_file: None,
            ca_pem: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        };
        Upstream::new(&cfg, trust)
    }

    fn request(headers: &[(&'static str, &'static str)]) -> http::request::Parts {
        let mut b = Request::builder().uri("/api/v1/search?q=milk");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const CLIENT: &str = "10.1.2.3:5555";

    #[tokio::test]
    async fn rewrites_host_and_sets_forwarded_headers() {
        let mut p = request(&[("host", "shop.example"), ("x-forwarded-for", "6.6.6.6")]);
        upstream(false).prepare(&mut p, CLIENT.parse().unwrap());
        assert_eq!(p.uri, "http://127.0.0.1:9000/api/v1/search?q=milk");
        assert_eq!(p.headers["host"], "127.0.0.1:9000");
        assert_eq!(p.headers["x-forwarded-host"], "shop.example");
        assert_eq!(p.headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(p.headers["x-forwarded-proto"], "http");
        assert_eq!(p.headers["via"], "1.1 leafcache");
    }

    #[tokio::test]
    async fn trusted_forwarded_headers_are_extended() {
        let mut p = request(&[
            ("host", "shop.example"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "edge.example"),
        ]);
        upstream(true).prepare(&mut p, CLIENT.parse().unwrap());
        assert_eq!(p.headers["x-forwarded-for"], "6.6.6.6, 10.1.2.3");
        assert_eq!(p.headers["x-forwarded-proto"], "https");
        assert_eq!(p.headers["x-forwarded-host"], "edge.example");
    }

    #[test]
    fn framing_that_cannot_be_trusted_is_recognised() {
        let framed = |status: u16, headers: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.append(*k, HeaderValue::from_static(v));
            }
            invalid_framing(StatusCode::from_u16(status).unwrap(), &map)
        };
        let both = [("content-length", "3"), ("transfer-encoding", "chunked")];
        assert!(framed(200, &both));
        assert!(framed(204, &[("content-length", "5")]));
        assert!(framed(304, &[("transfer-encoding", "chunked")]));
        assert!(framed(204, &[("content-length", "x")]));
        assert!(!framed(200, &[("content-length", "3")]));
        assert!(!framed(200, &[("transfer-encoding", "chunked")]));
        assert!(!framed(204, &[("content-length", "0")]));
        assert!(!framed(304, &[]));
        // RFC 9110 section 8.6: the length the 200 would have had.
        assert!(!framed(304, &[("content-length", "5")]));
    }

    #[tokio::test]
    async fn hop_by_hop_headers_and_connection_named_ones_go() {
        let mut p = request(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
        ]);
        upstream(false).prepare(&mut p, CLIENT.parse().unwrap());
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "proxy-authorization",
        ] {
            assert!(!p.headers.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(p.headers["x-kept"], "yes");
    }
}
