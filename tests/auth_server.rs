//! `auth-server ADDR`: an auth service that answers as oauth2-proxy's `/oauth2/auth` does, for
//! the external-auth tests and benchmarks. A session cookie `_oauth2_proxy=USER` of an allowed
//! user (`ann`, `bob`) gets 202 with `X-Auth-Request-User` and `X-Auth-Request-Email` and a
//! refreshed cookie; a signed-in user who is not allowed (`eve`) gets 403; anyone else 401 with
//! a `WWW-Authenticate` challenge. `/oauth2/fail` answers 500, `/oauth2/slow` after 30 s.
//! `/stats` gives the number of auth requests and the headers of the last one (JSON). It prints
//! `auth-server listening on ADDR` once it listens.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const ALLOWED: [&str; 2] = ["ann", "bob"];

#[derive(Default)]
struct Seen {
    requests: u64,
    last: BTreeMap<String, String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .context("usage: auth-server ADDR")?;
    let listener = TcpListener::bind(addr).await?;
    println!("auth-server listening on {}", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Seen::default()));
    loop {
        let (stream, _) = listener.accept().await?;
        let seen = seen.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(seen.clone(), request));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn response(
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    for (name, value) in headers {
        response
            .headers_mut()
            .append(*name, value.parse().expect("a header value"));
    }
    response
}

async fn answer(
    seen: Arc<Mutex<Seen>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    if path == "/stats" {
        let seen = seen.lock().unwrap();
        let body = serde_json::json!({ "requests": seen.requests, "last": seen.last });
        return Ok(response(StatusCode::OK, &[], body.to_string()));
    }
    {
        let mut seen = seen.lock().unwrap();
        seen.requests += 1;
        seen.last = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        seen.last
            .insert(":method".into(), request.method().to_string());
        seen.last.insert(":path".into(), request.uri().to_string());
    }
    match path.as_str() {
        "/oauth2/fail" => {
            return Ok(response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &[],
                "broken".into(),
            ));
        }
        "/oauth2/slow" => tokio::time::sleep(Duration::from_secs(30)).await,
        _ => {}
    }
    let session = request
        .headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "_oauth2_proxy")
        .map(|(_, user)| user.to_string());
    Ok(match session {
        Some(user) if ALLOWED.contains(&user.as_str()) => response(
            StatusCode::ACCEPTED,
            &[
                ("x-auth-request-user", user.clone()),
                ("x-auth-request-email", format!("{user}@example.com")),
                (
                    "set-cookie",
                    format!("_oauth2_proxy={user}; Path=/; HttpOnly"),
                ),
            ],
            String::new(),
        ),
        Some(_) => response(StatusCode::FORBIDDEN, &[], "forbidden".into()),
        None => response(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", "Bearer realm=\"oauth2-proxy\"".into())],
            "unauthorized".into(),
        ),
    })
}
