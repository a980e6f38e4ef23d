//! HTTP/1.1 to a backend, spoken by the request's own task: the request head goes out in one
//! write, the response head is parsed with httparse into header values that share its bytes,
//! and the response body is read by the body itself, which hands the connection back to the
//! pool at its end. (hyper's client drives each connection from a task of its own and passes
//! every request and response through channels: in the T1 profile that task's userspace work
//! was a quarter of the proxy's own CPU per request.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::super::chunked::{Chunked, Malformed};
use super::super::head_fields::{self, FieldRanges};
use super::super::headers::Forwarding;
use super::super::request_body::RequestBody;
use super::super::strict::{BodyFraming, FramingFields};
use super::{Checkin, Outbound};
use crate::proxy::stream::Stream;

/// Most header fields a response head may have (hyper's client allows as many).
const MAX_FIELDS: usize = 100;
/// Most bytes a response head may take.
const MAX_HEAD: usize = 64 * 1024;
/// How much is read from the backend at once.
const READ_SIZE: usize = 16 * 1024;

/// A connection to a backend: plain or TLS.
pub type BackendIo = Stream<TlsStream<TcpStream>>;

/// An HTTP/1.1 connection to a backend, idle between exchanges.
pub struct H1Connection {
    io: BackendIo,
    /// Bytes read past the last response (none, unless the backend misbehaves).
    read: BytesMut,
    /// The request head being written.
    write: Vec<u8>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the connection closed before a response")]
    ClosedEarly,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("reading the request body: {0}")]
    RequestBody(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A failed exchange, and the request when none of it was written (so that it can be sent
/// on another connection).
pub struct Failed {
    pub error: ExchangeError,
    pub unsent: Option<Outbound>,
}

impl H1Connection {
    pub fn new(io: BackendIo) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    /// Whether the backend closed the connection (or sent bytes nobody asked for) while it
    /// was idle: it must not carry a request then.
    pub fn is_stale(&mut self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        // Ready means closed, failed, or bytes nobody asked for; Pending is a live, quiet
        // connection.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut buf)
            .is_ready()
    }

    /// Sends `request` and reads the response head. The response's body owns the connection
    /// from then on; `checkin` gets it back when the body ended cleanly and it can be reused.
    pub async fn send(
        mut self,
        mut request: Outbound,
        forwarding: Option<Forwarding<'_>>,
        checkin: Checkin,
    ) -> Result<Response<H1Body>, Failed> {
        let chunked = self.encode_head(&request, forwarding);
        if let Err(error) = self.io.write_all(&self.write).await {
            return Err(Failed {
                error: error.into(),
                unsent: Some(request),
            });
        }
        // A backend may answer before it has read the whole body (a 413, say) and close:
        // its answer is still read.
        let sent = self.write_request(request.body_mut(), chunked).await;
        if let Err(ExchangeError::RequestBody(error)) = sent {
            return Err(Failed {
                error: ExchangeError::RequestBody(error),
                unsent: None,
            });
        }
        let fail = |error| Failed {
            error,
            unsent: None,
        };
        let (response, framing, close) = self.read_head(request.method()).await.map_err(fail)?;
        let reusable = sent.is_ok()
            && framing.is_reusable()
            && response.version() == Version::HTTP_11
            && !close;
        let body = H1Body {
            connection: Some(self),
            framing,
            checkin: reusable.then_some(checkin),
        };
        let mut response = response.map(|()| body);
        response.body_mut().finish_if_empty();
        Ok(response)
    }

    /// The request line and headers, `forwarding`'s too, into `self.write`; whether the body
    /// goes chunked.
    fn encode_head(
        &mut self,
        request: &Request<RequestBody>,
        forwarding: Option<Forwarding<'_>>,
    ) -> bool {
        let out = &mut self.write;
        out.clear();
        out.reserve(384 + request.headers().len() * 48);
        out.extend_from_slice(request.method().as_str().as_bytes());
        out.push(b' ');
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in request.headers() {
            head_fields::write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        if let Some(forwarding) = forwarding {
            forwarding.write_lines(out);
        }
        // A body of unknown length goes chunked; one with a Content-Length as it is.
        let chunked = !request.body().is_end_stream()
            && !request.headers().contains_key(header::CONTENT_LENGTH);
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"\r\n");
        chunked
    }

    async fn write_body(
        &mut self,
        body: &mut RequestBody,
        chunked: bool,
    ) -> Result<(), ExchangeError> {
        if body.is_end_stream() {
            return Ok(());
        }
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .transpose()
            .map_err(|e| ExchangeError::RequestBody(Box::new(e)))?
        {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                let size = format!("{:x}\r\n", data.len());
                self.io.write_all(size.as_bytes()).await?;
                self.io.write_all(&data).await?;
                self.io.write_all(b"\r\n").await?;
            } else {
                self.io.write_all(&data).await?;
            }
        }
        if chunked {
            self.io.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    /// The request's body after its head, and then a flush (for TLS records).
    async fn write_request(
        &mut self,
        body: &mut RequestBody,
        chunked: bool,
    ) -> Result<(), ExchangeError> {
        self.write_body(body, chunked).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Reads until a final response head (1xx heads other than 101 are passed over): the
    /// response, its body's framing, and whether the backend closes the connection after it.
    async fn read_head(
        &mut self,
        method: &Method,
    ) -> Result<(Response<()>, Framing, bool), ExchangeError> {
        loop {
            // Usually empty at first: the response is still on its way.
            if !self.read.is_empty()
                && let Some((response, fields)) = self.parse_head()?
            {
                let status = response.status();
                if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                let framing = framing(method, status, &fields)?;
                return Ok((response, framing, fields.close));
            }
            if self.read.len() >= MAX_HEAD {
                return Err(ExchangeError::Malformed("a response head over 64 KiB"));
            }
            self.read
                .reserve(head_fields::head_read_room(&self.read, READ_SIZE));
            if self.io.read_buf(&mut self.read).await? == 0 {
                return Err(ExchangeError::ClosedEarly);
            }
        }
    }

    /// A complete head from the start of `self.read` (taken out of it), with its
    /// Content-Length when it has one that parses.
    fn parse_head(&mut self) -> Result<Option<Head>, ExchangeError> {
        let mut fields = FieldRanges::default();
        match head_fields::with_room(MAX_FIELDS, |parsed| locate(&self.read, parsed, &mut fields)) {
            Ok(located) => located.map(|l| self.take_head(l, &fields)).transpose(),
            Err(httparse::Error::TooManyHeaders) => {
                Err(ExchangeError::Malformed("more than 100 header fields"))
            }
            Err(_) => Err(ExchangeError::Malformed("the head does not parse")),
        }
    }

    /// Takes the located head out of `self.read`; its header values share its bytes.
    fn take_head(&mut self, located: Located, fields: &FieldRanges) -> Result<Head, ExchangeError> {
        let status = StatusCode::from_u16(located.code)
            .map_err(|_| ExchangeError::Malformed("a bad status code"))?;
        let head = self.read.split_to(located.length).freeze();
        let fields = fields.as_slice();
        let mut headers = HeaderMap::with_capacity(fields.len());
        let mut framing_fields = FramingFields::default();
        for &(name, value) in fields {
            let name = HeaderName::from_bytes(&head[name.0..name.1])
                .map_err(|_| ExchangeError::Malformed("a bad header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value.0..value.1))
                .map_err(|_| ExchangeError::Malformed("a bad header value"))?;
            framing_fields.note(&name, value.as_bytes());
            headers.append(name, value);
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = located.version;
        *response.headers_mut() = headers;
        Ok((response, framing_fields))
    }
}

/// A response head, and the fields its framing and its connection depend on.
type Head = (Response<()>, FramingFields);

/// A response head found in a buffer: where its fields are.
struct Located {
    length: usize,
    code: u16,
    version: Version,
}

/// The complete response head at the start of `buffer`, parsed with room for `parsed` fields,
/// whose ranges go to `fields`.
fn locate<'b>(
    buffer: &'b [u8],
    parsed: &mut [httparse::Header<'b>],
    fields: &mut FieldRanges,
) -> Result<Option<Located>, httparse::Error> {
    let mut parsed = httparse::Response::new(parsed);
    let httparse::Status::Complete(length) = parsed.parse(buffer)? else {
        return Ok(None);
    };
    fields.set(parsed.headers, buffer.as_ptr() as usize);
    Ok(Some(Located {
        length,
        code: parsed.code.unwrap_or(0),
        version: match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        },
    }))
}

/// How a response body is delimited (RFC 9112 6.3).
#[derive(Debug)]
enum Framing {
    Empty,
    Length(u64),
    Chunked(Chunked),
    /// Until the backend closes: the connection cannot be reused.
    UntilClose,
    /// 101: the connection is a tunnel now.
    Upgrade,
}

impl Framing {
    fn is_reusable(&self) -> bool {
        !matches!(self, Framing::UntilClose | Framing::Upgrade)
    }
}

/// How the response to a `method` request with `status` and these fields is delimited. A
/// response whose fields frame it ambiguously is refused whole (the client gets 502), whatever
/// its status, before any of it is read.
fn framing(
    method: &Method,
    status: StatusCode,
    fields: &FramingFields,
) -> Result<Framing, ExchangeError> {
    let declared = fields.framing().map_err(ExchangeError::Malformed)?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Framing::Upgrade);
    }
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    Ok(match (declared, fields.content_length()) {
        (BodyFraming::Chunked, _) => Framing::Chunked(Chunked::default()),
        (BodyFraming::Length(length), _) => Framing::Length(length),
        (BodyFraming::None, Some(_)) => Framing::Empty,
        (BodyFraming::None, None) => Framing::UntilClose,
    })
}

/// A backend's response body, read from its connection.
pub struct H1Body {
    connection: Option<H1Connection>,
    framing: Framing,
    checkin: Option<Checkin>,
}

impl H1Body {
    /// The connection of a 101 response, with the bytes the backend sent after the head.
    pub fn into_tunnel(mut self) -> Option<(BackendIo, Bytes)> {
        if !matches!(self.framing, Framing::Upgrade) {
            return None;
        }
        let connection = self.connection.take()?;
        Some((connection.io, connection.read.freeze()))
    }

    fn finish_if_empty(&mut self) {
        if matches!(self.framing, Framing::Empty) {
            self.finish();
        }
    }

    /// The body has ended: the connection goes back to its pool when it can be reused,
    /// without its buffers (an idle connection holds none; the next exchange takes new ones).
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let (Some(mut connection), Some(checkin)) = (self.connection.take(), self.checkin.take())
        {
            if connection.read.is_empty() {
                connection.read = BytesMut::new();
            }
            connection.write = Vec::new();
            checkin.put(connection);
        }
    }

    /// Reads more from the backend into the connection's buffer; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        connection.read.reserve(READ_SIZE);
        let buf = &mut connection.read;
        let mut read = ReadBuf::uninit(buf.spare_capacity_mut());
        ready!(Pin::new(&mut connection.io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        // SAFETY: poll_read initialized the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Poll::Ready(Ok(n))
    }
}

type BodyResult = Option<Result<Frame<Bytes>, ExchangeError>>;

impl Body for H1Body {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BodyResult> {
        let this = self.get_mut();
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buffered = &mut connection.read;
            match &mut this.framing {
                Framing::Empty | Framing::Upgrade => return Poll::Ready(None),
                Framing::Length(left) if !buffered.is_empty() => {
                    let n = (*left).min(buffered.len() as u64) as usize;
                    let data = buffered.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose if !buffered.is_empty() => {
                    let data = buffered.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(chunked) if !buffered.is_empty() => {
                    let advance = match chunked.advance(buffered) {
                        Ok(advance) => advance,
                        Err(Malformed) => {
                            this.connection = None;
                            let error = ExchangeError::Malformed("a broken chunked body");
                            return Poll::Ready(Some(Err(error)));
                        }
                    };
                    let mut taken = buffered.split_to(advance.consumed).freeze();
                    let done = chunked.is_done();
                    if done {
                        this.finish();
                    }
                    if let Some(range) = advance.data {
                        return Poll::Ready(Some(Ok(Frame::data(taken.split_off(range.start)))));
                    }
                    if done {
                        return Poll::Ready(None);
                    }
                }
                _ => {}
            }
            let n = match ready!(this.poll_fill(cx)) {
                Ok(n) => n,
                Err(error) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            };
            if n == 0 {
                this.connection = None;
                if matches!(this.framing, Framing::UntilClose) {
                    this.framing = Framing::Empty;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(ExchangeError::ClosedEarly)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || matches!(self.framing, Framing::Empty | Framing::Upgrade)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty | Framing::Upgrade => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(lines: &[(&'static str, &str)]) -> FramingFields {
        let mut fields = FramingFields::default();
        for (name, value) in lines {
            fields.note(&HeaderName::from_static(name), value.as_bytes());
        }
        fields
    }

    fn framed(
        method: Method,
        status: u16,
        lines: &[(&'static str, &str)],
    ) -> Result<Framing, String> {
        let status = StatusCode::from_u16(status).unwrap();
        framing(&method, status, &fields(lines)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_response_is_framed_by_its_status_then_its_fields() {
        let get = || Method::GET;
        let length = [("content-length", "5")];
        assert!(matches!(
            framed(get(), 200, &length),
            Ok(Framing::Length(5))
        ));
        let zero = [("content-length", "0")];
        assert!(matches!(framed(get(), 200, &zero), Ok(Framing::Empty)));
        assert!(matches!(framed(get(), 200, &[]), Ok(Framing::UntilClose)));
        let chunked = [("transfer-encoding", "chunked")];
        assert!(matches!(
            framed(get(), 200, &chunked),
            Ok(Framing::Chunked(_))
        ));
        assert!(matches!(
            framed(Method::HEAD, 200, &length),
            Ok(Framing::Empty)
        ));
        assert!(matches!(framed(get(), 304, &length), Ok(Framing::Empty)));
        assert!(matches!(framed(get(), 101, &[]), Ok(Framing::Upgrade)));
    }

    #[test]
    fn an_ambiguous_framing_is_refused_whatever_the_status() {
        let ambiguous: [&[(&'static str, &str)]; 4] = [
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            &[("content-length", "2"), ("content-length", "2")],
            &[("transfer-encoding", "gzip, chunked")],
            &[("content-length", "+2")],
        ];
        for lines in ambiguous {
            for (method, status) in [(Method::GET, 200), (Method::HEAD, 200), (Method::GET, 204)] {
                let framed = framed(method.clone(), status, lines);
                assert!(framed.is_err(), "{method} {status} {lines:?}: {framed:?}");
            }
        }
    }

    #[test]
    fn the_connection_fields_tokens_are_read_in_any_case_and_list() {
        let close = fields(&[("connection", "Keep-Alive"), ("connection", "x, CLOSE ")]);
        assert!(close.close && close.keep_alive);
        let neither = fields(&[("connection", "closed, upgrade")]);
        assert!(!neither.close && !neither.keep_alive);
    }
}
