//! TLS termination: certificates parsed once per snapshot, chosen per handshake by SNI from the
//! current snapshot (exact name, then a wildcard, then the default certificate).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

pub mod backend;
pub mod client_auth;

use crate::publish::RouteTable;
use crate::snapshot::normalize_host;

/// TLS sessions remembered for resumption by session ID (tickets need no server memory).
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// The crypto provider every certificate and handshake uses: aws-lc-rs, the faster of the two
/// rustls ships (see the TLS issue note for the measurement).
pub fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// A certificate chain and key that passed every check, with the names it covers.
#[derive(Debug)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the leaf certificate (subjectAltName), lower-case.
    pub names: Vec<String>,
    /// Expiry, in seconds since the Unix epoch.
    pub not_after: i64,
    /// What monitoring shows of it (`nginx_ingress_controller_ssl_certificate_info`).
    pub details: CertificateDetails,
    /// The PEM it was made from, so an unchanged Secret is not parsed again.
    pem: (Vec<u8>, Vec<u8>),
}

impl Certificate {
    /// Parses a PEM chain (leaf first) and a PEM key (PKCS#8, PKCS#1 or SEC1), and checks that
    /// the key belongs to the certificate and that the certificate is valid at `now`.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], now: SystemTime) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.crt is not a PEM certificate chain: {e}"))?;
        let Some(leaf) = chain.first() else {
            return Err("tls.crt holds no certificate".to_string());
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("tls.crt: the first certificate does not parse: {e}"))?;
        let validity = parsed.validity().clone();
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if validity.not_after.timestamp() < now {
            return Err(format!("the certificate expired on {}", validity.not_after));
        }
        if validity.not_before.timestamp() > now {
            return Err(format!(
                "the certificate is not valid before {}",
                validity.not_before
            ));
        }
        let names: Vec<String> = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let details = CertificateDetails::of(&parsed);
        drop(parsed);
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            format!("tls.key is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")
        })?;
        let certified = CertifiedKey::from_der(chain, key, provider()).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "tls.key does not belong to the certificate in tls.crt".to_string()
            }
            other => format!("tls.key cannot be used: {other}"),
        })?;
        Ok(Self {
            key: Arc::new(certified),
            names,
            not_after: validity.not_after.timestamp(),
            details,
            pem: (chain_pem.to_vec(), key_pem.to_vec()),
        })
    }

    /// Whether this was made from exactly this PEM.
    pub fn is_from(&self, chain_pem: &[u8], key_pem: &[u8]) -> bool {
        self.pem.0 == chain_pem && self.pem.1 == key_pem
    }

    /// Whether the certificate is valid for `host` (already lower-case, no port). A wildcard
    /// name covers exactly one label. `host` may itself be a wildcard (`*.foo.com`), covered by
    /// the same wildcard name.
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|name| name_covers(name, host))
    }
}

/// Identifying facts about a leaf certificate, for metrics.
#[derive(Debug, Default)]
pub struct CertificateDetails {
    /// Hexadecimal, colon-separated.
    pub serial_number: String,
    pub issuer_common_name: String,
    pub issuer_organization: String,
    /// `RSA`, `ECDSA`, `Ed25519` (the names ingress-nginx reports).
    pub public_key_algorithm: &'static str,
}

impl CertificateDetails {
    fn of(certificate: &x509_parser::certificate::X509Certificate<'_>) -> Self {
        use x509_parser::public_key::PublicKey;
        let issuer = certificate.issuer();
        fn first<'a>(
            mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
        ) -> String {
            values
                .next()
                .and_then(|v| v.as_str().ok())
                .unwrap_or_default()
                .to_string()
        }
        Self {
            serial_number: certificate.raw_serial_as_string(),
            issuer_common_name: first(issuer.iter_common_name()),
            issuer_organization: first(issuer.iter_organization()),
            public_key_algorithm: match certificate.public_key().parsed() {
                Ok(PublicKey::RSA(_)) => "RSA",
                Ok(PublicKey::EC(_)) => "ECDSA",
                Ok(PublicKey::DSA(_)) => "DSA",
                _ if certificate.public_key().algorithm.algorithm.to_id_string()
                    == "1.3.101.112" =>
                {
                    "Ed25519"
                }
                _ => "unknown",
            },
        }
    }
}

fn name_covers(name: &str, host: &str) -> bool {
    if name == host {
        return true;
    }
    match (name.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && label != "*" && rest == suffix,
        _ => false,
    }
}

/// The certificates of one snapshot, by host.
#[derive(Debug, Default)]
pub struct CertificateTable {
    exact: HashMap<String, Arc<Certificate>>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, Arc<Certificate>>,
    /// Every certificate that loaded, by Secret (`namespace/name`): reused by the next
    /// snapshot when the Secret did not change, and kept when it breaks.
    pub by_secret: HashMap<String, Arc<Certificate>>,
}

impl CertificateTable {
    /// Serves `certificate` for `host` (`a.foo.com` or `*.foo.com`).
    pub fn insert(&mut self, host: &str, certificate: Arc<Certificate>) {
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(suffix.to_string(), certificate),
            None => self.exact.insert(host.to_string(), certificate),
        };
    }

    /// The certificate for a server name: exact first, then a wildcard for one more label.
    pub fn lookup(&self, server_name: &str) -> Option<&Arc<Certificate>> {
        if let Some(certificate) = self.exact.get(server_name) {
            return Some(certificate);
        }
        let (label, suffix) = server_name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(suffix)
    }

    /// Every host with a certificate (`*.foo.com` for wildcards), with the certificate and the
    /// Secret (`namespace/name`) it came from.
    pub fn served(&self) -> Vec<(String, &Arc<Certificate>, Option<&str>)> {
        let secret_of = |certificate: &Arc<Certificate>| {
            self.by_secret
                .iter()
                .find(|(_, c)| Arc::ptr_eq(c, certificate))
                .map(|(secret, _)| secret.as_str())
        };
        let exact = self.exact.iter().map(|(h, c)| (h.clone(), c));
        let wildcard = self.wildcard.iter().map(|(s, c)| (format!("*.{s}"), c));
        let mut served: Vec<_> = exact
            .chain(wildcard)
            .map(|(host, c)| (host, c, secret_of(c)))
            .collect();
        served.sort_by(|a, b| a.0.cmp(&b.0));
        served
    }

    /// Whether a certificate is configured for exactly this host pattern.
    pub fn has(&self, host: &str) -> bool {
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.contains_key(suffix),
            None => self.exact.contains_key(host),
        }
    }
}

/// Picks the certificate for each handshake from the current snapshot.
#[derive(Debug)]
pub struct SniResolver {
    table: Arc<RouteTable>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(table: Arc<RouteTable>, default: Arc<CertifiedKey>) -> Self {
        Self { table, default }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let snapshot = self.table.current();
        let found = snapshot.certificates.lookup(&normalize_host(name));
        Some(found.map_or_else(|| self.default.clone(), |c| c.key.clone()))
    }
}

/// How the HTTPS listener negotiates.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// Session tickets (with rotating keys) and a session-ID cache.
    pub resumption: bool,
    /// Only these cipher suites (rustls names, e.g. `TLS13_AES_128_GCM_SHA256`), in this order.
    pub cipher_suites: Vec<String>,
    /// Only these key exchange groups (e.g. `X25519`, `secp256r1`), in this order.
    pub kx_groups: Vec<String>,
}

/// The rustls configuration: TLS 1.2 and 1.3 with rustls' default (modern AEAD) suites unless
/// narrowed, ALPN h2 and http/1.1, certificates from `resolver`.
pub fn server_config(resolver: Arc<SniResolver>, settings: &TlsSettings) -> Result<ServerConfig> {
    let mut provider = CryptoProvider::clone(provider());
    if !settings.cipher_suites.is_empty() {
        provider.cipher_suites = pick(&provider.cipher_suites, &settings.cipher_suites, |s| {
            format!("{:?}", s.suite())
        })
        .context("--tls-ciphers")?;
    }
    if !settings.kx_groups.is_empty() {
        provider.kx_groups = pick(&provider.kx_groups, &settings.kx_groups, |g| {
            format!("{:?}", g.name())
        })
        .context("--tls-kx-groups")?;
    }
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if settings.resumption {
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().context("TLS ticketer")?;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    } else {
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    Ok(config)
}

/// A certificate (DER) as PEM.
pub fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem + "-----END CERTIFICATE-----\n"
}

/// `base` with client certificates asked for by `verifier`; its own session cache and ticket
/// keys where `base` resumes sessions, so that no session crosses between the two.
pub fn with_client_verifier(
    base: &ServerConfig,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> ServerConfig {
    let mut config = ServerConfig::builder_with_provider(base.crypto_provider().clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .expect("the listener's provider supports these versions")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(base.cert_resolver.clone());
    config.alpn_protocols = base.alpn_protocols.clone();
    config.send_tls13_tickets = base.send_tls13_tickets;
    if base.ticketer.enabled() {
        if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
            config.ticketer = ticketer;
        }
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    } else {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    config
}

/// The entries of `available` named in `wanted`, in that order; an unknown name is an error
/// that lists the known ones.
fn pick<T: Clone>(
    available: &[T],
    wanted: &[String],
    name: impl Fn(&T) -> String,
) -> Result<Vec<T>> {
    wanted
        .iter()
        .map(|w| {
            available
                .iter()
                .find(|a| name(a).eq_ignore_ascii_case(w))
                .cloned()
                .with_context(|| {
                    let known: Vec<String> = available.iter().map(&name).collect();
                    format!("unknown name {w:?}; known: {}", known.join(", "))
                })
        })
        .collect()
}

/// The certificate for handshakes no Secret answers: from files, or self-signed at start (as
/// ingress-nginx's "Fake Certificate").
pub fn default_certificate(files: Option<(&str, &str)>) -> Result<Arc<CertifiedKey>> {
    let (chain, key) = match files {
        Some((cert_path, key_path)) => (
            std::fs::read(cert_path)
                .with_context(|| format!("reading --default-cert {cert_path}"))?,
            std::fs::read(key_path).with_context(|| format!("reading --default-key {key_path}"))?,
        ),
        None => {
            let generated =
                rcgen::generate_simple_self_signed(vec!["xdp-gateway.invalid".to_string()])
                    .context("generating the default certificate")?;
            (
                generated.cert.pem().into_bytes(),
                generated.signing_key.serialize_pem().into_bytes(),
            )
        }
    };
    let certificate = Certificate::from_pem(&chain, &key, SystemTime::now())
        .map_err(|reason| anyhow::anyhow!("default certificate: {reason}"))?;
    Ok(certificate.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_names_cover_one_label() {
        assert!(name_covers("a.com", "a.com"));
        assert!(name_covers("*.a.com", "x.a.com"));
        assert!(name_covers("*.a.com", "*.a.com"));
        assert!(!name_covers("*.a.com", "a.com"));
        assert!(!name_covers("*.a.com", "y.x.a.com"));
        assert!(!name_covers("*.a.com", ".a.com"));
        assert!(!name_covers("a.com", "b.com"));
    }

    #[test]
    fn table_lookup_prefers_exact() {
        let generated =
            rcgen::generate_simple_self_signed(vec!["*.a.com".into(), "x.a.com".into()]).unwrap();
        let cert = |pem: &str| {
            Arc::new(
                Certificate::from_pem(
                    pem.as_bytes(),
                    generated.signing_key.serialize_pem().as_bytes(),
                    SystemTime::now(),
                )
                .unwrap(),
            )
        };
        let wild = cert(&generated.cert.pem());
        let exact = cert(&generated.cert.pem());
        let mut table = CertificateTable::default();
        table.insert("*.a.com", wild.clone());
        table.insert("x.a.com", exact.clone());
        assert!(Arc::ptr_eq(table.lookup("x.a.com").unwrap(), &exact));
        assert!(Arc::ptr_eq(table.lookup("y.a.com").unwrap(), &wild));
        assert!(table.lookup("a.com").is_none());
        assert!(table.lookup("z.y.a.com").is_none());
        assert_eq!(wild.names, vec!["*.a.com", "x.a.com"]);
    }

    #[test]
    fn pkcs1_rsa_and_sec1_ec_keys_load() {
        let now = SystemTime::now();
        let rsa = Certificate::from_pem(
            include_bytes!("../testdata/rsa.crt"),
            include_bytes!("../testdata/rsa-pkcs1.key"),
            now,
        )
        .unwrap();
        assert_eq!(rsa.names, ["rsa.test"]);
        let ec = Certificate::from_pem(
            include_bytes!("../testdata/ec.crt"),
            include_bytes!("../testdata/ec-sec1.key"),
            now,
        )
        .unwrap();
        assert_eq!(ec.names, ["ec.test"]);
        // And a key of one with the certificate of the other is refused.
        let err = Certificate::from_pem(
            include_bytes!("../testdata/rsa.crt"),
            include_bytes!("../testdata/ec-sec1.key"),
            now,
        )
        .unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn bad_material_is_refused_with_a_reason() {
        let a = rcgen::generate_simple_self_signed(vec!["a.com".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.com".into()]).unwrap();
        let now = SystemTime::now();
        let key_a = a.signing_key.serialize_pem();
        let err = Certificate::from_pem(
            a.cert.pem().as_bytes(),
            b.signing_key.serialize_pem().as_bytes(),
            now,
        )
        .unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
        let err = Certificate::from_pem(b"garbage", key_a.as_bytes(), now).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        let err = Certificate::from_pem(a.cert.pem().as_bytes(), b"nope", now).unwrap_err();
        assert!(err.contains("tls.key is not a PEM private key"), "{err}");
        let mut params = rcgen::CertificateParams::new(vec!["old.com".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let old_key = rcgen::KeyPair::generate().unwrap();
        let old = params.self_signed(&old_key).unwrap();
        let err = Certificate::from_pem(
            old.pem().as_bytes(),
            old_key.serialize_pem().as_bytes(),
            now,
        )
        .unwrap_err();
        assert!(err.contains("expired on"), "{err}");
        assert!(Certificate::from_pem(a.cert.pem().as_bytes(), key_a.as_bytes(), now).is_ok());
    }
}
