//! The gateway's own HTTP/1.1 towards backends, against a scripted raw backend that answers
//! each request with the next of its responses, dribbled a few bytes at a time: every body
//! framing arrives whole, 1xx heads are passed over, connections are reused exactly when the
//! response allows it, a request body of unknown length goes chunked, and a broken response
//! never reaches the client as if it were whole.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gateway_e2e::client::HttpClient;
use gateway_e2e::manifests::shop_gateway;
use gateway_e2e::raw;
use hyper::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers the n-th request (over all connections) with `responses[n]`,
/// closing the connection after responses that end with it; it records each request and
/// the number of its connection.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(usize, String)>>>,
}

impl Scripted {
    async fn start(responses: Vec<(&'static [u8], bool)>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicUsize::new(0));
        let responses = Arc::new(responses);
        let seen = requests.clone();
        tokio::spawn(async move {
            let mut number = 0;
            while let Ok((stream, _)) = listener.accept().await {
                number += 1;
                let (seen, next, responses) = (seen.clone(), next.clone(), responses.clone());
                tokio::spawn(serve(stream, number, seen, next, responses));
            }
        });
        Scripted { addr, requests }
    }

    /// The connection number of each request so far.
    fn connections(&self) -> Vec<usize> {
        self.requests.lock().unwrap().iter().map(|r| r.0).collect()
    }

    fn request(&self, index: usize) -> String {
        self.requests.lock().unwrap()[index].1.clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    number: usize,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
    next: Arc<AtomicUsize>,
    responses: Arc<Vec<(&'static [u8], bool)>>,
) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(length) = complete(&buffer) else {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => {
                    buffer.extend_from_slice(&chunk[..n]);
                    continue;
                }
                _ => return,
            }
        };
        let request: Vec<u8> = buffer.drain(..length).collect();
        seen.lock()
            .unwrap()
            .push((number, String::from_utf8_lossy(&request).into_owned()));
        let (response, close) = responses[next.fetch_add(1, Ordering::SeqCst)];
        for piece in response.chunks(3) {
            if stream.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if close {
            return;
        }
    }
}

/// The length of the complete request at the start of `buffer`: a head, then a body of its
/// Content-Length or a chunked body.
fn complete(buffer: &[u8]) -> Option<usize> {
    let head = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buffer[..head]).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        let end = buffer[head..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some(head + end + 5);
    }
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
    (buffer.len() >= head + length).then_some(head + length)
}

/// A response with 40 header fields (more than the parser's first try has room for), in a head
/// longer than the room of the first read from a backend (1 KB).
fn many_fields() -> &'static [u8] {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..40 {
        head += &format!("x-{i}: {}\r\n", "v".repeat(40));
    }
    head += "content-length: 4\r\n\r\nmany";
    head.into_bytes().leak()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_framing_arrives_whole_and_connections_are_reused_when_they_may_be() {
    let backend = Scripted::start(vec![
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world",
            false,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: x\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nlast",
            true,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the backend closes", true),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold", false),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter", false),
        (many_fields(), false),
    ])
    .await;
    // One worker: keep-alive pools are per worker, and the client may use a second
    // connection, which another worker would serve.
    let (_dir, gw) = shop_gateway(backend.addr, &["--worker-threads", "1"]);
    let client = HttpClient::new();
    let expected = [
        (200, "hello world"),
        (200, "hello world"),
        (204, ""),
        (200, "last"),
        (200, "until the backend closes"),
        (200, "old"),
        (200, "after"),
        (200, "many"),
    ];
    let mut answers = Vec::new();
    for (i, (status, body)) in expected.iter().enumerate() {
        let answer = client.get(gw.http, "shop.test", &format!("/{i}")).await;
        assert_eq!(answer.status.as_u16(), *status, "request {i}: {answer:?}");
        assert_eq!(answer.body, *body, "request {i}");
        answers.push(answer);
    }
    // Requests 0-3 share a connection (3 asked to close it), 4 reads until the backend closes,
    // 5 is HTTP/1.0 (not kept), 6 needs a new one and 7 reuses it.
    assert_eq!(backend.connections(), [1, 1, 1, 1, 2, 3, 4, 4]);
    assert_eq!(
        answers[7].headers["x-39"],
        "v".repeat(40),
        "every field of a long head arrives"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_of_unknown_length_goes_chunked_and_a_known_one_as_it_is() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let backend = Scripted::start(vec![(ok, false), (ok, false)]).await;
    let (_dir, gw) = shop_gateway(backend.addr, &[]);

    // A chunked body from the client has no length: it goes chunked to the backend (in the
    // pieces it arrived in).
    let answer = raw::http1(
        gw.http,
        b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(answer.status(), Some(200), "{answer:?}");
    let sent = backend.request(0).to_ascii_lowercase();
    assert_eq!(sent.matches("transfer-encoding").count(), 1, "{sent}");
    assert!(sent.contains("transfer-encoding: chunked\r\n"), "{sent}");
    assert!(
        sent.ends_with("\r\n\r\na\r\n0123456789\r\n0\r\n\r\n"),
        "{sent}"
    );

    let answer = HttpClient::new()
        .send(
            gw.http,
            "shop.test",
            Request::builder().method(Method::POST).uri("/upload"),
            Bytes::from_static(b"abc"),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let sent = backend.request(1).to_ascii_lowercase();
    assert!(sent.contains("content-length: 3\r\n"), "{sent}");
    assert!(!sent.contains("transfer-encoding"), "{sent}");
    assert!(sent.ends_with("\r\n\r\nabc"), "{sent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_responses_are_502_or_cut_short_never_passed_as_whole() {
    let backend = Scripted::start(vec![
        // A head that does not parse.
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", true),
        // Closed before any response.
        (b"", true),
        // A chunked body whose size line is broken after the first chunk.
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n",
            true,
        ),
        // Shorter than its Content-Length.
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", true),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    ])
    .await;
    let (_dir, gw) = shop_gateway(backend.addr, &[]);
    let client = HttpClient::new();
    for i in 0..2 {
        let answer = client.get(gw.http, "shop.test", "/").await;
        assert_eq!(answer.status, 502, "request {i}: {answer:?}");
    }
    // Once the head has gone to the client, a broken body can only be cut short: the client
    // sees an error, never a complete response.
    for i in 2..4 {
        let result = client
            .send(gw.http, "shop.test", Request::get("/"), Bytes::new())
            .await;
        assert!(result.is_err(), "request {i}: {result:?}");
    }
    let answer = client.get(gw.http, "shop.test", "/").await;
    assert_eq!(answer.body, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_sees_each_forwarding_header_once_with_the_gateways_value() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let backend = Scripted::start(vec![(ok, false), (ok, false)]).await;
    let (_dir, gw) = shop_gateway(backend.addr, &[]);
    let claims = [
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-host",
    ];
    let port = gw.http.port().to_string();
    let expected = [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-port", port.as_str()),
        ("x-forwarded-host", "shop.test"),
        ("host", "shop.test"),
    ];
    // The same over HTTP/1.1 (Host) and HTTP/2 (an authority, no Host).
    for client in [HttpClient::new(), HttpClient::http2()] {
        let mut request = Request::get("/claims");
        for name in claims {
            request = request.header(name, "6.6.6.6");
        }
        let answer = client
            .send(gw.http, "shop.test", request, Bytes::new())
            .await
            .unwrap();
        assert_eq!(answer.status.as_u16(), 200, "{answer:?}");
    }
    for index in 0..2 {
        let sent = backend.request(index).to_ascii_lowercase();
        for (name, value) in expected {
            let lines: Vec<&str> = sent
                .lines()
                .filter(|line| line.starts_with(&format!("{name}:")))
                .collect();
            assert_eq!(
                lines,
                [format!("{name}: {value}")],
                "request {index}: {sent}"
            );
        }
    }
}
