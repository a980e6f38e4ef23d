//! Connections to backends: one keep-alive pool per endpoint, and a request body that comes
//! back when a connection attempt fails before the body was touched, so that the request can
//! be tried on another endpoint without buffering it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

/// The pooled HTTP client every request to a backend goes through.
pub type UpstreamClient = Client<HttpConnector, ReclaimableBody>;

/// Idle keep-alive connections are closed after this long (nginx's upstream keepalive_timeout
/// is 60s; backends commonly time out idle connections later than that).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint (nginx benchmarks use `keepalive 256`).
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// A client that pools connections per endpoint address.
pub fn client(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
        .set_host(false)
        .build(connector)
}

/// The client's request body. If the request is dropped before its body was first polled
/// (the connection to the endpoint failed), the body is sent back through `reclaim`.
pub struct ReclaimableBody {
    inner: Option<Incoming>,
    reclaim: Option<oneshot::Sender<Incoming>>,
}

impl ReclaimableBody {
    /// Wraps `body`; returns the wrapper and where the body comes back if it is never used.
    pub fn new(body: Incoming) -> (Self, oneshot::Receiver<Incoming>) {
        let (reclaim, reclaimed) = oneshot::channel();
        let body = Self {
            inner: Some(body),
            reclaim: Some(reclaim),
        };
        (body, reclaimed)
    }
}

impl Body for ReclaimableBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Once polled, the body may be partly sent: it can no longer be handed back.
        self.reclaim = None;
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
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

impl Drop for ReclaimableBody {
    fn drop(&mut self) {
        if let (Some(reclaim), Some(inner)) = (self.reclaim.take(), self.inner.take()) {
            // The receiver is gone only when the request already finished: nothing to do.
            let _ = reclaim.send(inner);
        }
    }
}
