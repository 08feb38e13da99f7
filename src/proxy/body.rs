//! Bodies that flow through the proxy, both ways: whole (a hit, a buffered
//! answer), streamed from the other side, or a buffered prefix followed by the
//! rest of a stream (a body that turned out larger than we keep).

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn StdError + Send + Sync>;

pub enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    Stream(Stream),
}

/// A client's request body that broke off while it was forwarded (an
/// invalid chunk size, a reset): the client's failure, not the backend's,
/// answered 400 ([`super::forward::UpstreamError::ClientBody`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body broke off: {0}")]
pub struct ClientBodyError(#[source] hyper::Error);

pub struct Stream {
    prefix: Option<Bytes>,
    rest: Incoming,
    /// `[upstream] idle_timeout`, when this body comes from the backend.
    idle: Option<Idle>,
    /// A copy kept for the search log, on logged answers that are not stored.
    tee: Option<Box<dyn Teed>>,
}

/// What a logged body tells when it ends: its whole copy, or `None` when it
/// was larger than what is kept. The search log's pending entry implements
/// it; a trait here, so that the body does not depend on the log.
pub trait OnEnd: Send + Sync + 'static {
    fn complete(self, copy: Option<&[u8]>);
}

/// Keeps a copy of a streamed body (up to a limit) and completes the search
/// log entry when the body ends or is dropped.
pub struct Tee<L: OnEnd> {
    copy: BytesMut,
    limit: usize,
    overflowed: bool,
    log: Option<L>,
}

/// A [`Tee`] whatever completes it: one box per logged body, as before.
trait Teed: Send + Sync {
    fn keep(&mut self, data: &Bytes);
    fn complete(&mut self);
}

impl<L: OnEnd> Teed for Tee<L> {
    fn keep(&mut self, data: &Bytes) {
        if self.overflowed {
            return;
        }
        if self.copy.len() + data.len() > self.limit {
            self.overflowed = true;
            self.copy = BytesMut::new();
        } else {
            self.copy.extend_from_slice(data);
        }
    }

    fn complete(&mut self) {
        if let Some(log) = self.log.take() {
            let copy = (!self.overflowed).then_some(&self.copy[..]);
            log.complete(copy);
        }
    }
}

impl<L: OnEnd> Drop for Tee<L> {
    fn drop(&mut self) {
        Teed::complete(self);
    }
}

/// The longest the backend may pause between two chunks of its body. Only
/// time spent waiting on the backend counts: a client that reads slowly does
/// not make the backend look stalled.
struct Idle {
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` runs: set when a poll finds no data, cleared when a
    /// chunk arrives.
    armed: bool,
}

impl Idle {
    fn new(limit: Duration) -> Idle {
        Idle {
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// The backend had nothing for us: start the clock unless it runs.
    /// Ready when the pause has lasted `limit`.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.limit);
        }
        self.timer.as_mut().poll(cx)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the backend paused its answer longer than the upstream idle timeout")]
pub struct BodyStalled;

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Full(Some(bytes.into()))
    }

    pub fn stream(body: Incoming) -> ProxyBody {
        ProxyBody::resume(Bytes::new(), body, None)
    }

    /// A body that yields `prefix` and then the rest of `body`, failing if
    /// the rest pauses longer than `idle` between two chunks. `idle` is
    /// `None` for a client's request body, and only then: its errors are
    /// [`ClientBodyError`]s.
    pub fn resume(prefix: Bytes, body: Incoming, idle: Option<Duration>) -> ProxyBody {
        ProxyBody::Stream(Stream {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest: body,
            idle: idle.map(Idle::new),
            tee: None,
        })
    }

    /// Keeps a copy of what streams (up to `limit` bytes, the already-read
    /// prefix included) for `log`; whole bodies complete the log at once.
    pub fn logged(self, log: impl OnEnd, limit: usize) -> ProxyBody {
        match self {
            ProxyBody::Stream(mut s) => {
                let mut tee = Tee {
                    copy: BytesMut::new(),
                    limit,
                    overflowed: false,
                    log: Some(log),
                };
                if let Some(prefix) = &s.prefix {
                    tee.keep(prefix);
                }
                s.tee = Some(Box::new(tee));
                ProxyBody::Stream(s)
            }
            ProxyBody::Full(bytes) => {
                log.complete(bytes.as_deref());
                ProxyBody::Full(bytes)
            }
            ProxyBody::Empty => {
                log.complete(Some(b""));
                ProxyBody::Empty
            }
        }
    }

    /// A backend body, cut when it pauses longer than `idle`.
    pub fn from_backend(body: Incoming, idle: Duration) -> ProxyBody {
        ProxyBody::resume(Bytes::new(), body, Some(idle))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(s) => {
                if let Some(prefix) = s.prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                match Pin::new(&mut s.rest).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        if let Some(idle) = &mut s.idle {
                            idle.armed = false;
                        }
                        if let Some(tee) = &mut s.tee {
                            match &frame {
                                Some(Ok(f)) => {
                                    if let Some(data) = f.data_ref() {
                                        tee.keep(data);
                                    }
                                }
                                // End or error: the log is complete now.
                                _ => tee.complete(),
                            }
                        }
                        // A body read without an idle limit is the client's:
                        // its errors are marked as the client's (400).
                        let client = s.idle.is_none();
                        Poll::Ready(frame.map(|f| {
                            f.map_err(|e| {
                                if client {
                                    ClientBodyError(e).into()
                                } else {
                                    e.into()
                                }
                            })
                        }))
                    }
                    Poll::Pending => {
                        if let Some(idle) = &mut s.idle {
                            ready!(idle.poll_stalled(cx));
                            // Nothing more is read from it: the backend
                            // connection goes with `rest` when the body drops.
                            return Poll::Ready(Some(Err(BodyStalled.into())));
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Stream(s) => s.prefix.is_none() && s.rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(s) => {
                let extra = s.prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = s.rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

/// The outcome of reading a body up to a limit.
pub enum Collected {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// Larger than the limit: what was read, and the rest still to stream.
    Overflow(Bytes, Incoming),
}

/// Reads a body into memory up to `limit` bytes, within `timeout` in all
/// (a client's request body).
///
/// Beyond the limit it stops and hands back what it read plus the unread
/// rest, so the body can still be streamed on unchanged.
pub async fn collect_limited(
    body: Incoming,
    limit: usize,
    timeout: Option<Duration>,
) -> Result<Collected, CollectError> {
    let read = collect(body, limit, None);
    match timeout {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .unwrap_or(Err(CollectError::Timeout)),
        None => read.await,
    }
}

/// [`collect_limited`] for a backend body: however long it takes in all, as
/// long as it never pauses more than `idle` between two chunks.
pub async fn collect_backend(
    body: Incoming,
    limit: usize,
    idle: Duration,
) -> Result<Collected, CollectError> {
    collect(body, limit, Some(idle)).await
}

async fn collect(
    mut body: Incoming,
    limit: usize,
    idle: Option<Duration>,
) -> Result<Collected, CollectError> {
    let mut buf = BytesMut::new();
    // Several frames are the common case only for large bodies; the first
    // frame alone is kept without a copy.
    let mut first: Option<Bytes> = None;
    loop {
        let frame = match idle {
            Some(idle) => tokio::time::timeout(idle, body.frame())
                .await
                .map_err(|_| CollectError::Timeout)?,
            None => body.frame().await,
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(CollectError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not kept
        };
        let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if held + data.len() > limit {
            if let Some(f) = first.take() {
                buf.extend_from_slice(&f);
            }
            buf.extend_from_slice(&data);
            return Ok(Collected::Overflow(buf.freeze(), body));
        }
        match (&mut first, buf.is_empty()) {
            (None, true) => first = Some(data),
            (Some(f), true) => {
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                first = None;
            }
            (_, false) => buf.extend_from_slice(&data),
        }
    }
    Ok(Collected::Complete(first.unwrap_or_else(|| buf.freeze())))
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("body read failed: {0}")]
    Body(hyper::Error),
    /// The whole body was late (a client's), or it paused too long (a
    /// backend's).
    #[error("body did not arrive in time")]
    Timeout,
}
