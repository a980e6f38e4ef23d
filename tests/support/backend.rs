//! A backend that answers every request with its service name and the request it saw (as
//! JSON), echoes WebSocket messages, and can be told to be slow (`/sleep/<ms>`) or to answer a
//! status (`/status/<code>`). gRPC requests (`content-type: application/grpc`) get their body
//! echoed and `grpc-status`/`grpc-message` trailers. It speaks HTTP/1.1 and HTTP/2 (h2c), and
//! over TLS when started with a certificate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// How a backend behaves besides echoing.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Waits this long before every answer.
    pub delay: Duration,
    /// Answers every request with this status.
    pub status: Option<StatusCode>,
    /// Serves TLS with this certificate chain and key (PEM), HTTP/2 and HTTP/1.1 by ALPN.
    pub tls: Option<(String, String)>,
    /// With `tls`: clients must present a certificate this CA (PEM) verifies.
    pub client_ca: Option<String>,
    /// Where what each request was (the JSON of the answer) is also sent.
    pub seen: Option<tokio::sync::mpsc::UnboundedSender<serde_json::Value>>,
}

/// The next request a backend recording to `seen` answered, within 10 seconds.
pub async fn next_seen(
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("the backend sees the request within 10s")
        .expect("the backend is running")
}

/// A running backend; it stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts a backend named `name` on an ephemeral loopback port.
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind a loopback port")
    }

    /// Starts a backend named `name` on `addr`.
    pub async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        Self::start_with(name, addr, Behaviour::default()).await
    }

    /// Starts a backend named `name` on an ephemeral loopback port, behaving as `behaviour`.
    pub async fn start_behaving(name: &str, behaviour: Behaviour) -> Backend {
        Self::start_with(name, "127.0.0.1:0".parse().unwrap(), behaviour)
            .await
            .expect("bind a loopback port")
    }

    async fn start_with(
        name: &str,
        addr: SocketAddr,
        behaviour: Behaviour,
    ) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let name = name.to_string();
        let acceptor = behaviour
            .tls
            .as_ref()
            .map(|(cert, key)| tls_acceptor(cert, key, behaviour.client_ca.as_deref()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (name, behaviour, acceptor) =
                    (name.clone(), behaviour.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        answer(name.clone(), peer, behaviour.clone(), request)
                    });
                    let server = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = server
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = server
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Ok(Backend { addr, task })
    }
}

/// A UDP backend that answers every datagram with its name, `:`, and the datagram, and keeps
/// the source addresses it saw; it stops when dropped.
pub struct UdpBackend {
    pub addr: SocketAddr,
    pub sources: Sources,
    task: JoinHandle<()>,
}

/// The source addresses a UDP backend saw.
pub type Sources = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<SocketAddr>>>;

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UdpBackend {
    pub async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<UdpBackend> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let sources = Sources::default();
        let (seen, prefix) = (std::sync::Arc::clone(&sources), format!("{name}:"));
        let task = tokio::spawn(async move {
            let mut datagram = vec![0u8; 65536];
            while let Ok((length, from)) = socket.recv_from(&mut datagram).await {
                seen.lock().unwrap().insert(from);
                let reply = [prefix.as_bytes(), &datagram[..length]].concat();
                let _ = socket.send_to(&reply, from).await;
            }
        });
        Ok(UdpBackend {
            addr,
            sources,
            task,
        })
    }
}

fn tls_acceptor(cert: &str, key: &str, client_ca: Option<&str>) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM chain");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("PEM key");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(certificate.expect("PEM CA")).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

async fn answer(
    name: String,
    peer: SocketAddr,
    behaviour: Behaviour,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v == "websocket")
    {
        return Ok(websocket(request));
    }
    tokio::time::sleep(behaviour.delay).await;
    if request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        return Ok(grpc(name, request).await);
    }
    let path = request.uri().path().to_string();
    // `/bytes/N`: N bytes counting 0..=250 over and over, for large downloads.
    if let Some(length) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let body: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
        let mut response = Response::new(full(body));
        response
            .headers_mut()
            .insert("x-backend", HeaderValue::from_str(&name).unwrap());
        return Ok(response);
    }
    if let Some(ms) = path.strip_prefix("/sleep/").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // `?delay=1s` / `500ms`, as the Gateway API conformance suite's echo server.
    let delay = (request.uri().query().unwrap_or_default().split('&'))
        .find_map(|pair| pair.strip_prefix("delay="))
        .and_then(|d| match d.strip_suffix("ms") {
            Some(ms) => ms.parse().ok().map(Duration::from_millis),
            None => d
                .strip_suffix('s')?
                .parse()
                .ok()
                .map(Duration::from_secs_f64),
        });
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|code| code.parse().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .or(behaviour.status)
        .unwrap_or(StatusCode::OK);
    // A header sent more than once is reported as its values joined with commas.
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .keys()
        .map(|name| {
            let values: Vec<&str> = (request.headers().get_all(name).iter())
                .map(|v| v.to_str().unwrap_or(""))
                .collect();
            (name.to_string(), values.join(",").into())
        })
        .collect();
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let path_and_query = request.uri().path_and_query().map(|p| p.to_string());
    let version = format!("{:?}", request.version());
    let body = request.body_mut().collect().await.map(|b| b.to_bytes());
    let seen = serde_json::json!({
        "service": name,
        "method": method,
        "uri": uri,
        "path": path_and_query,
        "version": version,
        "peer": peer.to_string(),
        "headers": headers,
        "body_bytes": body.map(|b| b.len()).unwrap_or(0),
    });
    if let Some(seen_by_test) = &behaviour.seen {
        let _ = seen_by_test.send(seen.clone());
    }
    let echo_set = request_headers_value(&seen, "x-echo-set-header");
    let mut response = Response::new(full(format!("{seen}\n")));
    *response.status_mut() = status;
    // The Gateway API conformance suite's echo server sets the headers it is asked to.
    for pair in echo_set.split(',').filter(|p| !p.is_empty()) {
        if let Some((name, value)) = pair.split_once(':')
            && let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            )
        {
            response.headers_mut().append(name, value);
        }
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert("x-backend", HeaderValue::from_str(&name).unwrap());
    Ok(response)
}

fn request_headers_value(seen: &serde_json::Value, name: &str) -> String {
    seen["headers"][name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A gRPC-style answer: the request body back, then trailers naming the backend and the HTTP
/// version the request came with. For a method named `Stream`, each request frame is echoed as
/// it arrives (full duplex); otherwise the whole body is echoed once it has arrived.
async fn grpc(name: String, request: Request<Incoming>) -> Response<Body> {
    let version = format!("{:?}", request.version());
    if request.uri().path().ends_with("/Stream") {
        let trailers = grpc_trailers(&name, &version);
        let frames = futures_util::stream::unfold(
            (request.into_body(), Some(trailers)),
            |(mut body, trailers)| async move {
                let trailers = trailers?;
                loop {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                return Some((Ok(Frame::data(data)), (body, Some(trailers))));
                            }
                        }
                        _ => return Some((Ok(Frame::trailers(trailers)), (body, None))),
                    }
                }
            },
        );
        return grpc_response(BodyExt::boxed(StreamBody::new(frames)));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let trailers = grpc_trailers(&name, &version);
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(body)),
        Ok(Frame::trailers(trailers)),
    ]);
    grpc_response(BodyExt::boxed(StreamBody::new(frames)))
}

fn grpc_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

fn grpc_trailers(name: &str, version: &str) -> hyper::HeaderMap {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert(
        "grpc-message",
        HeaderValue::from_str(&format!("{name} {version}")).unwrap(),
    );
    trailers
}

/// Accepts a WebSocket upgrade and echoes every message, prefixed with nothing.
fn websocket(mut request: Request<Incoming>) -> Response<Body> {
    let Some(key) = request.headers().get("sec-websocket-key") else {
        let mut response = Response::new(full(Bytes::from_static(b"no key\n")));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() || socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).unwrap(),
    );
    response
}
