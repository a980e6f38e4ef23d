//! HTTP/2 (by ALPN, or prior knowledge on plain connections): framing, HPACK and flow control
//! by the h2 crate, every request through the same forwarding as HTTP/1.1 and HTTP/3.
//!
//! A connection's streams are served in the connection's own task, beside its frames, as nginx
//! and HAProxy serve them: no task, no cross-task wake-up and no shared queue per stream. A
//! stream that panics ends its connection's task (tokio catches it there; the process goes on).
//!
//! The hostile-client rules: the flood meter and the header and idle timeouts of
//! `client_clock`, the header list size and the streams per connection as h2 settings, and a
//! PING every `http2_ping_interval` that must be answered by the next.

mod body;

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::{Handshake, SendResponse};
use h2::{Ping, PingPong, Reason, RecvStream};
use hyper::Request;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

pub use body::H2RequestBody;

use super::boxed::boxed;
use super::client_clock::{Expiry, Watched};
use super::request_body::ClientBody;
use super::{ClientLimits, Connection, Proxy, coarse_clock, forward};
use crate::lifecycle::drain;
use crate::observe::metrics::Metrics;

/// How long a connection told GOAWAY (flood, idle) gets to flush it before it is cut.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// Flow control per stream and per connection (hyper's defaults, which this server follows):
/// a fast upload is not held back by round trips.
const WINDOW: u32 = 1024 * 1024;
const MAX_FRAME: u32 = 16 * 1024;
/// Response bytes a connection buffers beyond what the client's window takes.
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// Streams the gateway may reset for a client's errors before the connection is closed.
const MAX_ERROR_RESETS: usize = 1024;

impl Proxy {
    /// Serves one HTTP/2 connection until the client closes it, it errs or times out, or the
    /// drain stops it (then GOAWAY, and its requests in flight finish).
    pub(super) async fn serve_http2<S>(self: Arc<Self>, connection: Arc<Connection>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let client = connection.client;
        let stopped = drain::stopped(self.drain.watch());
        let limits = &self.config.client_limits;
        let handshake = settings(limits).handshake(Watched::new(stream, connection.clone()));
        let proxy = self.clone();
        let serving = connection.clone();
        let mut served = Served::new(
            handshake,
            limits.http2_ping_interval,
            move |request, respond| {
                proxy
                    .clone()
                    .serve_stream(serving.clone(), request, respond)
            },
        );
        let result = tokio::select! {
            // In this order, without drawing a random order on every wake-up.
            biased;
            result = poll_fn(|cx| served.poll(cx)) => result,
            () = stopped => {
                served.graceful_shutdown();
                poll_fn(|cx| served.poll(cx)).await
            }
            expiry = connection.clock.expired(limits) => {
                let metrics = &self.observer.metrics;
                Metrics::labelled(&metrics.connections_closed, "reason", expiry.as_str()).inc();
                tracing::debug!(%client, reason = expiry.as_str(), "closing the connection");
                if let Expiry::Flood(why) = expiry {
                    tracing::warn!(%client, why, "HTTP/2 flood: GOAWAY and close");
                }
                served.graceful_shutdown();
                let _ = tokio::time::timeout(GOAWAY_GRACE, poll_fn(|cx| served.poll(cx))).await;
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::debug!(%client, %error, "connection ended with an error");
        }
    }

    /// One stream: its request forwarded, its response sent. The client's RST_STREAM cancels
    /// the request where it is, its exchange with the backend included.
    async fn serve_stream(
        self: Arc<Self>,
        connection: Arc<Connection>,
        request: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
    ) {
        let client = connection.client;
        let declared = forward::request_length(&request);
        let request = request.map(|stream| ClientBody::Http2(H2RequestBody::new(stream, declared)));
        let mut forwarded = pin!(forward::handle(self, connection, request));
        let response = poll_fn(|cx| match forwarded.as_mut().poll(cx) {
            Poll::Ready(Ok(response)) => Poll::Ready(Some(response)),
            Poll::Pending => respond.poll_reset(cx).map(|_| None),
        })
        .await;
        let Some(response) = response else {
            tracing::debug!(%client, "the client reset its stream before the response");
            return;
        };
        if let Err(error) = body::send_response(&mut respond, response).await {
            tracing::debug!(%client, %error, "HTTP/2 response not sent whole");
        }
    }
}

/// The h2 settings of the gateway's connections, with the client limits h2 applies itself.
fn settings(limits: &ClientLimits) -> h2::server::Builder {
    let mut settings = h2::server::Builder::new();
    settings
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_ERROR_RESETS))
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(limits.max_head as u32);
    settings
}

/// One connection: its handshake, then its frames and its streams, polled together.
struct Served<S, Serve, Stream> {
    phase: Phase<S>,
    /// GOAWAY was asked for during the handshake: it goes out when the handshake ends.
    goaway_pending: bool,
    ping_interval: Duration,
    serve: Serve,
    /// Boxed: a stream's future is large (forwarding's state), and the set moves what it is
    /// given three times; a box is moved once.
    streams: FuturesUnordered<Pin<Box<Stream>>>,
}

enum Phase<S> {
    Handshake(Handshake<Watched<S>, Bytes>),
    Serving {
        connection: h2::server::Connection<Watched<S>, Bytes>,
        keep_alive: Option<KeepAlive>,
    },
}

impl<S, Serve, Stream> Served<S, Serve, Stream>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Serve: FnMut(Request<RecvStream>, SendResponse<Bytes>) -> Stream,
    Stream: Future<Output = ()>,
{
    fn new(handshake: Handshake<Watched<S>, Bytes>, ping_interval: Duration, serve: Serve) -> Self {
        Self {
            phase: Phase::Handshake(handshake),
            goaway_pending: false,
            ping_interval,
            serve,
            streams: FuturesUnordered::new(),
        }
    }

    /// GOAWAY: no new streams; the connection ends when those open are done.
    fn graceful_shutdown(&mut self) {
        match &mut self.phase {
            Phase::Handshake(_) => self.goaway_pending = true,
            Phase::Serving { connection, .. } => connection.graceful_shutdown(),
        }
    }

    /// Ready when the connection has ended. Streams are polled first, so that what they
    /// answer goes out with the frames the connection writes next.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        loop {
            match &mut self.phase {
                Phase::Handshake(handshake) => {
                    let mut connection = ready!(Pin::new(handshake).poll(cx))?;
                    if self.goaway_pending {
                        connection.graceful_shutdown();
                    }
                    let keep_alive = connection
                        .ping_pong()
                        .map(|pings| KeepAlive::new(pings, self.ping_interval));
                    self.phase = Phase::Serving {
                        connection,
                        keep_alive,
                    };
                }
                Phase::Serving {
                    connection,
                    keep_alive,
                } => {
                    if keep_alive
                        .as_mut()
                        .is_some_and(|keep_alive| keep_alive.poll_timed_out(cx))
                    {
                        tracing::debug!("HTTP/2 PING unanswered: closing the connection");
                        *keep_alive = None;
                        connection.abrupt_shutdown(Reason::NO_ERROR);
                    }
                    loop {
                        while let Poll::Ready(Some(())) = self.streams.poll_next_unpin(cx) {}
                        match ready!(connection.poll_accept(cx)) {
                            Some(Ok((request, respond))) => {
                                self.streams.push(boxed(|| (self.serve)(request, respond)));
                            }
                            Some(Err(error)) => return Poll::Ready(Err(error)),
                            None => return Poll::Ready(Ok(())),
                        }
                    }
                }
            }
        }
    }
}

/// A PING every interval; one still unanswered at the next means the client is gone.
struct KeepAlive {
    pings: PingPong,
    interval: Duration,
    next: Pin<Box<Sleep>>,
    /// When `next` is due, on the coarse clock: until then a wake-up of the connection need
    /// not poll the timer (its waker is registered once, by the poll that armed it).
    due: Duration,
    armed: bool,
    awaiting_pong: bool,
}

/// More than the coarse clock's lag (a tick: 4 ms at HZ=250, 10 ms at HZ=100), so that the
/// timer's own wake-up is never taken for an early one.
const COARSE_MARGIN: Duration = Duration::from_millis(50);

impl KeepAlive {
    fn new(pings: PingPong, interval: Duration) -> Self {
        Self {
            pings,
            interval,
            next: Box::pin(tokio::time::sleep(interval)),
            due: coarse_clock::now() + interval,
            armed: false,
            awaiting_pong: false,
        }
    }

    fn poll_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        if self.awaiting_pong && self.pings.poll_pong(cx).is_ready() {
            self.awaiting_pong = false;
        }
        if self.armed && coarse_clock::now() + COARSE_MARGIN < self.due {
            return false;
        }
        if self.next.as_mut().poll(cx).is_pending() {
            self.armed = true;
            return false;
        }
        if self.awaiting_pong {
            return true;
        }
        self.awaiting_pong = self.pings.send_ping(Ping::opaque()).is_ok();
        self.next
            .as_mut()
            .reset(tokio::time::Instant::now() + self.interval);
        self.due = coarse_clock::now() + self.interval;
        // Registers the timer's wake-up.
        self.armed = self.next.as_mut().poll(cx).is_pending();
        false
    }
}
