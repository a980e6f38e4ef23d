//! What operators see of each request: Prometheus metrics and an access log line, both made
//! from one record per exchange that is completed when the response body has been sent (or
//! the client went away).

pub mod access_log;
pub mod metrics;
mod request_id;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

pub use access_log::{AccessLog, LogFormat, LogTarget};
pub use metrics::Metrics;
pub use request_id::request_id;

use crate::proxy::{BodyProgress, Connection, ProxyBody};
use crate::snapshot::{Backend, RouteIdentity};

/// Where finished exchanges go.
pub struct Observer {
    pub metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
}

impl Observer {
    pub fn new(metrics: Arc<Metrics>, access_log: Option<AccessLog>) -> Self {
        Self {
            metrics,
            access_log,
        }
    }

    /// Whether exchanges are logged (else only counted).
    pub fn logs_exchanges(&self) -> bool {
        self.access_log.is_some()
    }

    fn finish(&self, mut exchange: Box<Exchange>) {
        self.metrics.record(&exchange);
        if let Some(log) = &self.access_log {
            let now = SystemTime::now();
            exchange.time = now.checked_sub(exchange.duration).unwrap_or(now);
            log.write(Record::Http(exchange), &self.metrics.access_log_dropped);
        }
    }

    /// Counts and logs a finished layer 4 session.
    pub fn finish_session(&self, session: Box<StreamSession>) {
        self.metrics.record_session(&session);
        if let Some(log) = &self.access_log {
            log.write(Record::Stream(session), &self.metrics.access_log_dropped);
        }
    }
}

/// What an access log line is made from.
pub enum Record {
    Http(Box<Exchange>),
    Stream(Box<StreamSession>),
}

/// One layer 4 session (a relayed TCP connection, a UDP flow) and how it ended.
pub struct StreamSession {
    pub time: SystemTime,
    /// `tcp`, `udp`, or `tls` (passed through).
    pub protocol: &'static str,
    pub client: SocketAddr,
    /// The address the client reached.
    pub listener: SocketAddr,
    /// The TLS server name it was routed by (passthrough).
    pub server_name: Option<String>,
    /// Who asked for the route (`configmap ns/name port 9000`, `ingress ns/name`).
    pub route: String,
    pub backend: Option<Arc<Backend>>,
    pub upstream: Option<SocketAddr>,
    /// Bytes from the client, and to it.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub end: SessionEnd,
}

impl StreamSession {
    /// The record of a session of `protocol` from `client` to `listener` for `route`, begun
    /// now; nothing moved yet.
    pub fn begin(
        protocol: &'static str,
        (client, listener): (SocketAddr, SocketAddr),
        route: String,
    ) -> Self {
        Self {
            time: SystemTime::now(),
            protocol,
            client,
            listener,
            server_name: None,
            route,
            backend: None,
            upstream: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            end: SessionEnd::Closed,
        }
    }
}

/// How a layer 4 session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// Both sides finished (TCP), or the flow went idle (UDP).
    Closed,
    /// Nothing either way for the idle timeout (TCP).
    IdleTimeout,
    /// The client or the backend broke the connection.
    Reset,
    /// No backend endpoint could be connected.
    ConnectFailed,
    /// The route has no ready endpoint.
    NoEndpoints,
    /// The UDP session table was full.
    TableFull,
}

impl SessionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::IdleTimeout => "idle_timeout",
            Self::Reset => "reset",
            Self::ConnectFailed => "connect_failed",
            Self::NoEndpoints => "no_endpoints",
            Self::TableFull => "table_full",
        }
    }

    /// The status nginx's stream module logs for it.
    pub fn status(self) -> u16 {
        match self {
            Self::Closed | Self::IdleTimeout | Self::Reset => 200,
            Self::ConnectFailed | Self::NoEndpoints => 502,
            Self::TableFull => 503,
        }
    }
}

/// One request and its answer.
pub struct Exchange {
    pub started: Instant,
    /// When it began on the wall clock, set when it is logged (only the log needs it: a
    /// clock read fewer per request without one).
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub connection: Arc<Connection>,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    /// The host the request is for: its authority (HTTP/2 and HTTP/3, absolute-form
    /// targets), else its Host header.
    pub host: Option<HeaderValue>,
    /// Read only for the access log.
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    /// Request line and headers, as they were on the wire (estimated from the parsed request).
    pub request_head_bytes: u64,
    /// How much of the request body was read (the proxy's request body counts into it).
    pub request_body: Arc<BodyProgress>,
    /// The backend the request went to is a canary (`namespace-service-port`).
    pub canary: Option<String>,
    /// Holds the request's place under `limit-connections` until the exchange ends.
    pub in_progress: Option<crate::policy::limit::InProgress>,
    /// The route that served it; empty when none matched.
    pub identity: Arc<RouteIdentity>,
    /// The backend that answered, when one did.
    pub upstream: Option<Upstream>,
    pub status: StatusCode,
    pub response_head_bytes: u64,
    pub response_body_bytes: u64,
    /// How long the whole exchange took, once finished.
    pub duration: Duration,
}

/// What the backend did for one exchange.
pub struct Upstream {
    pub address: SocketAddr,
    pub backend: Arc<Backend>,
    pub status: StatusCode,
    /// When the request was handed to the backend.
    pub sent: Instant,
    /// Until the backend's response headers arrived.
    pub header_time: Duration,
}

impl Exchange {
    /// The record of `request` on `connection`, begun now, for the access log too when `logged`.
    pub fn begin(
        connection: Arc<Connection>,
        request: &Request<impl Body>,
        request_id: HeaderValue,
        logged: bool,
    ) -> Box<Self> {
        let headers = request.headers();
        let logged_field = |name| logged.then(|| headers.get(name).cloned()).flatten();
        // Ended when the record is dropped: after the response, or with an abandoned request.
        connection.clock.request_started();
        Box::new(Self {
            started: Instant::now(),
            time: SystemTime::UNIX_EPOCH,
            request_id,
            connection,
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            host: request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .or_else(|| headers.get(header::HOST).cloned()),
            user_agent: logged_field(header::USER_AGENT),
            referer: logged_field(header::REFERER),
            // "METHOD target HTTP/1.1\r\n", then the headers.
            request_head_bytes: request.method().as_str().len() as u64
                + request
                    .uri()
                    .path_and_query()
                    .map_or(1, |p| p.as_str().len()) as u64
                + 12
                + head_bytes(headers),
            request_body: Arc::default(),
            canary: None,
            in_progress: None,
            identity: Arc::default(),
            upstream: None,
            status: StatusCode::OK,
            response_head_bytes: 0,
            response_body_bytes: 0,
            duration: Duration::ZERO,
        })
    }

    /// Bytes of the request: head and body.
    pub fn request_bytes(&self) -> u64 {
        self.request_head_bytes + self.request_body.bytes()
    }

    /// Bytes of the response: head and body.
    pub fn response_bytes(&self) -> u64 {
        self.response_head_bytes + self.response_body_bytes
    }

    /// From handing the request to the backend until the response ended.
    pub fn upstream_time(&self) -> Option<Duration> {
        let upstream = self.upstream.as_ref()?;
        Some((self.started + self.duration).saturating_duration_since(upstream.sent))
    }

    /// Wraps `response` so that the exchange is recorded when its body has been sent.
    pub fn respond(
        mut self: Box<Self>,
        observer: Arc<Observer>,
        response: Response<ProxyBody>,
    ) -> Response<ObservedBody> {
        self.status = response.status();
        self.response_head_bytes = 17 + head_bytes(response.headers());
        response.map(|inner| ObservedBody {
            inner,
            exchange: Some(self),
            observer,
        })
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.connection.clock.request_ended();
    }
}

/// Approximate size of headers on the wire: `name: value\r\n` each, and the blank line.
fn head_bytes(headers: &HeaderMap) -> u64 {
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    fields as u64 + 2
}

/// A response body that records its exchange when it ends, or when it is dropped unfinished
/// (the client went away).
pub struct ObservedBody {
    inner: ProxyBody,
    exchange: Option<Box<Exchange>>,
    observer: Arc<Observer>,
}

impl ObservedBody {
    fn finish(&mut self) {
        if let Some(mut exchange) = self.exchange.take() {
            exchange.duration = exchange.started.elapsed();
            self.observer.finish(exchange);
        }
    }
}

impl ObservedBody {
    /// The body itself, without reading it (a 101's, which holds the backend's connection);
    /// the exchange is recorded now.
    pub fn into_inner(mut self) -> ProxyBody {
        self.finish();
        std::mem::replace(&mut self.inner, Either::Right(Full::new(Bytes::new())))
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let length = frame.data_ref().map_or(0, |data| data.len() as u64);
                if let Some(exchange) = self.exchange.as_mut() {
                    exchange.response_body_bytes += length;
                }
                // The server stops polling once the body says it ended.
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(_) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
