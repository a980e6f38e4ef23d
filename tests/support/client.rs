//! HTTP clients for the tests: an async one with keep-alive, and a one-shot blocking GET for
//! polling the admin endpoints from synchronous code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream as TokioTcp;

/// What a test needs from a response.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The body as JSON (what the echo backend sends).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The name of the backend service that answered.
    pub fn service(&self) -> String {
        self.json()["service"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A keep-alive HTTP/1.1 client, or an HTTP/2 (h2c prior knowledge) one.
pub struct HttpClient {
    /// `None` for HTTP/2, which opens a connection per request so that `:authority` can name
    /// the host while the connection goes to the gateway's address.
    client: Option<Client<HttpConnector, Full<Bytes>>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        Self {
            client: Some(Client::builder(TokioExecutor::new()).build_http()),
        }
    }

    /// A client that speaks HTTP/2 with prior knowledge (h2c).
    pub fn http2() -> Self {
        Self { client: None }
    }

    /// GET `path` from `addr` with `Host: host`.
    pub async fn get(&self, addr: SocketAddr, host: &str, path: &str) -> Answer {
        self.send(addr, host, Request::get(path), Bytes::new())
            .await
            .expect("request failed")
    }

    /// Sends a request; `Err` for connection-level failures.
    pub async fn send(
        &self,
        addr: SocketAddr,
        host: &str,
        builder: hyper::http::request::Builder,
        body: Bytes,
    ) -> Result<Answer, String> {
        let path = builder.uri_ref().map(|u| u.to_string()).unwrap_or_default();
        let exchange = async {
            match &self.client {
                Some(client) => {
                    let mut request = builder
                        .uri(format!("http://{addr}{path}"))
                        .body(Full::new(body))
                        .map_err(|e| e.to_string())?;
                    request
                        .headers_mut()
                        .insert(hyper::header::HOST, host.parse().map_err(|_| "bad host")?);
                    client.request(request).await.map_err(|e| format!("{e:?}"))
                }
                None => {
                    let request = builder
                        .uri(format!("http://{host}{path}"))
                        .body(Full::new(body))
                        .map_err(|e| e.to_string())?;
                    let stream = TokioTcp::connect(addr).await.map_err(|e| e.to_string())?;
                    let (mut sender, connection) = hyper::client::conn::http2::handshake(
                        TokioExecutor::new(),
                        TokioIo::new(stream),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    tokio::spawn(connection);
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| format!("{e:?}"))
                }
            }
        };
        let response = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| "timed out".to_string())??;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A blocking GET with `Connection: close`: status and body, or `None` if it failed.
pub fn blocking_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Clients that send requests for one host in a loop until stopped (at most 30 s), counting the
/// answers that are 200 and keeping every other outcome.
pub struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

/// How the clients of a [`SteadyLoad`] use connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    /// Kept alive across requests.
    KeepAlive,
    /// A new connection for every request (what a restart's accept queues must not lose).
    Fresh,
}

impl SteadyLoad {
    /// `clients` keep-alive clients asking `addr` for `host`.
    pub fn start(addr: SocketAddr, host: &str, clients: usize) -> SteadyLoad {
        Self::start_with(addr, host, clients, Connections::KeepAlive)
    }

    /// `clients` clients asking `addr` for `host`, using connections as `connections` says.
    pub fn start_with(
        addr: SocketAddr,
        host: &str,
        clients: usize,
        connections: Connections,
    ) -> SteadyLoad {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, served, host) = (stop.clone(), served.clone(), host.to_string());
                tokio::spawn(async move {
                    let mut client = HttpClient::new();
                    let mut failures = Vec::new();
                    let deadline = std::time::Instant::now() + Duration::from_secs(30);
                    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                        if connections == Connections::Fresh {
                            client = HttpClient::new();
                        }
                        match client
                            .send(addr, &host, Request::get("/"), Bytes::new())
                            .await
                        {
                            Ok(answer) if answer.status == StatusCode::OK => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(answer) => {
                                failures.push(format!("{} {}", answer.status, answer.body))
                            }
                            Err(e) => failures.push(e),
                        }
                    }
                    failures
                })
            })
            .collect();
        SteadyLoad {
            stop,
            served,
            tasks,
        }
    }

    /// Stops the clients: how many requests were served, and every failure.
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.expect("load task"));
        }
        (
            self.served.load(std::sync::atomic::Ordering::Relaxed),
            failures,
        )
    }
}

/// One unary gRPC call (`hello` in one message) to `path` over an HTTP/2 connection: the
/// status, the body and the trailers.
pub async fn grpc_call(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: &str,
    scheme: &str,
    path: &str,
) -> (StatusCode, Bytes, hyper::HeaderMap) {
    let request = Request::post(format!("{scheme}://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap();
    let response = sender.send_request(request).await.expect("gRPC call");
    let status = response.status();
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (status, collected.to_bytes(), trailers)
}
