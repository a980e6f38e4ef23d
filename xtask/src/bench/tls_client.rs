//! A TLS load client for handshake tests (T3, T3b): connections that each make one request, as
//! fast as `connections` parallel clients go, with TLS session resumption on or off. Run in its
//! own process pinned to the load CPU (`xtask tls-load`); prints its figures as JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs as provider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The benchmark certificate is self-signed: every peer is accepted, as `oha --insecure` does.
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The load clients' TLS: 1.3 with the suite and group the systems are configured with, any
/// certificate accepted.
pub(super) fn client_config() -> Result<rustls::ClientConfig> {
    let mut crypto = provider::default_provider();
    crypto.kx_groups = vec![provider::kx_group::X25519];
    crypto.cipher_suites = vec![provider::cipher_suite::TLS13_AES_128_GCM_SHA256];
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(crypto))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth(),
    )
}

/// Runs the load and prints `{"requests": .., "errors": .., "resumed": .., "seconds": ..}`.
pub fn run(port: u16, seconds: u64, connections: usize, resume: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut config = client_config()?;
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let connector = TlsConnector::from(Arc::new(config));
        let (requests, errors, resumed) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let begin = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (connector, requests, errors, resumed) = (
                connector.clone(),
                requests.clone(),
                errors.clone(),
                resumed.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    match one(&connector, port).await {
                        Ok(was_resumed) => {
                            requests.fetch_add(1, Ordering::Relaxed);
                            resumed.fetch_add(u64::from(was_resumed), Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        let report = serde_json::json!({
            "requests": requests.load(Ordering::Relaxed),
            "errors": errors.load(Ordering::Relaxed),
            "resumed": resumed.load(Ordering::Relaxed),
            "seconds": begin.elapsed().as_secs_f64(),
        });
        println!("{report}");
        Ok(())
    })
}

/// One connection, one handshake, one request; whether the session was resumed.
async fn one(connector: &TlsConnector, port: u16) -> Result<bool> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("r7.bench.test")?;
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: r7.bench.test\r\nConnection: close\r\n\r\n")
        .await?;
    // Read the response (headers, then Content-Length bytes), not until the server closes:
    // a client that hangs up after its answer costs the server what a browser does.
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            anyhow::bail!("closed before the whole response");
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                break;
            }
        }
    }
    if !response.starts_with(b"HTTP/1.1 200") {
        anyhow::bail!("not 200");
    }
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    Ok(resumed)
}
