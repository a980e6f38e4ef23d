//! Connections to backends: one keep-alive pool per endpoint, of HTTP/1.1 connections driven
//! directly (no generic client in between). A connection goes back to its pool when the
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
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;

/// Idle keep-alive connections are closed after this long (nginx's upstream keepalive_timeout
/// is 60s; backends commonly time out idle connections later than that).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint (nginx benchmarks use `keepalive 256`).
const MAX_IDLE_PER_ENDPOINT: usize = 256;

use super::request_body::RequestBody;

type Sender = http1::SendRequest<RequestBody>;

/// Why a request did not get a response.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, timed out).
    Connect(String),
    /// The connection failed while the request was on it.
    Exchange(hyper::Error),
}

/// The pools of every endpoint.
#[derive(Clone)]
pub struct UpstreamPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    idle: Mutex<HashMap<SocketAddr, Vec<(Sender, Instant)>>>,
    connect_timeout: Duration,
    counters: ReuseCounters,
}

/// Requests sent on a pooled connection, and on a new one.
#[derive(Clone, Debug, Default)]
pub struct ReuseCounters {
    pub reused: Counter,
    pub new: Counter,
}

impl UpstreamPool {
    /// An empty pool; a background task closes connections idle for too long.
    pub fn new(connect_timeout: Duration, counters: ReuseCounters) -> Self {
        let pool = Self {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(HashMap::new()),
                connect_timeout,
                counters,
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
            }
        });
        pool
    }

    /// Sends `request` to `endpoint`. On failure, the request comes back when it was never
    /// written to a connection (so it can go to another endpoint).
    pub async fn send(
        &self,
        endpoint: SocketAddr,
        mut request: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, (UpstreamError, Option<Request<RequestBody>>)> {
        // A pooled connection may have been closed by the backend while idle: then the request
        // is tried once more on a new connection.
        let mut pooled = self.checkout(endpoint).await;
        loop {
            let reused = pooled.is_some();
            let mut sender = match pooled.take() {
                Some(sender) => sender,
                None => match self.connect(endpoint).await {
                    Ok(sender) => sender,
                    Err(reason) => return Err((UpstreamError::Connect(reason), Some(request))),
                },
            };
            let counter = match reused {
                true => &self.inner.counters.reused,
                false => &self.inner.counters.new,
            };
            counter.inc();
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.pooled(endpoint, sender, response)),
                // Unsent on a reused connection: the next turn connects afresh.
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    unsent => return Err((UpstreamError::Exchange(error.into_error()), unsent)),
                },
            }
        }
    }

    /// A ready idle connection to `endpoint`, if there is one.
    async fn checkout(&self, endpoint: SocketAddr) -> Option<Sender> {
        loop {
            let (mut sender, since) = {
                let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(&endpoint)?.pop()?
            };
            // A returned connection becomes ready as soon as its task has seen the response end.
            if since.elapsed() < IDLE_TIMEOUT && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self, endpoint: SocketAddr) -> Result<Sender, String> {
        let stream = tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| format!("timed out after {:?}", self.inner.connect_timeout))?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
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

    /// The response, with its connection going back to the pool when the body ends.
    fn pooled(
        &self,
        endpoint: SocketAddr,
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
                endpoint,
                sender,
            });
            if body.is_end_stream() {
                body.check_in();
            }
        }
        Response::from_parts(parts, body)
    }
}

impl PoolInner {
    fn put(&self, endpoint: SocketAddr, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let senders = idle.entry(endpoint).or_default();
        if senders.len() < MAX_IDLE_PER_ENDPOINT {
            senders.push((sender, Instant::now()));
        }
    }
}

struct Checkin {
    pool: Arc<PoolInner>,
    endpoint: SocketAddr,
    sender: Sender,
}

/// A backend's response body; its end returns the connection to the pool.
pub struct PooledBody {
    inner: Option<Incoming>,
    checkin: Option<Checkin>,
}

impl PooledBody {
    fn check_in(&mut self) {
        if let Some(Checkin {
            pool,
            endpoint,
            sender,
        }) = self.checkin.take()
        {
            pool.put(endpoint, sender);
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
