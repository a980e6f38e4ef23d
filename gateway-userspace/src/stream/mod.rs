//! The layer 4 data plane, beside the HTTP proxy and reading the same published table: TCP
//! ports relayed whole to a Service, TLS connections passed through by server name (handed
//! over by the HTTPS listener), UDP flows relayed as sessions, and the PROXY protocol in and
//! out.

pub mod client_hello;
mod original_destination;
mod peek;
pub mod proxy_protocol;
mod splice;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};

pub use peek::PeekError;

use crate::lifecycle::drain::{self, Drain};
use crate::observe::metrics::Metrics;
use crate::observe::{Observer, StreamSession};
use crate::proxy::limits::Admission;
use crate::publish::RouteTable;
use crate::snapshot::stream::StreamRoute;

/// Timeouts and limits of layer 4 sessions.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// To connect to a backend endpoint (then the next endpoint is tried).
    pub connect_timeout: Duration,
    /// A TCP session with nothing sent either way for this long is closed (nginx's
    /// `proxy_timeout`, 10 minutes).
    pub idle_timeout: Duration,
    /// A UDP session with no datagram either way for this long ends.
    pub udp_idle_timeout: Duration,
    /// UDP sessions one socket holds at once (a bound port, or the steering socket of an
    /// address family); datagrams of new flows beyond it are dropped.
    pub udp_max_sessions: usize,
    /// For a client's PROXY protocol header, or its ClientHello on a passthrough listener.
    pub header_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_sessions: 4096,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves the layer 4 routes of the current table.
pub struct StreamProxy {
    table: Arc<RouteTable>,
    config: StreamConfig,
    observer: Arc<Observer>,
    drain: Arc<Drain>,
    admission: Arc<Admission>,
}

impl StreamProxy {
    /// A layer 4 proxy whose connections count against `admission` with the HTTP ones.
    pub fn new(
        table: Arc<RouteTable>,
        config: StreamConfig,
        observer: Arc<Observer>,
        drain: Arc<Drain>,
        admission: Arc<Admission>,
    ) -> Self {
        Self {
            table,
            config,
            observer,
            drain,
            admission,
        }
    }

    /// Relays the connections of `listener` until the drain stops accepting: to the TCP route
    /// of their listener address, or (a TLS listener) to the route of the server name each
    /// connection's ClientHello asks for. `bound` is the listener address the socket is bound
    /// to; without one (a steering socket), each connection's own local address is its
    /// listener's (the VIP:port it was sent to).
    pub async fn serve_tcp(self: Arc<Self>, listener: Arc<TcpListener>, bound: Option<SocketAddr>) {
        let stop = drain::not_accepting(self.drain.watch());
        tokio::pin!(stop);
        while let Some((stream, client)) = drain::next_connection(&listener, &mut stop).await {
            let refused = &self.observer.metrics.connections_refused;
            let Some(admitted) = self.admission.admit_counted(client, refused) else {
                continue;
            };
            let Some(address) = bound.or_else(|| stream.local_addr().ok()) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            self.drain
                .spawn_connection(stream, move |stream| async move {
                    let _admitted = admitted;
                    proxy.route_and_relay(stream, (client, address)).await;
                });
        }
    }

    /// Relays a connection to the route its listener has for it now (the table may have
    /// changed since the listener was bound); closes it where there is none.
    async fn route_and_relay(
        &self,
        stream: TcpStream,
        (client, listener): (SocketAddr, SocketAddr),
    ) {
        let snapshot = self.table.current();
        if let Some(route) = snapshot.stream.tcp.get(&listener) {
            let route = route.clone();
            drop(snapshot);
            return self.relay(stream, (client, listener), route, None).await;
        }
        let Some(names) = snapshot.stream.tls.get(&listener).cloned() else {
            return;
        };
        drop(snapshot);
        match client_hello::server_name(&stream, self.config.header_timeout).await {
            Ok(name) => match names.route(name.as_deref()) {
                Some(route) => {
                    let name = name.unwrap_or_default();
                    self.relay(stream, (client, listener), route.clone(), Some(name))
                        .await
                }
                None => tracing::debug!(%client, ?name, "no TLSRoute for this server name"),
            },
            Err(error) => {
                self.observer.metrics.tls_handshake_failures.inc();
                tracing::debug!(%client, %error, "no ClientHello");
            }
        }
    }

    /// The PROXY protocol header `stream` must start with: the client and destination it
    /// names (`None` inside for `LOCAL` and `UNKNOWN`), or `None` when it is missing, malformed
    /// or late (counted, and the connection is to be closed).
    pub async fn proxy_header(
        &self,
        stream: &mut TcpStream,
        client: SocketAddr,
    ) -> Option<Option<(SocketAddr, SocketAddr)>> {
        // Boxed: the task of a connection served for long holds none of it.
        let header = proxy_protocol::read_header(stream, self.config.header_timeout);
        match Box::pin(header).await {
            Ok(header) => Some(header.addresses),
            Err(error) => {
                let closed = &self.observer.metrics.connections_closed;
                Metrics::labelled(closed, "reason", "proxy_protocol").inc();
                tracing::debug!(%client, %error, "PROXY protocol header refused");
                None
            }
        }
    }

    /// Relays one TCP connection from `client` to `route`'s backend, and records the session.
    /// `listener` is the address the client reached; `server_name` is set for TLS passed
    /// through (empty for a ClientHello without one).
    pub async fn relay(
        &self,
        mut stream: TcpStream,
        (mut client, listener): (SocketAddr, SocketAddr),
        route: Arc<StreamRoute>,
        server_name: Option<String>,
    ) {
        let mut destination = listener;
        if route.accept_proxy_protocol {
            match self.proxy_header(&mut stream, client).await {
                Some(Some(addresses)) => (client, destination) = addresses,
                Some(None) => {}
                None => return,
            }
        }
        let protocol = if server_name.is_some() { "tls" } else { "tcp" };
        let active = &self.observer.metrics.stream_sessions_active;
        let active = Metrics::labelled(active, "protocol", protocol);
        active.inc();
        let mut session = Box::new(StreamSession::begin(
            protocol,
            (client, listener),
            route.owner.clone(),
        ));
        session.server_name = server_name.filter(|name| !name.is_empty());
        let started = tokio::time::Instant::now();
        tcp::relay(
            stream,
            (client, destination),
            &route,
            &self.config,
            &mut session,
        )
        .await;
        session.duration = started.elapsed();
        active.dec();
        self.observer.finish_session(session);
    }

    /// Relays the UDP flows that reach `socket` until the drain stops accepting; `bound` as
    /// for [`StreamProxy::serve_tcp`].
    pub async fn serve_udp(self: Arc<Self>, socket: Arc<UdpSocket>, bound: Option<SocketAddr>) {
        udp::serve(self, socket, bound).await;
    }
}
