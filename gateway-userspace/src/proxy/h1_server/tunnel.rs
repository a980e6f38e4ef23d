//! An upgraded connection (WebSocket): bytes copied both ways between the client and the
//! backend's connection until either side closes, or nothing has moved either way for the
//! route's read timeout (as ingress-nginx closes an idle WebSocket after proxy-read-timeout).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::io::ClientStream;
use crate::proxy::upstream::BackendIo;

/// How long a tunnel may carry nothing: set by the proxy on a 101 response.
#[derive(Clone, Copy, Debug)]
pub struct TunnelIdle(pub Duration);

/// Runs the tunnel between `client` and the backend's connection (after the bytes each sent
/// early: the client's behind its upgrade request, the backend's behind its 101).
pub async fn run(
    client: ClientStream,
    client_early: BytesMut,
    (mut backend, backend_early): (BackendIo, Bytes),
    idle: Duration,
) {
    let started = Instant::now();
    let mut client = Touched::new(client, started);
    let early = async {
        if !backend_early.is_empty() {
            client.write_all(&backend_early).await?;
        }
        if !client_early.is_empty() {
            backend.write_all(&client_early).await?;
        }
        std::io::Result::Ok(())
    };
    if let Err(error) = early.await {
        tracing::debug!(%error, "upgraded connection ended with an error");
        return;
    }
    let last_active = client.last_active.clone();
    let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
    tokio::pin!(copy);
    loop {
        let quiet = started
            .elapsed()
            .saturating_sub(Duration::from_millis(last_active.load(Ordering::Relaxed)));
        let Some(left) = idle.checked_sub(quiet).filter(|left| !left.is_zero()) else {
            tracing::debug!(seconds = idle.as_secs(), "upgraded connection idle: closed");
            return;
        };
        tokio::select! {
            result = &mut copy => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep(left) => {}
        }
    }
}

/// The client side of a tunnel, noting when bytes last moved through it (either way: the
/// tunnel's every byte passes here).
struct Touched<T> {
    inner: T,
    started: Instant,
    /// Milliseconds since `started`.
    last_active: Arc<AtomicU64>,
}

impl<T> Touched<T> {
    fn new(inner: T, started: Instant) -> Self {
        Self {
            inner,
            started,
            last_active: Arc::default(),
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_active.store(now, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Touched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
