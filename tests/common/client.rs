//! A tiny HTTP/1.1 client: one connection per request, headers in the order
//! given, every exchange bounded.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::WAIT;

/// One HTTP/1.1 request on its own connection, headers sent in the given order.
#[derive(Clone)]
pub struct Req {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    pub fn new(addr: SocketAddr, method: &str, path: &str) -> Req {
        Req {
            addr,
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Appends a header (a second call with the same name adds a second line).
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn json(self, value: &Value) -> Req {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// A body sent byte for byte (use this to control JSON key order).
    pub fn body(mut self, body: impl Into<Bytes>) -> Req {
        self.body = body.into();
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str());
        if !self.has_header("host") {
            builder = builder.header("host", self.addr.to_string());
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(Full::new(self.body.clone()))
            .expect("test requests are valid")
    }

    async fn try_send_streaming(&self) -> Result<Response<Incoming>, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        sender
            .send_request(self.build())
            .await
            .map_err(|e| format!("send: {e}"))
    }

    pub async fn try_send(&self) -> Result<Resp, String> {
        let response = self.try_send_streaming().await?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("read body: {e}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Sends and reads the whole answer, bounded by [`WAIT`].
    pub async fn send(&self) -> Resp {
        match tokio::time::timeout(WAIT, self.try_send()).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => panic!("{} {} failed: {e}", self.method, self.path),
            Err(_) => panic!(
                "{} {} got no answer within {WAIT:?}",
                self.method, self.path
            ),
        }
    }

    /// Sends and returns once the head arrives; the body is read by the caller.
    pub async fn send_streaming(&self) -> Response<Incoming> {
        match tokio::time::timeout(WAIT, self.try_send_streaming()).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => panic!("{} {} failed: {e}", self.method, self.path),
            Err(_) => panic!("{} {} got no head within {WAIT:?}", self.method, self.path),
        }
    }

    /// Writes the whole request on a raw connection and returns it unread, so the
    /// test can hang up (drop it) while the proxy is still working on it.
    pub async fn send_and_keep_socket(&self) -> TcpStream {
        let mut raw = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self.has_header("host") {
            raw.push_str(&format!("host: {}\r\n", self.addr));
        }
        for (name, value) in &self.headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str(&format!("content-length: {}\r\n\r\n", self.body.len()));
        let mut stream = TcpStream::connect(self.addr)
            .await
            .expect("connect to proxy");
        stream.write_all(raw.as_bytes()).await.expect("write head");
        stream.write_all(&self.body).await.expect("write body");
        stream.flush().await.expect("flush request");
        stream
    }
}

/// A whole answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn x_cache(&self) -> Option<&str> {
        self.header("x-cache")
    }

    pub fn cache_status(&self) -> CacheStatus {
        CacheStatus::parse(
            self.header("cache-status")
                .unwrap_or_else(|| panic!("no Cache-Status header on {self:?}")),
        )
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.body))
    }

    /// The `n` of the echo backend: which backend request produced this answer.
    pub fn backend_n(&self) -> u64 {
        self.json()["n"].as_u64().expect("echo answer has n")
    }

    /// The cache key hash from Cache-Status (64 lowercase hex chars).
    pub fn key(&self) -> String {
        self.cache_status().key()
    }
}

/// A parsed `Cache-Status` member (RFC 9211): `leafcache; hit; ttl=12; key="…"`.
#[derive(Debug, Clone)]
pub struct CacheStatus {
    pub raw: String,
    pub cache: String,
    pub params: Vec<(String, Option<String>)>,
}

impl CacheStatus {
    pub fn parse(raw: &str) -> CacheStatus {
        let mut parts = raw.split(';').map(str::trim);
        let cache = parts.next().unwrap_or_default().to_string();
        let params = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_string(),
                    Some(v.trim().trim_matches('"').to_string()),
                ),
                None => (p.to_string(), None),
            })
            .collect();
        CacheStatus {
            raw: raw.to_string(),
            cache,
            params,
        }
    }

    /// The header with the named params left out, as `a; b; c`: for comparing
    /// the fixed part of a status whose optional params may come anywhere.
    pub fn without(&self, names: &[&str]) -> String {
        self.raw
            .split(';')
            .map(str::trim)
            .filter(|part| {
                let name = part.split('=').next().unwrap_or_default();
                !names.contains(&name)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn has(&self, flag: &str) -> bool {
        self.params.iter().any(|(k, _)| k == flag)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn key(&self) -> String {
        let key = self
            .get("key")
            .unwrap_or_else(|| panic!("no key in Cache-Status {:?}", self.raw))
            .to_string();
        assert!(
            key.len() == 64 && key.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "key is 64 lowercase hex chars: {:?}",
            self.raw
        );
        key
    }

    pub fn ttl(&self) -> u64 {
        self.get("ttl")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no numeric ttl in Cache-Status {:?}", self.raw))
    }
}
