//! Cache stores and invalidations on a pipelined connection
//! (`redis::mux`, as the proxy uses it for them), against a real redis-server: a store nobody waits for
//! still lands, in order with what follows it on the connection; an error
//! reply to one is counted, not lost; a batch of commands gets all its
//! replies and reports the first error among them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use leafcache::redis::mux::{Mux, MuxError};
use leafcache::redis::wire::Commands;
use redis::AsyncCommands;
use tokio::time::Instant;

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[tokio::test]
async fn stores_land_in_order_with_the_lookups_and_invalidations_after_them() {
    let redis = Redis::start().await;
    let mux = Mux::new(&redis.config());
    let failures = Arc::new(AtomicU64::new(0));
    for i in 0..500u32 {
        let value = format!("v{i}");
        assert!(mux.send_discarding(&[b"SET", b"k", value.as_bytes(), b"EX", b"60"], &failures));
    }
    // A lookup sent after the stores sees the last of them: no wait was
    // needed, the connection keeps order.
    let value = mux.get("k", soon()).await.expect("lookup");
    assert_eq!(value.as_deref(), Some(&b"v499"[..]));
    assert!(redis.ttl("k").await > 0, "stored with its EX");

    // An invalidation queued right behind a store removes it.
    assert!(mux.send_discarding(&[b"SET", b"gone", b"x"], &failures));
    mux.call_many(
        |out| {
            out.command(&[b"UNLINK", b"gone"]);
            out.command(&[b"PUBLISH", b"chan", b"gone"]);
            2
        },
        soon(),
    )
    .await
    .expect("unlink and publish");
    assert!(!redis.exists("gone").await);
    assert_eq!(failures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_error_reply_to_a_store_is_counted_and_the_connection_goes_on() {
    let redis = Redis::start().await;
    let mut admin = redis.conn().await;
    let _: () = admin.lpush("a-list", "x").await.expect("lpush");
    let mux = Mux::new(&redis.config());
    let failures = Arc::new(AtomicU64::new(0));
    // APPEND to a list answers WRONGTYPE; the SETs around it succeed.
    assert!(mux.send_discarding(&[b"SET", b"before", b"1"], &failures));
    assert!(mux.send_discarding(&[b"APPEND", b"a-list", b"y"], &failures));
    assert!(mux.send_discarding(&[b"SET", b"after", b"2"], &failures));
    let after = mux.get("after", soon()).await.expect("lookup");
    assert_eq!(after.as_deref(), Some(&b"2"[..]));
    assert_eq!(failures.load(Ordering::SeqCst), 1, "the one error reply");
    assert!(redis.exists("before").await);
}

#[tokio::test]
async fn a_batch_gets_every_reply_and_reports_the_first_error() {
    let redis = Redis::start().await;
    let mut admin = redis.conn().await;
    let _: () = admin.lpush("a-list", "x").await.expect("lpush");
    let mux = Mux::new(&redis.config());
    let last = mux
        .call_many(
            |out| {
                out.command(&[b"SET", b"one", b"1"]);
                out.command(&[b"INCR", b"one"]);
                out.command(&[b"INCR", b"one"]);
                3
            },
            soon(),
        )
        .await
        .expect("batch");
    assert_eq!(&last[..], b":3\r\n", "the last command's reply");

    let failed = mux
        .call_many(
            |out| {
                out.command(&[b"SET", b"two", b"2"]);
                out.command(&[b"INCR", b"a-list"]);
                out.command(&[b"SET", b"three", b"3"]);
                3
            },
            soon(),
        )
        .await;
    assert!(
        matches!(&failed, Err(MuxError::Reply(e)) if e.starts_with("WRONGTYPE")),
        "{failed:?}"
    );
    // Every command ran, and the replies of the batch were all consumed: the
    // next lookup gets its own reply, not one left over.
    assert!(redis.exists("three").await);
    let one = mux.get("one", soon()).await.expect("lookup");
    assert_eq!(one.as_deref(), Some(&b"3"[..]));
}

#[tokio::test]
async fn stores_pending_when_redis_goes_away_are_counted_as_failed() {
    let mut redis = Redis::start().await;
    let mux = Mux::new(&redis.config());
    let failures = Arc::new(AtomicU64::new(0));
    // A live connection first.
    mux.get("k", soon()).await.expect("lookup");
    redis.kill();
    let mut sent = 0;
    // The stores go out on a dead connection: each is counted as failed
    // once the connection's failure is seen (the next stores start a new
    // connection attempt, which fails too).
    for _ in 0..10 {
        if mux.send_discarding(&[b"SET", b"k", b"v"], &failures) {
            sent += 1;
        }
    }
    assert_eq!(sent, 10);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while failures.load(Ordering::SeqCst) < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(failures.load(Ordering::SeqCst), 10);
}
