//! The userspace data plane: accept connections, speak HTTP/1.1 and HTTP/2 (prior knowledge),
//! and forward every request to the backend the current route table names.

mod error;
mod forward;
mod headers;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub use error::{ProxyError, plain_response};

use crate::publish::RouteTable;

/// What the proxy sends to clients: a backend's streamed body, or the gateway's own answer.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Timeouts towards backends (ingress-nginx's defaults: connect 5s, read 60s).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// Everything a request needs: the route table and the upstream client.
pub struct Proxy {
    table: Arc<RouteTable>,
    client: upstream::UpstreamClient,
    config: ProxyConfig,
}

/// The facts about one client connection that forwarding needs.
pub struct Connection {
    pub client: SocketAddr,
    /// The address the client connected to (a VIP:port once steering is on).
    pub listener: SocketAddr,
    pub scheme: &'static str,
}

impl Proxy {
    /// A proxy that routes with `table`.
    pub fn new(table: Arc<RouteTable>, config: ProxyConfig) -> Self {
        Self {
            client: upstream::client(config.connect_timeout),
            table,
            config,
        }
    }

    /// Serves plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge) on `listener` forever.
    pub async fn serve_http(self: Arc<Self>, listener: TcpListener) {
        let server = Arc::new(auto::Builder::new(TokioExecutor::new()));
        loop {
            let (stream, client) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(local) = stream.local_addr() else {
                continue;
            };
            let connection = Arc::new(Connection {
                client,
                listener: local,
                scheme: "http",
            });
            let proxy = self.clone();
            let server = server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    forward::handle(proxy.clone(), connection.clone(), request)
                });
                if let Err(error) = server
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%client, %error, "connection ended with an error");
                }
            });
        }
    }
}
