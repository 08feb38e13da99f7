//! The connection bound (`max_connections`): at the bound the proxy stops
//! accepting, so a further client waits in the listen backlog (it is neither
//! accepted and dropped nor served) until a connection closes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

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
