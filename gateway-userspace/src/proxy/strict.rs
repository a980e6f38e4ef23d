//! The message rules of RFC 9112 and 9113 that the parsers leave to the application, applied to
//! every request before anything reaches a backend and to every backend response before any of
//! it reaches the client. Each ambiguity that lets two parsers see different messages (request
//! smuggling, response splitting) is refused, never repaired.
//!
//! An HTTP/1 request's framing is decided by the gateway's own server from the fields as they
//! arrived (`h1_server/head.rs`), which refuses its ambiguities before a request exists; the
//! framing rule here holds the same line for HTTP/2 requests (parsed by the h2 crate) and for
//! backend responses. httparse already refuses obs-fold, bare CR, NUL
//! and other control characters in names and values; the end-to-end tests in
//! tests/hostile_clients.rs hold every layer to it.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Version};

use super::error::ProxyError;
use super::limits::ClientLimits;
use crate::snapshot::normalize_host;

/// Refuses a request whose framing or target is ambiguous, or whose head is over the limits.
pub fn check_request<B>(request: &Request<B>, limits: &ClientLimits) -> Result<(), ProxyError> {
    let uri = request.uri();
    // Absolute form (and every HTTP/2 request): "scheme://authority/path?query".
    let target_length = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 3)
        + uri.scheme_str().map_or(0, str::len);
    if target_length > limits.max_line {
        return Err(ProxyError::UriTooLong);
    }
    let headers = request.headers();
    // HTTP/1 heads are counted as they are parsed; HTTP/2 and HTTP/3 ones here.
    if headers.len() > limits.max_headers {
        return Err(ProxyError::HeadTooLarge);
    }
    if headers
        .iter()
        .any(|(name, value)| name.as_str().len() + value.len() + 2 > limits.max_line)
    {
        return Err(ProxyError::HeaderTooLarge);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::Malformed("several Host headers"));
    }
    match (uri.authority(), host) {
        (None, None) if request.version() == Version::HTTP_11 => {
            return Err(ProxyError::Malformed("an HTTP/1.1 request without Host"));
        }
        (Some(authority), Some(host)) if !same_host(authority.as_str(), host) => {
            return Err(ProxyError::Malformed(
                "the target's authority and the Host header differ",
            ));
        }
        _ => {}
    }
    if request.version() >= Version::HTTP_2 {
        check_connection_fields(headers).map_err(ProxyError::Malformed)?;
    }
    FramingFields::of(headers)
        .framing()
        .map(|_| ())
        .map_err(ProxyError::Malformed)
}

/// Fields that exist only in HTTP/1, for one connection.
pub const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// HTTP/2 and HTTP/3 have no connection-specific fields: a message with one is malformed (RFC
/// 9113 8.2.2, RFC 9114 4.2), and `Transfer-Encoding` would frame a body the stream already
/// frames. The h2 crate refuses them itself; the h3 crate does not. One pass over the fields: a
/// request has few, and each lookup by name would parse and hash it.
fn check_connection_fields(headers: &HeaderMap) -> Result<(), &'static str> {
    for (name, value) in headers {
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            return Err("a connection-specific header field in an HTTP/2 or HTTP/3 request");
        }
        if name == header::TE && value.as_bytes() != b"trailers" {
            return Err("a TE other than \"trailers\"");
        }
    }
    Ok(())
}

/// Refuses a backend response whose framing is ambiguous (the client would get 502). HTTP/1.1
/// responses are held to it by the upstream's parser, as their fields go by.
pub fn check_response<B>(response: &Response<B>) -> Result<(), &'static str> {
    FramingFields::of(response.headers()).framing().map(|_| ())
}

/// How a message's body is delimited (RFC 9112 6.3), by its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// The fields that decide how a message is framed and whether its connection stays open,
/// noted in one pass over its fields: each look-up by name would hash the name again, and the
/// parsers and the response writer pass over every field anyway.
#[derive(Clone, Copy, Debug, Default)]
pub struct FramingFields {
    /// The first Content-Length, `Some(None)` when it is not one decimal number.
    length: Option<Option<u64>>,
    /// Whether the first Transfer-Encoding is exactly `chunked`.
    chunked: Option<bool>,
    several_lengths: bool,
    several_codings: bool,
    /// The Connection fields list `close`.
    pub close: bool,
    /// The Connection fields list `keep-alive`.
    pub keep_alive: bool,
}

impl FramingFields {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut fields = Self::default();
        for (name, value) in headers {
            fields.note(name, value.as_bytes());
        }
        fields
    }

    /// Takes one field into account.
    pub fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if name == header::CONTENT_LENGTH {
            self.several_lengths |= self.length.is_some();
            self.length.get_or_insert(decimal(value));
        } else if name == header::TRANSFER_ENCODING {
            self.several_codings |= self.chunked.is_some();
            self.chunked
                .get_or_insert(value.eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }

    /// The framing the fields give, or why they are ambiguous: one Content-Length of digits,
    /// or one `Transfer-Encoding: chunked`, or neither; never both. A length of 0 is no body.
    pub fn framing(&self) -> Result<BodyFraming, &'static str> {
        if self.several_lengths {
            return Err("several Content-Length headers");
        }
        if let Some(chunked) = self.chunked {
            if self.several_codings {
                return Err("several Transfer-Encoding headers");
            }
            if !chunked {
                return Err("a Transfer-Encoding other than \"chunked\"");
            }
            if self.length.is_some() {
                return Err("both Content-Length and Transfer-Encoding");
            }
            return Ok(BodyFraming::Chunked);
        }
        match self.length {
            None | Some(Some(0)) => Ok(BodyFraming::None),
            Some(Some(length)) => Ok(BodyFraming::Length(length)),
            Some(None) => Err("a Content-Length that is not one decimal number"),
        }
    }

    /// The Content-Length, when there is one and it is one decimal number.
    pub fn content_length(&self) -> Option<u64> {
        self.length.flatten()
    }
}

/// `digits` as a number: ASCII digits only (no sign, no space, no list), without overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether the Host header names the host of the target's authority (routing reads only the
/// host, so ports may differ).
fn same_host(authority: &str, host: &HeaderValue) -> bool {
    host.to_str()
        .is_ok_and(|host| normalize_host(host) == normalize_host(authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn refusal(request: &Request<()>) -> Option<String> {
        check_request(request, &ClientLimits::default())
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn connection_fields_are_refused_over_http2_and_http3() {
        for version in [Version::HTTP_2, Version::HTTP_3] {
            let target = "https://a.test/";
            assert_eq!(
                refusal(&request(version, target, &[("te", "trailers")])),
                None
            );
            for (name, value) in [
                ("connection", "close"),
                ("keep-alive", "5"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "websocket"),
                ("te", "gzip"),
            ] {
                let refused = refusal(&request(version, target, &[(name, value)]));
                assert!(refused.is_some(), "{version:?} {name}");
            }
        }
        let h11 = request(
            Version::HTTP_11,
            "/",
            &[("host", "a"), ("connection", "close")],
        );
        assert_eq!(refusal(&h11), None);
    }

    #[test]
    fn ordinary_requests_pass() {
        let h11 = Version::HTTP_11;
        assert_eq!(refusal(&request(h11, "/", &[("host", "a")])), None);
        assert_eq!(
            refusal(&request(
                h11,
                "/",
                &[("host", "a"), ("content-length", "10")]
            )),
            None
        );
        assert_eq!(
            refusal(&request(
                h11,
                "/",
                &[("host", "a"), ("transfer-encoding", "Chunked")]
            )),
            None
        );
        assert_eq!(
            refusal(&request(h11, "http://A:80/", &[("host", "a:80")])),
            None
        );
        assert_eq!(refusal(&request(Version::HTTP_10, "/", &[])), None);
    }

    #[test]
    fn ambiguities_are_refused() {
        let h11 = Version::HTTP_11;
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("/", &[]),
            ("/", &[("host", "a"), ("host", "b")]),
            ("/", &[("host", "a"), ("host", "a")]),
            ("http://b/", &[("host", "a")]),
            (
                "/",
                &[
                    ("host", "a"),
                    ("content-length", "1"),
                    ("content-length", "1"),
                ],
            ),
            ("/", &[("host", "a"), ("content-length", "1, 1")]),
            ("/", &[("host", "a"), ("content-length", "+1")]),
            (
                "/",
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("content-length", "3"),
                ],
            ),
            (
                "/",
                &[("host", "a"), ("transfer-encoding", "identity, chunked")],
            ),
            (
                "/",
                &[("host", "a"), ("transfer-encoding", "chunked, chunked")],
            ),
            ("/", &[("host", "a"), ("transfer-encoding", "xchunked")]),
            (
                "/",
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
            ),
        ];
        for (target, headers) in cases {
            assert!(
                refusal(&request(h11, target, headers)).is_some(),
                "{target} {headers:?}"
            );
        }
    }

    #[test]
    fn long_targets_and_lines_get_their_statuses() {
        let long = format!("/{}", "a".repeat(9000));
        let status = |r: &Request<()>| {
            check_request(r, &ClientLimits::default())
                .unwrap_err()
                .status()
                .as_u16()
        };
        assert_eq!(
            status(&request(Version::HTTP_11, &long, &[("host", "a")])),
            414
        );
        let cookie = "c".repeat(9000);
        assert_eq!(
            status(&request(
                Version::HTTP_11,
                "/",
                &[("host", "a"), ("cookie", &cookie)]
            )),
            431
        );
    }
}
