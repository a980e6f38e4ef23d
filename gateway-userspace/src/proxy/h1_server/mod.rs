//! HTTP/1.1 to clients, spoken by the connection's own task: read a head (strictly, see
//! [`head`]), hand the request to the proxy, write the response, and wait for the next head
//! holding no buffer (nginx's way: an idle connection costs its socket and little else).
//! The connection's phases have their own timeouts: a head must arrive whole within the
//! header timeout from its first byte (or from the connection's start), and an idle
//! connection closes after the keep-alive timeout. A plain connection that opens with the
//! HTTP/2 preface is handed back for HTTP/2, and one that stays idle is handed back to be
//! parked ([`parking`]).

mod body;
pub mod head;
mod io;
mod parking;
mod tunnel;
mod write;

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::{Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, Sleep};

pub use body::H1RequestBody;
pub use io::{ClientStream, Replayed};
pub use parking::{Parked, ParkingLot};
pub use tunnel::TunnelIdle;

use super::boxed::boxed;
use super::chunked::{Chunked, Delimited};
use super::client_clock::Expiry;
use super::request_body::ClientBody;
use super::{Connection, Proxy, ProxyError, forward};
use crate::lifecycle::drain;
use crate::observe::ObservedBody;
use crate::observe::metrics::Metrics;
use crate::proxy::stream::Stream;
use head::{BodyFraming, Head};
use io::{ClientReader, SharedStream};

/// The HTTP/2 preface's length: enough of it tells HTTP/2 from HTTP/1.
const PREFACE_LENGTH: usize = 24;
/// How long a closing connection reads what the client still sends (so that the client
/// reads the last response before the close, not a reset), and how much.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// A plain connection that turned out to speak HTTP/2: its stream and the bytes read from it.
pub struct Http2Preface(pub ClientStream, pub Bytes);

/// How a connection left the HTTP/1 server.
pub enum Served {
    Closed,
    /// It opened with the HTTP/2 preface.
    Http2(Http2Preface),
    /// A plain connection idle for [`parking::PARK_AFTER`], to be parked until its keep-alive
    /// deadline.
    Idle(tokio::net::TcpStream, Instant),
}

/// Why no head came.
enum Ended {
    /// The client closed, or its connection failed.
    Gone,
    /// The drain stopped the gateway while the connection was idle.
    Stopped,
    Expired(Expiry),
    Refused(ProxyError),
    Http2,
    /// Idle long enough to be parked, until this keep-alive deadline.
    Parkable(Instant),
}

/// Serves `connection`'s requests until it closes; hands it back when it opens with the HTTP/2
/// preface and `detect_http2` allows that, or when it is plain and stays idle.
pub async fn serve(
    proxy: &Arc<Proxy>,
    connection: &Arc<Connection>,
    stream: ClientStream,
    detect_http2: bool,
) -> Served {
    let parkable = proxy.parking.is_some() && matches!(stream, Stream::Plain(_));
    let mut writer = SharedStream::new(stream);
    let mut reader = ClientReader::new(writer.clone());
    let mut stopped = pin!(drain::stopped(proxy.drain.watch()));
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    let mut first = true;
    loop {
        let head = next_head(
            &mut reader,
            proxy,
            first && detect_http2,
            first,
            parkable,
            stopped.as_mut(),
            timer.as_mut(),
        )
        .await;
        first = false;
        let exchanged = match head {
            // Boxed: an idle connection's task keeps only the state of waiting for a head.
            Ok(head) => boxed(|| exchange(proxy, connection, &mut writer, reader, head)),
            Err(ended) => {
                let ended = Box::pin(end(proxy, connection, writer, reader, ended));
                return ended.await;
            }
        };
        match exchanged.await {
            After::Next(next) => reader = next,
            After::Close(last) => {
                let closed = Box::pin(close(&mut writer, last));
                closed.await;
                return Served::Closed;
            }
            After::Upgrade(last, response, asked) => {
                let switched = Box::pin(switch_protocols(writer, last, *response, asked));
                switched.await;
                return Served::Closed;
            }
        }
    }
}

/// The connection ends without a request: handed over to HTTP/2 or to be parked, timed out,
/// refused (answered and closed), or gone.
async fn end(
    proxy: &Proxy,
    connection: &Connection,
    mut writer: SharedStream,
    mut reader: ClientReader,
    ended: Ended,
) -> Served {
    match ended {
        Ended::Http2 => {
            let read = std::mem::take(&mut reader.buffer).freeze();
            drop(reader);
            match writer.into_inner() {
                Some(stream) => Served::Http2(Http2Preface(stream, read)),
                None => Served::Closed,
            }
        }
        Ended::Parkable(deadline) => {
            drop(reader);
            match writer.into_inner() {
                Some(Stream::Plain(stream)) => Served::Idle(stream, deadline),
                _ => Served::Closed,
            }
        }
        Ended::Expired(expiry) => {
            let metrics = &proxy.observer.metrics;
            Metrics::labelled(&metrics.connections_closed, "reason", expiry.as_str()).inc();
            tracing::debug!(client = %connection.client, reason = expiry.as_str(),
                "closing the connection");
            Served::Closed
        }
        Ended::Refused(error) => {
            tracing::debug!(client = %connection.client, %error, "request head refused");
            refuse(&mut writer, reader, error).await;
            Served::Closed
        }
        Ended::Gone | Ended::Stopped => Served::Closed,
    }
}

/// What follows an exchange on its connection.
enum After {
    /// The next request, read with this reader.
    Next(ClientReader),
    /// A close, after reading what the client still sends when the reader came back.
    Close(Option<ClientReader>),
    /// A tunnel, once the 101 is written.
    Upgrade(
        Option<ClientReader>,
        Box<Response<ObservedBody>>,
        write::Asked,
    ),
}

/// One request: its body (read by the body itself, which takes the reader along), the proxy's
/// answer, and the response on the wire.
async fn exchange(
    proxy: &Arc<Proxy>,
    connection: &Arc<Connection>,
    writer: &mut SharedStream,
    reader: ClientReader,
    head: Head,
) -> After {
    let Head {
        request,
        body,
        expects_continue,
        keep_alive,
    } = head;
    let mut asked = write::Asked::of(request.method(), request.version(), keep_alive);
    let wants_continue = expects_continue.then(|| Arc::new(Notify::new()));
    let delimited = match body {
        BodyFraming::None => None,
        BodyFraming::Length(length) => Some(Delimited::Length(length)),
        BodyFraming::Chunked => Some(Delimited::Chunked(Chunked::default())),
    };
    // The reader goes with a body, and comes back at the body's end.
    let (body, mut reader, mut returned) = match delimited {
        None => (H1RequestBody::empty(), Some(reader), None),
        Some(delimited) => {
            let (back, returned) = oneshot::channel();
            let body = H1RequestBody::new(reader, delimited, back, wants_continue.clone());
            (body, None, Some(returned))
        }
    };
    let request = request.map(|()| ClientBody::Http1(body));
    let handled = forward::handle(proxy.clone(), connection.clone(), request);
    let Ok(response) = match wants_continue {
        None => handled.await,
        Some(wants_continue) => answering_continue(handled, &wants_continue, writer).await,
    };
    if let Some(waiting) = returned.as_mut() {
        match waiting.try_recv() {
            Ok(back) => {
                reader = Some(back);
                returned = None;
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
            // The body was dropped unread: this connection's next head cannot be found.
            Err(oneshot::error::TryRecvError::Closed) => asked.keep_alive = false,
        }
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return After::Upgrade(reader, Box::new(response), asked);
    }
    let keep_alive = match write::response(writer, response, asked).await {
        Ok(keep_alive) => keep_alive,
        Err(error) => {
            tracing::debug!(client = %connection.client, %error, "writing a response failed");
            return After::Close(None);
        }
    };
    if let Some(returned) = returned {
        // The body may still be on its way to the backend (HTTP/2 streams it on).
        let limits = &proxy.config.client_limits;
        match tokio::time::timeout(limits.body_timeout, returned).await {
            Ok(Ok(back)) => reader = Some(back),
            _ => return After::Close(None),
        }
    }
    match reader {
        Some(reader) if keep_alive => After::Next(reader),
        reader => After::Close(reader),
    }
}

/// Answers a refused head, and closes.
async fn refuse(writer: &mut SharedStream, reader: ClientReader, error: ProxyError) {
    let asked = write::Asked {
        head_only: false,
        version: hyper::Version::HTTP_11,
        keep_alive: false,
    };
    if write::response(writer, error.into_response(), asked)
        .await
        .is_ok()
    {
        close(writer, Some(reader)).await;
    }
}

/// Waits for the next complete head: from the connection's start on its `first` request,
/// else after an idle wait (only then may the drain close it, the keep-alive timeout, or,
/// when `parkable`, the parking lot take it).
async fn next_head(
    reader: &mut ClientReader,
    proxy: &Proxy,
    detect_http2: bool,
    first: bool,
    parkable: bool,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
    mut timer: Pin<&mut Sleep>,
) -> Result<Head, Ended> {
    let limits = &proxy.config.client_limits;
    let mut reading = first || !reader.buffer.is_empty();
    let now = Instant::now();
    let idle_deadline = now + limits.keepalive_timeout;
    let park_at = (parkable && !reading)
        .then_some(now + parking::PARK_AFTER)
        .filter(|park_at| *park_at < idle_deadline);
    let timeout = if reading {
        now + limits.header_timeout
    } else {
        park_at.unwrap_or(idle_deadline)
    };
    timer.as_mut().reset(timeout);
    loop {
        if !reader.buffer.is_empty() {
            if detect_http2 && head::is_http2_preface(&reader.buffer) {
                if reader.buffer.len() >= PREFACE_LENGTH {
                    return Err(Ended::Http2);
                }
            } else if let Some(head) =
                head::parse(&mut reader.buffer, limits).map_err(Ended::Refused)?
            {
                return Ok(head);
            }
        }
        let nothing_yet = reader.buffer.is_empty();
        tokio::select! {
            biased;
            () = stopped.as_mut(), if nothing_yet => return Err(Ended::Stopped),
            () = timer.as_mut() => {
                return Err(match (reading, park_at) {
                    (true, _) => Ended::Expired(Expiry::Header),
                    (false, Some(_)) => Ended::Parkable(idle_deadline),
                    (false, None) => Ended::Expired(Expiry::Idle),
                });
            }
            filled = reader.fill_head() => match filled {
                Ok(0) | Err(_) => return Err(Ended::Gone),
                Ok(_) if !reading => {
                    reading = true;
                    timer.as_mut().reset(Instant::now() + limits.header_timeout);
                }
                Ok(_) => {}
            },
        }
    }
}

/// Waits for the response, answering `100 Continue` when the request's body first waits for
/// the client.
async fn answering_continue<F: Future>(
    handled: F,
    wants_continue: &Notify,
    writer: &mut SharedStream,
) -> F::Output {
    let mut handled = pin!(handled);
    tokio::select! {
        output = handled.as_mut() => return output,
        () = wants_continue.notified() => {}
    }
    let _ = writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    let _ = writer.flush().await;
    handled.await
}

/// Answers 101 and turns the connection into a tunnel to the backend's connection.
async fn switch_protocols(
    mut writer: SharedStream,
    reader: Option<ClientReader>,
    response: Response<ObservedBody>,
    asked: write::Asked,
) {
    let (parts, body) = response.into_parts();
    let idle = parts.extensions.get::<TunnelIdle>().copied();
    let backend = match body.into_inner() {
        Either::Left(pooled) => pooled.into_tunnel(),
        Either::Right(_) => None,
    };
    let head = Response::from_parts(parts, Empty::<Bytes>::new());
    if write::response(&mut writer, head, asked).await.is_err() {
        return;
    }
    let (Some(reader), Some(backend), Some(TunnelIdle(idle))) = (reader, backend, idle) else {
        return;
    };
    // What the client sent after its upgrade request belongs to the tunnel.
    let ClientReader { stream, buffer } = reader;
    drop(stream);
    if let Some(client) = writer.into_inner() {
        tunnel::run(client, buffer, backend, idle).await;
    }
}

/// Closes the connection: FIN after the last response, then what the client still sends is
/// read and dropped for a moment, so that its unread bytes do not turn the close into a reset
/// that could destroy the response before the client reads it.
async fn close(writer: &mut SharedStream, reader: Option<ClientReader>) {
    let _ = writer.shutdown().await;
    let Some(mut reader) = reader else {
        return;
    };
    let drain = async {
        let mut read = 0;
        while read < LINGER_BYTES {
            reader.buffer.clear();
            match reader.fill().await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
