//! Connections to backends: one keep-alive pool per endpoint and protocol, of HTTP/1.1
//! connections (plain or TLS) spoken by the request's own task (`h1`), and one multiplexed
//! HTTP/2 connection per endpoint for gRPC (h2c or TLS, hyper). An HTTP/1.1 connection goes
//! back to its pool when the response body has been read to its end; a request is handed to a
//! connection only once the connection exists, so a failed connect leaves the request (body
//! untouched) for another endpoint, and a pooled connection that turns out closed is replaced
//! by a fresh one.

mod h1;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::headers::Forwarding;
use super::request_body::RequestBody;
use super::{coarse_clock, strict};
use crate::lifecycle::workers;
use crate::policy::Protocol;
use crate::snapshot::LookupMap;
use crate::tls::backend::BackendTls;

/// Idle keep-alive connections are closed after this long (nginx's upstream keepalive_timeout
/// is 60s; backends commonly time out idle connections later than that).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint (nginx benchmarks use `keepalive 256`).
const MAX_IDLE_PER_ENDPOINT: usize = 256;

pub use h1::BackendIo;

use h1::{ExchangeError, H1Body, H1Connection};

type Multiplexed = http2::SendRequest<RequestBody>;

/// A request on its way to a backend. Boxed: it passes through the retry loop, the pool and
/// the connection, whose futures would each hold (and move) a copy of its 384 bytes.
pub type Outbound = Box<Request<RequestBody>>;
/// The endpoint, the protocol, and the route's backend TLS configuration (by address; 0 for the
/// default): a connection is only reused for what it was made and verified for.
type Key = (SocketAddr, Protocol, usize);

/// Why a request did not get a response.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, timed out, TLS failed).
    Connect(String),
    /// The connection failed while the request was on it.
    Exchange(Box<dyn std::error::Error + Send + Sync>),
}

/// Where a request goes.
pub struct Target {
    pub endpoint: SocketAddr,
    pub protocol: Protocol,
    /// The TLS server name, for HTTPS and GRPCS backends.
    pub server_name: Option<ServerName<'static>>,
    /// The route's `proxy-ssl-*` configuration (else the default, unverified).
    pub tls: Option<Arc<BackendTls>>,
    pub connect_timeout: Duration,
}

impl Target {
    /// Plain HTTP/1.1 to `endpoint`.
    pub fn plain(endpoint: SocketAddr, connect_timeout: Duration) -> Self {
        Self {
            endpoint,
            protocol: Protocol::Http,
            server_name: None,
            tls: None,
            connect_timeout,
        }
    }

    fn key(&self) -> Key {
        let tls = self.tls.as_ref().map_or(0, |tls| Arc::as_ptr(tls) as usize);
        (self.endpoint, self.protocol, tls)
    }
}

/// The pools of every endpoint.
#[derive(Clone)]
pub struct UpstreamPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// Idle connections, with when they came back (coarse clock), one pool per thread that
    /// serves requests: a connection is only taken up again on the worker whose poller it is
    /// registered with, and no worker waits on another's lock.
    idle: Box<[Mutex<IdleConnections>]>,
    multiplexed: Mutex<LookupMap<Key, Multiplexed>>,
    counters: ReuseCounters,
    default_tls: BackendTls,
}

type IdleConnections = LookupMap<Key, Vec<(H1Connection, Duration)>>;

/// Requests sent on a pooled connection, and on a new one.
#[derive(Clone, Debug, Default)]
pub struct ReuseCounters {
    pub reused: Counter,
    pub new: Counter,
}

impl UpstreamPool {
    /// An empty pool for each of `threads` (see [`workers::current`]); a background task
    /// closes connections idle for too long.
    pub fn new(counters: ReuseCounters, threads: usize) -> Self {
        let pool = Self {
            inner: Arc::new(PoolInner {
                idle: (0..threads.max(1)).map(|_| Mutex::default()).collect(),
                multiplexed: Mutex::default(),
                counters,
                default_tls: BackendTls::unverified(),
            }),
        };
        let weak = Arc::downgrade(&pool.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let now = coarse_clock::now();
                for idle in &inner.idle {
                    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
                    idle.retain(|_, connections| {
                        connections
                            .retain_mut(|(connection, since)| reusable(connection, *since, now));
                        !connections.is_empty()
                    });
                }
                let mut multiplexed = inner.multiplexed.lock().unwrap_or_else(|e| e.into_inner());
                multiplexed.retain(|_, sender| !sender.is_closed());
            }
        });
        pool
    }

    /// Sends `request`, with `forwarding`'s headers, to `target`. On failure, the request comes
    /// back when it was never written to a connection (so it can go to another endpoint).
    pub async fn send(
        &self,
        target: &Target,
        mut request: Outbound,
        forwarding: Option<Forwarding<'_>>,
    ) -> Result<Response<PooledBody>, (UpstreamError, Option<Outbound>)> {
        // The rare paths (HTTP/2, a new connection with its TLS handshake) are boxed: their
        // state would otherwise make every request's future kilobytes larger, and futures are
        // moved by copying.
        if target.protocol.is_http2() {
            if let Some(forwarding) = forwarding {
                forwarding.insert_into(request.headers_mut());
            }
            return Box::pin(self.send_multiplexed(target, request)).await;
        }
        let key = target.key();
        // A pooled connection may have been closed by the backend while idle: then the request
        // is tried once more on a new connection.
        let mut pooled = self.checkout(key);
        loop {
            let reused = pooled.is_some();
            let connection = match pooled.take() {
                Some(connection) => connection,
                None => match Box::pin(self.connect_http1(target)).await {
                    Ok(connection) => connection,
                    Err(reason) => return Err((UpstreamError::Connect(reason), Some(request))),
                },
            };
            self.count(reused);
            let checkin = Checkin {
                pool: self.inner.clone(),
                key,
            };
            match connection.send(request, forwarding, checkin).await {
                Ok(response) => return Ok(response.map(PooledBody::Http1)),
                // Unsent on a reused connection: the next turn connects afresh.
                Err(failed) => match failed.unsent {
                    Some(unsent) if reused => request = unsent,
                    unsent => {
                        let error = UpstreamError::Exchange(Box::new(failed.error));
                        return Err((error, unsent));
                    }
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
        mut request: Outbound,
    ) -> Result<Response<PooledBody>, (UpstreamError, Option<Outbound>)> {
        let key = target.key();
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
        match sender.try_send_request(*request).await {
            Ok(response) => match strict::check_response(&response) {
                Ok(()) => Ok(response.map(PooledBody::Http2)),
                // Ambiguous framing is refused whole (502), never passed on (HTTP/1.1
                // responses are held to it by their parser).
                Err(why) => Err((
                    UpstreamError::Exchange(Box::new(ExchangeError::Malformed(why))),
                    None,
                )),
            },
            Err(mut error) => {
                let unsent = error.take_message().map(Box::new);
                Err((
                    UpstreamError::Exchange(Box::new(error.into_error())),
                    unsent,
                ))
            }
        }
    }

    /// An idle connection for `key` that the backend has not closed, if there is one.
    fn checkout(&self, key: Key) -> Option<H1Connection> {
        let mut idle = self.inner.own_idle();
        let connections = idle.get_mut(&key)?;
        let now = coarse_clock::now();
        while let Some((mut connection, since)) = connections.pop() {
            if reusable(&mut connection, since, now) {
                return Some(connection);
            }
        }
        None
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

    async fn connect_http1(&self, target: &Target) -> Result<H1Connection, String> {
        let stream = self.tcp(target).await?;
        let io = if target.protocol.is_tls() {
            let tls = super::backend_tls::connect(target, &self.inner.default_tls, stream).await?;
            BackendIo::Tls(Box::new(tls))
        } else {
            BackendIo::Plain(stream)
        };
        Ok(H1Connection::new(io))
    }

    async fn connect_http2(&self, target: &Target) -> Result<Multiplexed, String> {
        let stream = self.tcp(target).await?;
        if target.protocol.is_tls() {
            let tls = super::backend_tls::connect(target, &self.inner.default_tls, stream).await?;
            return handshake_http2(tls, target.endpoint).await;
        }
        handshake_http2(stream, target.endpoint).await
    }
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
    /// The idle connections of the calling thread.
    fn own_idle(&self) -> std::sync::MutexGuard<'_, IdleConnections> {
        let idle = &self.idle[workers::current() % self.idle.len()];
        idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an idle connection, back in the pool since `since`, may carry a request `now`: not
/// idle for too long, and not closed by the backend meanwhile.
fn reusable(connection: &mut H1Connection, since: Duration, now: Duration) -> bool {
    now.saturating_sub(since) < IDLE_TIMEOUT && !connection.is_stale()
}

/// Gives a connection whose exchange ended cleanly back to its pool.
pub struct Checkin {
    pool: Arc<PoolInner>,
    key: Key,
}

impl Checkin {
    fn put(self, connection: H1Connection) {
        let mut idle = self.pool.own_idle();
        let connections = idle.entry(self.key).or_default();
        if connections.len() < MAX_IDLE_PER_ENDPOINT {
            connections.push((connection, coarse_clock::now()));
        }
    }
}

/// A backend's response body.
pub enum PooledBody {
    Http1(H1Body),
    Http2(Incoming),
}

impl PooledBody {
    /// The backend's side of a 101 response: its connection, and the bytes it sent after the
    /// head.
    pub fn into_tunnel(self) -> Option<(BackendIo, Bytes)> {
        match self {
            PooledBody::Http1(body) => body.into_tunnel(),
            PooledBody::Http2(_) => None,
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            PooledBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            PooledBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Http1(body) => body.is_end_stream(),
            PooledBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PooledBody::Http1(body) => body.size_hint(),
            PooledBody::Http2(body) => body.size_hint(),
        }
    }
}
