//! The client's connection as the HTTP/1 server holds it: plain or TLS, shared between the
//! connection's task (which writes responses) and a request body on its way to a backend
//! (which reads). Each side locks it only inside one poll, never across an await.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::proxy::head_fields::head_read_room;
use crate::proxy::stream::Stream;

/// How much is read from a client at once.
const READ_SIZE: usize = 8 * 1024;

/// A client's stream.
pub type ClientStream = Stream<TlsStream<TcpStream>>;

/// The stream, shared by the connection's task and a request body.
#[derive(Clone)]
pub struct SharedStream(Arc<Mutex<ClientStream>>);

impl SharedStream {
    pub fn new(stream: ClientStream) -> Self {
        Self(Arc::new(Mutex::new(stream)))
    }

    fn lock(&self) -> MutexGuard<'_, ClientStream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream itself, once nothing else holds it (for a tunnel).
    pub fn into_inner(self) -> Option<ClientStream> {
        Arc::into_inner(self.0).map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The reading side of a connection: the stream and the bytes read from it that no request
/// has taken yet (the rest of a head, a body, pipelined requests).
pub struct ClientReader {
    pub stream: SharedStream,
    pub buffer: BytesMut,
}

impl ClientReader {
    pub fn new(stream: SharedStream) -> Self {
        Self {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// Reads more into the buffer; `Ok(0)` when the client closed its side. While nothing
    /// arrives, an empty buffer's memory is given back (nginx's way: a waiting connection
    /// holds no buffer).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.poll_fill_room(cx, READ_SIZE)
    }

    /// Reads more of a head: into a small buffer when there is none yet (see [`head_read_room`]).
    pub async fn fill_head(&mut self) -> io::Result<usize> {
        let room = head_read_room(&self.buffer, READ_SIZE);
        std::future::poll_fn(|cx| self.poll_fill_room(cx, room)).await
    }

    fn poll_fill_room(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<usize>> {
        let mut stream = self.stream.lock();
        // A plain connection waits for its next bytes without a buffer, rather than take one
        // and give it back on every wait (TLS may hold bytes its socket no longer shows).
        if self.buffer.is_empty()
            && let Stream::Plain(socket) = &*stream
            && socket.poll_read_ready(cx)?.is_pending()
        {
            self.buffer = BytesMut::new();
            return Poll::Pending;
        }
        self.buffer.reserve(room);
        let polled = {
            let mut read = ReadBuf::uninit(self.buffer.spare_capacity_mut());
            let polled = Pin::new(&mut *stream).poll_read(cx, &mut read);
            polled.map_ok(|()| read.filled().len())
        };
        let n = match polled {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => {
                if self.buffer.is_empty() {
                    self.buffer = BytesMut::new();
                }
                return Poll::Pending;
            }
        };
        // SAFETY: poll_read initialized the first `n` bytes of the spare capacity.
        unsafe { self.buffer.set_len(self.buffer.len() + n) };
        Poll::Ready(Ok(n))
    }

    pub async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.lock().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}

/// A stream whose first bytes were already read: they are read again first (a connection
/// handed to the HTTP/2 server after its preface was seen).
pub struct Replayed<S> {
    first: Bytes,
    inner: S,
}

impl<S> Replayed<S> {
    pub fn new(first: Bytes, inner: S) -> Self {
        Self { first, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.first.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.first.len().min(buf.remaining());
        buf.put_slice(&this.first.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
