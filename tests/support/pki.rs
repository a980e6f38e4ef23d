//! Certificates made in the test: a CA, leaf certificates signed by it (per host, wildcard,
//! expired, with a mismatched key), and a TLS client that trusts the CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A certificate authority for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain and its key, in PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Default for Ca {
    fn default() -> Self {
        Self::new()
    }
}

impl Ca {
    pub fn new() -> Self {
        Self::named("gateway test CA")
    }

    /// A leaf certificate for `names`, valid now.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.issue(names, false)
    }

    /// A leaf certificate for `names` that expired in 2001.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.issue(names, true)
    }

    fn issue(&self, names: &[&str], expired: bool) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        self.signed(params)
    }

    fn signed(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A CA named `name` (its subject is `CN=name`).
    pub fn named(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA's certificate, PEM (a `ca.crt`).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A client certificate whose subject is `CN=common_name`.
    pub fn client_leaf(&self, common_name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.signed(params)
    }

    /// A client configuration that trusts only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
        self.client_config_presenting(alpn, None)
    }

    /// The same, presenting `certificate` when the server asks for one.
    pub fn client_config_presenting(
        &self,
        alpn: &[&str],
        certificate: Option<&Leaf>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match certificate {
            Some(leaf) => {
                use rustls::pki_types::pem::PemObject;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
                    .unwrap();
                builder
                    .with_client_auth_cert(vec![leaf.der.clone()], key)
                    .unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

impl Leaf {
    /// A `kubernetes.io/tls` Secret holding this certificate (base64 under `data`, as the API
    /// server returns it).
    pub fn secret(&self, namespace: &str, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
             type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\n",
            base64(self.cert_pem.as_bytes()),
            base64(self.key_pem.as_bytes())
        )
    }
}

/// Connects to `addr` with TLS, asking for `server_name` (or an IP address, which sends no SNI).
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())
}

/// The leaf certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    let certs: &[CertificateDer<'_>] = stream.get_ref().1.peer_certificates()?;
    certs.first().map(|c| c.clone().into_owned())
}

/// An HTTP/1.1 or HTTP/2 (by ALPN) connection over TLS, for several requests.
pub enum TlsHttp {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl TlsHttp {
    /// Speaks whatever protocol ALPN chose on `stream`.
    pub async fn over(stream: TlsStream<TcpStream>) -> TlsHttp {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            TlsHttp::H2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            TlsHttp::H1(sender)
        }
    }

    /// GET `path` for `host`: status, headers and body.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
    ) -> Result<(StatusCode, hyper::HeaderMap, String), String> {
        self.get_with(host, path, &[]).await
    }

    /// The same with `headers`.
    pub async fn get_with(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, hyper::HeaderMap, String), String> {
        let with_headers = |mut request: hyper::http::request::Builder| {
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.body(Full::new(Bytes::new())).unwrap()
        };
        let response = match self {
            TlsHttp::H1(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                let request = with_headers(Request::get(path).header("host", host));
                sender.send_request(request).await
            }
            TlsHttp::H2(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                let request = with_headers(Request::get(format!("https://{host}{path}")));
                sender.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
