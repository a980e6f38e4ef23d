//! The gateway's own HTTP/1.1 server, from raw clients: pipelined requests answered in order with
//! their bodies passed whole, `Expect: 100-continue`, HTTP/1.0 with and without keep-alive, HEAD,
//! a backend body of unknown length chunked for HTTP/1.1 clients and delimited by the close for
//! HTTP/1.0 ones, a large upload, and a client that vanishes half-way through its body.

use std::time::Duration;

use gateway_e2e::manifests::shop_gateway;
use gateway_e2e::raw::{self, RawAnswer};
use gateway_e2e::recorder::{self, Recorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const QUIET: Duration = Duration::from_millis(1500);

/// A backend answer whose length only its end tells.
const CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

fn text(answer: &RawAnswer) -> String {
    String::from_utf8_lossy(&answer.bytes).into_owned()
}

/// Responses in `answer`, bodies or not between them.
fn responses(answer: &RawAnswer) -> usize {
    text(answer).matches("HTTP/1.1 200 OK\r\n").count()
}

/// The request target of each request the backend received.
fn targets(backend: &Recorder) -> Vec<String> {
    backend
        .requests()
        .iter()
        .map(|r| {
            let line = String::from_utf8_lossy(r)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            line.split(' ').nth(1).unwrap_or("").to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order_with_their_bodies() {
    let backend = Recorder::start(recorder::OK).await;
    let (_dir, gw) = shop_gateway(backend.addr, &[]);
    // The first head is longer than the room a new connection's first read has (1 KB).
    let long = "a".repeat(3000);
    let pipelined = format!(
        "GET /1 HTTP/1.1\r\nHost: shop.test\r\nX-Long: {long}\r\n\r\n\
        POST /2 HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n\r\nhello\
        POST /3 HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
        GET /4 HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
    );
    let answer = raw::http1(gw.http, pipelined.as_bytes(), QUIET).await;
    assert_eq!(responses(&answer), 4, "{}", text(&answer));
    assert!(answer.closed, "Connection: close is honoured");
    assert!(text(&answer).contains("connection: close"));
    assert_eq!(targets(&backend), ["/1", "/2", "/3", "/4"]);
    let requests = backend.requests();
    let first = String::from_utf8_lossy(&requests[0]).to_ascii_lowercase();
    assert!(
        first.contains(&format!("\r\nx-long: {long}\r\n")),
        "{first}"
    );
    assert!(
        requests[1].ends_with(b"\r\n\r\nhello"),
        "{:?}",
        String::from_utf8_lossy(&requests[1])
    );
    assert!(
        requests[2].ends_with(b"3\r\nabc\r\n0\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&requests[2])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_expects_100_continue_gets_it_before_sending_its_body() {
    let backend = Recorder::start(recorder::OK).await;
    let (_dir, gw) = shop_gateway(backend.addr, &[]);
    let mut client = TcpStream::connect(gw.http).await.unwrap();
    client
        .write_all(b"PUT /up HTTP/1.1\r\nHost: shop.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut interim))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"data").await.unwrap();
    let answer = raw::read_until_closed(&mut client, QUIET).await;
    assert_eq!(answer.status(), Some(200), "{}", text(&answer));
    assert!(backend.requests()[0].ends_with(b"\r\n\r\ndata"));
}

#[tokio::test(flavor = "multi_thread")]
async fn http10_closes_unless_it_asks_for_keep_alive() {
    let backend = Recorder::start(recorder::OK).await;
    let (_dir, gw) = shop_gateway(backend.addr, &[]);
    let answer = raw::http1(gw.http, b"GET / HTTP/1.0\r\nHost: shop.test\r\n\r\n", QUIET).await;
    assert_eq!(answer.status(), Some(200));
    assert!(answer.closed, "HTTP/1.0 without keep-alive is closed");

    let twice = b"GET /a HTTP/1.0\r\nHost: shop.test\r\nConnection: keep-alive\r\n\r\n\
        GET /b HTTP/1.0\r\nHost: shop.test\r\nConnection: keep-alive\r\n\r\n";
    let answer = raw::http1(gw.http, twice, QUIET).await;
    assert_eq!(responses(&answer), 2, "{}", text(&answer));
    assert!(text(&answer).contains("connection: keep-alive"));
    assert!(!answer.closed, "kept open as asked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_of_unknown_length_is_chunked_for_http11_and_closed_for_http10() {
    let backend = Recorder::start(CHUNKED).await;
    let (_dir, gw) = shop_gateway(backend.addr, &[]);
    let both =
        b"GET /1 HTTP/1.1\r\nHost: shop.test\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: shop.test\r\n\r\n\
        GET /3 HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let answer = raw::http1(gw.http, both, QUIET).await;
    let answered = text(&answer);
    assert_eq!(responses(&answer), 3, "{answered}");
    assert_eq!(
        answered.matches("transfer-encoding: chunked").count(),
        3,
        "{answered}"
    );
    // HEAD gets the head only: the next response follows it at once.
    assert_eq!(
        answered.matches("hello world").count(),
        0,
        "re-chunked as it came"
    );
    assert_eq!(
        answered
            .matches("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            .count(),
        2,
        "{answered}"
    );
    assert!(!answer.closed);

    let answer = raw::http1(gw.http, b"GET / HTTP/1.0\r\nHost: shop.test\r\n\r\n", QUIET).await;
    let answered = text(&answer);
    assert!(answered.ends_with("\r\n\r\nhello world"), "{answered}");
    assert!(!answered.contains("transfer-encoding"), "{answered}");
    assert!(answer.closed, "the close ends the body");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_uploads_arrive_whole_and_a_vanished_client_reaches_no_backend() {
    let backend = Recorder::start(recorder::OK).await;
    let (_dir, gw) = shop_gateway(backend.addr, &[]);
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut upload = format!(
        "POST /big HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    upload.extend(&body);
    let answer = raw::http1(gw.http, &upload, QUIET).await;
    assert_eq!(answer.status(), Some(200), "{}", text(&answer));
    assert!(
        backend.requests()[0].ends_with(&body),
        "the body arrived whole"
    );
    backend.clear();

    let mut vanishing = TcpStream::connect(gw.http).await.unwrap();
    vanishing
        .write_all(
            b"POST /cut HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 100000\r\n\r\nonly this",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(vanishing);
    let answer = raw::http1(
        gw.http,
        b"GET /after HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
        QUIET,
    )
    .await;
    assert_eq!(answer.status(), Some(200));
    assert_eq!(
        targets(&backend),
        ["/after"],
        "a cut body is never a complete request"
    );
}

/// The value of a gauge or counter on the gateway's /metrics.
fn metric(gw: &gateway_e2e::gateway::Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, metrics) = gw.admin_get("/metrics").unwrap();
    gateway_e2e::gateway::sample(&metrics, name, labels).unwrap_or(0.0)
}

const PARKED: &str = "xdp_gateway_connections_parked";
const ACTIVE: &str = "xdp_gateway_connections_active";

/// Idle keep-alive connections leave their tasks for the parking lot a second after their last
/// response; a request wakes one up on the same connection (pipelined ones too), a client that
/// closes is let go, the keep-alive timeout closes what is left, and so does the drain's stop.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_parked_woken_and_closed() {
    let backend = Recorder::start(recorder::OK).await;
    let flags = ["--keepalive-timeout", "4", "--drain-delay", "0"];
    let (_dir, mut gw) = shop_gateway(backend.addr, &flags);
    let request = b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(gw.http).await.unwrap();
        stream.write_all(request).await.unwrap();
        assert_eq!(read_response(&mut stream).await, 200);
        idle.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(metric(&gw, PARKED, &[]), 20.0);
    assert_eq!(metric(&gw, ACTIVE, &[("scheme", "http")]), 20.0);

    // Woken by a request (two of them pipelined on one connection): answered where they came.
    let pipelined = [&request[..], &request[..]].concat();
    idle[0].write_all(&pipelined).await.unwrap();
    assert_eq!(read_response(&mut idle[0]).await, 200);
    assert_eq!(read_response(&mut idle[0]).await, 200);
    idle[1].write_all(request).await.unwrap();
    assert_eq!(read_response(&mut idle[1]).await, 200);
    // A client that closes while parked is let go at once.
    drop(idle.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metric(&gw, PARKED, &[]), 17.0);
    assert_eq!(metric(&gw, ACTIVE, &[("scheme", "http")]), 19.0);

    // Parked again after their second response; the keep-alive timeout closes every one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&gw, PARKED, &[]), 19.0);
    for stream in &mut idle {
        assert!(raw::closed_within(stream, Duration::from_secs(6)).await);
    }
    let closed = [("reason", "keepalive_timeout")];
    assert_eq!(
        metric(&gw, "xdp_gateway_connections_closed_total", &closed),
        19.0
    );
    assert_eq!(metric(&gw, PARKED, &[]), 0.0);
    assert_eq!(metric(&gw, ACTIVE, &[("scheme", "http")]), 0.0);

    // The drain's stop closes parked connections too.
    let mut last = TcpStream::connect(gw.http).await.unwrap();
    last.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut last).await, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&gw, PARKED, &[]), 1.0);
    gw.terminate();
    assert!(raw::closed_within(&mut last, Duration::from_secs(5)).await);
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
}

/// Reads one response (head and the OK body) and returns its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    text[9..12].parse().unwrap()
}
