//! A raw-socket backend that records the exact bytes it receives, so a test can say that
//! exactly one clean request reached it, or none. It frames requests itself, strictly (one
//! Content-Length or `Transfer-Encoding: chunked`, CRLF everywhere), and answers each complete
//! one with the response it was given.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The default answer: a small, well-framed 200.
pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A running recorder; it stops when dropped.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    /// Every byte received, over all connections, in order of arrival per connection.
    raw: Vec<u8>,
    /// The bytes of each connection since the last clear, by connection number.
    connections: std::collections::HashMap<usize, Vec<u8>>,
    /// Each complete request, head and body as received, with its connection's number.
    requests: Vec<(usize, Vec<u8>)>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// Starts a recorder answering every complete request with `response`.
    pub async fn start(response: &'static [u8]) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let mut number = 0;
            while let Ok((stream, _)) = listener.accept().await {
                number += 1;
                tokio::spawn(record(stream, number, shared.clone(), response));
            }
        });
        Recorder { addr, seen, task }
    }

    /// Every byte received so far.
    pub fn raw(&self) -> Vec<u8> {
        self.seen.lock().unwrap().raw.clone()
    }

    /// The complete requests received so far.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        let seen = self.seen.lock().unwrap();
        seen.requests.iter().map(|(_, r)| r.clone()).collect()
    }

    /// Every byte the connection that carried request `index` received since the last clear.
    pub fn connection_of(&self, index: usize) -> Vec<u8> {
        let seen = self.seen.lock().unwrap();
        let (connection, _) = seen.requests[index];
        seen.connections
            .get(&connection)
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        *self.seen.lock().unwrap() = Seen::default();
    }
}

async fn record(
    mut stream: TcpStream,
    number: usize,
    seen: Arc<Mutex<Seen>>,
    response: &'static [u8],
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some(length) = complete_request(&buffer) {
            let request: Vec<u8> = buffer.drain(..length).collect();
            seen.lock().unwrap().requests.push((number, request));
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {
                let mut seen = seen.lock().unwrap();
                seen.raw.extend_from_slice(&chunk[..n]);
                seen.connections
                    .entry(number)
                    .or_default()
                    .extend_from_slice(&chunk[..n]);
                drop(seen);
                buffer.extend_from_slice(&chunk[..n]);
            }
            _ => return,
        }
    }
}

/// The length of the complete, strictly framed request at the start of `buffer`, if there is
/// one. A malformed request never completes.
fn complete_request(buffer: &[u8]) -> Option<usize> {
    let head_end = find(buffer, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buffer[..head_end]).ok()?;
    let mut length = None;
    let mut chunked = false;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.trim().parse::<usize>().ok()?),
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    if chunked {
        return chunked_end(&buffer[head_end..]).map(|end| head_end + end);
    }
    let total = head_end + length.unwrap_or(0);
    (buffer.len() >= total).then_some(total)
}

/// The length of a complete chunked body (with an empty trailer) at the start of `body`.
fn chunked_end(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + find(&body[at..], b"\r\n")?;
        let size = std::str::from_utf8(&body[at..line_end]).ok()?;
        let size = usize::from_str_radix(size, 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return (body.get(at..at + 2)? == b"\r\n").then_some(at + 2);
        }
        at += size;
        if body.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
