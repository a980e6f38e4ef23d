//! Hostile clients against the real binary: path tricks around path-scoped policy, access rules
//! that cannot be applied, slow and idle connections, oversized heads, connection floods,
//! request smuggling and response splitting (checked against a backend that records the exact
//! bytes it receives), malformed HTTP/2 and HTTP/2 floods, and the same defences on a Gateway
//! API listener. Each case is the attack itself, sent as raw bytes, and the answer the README's
//! Security section promises.

use std::net::SocketAddr;
use std::time::Duration;

use gateway_e2e::backend::Backend;
use gateway_e2e::client::HttpClient;
use gateway_e2e::gateway::Gateway;
use gateway_e2e::manifests::{
    ManifestsDir, annotated_ingress, free_port, http_gateway, ingress, loopback, service,
    shop_gateway,
};
use gateway_e2e::raw::{self, h2};
use gateway_e2e::recorder::{self, Recorder};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const QUIET: Duration = Duration::from_millis(1500);

/// A gateway serving `shop.test` from `backend`: `/` open, `/admin` only to 10.9.9.9 (an
/// allow-list the test client, 127.0.0.1, is not on).
fn shop(backend: SocketAddr, admin_allow: &str, extra: &[&str]) -> (ManifestsDir, Gateway) {
    let dir = ManifestsDir::new();
    dir.write(
        "shop.yaml",
        &[
            service("shop", &[backend]),
            ingress("shop", Some("shop.test"), "/", "Prefix", "shop"),
            annotated_ingress(
                "shop-admin",
                Some("shop.test"),
                &[("/admin", "Prefix")],
                "shop",
                &[("whitelist-source-range", admin_allow)],
            ),
        ]
        .concat(),
    );
    let gateway = Gateway::start(dir.path(), extra);
    (dir, gateway)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The request line of the one request `recorder` received since it was cleared.
fn received_target(recorder: &Recorder) -> String {
    let requests = recorder.requests();
    assert_eq!(requests.len(), 1, "{:?}", recorder_text(recorder));
    let head = String::from_utf8_lossy(&requests[0]).to_string();
    head.split(' ').nth(1).unwrap_or_default().to_string()
}

fn recorder_text(recorder: &Recorder) -> String {
    String::from_utf8_lossy(&recorder.raw()).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_are_normalised_before_routing_policy_and_forwarding() {
    let backend = Recorder::start(recorder::OK).await;
    let (_dir, gw) = shop(backend.addr, "10.9.9.9/32", &[]);
    for path in [
        "/admin",
        "//admin",
        "/./admin",
        "/%61dmin",
        "/x/../admin",
        "/%2e/admin/",
        "/admin/../admin/users",
        "/static/..//admin",
    ] {
        let answer = raw::http1(gw.http, &get(path), QUIET).await;
        assert_eq!(answer.status(), Some(403), "{path}: {answer:?}");
    }
    assert!(backend.raw().is_empty(), "{}", recorder_text(&backend));

    // Climbing above the root, and broken escapes, are refused outright.
    for path in ["/../admin", "/%2e%2e/etc/passwd", "/a/%zz", "/a%2"] {
        let answer = raw::http1(gw.http, &get(path), QUIET).await;
        assert_eq!(answer.status(), Some(400), "{path}: {answer:?}");
    }
    assert!(backend.raw().is_empty(), "{}", recorder_text(&backend));

    // The backend receives the path that was matched; reserved escapes stay as they were.
    for (sent, forwarded) in [
        ("/a//b/./c/../d?x=1", "/a/b/d?x=1"),
        ("/%7Euser/%2fetc", "/~user/%2Fetc"),
        ("/shop/", "/shop/"),
    ] {
        backend.clear();
        let answer = raw::http1(gw.http, &get(sent), QUIET).await;
        assert_eq!(answer.status(), Some(200), "{sent}: {answer:?}");
        assert_eq!(received_target(&backend), forwarded, "{sent}");
    }

    // HTTP/2 requests are normalised the same way.
    let answer = HttpClient::http2()
        .get(gw.http, "shop.test", "//x/../admin")
        .await;
    assert_eq!(answer.status.as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_rule_that_cannot_be_applied_closes_its_route_only() {
    let web = Backend::start("shop").await;
    // (Ingress, path, access annotation, a value it cannot apply).
    let broken = [
        ("typo", "/admin", "whitelist-source-range", "10.9.9.999/32"),
        (
            "deny-typo",
            "/internal",
            "denylist-source-range",
            "127.0.0.1/33",
        ),
        ("auth", "/billing", "auth-url", "ftp://auth.example/verify"),
    ];
    let mut yaml =
        service("shop", &[web.addr]) + &ingress("shop", Some("shop.test"), "/", "Prefix", "shop");
    for (name, path, annotation, value) in broken {
        yaml += &annotated_ingress(
            name,
            Some("shop.test"),
            &[(path, "Prefix")],
            "shop",
            &[(annotation, value)],
        );
    }
    let dir = ManifestsDir::new();
    dir.write("shop.yaml", &yaml);
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    for path in ["/admin", "//admin/x", "/internal", "/billing"] {
        let answer = client.get(gw.http, "shop.test", path).await;
        assert_eq!(answer.status.as_u16(), 503, "{path}");
        assert!(
            answer.body.contains("route is closed"),
            "{path}: {}",
            answer.body
        );
    }
    assert_eq!(client.get(gw.http, "shop.test", "/").await.status, 200);
    assert_eq!(client.get(gw.http, "shop.test", "/other").await.status, 200);

    let routes = gw.routes().to_string();
    for annotation in [
        "whitelist-source-range",
        "denylist-source-range",
        "auth-url",
    ] {
        assert!(routes.contains(annotation), "{annotation} in {routes}");
    }
    assert!(
        routes.contains("answers 503 until this is fixed"),
        "{routes}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_silent_and_idle_clients_are_closed() {
    let backend = Recorder::start(recorder::OK).await;
    let timeouts = [
        "--client-header-timeout",
        "1",
        "--keepalive-timeout",
        "3",
        "--client-body-timeout",
        "1",
    ];
    let (_dir, gw) = shop(backend.addr, "10.9.9.9/32", &timeouts);
    let limit = Duration::from_secs(6);

    // Sent nothing at all.
    let mut silent = TcpStream::connect(gw.http).await.unwrap();
    // Half a request head, then silence.
    let mut half = TcpStream::connect(gw.http).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\nX-Slow")
        .await
        .unwrap();
    // Slowloris: a header line every 300 ms never finishes the head in time.
    let mut loris = TcpStream::connect(gw.http).await.unwrap();
    loris
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n")
        .await
        .unwrap();
    let drip = tokio::spawn(async move {
        for i in 0..20 {
            if loris
                .write_all(format!("X-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        raw::closed_within(&mut loris, Duration::from_millis(1)).await
    });
    assert!(
        raw::closed_within(&mut silent, limit).await,
        "silent client"
    );
    assert!(raw::closed_within(&mut half, limit).await, "half a head");
    assert!(drip.await.unwrap(), "slowloris still open after 6 s");

    // Idle after a keep-alive response: still open after the header timeout (idle is timed
    // by the keep-alive timeout), closed after the keep-alive timeout.
    let mut idle = TcpStream::connect(gw.http).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    assert!(!raw::closed_within(&mut idle, Duration::from_millis(1800)).await);
    assert!(
        raw::closed_within(&mut idle, limit).await,
        "idle keep-alive"
    );

    // A body that stops half-way: 408 and the connection closes.
    let mut slow_body = TcpStream::connect(gw.http).await.unwrap();
    slow_body
        .write_all(b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let answer = raw::read_until_closed(&mut slow_body, limit).await;
    assert_eq!(answer.status(), Some(408), "{answer:?}");
    assert!(answer.closed);

    // HTTP/2: idle means no open stream, whatever frames arrive; PINGs do not keep it open.
    let mut h2_idle = h2::connect(gw.http).await;
    let headers = h2::block(&h2::get(b"shop.test", b"/"));
    h2_idle
        .write_all(&h2::frame(
            h2::HEADERS,
            h2::END_HEADERS | h2::END_STREAM,
            1,
            &headers,
        ))
        .await
        .unwrap();
    assert_eq!(
        h2::outcome(&mut h2_idle, 1, limit).await,
        h2::Outcome::Answered(Some(200))
    );
    let pinger = tokio::spawn(async move {
        let mut closed = false;
        for _ in 0..20 {
            let ping = h2::frame(h2::PING, 0, 0, &[7; 8]);
            if h2_idle.write_all(&ping).await.is_err() {
                closed = true;
                break;
            }
            if let h2::Outcome::GoAway(_) | h2::Outcome::Closed =
                h2::outcome(&mut h2_idle, 1, Duration::from_millis(400)).await
            {
                closed = true;
                break;
            }
        }
        closed
    });
    assert!(
        pinger.await.unwrap(),
        "an HTTP/2 connection kept open by PINGs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_heads_get_414_and_431() {
    let backend = Recorder::start(recorder::OK).await;
    let (_dir, gw) = shop(backend.addr, "10.9.9.9/32", &[]);
    let long_target = format!("/{}", "a".repeat(9000));
    let long_line = format!("X-Big: {}\r\n", "b".repeat(9000));
    let huge = format!("X-Huge: {}\r\n", "h".repeat(100_000));
    let many: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases = [
        (
            format!("GET {long_target} HTTP/1.1\r\nHost: shop.test\r\n\r\n"),
            414,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: shop.test\r\n{long_line}\r\n"),
            431,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: shop.test\r\n{huge}\r\n"),
            431,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: shop.test\r\n{many}\r\n"),
            431,
        ),
    ];
    for (request, status) in cases {
        let answer = raw::http1(gw.http, request.as_bytes(), QUIET).await;
        assert_eq!(answer.status(), Some(status), "{}", &request[..60]);
        assert!(answer.closed, "{}", &request[..60]);
    }
    assert!(backend.raw().is_empty(), "{}", recorder_text(&backend));
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_caps_hold_overall_per_source_and_for_tls_handshakes() {
    let backend = Recorder::start(recorder::OK).await;
    let (_dir, gw) = shop(
        backend.addr,
        "10.9.9.9/32",
        &[
            "--max-connections-per-source",
            "3",
            "--max-tls-handshakes",
            "1",
            "--tls-handshake-timeout",
            "5",
        ],
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(gw.http).await.unwrap());
    }
    // Accepted by the kernel, closed by the gateway at once.
    let mut over = TcpStream::connect(gw.http).await.unwrap();
    assert!(raw::closed_within(&mut over, Duration::from_secs(3)).await);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = raw::http1(gw.http, &get("/"), QUIET).await;
    assert_eq!(answer.status(), Some(200), "a place was given back");

    // One handshake at a time: a client that never sends its ClientHello holds the turn, and
    // the next handshake (a malformed hello, refused as soon as it is read) waits for it.
    let mut stalled = TcpStream::connect(gw.https).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut waiting = TcpStream::connect(gw.https).await.unwrap();
    waiting
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0])
        .await
        .unwrap();
    assert!(
        !raw::closed_within(&mut waiting, Duration::from_millis(700)).await,
        "the second handshake ran while the first held the only turn"
    );
    stalled.shutdown().await.unwrap();
    drop(stalled);
    assert!(raw::closed_within(&mut waiting, Duration::from_secs(2)).await);
    let metrics = gw.admin_get("/metrics").unwrap().1;
    assert!(
        metrics.contains(
            "xdp_gateway_connections_refused_total{limit=\"max_connections_per_source\"} 1"
        ),
        "{metrics}"
    );
}

/// Requests whose framing two parsers could read differently. Each is refused with 400 and a
/// closed connection, and nothing at all reaches the backend.
fn smuggling_attempts() -> Vec<(&'static str, Vec<u8>)> {
    let head = |fields: &str| {
        format!("POST / HTTP/1.1\r\nHost: shop.test\r\n{fields}\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            .into_bytes()
    };
    vec![
        (
            "CL.TE",
            head("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n"),
        ),
        (
            "TE.CL",
            head("Transfer-Encoding: chunked\r\nContent-Length: 6\r\n"),
        ),
        (
            "differing Content-Lengths",
            head("Content-Length: 5\r\nContent-Length: 6\r\n"),
        ),
        (
            "duplicate Content-Length",
            head("Content-Length: 5\r\nContent-Length: 5\r\n"),
        ),
        (
            "comma-separated Content-Length",
            head("Content-Length: 5, 5\r\n"),
        ),
        ("signed Content-Length", head("Content-Length: +5\r\n")),
        (
            "TE chunked, identity",
            head("Transfer-Encoding: chunked, identity\r\n"),
        ),
        (
            "TE identity, chunked",
            head("Transfer-Encoding: identity, chunked\r\n"),
        ),
        ("TE xchunked", head("Transfer-Encoding: xchunked\r\n")),
        (
            "TE twice",
            head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        ),
        (
            "TE vertical tab",
            head("Transfer-Encoding: \x0bchunked\r\n"),
        ),
        (
            "TE trailing vertical tab",
            head("Transfer-Encoding: chunked\x0b\r\n"),
        ),
        (
            "TE space before colon",
            head("Transfer-Encoding : chunked\r\n"),
        ),
        (
            "TE tab before colon",
            head("Transfer-Encoding\t: chunked\r\n"),
        ),
        ("TE obs-fold", head("Transfer-Encoding:\r\n chunked\r\n")),
        ("obs-fold", head("X-A: a\r\n b\r\nContent-Length: 5\r\n")),
        (
            "bare CR in a value",
            head("X-A: a\rb\r\nContent-Length: 5\r\n"),
        ),
        ("NUL in a value", head("X-A: a\0b\r\nContent-Length: 5\r\n")),
        (
            "control character in a name",
            head("X\x01A: b\r\nContent-Length: 5\r\n"),
        ),
        (
            "TE on HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: shop.test\r\nHost: evil.test\r\n\r\n".to_vec(),
        ),
        ("no Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "absolute-form authority differs from Host",
            b"GET http://evil.test/ HTTP/1.1\r\nHost: shop.test\r\n\r\n".to_vec(),
        ),
        (
            "space in the target",
            b"GET /a b HTTP/1.1\r\nHost: shop.test\r\n\r\n".to_vec(),
        ),
    ]
}

/// Chunked bodies with broken framing: the head is fine, so the request may have started
/// towards the backend; the client gets 400, the backend never a complete request.
fn broken_chunks() -> Vec<(&'static str, &'static str)> {
    vec![
        ("negative size", "-1\r\nx\r\n0\r\n\r\n"),
        ("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("space inside the size", "5 5\r\nhello\r\n0\r\n\r\n"),
        (
            "overflowing size",
            "fffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        ),
        ("bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
        ("bare LF in an extension", "5;a=b\nc\r\nhello\r\n0\r\n\r\n"),
        ("data longer than the size", "3\r\nhello\r\n0\r\n\r\n"),
        ("no CRLF after the data", "5\r\nhelloXX0\r\n\r\n"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn request_smuggling_is_refused_before_any_backend() {
    let backend = Recorder::start(recorder::OK).await;
    let (_dir, gw) = shop(backend.addr, "10.9.9.9/32", &[]);
    for (name, attack) in smuggling_attempts() {
        let answer = raw::http1(gw.http, &attack, QUIET).await;
        assert_eq!(answer.status(), Some(400), "{name}: {answer:?}");
        assert_eq!(answer.responses(), 1, "{name}: one answer only");
        assert!(answer.closed, "{name}: the connection must close");
        assert!(
            backend.raw().is_empty(),
            "{name} reached the backend: {}",
            recorder_text(&backend)
        );
    }
    for (name, body) in broken_chunks() {
        let attack = format!(
            "POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}\
             GET /admin HTTP/1.1\r\nHost: shop.test\r\n\r\n"
        );
        let answer = raw::http1(gw.http, attack.as_bytes(), QUIET).await;
        assert_eq!(answer.status(), Some(400), "{name}: {answer:?}");
        assert_eq!(answer.responses(), 1, "{name}: one answer only");
        assert!(answer.closed, "{name}");
        assert!(
            backend.requests().is_empty(),
            "{name}: {}",
            recorder_text(&backend)
        );
        backend.clear();
    }

    // What is allowed is passed on as exactly one clean request: bare LF line ends (RFC 9112
    // lets a recipient accept them) and a chunked body arrive re-framed with CRLF.
    for (name, request) in [
        ("bare LF head", b"GET /lf HTTP/1.1\nHost: shop.test\n\n".to_vec()),
        (
            "chunked with an extension",
            b"POST /c HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: Chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
    ] {
        backend.clear();
        let answer = raw::http1(gw.http, &request, QUIET).await;
        assert_eq!(answer.status(), Some(200), "{name}: {answer:?}");
        let requests = backend.requests();
        assert_eq!(requests.len(), 1, "{name}: {}", recorder_text(&backend));
        assert_eq!(backend.connection_of(0), requests[0], "{name}: other bytes");
        assert!(
            !requests[0].windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "{name}: a bare LF was passed on"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_backend_responses_become_502() {
    let responses: [(&str, &'static [u8]); 6] = [
        (
            "CL and TE",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "differing Content-Lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        ),
        (
            "duplicate Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "TE other than chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "bare CR in a value",
            b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: x\r\nContent-Length: 2\r\n\r\nok",
        ),
    ];
    // One host per backend, all behind one gateway.
    let mut backends = Vec::new();
    let mut manifests = String::new();
    for (i, (_, response)) in responses.iter().enumerate() {
        let backend = Recorder::start(response).await;
        let name = format!("r{i}");
        manifests += &service(&name, &[backend.addr]);
        manifests += &ingress(&name, Some(&format!("{name}.test")), "/", "Prefix", &name);
        backends.push(backend);
    }
    let dir = ManifestsDir::new();
    dir.write("responses.yaml", &manifests);
    let gw = Gateway::start(dir.path(), &[]);
    for (i, (name, _)) in responses.iter().enumerate() {
        let request = format!("GET / HTTP/1.1\r\nHost: r{i}.test\r\nConnection: close\r\n\r\n");
        let answer = raw::http1(gw.http, request.as_bytes(), QUIET).await;
        assert_eq!(answer.status(), Some(502), "{name}: {answer:?}");
        assert_eq!(answer.responses(), 1, "{name}: {answer:?}");
        let text = String::from_utf8_lossy(&answer.bytes);
        assert!(
            !text.to_ascii_lowercase().contains("set-cookie"),
            "{name}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_http2_never_reaches_a_backend() {
    let backend = Recorder::start(recorder::OK).await;
    let (_dir, gw) = shop(backend.addr, "10.9.9.9/32", &[]);
    let get = h2::get(b"shop.test", b"/");
    let with = |extra: &[(&'static [u8], &'static [u8])]| {
        let mut fields = get.clone();
        fields.extend_from_slice(extra);
        fields
    };
    let cases: Vec<(&str, h2::Fields)> = vec![
        ("connection header", with(&[(b"connection", b"keep-alive")])),
        (
            "transfer-encoding header",
            with(&[(b"transfer-encoding", b"chunked")]),
        ),
        ("upgrade header", with(&[(b"upgrade", b"h2c")])),
        ("te other than trailers", with(&[(b"te", b"gzip")])),
        (
            "CRLF in a value",
            with(&[(b"x-a", b"a\r\nhost: evil.test")]),
        ),
        ("LF in a value", with(&[(b"x-a", b"a\nb")])),
        ("NUL in a value", with(&[(b"x-a", b"a\0b")])),
        ("upper-case name", with(&[(b"X-Upper", b"a")])),
        ("pseudo-header after a field", {
            let mut fields = vec![(b"x-a".as_slice(), b"a".as_slice())];
            fields.extend(get.iter().copied());
            fields
        }),
        ("duplicate :path", with(&[(b":path", b"/admin")])),
        ("unknown pseudo-header", with(&[(b":evil", b"1")])),
        ("no :method", get[1..].to_vec()),
        (
            "Host differs from :authority",
            with(&[(b"host", b"evil.test")]),
        ),
    ];
    for (name, fields) in cases {
        let mut stream = h2::connect(gw.http).await;
        let headers = h2::frame(
            h2::HEADERS,
            h2::END_HEADERS | h2::END_STREAM,
            1,
            &h2::block(&fields),
        );
        stream.write_all(&headers).await.unwrap();
        let outcome = h2::outcome(&mut stream, 1, Duration::from_secs(5)).await;
        assert!(
            matches!(
                outcome,
                h2::Outcome::Reset(_) | h2::Outcome::GoAway(_) | h2::Outcome::Answered(Some(400))
            ),
            "{name}: {outcome:?}"
        );
        assert!(
            backend.raw().is_empty(),
            "{name}: {}",
            recorder_text(&backend)
        );
    }

    // content-length that the DATA frames contradict: the stream is reset and the backend
    // never gets a complete request.
    let mut stream = h2::connect(gw.http).await;
    let mut fields = h2::get(b"shop.test", b"/");
    fields[0].1 = b"POST";
    fields.push((b"content-length", b"3"));
    let mut bytes = h2::frame(h2::HEADERS, h2::END_HEADERS, 1, &h2::block(&fields));
    bytes.extend(h2::frame(h2::DATA, h2::END_STREAM, 1, b"0123456789"));
    stream.write_all(&bytes).await.unwrap();
    let outcome = h2::outcome(&mut stream, 1, Duration::from_secs(5)).await;
    assert!(
        matches!(outcome, h2::Outcome::Reset(_) | h2::Outcome::GoAway(_)),
        "{outcome:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(backend.requests().is_empty(), "{}", recorder_text(&backend));
}

/// The `i`-th unit of the flood `name`; the first may open the stream the others use.
fn flood_unit(name: &str, i: u32) -> Vec<u8> {
    let request = |method: &'static [u8]| {
        h2::block(&[
            (b":method", method),
            (b":scheme", b"http"),
            (b":authority", b"shop.test"),
            (b":path", b"/"),
        ])
    };
    match name {
        "PING" => h2::frame(h2::PING, 0, 0, &[1; 8]),
        "SETTINGS" => h2::frame(h2::SETTINGS, 0, 0, &[]),
        "WINDOW_UPDATE" => h2::frame(h2::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1]),
        "empty DATA" if i == 0 => h2::frame(h2::HEADERS, h2::END_HEADERS, 1, &request(b"POST")),
        "empty DATA" => h2::frame(h2::DATA, 0, 1, &[]),
        "rapid reset" => {
            let stream = 2 * i + 1;
            let flags = h2::END_HEADERS | h2::END_STREAM;
            let mut bytes = h2::frame(h2::HEADERS, flags, stream, &request(b"GET"));
            bytes.extend(h2::frame(h2::RST_STREAM, 0, stream, &[0, 0, 0, 8]));
            bytes
        }
        "CONTINUATION" if i == 0 => h2::frame(h2::HEADERS, 0, 1, &request(b"GET")),
        "CONTINUATION" => h2::frame(h2::CONTINUATION, 0, 1, &h2::block(&[(b"x-a", b"aaaa")])),
        other => panic!("no flood {other}"),
    }
}

/// Sends flood `name` (at most 50,000 units, for at most 10 s) on a new HTTP/2 connection,
/// and says whether the gateway sent GOAWAY or closed it.
async fn flood(addr: SocketAddr, name: &str) -> bool {
    let mut stream = h2::connect(addr).await;
    let started = std::time::Instant::now();
    let mut batch = Vec::new();
    for i in 0..50_000 {
        batch.extend(flood_unit(name, i));
        if batch.len() > 16 * 1024 {
            if stream.write_all(&batch).await.is_err() {
                return true;
            }
            batch.clear();
        }
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let _ = stream.write_all(&batch).await;
    matches!(
        h2::outcome(&mut stream, u32::MAX, Duration::from_secs(5)).await,
        h2::Outcome::GoAway(_) | h2::Outcome::Closed
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_floods_get_goaway_and_other_clients_carry_on() {
    let web = Backend::start("shop").await;
    let (_dir, gw) = shop_gateway(web.addr, &[]);
    let addr = gw.http;
    let steady = gateway_e2e::client::SteadyLoad::start(addr, "shop.test", 2);
    for name in [
        "PING",
        "SETTINGS",
        "WINDOW_UPDATE",
        "empty DATA",
        "rapid reset",
        "CONTINUATION",
    ] {
        assert!(flood(addr, name).await, "{name} flood was not stopped");
    }

    // Too many streams at once: those past the limit are refused, the connection lives on.
    let mut stream = h2::connect(addr).await;
    let slow = h2::block(&h2::get(b"shop.test", b"/sleep/2000"));
    let mut bytes = Vec::new();
    for i in 0..200u32 {
        bytes.extend(h2::frame(
            h2::HEADERS,
            h2::END_HEADERS | h2::END_STREAM,
            2 * i + 1,
            &slow,
        ));
    }
    stream.write_all(&bytes).await.unwrap();
    assert_eq!(
        h2::outcome(&mut stream, 2 * 150 + 1, Duration::from_secs(5)).await,
        h2::Outcome::Reset(0x7),
        "REFUSED_STREAM past 128 streams"
    );

    let (ok, errors) = steady.stop().await;
    assert!(
        ok > 0 && errors.is_empty(),
        "steady client: {ok} ok, errors {errors:?}"
    );
    let metrics = gw.admin_get("/metrics").unwrap().1;
    assert!(
        metrics.contains("xdp_gateway_connections_closed_total{reason=\"http2_flood\"}"),
        "{metrics}"
    );
}

/// A client that vanished mid-request (no FIN, no RST: a dead peer) keeps its stream open; the
/// gateway's PINGs find it out and the connection is closed, while a client that answers them
/// waits out a slow answer.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_that_stops_answering_pings_is_dropped() {
    let web = Backend::start("shop").await;
    let (_dir, gw) = shop_gateway(web.addr, &["--http2-ping-interval", "1"]);
    let live = HttpClient::http2();
    let live = live.get(gw.http, "shop.test", "/sleep/3000");
    let mut dead = h2::connect(gw.http).await;
    let slow = h2::block(&h2::get(b"shop.test", b"/sleep/10000"));
    dead.write_all(&h2::frame(
        h2::HEADERS,
        h2::END_HEADERS | h2::END_STREAM,
        1,
        &slow,
    ))
    .await
    .unwrap();
    // `outcome` never answers PINGs; the backend answers after 10 s.
    let (live, dead) = tokio::join!(live, h2::outcome(&mut dead, 1, Duration::from_secs(8)));
    assert_eq!(dead, h2::Outcome::GoAway(0), "a dead client's connection");
    assert_eq!(live.status, 200, "{}", live.body);
}

/// A Gateway listener is served by the same code as the gateway's own listeners: paths are
/// normalised once, before its matches; smuggling is refused before any backend; a slow head
/// times out.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_listener_gets_the_same_defences() {
    let backend = Recorder::start(recorder::OK).await;
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write(
        "shop.yaml",
        &(service("shop", &[backend.addr])
            + &http_gateway("default", port)
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
               metadata: {name: shop, namespace: default}\n\
               spec:\n  parentRefs: [{name: edge}]\n  rules:\n  \
               - matches: [{path: {value: /public}}]\n    backendRefs: [{name: shop, port: 80}]\n  \
               - matches: [{path: {value: /admin}, headers: [{name: x-admin-token, value: s3cret}]}]\n    \
               backendRefs: [{name: shop, port: 80}]\n"),
    );
    let _gw = Gateway::start(dir.path(), &["--client-header-timeout", "1"]);
    let listener = loopback(port);

    // The path is matched as the backend would read it: dot segments, encoded or not, cannot
    // reach /admin past its header match.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "/public/./../admin",
    ] {
        backend.clear();
        let answer = raw::http1(listener, &get(path), QUIET).await;
        assert_eq!(answer.status(), Some(404), "{path}: {answer:?}");
        assert!(
            backend.raw().is_empty(),
            "{path}: {}",
            recorder_text(&backend)
        );
    }
    backend.clear();
    let with_token = b"GET /public/../admin/x HTTP/1.1\r\nHost: shop.test\r\nX-Admin-Token: s3cret\r\nConnection: close\r\n\r\n";
    let answer = raw::http1(listener, with_token, QUIET).await;
    assert_eq!(answer.status(), Some(200), "{answer:?}");
    assert_eq!(received_target(&backend), "/admin/x");

    for (name, attack) in smuggling_attempts() {
        backend.clear();
        let answer = raw::http1(listener, &attack, QUIET).await;
        assert_eq!(answer.status(), Some(400), "{name}: {answer:?}");
        assert!(answer.closed, "{name}: the connection must close");
        assert!(
            backend.raw().is_empty(),
            "{name}: {}",
            recorder_text(&backend)
        );
    }

    let mut half = TcpStream::connect(listener).await.unwrap();
    half.write_all(b"GET /public HTTP/1.1\r\nHost: shop.test\r\nX-Slow")
        .await
        .unwrap();
    assert!(
        raw::closed_within(&mut half, Duration::from_secs(4)).await,
        "a slow head is closed"
    );
}
