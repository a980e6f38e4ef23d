//! An HTTP/2 request's body as a `Body` for the forwarding path, and a response written back
//! onto its stream within the client's flow-control window.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use hyper::Response;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderValue};

use crate::observe::ObservedBody;
use crate::proxy::{date, headers};

/// The request body as its DATA frames arrive (h2 holds them to the declared Content-Length),
/// then its trailers. Each frame's bytes are given back to the client's window as they are
/// handed on.
pub struct H2RequestBody {
    stream: RecvStream,
    declared: Option<u64>,
    received: u64,
    data_done: bool,
}

impl H2RequestBody {
    /// The body of a request that declared `declared` bytes.
    pub fn new(stream: RecvStream, declared: Option<u64>) -> Self {
        Self {
            stream,
            declared,
            received: 0,
            data_done: false,
        }
    }
}

impl Body for H2RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let body = self.get_mut();
        if !body.data_done {
            match ready!(body.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = body.stream.flow_control().release_capacity(data.len());
                    body.received += data.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // Whatever the reset's reason, the body is cut short: never forwarded as whole.
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => body.data_done = true,
            }
        }
        match ready!(body.stream.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|trailers| Ok(Frame::trailers(trailers)))),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(declared) => SizeHint::with_exact(declared.saturating_sub(self.received)),
            None => SizeHint::default(),
        }
    }
}

/// Writes `response` onto the request's stream: its head without HTTP/1's connection fields
/// (h2 refuses a message with them), its body as DATA frames no faster than the client's
/// window takes them, its trailers. A client's reset stops it where it is.
pub async fn send_response(
    respond: &mut SendResponse<Bytes>,
    response: Response<ObservedBody>,
) -> Result<(), h2::Error> {
    let (mut head, body) = response.into_parts();
    let fields = &mut head.headers;
    headers::remove_hop_by_hop(fields, None);
    if !fields.contains_key(header::DATE) {
        fields.insert(header::DATE, date::now());
    }
    let ended = body.is_end_stream();
    if !ended
        && !fields.contains_key(header::CONTENT_LENGTH)
        && let Some(length) = body.size_hint().exact()
    {
        fields.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let mut send = match respond.send_response(Response::from_parts(head, ()), ended) {
        Ok(send) => send,
        Err(error) => {
            respond.send_reset(Reason::INTERNAL_ERROR);
            return Err(error);
        }
    };
    if ended {
        return Ok(());
    }
    let mut body = pin!(body);
    loop {
        let frame = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Ok(frame)),
            Poll::Pending => reset(&mut send, cx).map(Err),
        })
        .await?;
        let frame = match frame {
            None => return send.send_data(Bytes::new(), true),
            Some(Ok(frame)) => frame,
            // The backend's body broke off: the client must not take it for a whole one.
            Some(Err(_)) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let ended = body.is_end_stream();
                if !data.is_empty() {
                    room(&mut send).await?;
                }
                send.send_data(data, ended)?;
                if ended {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(mut trailers) = frame.into_trailers() {
                    headers::remove_hop_by_hop(&mut trailers, None);
                    send.reserve_capacity(0);
                    return send.send_trailers(trailers);
                }
            }
        }
    }
}

/// Pending until the client resets the stream; then the reset, as an error.
fn reset(send: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> Poll<h2::Error> {
    send.poll_reset(cx)
        .map(|reset| reset.map_or_else(|error| error, h2::Error::from))
}

/// Waits until the stream may send: window from the client, and room in the connection's send
/// buffer. A slow reader holds the backend's body back instead of the gateway buffering it.
/// Only one byte is claimed ahead: h2 raises the claim to what `send_data` buffers, and a
/// larger claim would pin the connection's window against other streams.
async fn room(send: &mut SendStream<Bytes>) -> Result<(), h2::Error> {
    send.reserve_capacity(1);
    poll_fn(|cx| {
        while send.capacity() == 0 {
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(error)),
                // The stream can send no more: reset, or closed by the connection.
                None => return Poll::Ready(Err(Reason::STREAM_CLOSED.into())),
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}
