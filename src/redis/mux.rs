//! One connection that every cache lookup shares, its commands pipelined
//! (and another, the same way, for cache stores).
//!
//! A pooled connection per lookup costs a checkout, a command built through
//! `redis::Cmd`, a wake of the connection's driver, a parse into
//! `redis::Value` and a copy of the answer into a `Vec` (about 25 µs of
//! CPU per Redis-tier hit). Here a lookup appends its command to a shared
//! buffer and waits for its reply: one task writes whatever accumulated in
//! one syscall, another reads replies in order and hands each waiter its
//! bytes, which the cache entry then borrows without a copy. Under load
//! dozens of lookups share each read and write.
//!
//! Cache stores use a second `Mux` of their own (so that lookups never queue
//! in Redis behind kilobytes of stored answers): a `SET` is appended the same
//! way, but nobody waits for its reply (an error reply, or a connection lost
//! first, is counted), so a miss's store costs a copy into the buffer, not a
//! trip through a queue, a pool and redis-rs. Order holds on a connection:
//! an invalidation sent after a store runs after it.
//!
//! Failures: any I/O or protocol error fails every pending lookup (they
//! count as Redis errors, so the breaker sees them) and the next lookup
//! connects again. A connection that stops answering (a peer gone without
//! a reset) is dropped once lookups keep timing out with no reply between.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::RedisConfig;
use super::direct::DirectConn;
use super::wire::{self, Commands, ProtocolError, Reply, RespBuf};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Lookups that timed out with no reply in between before the connection
/// counts as dead.
const STALL_TIMEOUTS: u32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("redis did not answer in time")]
    Timeout,
    #[error("redis connection: {0}")]
    Connection(Arc<str>),
    #[error("redis: {0}")]
    Reply(String),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Bytes of unwritten commands past which stores are refused (lookups
/// never are): Redis is not keeping up, and L1 still has the answers.
const STORE_BACKLOG_BYTES: usize = 16 << 20;
/// Commands sent and not yet answered past which stores are refused too:
/// a peer that reads but never answers would otherwise let them pile up.
const STORE_BACKLOG_REPLIES: usize = 65_536;

/// Who gets the replies of the commands in `out`, in order.
enum Waiter {
    /// A caller waiting for `left` more replies: it gets the last one, or
    /// the first error reply among them.
    Reply {
        tx: oneshot::Sender<Result<Bytes, MuxError>>,
        left: usize,
        error: Option<String>,
    },
    /// A write nobody waits for: an error reply, or the connection failing
    /// before it was answered, adds one to the counter.
    Discard(Arc<AtomicU64>),
}

impl Waiter {
    fn fail(self, why: &Arc<str>) {
        match self {
            Waiter::Reply { tx, .. } => {
                let _ = tx.send(Err(MuxError::Connection(why.clone())));
            }
            Waiter::Discard(failures) => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Cheap to clone: every clone shares the connection.
#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
}

struct Shared {
    config: RedisConfig,
    state: Mutex<State>,
    /// Commands are waiting in `state.out`.
    wake: Notify,
    /// The connection should be dropped (it stopped answering).
    reset: Notify,
}

#[derive(Default)]
struct State {
    /// Encoded commands not yet written.
    out: RespBuf,
    /// One per command written or waiting in `out`, in the same order.
    waiters: VecDeque<Waiter>,
    /// Whether a driver task runs.
    driving: bool,
    /// Lookups that timed out since the last reply.
    timeouts: u32,
}

impl Mux {
    pub fn new(config: &RedisConfig) -> Mux {
        Mux {
            shared: Arc::new(Shared {
                config: config.clone(),
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                reset: Notify::new(),
            }),
        }
    }

    /// `GET key`: the value, or `None`.
    pub async fn get(&self, key: &str, deadline: Instant) -> Result<Option<Bytes>, MuxError> {
        let reply = self.call(&[b"GET", key.as_bytes()], deadline).await?;
        bulk(&reply, 0).map(|(value, _)| value)
    }

    /// `MGET keys…`: a value or `None` per key, in order.
    pub async fn mget(
        &self,
        keys: &[&str],
        deadline: Instant,
    ) -> Result<Vec<Option<Bytes>>, MuxError> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
        args.push(b"MGET");
        args.extend(keys.iter().map(|k| k.as_bytes()));
        let reply = self.call(&args, deadline).await?;
        array_of_bulks(&reply)
    }

    /// Connects now rather than on the first command (a store should not
    /// wait for a connection to be set up); must run inside the runtime.
    /// A failure is forgotten: the first command connects again.
    pub fn connect_early(&self) {
        self.start(self.lock());
    }

    /// Appends one command whose reply nobody waits for.
    pub fn send_discarding(&self, args: &[&[u8]], failures: &Arc<AtomicU64>) -> bool {
        self.send_discarding_many(
            |out| {
                out.command(args);
                1
            },
            failures,
        )
    }

    /// Appends the commands `build` appends (it returns how many), whose
    /// replies nobody waits for (a cache store and its tags).
    /// Returns false, sending nothing, when Redis is so far behind that
    /// `STORE_BACKLOG_BYTES` are waiting to be written already, or
    /// `STORE_BACKLOG_REPLIES` replies are outstanding. Refusals count like
    /// timed-out lookups: a run of them with no reply in between drops the
    /// connection (its pending stores count as failed), so a peer that went
    /// away without a reset cannot stop stores for good.
    pub fn send_discarding_many(
        &self,
        build: impl FnOnce(&mut RespBuf) -> usize,
        failures: &Arc<AtomicU64>,
    ) -> bool {
        let st = {
            let mut st = self.lock();
            if st.out.as_bytes().len() >= STORE_BACKLOG_BYTES
                || st.waiters.len() >= STORE_BACKLOG_REPLIES
            {
                drop(st);
                self.stalled_once();
                return false;
            }
            let commands = build(&mut st.out);
            for _ in 0..commands {
                st.waiters.push_back(Waiter::Discard(failures.clone()));
            }
            st
        };
        self.start(st);
        true
    }

    /// Sends the commands `build` appends (it returns how many) and waits,
    /// until `deadline`, for all their replies: the first error reply, or
    /// else the last reply.
    pub async fn call_many(
        &self,
        build: impl FnOnce(&mut RespBuf) -> usize,
        deadline: Instant,
    ) -> Result<Bytes, MuxError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.lock();
            let left = build(&mut st.out);
            if left == 0 {
                return Ok(Bytes::new());
            }
            st.waiters.push_back(Waiter::Reply {
                tx,
                left,
                error: None,
            });
            self.start(st);
        }
        self.wait(rx, deadline).await
    }

    /// Sends one command and waits, until `deadline`, for its raw reply.
    async fn call(&self, args: &[&[u8]], deadline: Instant) -> Result<Bytes, MuxError> {
        self.call_many(
            |out| {
                out.command(args);
                1
            },
            deadline,
        )
        .await
    }

    /// Releases the state (commands appended to it) and wakes the writer,
    /// starting a driver first when none runs.
    fn start(&self, mut st: std::sync::MutexGuard<'_, State>) {
        let spawn = !std::mem::replace(&mut st.driving, true);
        drop(st);
        if spawn {
            tokio::spawn(drive(self.shared.clone()));
        }
        self.shared.wake.notify_one();
    }

    /// One more sign that the connection stopped answering (a lookup timed
    /// out, a store was refused); a run of them with no reply in between
    /// drops it.
    fn stalled_once(&self) {
        let stalled = {
            let mut st = self.lock();
            st.timeouts += 1;
            st.timeouts >= STALL_TIMEOUTS
        };
        if stalled {
            self.shared.reset.notify_one();
        }
    }

    async fn wait(
        &self,
        rx: oneshot::Receiver<Result<Bytes, MuxError>>,
        deadline: Instant,
    ) -> Result<Bytes, MuxError> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_dropped)) => Err(MuxError::Connection("connection lost".into())),
            Err(_elapsed) => {
                self.stalled_once();
                Err(MuxError::Timeout)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Shared {
    /// Never held across an `.await`; a panic while held leaves state that
    /// is still consistent (a waiter is pushed with its command).
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails every pending lookup and forgets their commands; the next
    /// lookup starts a new driver.
    fn fail_all(&self, why: &str) {
        let waiters = {
            let mut st = self.lock();
            st.out.clear();
            st.driving = false;
            st.timeouts = 0;
            std::mem::take(&mut st.waiters)
        };
        let why: Arc<str> = why.into();
        for w in waiters {
            w.fail(&why);
        }
    }
}

/// Connects, then writes and reads until something fails.
async fn drive(shared: Arc<Shared>) {
    let why = match DirectConn::connect(&shared.config, CONNECT_TIMEOUT).await {
        Ok(conn) => {
            // A reset asked for while connecting was about the last
            // connection: take it back.
            let _ = tokio::time::timeout(Duration::ZERO, shared.reset.notified()).await;
            let (reader, writer) = tokio::io::split(conn.into_stream());
            tokio::select! {
                e = write_loop(&shared, writer) => e,
                e = read_loop(&shared, reader) => e,
                () = shared.reset.notified() => "stopped answering".to_owned(),
            }
        }
        Err(e) => e.to_string(),
    };
    tracing::debug!(error = %why, "lookup connection closed");
    shared.fail_all(&why);
}

async fn write_loop(shared: &Shared, mut writer: impl tokio::io::AsyncWrite + Unpin) -> String {
    let mut sending = RespBuf::default();
    loop {
        {
            let mut st = shared.lock();
            std::mem::swap(&mut st.out, &mut sending);
        }
        if sending.is_empty() {
            shared.wake.notified().await;
            continue;
        }
        if let Err(e) = writer.write_all(sending.as_bytes()).await {
            return e.to_string();
        }
        sending.clear();
    }
}

async fn read_loop(shared: &Shared, mut reader: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            let (kind, len) = match wire::read_reply(&buf) {
                Ok(Some(read)) => read,
                Ok(None) => break,
                Err(e) => return e.to_string(),
            };
            let reply = buf.split_to(len).freeze();
            let error = match kind {
                Reply::Error(text) => Some(text),
                _ => None,
            };
            let answered = {
                let mut st = shared.lock();
                st.timeouts = 0;
                match st.waiters.front_mut() {
                    None => return "a reply nobody asked for".to_owned(),
                    Some(Waiter::Discard(failures)) => {
                        if error.is_some() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        st.waiters.pop_front();
                        None
                    }
                    Some(Waiter::Reply {
                        left, error: first, ..
                    }) => {
                        *left -= 1;
                        if first.is_none() {
                            *first = error;
                        }
                        if *left == 0 {
                            st.waiters.pop_front()
                        } else {
                            None
                        }
                    }
                }
            };
            if let Some(Waiter::Reply { tx, error, .. }) = answered {
                let _ = tx.send(match error {
                    Some(e) => Err(MuxError::Reply(e)),
                    None => Ok(reply),
                });
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return "redis closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
}

/// The bulk string (or nil) at `at` in `reply`, and where it ends; an error
/// reply becomes `MuxError::Reply`.
fn bulk(reply: &Bytes, at: usize) -> Result<(Option<Bytes>, usize), MuxError> {
    let protocol = |what: &str| MuxError::Protocol(ProtocolError(what.to_owned()));
    let line_end = wire::find_crlf(reply, at + 1).ok_or_else(|| protocol("truncated reply"))?;
    let line = &reply[at + 1..line_end];
    match reply[at] {
        b'$' => {
            let len = wire::parse_int(line)?;
            if len < 0 {
                return Ok((None, line_end + 2));
            }
            let start = line_end + 2;
            let end = start + len as usize;
            if end + 2 > reply.len() {
                return Err(protocol("truncated bulk string"));
            }
            Ok((Some(reply.slice(start..end)), end + 2))
        }
        b'-' => Err(MuxError::Reply(String::from_utf8_lossy(line).into_owned())),
        _ => Err(protocol("expected a bulk string")),
    }
}

fn array_of_bulks(reply: &Bytes) -> Result<Vec<Option<Bytes>>, MuxError> {
    if reply.first() != Some(&b'*') {
        // An error reply says why; anything else is not what MGET answers.
        bulk(reply, 0)?;
        return Err(MuxError::Protocol(ProtocolError(
            "expected an array".into(),
        )));
    }
    let line_end = wire::find_crlf(reply, 1)
        .ok_or_else(|| MuxError::Protocol(ProtocolError("truncated reply".into())))?;
    let n = wire::parse_int(&reply[1..line_end])?.max(0) as usize;
    let mut at = line_end + 2;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let (value, next) = bulk(reply, at)?;
        values.push(value);
        at = next;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_replies_are_sliced_without_copying() {
        let reply = Bytes::from_static(b"$5\r\nhello\r\n");
        let (value, end) = bulk(&reply, 0).expect("a bulk string");
        assert_eq!(value.as_deref(), Some(&b"hello"[..]));
        assert_eq!(end, reply.len());
        assert_eq!(
            value.map(|v| v.as_ptr()),
            Some(reply[4..].as_ptr()),
            "the value borrows the reply"
        );
        assert_eq!(
            bulk(&Bytes::from_static(b"$-1\r\n"), 0).expect("nil").0,
            None
        );
    }

    #[test]
    fn mget_replies_give_a_value_or_none_per_key() {
        let reply = Bytes::from_static(b"*3\r\n$1\r\na\r\n$-1\r\n$2\r\nbc\r\n");
        let values = array_of_bulks(&reply).expect("an array");
        assert_eq!(
            values,
            [
                Some(Bytes::from_static(b"a")),
                None,
                Some(Bytes::from_static(b"bc"))
            ]
        );
    }

    #[test]
    fn error_and_malformed_replies_are_errors_not_panics() {
        assert!(matches!(
            bulk(&Bytes::from_static(b"-WRONGTYPE oops\r\n"), 0),
            Err(MuxError::Reply(m)) if m.starts_with("WRONGTYPE")
        ));
        for bad in [
            &b"$9\r\nshort\r\n"[..],
            b"$x\r\n",
            b"+OK\r\n",
            b"*2\r\n$1\r\na\r\n",
        ] {
            let reply = Bytes::copy_from_slice(bad);
            assert!(array_of_bulks(&reply).is_err(), "{bad:?}");
        }
    }
}
