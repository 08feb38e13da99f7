//! Closing connections that stay silent (docs/contract.md section 7): hyper's
//! `header_read_timeout` only starts at a request's first byte, so a client
//! that connects and sends nothing, or goes quiet after an answer, would hold
//! one of the `max_connections` permits for ever.
//!
//! [`IdleIo`] wraps an accepted stream: when, for a whole `header_read_timeout`,
//! no byte came in or went out and no request was in flight, its next read
//! fails and the connection ends. [`Requests`] is what the service tells it:
//! a request is in flight from the call of the service until its answer's
//! body is done or dropped ([`InFlightBody`]), so a slow backend or a long
//! streamed answer is never cut.
//!
//! The cost on the hot path is one plain increment per read or write and,
//! per request, one atomic add at its start and one at its end (plus a
//! reference count), with no allocation: the timer is never reset on
//! activity, only re-armed when it fires and finds there was some. A quiet
//! connection is therefore closed between one and two `header_read_timeout`s
//! after its last byte or answer, and exactly one after accept when it never
//! sends anything.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests in flight in the low 32 bits, requests finished in the high 32
/// (wrapping): one word, so that a start and an end are one atomic add each,
/// and one load tells both "busy" and "something happened since".
const IN_FLIGHT: u64 = 0xffff_ffff;
/// Added when a request ends: one fewer in flight, one more finished.
const FINISHED: u64 = (1 << 32) - 1;

/// The requests of one connection, as its service sees them.
#[derive(Clone)]
pub struct Requests(Arc<AtomicU64>);

impl Requests {
    /// Marks a request in flight until the returned guard is dropped.
    pub fn start(&self) -> InFlight {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlight(self.0.clone())
    }
}

/// One request in flight; dropped when its answer is done (or abandoned).
pub struct InFlight(Arc<AtomicU64>);

impl InFlight {
    /// Keeps the request in flight until `response`'s body is done or dropped.
    pub fn until_sent<B>(self, response: Response<B>) -> Response<InFlightBody<B>> {
        response.map(|body| InFlightBody {
            body,
            _in_flight: self,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_add(FINISHED, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request in flight while hyper sends it.
pub struct InFlightBody<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An accepted stream whose reads fail once the connection has been idle
/// (no byte either way, no request in flight) for a whole `timeout`.
pub struct IdleIo<T> {
    io: T,
    requests: Arc<AtomicU64>,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// Reads and writes that moved bytes; only this connection's task
    /// touches it, so a plain counter.
    progress: u64,
    /// `progress` and the request word when the timer was last armed.
    armed_at: (u64, u64),
}

impl<T> IdleIo<T> {
    /// Wraps `io`, armed from now: a client that never sends anything is
    /// closed `timeout` after accept.
    pub fn new(io: T, timeout: Duration) -> (IdleIo<T>, Requests) {
        let requests = Arc::new(AtomicU64::new(0));
        let idle = IdleIo {
            io,
            requests: requests.clone(),
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            progress: 0,
            armed_at: (0, 0),
        };
        (idle, Requests(requests))
    }

    /// Whether the timer fired on a connection that stayed idle since it was
    /// armed; otherwise re-arms it (registering `cx`) for another period.
    fn idle_for_a_whole_period(&mut self, cx: &mut Context<'_>) -> bool {
        // Runs at most twice: a re-armed timer lies `timeout` (> 0, checked
        // by the config) in the future.
        while self.timer.as_mut().poll(cx).is_ready() {
            let requests = self.requests.load(Ordering::Relaxed);
            let now = (self.progress, requests);
            if requests & IN_FLIGHT == 0 && now == self.armed_at {
                return true;
            }
            self.armed_at = now;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progress = this.progress.wrapping_add(1);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.idle_for_a_whole_period(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for header_read_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            this.progress = this.progress.wrapping_add(1);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            this.progress = this.progress.wrapping_add(1);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_end_takes_one_from_in_flight_and_counts_one_finished() {
        let word = Arc::new(AtomicU64::new(0));
        let requests = Requests(word.clone());
        let a = requests.start();
        let b = requests.start();
        assert_eq!(word.load(Ordering::Relaxed) & IN_FLIGHT, 2);
        drop(a);
        let v = word.load(Ordering::Relaxed);
        assert_eq!((v & IN_FLIGHT, v >> 32), (1, 1));
        drop(b);
        let v = word.load(Ordering::Relaxed);
        assert_eq!((v & IN_FLIGHT, v >> 32), (0, 2));
    }
}
