//! The HTTP backend a test starts in its own process: it records and counts
//! every request and answers what the test's handler says.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Gate, eventually};

/// One request as the backend received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// 1 for the first request the backend received, 2 for the next...
    pub n: usize,
    pub method: String,
    pub path_and_query: String,
    /// In arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("backend received a JSON body")
    }
}

/// What the backend answers to one request.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
    /// When set, the answer waits (headers included) until the gate opens.
    pub hold: Option<Gate>,
}

pub enum ReplyBody {
    Full(Bytes),
    /// Sends `first`, waits for `gate`, then sends `rest` in 64 KiB chunks.
    Gated {
        first: Bytes,
        gate: Gate,
        rest: Bytes,
    },
}

impl Reply {
    pub fn json(value: Value) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: ReplyBody::Full(Bytes::from(value.to_string())),
            hold: None,
        }
    }

    /// The default answer: a search result naming which backend request made it,
    /// so a test can tell a replayed answer from a fresh one.
    pub fn echo(req: &Recorded) -> Reply {
        Reply::json(json!({
            "n": req.n,
            "method": req.method,
            "uri": req.path_and_query,
            "user": req.header("x-user-id"),
            "intent": "product_search",
            "confidence": 0.9,
            "products": [{"product_id": "p1", "supplier": "s1"}],
        }))
    }

    /// An answer that sends `first`, then waits for `gate` before sending `rest`.
    pub fn gated(first: Bytes, gate: &Gate, rest: Bytes) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: ReplyBody::Gated {
                first,
                gate: gate.clone(),
                rest,
            },
            hold: None,
        }
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = ReplyBody::Full(body.into());
        self
    }

    pub fn hold_until(mut self, gate: &Gate) -> Reply {
        self.hold = Some(gate.clone());
        self
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

struct BackendState {
    handler: Box<Handler>,
    count: AtomicUsize,
    inflight: AtomicUsize,
    peak: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
}

/// A small HTTP/1.1 server on 127.0.0.1:0 that records every request and answers
/// what the test's handler says.
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<BackendState>,
    task: JoinHandle<()>,
}

/// Decrements the in-flight count even when the proxy hangs up mid-request.
struct InflightGuard(Arc<BackendState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend {
    /// A backend answering [`Reply::echo`] to everything.
    pub async fn echo() -> Backend {
        Backend::start(Reply::echo).await
    }

    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the backend");
        let addr = listener.local_addr().expect("backend address");
        let state = Arc::new(BackendState {
            handler: Box::new(handler),
            count: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| serve(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// How many requests reached the backend so far.
    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Requests being answered right now.
    pub fn inflight(&self) -> usize {
        self.state.inflight.load(Ordering::SeqCst)
    }

    /// The most requests ever answered at the same time.
    pub fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("not poisoned").clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the backend received a request")
    }

    pub async fn wait_for_count(&self, n: usize) {
        eventually(&format!("{n} backend request(s)"), || async {
            (self.count() >= n).then_some(())
        })
        .await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    state: Arc<BackendState>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let n = state.count.fetch_add(1, Ordering::SeqCst) + 1;
    let now = state.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak.fetch_max(now, Ordering::SeqCst);
    let _guard = InflightGuard(state.clone());
    let recorded = Recorded {
        n,
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    state
        .requests
        .lock()
        .expect("not poisoned")
        .push(recorded.clone());
    let reply = (state.handler)(&recorded);
    if let Some(gate) = &reply.hold {
        gate.wait().await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    let body = match reply.body {
        ReplyBody::Full(bytes) => Full::new(bytes).boxed(),
        ReplyBody::Gated { first, gate, rest } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            tokio::spawn(async move {
                if tx.send(first).await.is_err() {
                    return;
                }
                gate.wait().await;
                let mut rest = rest;
                while !rest.is_empty() {
                    let chunk = rest.split_to(rest.len().min(64 * 1024));
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            });
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
            });
            StreamBody::new(frames).boxed()
        }
    };
    Ok(response
        .body(body)
        .expect("test replies are valid responses"))
}

type ScriptHandler = Box<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A backend whose answer the test can change between requests.
#[derive(Clone)]
pub struct Script(std::sync::Arc<std::sync::Mutex<ScriptHandler>>);

impl Script {
    pub fn new(f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Script {
        Script(std::sync::Arc::new(std::sync::Mutex::new(Box::new(f))))
    }

    pub fn set(&self, f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.0.lock().expect("not poisoned") = Box::new(f);
    }

    pub async fn backend(&self) -> Backend {
        let me = self.clone();
        Backend::start(move |req| (me.0.lock().expect("not poisoned"))(req)).await
    }
}
