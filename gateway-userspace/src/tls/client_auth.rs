//! Client certificates (`auth-tls-secret` and its companions), per host: the handshake of a
//! host that asks for them is made with a configuration of its own, chosen by SNI, that requests
//! a certificate and checks only its signatures; the chain is then verified against the host's
//! CA (and CRL) once per connection, so that a missing or failed certificate can be answered as
//! ingress-nginx does (400, or the `auth-tls-error-page`), and the verdict passed to backends in
//! the `ssl-client-*` headers.

use std::sync::{Arc, OnceLock};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};

static SSL_CLIENT_VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
static SSL_CLIENT_SUBJECT_DN: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
static SSL_CLIENT_ISSUER_DN: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
static SSL_CLIENT_CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// `auth-tls-verify-client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyClient {
    /// A certificate the CA verifies is required.
    On,
    /// A certificate is asked for; one that is sent must verify.
    Optional,
    /// A certificate is asked for and passed on, verified or not.
    OptionalNoCa,
}

/// One host's client certificate rules.
#[derive(Debug)]
pub struct ClientAuth {
    pub mode: VerifyClient,
    /// `auth-tls-verify-depth`: intermediates allowed between the certificate and the CA.
    pub depth: usize,
    /// `auth-tls-pass-certificate-to-upstream`: the PEM goes to the backend (`ssl-client-cert`).
    pub pass_certificate: bool,
    /// `auth-tls-error-page`: where a failed verification is redirected, instead of a 400.
    pub error_page: Option<HeaderValue>,
    /// `auth-tls-match-cn`: the subject must match (else 403).
    pub match_cn: Option<regex::Regex>,
    verifier: Arc<dyn ClientCertVerifier>,
    /// The handshake configuration, made from the listener's on first use.
    handshake: OnceLock<Arc<ServerConfig>>,
    /// The Secret's `ca.crt` and `ca.crl`, to keep this (and its configuration) when unchanged.
    source: (Vec<u8>, Option<Vec<u8>>),
}

/// What one connection's certificate showed, with the rules it was checked by.
#[derive(Debug)]
pub struct ClientCertificate {
    pub auth: Arc<ClientAuth>,
    /// `SUCCESS`, `FAILED:reason` or `NONE`, as nginx's `$ssl_client_verify`.
    pub verify: String,
    pub subject: String,
    pub issuer: String,
    /// The chain's first certificate, PEM, percent-encoded (nginx's `$ssl_client_escaped_cert`).
    pub escaped_pem: String,
}

/// Why a request is refused for its client certificate.
pub enum Refusal {
    /// 400, or a redirect to the error page.
    Unverified(String),
    /// 403: the subject does not match `auth-tls-match-cn`.
    Subject,
}

impl ClientAuth {
    pub fn new(
        ca_pem: &[u8],
        crl_pem: Option<&[u8]>,
        mode: VerifyClient,
        depth: usize,
    ) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem) {
            let certificate = certificate.map_err(|e| format!("ca.crt is not PEM: {e}"))?;
            roots
                .add(certificate)
                .map_err(|e| format!("ca.crt holds a certificate that cannot be a CA: {e}"))?;
        }
        if roots.is_empty() {
            return Err("ca.crt holds no certificate".into());
        }
        let crls: Vec<CertificateRevocationListDer<'static>> = match crl_pem {
            Some(pem) => CertificateRevocationListDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("ca.crl is not a PEM CRL: {e}"))?,
            None => Vec::new(),
        };
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider().clone())
                .with_crls(crls)
                .build()
                .map_err(|e| format!("the CA cannot verify clients: {e}"))?;
        Ok(Self {
            mode,
            depth,
            pass_certificate: false,
            error_page: None,
            match_cn: None,
            verifier,
            handshake: OnceLock::new(),
            source: (ca_pem.to_vec(), crl_pem.map(<[u8]>::to_vec)),
        })
    }

    /// Whether `self` and `other` verify the same way (then `other` is kept, with its
    /// handshake configuration).
    pub fn same_as(&self, other: &ClientAuth) -> bool {
        self.source == other.source
            && self.mode == other.mode
            && self.depth == other.depth
            && self.pass_certificate == other.pass_certificate
            && self.error_page == other.error_page
            && self.match_cn.as_ref().map(regex::Regex::as_str)
                == other.match_cn.as_ref().map(regex::Regex::as_str)
    }

    /// The handshake configuration of this host: `base` (the listener's) asking for a client
    /// certificate. Made once; it has its own session cache and tickets, so that a session
    /// resumed elsewhere never skips the certificate.
    pub fn handshake(&self, base: &ServerConfig) -> Arc<ServerConfig> {
        self.handshake
            .get_or_init(|| {
                let requesting = Arc::new(Requesting {
                    inner: self.verifier.clone(),
                    hints: self.mode != VerifyClient::OptionalNoCa,
                });
                Arc::new(super::with_client_verifier(base, requesting))
            })
            .clone()
    }

    /// Verifies the chain a client presented (once per connection).
    pub fn check(self: &Arc<Self>, chain: Option<&[CertificateDer<'_>]>) -> ClientCertificate {
        let mut verdict = ClientCertificate {
            auth: self.clone(),
            verify: "NONE".into(),
            subject: String::new(),
            issuer: String::new(),
            escaped_pem: String::new(),
        };
        let Some((leaf, intermediates)) = chain.and_then(<[_]>::split_first) else {
            return verdict;
        };
        if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf) {
            verdict.subject = rfc2253(parsed.subject());
            verdict.issuer = rfc2253(parsed.issuer());
        }
        verdict.escaped_pem = escaped_pem(leaf);
        verdict.verify = if intermediates.len() > self.depth {
            format!("FAILED:the chain is deeper than {}", self.depth)
        } else {
            match (self.verifier).verify_client_cert(leaf, intermediates, UnixTime::now()) {
                Ok(_) => "SUCCESS".into(),
                Err(error) => format!("FAILED:{error}"),
            }
        };
        verdict
    }
}

impl ClientCertificate {
    /// Whether the request may go on, by the host's mode and `auth-tls-match-cn`; sets the
    /// `ssl-client-*` headers (the client's own are replaced).
    pub fn admit(&self, headers: &mut HeaderMap) -> Result<(), Refusal> {
        let auth = &self.auth;
        let refused = match (auth.mode, self.verify.as_str()) {
            (VerifyClient::On, "NONE") => Some("no required SSL certificate was sent".to_string()),
            (VerifyClient::On | VerifyClient::Optional, verify)
                if verify != "SUCCESS" && verify != "NONE" =>
            {
                Some(format!(
                    "the SSL certificate error: {}",
                    &verify["FAILED:".len()..]
                ))
            }
            _ => None,
        };
        if let Some(reason) = refused {
            return Err(Refusal::Unverified(reason));
        }
        if let Some(pattern) = &auth.match_cn
            && !pattern.is_match(&self.subject)
        {
            return Err(Refusal::Subject);
        }
        let value =
            |text: &str| HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static(""));
        headers.insert(SSL_CLIENT_VERIFY.clone(), value(&self.verify));
        headers.insert(SSL_CLIENT_SUBJECT_DN.clone(), value(&self.subject));
        headers.insert(SSL_CLIENT_ISSUER_DN.clone(), value(&self.issuer));
        if auth.pass_certificate {
            headers.insert(SSL_CLIENT_CERT.clone(), value(&self.escaped_pem));
        } else {
            headers.remove(&SSL_CLIENT_CERT);
        }
        Ok(())
    }
}

/// A distinguished name as nginx writes it (RFC 2253: last RDN first, `,` between).
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut parts: Vec<String> = name
        .iter_rdn()
        .flat_map(|rdn| rdn.iter())
        .map(|attribute| {
            let key = x509_parser::objects::oid2abbrev(attribute.attr_type(), registry)
                .map_or_else(|_| attribute.attr_type().to_id_string(), str::to_string);
            let value = attribute.as_str().unwrap_or("");
            let escaped: String = value
                .chars()
                .flat_map(|c| {
                    let escape = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';');
                    escape.then_some('\\').into_iter().chain(std::iter::once(c))
                })
                .collect();
            format!("{key}={escaped}")
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

/// The certificate as PEM, percent-encoded for a header.
fn escaped_pem(certificate: &CertificateDer<'_>) -> String {
    let pem = super::pem_of(certificate);
    let mut escaped = String::with_capacity(pem.len() * 2);
    crate::policy::template::escape_into(&pem, &mut escaped);
    escaped
}

/// Asks for a client certificate without requiring one, and checks only that the client holds
/// its key (the signatures); the chain is verified after the handshake (`ClientAuth::check`).
#[derive(Debug)]
struct Requesting {
    inner: Arc<dyn ClientCertVerifier>,
    /// Whether the CA's names are sent as hints (not for `optional_no_ca`).
    hints: bool,
}

impl ClientCertVerifier for Requesting {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        if self.hints {
            self.inner.root_hint_subjects()
        } else {
            &[]
        }
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
