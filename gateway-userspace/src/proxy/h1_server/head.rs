//! Request heads, parsed strictly with httparse into a request whose target and header values
//! share the head's bytes. The message's framing is decided here, from the fields exactly as
//! the client sent them: every ambiguity that lets two parsers see different messages (request
//! smuggling) is refused, never repaired. httparse itself refuses obs-fold, bare CR, NUL and
//! other control characters in names and values, and whitespace before a field's colon.

use bytes::BytesMut;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};

use crate::proxy::error::ProxyError;
use crate::proxy::forward;
use crate::proxy::head_fields::{self, FieldRanges, Range};
use crate::proxy::limits::ClientLimits;
pub use crate::proxy::strict::BodyFraming;
use crate::proxy::strict::FramingFields;

/// A parsed request head and what it says about its connection.
#[derive(Debug)]
pub struct Head {
    pub request: Request<()>,
    pub body: BodyFraming,
    /// `Expect: 100-continue`: the client waits for an interim answer before its body.
    pub expects_continue: bool,
    /// Whether the client keeps the connection open after this exchange.
    pub keep_alive: bool,
}

/// The complete request head at the start of `buffer`, taken out of it; `Ok(None)` while it
/// is incomplete. An incomplete head already past the limit is refused.
pub fn parse(buffer: &mut BytesMut, limits: &ClientLimits) -> Result<Option<Head>, ProxyError> {
    let mut fields = FieldRanges::default();
    let located = head_fields::with_room(limits.max_headers, |parsed| {
        locate(buffer, parsed, &mut fields)
    })
    .map_err(refusal)?;
    let Some(located) = located else {
        if buffer.len() >= limits.max_head {
            return Err(ProxyError::HeadTooLarge);
        }
        return Ok(None);
    };
    let fields = fields.as_slice();
    if located.length > limits.max_head || fields.len() > limits.max_headers {
        return Err(ProxyError::HeadTooLarge);
    }
    let head = buffer.split_to(located.length).freeze();
    let method = Method::from_bytes(&head[located.method.0..located.method.1])
        .map_err(|_| ProxyError::Malformed("a bad method"))?;
    let uri = Uri::from_maybe_shared(head.slice(located.target.0..located.target.1))
        .map_err(|_| ProxyError::Malformed("a bad request target"))?;
    let mut headers = HeaderMap::with_capacity(fields.len() + forward::ADDED_FIELDS);
    let mut framing_fields = FramingFields::default();
    for &(name, value) in fields {
        let name = HeaderName::from_bytes(&head[name.0..name.1])
            .map_err(|_| ProxyError::Malformed("a bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value.0..value.1))
            .map_err(|_| ProxyError::Malformed("a bad header value"))?;
        framing_fields.note(&name, value.as_bytes());
        headers.append(name, value);
    }
    let version = located.version;
    let body = framing(&framing_fields, version).map_err(ProxyError::Malformed)?;
    let expects_continue = version == Version::HTTP_11
        && body != BodyFraming::None
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let keep_alive = if version == Version::HTTP_11 {
        !framing_fields.close
    } else {
        framing_fields.keep_alive
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        body,
        expects_continue,
        keep_alive,
    }))
}

/// Whether `buffer` starts like the HTTP/2 connection preface (prior knowledge), as far as it
/// goes.
pub fn is_http2_preface(buffer: &[u8]) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    !buffer.is_empty() && PREFACE.starts_with(&buffer[..buffer.len().min(PREFACE.len())])
}

/// What the server reads from a client's byte stream arriving in `reads`: each request's
/// method, target and body in order, and then why the reading stopped. The connection's own
/// order of reading (a head, then its body by its framing), without the IO: for the property
/// test and the fuzz target, which check that where the reads are cut changes nothing.
#[doc(hidden)]
pub fn read_messages<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
    limits: &ClientLimits,
) -> (Vec<(Method, Uri, Vec<u8>)>, String) {
    use crate::proxy::chunked::{Chunked, Delimited};
    let mut reads = reads.into_iter();
    let mut buffer = BytesMut::new();
    let mut found = Vec::new();
    let mut body: Option<(Delimited, Vec<u8>)> = None;
    loop {
        let progress = match body.as_mut() {
            Some((framing, data)) => match framing.take(&mut buffer) {
                Ok(Some(piece)) => {
                    data.extend_from_slice(&piece);
                    true
                }
                Ok(None) if framing.is_done() => {
                    if let (Some((_, data)), Some(last)) = (body.take(), found.last_mut()) {
                        let (_, _, body): &mut (Method, Uri, Vec<u8>) = last;
                        *body = data;
                    }
                    true
                }
                Ok(None) => false,
                Err(_) => return (found, "a broken chunked body".into()),
            },
            None => match parse(&mut buffer, limits) {
                Ok(Some(head)) => {
                    let (parts, ()) = head.request.into_parts();
                    found.push((parts.method, parts.uri, Vec::new()));
                    body = match head.body {
                        BodyFraming::None => None,
                        BodyFraming::Length(n) => Some((Delimited::Length(n), Vec::new())),
                        BodyFraming::Chunked => {
                            Some((Delimited::Chunked(Chunked::default()), Vec::new()))
                        }
                    };
                    true
                }
                Ok(None) => false,
                Err(error) => return (found, error.to_string()),
            },
        };
        if !progress {
            match reads.next() {
                Some(read) => buffer.extend_from_slice(read),
                None if body.is_some() => return (found, "cut in a body".into()),
                None => return (found, format!("{} bytes left", buffer.len())),
            }
        }
    }
}

/// The answer to a head that httparse refuses.
fn refusal(error: httparse::Error) -> ProxyError {
    match error {
        httparse::Error::TooManyHeaders => ProxyError::HeadTooLarge,
        httparse::Error::Version => ProxyError::Malformed("not an HTTP/1.x request line"),
        httparse::Error::Token => ProxyError::Malformed("a bad method or request target"),
        _ => ProxyError::Malformed("the request head does not parse"),
    }
}

/// The body's framing by the fields (see [`FramingFields::framing`]); chunked only on HTTP/1.1.
fn framing(fields: &FramingFields, version: Version) -> Result<BodyFraming, &'static str> {
    let framing = fields.framing()?;
    if framing == BodyFraming::Chunked && version != Version::HTTP_11 {
        return Err("Transfer-Encoding on an HTTP/1.0 request");
    }
    Ok(framing)
}

/// A request head found in a buffer: where its parts are.
struct Located {
    length: usize,
    method: Range,
    target: Range,
    version: Version,
}

/// The complete head at the start of `buffer`, parsed with room for `parsed` fields, whose
/// ranges go to `fields`.
fn locate<'b>(
    buffer: &'b [u8],
    parsed: &mut [httparse::Header<'b>],
    fields: &mut FieldRanges,
) -> Result<Option<Located>, httparse::Error> {
    let mut parsed = httparse::Request::new(parsed);
    let httparse::Status::Complete(length) = parsed.parse(buffer)? else {
        return Ok(None);
    };
    let base = buffer.as_ptr() as usize;
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Ok(None);
    };
    fields.set(parsed.headers, base);
    Ok(Some(Located {
        length,
        method: head_fields::range(base, method.as_bytes()),
        target: head_fields::range(base, target.as_bytes()),
        version: match version {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Result<Option<Head>, String> {
        let mut buffer = BytesMut::from(head);
        parse(&mut buffer, &ClientLimits::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_head_shares_its_bytes_and_leaves_what_follows() {
        let mut buffer =
            BytesMut::from("\r\nPOST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET");
        let head = parse(&mut buffer, &ClientLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(&buffer[..], b"abcGET");
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri(), "/a?b");
        assert_eq!(head.request.headers()["host"], "x");
        assert_eq!(head.body, BodyFraming::Length(3));
        assert!(head.keep_alive);
        assert!(!head.expects_continue);
    }

    #[test]
    fn incomplete_heads_wait_until_the_limit() {
        assert!(parsed("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(40_000));
        assert!(parsed(&long).unwrap_err().contains("head"));
    }

    #[test]
    fn connection_and_expect_are_read() {
        let head = parsed("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.keep_alive);
        let head = parsed("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive);
        let head = parsed("GET / HTTP/1.1\r\nHost: x\r\nConnection: te, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
        let head = parsed(
            "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(head.expects_continue);
        assert_eq!(head.body, BodyFraming::Chunked);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for fields in [
            "Content-Length: 1\r\nContent-Length: 1\r\n",
            "Content-Length: 1, 1\r\n",
            "Content-Length: +1\r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "Transfer-Encoding: identity, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding : chunked\r\n",
            "X-A: a\r\n b\r\n",
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
            assert!(parsed(&head).is_err(), "{fields:?}");
        }
        assert!(parsed("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One well-framed request: no body, a fixed body, or a chunked one.
        fn request() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
            prop_oneof![
                Just((b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), vec![])),
                Just((b"GET /lf HTTP/1.1\nHost: a\n\n".to_vec(), vec![])),
                proptest::collection::vec(any::<u8>(), 0..100).prop_map(|body| {
                    let mut r = format!(
                        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(&body);
                    (r, body)
                }),
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..4)
                    .prop_map(|chunks| {
                        let mut r =
                            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                .to_vec();
                        for chunk in &chunks {
                            r.extend(format!("{:x};e=1\r\n", chunk.len()).into_bytes());
                            r.extend(chunk);
                            r.extend(b"\r\n");
                        }
                        r.extend(b"0\r\nT: 1\r\n\r\n");
                        (r, chunks.concat())
                    }),
            ]
        }

        fn read(stream: &[u8], step: usize) -> (Vec<(Method, Uri, Vec<u8>)>, String) {
            read_messages(stream.chunks(step), &ClientLimits::default())
        }

        proptest! {
            #[test]
            fn clean_requests_then_an_ambiguous_one_in_reads_cut_anywhere(
                clean in proptest::collection::vec(request(), 0..6),
                step in 1usize..50,
            ) {
                let mut stream: Vec<u8> = clean.iter().flat_map(|(r, _)| r.clone()).collect();
                let (found, end) = read(&stream, step);
                prop_assert_eq!(end, "0 bytes left");
                let bodies: Vec<_> = found.into_iter().map(|(_, _, body)| body).collect();
                let sent: Vec<_> = clean.iter().map(|(_, body)| body.clone()).collect();
                prop_assert_eq!(bodies, sent);
                stream.extend(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
                let (found, end) = read(&stream, step);
                prop_assert_eq!(found.len(), clean.len());
                prop_assert!(end.contains("Content-Length and Transfer-Encoding"), "{}", end);
            }

            #[test]
            fn any_bytes_read_the_same_whatever_the_cuts(
                bytes in proptest::collection::vec(any::<u8>(), 0..400),
                step in 1usize..50,
            ) {
                prop_assert_eq!(read(&bytes, step), read(&bytes, bytes.len().max(1)));
            }
        }
    }

    #[test]
    fn the_http2_preface_is_recognised_from_its_first_bytes() {
        assert!(is_http2_preface(b"PRI * HT"));
        assert!(is_http2_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"));
        assert!(!is_http2_preface(b"GET / HTTP/1.1"));
        assert!(!is_http2_preface(b""));
    }
}
