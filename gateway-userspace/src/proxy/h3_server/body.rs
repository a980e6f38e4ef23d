//! An HTTP/3 request's body as a `Body` for the forwarding path, and a response written back
//! onto its stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{HeaderMap, Response};

use crate::observe::ObservedBody;
use crate::proxy::strict::CONNECTION_SPECIFIC;

type RecvStream = RequestStream<h3_quinn::RecvStream, Bytes>;
type SendStream = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// The request body as its DATA frames arrive, held to its declared `Content-Length` (a body
/// of another length is malformed, RFC 9114 4.1.2), then its trailers.
pub struct H3RequestBody {
    stream: RecvStream,
    declared: Option<u64>,
    received: u64,
    /// Read before the request was forwarded (the client's FIN or first bytes often come with
    /// its headers): a request seen to end there is forwarded without a body.
    first: Option<Result<Frame<Bytes>, BodyError>>,
    part: Part,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Data,
    Trailers,
    Done,
}

impl H3RequestBody {
    /// The body of a request that declared `declared` bytes.
    pub fn new(stream: RecvStream, declared: Option<u64>) -> Self {
        Self {
            stream,
            declared,
            received: 0,
            first: None,
            part: Part::Data,
        }
    }

    /// Reads what has arrived already, without waiting, and keeps it for the reader.
    pub fn look_ahead(&mut self, cx: &mut Context<'_>) {
        if let Poll::Ready(first) = Pin::new(&mut *self).poll_frame(cx) {
            self.first = first;
        }
    }

    fn data(&mut self, mut data: impl Buf) -> Result<Bytes, BodyError> {
        let data = data.copy_to_bytes(data.remaining());
        self.received += data.len() as u64;
        match self.declared {
            Some(declared) if self.received > declared => Err(BodyError::Length),
            _ => Ok(data),
        }
    }
}

impl Body for H3RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let body = self.get_mut();
        if let Some(first) = body.first.take() {
            return Poll::Ready(Some(first));
        }
        loop {
            match body.part {
                Part::Data => match body.stream.poll_recv_data(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Some(data))) => {
                        return Poll::Ready(Some(body.data(data).map(Frame::data)));
                    }
                    Poll::Ready(Ok(None)) => {
                        if body
                            .declared
                            .is_some_and(|declared| declared != body.received)
                        {
                            body.part = Part::Done;
                            return Poll::Ready(Some(Err(BodyError::Length)));
                        }
                        body.part = Part::Trailers;
                    }
                    Poll::Ready(Err(error)) => {
                        body.part = Part::Done;
                        return Poll::Ready(Some(Err(BodyError::Stream(error))));
                    }
                },
                Part::Trailers => {
                    let trailers = match body.stream.poll_recv_trailers(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(trailers) => trailers,
                    };
                    body.part = Part::Done;
                    return Poll::Ready(match trailers {
                        Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                        Ok(None) => None,
                        Err(error) => Some(Err(BodyError::Stream(error))),
                    });
                }
                Part::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.part == Part::Done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(declared) => SizeHint::with_exact(declared.saturating_sub(self.received)),
            None => SizeHint::default(),
        }
    }
}

/// Why an HTTP/3 request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body's length is not its Content-Length")]
    Length,
    #[error("the request stream failed: {0}")]
    Stream(h3::error::StreamError),
}

/// Writes `response` onto the request's stream: its head without HTTP/1's connection fields,
/// its body as DATA frames, its trailers, then the end of the stream.
pub async fn send_response(
    stream: &mut SendStream,
    response: Response<ObservedBody>,
) -> Result<(), h3::error::StreamError> {
    let (mut head, body) = response.into_parts();
    strip_connection_fields(&mut head.headers);
    stream.send_response(Response::from_parts(head, ())).await?;
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The backend's body broke off: the client must not take it for a whole one.
            stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
            return Ok(());
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => stream.send_data(data).await?,
            Err(frame) => {
                if let Ok(mut trailers) = frame.into_trailers() {
                    strip_connection_fields(&mut trailers);
                    stream.send_trailers(trailers).await?;
                }
            }
        }
    }
    stream.finish().await
}

/// An HTTP/3 message must not carry them (RFC 9114 4.2).
fn strip_connection_fields(headers: &mut HeaderMap) {
    for name in CONNECTION_SPECIFIC {
        headers.remove(name);
    }
}
