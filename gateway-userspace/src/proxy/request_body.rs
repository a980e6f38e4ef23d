//! The client's request body on its way to a backend: counted as it streams (request size in
//! metrics and logs), cut off past `proxy-body-size`, cut off when the client pauses longer than
//! the client body timeout, and watched for a backend that stops reading it
//! (`proxy-send-timeout`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::h1_server::H1RequestBody;
use super::h2_server::H2RequestBody;
use super::h3_server::H3RequestBody;
use super::mirror::{Abandoned, BodyFeed, CopyBody};

/// How far a request body has gone, shared with the exchange record and the send watchdog.
#[derive(Debug)]
pub struct BodyProgress {
    started: Instant,
    bytes: AtomicU64,
    /// When the backend's connection last asked for more, in ms since `started`.
    last_read: AtomicU64,
    finished: AtomicBool,
    exceeded: AtomicBool,
    client_timed_out: AtomicBool,
    client_failed: AtomicBool,
}

impl Default for BodyProgress {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            last_read: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            exceeded: AtomicBool::new(false),
            client_timed_out: AtomicBool::new(false),
            client_failed: AtomicBool::new(false),
        }
    }
}

impl BodyProgress {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the body went past the route's limit (the answer is then 413).
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Whether the client paused its body longer than the client body timeout (then 408).
    pub fn client_timed_out(&self) -> bool {
        self.client_timed_out.load(Ordering::Relaxed)
    }

    /// Whether reading the client's body failed: malformed chunked framing, or cut short.
    pub fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Relaxed)
    }

    /// Resolves when the body is unfinished and has not been read for `timeout`; never once
    /// it has been read to its end.
    pub async fn stalled(&self, timeout: Duration) {
        loop {
            if self.finished.load(Ordering::Relaxed) {
                return std::future::pending().await;
            }
            let idle_since = Duration::from_millis(self.last_read.load(Ordering::Relaxed));
            let idle = self.started.elapsed().saturating_sub(idle_since);
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }
}

/// A client's request body as it arrives: read by the gateway's HTTP/1 server, or an HTTP/2
/// or HTTP/3 stream's.
pub enum ClientBody {
    Http1(H1RequestBody),
    Http2(H2RequestBody),
    // Boxed: its stream state is four times the size of the others.
    Http3(Box<H3RequestBody>),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Http3(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::Http2(body) => body.is_end_stream(),
            ClientBody::Http3(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Http2(body) => body.size_hint(),
            ClientBody::Http3(body) => body.size_hint(),
        }
    }
}

/// The body sent to a backend: the client's, or none (a retried request without a body, an
/// error page request), or a mirrored copy of a client's.
pub enum RequestBody {
    Client {
        inner: ClientBody,
        progress: Arc<BodyProgress>,
        limit: Option<u64>,
        idle: ClientPause,
        /// The copies of mirrored requests, fed with each frame.
        feeds: Vec<BodyFeed>,
    },
    Empty,
    Copy(CopyBody),
}

/// The timer of a client's pause in sending its body, armed only while the body waits for it.
pub struct ClientPause {
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl ClientPause {
    /// Whether the client has made the body wait for `timeout`; arms the timer on the first
    /// wait after bytes arrived.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            timer.as_mut().reset(deadline);
            self.waiting = true;
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

/// A body longer than the route allows.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("the request body is larger than the route's limit")]
    TooLarge,
    #[error("the client paused its request body for longer than the client body timeout")]
    ClientTimeout,
    #[error("reading the client's body: {0}")]
    Client(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Abandoned(#[from] Abandoned),
}

impl RequestBody {
    /// The client's `inner`, counted into `progress`, refused past `limit` bytes and when the
    /// client pauses for `timeout`, and copied into `feeds`.
    pub fn new(
        inner: ClientBody,
        progress: Arc<BodyProgress>,
        limit: Option<u64>,
        timeout: Duration,
        feeds: Vec<BodyFeed>,
    ) -> Self {
        if inner.is_end_stream() {
            progress.finished.store(true, Ordering::Relaxed);
        }
        Self::Client {
            inner,
            progress,
            limit,
            idle: ClientPause {
                timeout,
                timer: None,
                waiting: false,
            },
            feeds,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let (inner, progress, limit, idle, feeds) = match self.get_mut() {
            Self::Client {
                inner,
                progress,
                limit,
                idle,
                feeds,
            } => (inner, progress, limit, idle, feeds),
            Self::Empty => return Poll::Ready(None),
            Self::Copy(copy) => {
                return Pin::new(copy).poll_frame(cx).map_err(Into::into);
            }
        };
        progress.last_read.store(
            progress.started.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let length = frame.data_ref().map_or(0, |d| d.len() as u64);
                let total = progress.bytes.fetch_add(length, Ordering::Relaxed) + length;
                if limit.is_some_and(|limit| total > limit) {
                    progress.exceeded.store(true, Ordering::Relaxed);
                    feeds.clear();
                    return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                }
                if let Some(data) = frame.data_ref() {
                    feeds.retain(|feed| feed.offer(data));
                }
                if inner.is_end_stream() {
                    progress.finished.store(true, Ordering::Relaxed);
                    feeds.drain(..).for_each(BodyFeed::finish);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                progress.client_failed.store(true, Ordering::Relaxed);
                feeds.clear();
            }
            Poll::Ready(None) => {
                progress.finished.store(true, Ordering::Relaxed);
                feeds.drain(..).for_each(BodyFeed::finish);
            }
            Poll::Pending => {
                if idle.expired(cx) {
                    progress.client_timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(RequestBodyError::ClientTimeout)));
                }
                return Poll::Pending;
            }
        }
        idle.waiting = false;
        polled.map(|frame| frame.map(|result| result.map_err(RequestBodyError::Client)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Client { inner, .. } => inner.is_end_stream(),
            Self::Empty => true,
            Self::Copy(copy) => copy.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Client { inner, .. } => inner.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
            Self::Copy(copy) => copy.size_hint(),
        }
    }
}
