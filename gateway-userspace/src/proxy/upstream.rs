//! Connections to backends: one keep-alive pool per endpoint and protocol, of HTTP/1.1
//! connections (plain or TLS) driven directly, and one multiplexed HTTP/2 connection per
//! endpoint for gRPC (h2c or TLS). An HTTP/1.1 connection goes back to its pool when the
//! response body has been read to its end; a request is handed to a connection only once the
//! connection exists, so a failed connect leaves the request (body untouched) for another
//! endpoint, and a pooled connection that turns out closed is replaced by a fresh one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::request_body::RequestBody;
use crate::policy::Protocol;

/// Idle keep-alive connections are closed after this long (nginx's upstream keepalive_timeout
/// is 60s; backends commonly time out idle connections later than that).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint (nginx benchmarks use `keepalive 256`).
const MAX_IDLE_PER_ENDPOINT: usize = 256;

type Sender = http1::SendRequest<RequestBody>;
type Multiplexed = http2::SendRequest<RequestBody>;
type Key = (SocketAddr, Protocol);

/// Why a request did not get a response.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, timed out, TLS failed).
    Connect(String),
    /// The connection failed while the request was on it.
    Exchange(hyper::Error),
}

/// Where a request goes.
pub struct Target {
    pub endpoint: SocketAddr,
    pub protocol: Protocol,
    /// The TLS server name, for HTTPS and GRPCS backends.
    pub server_name: Option<ServerName<'static>>,
    pub connect_timeout: Duration,
}

/// The pools of every endpoint.
#[derive(Clone)]
pub struct UpstreamPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    idle: Mutex<HashMap<Key, Vec<(Sender, Instant)>>>,
    multiplexed: Mutex<HashMap<Key, Multiplexed>>,
    counters: ReuseCounters,
    tls: super::backend_tls::Connectors,
}

/// Requests sent on a pooled connection, and on a new one.
#[derive(Clone, Debug, Default)]
pub struct ReuseCounters {
    pub reused: Counter,
    pub new: Counter,
}

impl UpstreamPool {
    /// An empty pool; a background task closes connections idle for too long.
    pub fn new(counters: ReuseCounters) -> Self {
        let pool = Self {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(HashMap::new()),
                multiplexed: Mutex::new(HashMap::new()),
                counters,
                tls: super::backend_tls::Connectors::new(),
            }),
        };
        let weak = Arc::downgrade(&pool.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let mut idle = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.retain(|_, senders| {
                    senders.retain(|(sender, since)| {
                        !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT
                    });
                    !senders.is_empty()
                });
                drop(idle);
                let mut multiplexed = inner.multiplexed.lock().unwrap_or_else(|e| e.into_inner());
                multiplexed.retain(|_, sender| !sender.is_closed());
            }
        });
        pool
    }

    /// Sends `request` to `target`. On failure, the request comes back when it was never
    /// written to a connection (so it can go to another endpoint).
    pub async fn send(
        &self,
        target: &Target,
        request: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, (UpstreamError, Option<Request<RequestBody>>)> {
        // The rare paths (HTTP/2, a new connection with its TLS handshake) are boxed: their
        // state would otherwise make every request's future kilobytes larger, and futures are
        // moved by copying.
        if target.protocol.is_http2() {
            return Box::pin(self.send_multiplexed(target, request)).await;
        }
        let key = (target.endpoint, target.protocol);
        let mut request = request;
        // A pooled connection may have been closed by the backend while idle: then the request
        // is tried once more on a new connection.
        let mut pooled = self.checkout(key).await;
        loop {
            let reused = pooled.is_some();
            let mut sender = match pooled.take() {
                Some(sender) => sender,
                None => match Box::pin(self.connect_http1(target)).await {
                    Ok(sender) => sender,
                    Err(reason) => return Err((UpstreamError::Connect(reason), Some(request))),
                },
            };
            self.count(reused);
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.pooled(key, sender, response)),
                // Unsent on a reused connection: the next turn connects afresh.
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    unsent => return Err((UpstreamError::Exchange(error.into_error()), unsent)),
                },
            }
        }
    }

    fn count(&self, reused: bool) {
        let counters = &self.inner.counters;
        if reused {
            &counters.reused
        } else {
            &counters.new
        }
        .inc();
    }

    /// HTTP/2: one connection per endpoint carries every request, made on first use and
    /// again whenever it has closed.
    async fn send_multiplexed(
        &self,
        target: &Target,
        mut request: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, (UpstreamError, Option<Request<RequestBody>>)> {
        let key = (target.endpoint, target.protocol);
        let existing = {
            let multiplexed = self
                .inner
                .multiplexed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            multiplexed.get(&key).filter(|s| !s.is_closed()).cloned()
        };
        let reused = existing.is_some();
        let mut sender = match existing {
            Some(sender) => sender,
            None => {
                let sender = match self.connect_http2(target).await {
                    Ok(sender) => sender,
                    Err(reason) => return Err((UpstreamError::Connect(reason), Some(request))),
                };
                let mut multiplexed = self
                    .inner
                    .multiplexed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                multiplexed.insert(key, sender.clone());
                sender
            }
        };
        self.count(reused);
        if sender.ready().await.is_err() {
            return Err((
                UpstreamError::Connect("the HTTP/2 connection closed".into()),
                Some(request),
            ));
        }
        *request.version_mut() = hyper::Version::HTTP_2;
        match sender.try_send_request(request).await {
            Ok(response) => {
                let (parts, inner) = response.into_parts();
                let body = PooledBody {
                    inner: Some(inner),
                    checkin: None,
                };
                Ok(Response::from_parts(parts, body))
            }
            Err(mut error) => {
                let unsent = error.take_message();
                Err((UpstreamError::Exchange(error.into_error()), unsent))
            }
        }
    }

    /// A ready idle connection for `key`, if there is one.
    async fn checkout(&self, key: Key) -> Option<Sender> {
        loop {
            let (mut sender, since) = {
                let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(&key)?.pop()?
            };
            // A returned connection becomes ready as soon as its task has seen the response end.
            if since.elapsed() < IDLE_TIMEOUT && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn tcp(&self, target: &Target) -> Result<TcpStream, String> {
        let stream =
            tokio::time::timeout(target.connect_timeout, TcpStream::connect(target.endpoint))
                .await
                .map_err(|_| format!("timed out after {:?}", target.connect_timeout))?
                .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect_http1(&self, target: &Target) -> Result<Sender, String> {
        let stream = self.tcp(target).await?;
        if target.protocol.is_tls() {
            let tls = self.inner.tls.connect(target, stream).await?;
            return handshake_http1(tls, target.endpoint).await;
        }
        handshake_http1(stream, target.endpoint).await
    }

    async fn connect_http2(&self, target: &Target) -> Result<Multiplexed, String> {
        let stream = self.tcp(target).await?;
        if target.protocol.is_tls() {
            let tls = self.inner.tls.connect(target, stream).await?;
            return handshake_http2(tls, target.endpoint).await;
        }
        handshake_http2(stream, target.endpoint).await
    }

    /// The response, with its connection going back to the pool when the body ends.
    fn pooled(
        &self,
        key: Key,
        sender: Sender,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        let upgraded = response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
        let (parts, inner) = response.into_parts();
        let mut body = PooledBody {
            inner: Some(inner),
            checkin: None,
        };
        // An upgraded connection belongs to the tunnel now.
        if !upgraded {
            body.checkin = Some(Checkin {
                pool: self.inner.clone(),
                key,
                sender,
            });
            if body.is_end_stream() {
                body.check_in();
            }
        }
        Response::from_parts(parts, body)
    }
}

async fn handshake_http1<S>(stream: S, endpoint: SocketAddr) -> Result<Sender, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // Upgrades (WebSocket) take the connection over when the response says 101.
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%endpoint, %error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

async fn handshake_http2<S>(stream: S, endpoint: SocketAddr) -> Result<Multiplexed, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%endpoint, %error, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}

impl PoolInner {
    fn put(&self, key: Key, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let senders = idle.entry(key).or_default();
        if senders.len() < MAX_IDLE_PER_ENDPOINT {
            senders.push((sender, Instant::now()));
        }
    }
}

struct Checkin {
    pool: Arc<PoolInner>,
    key: Key,
    sender: Sender,
}

/// A backend's response body; its end returns the connection to the pool.
pub struct PooledBody {
    inner: Option<Incoming>,
    checkin: Option<Checkin>,
}

impl PooledBody {
    fn check_in(&mut self) {
        if let Some(Checkin { pool, key, sender }) = self.checkin.take() {
            pool.put(key, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        // The server stops polling once the body says it ended: check in on that, not on None.
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.as_ref().is_some_and(Body::is_end_stream),
            _ => false,
        };
        if ended {
            self.check_in();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
