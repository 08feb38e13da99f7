//! The event writer's connection against a real redis-server: a long write
//! (a batch of events, a counter flush, a spool replay) goes out as several
//! transactions of at most `TRANSACTION_MAX` commands and
//! `TRANSACTION_BYTES`, every command runs, and an error reply in one of them
//! is reported without losing the others or the connection.

mod common;

use std::time::Duration;

use common::events::connect;
use common::*;
use leafcache::redis::direct::{DirectConn, DirectError, TRANSACTION_BYTES, TRANSACTION_MAX};
use leafcache::redis::wire::{Commands, RespBuf};
use redis::AsyncCommands;

fn incrs(buf: &mut RespBuf, keys: std::ops::Range<usize>) {
    for i in keys {
        buf.command(&[b"INCRBY", format!("k{i}").as_bytes(), b"2"]);
    }
}

async fn sum_of(redis: &Redis, n: usize) -> i64 {
    let mut conn = connect(&redis.url()).await;
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let values: Vec<Option<i64>> = conn.mget(&keys).await.expect("MGET");
    values.into_iter().map(|v| v.unwrap_or(0)).sum()
}

#[tokio::test]
async fn a_write_longer_than_one_transaction_runs_every_command() {
    let redis = Redis::start().await;
    let mut conn = DirectConn::connect(&redis.config(), Duration::from_secs(2))
        .await
        .expect("connect");
    let n = 2 * TRANSACTION_MAX + 123;
    let mut buf = RespBuf::default();
    incrs(&mut buf, 0..n);
    assert_eq!(buf.parts(TRANSACTION_MAX, TRANSACTION_BYTES).count(), 3);
    conn.exec(&buf).await.expect("every transaction ran");
    assert_eq!(sum_of(&redis, n).await, 2 * n as i64);
    assert_eq!(redis.calls("exec").await, 3, "three transactions");

    // Few but large commands: cut by bytes.
    let value = vec![b'v'; TRANSACTION_BYTES / 4];
    let mut big = RespBuf::default();
    for i in 0..10 {
        big.command(&[b"SET", format!("big{i}").as_bytes(), &value]);
    }
    conn.exec(&big).await.expect("every transaction ran");
    assert_eq!(
        redis.calls("exec").await,
        3 + 4,
        "at most 3 of them per transaction"
    );
    let mut check = connect(&redis.url()).await;
    let last: Vec<u8> = check.get("big9").await.expect("GET");
    assert_eq!(last, value);
}

#[tokio::test]
async fn an_error_reply_in_one_transaction_spares_the_others_and_the_connection() {
    let redis = Redis::start().await;
    let mut setup = connect(&redis.url()).await;
    let _: () = setup.set("a-string", "x").await.expect("SET");
    let mut conn = DirectConn::connect(&redis.config(), Duration::from_secs(2))
        .await
        .expect("connect");
    let n = 2 * TRANSACTION_MAX;
    let mut buf = RespBuf::default();
    incrs(&mut buf, 0..TRANSACTION_MAX + 10);
    // In the second transaction: a list command on a string.
    buf.command(&[b"LPUSH", b"a-string", b"v"]);
    incrs(&mut buf, TRANSACTION_MAX + 10..n);
    match conn.exec(&buf).await {
        Err(DirectError::Refused { message, executed }) => {
            assert!(message.starts_with("WRONGTYPE"), "{message}");
            assert!(executed, "the rest of its transaction ran");
        }
        other => panic!("expected the WRONGTYPE refusal, got {other:?}"),
    }
    assert_eq!(sum_of(&redis, n).await, 2 * n as i64, "every INCRBY ran");

    // Every reply was read: the connection carries on.
    buf.clear();
    incrs(&mut buf, 0..1);
    conn.exec(&buf)
        .await
        .expect("the connection is still usable");
    assert_eq!(sum_of(&redis, 1).await, 4);
}
