//! TLS towards backends (`backend-protocol: HTTPS` and `GRPCS`). As ingress-nginx by default
//! (`proxy-ssl-verify: off`), the backend's certificate is not verified: the connection is
//! encrypted inside the cluster, and pods commonly present self-signed certificates.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::upstream::Target;

/// One connector per ALPN: HTTP/1.1 for HTTPS backends, h2 for GRPCS.
pub struct Connectors {
    http1: TlsConnector,
    http2: TlsConnector,
}

impl Connectors {
    pub fn new() -> Self {
        let config = |alpn: &[u8]| {
            let provider = crate::tls::provider().clone();
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the provider supports the default versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            TlsConnector::from(Arc::new(config))
        };
        Self {
            http1: config(b"http/1.1"),
            http2: config(b"h2"),
        }
    }

    pub async fn connect(
        &self,
        target: &Target,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let connector = if target.protocol.is_http2() {
            &self.http2
        } else {
            &self.http1
        };
        let server_name = target
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::from(target.endpoint.ip()));
        tokio::time::timeout(
            target.connect_timeout,
            connector.connect(server_name, stream),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))
    }
}

/// Accepts the backend's certificate without verifying it; signatures are still checked, so
/// the handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
