//! An HTTP/3 client of the tests' own: quinn for QUIC, the h3 crate for HTTP/3, trusting only
//! the test CA.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use hyper::{HeaderMap, Request, Response};
use tokio::task::JoinHandle;

use crate::pki::Ca;

/// One QUIC connection speaking HTTP/3.
pub struct H3Client {
    pub endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: JoinHandle<h3::error::ConnectionError>,
}

/// What came back for one request.
pub struct H3Answer {
    pub response: Response<()>,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl H3Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name)?.to_str().ok()
    }
}

impl H3Client {
    /// Connects to `address` asking for `server_name`, trusting `ca`.
    pub async fn connect(
        address: SocketAddr,
        server_name: &str,
        ca: &Ca,
    ) -> anyhow::Result<H3Client> {
        let bind: SocketAddr = match address {
            SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
            SocketAddr::V6(_) => "[::]:0".parse()?,
        };
        Self::connect_from(bind, address, server_name, ca).await
    }

    /// The same from the local address `bind`.
    pub async fn connect_from(
        bind: SocketAddr,
        address: SocketAddr,
        server_name: &str,
        ca: &Ca,
    ) -> anyhow::Result<H3Client> {
        H3Endpoint::new(bind, ca)?
            .connect(address, server_name)
            .await
    }

    async fn over(
        endpoint: quinn::Endpoint,
        connection: quinn::Connection,
    ) -> anyhow::Result<Self> {
        let quic = h3_quinn::Connection::new(connection.clone());
        let (mut driver, send) = h3::client::new(quic).await?;
        let driver =
            tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        Ok(H3Client {
            endpoint,
            connection,
            send,
            driver,
        })
    }

    /// Sends `request` with `body` (none when empty) and reads the whole answer (see
    /// [`exchange`]).
    pub async fn send(&mut self, request: Request<()>, body: Bytes) -> anyhow::Result<H3Answer> {
        exchange(self.send.clone(), request, body).await
    }

    /// A sender of requests on this connection, for requests at once.
    pub fn requests(&self) -> h3::client::SendRequest<h3_quinn::OpenStreams, Bytes> {
        self.send.clone()
    }

    /// `GET https://host{path}`.
    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<H3Answer> {
        let request = Request::get(format!("https://{host}{path}")).body(())?;
        self.send(request, Bytes::new()).await
    }
}

/// Sends `request` with `body` (none when empty) on `send`'s connection and reads the whole
/// answer, also when the server answers before the body is sent and asks to stop sending it.
pub async fn exchange(
    mut send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    request: Request<()>,
    body: Bytes,
) -> anyhow::Result<H3Answer> {
    {
        let mut stream = send.send_request(request).await?;
        let sent = match body.is_empty() {
            true => Ok(()),
            false => stream.send_data(body).await,
        };
        if sent.is_ok() {
            let _ = stream.finish().await;
        }
        let response = stream.recv_response().await?;
        let mut received = BytesMut::new();
        while let Some(mut chunk) = stream.recv_data().await? {
            received.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        let trailers = stream.recv_trailers().await?;
        Ok(H3Answer {
            response,
            body: received.freeze(),
            trailers,
        })
    }
}

/// A client endpoint whose TLS sessions are kept across its connections: resumption, 0-RTT.
pub struct H3Endpoint {
    endpoint: quinn::Endpoint,
}

impl H3Endpoint {
    /// An endpoint on `bind` trusting `ca`, ready to send early data where a ticket allows it.
    pub fn new(bind: SocketAddr, ca: &Ca) -> anyhow::Result<Self> {
        let mut tls = (*ca.client_config(&["h3"])).clone();
        tls.enable_early_data = true;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        Ok(Self { endpoint })
    }

    /// A connection after a full handshake (resumed where a session is kept).
    pub async fn connect(
        &self,
        address: SocketAddr,
        server_name: &str,
    ) -> anyhow::Result<H3Client> {
        let connection = self.endpoint.connect(address, server_name)?.await?;
        H3Client::over(self.endpoint.clone(), connection).await
    }

    /// A connection whose requests go in 0-RTT, with the future of the handshake's end (true:
    /// the early data was accepted); `None` when no ticket allows early data.
    pub async fn connect_0rtt(
        &self,
        address: SocketAddr,
        server_name: &str,
    ) -> anyhow::Result<Option<(H3Client, quinn::ZeroRttAccepted)>> {
        let connecting = self.endpoint.connect(address, server_name)?;
        let Ok((connection, accepted)) = connecting.into_0rtt() else {
            return Ok(None);
        };
        let client = H3Client::over(self.endpoint.clone(), connection).await?;
        Ok(Some((client, accepted)))
    }
}

impl Drop for H3Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A UDP relay between a client and a QUIC server that holds the client's datagrams carrying a
/// Handshake packet (its Finished travels in one) for `delay`: the server's handshake ends that
/// much later, while the client's Initial and 0-RTT packets pass at once.
pub struct HandshakeDelay {
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl HandshakeDelay {
    pub async fn start(server: SocketAddr, delay: std::time::Duration) -> Self {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(server).await.unwrap();
        let address = front.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut up, mut down) = (vec![0u8; 65_535], vec![0u8; 65_535]);
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut up) => {
                        client = Some(from);
                        let datagram = up[..n].to_vec();
                        if !carries_handshake(&datagram) {
                            let _ = back.send(&datagram).await;
                            continue;
                        }
                        let back = back.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = back.send(&datagram).await;
                        });
                    }
                    Ok(n) = back.recv(&mut down) => {
                        if let Some(client) = client {
                            let _ = front.send_to(&down[..n], client).await;
                        }
                    }
                }
            }
        });
        Self { address, task }
    }
}

impl Drop for HandshakeDelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a datagram's coalesced long header packets include a Handshake packet (QUIC v1).
fn carries_handshake(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    while let Some(&first) = rest.first() {
        // A short header packet takes the rest of the datagram.
        if first & 0x80 == 0 {
            return false;
        }
        let packet_type = (first >> 4) & 0b11;
        if packet_type == 2 {
            return true;
        }
        match long_packet_length(rest, packet_type) {
            Some(length) => rest = &rest[length..],
            None => return false,
        }
    }
    false
}

/// The length of the long header packet at the start of `packet`: flags, version, both
/// connection IDs, an Initial's token, then the Length field and what it counts.
fn long_packet_length(packet: &[u8], packet_type: u8) -> Option<usize> {
    let mut at = 5;
    at += 1 + usize::from(*packet.get(at)?);
    at += 1 + usize::from(*packet.get(at)?);
    if packet_type == 0 {
        let (token, size) = varint(packet.get(at..)?)?;
        at += size + token;
    }
    let (length, size) = varint(packet.get(at..)?)?;
    at += size + length;
    (at <= packet.len()).then_some(at)
}

/// A QUIC variable-length integer and its size.
fn varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let first = *bytes.first()?;
    let size = 1 << (first >> 6);
    let value = (bytes.get(1..size)?.iter()).fold(u64::from(first & 0x3f), |value, byte| {
        value << 8 | u64::from(*byte)
    });
    Some((usize::try_from(value).ok()?, size))
}
