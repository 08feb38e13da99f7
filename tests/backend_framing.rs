//! A backend that frames its answers badly, or sends them slowly (docs/contract.md
//! section 3 step 11, section 7): a badly framed answer is never stored, never
//! desyncs the client's keep-alive connection, and the backend connection it
//! came on is not used again; a slow but steady body is never cut, a body
//! that pauses longer than `[upstream] idle_timeout` is, and is not stored.
//!
//! The backend here is raw TCP written in the test, because an HTTP library
//! would refuse to send these answers.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One thing the raw backend does while answering.
enum Step {
    Write(Vec<u8>),
    /// Waits this long: the backend's pace, not a synchronisation.
    Pause(Duration),
    /// Sends nothing more until the proxy hangs up (at most [`WAIT`]).
    Stall,
}

/// The raw backend's answer to one request.
struct Answer {
    steps: Vec<Step>,
    /// Written on the same connection just before the next answer, as if it
    /// arrived late: the bytes a badly framed answer left behind.
    late: Vec<u8>,
}

impl Answer {
    fn raw(bytes: impl Into<Vec<u8>>) -> Answer {
        Answer {
            steps: vec![Step::Write(bytes.into())],
            late: Vec::new(),
        }
    }

    /// A well framed `200` JSON answer naming the request it answers.
    fn json(n: usize) -> Answer {
        let body = format!("{{\"n\":{n}}}");
        Answer::raw(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             cache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    fn late(mut self, bytes: &[u8]) -> Answer {
        self.late = bytes.to_vec();
        self
    }
}

struct RawState {
    handler: Box<dyn Fn(usize) -> Answer + Send + Sync>,
    requests: AtomicUsize,
    connections: AtomicUsize,
    /// For each request, in order, the connection (1, 2, ...) it came on.
    came_on: Mutex<Vec<usize>>,
}

/// A keep-alive HTTP/1.1 backend speaking raw bytes: it reads each request
/// head (and a `content-length` body) and writes what `handler(n)` says for
/// the n-th request (1-based).
struct RawBackend {
    url: String,
    state: Arc<RawState>,
    task: JoinHandle<()>,
}

impl RawBackend {
    async fn start(handler: impl Fn(usize) -> Answer + Send + Sync + 'static) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(RawState {
            handler: Box::new(handler),
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            came_on: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task: every connection task ends with it.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let id = accept_state.connections.fetch_add(1, Ordering::SeqCst) + 1;
                connections.spawn(serve_raw(accept_state.clone(), stream, id));
            }
        });
        RawBackend { url, state, task }
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    fn came_on(&self) -> Vec<usize> {
        self.state.came_on.lock().expect("not poisoned").clone()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_raw(state: Arc<RawState>, mut stream: TcpStream, connection: usize) {
    let mut seen = Vec::new();
    let mut late = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if !read_raw_request(&mut stream, &mut seen).await {
            return;
        }

        let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
        state.came_on.lock().expect("not poisoned").push(connection);
        let answer = (state.handler)(n);
        if stream.write_all(&late).await.is_err() {
            return;
        }
        for step in answer.steps {
            match step {
                Step::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::Pause(d) => tokio::time::sleep(d).await,
                Step::Stall => {
                    let _ = tokio::time::timeout(WAIT, async {
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                    return;
                }
            }
        }
        late = answer.late;
    }
}

/// One client connection to the proxy, kept alive across requests.
struct KeepAlive {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl KeepAlive {
    async fn connect(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        KeepAlive { sender, addr }
    }

    /// Sends on this same connection and reads the whole answer, bounded by
    /// [`WAIT`]; Err when the connection cannot carry it (desynced, closed).
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Resp, String> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let (parts, body) = resp.into_parts();
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
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("{method} {path}: no whole answer within {WAIT:?}")))
    }

    async fn get(&mut self, path: &str) -> Result<Resp, String> {
        self.send("GET", path, &[]).await
    }
}

/// A plain caching route on `/plain` (no query rule), global scope.
fn plain() -> ProxyConfig {
    ProxyConfig::new().route(
        Route::new("plain")
            .set("path", r#""/plain""#)
            .scope("global"),
    )
}

async fn start(config: &ProxyConfig, backend: &RawBackend) -> (Redis, Proxy) {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(config, &backend.url, &redis.url()).await;
    (redis, proxy)
}

fn body_of(resp: &Resp) -> &str {
    std::str::from_utf8(&resp.body).expect("a UTF-8 body")
}

// ---- Framing -------------------------------------------------------------

#[tokio::test]
async fn content_length_with_chunked_is_not_stored_and_the_client_stays_in_step() {
    // Content-Length says 3; the chunked body the backend sends is 7 bytes.
    let backend = RawBackend::start(|n| {
        let body = format!("{{\"n\":{n}}}");
        Answer::raw(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             cache-control: max-age=60\r\ncontent-length: 3\r\n\
             transfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ))
    })
    .await;
    let (redis, proxy) = start(&plain(), &backend).await;
    let mut client = KeepAlive::connect(proxy.addr).await;

    let first = client.get("/plain").await.expect("the first answer");
    assert_eq!(first.status, 200);
    assert_eq!(
        body_of(&first),
        r#"{"n":1}"#,
        "the body as the backend chunked it"
    );
    assert_miss_not_stored(&first);

    let second = client
        .get("/plain")
        .await
        .expect("the same keep-alive connection carries a second request");
    assert_eq!(second.status, 200);
    assert_eq!(
        body_of(&second),
        r#"{"n":2}"#,
        "not a replay: nothing was stored"
    );
    assert_miss_not_stored(&second);

    assert_eq!(
        backend.came_on(),
        vec![1, 2],
        "the backend connection of the badly framed answer was not used again"
    );
    assert!(redis.cache_keys().await.is_empty(), "nothing is stored");
}

#[tokio::test]
async fn a_204_with_a_body_is_not_stored_and_the_next_request_gets_its_answer() {
    // 204 is storable on this route, so only its framing keeps it out.
    let config = plain().cache("cacheable_status = [200, 204]");
    let backend = RawBackend::start(|n| match n {
        1 => Answer::raw(
            "HTTP/1.1 204 No Content\r\ncache-control: max-age=60\r\ncontent-length: 5\r\n\r\n",
        )
        .late(b"hello"),
        n => Answer::json(n),
    })
    .await;
    let (redis, proxy) = start(&config, &backend).await;
    let mut client = KeepAlive::connect(proxy.addr).await;

    let first = client.get("/plain").await.expect("the first answer");
    assert_eq!(first.status, 204);
    assert!(first.body.is_empty(), "a 204 carries no body: {first:?}");
    assert_eq!(first.x_cache(), Some("MISS"));

    let second = client
        .get("/plain")
        .await
        .expect("the same keep-alive connection carries a second request");
    assert_eq!(
        second.status, 200,
        "the backend's own answer, not a 502: {second:?}"
    );
    assert_eq!(body_of(&second), r#"{"n":2}"#);
    assert_miss_stored(&second);

    assert_eq!(
        backend.came_on(),
        vec![1, 2],
        "the next request went on a new backend connection"
    );
    assert_eq!(redis.cache_keys().await.len(), 1, "only the 200 is stored");
}

#[tokio::test]
async fn a_304_with_a_chunked_body_passed_through_leaves_the_next_request_a_correct_answer() {
    let backend = RawBackend::start(|n| match n {
        1 => Answer::raw(
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .late(b"5\r\nhello\r\n0\r\n\r\n"),
        n => Answer::json(n),
    })
    .await;
    let (_redis, proxy) = start(&plain(), &backend).await;
    let mut client = KeepAlive::connect(proxy.addr).await;

    let first = client
        .send("GET", "/static/app.js", &[("if-none-match", "\"v1\"")])
        .await
        .expect("the first answer");
    assert_eq!(first.status, 304);
    assert!(first.body.is_empty(), "a 304 carries no body: {first:?}");

    let second = client
        .get("/static/app.js")
        .await
        .expect("the same keep-alive connection carries a second request");
    assert_eq!(
        second.status, 200,
        "the backend's own answer, not a 502: {second:?}"
    );
    assert_eq!(body_of(&second), r#"{"n":2}"#);
    assert_eq!(backend.came_on(), vec![1, 2]);
}

// ---- Timeouts ------------------------------------------------------------

/// 8 chunks of 16 bytes, one every 200 ms: about 1.6 s in all, never a
/// pause of more than 200 ms.
const DRIP_CHUNKS: usize = 8;
const DRIP_EVERY: Duration = Duration::from_millis(200);

fn drip_body() -> Bytes {
    patterned_bytes(DRIP_CHUNKS * 16)
}

fn dripping(n: usize) -> Answer {
    let body = drip_body();
    let mut steps = vec![Step::Write(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
             cache-control: max-age=60\r\nx-n: {n}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
    )];
    for chunk in body.chunks(16) {
        steps.push(Step::Pause(DRIP_EVERY));
        steps.push(Step::Write(chunk.to_vec()));
    }
    Answer {
        steps,
        late: Vec::new(),
    }
}

#[tokio::test]
async fn a_slow_but_steady_body_passes_through_whole_past_the_timeout() {
    let backend = RawBackend::start(dripping).await;
    let config = plain().upstream(r#"timeout = "1s""#);
    let (_redis, proxy) = start(&config, &backend).await;

    let resp = proxy.get("/static/catalog.bin").send().await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.body == drip_body(),
        "{} of {} bytes arrived",
        resp.body.len(),
        drip_body().len()
    );
}

#[tokio::test]
async fn a_slow_but_steady_body_on_a_caching_route_is_stored_whole() {
    let backend = RawBackend::start(dripping).await;
    let config = plain().upstream(r#"timeout = "1s""#);
    let (_redis, proxy) = start(&config, &backend).await;

    let first = proxy.get("/plain").send().await;
    assert_miss_stored(&first);
    assert!(
        first.body == drip_body(),
        "{} of {} bytes arrived",
        first.body.len(),
        drip_body().len()
    );

    let again = proxy.get("/plain").send().await;
    assert_hit(&again);
    assert!(again.body == drip_body(), "the stored body is whole");
    assert_eq!(backend.requests(), 1);
}

/// A 100-byte answer of which 10 bytes come, then nothing.
fn stalling(_: usize) -> Answer {
    Answer {
        steps: vec![
            Step::Write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
                  cache-control: max-age=60\r\ncontent-length: 100\r\n\r\n0123456789"
                    .to_vec(),
            ),
            Step::Stall,
        ],
        late: Vec::new(),
    }
}

/// `timeout` far beyond the test's patience: only `idle_timeout` can cut.
fn stall_config() -> ProxyConfig {
    plain()
        .upstream(r#"timeout = "20s""#)
        .upstream(r#"idle_timeout = "300ms""#)
}

/// How long a cut may take: the 300 ms idle timeout, with room for a busy machine.
const CUT_WITHIN: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_body_that_pauses_past_idle_timeout_is_cut_and_the_client_connection_closed() {
    let backend = RawBackend::start(stalling).await;
    let (_redis, proxy) = start(&stall_config(), &backend).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /static/catalog.bin HTTP/1.1\r\nhost: leafcache.test\r\n\r\n")
        .await
        .expect("write the request");
    let mut answer = Vec::new();
    tokio::time::timeout(CUT_WITHIN, stream.read_to_end(&mut answer))
        .await
        .expect("the proxy closes the client connection once the backend stalls")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(
        body, "0123456789",
        "the client got the body cut where the backend stalled"
    );
}

#[tokio::test]
async fn a_body_that_pauses_past_idle_timeout_on_a_caching_route_is_not_stored() {
    let backend = RawBackend::start(stalling).await;
    let (redis, proxy) = start(&stall_config(), &backend).await;

    let first = tokio::time::timeout(CUT_WITHIN, proxy.get("/plain").send())
        .await
        .expect("answered once the backend paused longer than idle_timeout");
    assert_eq!(first.status, 504, "{first:?}");
    assert_eq!(first.json()["error"], "upstream_timeout");

    let again = tokio::time::timeout(CUT_WITHIN, proxy.get("/plain").send())
        .await
        .expect("answered once the backend paused longer than idle_timeout");
    assert_eq!(again.status, 504, "not a replay of a cut body: {again:?}");
    assert_eq!(
        backend.requests(),
        2,
        "the second request reached the backend"
    );
    assert!(redis.cache_keys().await.is_empty(), "nothing is stored");
    assert_eq!(
        backend.connections(),
        2,
        "the stalled connection was not reused"
    );
}

#[tokio::test]
async fn a_304_naming_its_200s_length_still_revalidates_on_a_fresh_connection() {
    // RFC 9110 section 8.6: a 304 may carry the Content-Length of the 200.
    let backend = RawBackend::start(|n| match n {
        1 => Answer::raw(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             cache-control: max-age=1\r\netag: \"v1\"\r\ncontent-length: 7\r\n\r\n{\"n\":1}",
        ),
        2 => Answer::raw(
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\
             cache-control: max-age=60\r\ncontent-length: 7\r\n\r\n",
        ),
        n => Answer::json(n),
    })
    .await;
    let (_redis, proxy) = start(&plain(), &backend).await;

    let first = proxy.get("/plain").send().await;
    assert_miss_stored(&first);
    // The entry's own freshness is one second: wait it out.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let revalidated = proxy.get("/plain").send().await;
    assert_eq!(
        revalidated.x_cache(),
        Some("REVALIDATED"),
        "{revalidated:?}"
    );
    assert_eq!(body_of(&revalidated), r#"{"n":1}"#);
    assert_hit(&proxy.get("/plain").send().await);

    // The backend's next request does not share the 304's connection.
    let other = proxy.get("/plain?other").send().await;
    assert_eq!(body_of(&other), r#"{"n":3}"#);
    assert_eq!(backend.came_on(), vec![1, 1, 2]);
}
