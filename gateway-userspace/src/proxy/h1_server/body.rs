//! A client's request body, read from its connection by the body itself while it streams to a
//! backend. The body holds the connection's reader meanwhile and hands it back at the body's
//! end, with whatever the client sent after it (the next, pipelined request). A body dropped
//! before its end keeps the reader: the connection cannot find its next request and closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{Notify, oneshot};

use super::io::ClientReader;
use crate::proxy::chunked::Delimited;

/// The body of one HTTP/1 request.
pub struct H1RequestBody {
    reader: Option<ClientReader>,
    framing: Delimited,
    back: Option<oneshot::Sender<ClientReader>>,
    /// Told when the body first waits for the client, which expects `100 Continue` first.
    wants_continue: Option<Arc<Notify>>,
}

impl H1RequestBody {
    /// A request without a body.
    pub fn empty() -> Self {
        Self {
            reader: None,
            framing: Delimited::Length(0),
            back: None,
            wants_continue: None,
        }
    }

    /// The body delimited by `framing`, read through `reader`, which goes to `back` at its
    /// end.
    pub fn new(
        reader: ClientReader,
        framing: Delimited,
        back: oneshot::Sender<ClientReader>,
        wants_continue: Option<Arc<Notify>>,
    ) -> Self {
        Self {
            reader: Some(reader),
            framing,
            back: Some(back),
            wants_continue,
        }
    }

    fn finish(&mut self) {
        if let (Some(reader), Some(back)) = (self.reader.take(), self.back.take()) {
            let _ = back.send(reader);
        }
    }

    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.reader = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for H1RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if this.framing.is_done() {
                this.finish();
                return Poll::Ready(None);
            }
            let Some(reader) = this.reader.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.take(&mut reader.buffer) {
                Ok(Some(data)) => {
                    if this.framing.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) if this.framing.is_done() => continue,
                Ok(None) => {}
                Err(_) => {
                    let broken =
                        io::Error::new(io::ErrorKind::InvalidData, "a broken chunked body");
                    return this.fail(broken);
                }
            }
            if let Some(wants_continue) = this.wants_continue.take() {
                wants_continue.notify_one();
            }
            match ready!(reader.poll_fill(cx)) {
                Ok(0) => {
                    let cut =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "the body was cut short");
                    return this.fail(cut);
                }
                Ok(_) => {}
                Err(error) => return this.fail(error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done() || self.reader.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Delimited::Length(left) => SizeHint::with_exact(left),
            Delimited::Chunked(_) => SizeHint::default(),
        }
    }
}
