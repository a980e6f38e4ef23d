//! One TCP session: connect to an endpoint of the route's backend (another endpoint when one
//! refuses or does not answer in time), write a PROXY protocol header if the route asks, then
//! move bytes both ways in the kernel (splice). A side that finishes sending is passed on as a
//! half-close, so the other side's last bytes still arrive; nothing either way for the idle
//! timeout ends the session.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::splice::{self, Pipe};
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

/// Moves bytes both ways (in the kernel, with splice) until both sides have finished, one
/// fails, or nothing moves for `idle`. Returns the bytes from the client, from the backend,
/// and how it ended.
async fn copy_both_ways(
    client: TcpStream,
    backend: TcpStream,
    idle: std::time::Duration,
) -> (u64, u64, SessionEnd) {
    let (Ok(upstream), Ok(downstream)) = (Pipe::take(), Pipe::take()) else {
        return (0, 0, SessionEnd::Reset);
    };
    let start = Instant::now();
    // Milliseconds from `start` to the last bytes moved either way.
    let activity = AtomicU64::new(0);
    let moved = || activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let (received, sent) = (AtomicU64::new(0), AtomicU64::new(0));
    let end = {
        let both = async {
            tokio::try_join!(
                splice::one_way(&client, &backend, &upstream, &received, moved),
                splice::one_way(&backend, &client, &downstream, &sent, moved),
            )
        };
        tokio::pin!(both);
        loop {
            let last_moved = activity.load(Ordering::Relaxed);
            let deadline = start + std::time::Duration::from_millis(last_moved) + idle;
            tokio::select! {
                copied = &mut both => break match copied {
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
    // Pipes of a session cut short may hold bytes: those are closed, not pooled.
    let finished = end == SessionEnd::Closed;
    upstream.give_back(finished);
    downstream.give_back(finished);
    (received.into_inner(), sent.into_inner(), end)
}
