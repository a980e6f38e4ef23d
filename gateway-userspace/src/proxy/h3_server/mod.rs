//! HTTP/3 on the UDP side of the HTTPS listener (`--http3`): QUIC by quinn, HTTP/3 framing by
//! the h3 crate, and every request through the same forwarding as HTTP/1.1 and HTTP/2 (routing,
//! the 421 rule, policies, metrics, access log).
//!
//! The hostile-client rules hold here too: a handshake timeout and a bounded number of
//! handshakes at once (beyond it, clients first prove their address with a Retry), the
//! connection limits per source and in all, streams per connection, the header size and count
//! limits, the header timeout, the idle timeout, and no 0-RTT (replayable requests) unless
//! `--http3-0rtt` allows it, for safe methods only.

mod body;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Shared;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{IdleTimeout, Runtime, TransportConfig, VarInt};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use body::H3RequestBody;

use super::limits::OpenConnection;
use super::request_body::ClientBody;
use super::{ClientLimits, Connection, Proxy, forward};
use crate::lifecycle::drain;
use crate::lifecycle::quic_relay::{Relay, RelayedSocket};
use crate::observe::metrics::Metrics;
use crate::snapshot::normalize_host;

/// The application error code of a connection closed in good order (RFC 9114 8.1).
const H3_NO_ERROR: u32 = 0x100;
/// How long a drained connection whose requests are answered waits for the client to close
/// it, before closing it itself.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Unidirectional streams a client may open: HTTP/3's control stream and QPACK's two, and a
/// few for extensions a client may announce (grease).
const MAX_UNI_STREAMS: u32 = 8;
/// Flow control per stream and per connection: enough for a fast upload, small enough that
/// thousands of connections cannot make the gateway buffer gigabytes.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The QUIC endpoint of an HTTPS listener: its certificates and SNI resolver, ALPN `h3`, TLS 1.3
/// only (QUIC has no other), 0-RTT only with `early_data`, and the client limits as transport
/// limits.
fn endpoint(
    socket: std::net::UdpSocket,
    relay: Arc<Relay>,
    https: &rustls::ServerConfig,
    limits: &ClientLimits,
    early_data: bool,
) -> Result<quinn::Endpoint> {
    let mut tls = https.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    if early_data {
        // QUIC takes all of it or none (RFC 9001 4.6.1). rustls takes early data only in
        // sessions resumed from its cache, each once, never from a ticket (which a replay
        // could present again): no tickets here.
        tls.max_early_data_size = u32::MAX;
        tls.ticketer = Arc::new(NoTickets);
    }
    let crypto = QuicServerConfig::try_from(tls).context("TLS settings for QUIC")?;
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(limits.http2_max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(limits.keepalive_timeout).context("the keep-alive timeout")?,
        ))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW) * 4)
        .datagram_receive_buffer_size(None);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    // Connections waiting for their handshake's turn, beyond which new ones are refused.
    server.max_incoming(limits.max_tls_handshakes.max(1) * 4);
    socket.set_nonblocking(true)?;
    // Connection IDs say which process a connection belongs to, so that its datagrams reach it
    // across a hand-off.
    let mut config = quinn::EndpointConfig::default();
    config.cid_generator(relay.cid_generator());
    let runtime = Arc::new(quinn::TokioRuntime);
    let socket = Arc::new(RelayedSocket::new(runtime.wrap_udp_socket(socket)?, relay));
    let endpoint =
        quinn::Endpoint::new_with_abstract_socket(config, Some(server), socket, runtime)?;
    Ok(endpoint)
}

/// A ticketer that makes none: sessions are resumed from the server's cache only.
#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// The `Alt-Svc` value that offers HTTP/3 on `port` (for a day, as Envoy and nginx do).
pub fn alt_svc(port: u16) -> HeaderValue {
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).expect("a valid header value")
}

impl Proxy {
    /// A QUIC endpoint on `socket` for the HTTPS listener of `tls`, under this proxy's limits.
    pub fn quic_endpoint(
        &self,
        socket: std::net::UdpSocket,
        relay: Arc<Relay>,
        tls: &TlsAcceptor,
    ) -> Result<quinn::Endpoint> {
        let early_data = self.config.http3_early_data;
        endpoint(
            socket,
            relay,
            tls.config(),
            &self.config.client_limits,
            early_data,
        )
    }

    /// Serves HTTP/3 on `endpoint` until the drain stops accepting; its connections finish
    /// their requests after GOAWAY.
    pub async fn serve_http3(self: Arc<Self>, endpoint: quinn::Endpoint) {
        let Ok(bound) = endpoint.local_addr() else {
            return;
        };
        let mut stop = std::pin::pin!(drain::not_accepting(self.drain.watch()));
        let metrics = &self.observer.metrics;
        loop {
            let incoming = tokio::select! {
                biased;
                () = stop.as_mut() => break,
                incoming = endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let client = incoming.remote_address();
            // Handshakes pile up: a client must first show it receives at its address (a Retry
            // costs one packet and no state), which spoofed floods cannot.
            if self.handshakes.available_permits() == 0 && incoming.may_retry() {
                metrics.http3_retries.inc();
                let _ = incoming.retry();
                continue;
            }
            let Some(admitted) = self
                .admission
                .admit_counted(client, &metrics.connections_refused)
            else {
                incoming.refuse();
                continue;
            };
            Metrics::labelled(&metrics.connections, "scheme", "https").inc();
            let active = Metrics::labelled(&metrics.connections_active, "scheme", "https");
            let open = OpenConnection::new(admitted, active);
            let local = SocketAddr::new(incoming.local_ip().unwrap_or(bound.ip()), bound.port());
            let served = self.clone().serve_quic(incoming, local, open);
            self.drain.spawn(served);
        }
        // New connections are refused from now on; open ones go on until the drain stops them
        // (also after a hand-off: their datagrams are relayed to this process).
        endpoint.set_server_config(None);
        // A connection's close is sent by the endpoint's driver: the process must not exit
        // before the last one has gone out.
        self.drain.spawn(async move { endpoint.wait_idle().await });
    }

    /// One QUIC connection: its handshake (in turn with TLS handshakes), then its requests,
    /// each in a task of its own, until the client closes it, it idles out, or the drain sends
    /// GOAWAY and its requests are done.
    async fn serve_quic(
        self: Arc<Self>,
        incoming: quinn::Incoming,
        local: SocketAddr,
        _open: OpenConnection,
    ) {
        let limits = &self.config.client_limits;
        let metrics = &self.observer.metrics;
        let client = incoming.remote_address();
        let handshake = async {
            let _turn = self.handshakes.acquire().await;
            let connecting = incoming.accept()?;
            if !self.config.http3_early_data {
                return Ok((connecting.await?, None));
            }
            // Requests may come in 0-RTT, before the handshake ends; the turn is given back
            // here, with only the client's Finished left to come.
            match connecting.into_0rtt() {
                Ok((quic, ended)) => Ok((quic, Some(ended.shared()))),
                Err(connecting) => Ok((connecting.await?, None)),
            }
        };
        let (quic, handshake) =
            match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(Ok(connected)) => connected,
                Ok(Err(error)) => {
                    metrics.tls_handshake_failures.inc();
                    let error: quinn::ConnectionError = error;
                    tracing::debug!(%client, %error, "QUIC handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(%client, "QUIC handshake timed out");
                    return;
                }
            };
        let sni = quic
            .handshake_data()
            .and_then(|data| data.downcast::<HandshakeData>().ok())
            .and_then(|data| data.server_name)
            .map(|name| normalize_host(&name).into_owned());
        let built = h3::server::builder()
            .max_field_section_size(limits.max_head as u64)
            .build::<_, Bytes>(h3_quinn::Connection::new(quic.clone()))
            .await;
        let mut http3 = match built {
            Ok(http3) => http3,
            Err(error) => {
                tracing::debug!(%client, %error, "HTTP/3 connection setup failed");
                return;
            }
        };
        let mut stopped = std::pin::pin!(drain::stopped(self.drain.watch()));
        let mut requests = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                biased;
                () = stopped.as_mut() => break,
                // Finished request tasks are collected as they end.
                Some(_) = requests.join_next(), if !requests.is_empty() => continue,
                accepted = http3.accept() => accepted,
            };
            let resolver = match accepted {
                Ok(Some(resolver)) => resolver,
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%client, %error, "HTTP/3 connection ended");
                    break;
                }
            };
            // Each request sees the client's address of now: a connection may migrate.
            let connection = Connection::new(
                quic.remote_address(),
                local,
                "https",
                sni.clone(),
                Some("TLSv1.3"),
            );
            requests.spawn(
                self.clone()
                    .serve_request(resolver, connection, handshake.clone()),
            );
        }
        // GOAWAY: no new requests; those in flight finish, then the connection closes.
        let _ = http3.shutdown(0).await;
        while requests.join_next().await.is_some() {}
        // Closing drops what the client has not acknowledged yet, a last response's end
        // included: a client told to go away closes once it has read everything.
        let _ = tokio::time::timeout(CLOSE_GRACE, quic.closed()).await;
        quic.close(VarInt::from_u32(H3_NO_ERROR), b"");
    }

    /// One request: its head within the header timeout, then forwarding, then the response.
    /// On a connection that took 0-RTT (`handshake` is its end), an unsafe method waits for
    /// the handshake to end (a replay never gets there; 425 Too Early if it does not), and a
    /// safe one forwarded before it carries `Early-Data: 1` (RFC 8470).
    async fn serve_request(
        self: Arc<Self>,
        resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
        connection: Connection,
        handshake: Option<Shared<quinn::ZeroRttAccepted>>,
    ) {
        let limits = &self.config.client_limits;
        let client = connection.client;
        let (request, stream) =
            match tokio::time::timeout(limits.header_timeout, resolver.resolve_request()).await {
                Ok(Ok(resolved)) => resolved,
                Ok(Err(error)) => {
                    tracing::debug!(%client, %error, "HTTP/3 request refused");
                    return;
                }
                // The stream is reset; the connection and its other streams go on.
                Err(_) => {
                    tracing::debug!(%client, "HTTP/3 request head not received in time");
                    return;
                }
            };
        let (mut send, receive) = stream.split();
        let mut body = H3RequestBody::new(receive, forward::request_length(&request));
        // Looks once at what arrived with the head: a request already ended goes on without a
        // body, instead of with an empty chunked one.
        std::future::poll_fn(|cx| {
            body.look_ahead(cx);
            Poll::Ready(())
        })
        .await;
        let (mut head, ()) = request.into_parts();
        if let Some(handshake) = handshake
            && handshake.peek().is_none()
        {
            if !head.method.is_safe() {
                let ended = tokio::time::timeout(limits.handshake_timeout, handshake).await;
                if ended.is_err() {
                    let too_early = Response::builder().status(StatusCode::TOO_EARLY);
                    let _ = send
                        .send_response(too_early.body(()).expect("a response"))
                        .await;
                    let _ = send.finish().await;
                    return;
                }
            } else {
                head.headers
                    .insert("early-data", HeaderValue::from_static("1"));
            }
        }
        let request = Request::from_parts(head, ClientBody::Http3(Box::new(body)));
        let Ok(response) = forward::handle(self.clone(), Arc::new(connection), request).await;
        if let Err(error) = body::send_response(&mut send, response).await {
            tracing::debug!(%client, %error, "HTTP/3 response not sent whole");
        }
    }
}
