//! The benchmark backend: a small hyper server that is never the bottleneck. It answers `ok`
//! (2 bytes) to everything, and 1 MiB to `/bytes/1m`; on `NEW_BACKEND_PORT` it answers `new`,
//! so that a route-churn client can tell a new route from a default one.

use std::net::SocketAddr;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::fixtures::{BACKEND_PORTS, NEW_BACKEND_PORT};

/// Serves on the backend ports until killed.
pub fn run() -> Result<()> {
    let new_port = NEW_BACKEND_PORT;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let megabyte = Bytes::from(vec![b'x'; 1 << 20]);
        for &port in BACKEND_PORTS.iter().chain([&new_port]) {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
            let megabyte = megabyte.clone();
            let answer: &'static [u8] = if port == new_port { b"new" } else { b"ok" };
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let megabyte = megabyte.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                            let body = if request.uri().path() == "/bytes/1m" {
                                megabyte.clone()
                            } else {
                                Bytes::from_static(answer)
                            };
                            async move {
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
                            }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        }
        // Served until the benchmark kills this process.
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
