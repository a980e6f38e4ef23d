//! UDP relayed by flow: each client address (and listener) gets a session, a socket connected
//! to one backend endpoint, whose replies are sent back from the address the client sent to:
//! the listener's own socket where it is bound, or a socket bound to the VIP:port where
//! sk_lookup steers many listeners into one socket. A session ends after the idle timeout; the
//! table of sessions is bounded, and datagrams of new flows beyond it are dropped and counted,
//! never evicting live ones.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::{StreamProxy, original_destination};
use crate::lifecycle::drain;
use crate::observe::metrics::Metrics;
use crate::observe::{SessionEnd, StreamSession};
use crate::snapshot::Backend;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Sessions by client and the listener address it sent to.
type Sessions = Mutex<HashMap<(SocketAddr, SocketAddr), Arc<Session>>>;

/// One client flow.
struct Session {
    upstream: UdpSocket,
    client: SocketAddr,
    listener: SocketAddr,
    /// Where replies are sent from.
    reply: Arc<UdpSocket>,
    backend: Arc<Backend>,
    endpoint: SocketAddr,
    route: String,
    time: SystemTime,
    started: Instant,
    /// Milliseconds from `started` to the last datagram either way.
    last: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
}

impl Session {
    fn moved(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }
}

/// Relays the flows reaching `socket` until the drain stops accepting. `bound` is the
/// listener address the socket is bound to; without one, the socket takes steered datagrams,
/// each of which says where it was sent.
pub async fn serve(proxy: Arc<StreamProxy>, socket: Arc<UdpSocket>, bound: Option<SocketAddr>) {
    if bound.is_none()
        && let Err(error) = original_destination::enable(&socket)
    {
        tracing::error!(%error, "steered UDP cannot be served: the original destination of datagrams is not available");
        return;
    }
    let sessions: Arc<Sessions> = Arc::default();
    let mut replies = ReplySockets::default();
    let stop = drain::not_accepting(proxy.drain.watch());
    tokio::pin!(stop);
    let mut datagram = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            biased;
            () = &mut stop => return,
            received = receive(&socket, bound, &mut datagram) => received,
        };
        // An error is an ICMP error from an earlier reply: nothing to do with this socket.
        let Ok((length, client, Some(listener))) = received else {
            continue;
        };
        let found = sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(client, listener))
            .cloned();
        let session = match found {
            Some(session) => session,
            None => {
                let reply = match bound {
                    Some(_) => socket.clone(),
                    None => match replies.from(listener) {
                        Some(reply) => reply,
                        None => continue,
                    },
                };
                match open(&proxy, reply, (client, listener), &sessions) {
                    Some(session) => session,
                    None => continue,
                }
            }
        };
        session.received.fetch_add(length as u64, Ordering::Relaxed);
        session.moved();
        // Waits only while the socket's send buffer is full (a new socket is not known to
        // be writable until the runtime has polled it, so no `try_send`).
        let _ = session.upstream.send(&datagram[..length]).await;
    }
}

/// One datagram: its length, its source, and the listener address it was sent to.
async fn receive(
    socket: &UdpSocket,
    bound: Option<SocketAddr>,
    datagram: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    match bound {
        Some(listener) => {
            let (length, client) = socket.recv_from(datagram).await?;
            Ok((length, client, Some(listener)))
        }
        None => original_destination::receive(socket, datagram).await,
    }
}

/// Sockets that send from steered listener addresses, made on first use.
#[derive(Default)]
struct ReplySockets(HashMap<SocketAddr, Arc<UdpSocket>>);

impl ReplySockets {
    fn from(&mut self, listener: SocketAddr) -> Option<Arc<UdpSocket>> {
        if let Some(socket) = self.0.get(&listener) {
            return Some(socket.clone());
        }
        match original_destination::reply_socket(listener) {
            Ok(socket) => {
                let socket = Arc::new(socket);
                self.0.insert(listener, socket.clone());
                Some(socket)
            }
            Err(error) => {
                tracing::warn!(%listener, %error, "cannot send UDP replies from the listener's address");
                None
            }
        }
    }
}

/// A new session for `client`, with its reply task started; `None` (counted) when the table is
/// full or the route has no endpoint.
fn open(
    proxy: &Arc<StreamProxy>,
    reply: Arc<UdpSocket>,
    (client, address): (SocketAddr, SocketAddr),
    sessions: &Arc<Sessions>,
) -> Option<Arc<Session>> {
    let refuse = |end: SessionEnd| {
        let mut session = StreamSession::begin("udp", (client, address), String::new());
        session.end = end;
        // Counted, not logged: a flood of new flows must not become a flood of log lines.
        proxy.observer.metrics.record_session(&session);
    };
    let route = proxy.table.current().stream.udp.get(&address).cloned()?;
    if sessions.lock().unwrap_or_else(|e| e.into_inner()).len() >= proxy.config.udp_max_sessions {
        refuse(SessionEnd::TableFull);
        return None;
    }
    let backend = route.backends.choose().and_then(|c| c.backend.clone());
    let Some((backend, endpoint)) = backend.and_then(|b| {
        let endpoint = b.next_endpoint()?;
        Some((b, endpoint))
    }) else {
        refuse(SessionEnd::NoEndpoints);
        return None;
    };
    let upstream = match connected_socket(endpoint) {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::debug!(%endpoint, %error, "cannot open a UDP socket to the backend");
            refuse(SessionEnd::ConnectFailed);
            return None;
        }
    };
    let session = Arc::new(Session {
        upstream,
        client,
        listener: address,
        reply,
        backend,
        endpoint,
        route: route.owner.clone(),
        time: SystemTime::now(),
        started: Instant::now(),
        last: AtomicU64::new(0),
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    });
    sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((client, address), session.clone());
    let active = &proxy.observer.metrics.stream_sessions_active;
    let active = Metrics::labelled(active, "protocol", "udp");
    active.inc();
    let (proxy, sessions) = (proxy.clone(), sessions.clone());
    let replying = session.clone();
    tokio::spawn(async move {
        let end = replies(&replying, proxy.config.udp_idle_timeout).await;
        let key = (replying.client, replying.listener);
        let mut table = sessions.lock().unwrap_or_else(|e| e.into_inner());
        if table.get(&key).is_some_and(|s| Arc::ptr_eq(s, &replying)) {
            table.remove(&key);
        }
        drop(table);
        active.dec();
        let mut record = StreamSession::begin("udp", key, replying.route.clone());
        record.time = replying.time;
        record.backend = Some(replying.backend.clone());
        record.upstream = Some(replying.endpoint);
        record.bytes_received = replying.received.load(Ordering::Relaxed);
        record.bytes_sent = replying.sent.load(Ordering::Relaxed);
        record.duration = replying.started.elapsed();
        record.end = end;
        proxy.observer.finish_session(Box::new(record));
    });
    Some(session)
}

/// An unbound socket of `endpoint`'s family, connected to it (so only its replies arrive).
fn connected_socket(endpoint: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = match endpoint {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(endpoint)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

thread_local! {
    /// One buffer per worker thread for replies, instead of 64 KiB per session: a reply is
    /// received and sent on without waiting in between.
    static REPLY: RefCell<Vec<u8>> = RefCell::new(vec![0u8; MAX_DATAGRAM]);
}

/// Sends the backend's replies to the client until the session has been idle for `idle`.
async fn replies(session: &Session, idle: Duration) -> SessionEnd {
    loop {
        let last = session.last.load(Ordering::Relaxed);
        let deadline = session.started + Duration::from_millis(last) + idle;
        match tokio::time::timeout_at(deadline, session.upstream.readable()).await {
            Ok(Ok(())) => {
                // Replies go out without waiting while the buffer is held.
                let _ = session.reply.writable().await;
                if relay_replies(session).is_err() {
                    // The backend's port is closed (an ICMP error on the connected socket).
                    return SessionEnd::Reset;
                }
            }
            Ok(Err(_)) => return SessionEnd::Reset,
            Err(_) if session.last.load(Ordering::Relaxed) == last => return SessionEnd::Closed,
            Err(_) => {}
        }
    }
}

/// Sends on every reply waiting now; a full send buffer drops one, as the network may.
fn relay_replies(session: &Session) -> std::io::Result<()> {
    REPLY.with_borrow_mut(|datagram| {
        loop {
            match session.upstream.try_recv(datagram) {
                Ok(length) => {
                    session.sent.fetch_add(length as u64, Ordering::Relaxed);
                    session.moved();
                    let _ = session
                        .reply
                        .try_send_to(&datagram[..length], session.client);
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    })
}
