//! One TCP session: connect to an endpoint of the route's backend (another endpoint when one
//! refuses or does not answer in time), write a PROXY protocol header if the route asks, then
//! copy both ways. A side that finishes sending is passed on as a half-close, so the other
//! side's last bytes still arrive; nothing either way for the idle timeout ends the session.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{StreamConfig, proxy_protocol};
use crate::observe::{SessionEnd, StreamSession};
use crate::snapshot::Backend;
use crate::snapshot::stream::StreamRoute;

/// Endpoints tried for one connection at most.
const CONNECT_ATTEMPTS: usize = 3;

/// Relays `client` (whose addresses, as the PROXY protocol would tell them, are `addresses`)
/// to the route's backend, filling in `session`.
pub async fn relay(
    client: TcpStream,
    addresses: (SocketAddr, SocketAddr),
    route: &StreamRoute,
    config: &StreamConfig,
    session: &mut StreamSession,
) {
    let Some(backend) = route.backends.choose().and_then(|c| c.backend.clone()) else {
        session.end = SessionEnd::NoEndpoints;
        return;
    };
    session.backend = Some(backend.clone());
    let (mut upstream, endpoint) = match connect(&backend, config).await {
        Ok(connected) => connected,
        Err(end) => {
            session.end = end;
            return;
        }
    };
    session.upstream = Some(endpoint);
    if let Some(version) = route.send_proxy_protocol {
        let header = proxy_protocol::encode(version, addresses.0, addresses.1);
        if upstream.write_all(&header).await.is_err() {
            session.end = SessionEnd::Reset;
            return;
        }
    }
    let (received, sent, end) = copy_both_ways(client, upstream, config.idle_timeout).await;
    session.bytes_received = received;
    session.bytes_sent = sent;
    session.end = end;
}

/// A connection to one of `backend`'s endpoints, in round-robin order.
async fn connect(
    backend: &Backend,
    config: &StreamConfig,
) -> Result<(TcpStream, SocketAddr), SessionEnd> {
    let attempts = backend.endpoints.len().min(CONNECT_ATTEMPTS);
    if attempts == 0 {
        return Err(SessionEnd::NoEndpoints);
    }
    for _ in 0..attempts {
        let Some(endpoint) = backend.next_endpoint() else {
            break;
        };
        match tokio::time::timeout(config.connect_timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, endpoint));
            }
            Ok(Err(error)) => {
                tracing::debug!(%endpoint, %error, "backend connect failed; trying the next endpoint")
            }
            Err(_) => {
                tracing::debug!(%endpoint, "backend connect timed out; trying the next endpoint")
            }
        }
    }
    Err(SessionEnd::ConnectFailed)
}

/// Copies both ways until both sides have finished, one fails, or nothing moves for `idle`.
/// Returns the bytes read from the client, from the backend, and how it ended.
async fn copy_both_ways(
    client: TcpStream,
    backend: TcpStream,
    idle: std::time::Duration,
) -> (u64, u64, SessionEnd) {
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let mut client = Metered::new(client, &activity, start);
    let mut backend = Metered::new(backend, &activity, start);
    let end = {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
        tokio::pin!(copy);
        loop {
            let last_moved = activity.load(Ordering::Relaxed);
            let deadline = start + std::time::Duration::from_millis(last_moved) + idle;
            tokio::select! {
                copied = &mut copy => break match copied {
                    Ok(_) => SessionEnd::Closed,
                    Err(_) => SessionEnd::Reset,
                },
                () = tokio::time::sleep_until(deadline) => {
                    if activity.load(Ordering::Relaxed) == last_moved {
                        break SessionEnd::IdleTimeout;
                    }
                }
            }
        }
    };
    (client.bytes, backend.bytes, end)
}

/// A stream that counts the bytes read from it and notes when bytes last moved either way.
struct Metered<'a, S> {
    inner: S,
    bytes: u64,
    /// Milliseconds from `start` to the last bytes moved, shared by both sides.
    activity: &'a AtomicU64,
    start: Instant,
}

impl<'a, S> Metered<'a, S> {
    fn new(inner: S, activity: &'a AtomicU64, start: Instant) -> Self {
        Self {
            inner,
            bytes: 0,
            activity,
            start,
        }
    }

    fn moved(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.activity.store(now, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.bytes += read as u64;
            self.moved();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
