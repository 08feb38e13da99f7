//! The connection bound (`max_connections`): at the bound the proxy stops
//! accepting, so a further client waits in the listen backlog (it is neither
//! accepted and dropped nor served) until a connection closes. Silent
//! connections cannot hold the bound: one with nothing in flight is closed
//! after `header_read_timeout` (docs/contract.md section 7), on the data port (HTTP/1.1
//! and h2c) and the admin port alike.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A client connection that stays open until dropped.
struct KeptAlive {
    sender: SendRequest<Empty<Bytes>>,
    connection: JoinHandle<()>,
}

impl KeptAlive {
    async fn open(proxy: &Proxy) -> KeptAlive {
        let stream = TcpStream::connect(proxy.addr)
            .await
            .expect("connect to proxy");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("client handshake");
        let connection = tokio::spawn(async move {
            let _ = conn.await;
        });
        KeptAlive { sender, connection }
    }

    /// Sends `GET /idle` and reads the whole answer; returns its status.
    async fn get(&mut self, proxy: &Proxy) -> u16 {
        let req = hyper::Request::get("/idle")
            .header("host", proxy.addr.to_string())
            .body(Empty::new())
            .expect("a valid request");
        let resp = self.sender.send_request(req).await.expect("an answer");
        let status = resp.status().as_u16();
        resp.into_body().collect().await.expect("the body");
        status
    }
}

impl Drop for KeptAlive {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

#[tokio::test]
async fn at_max_connections_a_new_client_waits_until_one_closes() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(
        &ProxyConfig::new().top("max_connections = 4"),
        &backend,
        &redis,
    )
    .await;

    let mut open = Vec::new();
    for _ in 0..4 {
        let mut conn = KeptAlive::open(&proxy).await;
        let status = tokio::time::timeout(WAIT, conn.get(&proxy))
            .await
            .expect("answered within WAIT");
        assert_eq!(status, 200);
        open.push(conn);
    }

    let answered = Arc::new(AtomicBool::new(false));
    let fifth = tokio::spawn({
        let answered = answered.clone();
        let req = proxy.get("/fifth");
        async move {
            let resp = req.send().await;
            answered.store(true, Ordering::SeqCst);
            resp
        }
    });
    assert!(
        !became_true(Duration::from_millis(500), || answered
            .load(Ordering::SeqCst))
        .await,
        "a fifth client was served while four connections were open"
    );
    assert!(
        !backend
            .requests()
            .iter()
            .any(|r| r.path_and_query == "/fifth"),
        "the fifth request reached the backend"
    );

    drop(open.pop());
    let resp = tokio::time::timeout(WAIT, fifth)
        .await
        .expect("the fifth client is answered once a connection closes")
        .expect("the fifth client's task");
    assert_eq!(resp.status, 200, "{resp:?}");

    // The three still open were never dropped by the proxy.
    for conn in &mut open {
        let status = tokio::time::timeout(WAIT, conn.get(&proxy))
            .await
            .expect("answered within WAIT");
        assert_eq!(status, 200);
    }
}

/// The `header_read_timeout` of the silence tests: short, so they run fast.
const SILENCE: &str = r#"header_read_timeout = "1s""#;
const SILENCE_LIMIT: Duration = Duration::from_secs(1);
/// How long the slow backend of these tests makes a client wait: more than
/// two `header_read_timeout`s, so a timer that fired on it would have cut.
const SLOW: Duration = Duration::from_millis(2_500);

/// Opens `n` connections to `addr` that never send a byte.
async fn silent_connections(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        open.push(
            TcpStream::connect(addr)
                .await
                .expect("connect (accepted or in the backlog)"),
        );
    }
    open
}

/// Reads from a connection that sends nothing until the proxy closes it;
/// panics unless that happens within [`WAIT`] as a clean end of stream.
async fn wait_for_close(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("the proxy kept a silent connection open for {WAIT:?}"));
    assert_eq!(
        read.expect("the proxy closes rather than resets"),
        0,
        "the proxy sent bytes to a client that sent none"
    );
}

#[tokio::test]
async fn silent_connections_do_not_lock_out_clients() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(
        &ProxyConfig::new().top("max_connections = 20").top(SILENCE),
        &backend,
        &redis,
    )
    .await;

    // More than the bound: 20 accepted, the rest queued in the backlog ahead
    // of the real client.
    let _silent = silent_connections(proxy.addr, 25).await;
    // `send` is bounded by WAIT: with the silent ones holding every permit,
    // it panics.
    let resp = proxy.get("/after-the-silent-ones").send().await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_header_read_timeout() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::new().top(SILENCE), &backend, &redis).await;

    let connected = Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.expect("connect");
    wait_for_close(&mut silent).await;
    // The timer starts at accept, after our connect began; tokio's timers
    // never fire early. A little slack for clock granularity.
    let after = connected.elapsed();
    assert!(
        after >= SILENCE_LIMIT - Duration::from_millis(50),
        "closed after {after:?}, before header_read_timeout"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_header_read_timeout() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::new().top(SILENCE), &backend, &redis).await;

    let mut conn = KeptAlive::open(&proxy).await;
    let status = tokio::time::timeout(WAIT, conn.get(&proxy))
        .await
        .expect("answered within WAIT");
    assert_eq!(status, 200);
    let answered = Instant::now();
    tokio::time::timeout(WAIT, &mut conn.connection)
        .await
        .expect("the proxy closes a keep-alive connection that went silent")
        .expect("the client connection task");
    let after = answered.elapsed();
    assert!(
        after >= SILENCE_LIMIT - Duration::from_millis(50),
        "closed {after:?} after the answer, before header_read_timeout"
    );
}

#[tokio::test]
async fn an_answer_slower_than_header_read_timeout_is_not_cut() {
    let redis = Redis::start().await;
    let head = Gate::new();
    let rest_of_body = Gate::new();
    let first = patterned_bytes(1024);
    let whole = patterned_bytes(256 * 1024);
    let backend = Backend::start({
        let (head, rest_of_body) = (head.clone(), rest_of_body.clone());
        let (first, rest) = (first.clone(), whole.slice(first.len()..));
        move |_| {
            Reply::gated(first.clone(), &rest_of_body, rest.clone())
                .header("cache-control", "no-store")
                .hold_until(&head)
        }
    })
    .await;
    let proxy = Proxy::start(&ProxyConfig::new().top(SILENCE), &backend, &redis).await;

    let req = proxy.get("/slow");
    let pending = tokio::spawn(async move { req.send_streaming().await });
    backend.wait_for_count(1).await;
    // A backend slow to answer: the client, waiting, sends nothing.
    tokio::time::sleep(SLOW).await;
    head.open();
    let resp = tokio::time::timeout(WAIT, pending)
        .await
        .expect("the head within WAIT")
        .expect("the client task");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    while received.len() < first.len() {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("the first chunk within WAIT")
            .expect("more body")
            .expect("a body frame, not an error");
        if let Ok(data) = frame.into_data() {
            received.extend_from_slice(&data);
        }
    }
    // A long streamed answer that pauses mid-body.
    tokio::time::sleep(SLOW).await;
    rest_of_body.open();
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("the rest within WAIT")
        .expect("the rest of the body, not cut")
        .to_bytes();
    received.extend_from_slice(&rest);
    assert!(received == whole, "the body arrived changed or cut");
}

#[tokio::test]
async fn an_h2c_connection_is_closed_once_idle_but_not_while_a_stream_is_open() {
    let redis = Redis::start().await;
    let head = Gate::new();
    let backend = Backend::start({
        let head = head.clone();
        move |req| {
            Reply::echo(req)
                .header("cache-control", "no-store")
                .hold_until(&head)
        }
    })
    .await;
    let proxy = Proxy::start(&ProxyConfig::new().top(SILENCE), &backend, &redis).await;

    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let mut connection = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(format!("http://{}/slow-h2", proxy.addr))
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let pending = tokio::spawn(sender.send_request(req));
    backend.wait_for_count(1).await;
    tokio::time::sleep(SLOW).await;
    head.open();
    let resp = tokio::time::timeout(WAIT, pending)
        .await
        .expect("answered within WAIT")
        .expect("the client task")
        .expect("an answer on the h2 connection, not a reset");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("the body within WAIT")
        .expect("the whole body")
        .to_bytes();
    assert!(!body.is_empty(), "an empty body");

    // No stream open any more: the connection is idle.
    tokio::time::timeout(WAIT, &mut connection)
        .await
        .expect("the proxy closes an h2c connection with no stream open")
        .expect("the client connection task");
}

#[tokio::test]
async fn a_silent_admin_connection_is_closed_after_header_read_timeout() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::new().top(SILENCE), &backend, &redis).await;

    let mut silent = TcpStream::connect(proxy.admin).await.expect("connect");
    wait_for_close(&mut silent).await;
}
