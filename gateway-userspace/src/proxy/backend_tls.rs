//! The TLS handshake with an HTTPS or GRPCS backend, by its route's client configuration
//! (`tls::backend`), else the default one (not verified, as ingress-nginx's default).

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::upstream::Target;
use crate::tls::backend::BackendTls;
use rustls::pki_types::ServerName;

pub async fn connect(
    target: &Target,
    default: &BackendTls,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    let tls = target.tls.as_deref().unwrap_or(default);
    let config = tls.config(target.protocol.is_http2()).clone();
    // A route that verifies names the one it checks; else the request's (or the address).
    let server_name = (tls.name.clone())
        .or_else(|| target.server_name.clone())
        .unwrap_or_else(|| ServerName::from(target.endpoint.ip()));
    tokio::time::timeout(
        target.connect_timeout,
        TlsConnector::from(config).connect(server_name, stream),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS handshake failed: {e}"))
}
