//! The client timeouts of one HTTP/2 connection (the HTTP/1 server times its own phases), and
//! the stream wrapper that shows its frames to the flood meter.
//!
//! A connection is in one of three phases: busy (a stream is open: the request body and the
//! backend have their own timeouts), idle (no stream since `since`: keep-alive timeout) or
//! starting (no stream yet: header timeout). A connection is idle whenever no stream is open,
//! whatever frames arrive, so PINGs cannot keep one open.

use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::coarse_clock;
use super::h2_flood::{FloodMeter, Verdict};
use super::limits::ClientLimits;

/// Low bit of `ClientClock::phase`: idle (1) or starting (0); the rest: `since` in ms.
const IDLE: u64 = 1;

/// Why a connection's time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// A request head did not arrive whole within the header timeout (HTTP/1), or no request
    /// came within it (HTTP/2).
    Header,
    /// No request within the keep-alive timeout.
    Idle,
    /// The client flooded the connection with frames that carry no request.
    Flood(&'static str),
}

impl Expiry {
    /// The label of the closed-connections counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Header => "header_timeout",
            Expiry::Idle => "keepalive_timeout",
            Expiry::Flood(_) => "http2_flood",
        }
    }
}

/// Phases and in-flight requests of one client connection.
#[derive(Debug)]
pub struct ClientClock {
    /// The connection's start on the coarse clock: its timeouts are seconds.
    origin: Duration,
    phase: AtomicU64,
    in_flight: AtomicU32,
    flood: OnceLock<&'static str>,
}

impl Default for ClientClock {
    fn default() -> Self {
        Self {
            origin: coarse_clock::now(),
            phase: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            flood: OnceLock::new(),
        }
    }
}

impl ClientClock {
    fn now(&self) -> u64 {
        self.elapsed().as_millis() as u64
    }

    fn elapsed(&self) -> Duration {
        coarse_clock::now().saturating_sub(self.origin)
    }

    /// A request has arrived.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's response has been sent (or abandoned).
    pub fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.phase.store(self.now() << 1 | IDLE, Ordering::Relaxed);
        }
    }

    /// Resolves when the connection's time has run out, with the reason. A flood is seen when
    /// the connection's task is next polled (the stream wakes it when it finds one).
    pub async fn expired(&self, limits: &ClientLimits) -> Expiry {
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        std::future::poll_fn(|cx| {
            loop {
                if let Some(why) = self.flood.get() {
                    return Poll::Ready(Expiry::Flood(why));
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match self.time_left(limits) {
                    Ok(wait) => timer.as_mut().reset(tokio::time::Instant::now() + wait),
                    Err(expiry) => return Poll::Ready(expiry),
                }
            }
        })
        .await
    }

    /// How long until the phase's timeout could run out (busy: when to look again), or why it
    /// has run out.
    fn time_left(&self, limits: &ClientLimits) -> Result<Duration, Expiry> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Ok(limits.header_timeout);
        }
        let phase = self.phase.load(Ordering::Relaxed);
        let (expiry, timeout) = if phase & IDLE != 0 {
            (Expiry::Idle, limits.keepalive_timeout)
        } else {
            (Expiry::Header, limits.header_timeout)
        };
        let since = Duration::from_millis(phase >> 1);
        let elapsed = self.elapsed().saturating_sub(since);
        timeout
            .checked_sub(elapsed)
            .filter(|left| !left.is_zero())
            .ok_or(expiry)
    }
}

/// An HTTP/2 client's stream, as the server reads it: frame headers go to the flood meter. Once
/// a flood is found, reading stops (the server still writes its GOAWAY) until the connection is
/// closed.
pub struct Watched<S> {
    inner: S,
    connection: std::sync::Arc<super::Connection>,
    /// Until the bytes turn out not to be HTTP/2 (hyper refuses them then).
    meter: Option<FloodMeter>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, connection: std::sync::Arc<super::Connection>) -> Self {
        Self {
            inner,
            connection,
            meter: Some(FloodMeter::default()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let clock = &this.connection.clock;
        if clock.flood.get().is_some() {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let arrived = &buf.filled()[before..];
        if let Some(meter) = &mut this.meter
            && !arrived.is_empty()
        {
            match meter.feed(arrived) {
                Verdict::NotHttp2 => this.meter = None,
                Verdict::Fine => {}
                Verdict::Flood(why) => {
                    let _ = clock.flood.set(why);
                    // The connection's task polls its clock next, and closes.
                    cx.waker().wake_by_ref();
                }
            }
        }
        polled
    }
}
impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
