//! HTTP/3 end to end: the real gateway with `--http3`, certificates made in the test, and a
//! QUIC client of the tests' own (quinn + h3).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gateway_e2e::backend::Backend;
use gateway_e2e::gateway::{Gateway, binary, log_lines, sample};
use gateway_e2e::h3::{H3Answer, H3Client, H3Endpoint};
use gateway_e2e::manifests::{ManifestsDir, service};
use gateway_e2e::netns::{
    CLIENT_ADDR, CLIENT_ADDR6, GATEWAY_IFACE, OTHER_CLIENT_ADDR, OTHER_CLIENT_ADDR6, Topology, VIP,
    VIP6, run, within,
};
use gateway_e2e::pki::{Ca, Leaf, TlsHttp, connect};
use hyper::{Request, StatusCode};
use tokio::net::TcpStream;

/// Hosts `shop.test` and `api.test` with certificates of their own, a plain host `plain.test`,
/// all to one echo backend.
/// An Ingress `shop` with TLS for `shop.test` (Secret `shop-tls`), to service `web`.
fn tls_ingress(hosts: &[&str]) -> String {
    let rules: String = hosts
        .iter()
        .map(|host| {
            format!(
                "  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: shop\n  \
         annotations: {{nginx.ingress.kubernetes.io/proxy-body-size: 16m}}\nspec:\n  tls:\n  \
         - hosts: [shop.test]\n    secretName: shop-tls\n  - hosts: [api.test]\n    \
         secretName: api-tls\n  rules:\n{rules}---\n"
    )
}

struct Setup {
    dir: ManifestsDir,
    _web: Backend,
    ca: Ca,
    shop: Leaf,
    api: Leaf,
}

async fn setup() -> Setup {
    let dir = ManifestsDir::new();
    let web = Backend::start("web").await;
    let ca = Ca::new();
    let ingress = tls_ingress(&["shop.test", "api.test", "plain.test"]);
    let (shop, api) = (ca.leaf(&["shop.test"]), ca.leaf(&["api.test"]));
    dir.write(
        "shop.yaml",
        &(service("web", &[web.addr])
            + &shop.secret("default", "shop-tls")
            + &api.secret("default", "api-tls")
            + &ingress),
    );
    Setup {
        dir,
        _web: web,
        ca,
        shop,
        api,
    }
}

/// A connection to `address` for `shop.test` that has served one `GET /` with 200.
async fn served(address: SocketAddr, ca: &Ca) -> H3Client {
    let mut client = H3Client::connect(address, "shop.test", ca).await.unwrap();
    let answer = client.get("shop.test", "/").await.unwrap();
    assert_eq!(answer.response.status(), StatusCode::OK);
    client
}

impl Setup {
    /// The gateway on this setup's folder with `--http3`, no access log, and `extra` flags.
    fn gateway(&self, extra: &[&str]) -> Gateway {
        let flags = [&["--http3", "--access-log", "off"], extra].concat();
        Gateway::start(self.dir.path(), &flags)
    }
}

fn metrics(gw: &Gateway) -> String {
    gw.admin_get("/metrics").expect("GET /metrics").1
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_each_host_over_its_certificate_and_is_offered_by_alt_svc() {
    let s = setup().await;
    let log = s.dir.path().join("access.log");
    let gw = Gateway::start(
        s.dir.path(),
        &["--http3", "--access-log", log.to_str().unwrap()],
    );
    let alt_svc = format!("h3=\":{}\"; ma=86400", gw.https.port());

    // HTTPS over TCP offers HTTP/3 on the same port; plain HTTP does not.
    let tls = connect(s.ca.client_config(&["h2"]), gw.https, "shop.test").await;
    let (status, headers, _) = TlsHttp::over(tls.unwrap())
        .await
        .get("shop.test", "/")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["alt-svc"], alt_svc.as_str());
    let plain = gateway_e2e::client::HttpClient::new()
        .get(gw.http, "plain.test", "/")
        .await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(!plain.headers.contains_key("alt-svc"));

    for (host, leaf) in [("shop.test", &s.shop), ("api.test", &s.api)] {
        let mut client = H3Client::connect(gw.https, host, &s.ca).await.unwrap();
        let presented = client.connection.peer_identity().unwrap();
        let chain = presented
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .unwrap();
        assert_eq!(chain[0], leaf.der, "the certificate of {host}");
        let answer = client.get(host, "/a/./b/../c?q=1").await.unwrap();
        assert_eq!(answer.response.status(), StatusCode::OK);
        assert_eq!(answer.header("x-backend"), Some("web"));
        assert_eq!(answer.header("alt-svc"), Some(alt_svc.as_str()));
        assert!(answer.header("strict-transport-security").is_some());
        let seen = answer.json();
        // Normalised once, before routing; forwarded as HTTP/1.1 with the usual headers.
        assert_eq!(seen["path"], "/a/c?q=1");
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
        assert_eq!(seen["headers"]["host"], host);
        assert_eq!(seen["version"], "HTTP/1.1");

        // A connection for one name may not be used for another (421, as over TCP).
        let other = if host == "shop.test" {
            "api.test"
        } else {
            "shop.test"
        };
        let misdirected = client.get(other, "/").await.unwrap();
        assert_eq!(
            misdirected.response.status(),
            StatusCode::MISDIRECTED_REQUEST
        );
    }

    let lines = log_lines(&log, 5);
    assert!(
        lines.iter().filter(|l| l.contains("HTTP/3.0")).count() >= 4,
        "{lines:#?}"
    );
    let text = metrics(&gw);
    let https = [("scheme", "https")];
    assert!(sample(&text, "xdp_gateway_connections_total", &https).unwrap() >= 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn carries_a_large_upload_and_a_large_download() {
    let s = setup().await;
    let gw = s.gateway(&[]);
    let mut client = H3Client::connect(gw.https, "shop.test", &s.ca)
        .await
        .unwrap();

    let upload = Bytes::from(vec![b'u'; 12 << 20]);
    let request = Request::post("https://shop.test/upload")
        .header("content-length", upload.len())
        .body(())
        .unwrap();
    let answer = client.send(request, upload.clone()).await.unwrap();
    assert_eq!(answer.response.status(), StatusCode::OK);
    assert_eq!(answer.json()["body_bytes"], upload.len());
    // Without a length, the body streams to the backend chunked.
    let request = Request::put("https://shop.test/upload").body(()).unwrap();
    let answer = client.send(request, upload.slice(..1 << 20)).await.unwrap();
    assert_eq!(answer.json()["body_bytes"], 1 << 20);
    assert_eq!(answer.json()["headers"]["transfer-encoding"], "chunked");
    // A GET ends with its head: no body goes to the backend, chunked or not.
    let answer = client.get("shop.test", "/").await.unwrap();
    assert!(answer.json()["headers"].get("transfer-encoding").is_none());

    let length = 24 << 20;
    let answer = client
        .get("shop.test", &format!("/bytes/{length}"))
        .await
        .unwrap();
    assert_eq!(answer.response.status(), StatusCode::OK);
    assert_eq!(answer.body.len(), length);
    assert!(
        answer
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8)
    );

    // Over the route's proxy-body-size (16m): 413, and the connection serves on.
    let request = Request::post("https://shop.test/upload").body(()).unwrap();
    let answer = client
        .send(request, Bytes::from(vec![b'x'; 17 << 20]))
        .await
        .unwrap();
    assert_eq!(answer.response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer = client.get("shop.test", "/").await.unwrap();
    assert_eq!(answer.response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_http3_requests_are_refused_and_the_connection_serves_on() {
    let s = setup().await;
    let gw = s.gateway(&["--max-request-headers", "50"]);
    let mut client = H3Client::connect(gw.https, "shop.test", &s.ca)
        .await
        .unwrap();
    let get = || Request::get("https://shop.test/");

    // HTTP/1's connection fields have no place in HTTP/3 (RFC 9114 4.2).
    for (name, value) in [
        ("connection", "close"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ] {
        let request = get().header(name, value).body(()).unwrap();
        let answer = client.send(request, Bytes::new()).await.unwrap();
        assert_eq!(answer.response.status(), StatusCode::BAD_REQUEST, "{name}");
    }
    // More fields than allowed, and a head larger than allowed.
    let mut many = get();
    for i in 0..60 {
        many = many.header(format!("x-field-{i}"), "1");
    }
    let answer = client.send(many.body(()).unwrap(), Bytes::new()).await;
    let status = answer.unwrap().response.status();
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let huge = get()
        .header("x-huge", "h".repeat(40 * 1024))
        .body(())
        .unwrap();
    let status = match client.send(huge, Bytes::new()).await {
        Ok(answer) => Some(answer.response.status()),
        Err(_) => None,
    };
    assert!(
        matches!(
            status,
            None | Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        ),
        "{status:?}"
    );
    // A body shorter or longer than its Content-Length is malformed.
    for (declared, sent) in [(10, 5), (5, 10)] {
        let request = Request::post("https://shop.test/upload")
            .header("content-length", declared)
            .body(())
            .unwrap();
        let answer = client.send(request, Bytes::from(vec![b'b'; sent])).await;
        let status = answer.map(|a| a.response.status()).ok();
        assert!(
            matches!(status, None | Some(StatusCode::BAD_REQUEST)),
            "{declared} declared, {sent} sent: {status:?}"
        );
    }
    // Paths that climb out of the root are refused, not resolved.
    let answer = client.get("shop.test", "/%2e%2e/etc/passwd").await.unwrap();
    assert_eq!(answer.response.status(), StatusCode::BAD_REQUEST);

    // After all of that, the same connection still serves.
    let answer = client.get("shop.test", "/").await.unwrap();
    assert_eq!(answer.response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_rtt_is_refused_by_default_and_taken_with_the_flag() {
    let s = setup().await;
    for early_data in [false, true] {
        let gw = s.gateway(if early_data { &["--http3-0rtt"] } else { &[] });
        let endpoint = H3Endpoint::new("127.0.0.1:0".parse().unwrap(), &s.ca).unwrap();
        // A first connection leaves a session ticket behind.
        let mut first = endpoint.connect(gw.https, "shop.test").await.unwrap();
        let answer = first.get("shop.test", "/").await.unwrap();
        assert_eq!(answer.response.status(), StatusCode::OK);
        let attempt = endpoint.connect_0rtt(gw.https, "shop.test").await.unwrap();
        match (early_data, attempt) {
            // The ticket allows no early data: the client waits for the full handshake.
            (false, None) => {}
            (true, Some((mut client, accepted))) => {
                let answer = client.get("shop.test", "/").await.unwrap();
                assert_eq!(answer.response.status(), StatusCode::OK);
                // An unsafe method is forwarded once the handshake has ended.
                let request = Request::post("https://shop.test/order").body(()).unwrap();
                let answer = client
                    .send(request, Bytes::from_static(b"one"))
                    .await
                    .unwrap();
                assert_eq!(answer.response.status(), StatusCode::OK);
                assert!(answer.json()["headers"].get("early-data").is_none());
                assert!(accepted.await, "the early data was taken");
            }
            (early_data, attempt) => panic!(
                "--http3-0rtt {early_data}: 0-RTT attempted: {}",
                attempt.is_some()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn handshakes_piling_up_are_answered_with_retry() {
    let s = setup().await;
    let gw = s.gateway(&["--max-tls-handshakes", "1", "--tls-handshake-timeout", "3"]);
    // A TCP client that never sends its ClientHello holds the only turn. The QUIC handshake
    // starts a second later, so that its own timeout (counted from its start, the wait for
    // the turn included) leaves it a second after the turn comes back.
    let stalled = TcpStream::connect(gw.https).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let connecting = async {
        let mut client = H3Client::connect(gw.https, "shop.test", &s.ca).await?;
        client.get("shop.test", "/").await
    };
    let mut connecting = std::pin::pin!(connecting);
    let early = tokio::time::timeout(Duration::from_millis(1000), connecting.as_mut()).await;
    assert!(early.is_err(), "no handshake while the only turn is held");
    let text = metrics(&gw);
    assert_eq!(
        sample(&text, "xdp_gateway_http3_retries_total", &[]),
        Some(1.0)
    );
    // The client came back with its token and waits for the turn, which the stalled handshake
    // gives back when it times out.
    let answer = tokio::time::timeout(Duration::from_secs(8), connecting)
        .await
        .expect("served once the turn came")
        .unwrap();
    assert_eq!(answer.response.status(), StatusCode::OK);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_lets_requests_in_flight_finish_then_closes() {
    let s = setup().await;
    let mut gw = s.gateway(&["--drain-delay", "1", "--drain-timeout", "10"]);
    let client = served(gw.https, &s.ca).await;
    let mut slow = H3Client::connect(gw.https, "shop.test", &s.ca)
        .await
        .unwrap();
    let in_flight = tokio::spawn(async move { slow.get("shop.test", "/sleep/2500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.terminate();
    // The request in flight is answered whole after the listeners closed.
    let answer = tokio::time::timeout(Duration::from_secs(8), in_flight)
        .await
        .expect("answered within the drain")
        .unwrap()
        .unwrap();
    assert_eq!(answer.response.status(), StatusCode::OK);
    // The idle connection was told to go away and closed; new ones are refused.
    let closed = tokio::time::timeout(Duration::from_secs(5), client.connection.closed()).await;
    assert!(closed.is_ok(), "the idle HTTP/3 connection was closed");
    let late = tokio::time::timeout(
        Duration::from_secs(3),
        H3Client::connect(gw.https, "shop.test", &s.ca),
    )
    .await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "a new connection after the drain"
    );
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
}

/// A request from the client namespace to `vip`, on a runtime of the namespace's thread.
fn request_in(t: &Topology, source: &str, vip: SocketAddr, ca: &Ca) -> anyhow::Result<H3Answer> {
    within(&t.client_ns, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let bind = SocketAddr::new(source.parse()?, 0);
            let attempt = async {
                let mut client = H3Client::connect_from(bind, vip, "shop.test", ca).await?;
                client.get("shop.test", "/").await
            };
            tokio::time::timeout(Duration::from_secs(3), attempt).await?
        })
    })
}

#[test]
fn reaches_an_https_vip_filtered_and_counted_by_xdp() {
    let Some(t) = Topology::new() else { return };
    let dir = ManifestsDir::new();
    let ca = Ca::new();
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{name: http, port: 9001}]\nendpoints: [{addresses: [127.0.0.1]}]\n---\n";
    dir.write(
        "shop.yaml",
        &(service.to_string()
            + &ca.leaf(&["shop.test"]).secret("default", "shop-tls")
            + &tls_ingress(&["shop.test"])),
    );
    let _backend = t.spawn_in_gateway(binary("echo-backend"), &["web=127.0.0.1:9001"]);
    let gw = Gateway::start_in(
        &t,
        dir.path(),
        &[
            "--http3",
            "--vip",
            &format!("{VIP}:443=https"),
            "--vip",
            &format!("{VIP}:8443=https"),
            "--vip",
            &format!("[{VIP6}]:443=https"),
            "--xdp-iface",
            GATEWAY_IFACE,
            "--allow-source",
            &format!("198.18.0.0/24,{CLIENT_ADDR6}/128"),
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gw.log().iter().any(|l| l.contains("kernel fast path on")) {
        assert!(std::time::Instant::now() < deadline, "{:#?}", gw.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing is bound to the VIPs: sk_lookup hands TCP to a socket of the gateway's own and
    // each port's QUIC datagrams to that port's QUIC socket on loopback, whose replies leave
    // from the VIP; XDP filters and counts it all.
    let bound = |flags: &str| {
        let listening = run(t.in_gateway("ss").arg(flags));
        String::from_utf8_lossy(&listening.stdout).to_string()
    };
    let (tcp, udp) = (bound("-Htln"), bound("-Huln"));
    assert!(!tcp.contains(VIP) && !udp.contains(VIP), "{tcp}{udp}");
    assert!(!tcp.contains(VIP6) && !udp.contains(VIP6), "{tcp}{udp}");
    for socket in ["127.0.0.1:443", "127.0.0.1:8443", "[::1]:443"] {
        assert!(udp.contains(socket), "{socket} in {udp}");
    }
    let v4: SocketAddr = format!("{VIP}:443").parse().unwrap();
    let second_port: SocketAddr = format!("{VIP}:8443").parse().unwrap();
    let v6: SocketAddr = format!("[{VIP6}]:443").parse().unwrap();
    for (source, vip) in [
        (CLIENT_ADDR, v4),
        (CLIENT_ADDR, second_port),
        (CLIENT_ADDR6, v6),
    ] {
        let answer = request_in(&t, source, vip, &ca)
            .unwrap_or_else(|e| panic!("no answer through {vip}: {e:#}"));
        assert_eq!(answer.response.status(), StatusCode::OK);
        assert_eq!(answer.header("x-backend"), Some("web"));
        // The connection is to the VIP (replies came from it) and the client is seen as itself.
        assert_eq!(answer.json()["headers"]["x-forwarded-for"], source);
    }

    let quic_counter = |vip: SocketAddr, reason: &str| {
        let (_, body) = gw.admin_get("/bpf/stats").unwrap();
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        let listeners = stats["listeners"].as_array().unwrap().clone();
        let quic = listeners
            .iter()
            .find(|l| l["address"] == vip.to_string() && l["protocol"] == "quic")
            .unwrap_or_else(|| panic!("no quic listener: {stats}"));
        quic["counters"][reason]["packets"].as_u64().unwrap()
    };
    for vip in [v4, second_port, v6] {
        assert!(quic_counter(vip, "passed") > 0);
    }
    // A source outside the allow-list is dropped in XDP, as over TCP.
    for (source, vip) in [(OTHER_CLIENT_ADDR, v4), (OTHER_CLIENT_ADDR6, v6)] {
        let dropped = quic_counter(vip, "dropped_acl");
        assert!(request_in(&t, source, vip, &ca).is_err());
        assert!(quic_counter(vip, "dropped_acl") > dropped);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_hands_the_udp_socket_over_and_old_connections_finish() {
    let s = setup().await;
    let handoff = s.dir.path().join("handoff.sock");
    let flags: Vec<String> = [
        "--http3",
        "--access-log",
        "off",
        "--drain-delay",
        "4",
        "--handoff-socket",
        handoff.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let start = move |dir: &std::path::Path| {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Gateway::start(dir, &flags)
    };
    let mut old = start(s.dir.path());
    let mut before = served(old.https, &s.ca).await;
    let mut slow = served(old.https, &s.ca).await;
    let in_flight = tokio::spawn(async move { slow.get("shop.test", "/sleep/1500").await });
    let new = {
        let dir = s.dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || start(&dir))
            .await
            .unwrap()
    };
    assert_eq!(new.https, old.https, "the same sockets, taken over");
    let served_by_new = || {
        let text = metrics(&new);
        sample(
            &text,
            "nginx_ingress_controller_requests",
            &[("status", "200")],
        )
        .unwrap_or(0.0)
    };
    // The new process reads the shared socket now; datagrams of the old process's connections
    // are relayed to it, which answers the request in flight and new requests on them (a
    // download needs the client's acknowledgements and flow control to reach it).
    let answer = in_flight
        .await
        .unwrap()
        .expect("the request in flight answered");
    assert_eq!(answer.response.status(), StatusCode::OK);
    let download = before.get("shop.test", "/bytes/4000000").await.unwrap();
    assert_eq!(download.response.status(), StatusCode::OK);
    assert_eq!(download.body.len(), 4_000_000);
    assert_eq!(
        served_by_new(),
        0.0,
        "the old process served its connections"
    );
    // After the drain delay the old process sends GOAWAY and closes them, then exits.
    let closed = tokio::time::timeout(Duration::from_secs(10), before.connection.closed()).await;
    assert!(closed.is_ok(), "the old process closed its QUIC connection");
    assert!(old.wait_exit(Duration::from_secs(10)).is_some());
    // New connections are the new process's, on the UDP socket it took over.
    served(new.https, &s.ca).await;
    assert_eq!(served_by_new(), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_https_listeners_serve_http3_too() {
    use gateway_e2e::manifests::{free_port, gateway, gateway_class, loopback};
    let web = Backend::start("web").await;
    let ca = Ca::new();
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write(
        "edge.yaml",
        &(service("web", &[web.addr])
            + &ca.leaf(&["*.example.com"]).secret("infra", "wildcard")
            + gateway_class()
            + &gateway(
                "infra",
                "edge",
                &[format!(
                    "{{name: https, port: {port}, protocol: HTTPS, hostname: \"*.example.com\", \
                     tls: {{certificateRefs: [{{name: wildcard}}]}}, \
                     allowedRoutes: {{namespaces: {{from: All}}}}}}"
                )],
            )
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
               metadata: {name: shop, namespace: default}\n\
               spec:\n  parentRefs: [{name: edge, namespace: infra, sectionName: https}]\n  \
               hostnames: [shop.example.com]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n"),
    );
    let _gw = Gateway::start(dir.path(), &["--http3", "--access-log", "off"]);
    let mut client = H3Client::connect(loopback(port), "shop.example.com", &ca)
        .await
        .expect("HTTP/3 on the Gateway's HTTPS listener, with its certificate");
    let answer = client.get("shop.example.com", "/").await.unwrap();
    assert_eq!(answer.response.status(), StatusCode::OK);
    assert_eq!(answer.header("x-backend"), Some("web"));
    // Covered by the certificate, routed by no HTTPRoute of the listener.
    let unrouted = client.get("other.example.com", "/").await.unwrap();
    assert_eq!(unrouted.response.status(), StatusCode::NOT_FOUND);
}
