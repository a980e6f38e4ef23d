//! Clients that send exactly the bytes a test writes, malformed ones included: HTTP/1.1 as
//! text, HTTP/2 as frames with hand-encoded HPACK (literal fields, never indexed, no Huffman),
//! so that no client library tidies an attack away.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back on a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// The server closed the connection (rather than the wait running out).
    pub closed: bool,
}

impl RawAnswer {
    /// The status code of the first response, if one arrived.
    pub fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(self.bytes.get(..12)?).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.parse().ok()
    }

    /// How many responses arrived (status lines at the start of a line).
    pub fn responses(&self) -> usize {
        let text = String::from_utf8_lossy(&self.bytes);
        text.match_indices("HTTP/1.1 ")
            .filter(|(at, _)| *at == 0 || text[..*at].ends_with('\n'))
            .count()
    }
}

/// Sends `bytes` on a new connection to `addr`, then reads until the server closes it or
/// nothing arrived for `quiet`.
pub async fn http1(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may close while we still write (it refused the head): that is an answer too.
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream, quiet).await
}

/// Reads from `stream` until it closes or nothing arrived for `quiet` (at most 30 s).
pub async fn read_until_closed(stream: &mut TcpStream, quiet: Duration) -> RawAnswer {
    let mut answer = RawAnswer {
        bytes: Vec::new(),
        closed: false,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut chunk = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        match tokio::time::timeout(quiet, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                answer.closed = true;
                break;
            }
            Ok(Ok(n)) => answer.bytes.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    answer
}

/// Whether the server closes `stream` within `limit` (reading and dropping whatever comes).
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

pub mod h2 {
    //! HTTP/2 frames by hand.

    use super::*;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const ACK: u8 = 0x1;

    /// Header fields as (name, value) bytes.
    pub type Fields<'a> = Vec<(&'a [u8], &'a [u8])>;

    /// One frame.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    }

    /// A header block of literal fields (HPACK "literal without indexing, new name").
    pub fn block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in fields {
            block.push(0x00);
            string(&mut block, name);
            string(&mut block, value);
        }
        block
    }

    fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        // 7-bit prefix integer, no Huffman.
        let mut length = bytes.len();
        if length < 127 {
            out.push(length as u8);
        } else {
            out.push(127);
            length -= 127;
            while length >= 128 {
                out.push((length % 128) as u8 | 0x80);
                length /= 128;
            }
            out.push(length as u8);
        }
        out.extend_from_slice(bytes);
    }

    /// The fields of a plain GET of `path` on `authority`.
    pub fn get<'a>(authority: &'a [u8], path: &'a [u8]) -> Fields<'a> {
        vec![
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", authority),
            (b":path", path),
        ]
    }

    /// A connection that has sent the preface and empty SETTINGS.
    pub async fn connect(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.expect("write preface");
        stream
    }

    /// What the server did with a stream, or with the connection.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Outcome {
        /// Response headers, with the status when it is one of HPACK's static ones.
        Answered(Option<u16>),
        /// RST_STREAM with this error code.
        Reset(u32),
        /// GOAWAY with this error code.
        GoAway(u32),
        /// The connection closed with neither.
        Closed,
        /// Nothing within the wait.
        Silent,
    }

    /// Reads frames until the server answers, resets or goes away on `stream_id` (frames of
    /// the connection's own, SETTINGS and PING, are acknowledged or skipped).
    pub async fn outcome(stream: &mut TcpStream, stream_id: u32, wait: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut header = [0u8; 9];
            match tokio::time::timeout_at(deadline, stream.read_exact(&mut header)).await {
                Err(_) => return Outcome::Silent,
                Ok(Err(_)) => return Outcome::Closed,
                Ok(Ok(_)) => {}
            }
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; length];
            if tokio::time::timeout_at(deadline, stream.read_exact(&mut payload))
                .await
                .is_err()
            {
                return Outcome::Silent;
            }
            let code = || u32::from_be_bytes(payload[..4].try_into().unwrap_or([0; 4]));
            match header[3] {
                GOAWAY if payload.len() >= 8 => {
                    return Outcome::GoAway(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                RST_STREAM if id == stream_id && payload.len() >= 4 => {
                    return Outcome::Reset(code());
                }
                HEADERS if id == stream_id => return Outcome::Answered(static_status(&payload)),
                _ => {}
            }
        }
    }

    /// `:status` from the first field of a response block, when it is indexed (HPACK's static
    /// table holds 200, 204, 206, 304, 400, 404 and 500).
    fn static_status(block: &[u8]) -> Option<u16> {
        match block.first()? {
            0x88 => Some(200),
            0x89 => Some(204),
            0x8a => Some(206),
            0x8b => Some(304),
            0x8c => Some(400),
            0x8d => Some(404),
            0x8e => Some(500),
            _ => None,
        }
    }
}
