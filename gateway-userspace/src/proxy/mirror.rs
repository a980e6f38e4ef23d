//! Sending the copies of mirrored requests. A copy never slows or fails the original: it is
//! sent from its own task, at most `MAX_IN_FLIGHT` at a time (more are dropped and counted), and
//! its body is fed from the original's frames through a queue that the original never waits
//! on; all copies' queues share `QUEUED_BYTES`, and a copy whose frame does not fit is
//! abandoned (its backend sees the body cut short).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header;
use hyper::{Request, Uri, Version};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Semaphore, mpsc};

use super::request_body::RequestBody;
use super::resolve::Resolver;
use super::upstream::{Target, UpstreamPool};
use crate::policy::service_url::ServiceUrl;
use crate::policy::template::RequestView;
use crate::policy::{Mirror, MirrorTo};

/// Copies on their way at once; past it, copies are dropped.
const MAX_IN_FLIGHT: usize = 1024;
/// Body bytes queued for all copies at once.
const QUEUED_BYTES: usize = 32 << 20;

/// The copies' outcomes, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct MirrorCounters {
    pub sent: Counter,
    pub dropped: Counter,
    pub failed: Counter,
}

pub struct Mirrors {
    in_flight: Arc<Semaphore>,
    /// Body bytes queued for copies now.
    queued: Arc<AtomicUsize>,
    counters: MirrorCounters,
}

/// What a copy needs besides the request.
pub struct Sending<'a> {
    pub pool: &'a UpstreamPool,
    pub resolver: &'a Arc<Resolver>,
    pub connect_timeout: Duration,
    /// How long a copy may take, answer included.
    pub timeout: Duration,
}

impl Mirrors {
    pub fn new(counters: MirrorCounters) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            queued: Arc::default(),
            counters,
        }
    }

    /// Starts a copy of the request (`request` and `target` as they go to the backend) for
    /// each mirror whose share it falls in. With `body`, the copies' bodies are fed through
    /// the returned feeds, which the original's body fills as it streams.
    pub fn start(
        &self,
        sending: Sending<'_>,
        mirrors: &[Mirror],
        request: &RequestView<'_>,
        target: &Uri,
        body: bool,
    ) -> Vec<BodyFeed> {
        let mut feeds = Vec::new();
        for mirror in mirrors.iter().filter(|m| m.chosen()) {
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                self.counters.dropped.inc();
                continue;
            };
            let mut headers = request.headers.clone();
            let (destination, uri) = match &mirror.to {
                MirrorTo::Backend(backend) => match backend.next_endpoint() {
                    Some(endpoint) => (Destination::Endpoint(endpoint), target.clone()),
                    None => {
                        self.counters.dropped.inc();
                        continue;
                    }
                },
                MirrorTo::Url { url, path, host } => {
                    let Ok(uri) = single_slashes(&path.render(request)).parse::<Uri>() else {
                        self.counters.failed.inc();
                        continue;
                    };
                    headers.insert(header::HOST, host.clone());
                    (Destination::Url(url.clone()), uri)
                }
            };
            let copy_body = if body && mirror.body {
                let (feed, copy) = body_copy(self.queued.clone());
                feeds.push(feed);
                RequestBody::Copy(copy)
            } else {
                headers.remove(header::CONTENT_LENGTH);
                headers.remove(header::TRANSFER_ENCODING);
                RequestBody::Empty
            };
            let mut copy = Request::new(copy_body);
            *copy.method_mut() = request.method.clone();
            *copy.uri_mut() = uri;
            *copy.headers_mut() = headers;
            *copy.version_mut() = Version::HTTP_11;
            let resolver = sending.resolver.clone();
            let connect_timeout = sending.connect_timeout;
            let pool = sending.pool.clone();
            let counters = self.counters.clone();
            let timeout = sending.timeout;
            tokio::spawn(async move {
                let _permit = permit;
                let exchange = async {
                    let target = destination
                        .target(&resolver, connect_timeout)
                        .await
                        .map_err(super::upstream::UpstreamError::Connect)?;
                    let response = pool
                        .send(&target, Box::new(copy), None)
                        .await
                        .map_err(|(e, _)| e)?;
                    // Read to its end, so that the connection goes back to its pool.
                    let mut body = response.into_body();
                    while let Some(frame) = body.frame().await {
                        frame.map_err(super::upstream::UpstreamError::Exchange)?;
                    }
                    Ok::<_, super::upstream::UpstreamError>(())
                };
                match tokio::time::timeout(timeout, exchange).await {
                    Ok(Ok(())) => {
                        counters.sent.inc();
                    }
                    Ok(Err(error)) => {
                        counters.failed.inc();
                        tracing::debug!(?error, "a mirrored request failed");
                    }
                    Err(_) => {
                        counters.failed.inc();
                        tracing::debug!("a mirrored request timed out");
                    }
                }
            });
        }
        feeds
    }
}

/// `https://host/$request_uri` renders `//path`: runs of `/` in the path become one.
fn single_slashes(rendered: &str) -> String {
    let (path, query) = rendered.split_at(rendered.find('?').unwrap_or(rendered.len()));
    let mut out = String::with_capacity(rendered.len() + 1);
    for c in std::iter::once('/').chain(path.chars()) {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out + query
}

/// Where one copy goes: an endpoint chosen now, or a URL's host resolved by the copy's task.
enum Destination {
    Endpoint(SocketAddr),
    Url(ServiceUrl),
}

impl Destination {
    async fn target(
        self,
        resolver: &Resolver,
        connect_timeout: Duration,
    ) -> Result<Target, String> {
        Ok(match self {
            Destination::Endpoint(endpoint) => Target::plain(endpoint, connect_timeout),
            Destination::Url(url) => resolver.target(&url, connect_timeout).await?,
        })
    }
}

/// The original body's side of a copy: frames are offered, never waited for.
pub struct BodyFeed {
    frames: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    complete: Arc<AtomicBool>,
}

impl BodyFeed {
    /// Offers a frame; `false` when the copies' queues are full or the copy is gone (then it
    /// is abandoned by dropping its feed).
    pub fn offer(&self, data: &Bytes) -> bool {
        let before = self.queued.fetch_add(data.len(), Ordering::Relaxed);
        if before + data.len() > QUEUED_BYTES || self.frames.send(data.clone()).is_err() {
            self.queued.fetch_sub(data.len(), Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The original body ended: the copy's ends too (rather than being cut short).
    pub fn finish(self) {
        self.complete.store(true, Ordering::Relaxed);
    }
}

/// The copy's body: the frames fed to it; cut short (an error) when its feed is dropped before
/// the original ended.
pub struct CopyBody {
    frames: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
    complete: Arc<AtomicBool>,
}

fn body_copy(queued: Arc<AtomicUsize>) -> (BodyFeed, CopyBody) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let complete = Arc::new(AtomicBool::new(false));
    (
        BodyFeed {
            frames: sender,
            queued: queued.clone(),
            complete: complete.clone(),
        },
        CopyBody {
            frames: receiver,
            queued,
            complete,
        },
    )
}

impl Drop for CopyBody {
    /// What is still queued no longer counts against the copies' bytes.
    fn drop(&mut self) {
        self.frames.close();
        while let Ok(data) = self.frames.try_recv() {
            self.queued.fetch_sub(data.len(), Ordering::Relaxed);
        }
    }
}

/// A copy abandoned because it fell behind the original.
#[derive(Debug, thiserror::Error)]
#[error("the mirrored copy fell behind its original and was abandoned")]
pub struct Abandoned;

impl Body for CopyBody {
    type Data = Bytes;
    type Error = Abandoned;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Abandoned>>> {
        match self.frames.poll_recv(cx) {
            Poll::Ready(Some(data)) => {
                self.queued.fetch_sub(data.len(), Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) if self.complete.load(Ordering::Relaxed) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(Abandoned))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rendered_mirror_paths_have_single_slashes() {
        assert_eq!(super::single_slashes("//a//b/?x=//y"), "/a/b/?x=//y");
        assert_eq!(super::single_slashes("?q"), "/?q");
    }
}
