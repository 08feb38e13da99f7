//! The connection cache lookups share (`redis::mux`), against servers that
//! misbehave: one that accepts and never answers is given up after a run of
//! timeouts and connected to afresh; one that closes fails every pending
//! lookup at once instead of leaving them to their deadlines; stores to a
//! peer that never answers are bounded, and then the connection is replaced.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use leafcache::config::RedisConfig;
use leafcache::redis::mux::{Mux, MuxError};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

fn config(port: u16) -> RedisConfig {
    RedisConfig {
        url: format!("redis://127.0.0.1:{port}"),
        pool_size: 1,
        timeout: Duration::from_millis(20),
        key_prefix: Default::default(),
        cluster: false,
        tls_ca_file: None,
        tls_ca_pem: None,
    }
}

/// A server that accepts connections and reads forever, answering nothing
/// (a peer that went away without a reset looks like this); counts them.
async fn silent_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn a_connection_that_stops_answering_is_replaced_after_a_run_of_timeouts() {
    let (port, accepted) = silent_server().await;
    let mux = Mux::new(&config(port));
    for i in 0..31 {
        let r = mux
            .get("k", Instant::now() + Duration::from_millis(5))
            .await;
        assert!(matches!(r, Err(MuxError::Timeout)), "lookup {i}: {r:?}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection so far");
    // The 32nd timeout in a row without a reply drops the connection; the
    // next lookup connects again.
    let _ = mux
        .get("k", Instant::now() + Duration::from_millis(5))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        let _ = mux
            .get("k", Instant::now() + Duration::from_millis(5))
            .await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a fresh connection");
}

#[tokio::test]
async fn a_server_that_closes_fails_every_pending_lookup_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        // Reads the first lookup, then hangs up.
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 64];
            let _ = socket.read(&mut buf).await;
        }
    });
    let mux = Mux::new(&config(port));
    // Deadlines an hour away: only the hang-up can end these lookups
    // before the harness gives up on them.
    let lookups = (0..8).map(|_| mux.get("k", Instant::now() + Duration::from_secs(3600)));
    let results = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(lookups),
    )
    .await
    .expect("the lookups failed when the server hung up");
    for r in results {
        assert!(matches!(r, Err(MuxError::Connection(_))), "{r:?}");
    }
}

#[tokio::test]
async fn stores_to_a_peer_that_never_answers_are_bounded_then_the_connection_is_replaced() {
    let (port, accepted) = silent_server().await;
    let mux = Mux::new(&config(port));
    let failures = Arc::new(AtomicU64::new(0));
    assert!(mux.send_discarding(&[b"SET", b"k", b"v"], &failures));
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::SeqCst) < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the driver settle into reading and writing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut sent = 1u64;
    while mux.send_discarding(&[b"SET", b"k", b"v"], &failures) {
        sent += 1;
        assert!(sent <= 70_000, "stores are bounded while no reply comes");
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "nothing failed yet");
    // A run of refusals with no reply between gives the connection up: the
    // stores it held count as failed.
    for _ in 0..32 {
        let _ = mux.send_discarding(&[b"SET", b"k", b"v"], &failures);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while failures.load(Ordering::SeqCst) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(failures.load(Ordering::SeqCst), sent);
    assert!(mux.send_discarding(&[b"SET", b"k", b"v"], &failures));
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a fresh connection");
}
