//! An HTTP/3 load client (T12): QUIC connections with requests in flight on each, for a given
//! time; no tool on the machine speaks HTTP/3 (Debian's h2load is built without QUIC). Run in
//! its own process pinned to the load CPU (`xtask h3-load`); prints its figures as JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::tls_client::client_config;
use anyhow::{Result, bail};
use bytes::{Buf, Bytes};

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// Runs the load and prints `{"requests": .., "errors": .., "bytes": .., "seconds": ..}`.
pub fn run(
    port: u16,
    seconds: u64,
    (connections, streams): (usize, usize),
    path: &str,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut tls = client_config()?;
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let counters = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let begin = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let connection = endpoint
                .connect(([127, 0, 0, 1], port).into(), "r7.bench.test")?
                .await?;
            let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection)).await?;
            tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
            for _ in 0..streams {
                let (mut send, counters, path) = (send.clone(), counters.clone(), path.to_string());
                tasks.push(tokio::spawn(async move {
                    let [requests, errors, bytes] = &*counters;
                    while Instant::now() < deadline {
                        match one(&mut send, &path).await {
                            Ok(received) => {
                                requests.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(received, Ordering::Relaxed);
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }));
            }
        }
        for task in tasks {
            task.await?;
        }
        let [requests, errors, bytes] = &*counters;
        let report = serde_json::json!({
            "requests": requests.load(Ordering::Relaxed),
            "errors": errors.load(Ordering::Relaxed),
            "bytes": bytes.load(Ordering::Relaxed),
            "seconds": begin.elapsed().as_secs_f64(),
        });
        println!("{report}");
        Ok(())
    })
}

/// One request and its whole answer; the body's length.
async fn one(send: &mut SendRequest, path: &str) -> Result<u64> {
    let request = hyper::Request::get(format!("https://r7.bench.test{path}")).body(())?;
    let mut stream = send.send_request(request).await?;
    stream.finish().await?;
    let response = stream.recv_response().await?;
    if response.status() != hyper::StatusCode::OK {
        bail!("status {}", response.status());
    }
    let mut received = 0;
    while let Some(chunk) = stream.recv_data().await? {
        received += chunk.remaining() as u64;
    }
    Ok(received)
}
