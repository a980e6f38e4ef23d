//! Responses on the wire: the head in one buffer with the first of the body when it is small,
//! then the body as it comes (framed by its Content-Length, chunked, or until close), with
//! the pieces that are ready at once written together.

use std::io;
use std::pin::pin;
use std::task::Poll;

use bytes::{Buf, Bytes};
use hyper::body::Body;
use hyper::header;
use hyper::{Method, Response, StatusCode, Version};
use tokio::io::AsyncWriteExt;

use super::io::SharedStream;
use crate::proxy::date;
use crate::proxy::head_fields::write_field;
use crate::proxy::strict::FramingFields;

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
    let headers = parts.headers;
    let no_body = asked.head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // One pass over the fields for what the framing and the connection depend on.
    let mut fields = FramingFields::default();
    let mut has_connection = false;
    let mut has_date = false;
    for (name, value) in &headers {
        fields.note(name, value.as_bytes());
        has_connection |= name == header::CONNECTION;
        has_date |= name == header::DATE;
    }
    // A HEAD's body from a backend is empty whatever the GET's length: that says nothing.
    let known = body
        .size_hint()
        .exact()
        .filter(|&length| !(asked.head_only && length == 0));
    let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    // The fields the gateway adds are written after the response's own, not put in its map.
    let mut added_length = None;
    let mut framing = match (fields.content_length(), known) {
        (Some(length), _) => Framing::Length(length),
        (None, Some(length)) => {
            if !no_length {
                added_length = Some(length);
            }
            Framing::Length(length)
        }
        (None, None) if no_length || status == StatusCode::NOT_MODIFIED => Framing::None,
        (None, None) if asked.version == Version::HTTP_11 => Framing::Chunked,
        (None, None) => Framing::UntilClose,
    };
    let chunked = framing == Framing::Chunked;
    if no_body {
        framing = Framing::None;
    }
    let mut keep_alive = asked.keep_alive
        && framing != Framing::UntilClose
        && !fields.close
        && status != StatusCode::SWITCHING_PROTOCOLS;
    // Replaces the response's own Connection fields, if it has any.
    let connection: Option<&[u8]> =
        if !keep_alive && status != StatusCode::SWITCHING_PROTOCOLS && !fields.close {
            Some(b"close")
        } else if keep_alive && asked.version == Version::HTTP_10 {
            Some(b"keep-alive")
        } else {
            None
        };
    let skip_connection = connection.is_some() && has_connection;

    let mut out = Vec::with_capacity(256 + headers.len() * 48);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        if skip_connection && name == header::CONNECTION {
            continue;
        }
        write_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(length) = added_length {
        write_field(&mut out, b"content-length", length.to_string().as_bytes());
    }
    if chunked {
        write_field(&mut out, b"transfer-encoding", b"chunked");
    }
    if let Some(connection) = connection {
        write_field(&mut out, b"connection", connection);
    }
    if !has_date {
        write_field(&mut out, b"date", date::now().as_bytes());
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
