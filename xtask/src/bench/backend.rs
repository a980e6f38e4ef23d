//! The benchmark backend: a small hyper server that is never the bottleneck. It answers `ok`
//! (2 bytes) to everything, and 1 MiB to `/bytes/1m`; on `NEW_BACKEND_PORT` it answers `new`,
//! so that a route-churn client can tell a new route from a default one. On `AUTH_PORT` it is
//! an auth service as oauth2-proxy's `/oauth2/auth` answers (T13): 202 with
//! `X-Auth-Request-User` for a request with an `_oauth2_proxy` cookie, else 401.

use std::net::SocketAddr;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::fixtures::{AUTH_PORT, BACKEND_PORTS, NEW_BACKEND_PORT};

/// Serves on the backend ports until killed.
pub fn run() -> Result<()> {
    let new_port = NEW_BACKEND_PORT;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let megabyte = Bytes::from(vec![b'x'; 1 << 20]);
        for &port in BACKEND_PORTS.iter().chain([&new_port, &AUTH_PORT]) {
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
                            let response = if port == AUTH_PORT {
                                auth_answer(&request)
                            } else if request.uri().path() == "/bytes/1m" {
                                Response::new(Full::new(megabyte.clone()))
                            } else {
                                Response::new(Full::new(Bytes::from_static(answer)))
                            };
                            async move { Ok::<_, std::convert::Infallible>(response) }
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

/// oauth2-proxy's verdict: signed in with a session cookie, or not.
fn auth_answer(request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let signed_in = (request.headers().get_all(hyper::header::COOKIE).iter())
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("_oauth2_proxy="));
    let mut response = Response::new(Full::new(Bytes::new()));
    if signed_in {
        *response.status_mut() = hyper::StatusCode::ACCEPTED;
        (response.headers_mut()).insert("x-auth-request-user", "bench".parse().unwrap());
    } else {
        *response.status_mut() = hyper::StatusCode::UNAUTHORIZED;
    }
    response
}
