//! Reads the heads of HTTP/1 requests as the client sent them, before hyper tidies them:
//! hyper drops a Content-Length that comes with Transfer-Encoding and folds duplicate
//! Content-Lengths into one, so the request the proxy sees no longer shows the ambiguity that
//! a smuggler relies on. This reader follows the message boundaries (heads, fixed and chunked
//! bodies) of the byte stream and marks the first head whose framing is ambiguous; that request
//! is then refused with 400 before it is routed.
//!
//! Where the stream stops being HTTP/1 that this reader can follow (a malformed head or chunk,
//! which hyper refuses by itself, or the bytes of an upgraded tunnel), it stops reading.

use std::sync::OnceLock;

use super::chunked::Chunked;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Most header fields a head may have for this reader (hyper refuses more with 431).
const MAX_FIELDS: usize = 128;

/// What the reader found, shared with the requests of the connection.
#[derive(Debug, Default)]
pub struct FramingCheck {
    /// The index of the first ambiguous head, and why.
    refused: OnceLock<(u64, &'static str)>,
    /// Requests that asked so far.
    requests: AtomicU64,
    /// The connection became a tunnel (an upgrade): its bytes are no longer HTTP/1.
    stopped: AtomicBool,
}

impl FramingCheck {
    /// The connection was upgraded: the reader stops.
    pub fn stop_reading(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Whether the reader should go on.
    pub fn is_reading(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed)
    }

    /// Called once per request, in order: why this request's head was ambiguous, if it was.
    /// Requests after an ambiguous one are refused too (the connection closes anyway).
    pub fn next_request(&self) -> Result<(), &'static str> {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        match self.refused.get() {
            Some((refused, why)) if *refused <= index => Err(why),
            _ => Ok(()),
        }
    }
}

/// Where in the message stream the reader is.
#[derive(Debug)]
pub struct FramingReader {
    state: State,
    /// The head read so far (only while in `State::Head`).
    head: Vec<u8>,
    /// Whether `head` holds only the blank lines allowed before a request line.
    only_blank: bool,
    heads: u64,
    max_head: usize,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    Fixed(u64),
    Chunk(Chunked),
    Off,
}

impl FramingReader {
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            only_blank: true,
            heads: 0,
            max_head,
        }
    }

    /// Reads `bytes`, the next ones the client sent, marking ambiguous heads in `check`.
    pub fn feed(&mut self, mut bytes: &[u8], check: &FramingCheck) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Off => return,
                State::Head => self.read_head(bytes, check),
                State::Fixed(left) => {
                    let n = (left as usize).min(bytes.len());
                    self.state = match left - n as u64 {
                        0 => State::Head,
                        left => State::Fixed(left),
                    };
                    &bytes[n..]
                }
                State::Chunk(chunk) => self.read_chunked(chunk, bytes),
            };
        }
    }

    fn read_head<'b>(&mut self, bytes: &'b [u8], check: &FramingCheck) -> &'b [u8] {
        let Some(end) = self.head_end(bytes) else {
            self.only_blank &= bytes.iter().all(|&b| b == b'\r' || b == b'\n');
            self.head.extend_from_slice(bytes);
            if self.head.len() > self.max_head {
                self.state = State::Off;
            }
            return &[];
        };
        // A head that came in one read (the common case) is read where it is.
        let head = if self.head.is_empty() {
            &bytes[..end]
        } else {
            self.head.extend_from_slice(&bytes[..end]);
            &self.head
        };
        let index = self.heads;
        self.heads += 1;
        self.state = match framing(head) {
            Ok(Framing::None | Framing::Fixed(0)) => State::Head,
            Ok(Framing::Fixed(n)) => State::Fixed(n),
            Ok(Framing::Chunked) => State::Chunk(Chunked::default()),
            Err(Some(why)) => {
                let _ = check.refused.set((index, why));
                State::Off
            }
            Err(None) => State::Off,
        };
        self.head.clear();
        self.only_blank = true;
        if self.head.capacity() > 4096 {
            self.head.shrink_to(1024);
        }
        &bytes[end..]
    }

    /// How many of `bytes` complete the head read so far (up to and with its blank line).
    /// Blank lines before a request line are allowed (RFC 9112 2.2) and are not an end; a
    /// line may end in a bare LF, as httparse allows.
    fn head_end(&self, bytes: &[u8]) -> Option<usize> {
        let at = |i: usize| -> u8 {
            if i < self.head.len() {
                self.head[i]
            } else {
                bytes[i - self.head.len()]
            }
        };
        let mut blank_so_far = self.only_blank;
        for (j, &byte) in bytes.iter().enumerate() {
            if byte != b'\n' {
                blank_so_far &= byte == b'\r';
                continue;
            }
            let v = self.head.len() + j;
            let ends =
                v >= 1 && at(v - 1) == b'\n' || v >= 2 && at(v - 1) == b'\r' && at(v - 2) == b'\n';
            if ends && !blank_so_far {
                return Some(j + 1);
            }
        }
        None
    }

    fn read_chunked<'b>(&mut self, mut chunked: Chunked, bytes: &'b [u8]) -> &'b [u8] {
        let Ok(advance) = chunked.advance(bytes) else {
            return self.off();
        };
        self.state = if chunked.is_done() {
            State::Head
        } else {
            State::Chunk(chunked)
        };
        &bytes[advance.consumed..]
    }

    fn off<'b>(&mut self) -> &'b [u8] {
        self.state = State::Off;
        &[]
    }
}

enum Framing {
    None,
    Fixed(u64),
    Chunked,
}

/// The body framing the head declares: `Err(Some(why))` when it is ambiguous, `Err(None)` when
/// the head does not parse (hyper refuses it by itself).
fn framing(head: &[u8]) -> Result<Framing, Option<&'static str>> {
    // Room for a few fields first (the array is set up for every head); more only when needed.
    match framing_with::<FEW_FIELDS>(head) {
        Err(Parse::TooManyFields) => framing_with::<MAX_FIELDS>(head),
        other => other,
    }
    .map_err(|error| match error {
        Parse::Ambiguous(why) => Some(why),
        Parse::TooManyFields | Parse::Malformed => None,
    })
}

/// Fields most request heads fit in.
const FEW_FIELDS: usize = 24;

enum Parse {
    Ambiguous(&'static str),
    TooManyFields,
    Malformed,
}

fn framing_with<const N: usize>(head: &[u8]) -> Result<Framing, Parse> {
    let mut fields = [httparse::EMPTY_HEADER; N];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(Parse::TooManyFields),
        _ => return Err(Parse::Malformed),
    }
    let mut length: Option<&[u8]> = None;
    let mut chunked = false;
    let mut codings = 0u32;
    for field in request.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(Parse::Ambiguous("several Content-Length headers"));
            }
            length = Some(field.value);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            chunked = trim(field.value).eq_ignore_ascii_case(b"chunked");
        }
    }
    match (length, codings) {
        (Some(_), 1..) => Err(Parse::Ambiguous(
            "both Content-Length and Transfer-Encoding",
        )),
        (None, 2..) => Err(Parse::Ambiguous("several Transfer-Encoding headers")),
        (None, 1) if chunked => Ok(Framing::Chunked),
        (None, 1) => Err(Parse::Ambiguous(
            "a Transfer-Encoding other than \"chunked\"",
        )),
        (Some(value), _) => {
            let value = trim(value);
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Parse::Ambiguous(
                    "a Content-Length that is not one decimal number",
                ));
            }
            std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Framing::Fixed)
                .ok_or(Parse::Ambiguous("a Content-Length that is too large"))
        }
        (None, 0) => Ok(Framing::None),
    }
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; the index of the refused head, and why.
    fn refused(stream: &[u8], step: usize) -> Option<(u64, &'static str)> {
        let check = FramingCheck::default();
        let mut reader = FramingReader::new(32 * 1024);
        for piece in stream.chunks(step) {
            reader.feed(piece, &check);
        }
        check.refused.get().copied()
    }

    #[test]
    fn heads_with_many_fields_are_read_whole() {
        let many: String = (0..60).map(|i| format!("X-{i}: v\r\n")).collect();
        let smuggling = format!(
            "POST / HTTP/1.1\r\nHost: a\r\n{many}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            refused(smuggling.as_bytes(), 7),
            Some((0, "both Content-Length and Transfer-Encoding"))
        );
        let clean =
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(refused(clean.as_bytes(), 5), None);
    }

    #[test]
    fn boundaries_are_followed_through_bodies_in_any_pieces() {
        let stream = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;x=y\r\nhello\r\n0\r\nTrailer: t\r\n\r\n\
            GET /lf HTTP/1.1\nHost: a\n\n\
            POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for step in [1, 2, 3, 7, 64, stream.len()] {
            assert_eq!(
                refused(stream, step),
                Some((4, "both Content-Length and Transfer-Encoding")),
                "pieces of {step}"
            );
        }
    }

    #[test]
    fn ambiguous_heads() {
        let cases: [(&[u8], &str); 5] = [
            (
                b"Content-Length: 1\r\nContent-Length: 1",
                "several Content-Length",
            ),
            (b"Transfer-Encoding: chunked\r\nContent-Length: 1", "both"),
            (
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                "several Transfer",
            ),
            (b"Transfer-Encoding: gzip", "other than"),
            (b"Content-Length: 1,1", "not one decimal"),
        ];
        for (fields, why) in cases {
            let mut stream = b"POST / HTTP/1.1\r\nHost: a\r\n".to_vec();
            stream.extend_from_slice(fields);
            stream.extend_from_slice(b"\r\n\r\n");
            let found = refused(&stream, 5);
            assert!(
                found.is_some_and(|(i, w)| i == 0 && w.contains(why)),
                "{found:?}"
            );
        }
    }

    #[test]
    fn requests_after_a_refused_head_are_refused_and_those_before_are_not() {
        let check = FramingCheck::default();
        let _ = check.refused.set((1, "x"));
        assert_eq!(check.next_request(), Ok(()));
        assert_eq!(check.next_request(), Err("x"));
        assert_eq!(check.next_request(), Err("x"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One well-framed request: no body, a fixed body, or a chunked one.
        fn request() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
                Just(b"GET /lf HTTP/1.1\nHost: a\n\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..100).prop_map(|body| {
                    let mut r = format!(
                        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(body);
                    r
                }),
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..4)
                    .prop_map(|chunks| {
                        let mut r =
                            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                .to_vec();
                        for chunk in chunks {
                            r.extend(format!("{:x};e=1\r\n", chunk.len()).into_bytes());
                            r.extend(chunk);
                            r.extend(b"\r\n");
                        }
                        r.extend(b"0\r\nT: 1\r\n\r\n");
                        r
                    }),
            ]
        }

        proptest! {
            #[test]
            fn the_first_ambiguous_head_is_found_after_any_clean_requests(
                clean in proptest::collection::vec(request(), 0..6),
                step in 1usize..50,
            ) {
                let mut stream: Vec<u8> = clean.concat();
                prop_assert_eq!(refused(&stream, step), None);
                stream.extend(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
                let found = refused(&stream, step);
                prop_assert_eq!(found.map(|(index, _)| index), Some(clean.len() as u64));
            }

            #[test]
            fn any_bytes_are_read_without_panicking(
                bytes in proptest::collection::vec(any::<u8>(), 0..400),
                step in 1usize..50,
            ) {
                let _ = refused(&bytes, step);
            }
        }
    }
}
