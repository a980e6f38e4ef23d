//! The userspace data plane: accept connections, speak HTTP/1.1 (the gateway's own server) and
//! HTTP/2 (on the h2 crate; by ALPN, or prior knowledge on plain connections), and forward
//! every request to the backend the current route table names.

mod auth;
mod backend_tls;
mod boxed;
mod chunked;
mod client_clock;
mod coarse_clock;
mod date;
mod error;
mod error_page;
mod forward;
pub mod h1_server;
pub mod h2_flood;
mod h2_server;
pub mod h3_server;
mod head_fields;
mod headers;
pub mod limits;
mod mirror;
mod request_body;
mod resolve;
mod send;
mod stream;
mod strict;
mod upstream;

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

pub use client_clock::ClientClock;
pub use error::ProxyError;
pub use limits::ClientLimits;
pub use request_body::BodyProgress;

use client_clock::Expiry;
use h1_server::{ClientStream, Http2Preface, Parked, ParkingLot, Replayed, Served};
use limits::{Admission, OpenConnection};

use crate::lifecycle::drain::{self, Drain};
use crate::observe::Observer;
use crate::observe::metrics::Metrics;
use crate::publish::RouteTable;
use crate::snapshot::normalize_host;
use crate::snapshot::stream::StreamRoute;
use crate::stream::{PeekError, StreamConfig, StreamProxy, client_hello};
use crate::tls::client_auth::{ClientAuth, ClientCertificate};

/// What the proxy sends to clients: a backend's streamed body, or the gateway's own answer.
pub type ProxyBody = Either<upstream::PooledBody, Full<Bytes>>;

/// How the proxy behaves beyond what the route table says.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Timeouts towards backends (ingress-nginx's defaults: connect 5s, read 60s).
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// `Strict-Transport-Security` for HTTPS responses of TLS hosts.
    pub hsts: Option<HeaderValue>,
    /// `Alt-Svc` offering HTTP/3, on the same responses as HSTS (`--http3`).
    pub alt_svc: Option<HeaderValue>,
    /// HTTP/3 clients may send safe requests in 0-RTT (`--http3-0rtt`).
    pub http3_early_data: bool,
    /// The port that HTTP-to-HTTPS redirects name (omitted from the URL when 443).
    pub https_redirect_port: u16,
    /// What clients may take: timeouts, head sizes, connection counts.
    pub client_limits: ClientLimits,
    /// Every HTTP and HTTPS connection starts with a PROXY protocol header (v1 or v2), whose
    /// client address is the one used (`--proxy-protocol`).
    pub accept_proxy_protocol: bool,
    /// Layer 4 sessions (TCP, UDP, TLS passed through).
    pub stream: StreamConfig,
    /// Gives memory freed in bulk back to the system (the allocator is the binary's choice);
    /// called after connections were parked.
    pub release_memory: fn(),
}

/// Everything a request needs: the route table, the upstream client, and where finished
/// exchanges are reported.
pub struct Proxy {
    table: Arc<RouteTable>,
    upstream: upstream::UpstreamPool,
    mirrors: mirror::Mirrors,
    /// Names outside the route table (`auth-url`, `mirror-target`).
    resolver: Arc<resolve::Resolver>,
    hashing: auth::Hashing,
    config: ProxyConfig,
    observer: Arc<Observer>,
    drain: Arc<Drain>,
    admission: Arc<Admission>,
    /// Where TLS passed through and layer 4 ports are relayed.
    streams: Arc<StreamProxy>,
    handshakes: Arc<Semaphore>,
    /// Idle HTTP/1 connections, held as their sockets; tended from the first listener's start.
    parking: Option<ParkingLot>,
    tending: Once,
}

/// The facts about one client connection that forwarding needs.
pub struct Connection {
    pub client: SocketAddr,
    /// The address the client connected to (a VIP:port once steering is on).
    pub listener: SocketAddr,
    pub scheme: &'static str,
    /// The TLS server name the client asked for (lower-case), on HTTPS connections with SNI.
    pub sni: Option<String>,
    /// `TLSv1.3` or `TLSv1.2` on HTTPS connections.
    pub tls_version: Option<&'static str>,
    /// On connections to a host that asks for client certificates: what the client's showed.
    pub client_certificate: Option<Box<ClientCertificate>>,
    /// Its header and keep-alive timeouts, and the HTTP/2 flood meter's verdict.
    pub clock: ClientClock,
    /// The forwarding headers' fields that are the same for all the connection's requests.
    pub forwarding: headers::ConnectionForwarding,
}

impl Connection {
    fn new(
        client: SocketAddr,
        listener: SocketAddr,
        scheme: &'static str,
        sni: Option<String>,
        tls_version: Option<&'static str>,
    ) -> Self {
        Self {
            client,
            listener,
            scheme,
            sni,
            tls_version,
            client_certificate: None,
            clock: ClientClock::default(),
            forwarding: headers::ConnectionForwarding::new(client.ip(), scheme, listener.port()),
        }
    }

    /// The forwarding headers of a request to `host` on this connection.
    pub fn forwarding<'a>(&'a self, host: Option<&'a HeaderValue>) -> headers::Forwarding<'a> {
        headers::Forwarding {
            connection: &self.forwarding,
            host,
        }
    }
}

impl Proxy {
    /// A proxy that routes with `table`, reports to `observer` and stops as `drain` says.
    pub fn new(
        table: Arc<RouteTable>,
        config: ProxyConfig,
        observer: Arc<Observer>,
        drain: Arc<Drain>,
    ) -> Self {
        let metrics = &observer.metrics;
        let counters = upstream::ReuseCounters {
            reused: Metrics::labelled(&metrics.upstream_requests, "reused", "true"),
            new: Metrics::labelled(&metrics.upstream_requests, "reused", "false"),
        };
        let outcome = |result| Metrics::labelled(&metrics.mirrored_requests, "result", result);
        let mirrors = mirror::Mirrors::new(mirror::MirrorCounters {
            sent: outcome("sent"),
            dropped: outcome("dropped"),
            failed: outcome("failed"),
        });
        let limits = &config.client_limits;
        let admission = Admission::new(limits);
        let streams = Arc::new(StreamProxy::new(
            table.clone(),
            config.stream.clone(),
            observer.clone(),
            drain.clone(),
            admission.clone(),
        ));
        Self {
            upstream: upstream::UpstreamPool::new(counters, drain.workers().slots()),
            mirrors,
            resolver: Arc::default(),
            hashing: auth::Hashing::default(),
            admission,
            streams,
            handshakes: Arc::new(Semaphore::new(limits.max_tls_handshakes.max(1))),
            parking: ParkingLot::new(metrics.connections_parked.clone())
                .inspect_err(|error| tracing::warn!(%error, "idle connections cannot be parked"))
                .ok(),
            tending: Once::new(),
            table,
            config,
            observer,
            drain,
        }
    }

    /// The layer 4 proxy, which shares this proxy's table, limits and drain.
    pub fn streams(&self) -> &Arc<StreamProxy> {
        &self.streams
    }

    /// Serves `listener` until the drain stops accepting: plain HTTP (HTTP/1.1, and HTTP/2
    /// with prior knowledge), or HTTPS when `tls` is given (HTTP/2 or HTTP/1.1 by ALPN).
    pub async fn serve(self: Arc<Self>, listener: Arc<TcpListener>, tls: Option<TlsAcceptor>) {
        if self.parking.is_some() {
            self.tending
                .call_once(|| drop(tokio::spawn(self.clone().tend_parked())));
        }
        let stop = drain::not_accepting(self.drain.watch());
        tokio::pin!(stop);
        while let Some((stream, client)) = drain::next_connection(&listener, &mut stop).await {
            let metrics = &self.observer.metrics;
            let refused = &metrics.connections_refused;
            let Some(admitted) = self.admission.admit_counted(client, refused) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let Ok(local) = stream.local_addr() else {
                continue;
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            Metrics::labelled(&metrics.connections, "scheme", scheme).inc();
            let active = Metrics::labelled(&metrics.connections_active, "scheme", scheme);
            let open = OpenConnection::new(admitted, active);
            let (proxy, tls) = (self.clone(), tls.clone());
            self.drain.spawn_connection(stream, move |stream| {
                proxy.accept(stream, (client, local), tls, open)
            });
        }
    }

    /// Serves one accepted connection: after its PROXY protocol header where one is required,
    /// and on HTTPS listeners after its TLS handshake, or relayed untouched when its server
    /// name is passed through.
    async fn accept(
        self: Arc<Self>,
        mut stream: tokio::net::TcpStream,
        (mut client, local): (SocketAddr, SocketAddr),
        tls: Option<TlsAcceptor>,
        open: OpenConnection,
    ) {
        if self.config.accept_proxy_protocol {
            match self.streams.proxy_header(&mut stream, client).await {
                Some(Some((source, _))) => client = source,
                Some(None) => {}
                None => return,
            }
        }
        match tls {
            None => {
                let connection = Connection::new(client, local, "http", None, None);
                self.serve_http1(connection, ClientStream::Plain(stream), true, open)
                    .await;
            }
            // Boxed: a plain connection's task does not carry the room for TLS state.
            Some(tls) => {
                // Only where some name is passed through is the ClientHello looked at first.
                if self.passes_through(local) {
                    match Box::pin(self.passed_through(&stream)).await {
                        Ok(Some((route, name))) => {
                            let relayed =
                                self.streams
                                    .relay(stream, (client, local), route, Some(name));
                            return Box::pin(relayed).await;
                        }
                        Ok(None) => {}
                        Err(error) => {
                            self.observer.metrics.tls_handshake_failures.inc();
                            tracing::debug!(%client, %error, "no ClientHello");
                            return;
                        }
                    }
                }
                let accepted = Box::pin(self.accept_tls(stream, client, local, tls, open));
                accepted.await;
            }
        }
    }

    /// Whether an HTTPS connection to `local` may be passed through: some Ingress host is,
    /// and `local` is not a Gateway listener's.
    fn passes_through(&self, local: SocketAddr) -> bool {
        let snapshot = self.table.current();
        !snapshot.stream.passthrough.is_empty() && !snapshot.gateway_listeners.contains_key(&local)
    }

    /// The passthrough route of the server name a connection's ClientHello asks for, if the
    /// table has one; the hello stays unread either way. Bytes that are not a ClientHello are
    /// left to rustls to refuse; a hello that does not arrive in time is an error.
    async fn passed_through(
        &self,
        stream: &tokio::net::TcpStream,
    ) -> Result<Option<(Arc<StreamRoute>, String)>, PeekError> {
        let timeout = self.config.client_limits.handshake_timeout;
        let name = match client_hello::server_name(stream, timeout).await {
            Ok(Some(name)) => name,
            Ok(None) | Err(PeekError::Invalid(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        // The table of now, not of when the connection came: the peek may have taken a while.
        let snapshot = self.table.current();
        let route = snapshot.stream.passthrough.route(Some(&name)).cloned();
        Ok(route.map(|route| (route, name)))
    }

    /// Whether a handshake on `local` may have to ask for a client certificate: some Ingress
    /// host does, and `local` is not a Gateway listener's.
    fn asks_client_certificates(&self, local: SocketAddr) -> bool {
        let snapshot = self.table.current();
        snapshot.has_client_auth && !snapshot.gateway_listeners.contains_key(&local)
    }

    /// A handshake whose configuration follows the server name: the host's own where it asks
    /// for client certificates (returned with it), else the listener's.
    async fn handshake_by_name(
        table: &RouteTable,
        stream: tokio::net::TcpStream,
        tls: &TlsAcceptor,
    ) -> std::io::Result<(TlsStream<tokio::net::TcpStream>, Option<Arc<ClientAuth>>)> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let client_auth = (start.client_hello().server_name())
            .and_then(|name| table.current().client_auth(&normalize_host(name)).cloned());
        let config = match &client_auth {
            Some(auth) => auth.handshake(tls.config()),
            None => tls.config().clone(),
        };
        Ok((start.into_stream(config).await?, client_auth))
    }

    async fn accept_tls(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        client: SocketAddr,
        local: SocketAddr,
        tls: TlsAcceptor,
        open: OpenConnection,
    ) {
        let metrics = &self.observer.metrics;
        let limits = &self.config.client_limits;
        // Handshakes are the costly part of a connection: a bounded number at once, and the
        // wait for a turn counts against the handshake's time.
        let handshake = async {
            let _turn = self.handshakes.acquire().await;
            match self.asks_client_certificates(local) {
                true => Box::pin(Self::handshake_by_name(&self.table, stream, &tls)).await,
                false => Box::pin(tls.accept(stream)).await.map(|s| (s, None)),
            }
        };
        let (stream, client_auth) =
            match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(Ok((stream, client_auth))) => (Box::new(stream), client_auth),
                Ok(Err(error)) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(%client, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(%client, "TLS handshake timed out");
                    return;
                }
            };
        let session = stream.get_ref().1;
        let tls_version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            _ => "TLSv1.2",
        };
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        metrics
            .tls_handshakes
            .get_or_create(&[
                ("version", tls_version),
                ("resumed", if resumed { "true" } else { "false" }),
            ])
            .inc();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let mut connection = Connection::new(
            client,
            local,
            "https",
            session
                .server_name()
                .map(|name| normalize_host(name).into_owned()),
            Some(tls_version),
        );
        connection.client_certificate =
            client_auth.map(|auth| Box::new(auth.check(session.peer_certificates())));
        match alpn.as_deref() {
            Some(b"h2") => {
                let served = Box::pin(self.serve_http2(Arc::new(connection), stream));
                served.await;
            }
            // Without ALPN, a client may still speak HTTP/2 with prior knowledge.
            alpn => {
                let stream = ClientStream::Tls(stream);
                self.serve_http1(connection, stream, alpn.is_none(), open)
                    .await;
            }
        }
    }

    /// Serves HTTP/1.1, or HTTP/2 when the connection opens with its preface and
    /// `detect_http2` allows that; parks it when it stays idle.
    async fn serve_http1(
        self: Arc<Self>,
        connection: Connection,
        stream: ClientStream,
        detect_http2: bool,
        open: OpenConnection,
    ) {
        let connection = Arc::new(connection);
        match h1_server::serve(&self, &connection, stream, detect_http2).await {
            Served::Closed => {}
            Served::Http2(Http2Preface(stream, read)) => {
                let served = Box::pin(self.serve_http2(connection, Replayed::new(read, stream)));
                served.await;
            }
            Served::Idle(stream, deadline) => {
                // Only offered when there is a lot.
                let Some(lot) = &self.parking else {
                    return;
                };
                let (client, listener) = (connection.client, connection.listener);
                if let Err(error) = lot.park(stream, client, listener, open, deadline) {
                    tracing::debug!(%client, %error, "cannot park an idle connection; closed");
                }
            }
        }
    }

    /// Tends the parked connections until the drain stops: wakes those whose clients send
    /// into tasks of their own, closes those whose keep-alive timeout passes, and closes every
    /// one at the stop.
    async fn tend_parked(self: Arc<Self>) {
        let Some(lot) = &self.parking else {
            return;
        };
        let mut stopped = pin!(drain::stopped(self.drain.watch()));
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        let mut parked_before = 0;
        loop {
            tokio::select! {
                () = stopped.as_mut() => break,
                woken = lot.woken() => {
                    let woken = match woken {
                        Ok(woken) => woken,
                        Err(error) => {
                            tracing::error!(%error, "waiting on parked connections failed; closing them");
                            break;
                        }
                    };
                    for parked in woken {
                        let Parked { stream, client, listener, open } = parked;
                        let proxy = self.clone();
                        self.drain.spawn_connection(stream, move |stream| {
                            let connection = Connection::new(client, listener, "http", None, None);
                            proxy.serve_http1(connection, ClientStream::Plain(stream), false, open)
                        });
                    }
                }
                _ = sweep.tick() => {
                    // The tasks of connections parked since the last sweep have ended.
                    let parked = lot.parked_in_all();
                    if parked != parked_before {
                        parked_before = parked;
                        (self.config.release_memory)();
                    }
                    let expired = lot.expired(tokio::time::Instant::now());
                    let metrics = &self.observer.metrics;
                    let closed = Metrics::labelled(&metrics.connections_closed, "reason", Expiry::Idle.as_str());
                    closed.inc_by(expired.len() as u64);
                }
            }
        }
        drop(lot.take_all());
    }
}
