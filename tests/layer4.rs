//! Layer 4 end to end: TCP and UDP ports of the tcp-services / udp-services ConfigMaps relayed
//! by the real gateway to backends on loopback, TLS passed through by server name, and the
//! PROXY protocol in and out; with the hostile-client rules of these listeners (header
//! timeouts, malformed headers, idle sessions, a flood of UDP flows).

use std::net::SocketAddr;
use std::time::Duration;

use gateway_e2e::backend::{Backend, Behaviour, UdpBackend};
use gateway_e2e::gateway::{Gateway, condition, log_lines, object, sample};
use gateway_e2e::manifests::{
    ManifestsDir, annotated_ingress, free_port, gateway, gateway_class, loopback, service,
};
use gateway_e2e::pki::{Ca, TlsHttp, connect, presented};
use gateway_e2e::raw::closed_within;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The ConfigMap `default/NAME` with `entries` (port, value).
fn config_map(name: &str, entries: &[(u16, &str)]) -> String {
    let data: String = entries
        .iter()
        .map(|(port, value)| format!("  \"{port}\": \"{value}\"\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata:\n{data}---\n"
    )
}

/// A TCP backend that reads a connection to its end (the client's half-close), then answers
/// `got:` and everything it read, and closes. Each connection's bytes are also reported.
struct TcpBackend {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Vec<u8>>,
    task: JoinHandle<()>,
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpBackend {
    async fn start() -> TcpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (report, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let report = report.clone();
                tokio::spawn(async move {
                    let mut read = Vec::new();
                    if stream.read_to_end(&mut read).await.is_err() {
                        return;
                    }
                    let _ = report.send(read.clone());
                    let _ = stream.write_all(b"got:").await;
                    let _ = stream.write_all(&read).await;
                });
            }
        });
        TcpBackend { addr, seen, task }
    }
}

/// Sends `bytes`, half-closes, and reads the answer to its end.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered within 10s")
        .expect("read");
    answer
}

/// A gateway relaying port `port` (of the tcp-services ConfigMap, value `value`) to Service
/// `db`, whose endpoints are `endpoints`.
fn tcp_gateway(
    port: u16,
    value: &str,
    endpoints: &[SocketAddr],
    extra: &[&str],
) -> (ManifestsDir, Gateway) {
    let dir = ManifestsDir::new();
    dir.write(
        "db.yaml",
        &(service("db", endpoints) + &config_map("tcp-services", &[(port, value)])),
    );
    let mut args = vec!["--tcp-services-configmap", "default/tcp-services"];
    args.extend(extra);
    let gateway = Gateway::start(dir.path(), &args);
    (dir, gateway)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_port_relays_both_ways_and_a_half_close_delivers_the_last_bytes() {
    let mut backend = TcpBackend::start().await;
    let port = free_port();
    // A folder of its own, removed with the test.
    let logs = ManifestsDir::new();
    let log = logs.path().join("access.log");
    let log_flag = log.to_str().unwrap().to_string();
    let (_dir, gateway) = tcp_gateway(
        port,
        "default/db:80",
        &[backend.addr],
        &["--access-log", &log_flag],
    );
    // 1 MiB one way; the answer comes only after the gateway passed the half-close on.
    let upload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let answer = exchange(loopback(port), &upload).await;
    assert_eq!(&answer[..4], b"got:");
    assert!(answer[4..] == upload[..], "the whole upload came back");
    assert_eq!(backend.seen.recv().await.unwrap().len(), upload.len());

    let streams = &gateway.routes()["streams"];
    assert_eq!(streams[0]["protocol"], "tcp", "{streams}");
    assert_eq!(streams[0]["listener"], loopback(port).to_string());
    assert_eq!(
        streams[0]["backends"][0]["endpoints"][0],
        backend.addr.to_string()
    );
    let (_, metrics) = gateway.admin_get("/metrics").unwrap();
    let closed = [("protocol", "tcp"), ("end", "closed")];
    assert_eq!(
        sample(&metrics, "xdp_gateway_stream_sessions_total", &closed),
        Some(1.0)
    );
    let received = [("protocol", "tcp"), ("direction", "received")];
    assert_eq!(
        sample(&metrics, "xdp_gateway_stream_bytes_total", &received),
        Some(upload.len() as f64)
    );
    let lines = log_lines(&log, 1);
    let line: Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(line["protocol"], "tcp");
    assert_eq!(line["end"], "closed");
    assert_eq!(line["bytes_received"], upload.len());
    assert_eq!(line["bytes_sent"], upload.len() + 4);
    assert_eq!(line["upstream_addr"], backend.addr.to_string());
    assert_eq!(line["service"], "db");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_endpoint_is_retried_on_the_next_one() {
    let backend = TcpBackend::start().await;
    let dead = loopback(free_port());
    let port = free_port();
    let (_dir, _gateway) = tcp_gateway(port, "default/db:http", &[dead, backend.addr], &[]);
    for i in 0..6 {
        let answer = exchange(loopback(port), format!("hello {i}").as_bytes()).await;
        assert_eq!(answer, format!("got:hello {i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_protocol_is_read_from_clients_and_written_to_backends() {
    let mut backend = TcpBackend::start().await;
    let port = free_port();
    let (_dir, _gateway) = tcp_gateway(port, "default/db:80:PROXY:PROXY", &[backend.addr], &[]);
    let v1 = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 9000\r\nhello";
    let answer = exchange(loopback(port), v1).await;
    assert_eq!(
        answer,
        b"got:PROXY TCP4 203.0.113.7 198.51.100.1 40000 9000\r\nhello"
    );
    // Version 2 in (IPv6), version 1 out.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend(
        "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend(40001u16.to_be_bytes());
    v2.extend(9000u16.to_be_bytes());
    v2.extend(b"over v2");
    let answer = exchange(loopback(port), &v2).await;
    assert_eq!(
        answer,
        b"got:PROXY TCP6 2001:db8::7 2001:db8::1 40001 9000\r\nover v2"
    );
    let _ = backend.seen.recv().await;
    let _ = backend.seen.recv().await;

    // Without a header, or with a malformed one, nothing reaches the backend.
    for bad in [
        &b"hello without a header"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    ] {
        let mut stream = TcpStream::connect(loopback(port)).await.unwrap();
        stream.write_all(bad).await.unwrap();
        assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        backend.seen.try_recv().is_err(),
        "a refused client reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_listener_with_proxy_protocol_uses_the_client_address_it_names() {
    let web = Backend::start("web").await;
    let dir = ManifestsDir::new();
    dir.write(
        "web.yaml",
        &(service("web", &[web.addr])
            + &annotated_ingress("web", Some("web.test"), &[("/", "Prefix")], "web", &[])),
    );
    let gateway = Gateway::start(dir.path(), &["--proxy-protocol"]);
    let request = b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n";
    let answer = exchange(
        gateway.http,
        &[
            &b"PROXY TCP4 203.0.113.9 198.51.100.1 40000 80\r\n"[..],
            request,
        ]
        .concat(),
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body: Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["headers"]["x-forwarded-for"], "203.0.113.9", "{body}");
    assert_eq!(body["headers"]["x-real-ip"], "203.0.113.9", "{body}");

    // A connection without the header is refused, never served as the proxy's own.
    let mut stream = TcpStream::connect(gateway.http).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_proxy_header_is_closed_at_the_header_timeout() {
    let backend = TcpBackend::start().await;
    let port = free_port();
    let (_dir, _gateway) = tcp_gateway(
        port,
        "default/db:80:PROXY",
        &[backend.addr],
        &["--tls-handshake-timeout", "1"],
    );
    let mut stream = TcpStream::connect(loopback(port)).await.unwrap();
    stream.write_all(b"PROXY TCP4 203.0.113.7 ").await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_tcp_session_is_closed_after_the_idle_timeout() {
    let backend = TcpBackend::start().await;
    let port = free_port();
    let (_dir, gateway) = tcp_gateway(
        port,
        "default/db:80",
        &[backend.addr],
        &["--stream-idle-timeout", "1"],
    );
    let mut stream = TcpStream::connect(loopback(port)).await.unwrap();
    stream.write_all(b"then nothing").await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    let idle = [("protocol", "tcp"), ("end", "idle_timeout")];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = gateway.admin_get("/metrics").unwrap();
        if sample(&metrics, "xdp_gateway_stream_sessions_total", &idle) == Some(1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A UDP backend on loopback answering `echo:` and each datagram.
async fn udp_backend() -> UdpBackend {
    UdpBackend::start_on("echo", loopback(0)).await.unwrap()
}

fn udp_gateway(port: u16, backend: SocketAddr, extra: &[&str]) -> (ManifestsDir, Gateway) {
    let dir = ManifestsDir::new();
    dir.write(
        "dns.yaml",
        &(service("dns", &[backend]) + &config_map("udp-services", &[(port, "default/dns:80")])),
    );
    let mut args = vec!["--udp-services-configmap", "default/udp-services"];
    args.extend(extra);
    let gateway = Gateway::start(dir.path(), &args);
    (dir, gateway)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_udp_port_relays_each_flow_and_replies_come_from_the_address_the_client_used() {
    let backend = udp_backend().await;
    let port = free_port();
    let (_dir, _gateway) = udp_gateway(port, backend.addr, &[]);
    let clients = [
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    ];
    for round in 0..3 {
        for (i, client) in clients.iter().enumerate() {
            let message = format!("client {i} round {round}");
            client
                .send_to(message.as_bytes(), loopback(port))
                .await
                .unwrap();
            let mut reply = [0u8; 128];
            let (length, from) =
                tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut reply))
                    .await
                    .expect("a reply within 5s")
                    .unwrap();
            assert_eq!(from, loopback(port), "the reply's source");
            assert_eq!(&reply[..length], format!("echo:{message}").as_bytes());
        }
    }
    // One session (one backend-side socket) per client flow.
    assert_eq!(backend.sources.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_udp_session_table_stays_bounded_under_a_flood_of_new_source_ports() {
    let backend = udp_backend().await;
    let port = free_port();
    let (_dir, gateway) = udp_gateway(port, backend.addr, &["--udp-max-sessions", "8"]);
    let mut flood = Vec::new();
    for _ in 0..200 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"new flow", loopback(port)).await.unwrap();
        flood.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        backend.sources.lock().unwrap().len(),
        8,
        "flows past the bound reached the backend"
    );
    let (_, metrics) = gateway.admin_get("/metrics").unwrap();
    let full = [("protocol", "udp"), ("end", "table_full")];
    assert_eq!(
        sample(&metrics, "xdp_gateway_stream_sessions_total", &full),
        Some(192.0),
        "{metrics}"
    );
    let active = [("protocol", "udp")];
    assert_eq!(
        sample(&metrics, "xdp_gateway_stream_sessions_active", &active),
        Some(8.0)
    );
    // The flows admitted still work.
    let mut reply = [0u8; 64];
    flood[0].send_to(b"again", loopback(port)).await.unwrap();
    let (length, _) = tokio::time::timeout(Duration::from_secs(5), flood[0].recv_from(&mut reply))
        .await
        .expect("an admitted flow still answered")
        .unwrap();
    assert!(reply[..length].starts_with(b"echo:"));
}

/// An Ingress for `host` (with rule path `/` to Service `service`) that asks for passthrough.
fn passthrough_ingress(name: &str, host: &str, service: &str) -> String {
    annotated_ingress(
        name,
        Some(host),
        &[("/", "Prefix")],
        service,
        &[("ssl-passthrough", "true")],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_passed_through_reaches_the_backend_which_presents_its_own_certificate() {
    let ca = Ca::new();
    let db_leaf = ca.leaf(&["db.test"]);
    let db = Backend::start_behaving(
        "db",
        Behaviour {
            tls: Some((db_leaf.cert_pem.clone(), db_leaf.key_pem.clone())),
            ..Behaviour::default()
        },
    )
    .await;
    let web = Backend::start("web").await;
    let shop_leaf = ca.leaf(&["shop.test"]);
    let dir = ManifestsDir::new();
    dir.write(
        "apps.yaml",
        &[
            service("db", &[db.addr]),
            service("web", &[web.addr]),
            passthrough_ingress("db", "db.test", "db"),
            shop_leaf.secret("default", "shop-tls"),
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop}\nspec:\n  tls: [{hosts: [shop.test], secretName: shop-tls}]\n  rules:\n  - host: shop.test\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n---\n".to_string(),
        ]
        .concat(),
    );
    let gateway = Gateway::start(dir.path(), &["--enable-ssl-passthrough"]);

    let streams = &gateway.routes()["streams"];
    assert_eq!(streams[0]["protocol"], "tls", "{streams}");
    assert_eq!(streams[0]["server_name"], "db.test");
    // db.test: the backend's own certificate, and HTTP/2 negotiated with the backend itself.
    let stream = connect(
        ca.client_config(&["h2", "http/1.1"]),
        gateway.https,
        "db.test",
    )
    .await
    .expect("handshake with the backend through the gateway");
    assert_eq!(presented(&stream), Some(db_leaf.der.clone()));
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut http = TlsHttp::over(stream).await;
    let (status, _, body) = http.get("db.test", "/through").await.unwrap();
    assert_eq!(status, hyper::StatusCode::OK);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["service"], "db");

    // shop.test on the same port: terminated by the gateway with the Secret's certificate.
    let stream = connect(ca.client_config(&["http/1.1"]), gateway.https, "shop.test")
        .await
        .unwrap();
    assert_eq!(presented(&stream), Some(shop_leaf.der.clone()));
    let mut http = TlsHttp::over(stream).await;
    let (_, _, body) = http.get("shop.test", "/").await.unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["service"], "web");
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_needs_the_flag_and_a_root_path_and_says_so() {
    let db = Backend::start("db").await;
    let dir = ManifestsDir::new();
    dir.write(
        "db.yaml",
        &(service("db", &[db.addr])
            + &passthrough_ingress("db", "db.test", "db")
            + &annotated_ingress(
                "api",
                Some("api.test"),
                &[("/api", "Prefix")],
                "db",
                &[("ssl-passthrough", "true")],
            )),
    );
    let check = |args: &[&str]| {
        let output = std::process::Command::new(gateway_e2e::gateway::binary("gateway"))
            .args(["check", "--manifests"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let without = check(&[]);
    assert!(
        without.contains("ingress default/db")
            && without.contains("needs the gateway started with --enable-ssl-passthrough"),
        "{without}"
    );
    let with = check(&["--enable-ssl-passthrough"]);
    assert!(!with.contains("--enable-ssl-passthrough"), "{with}");
    let warning = with.lines().find(|l| l.contains("which this rule lacks"));
    assert!(
        warning.is_some_and(
            |w| w.starts_with("ingress default/api (") && w.contains("): spec.rules[0]: ")
        ),
        "{with}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_hello_on_a_passthrough_listener_is_closed_at_the_handshake_timeout() {
    let db = Backend::start("db").await;
    let dir = ManifestsDir::new();
    dir.write(
        "db.yaml",
        &(service("db", &[db.addr]) + &passthrough_ingress("db", "db.test", "db")),
    );
    let gateway = Gateway::start(
        dir.path(),
        &["--enable-ssl-passthrough", "--tls-handshake-timeout", "1"],
    );
    let mut stream = TcpStream::connect(gateway.https).await.unwrap();
    // A record header promising 512 bytes, and 3 of them.
    stream.write_all(&[22, 3, 1, 2, 0, 1, 0, 1]).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_map_entries_are_warned_about_and_the_others_served() {
    let backend = TcpBackend::start().await;
    let (good, taken_by_nothing) = (free_port(), free_port());
    let dir = ManifestsDir::new();
    dir.write(
        "db.yaml",
        &(service("db", &[backend.addr])
            + &config_map(
                "tcp-services",
                &[(good, "default/db:80"), (taken_by_nothing, "default/db")],
            )),
    );
    let output = std::process::Command::new(gateway_e2e::gateway::binary("gateway"))
        .args([
            "check",
            "--tcp-services-configmap",
            "default/tcp-services",
            "--manifests",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let warning =
        format!("): data[\"{taken_by_nothing}\"]: \"default/db\": expected NAMESPACE/SERVICE:PORT");
    assert!(
        text.lines()
            .any(|l| l.starts_with("configmap default/tcp-services (") && l.contains(&warning)),
        "{text}"
    );
    let gateway = Gateway::start(
        dir.path(),
        &["--tcp-services-configmap", "default/tcp-services"],
    );
    assert_eq!(exchange(loopback(good), b"fine").await, b"got:fine");
    let refused = TcpStream::connect(loopback(taken_by_nothing)).await;
    assert!(refused.is_err(), "a malformed entry's port is not served");
    drop(gateway);
}

/// A TLS backend named `name` with a certificate for `names` from `ca`, and that certificate.
async fn tls_backend(ca: &Ca, name: &str, names: &[&str]) -> (Backend, gateway_e2e::pki::Leaf) {
    let leaf = ca.leaf(names);
    let backend = Backend::start_behaving(
        name,
        Behaviour {
            tls: Some((leaf.cert_pem.clone(), leaf.key_pem.clone())),
            ..Behaviour::default()
        },
    )
    .await;
    (backend, leaf)
}

/// A TLSRoute, TCPRoute or UDPRoute `name` in `default` on listener `section` of Gateway
/// `edge`, to port 80 of `service`; a TCPRoute asks for the PROXY protocol (v2).
fn stream_route(kind: &str, name: &str, section: &str, hostnames: &str, service: &str) -> String {
    let annotations = match kind {
        "TCPRoute" => ", annotations: {xdp-gateway.io/proxy-protocol: v2}",
        _ => "",
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\n\
         metadata: {{name: {name}, namespace: default{annotations}}}\n\
         spec:\n  parentRefs: [{{name: edge, sectionName: {section}}}]\n  hostnames: {hostnames}\n  \
         rules:\n  - backendRefs: [{{name: {service}, port: 80}}]\n---\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_tls_tcp_and_udp_listeners_carry_their_routes() {
    let ca = Ca::new();
    let (db, db_leaf) = tls_backend(&ca, "db", &["db.test"]).await;
    let (wild, wild_leaf) = tls_backend(&ca, "wild", &["a.b.wild.test"]).await;
    let mut raw = TcpBackend::start().await;
    let dns = udp_backend().await;
    let (tls_port, port, terminate_port) = (free_port(), free_port(), free_port());
    let dir = ManifestsDir::new();
    let listeners = [
        format!("{{name: tls, port: {tls_port}, protocol: TLS, tls: {{mode: Passthrough}}}}"),
        format!("{{name: tcp, port: {port}, protocol: TCP}}"),
        format!("{{name: udp, port: {port}, protocol: UDP}}"),
        format!(
            "{{name: terminate, port: {terminate_port}, protocol: TLS, tls: {{mode: Terminate}}}}"
        ),
    ];
    dir.write(
        "edge.yaml",
        &[
            gateway_class().to_string(),
            gateway("default", "edge", &listeners),
            service("db", &[db.addr]),
            service("wild", &[wild.addr]),
            service("raw", &[raw.addr]),
            service("dns", &[dns.addr]),
            stream_route("TLSRoute", "db", "tls", "[db.test]", "db"),
            stream_route("TLSRoute", "wild", "tls", "[\"*.wild.test\"]", "wild"),
            stream_route("TCPRoute", "raw", "tcp", "[]", "raw"),
            stream_route("UDPRoute", "dns", "udp", "[]", "dns"),
        ]
        .concat(),
    );
    // Younger routes that cannot have what they ask for.
    dir.write(
        "late.yaml",
        &[
            stream_route("TCPRoute", "second", "tcp", "[]", "db"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: web, namespace: default}\n\
             spec:\n  parentRefs: [{name: edge, sectionName: tcp}]\n  rules:\n  - backendRefs: [{name: db, port: 80}]\n---\n"
                .to_string(),
        ]
        .concat(),
    );
    let gateway = Gateway::start(dir.path(), &["--access-log", "off"]);

    // TLS by server name: exact, and a wildcard over two labels; others are closed.
    let client = ca.client_config(&["http/1.1"]);
    let stream = connect(client.clone(), loopback(tls_port), "db.test")
        .await
        .unwrap();
    assert_eq!(presented(&stream), Some(db_leaf.der.clone()));
    let stream = connect(client.clone(), loopback(tls_port), "a.b.wild.test")
        .await
        .unwrap();
    assert_eq!(presented(&stream), Some(wild_leaf.der.clone()));
    assert!(
        connect(client, loopback(tls_port), "other.test")
            .await
            .is_err()
    );

    // TCP, with the PROXY protocol header (v2) the route's annotation asks for.
    let answer = exchange(loopback(port), b"raw bytes").await;
    assert!(
        answer.starts_with(b"got:\r\n\r\n\0\r\nQUIT\n\x21\x11"),
        "{answer:?}"
    );
    assert!(answer.ends_with(b"raw bytes"));
    assert_eq!(raw.seen.recv().await.unwrap().len(), 28 + 9);

    // UDP on the same port number.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(b"query", loopback(port)).await.unwrap();
    let mut reply = [0u8; 64];
    let (length, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut reply))
        .await
        .expect("a UDP reply")
        .unwrap();
    assert_eq!(&reply[..length], b"echo:query");

    let routes = gateway.routes();
    let edge = object(&routes, "Gateway", "edge");
    let listener = |name: &str| {
        let list = edge["listeners"].as_array().unwrap();
        list.iter().find(|l| l["name"] == name).unwrap().clone()
    };
    assert_eq!(
        listener("tls")["supported_kinds"],
        serde_json::json!(["TLSRoute"])
    );
    assert_eq!(listener("tls")["attached_routes"], 2);
    assert_eq!(
        listener("udp")["supported_kinds"],
        serde_json::json!(["UDPRoute"])
    );
    let terminate = listener("terminate");
    assert_eq!(
        condition(&terminate["conditions"], "Accepted")["reason"],
        "UnsupportedValue"
    );
    let accepted = |kind: &str, name: &str| {
        let parents = &object(&routes, kind, name)["parents"];
        condition(&parents[0]["conditions"], "Accepted").clone()
    };
    for (kind, name) in [
        ("TLSRoute", "db"),
        ("TLSRoute", "wild"),
        ("TCPRoute", "raw"),
        ("UDPRoute", "dns"),
    ] {
        assert_eq!(accepted(kind, name)["status"], true, "{kind} {name}");
    }
    assert_eq!(accepted("TCPRoute", "second")["reason"], "Conflicted");
    assert_eq!(
        accepted("HTTPRoute", "web")["reason"],
        "NotAllowedByListeners"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_https_the_client_a_proxy_protocol_header_names_is_the_one_allow_lists_see() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["web.test"]);
    let web = Backend::start("web").await;
    let dir = ManifestsDir::new();
    dir.write(
        "web.yaml",
        &(service("web", &[web.addr])
            + &leaf.secret("default", "web-tls")
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  \
               annotations: {nginx.ingress.kubernetes.io/whitelist-source-range: 203.0.113.0/24}\n\
               spec:\n  tls: [{hosts: [web.test], secretName: web-tls}]\n  rules:\n  - host: web.test\n    \
               http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n"),
    );
    let gateway = Gateway::start(dir.path(), &["--proxy-protocol"]);
    for (source, wanted) in [("203.0.113.9", 200), ("198.51.100.7", 403)] {
        let mut tcp = TcpStream::connect(gateway.https).await.unwrap();
        let header = format!("PROXY TCP4 {source} 198.51.100.1 40000 443\r\n");
        tcp.write_all(header.as_bytes()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("web.test").unwrap();
        let connector = tokio_rustls::TlsConnector::from(ca.client_config(&["http/1.1"]));
        let tls = connector
            .connect(name, tcp)
            .await
            .expect("TLS after the header");
        let (status, _, body) = TlsHttp::over(tls).await.get("web.test", "/").await.unwrap();
        assert_eq!(status.as_u16(), wanted, "{source}: {body}");
        if wanted == 200 {
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["headers"]["x-forwarded-for"], source);
            assert_eq!(body["headers"]["x-forwarded-proto"], "https");
        }
    }
}
