//! Responses on the wire: the head in one buffer with the first of the body when it is small,
//! then the body as it comes (framed by its Content-Length, chunked, or until close), with
//! the pieces that are ready at once written together.

use std::io;
use std::pin::pin;
use std::task::Poll;

use bytes::{Buf, Bytes};
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode, Version};
use tokio::io::AsyncWriteExt;

use super::io::SharedStream;
use crate::proxy::date;
use crate::proxy::headers::connection_lists;

/// Data up to this size is copied behind the head (one write); larger data is written from
/// where it is.
const COPY_LIMIT: usize = 8 * 1024;
/// Buffered response bytes are written once they reach this size.
const FLUSH_AT: usize = 64 * 1024;

/// What the request said about the response it gets.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    pub head_only: bool,
    pub version: Version,
    /// The connection stays open after this exchange (the client's wish and ours).
    pub keep_alive: bool,
}

impl Asked {
    pub fn of(method: &Method, version: Version, keep_alive: bool) -> Self {
        Self {
            head_only: method == Method::HEAD,
            version,
            keep_alive,
        }
    }
}

/// How the body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes `response` and its body; returns whether the connection can carry another request
/// (the body went out whole and nothing asks for a close).
pub async fn response<B>(
    stream: &mut SharedStream,
    response: Response<B>,
    asked: Asked,
) -> io::Result<bool>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let mut headers = parts.headers;
    let no_body = asked.head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A HEAD's body from a backend is empty whatever the GET's length: that says nothing.
    let known = body
        .size_hint()
        .exact()
        .filter(|&length| !(asked.head_only && length == 0));
    let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut framing = match (declared, known) {
        (Some(length), _) => Framing::Length(length),
        (None, Some(length)) => {
            if !no_length {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            Framing::Length(length)
        }
        (None, None) if no_length || status == StatusCode::NOT_MODIFIED => Framing::None,
        (None, None) if asked.version == Version::HTTP_11 => {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            Framing::Chunked
        }
        (None, None) => Framing::UntilClose,
    };
    if no_body {
        framing = Framing::None;
    }
    let mut keep_alive = asked.keep_alive
        && framing != Framing::UntilClose
        && !connection_lists(&headers, "close")
        && status != StatusCode::SWITCHING_PROTOCOLS;
    if !keep_alive
        && status != StatusCode::SWITCHING_PROTOCOLS
        && !connection_lists(&headers, "close")
    {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else if keep_alive && asked.version == Version::HTTP_10 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    if !headers.contains_key(header::DATE) {
        headers.insert(header::DATE, date::now());
    }

    let mut out = Vec::with_capacity(256 + headers.len() * 48);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");

    if framing == Framing::None {
        // The body is not sent (HEAD, 1xx, 204, 304): it ends here, for the exchange's record.
        drop(body);
        stream.write_all(&out).await?;
        stream.flush().await?;
        return Ok(keep_alive);
    }
    let mut body = pin!(body);
    let mut left = match framing {
        Framing::Length(length) => length,
        _ => u64::MAX,
    };
    loop {
        // Take what the body has ready now; wait only once the buffered bytes are out.
        let frame = match std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await
        {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    out.clear();
                }
                std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(error)) => {
                // The backend failed part-way: the client must see a broken message, never
                // a short one that looks whole.
                tracing::debug!(%error, "response body failed");
                let _ = stream.write_all(&out).await;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        let length = data.len() as u64;
        if matches!(framing, Framing::Length(_)) && length > left {
            // More than the declared length: the message cannot be delimited.
            let _ = stream.write_all(&out).await;
            return Ok(false);
        }
        left = left.saturating_sub(length);
        if framing == Framing::Chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if data.len() <= COPY_LIMIT {
            out.extend_from_slice(&data);
        } else {
            let mut both = out.as_slice().chain(data);
            stream.write_all_buf(&mut both).await?;
            out.clear();
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= FLUSH_AT {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        // A body shorter than its Content-Length: the client must see it cut.
        Framing::Length(_) if left > 0 => keep_alive = false,
        _ => {}
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(keep_alive)
}
