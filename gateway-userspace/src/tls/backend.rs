//! TLS towards backends (`backend-protocol: HTTPS` and `GRPCS`). By default, as ingress-nginx's
//! `proxy-ssl-verify: off`, the backend's certificate is not verified: the connection is
//! encrypted inside the cluster, and pods commonly present self-signed certificates. A route
//! with `proxy-ssl-*` annotations gets client configurations of its own: the CA its backends
//! must be verified by, a client certificate for mutual TLS, the name checked and sent, the
//! protocol versions.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, version};
use rustls_pki_types::pem::PemObject;

/// What a route asks of its backends' TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendTlsSettings {
    /// `ca.crt` of `proxy-ssl-secret`: the backend's certificate must chain to it
    /// (`proxy-ssl-verify: on`).
    pub verify_with: Option<Vec<u8>>,
    /// `tls.crt` and `tls.key` of `proxy-ssl-secret`: presented to backends that ask.
    pub client_certificate: Option<(Vec<u8>, Vec<u8>)>,
    /// `proxy-ssl-name`: the name verified (and sent): fixed, so that pooled connections are
    /// only reused for what they were verified for.
    pub name: Option<String>,
    /// `proxy-ssl-server-name`: whether the name is sent as SNI.
    pub send_server_name: bool,
    /// `proxy-ssl-protocols`: TLS 1.2 and TLS 1.3 allowed.
    pub tls12: bool,
    pub tls13: bool,
}

/// Client configurations for one route's backends (or the default, unverified one).
#[derive(Debug)]
pub struct BackendTls {
    http1: Arc<ClientConfig>,
    http2: Arc<ClientConfig>,
    /// The name verified and sent, when fixed.
    pub name: Option<ServerName<'static>>,
    settings: BackendTlsSettings,
}

impl BackendTls {
    /// The default: TLS 1.2 and 1.3, the backend's certificate not verified.
    pub fn unverified() -> Self {
        let settings = BackendTlsSettings {
            send_server_name: true,
            tls12: true,
            tls13: true,
            ..BackendTlsSettings::default()
        };
        Self::new(settings).expect("the default backend TLS settings are valid")
    }

    pub fn new(settings: BackendTlsSettings) -> Result<Self, String> {
        let provider = super::provider().clone();
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
            (settings.tls13, &version::TLS13),
            (settings.tls12, &version::TLS12),
        ]
        .into_iter()
        .filter_map(|(allowed, version)| allowed.then_some(version))
        .collect();
        let name = match &settings.name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| format!("{name:?} is not a server name"))?,
            ),
            None => None,
        };
        let client_certificate = match &settings.client_certificate {
            Some((chain, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("tls.crt is not a PEM certificate chain: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
                Some((chain, key))
            }
            None => None,
        };
        let config = |alpn: &[u8]| -> Result<Arc<ClientConfig>, String> {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&versions)
                .map_err(|e| format!("the protocols cannot be used: {e}"))?;
            let builder = match &settings.verify_with {
                Some(ca) => {
                    let mut roots = RootCertStore::empty();
                    for certificate in CertificateDer::pem_slice_iter(ca) {
                        let certificate =
                            certificate.map_err(|e| format!("ca.crt is not PEM: {e}"))?;
                        roots
                            .add(certificate)
                            .map_err(|e| format!("ca.crt holds an unusable certificate: {e}"))?;
                    }
                    if roots.is_empty() {
                        return Err("ca.crt holds no certificate".into());
                    }
                    builder.with_root_certificates(roots)
                }
                None => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone()))),
            };
            let mut config = match &client_certificate {
                Some((chain, key)) => builder
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .map_err(|e| format!("tls.key does not fit tls.crt: {e}"))?,
                None => builder.with_no_client_auth(),
            };
            config.enable_sni = settings.send_server_name;
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config))
        };
        Ok(Self {
            http1: config(b"http/1.1")?,
            http2: config(b"h2")?,
            name,
            settings,
        })
    }

    /// The client configuration for HTTP/1.1 (HTTPS) or HTTP/2 (GRPCS) backends.
    pub fn config(&self, http2: bool) -> &Arc<ClientConfig> {
        if http2 { &self.http2 } else { &self.http1 }
    }

    /// Whether this was made from `settings` (then it is kept across snapshots, and so are its
    /// pooled connections).
    pub fn is_from(&self, settings: &BackendTlsSettings) -> bool {
        &self.settings == settings
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
