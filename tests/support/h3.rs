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

    /// Sends `request` with `body` (none when empty) and reads the whole answer, also when
    /// the server answers before the body is sent and asks to stop sending it.
    pub async fn send(&mut self, request: Request<()>, body: Bytes) -> anyhow::Result<H3Answer> {
        let mut stream = self.send.send_request(request).await?;
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

    /// `GET https://host{path}`.
    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<H3Answer> {
        let request = Request::get(format!("https://{host}{path}")).body(())?;
        self.send(request, Bytes::new()).await
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
