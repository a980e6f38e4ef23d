//! ingress-nginx annotations end to end: the real binary, real backends on loopback, one test
//! per group of the annotation list (paths and redirects, upstream behaviour, canary, access).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use gateway_e2e::backend::{Backend, Behaviour, next_seen};
use gateway_e2e::client::{Answer, HttpClient, grpc_call};
use gateway_e2e::gateway::Gateway;
use gateway_e2e::manifests::{ManifestsDir, annotated_ingress, service};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Requests through one gateway, with keep-alive.
struct Through<'a> {
    gw: &'a Gateway,
    client: HttpClient,
}

impl Through<'_> {
    async fn get(&self, host: &str, path: &str) -> Answer {
        self.client.get(self.gw.http, host, path).await
    }

    async fn send(
        &self,
        host: &str,
        request: hyper::http::request::Builder,
        body: &'static [u8],
    ) -> Answer {
        self.client
            .send(self.gw.http, host, request, Bytes::from_static(body))
            .await
            .expect("request")
    }
}

fn location(answer: &Answer) -> &str {
    answer.headers["location"].to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_rewrites_and_redirects() {
    let web = Backend::start("web").await;
    let errors = Backend::start("errors").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = ManifestsDir::new();
    let rx = &[("/", "Prefix")];
    dir.write(
        "app.yaml",
        &[
            service("web", &[web.addr]),
            service("errors", &[errors.addr]),
            service("empty", &[]),
            service("dead", &[dead]),
            annotated_ingress(
                "rewrite",
                Some("rewrite.test"),
                &[("/something(/|$)(.*)", "ImplementationSpecific")],
                "web",
                &[("use-regex", "true"), ("rewrite-target", "/$2")],
            ),
            annotated_ingress(
                "plain",
                Some("rewrite.test"),
                &[("/static", "Prefix")],
                "web",
                &[],
            ),
            annotated_ingress(
                "root",
                Some("root.test"),
                rx,
                "web",
                &[("app-root", "/app")],
            ),
            annotated_ingress(
                "prefix",
                Some("prefix.test"),
                rx,
                "web",
                &[
                    ("x-forwarded-prefix", "/shop"),
                    ("upstream-vhost", "internal.svc"),
                ],
            ),
            annotated_ingress(
                "moved",
                Some("moved.test"),
                rx,
                "web",
                &[
                    ("permanent-redirect", "https://new.test/landing"),
                    ("permanent-redirect-code", "308"),
                ],
            ),
            annotated_ingress(
                "temp",
                Some("temp.test"),
                rx,
                "web",
                &[("temporal-redirect", "https://elsewhere.test/")],
            ),
            annotated_ingress(
                "www",
                Some("www.shop.test"),
                rx,
                "web",
                &[("from-to-www-redirect", "true")],
            ),
            annotated_ingress(
                "errs",
                Some("errs.test"),
                rx,
                "web",
                &[
                    ("default-backend", "errors"),
                    ("custom-http-errors", "503,404"),
                ],
            ),
            annotated_ingress(
                "down",
                Some("down.test"),
                rx,
                "dead",
                &[("default-backend", "errors"), ("custom-http-errors", "502")],
            ),
            annotated_ingress(
                "fallback",
                Some("fallback.test"),
                rx,
                "empty",
                &[("default-backend", "errors")],
            ),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let routes = gw.routes();
    let warnings = routes["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{routes:#}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .ends_with("its requests go to the default-backend default/errors:80"),
        "{routes:#}"
    );
    let t = Through {
        gw: &gw,
        client: HttpClient::new(),
    };

    // use-regex + rewrite-target: captures fill the target, the query follows.
    let answer = t.get("rewrite.test", "/something/new/item?x=1").await;
    assert_eq!(answer.json()["uri"], "/new/item?x=1");
    assert_eq!(t.get("rewrite.test", "/SOMETHING").await.json()["uri"], "/");
    // The host's other Ingress is a (case-insensitive) expression too, not rewritten.
    assert_eq!(
        t.get("rewrite.test", "/STATIC/a.css").await.json()["uri"],
        "/STATIC/a.css"
    );

    // app-root: only `/` is redirected.
    let answer = t.get("root.test", "/").await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(location(&answer), "http://root.test/app");
    assert_eq!(t.get("root.test", "/app/x").await.status, StatusCode::OK);

    // x-forwarded-prefix and upstream-vhost reach the backend.
    let seen = t.get("prefix.test", "/a").await.json();
    assert_eq!(seen["headers"]["x-forwarded-prefix"], "/shop");
    assert_eq!(seen["headers"]["host"], "internal.svc");

    // permanent-redirect with its code, temporal-redirect (302); the backend is not called.
    let answer = t.get("moved.test", "/anything").await;
    assert_eq!(
        (answer.status, location(&answer)),
        (StatusCode::PERMANENT_REDIRECT, "https://new.test/landing")
    );
    let answer = t.get("temp.test", "/").await;
    assert_eq!(
        (answer.status, location(&answer)),
        (StatusCode::FOUND, "https://elsewhere.test/")
    );

    // from-to-www-redirect: the bare name goes to www, path and query kept.
    let answer = t.get("shop.test", "/cart?id=1").await;
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(location(&answer), "http://www.shop.test/cart?id=1");
    assert_eq!(t.get("www.shop.test", "/").await.status, StatusCode::OK);

    // custom-http-errors: the error backend's page, with the original status and the headers
    // ingress-nginx's error backends read; other statuses pass untouched.
    let answer = t
        .send(
            "errs.test",
            Request::get("/status/503").header("x-request-id", "err-1"),
            b"",
        )
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let page = answer.json();
    assert_eq!(page["service"], "errors");
    assert_eq!(page["headers"]["x-code"], "503");
    assert_eq!(page["headers"]["x-original-uri"], "/status/503");
    assert_eq!(page["headers"]["x-ingress-name"], "errs");
    assert_eq!(page["headers"]["x-service-name"], "web");
    assert_eq!(page["headers"]["x-request-id"], "err-1");
    assert_eq!(
        t.get("errs.test", "/status/500").await.json()["service"],
        "web"
    );
    // The gateway's own errors get the page too (nothing listens on the `dead` endpoint).
    let answer = t.get("down.test", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["headers"]["x-code"], "502");
    // default-backend: serves when the route's Service has no endpoint.
    assert_eq!(
        t.get("fallback.test", "/").await.json()["service"],
        "errors"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_protocols_carry_grpc_with_trailers_over_h2c_and_tls() {
    let ca = gateway_e2e::pki::Ca::new();
    let backend_cert = ca.leaf(&["grpc.internal"]);
    let tls = Behaviour {
        tls: Some((backend_cert.cert_pem.clone(), backend_cert.key_pem.clone())),
        ..Behaviour::default()
    };
    let h2c = Backend::start("grpc-h2c").await;
    let over_tls = Backend::start_behaving("grpc-tls", tls.clone()).await;
    let https = Backend::start_behaving("https", tls).await;
    let front = ca.leaf(&["grpcs.test"]);
    let dir = ManifestsDir::new();
    let root = &[("/", "Prefix")];
    dir.write(
        "app.yaml",
        &([
            service("grpc-h2c", &[h2c.addr]),
            service("grpc-tls", &[over_tls.addr]),
            service("https", &[https.addr]),
            front.secret("default", "front"),
            annotated_ingress("grpc", Some("grpc.test"), root, "grpc-h2c", &[("backend-protocol", "GRPC")]),
            // A TLS host that also takes h2c (gRPC clients inside a trusted network).
            annotated_ingress("grpcs", Some("grpcs.test"), root, "grpc-tls", &[("backend-protocol", "GRPCS"), ("ssl-redirect", "false")]),
            annotated_ingress("https", Some("https.test"), root, "https", &[("backend-protocol", "HTTPS")]),
        ]
        .concat()
            .to_string()
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: front-tls}\nspec:\n  tls: [{hosts: [grpcs.test], secretName: front}]\n  rules:\n  - host: grpcs.test\n    http: {paths: [{path: /front, pathType: Prefix, backend: {service: {name: grpc-h2c, port: {number: 80}}}}]}\n"),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);

    // Client h2c -> gateway -> h2c backend: the body and the trailers come back.
    let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (status, body, trailers) =
        grpc_call(&mut sender, "grpc.test", "http", "/echo.Echo/Say").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"\0\0\0\0\x05hello");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        trailers["grpc-message"], "grpc-h2c HTTP/2.0",
        "h2c all the way"
    );
    // ... and to a backend over TLS (GRPCS).
    let (_, _, trailers) = grpc_call(&mut sender, "grpcs.test", "http", "/echo.Echo/Say").await;
    assert_eq!(trailers["grpc-message"], "grpc-tls HTTP/2.0");

    // Client over TLS (ALPN h2) -> gateway -> GRPCS backend.
    let stream = gateway_e2e::pki::connect(ca.client_config(&["h2"]), gw.https, "grpcs.test")
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (status, _, trailers) =
        grpc_call(&mut sender, "grpcs.test", "https", "/echo.Echo/Say").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            trailers["grpc-status"].to_str().unwrap(),
            trailers["grpc-message"].to_str().unwrap()
        ),
        ("0", "grpc-tls HTTP/2.0")
    );

    // A bidirectional stream through the gateway: each message is echoed before the next one
    // is sent, so nothing on the way buffers a whole body.
    let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (messages, outgoing) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::unfold(outgoing, |mut outgoing| async move {
        let message = outgoing.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(message)),
            outgoing,
        ))
    });
    let request = Request::post("http://grpc.test/echo.Echo/Stream")
        .header("content-type", "application/grpc")
        .body(http_body_util::StreamBody::new(Box::pin(frames)))
        .unwrap();
    let exchange = tokio::spawn(async move { sender.send_request(request).await });
    messages.send(Bytes::from_static(b"one")).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("response headers while the request is still open")
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    for message in ["one", "two", "three"] {
        if message != "one" {
            messages.send(Bytes::from(message)).await.unwrap();
        }
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("each message comes back before the next is sent")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), message);
    }
    drop(messages);
    let trailers = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "0");

    // backend-protocol: HTTPS is HTTP/1.1 over TLS to the backend.
    let seen = HttpClient::new()
        .get(gw.http, "https.test", "/x")
        .await
        .json();
    assert_eq!(
        (seen["service"].as_str(), seen["version"].as_str()),
        (Some("https"), Some("HTTP/1.1"))
    );
}

/// A loopback listener whose accept queue is full, so connecting to it hangs.
async fn unreachable() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fill = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fill.push(stream);
        }
    }
    (listener, fill)
}

/// A backend that reads the request head and then nothing, forever.
async fn never_reading() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_body_limits_and_retries() {
    let web = Backend::start("web").await;
    let failing = Backend::start_behaving(
        "failing",
        Behaviour {
            status: Some(StatusCode::BAD_GATEWAY),
            ..Behaviour::default()
        },
    )
    .await;
    let (hanging, _held) = unreachable().await;
    let (deaf, _deaf_task) = never_reading().await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dir = ManifestsDir::new();
    let root = &[("/", "Prefix")];
    dir.write(
        "app.yaml",
        &[
            service("web", &[web.addr]),
            service("hanging", &[hanging.local_addr().unwrap()]),
            service("deaf", &[deaf]),
            service("mixed", &[failing.addr, web.addr]),
            service("half-dead", &[dead, web.addr]),
            annotated_ingress(
                "read",
                Some("read.test"),
                root,
                "web",
                &[("proxy-read-timeout", "1")],
            ),
            annotated_ingress(
                "connect",
                Some("connect.test"),
                root,
                "hanging",
                &[("proxy-connect-timeout", "1")],
            ),
            annotated_ingress(
                "send",
                Some("send.test"),
                root,
                "deaf",
                &[("proxy-send-timeout", "1")],
            ),
            annotated_ingress(
                "small",
                Some("small.test"),
                root,
                "web",
                &[("proxy-body-size", "1k")],
            ),
            annotated_ingress(
                "retry",
                Some("retry.test"),
                root,
                "mixed",
                &[
                    ("proxy-next-upstream", "error timeout http_502"),
                    ("proxy-next-upstream-tries", "2"),
                ],
            ),
            annotated_ingress(
                "noretry",
                Some("noretry.test"),
                root,
                "mixed",
                &[("proxy-next-upstream", "off")],
            ),
            annotated_ingress("refused", Some("refused.test"), root, "half-dead", &[]),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let t = Through {
        gw: &gw,
        client: HttpClient::new(),
    };

    let answer = t.get("read.test", "/sleep/3000").await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("did not answer within 1s"),
        "{}",
        answer.body
    );
    let answer = t.get("connect.test", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert!(
        answer.body.contains("timed out after 1s"),
        "{}",
        answer.body
    );

    // proxy-send-timeout: a backend that stops reading a large upload.
    let upload = Bytes::from(vec![b'u'; 64 << 20]);
    let answer = t
        .client
        .send(gw.http, "send.test", Request::post("/upload"), upload)
        .await;
    let answer = answer.expect("the gateway answers");
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("did not read the request body for 1s"),
        "{}",
        answer.body
    );

    // proxy-body-size: a declared length over the limit is refused before any backend sees
    // it; a streamed (chunked) body is cut off when it passes the limit.
    let big = Bytes::from(vec![b'b'; 2048]);
    let answer = t
        .client
        .send(gw.http, "small.test", Request::post("/"), big.clone())
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let chunks = futures_util::stream::iter((0..4).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'c'; 600])))
    }));
    let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let streamed = Request::post("/")
        .header("host", "small.test")
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let response = sender.send_request(streamed).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        t.send("small.test", Request::post("/"), &[b'x'; 1000])
            .await
            .status,
        StatusCode::OK
    );

    // proxy-next-upstream: GETs answered 502 by one endpoint are retried on the other; a POST
    // (not idempotent) never is; with `off`, nothing is retried.
    let mut outcomes: HashMap<u16, usize> = HashMap::new();
    for _ in 0..10 {
        let status = t.get("retry.test", "/").await.status;
        assert_eq!(status, StatusCode::OK, "every GET succeeds after a retry");
        let post = t.send("retry.test", Request::post("/"), b"").await.status;
        *outcomes.entry(post.as_u16()).or_default() += 1;
    }
    assert!(
        outcomes.get(&502).is_some_and(|n| *n > 0),
        "POSTs are not retried: {outcomes:?}"
    );
    let failed = futures_util::future::join_all((0..10).map(|_| t.get("noretry.test", "/"))).await;
    assert!(
        failed.iter().any(|a| a.status == StatusCode::BAD_GATEWAY),
        "off: no retry"
    );
    // A refused connection is always retried (nothing was sent), POST included.
    for _ in 0..6 {
        assert_eq!(
            t.send("refused.test", Request::post("/"), b"body")
                .await
                .status,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_balancing_hashing_affinity_and_service_upstream() {
    let slow = Backend::start_behaving(
        "slow",
        Behaviour {
            delay: Duration::from_millis(40),
            ..Behaviour::default()
        },
    )
    .await;
    let fast = Backend::start("fast").await;
    let trio = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let trio_addrs: Vec<SocketAddr> = trio.iter().map(|b| b.addr).collect();
    let dir = ManifestsDir::new();
    let root = &[("/", "Prefix")];
    let cluster_ip = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: by-cluster-ip}}\nspec: {{clusterIP: 127.0.0.1, ports: [{{name: http, port: {}}}]}}\n---\n",
        fast.addr.port()
    );
    dir.write(
        "app.yaml",
        &[
            service("pair", &[slow.addr, fast.addr]),
            service("trio", &trio_addrs),
            cluster_ip,
            annotated_ingress("ewma", Some("ewma.test"), root, "pair", &[("load-balance", "ewma")]),
            annotated_ingress("hash", Some("hash.test"), root, "trio", &[("upstream-hash-by", "$request_uri")]),
            annotated_ingress("sticky", Some("sticky.test"), root, "trio",
                &[("affinity", "cookie"), ("session-cookie-name", "route"), ("session-cookie-max-age", "600")]),
            annotated_ingress("pinned", Some("pinned.test"), root, "trio",
                &[("affinity", "cookie"), ("affinity-mode", "persistent")]),
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: cip\n  annotations: {nginx.ingress.kubernetes.io/service-upstream: \"true\"}\nspec:\n  rules:\n  - host: cip.test\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: by-cluster-ip, port: {name: http}}}}]}\n---\n".to_string(),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let t = Through {
        gw: &gw,
        client: HttpClient::new(),
    };

    // ewma: after both have been measured, the fast endpoint takes nearly everything.
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        *served
            .entry(t.get("ewma.test", "/").await.service())
            .or_default() += 1;
    }
    assert!(served.get("fast").copied().unwrap_or(0) >= 45, "{served:?}");

    // upstream-hash-by: one URI always lands on one endpoint; different URIs spread.
    let mut endpoints = std::collections::HashSet::new();
    for uri in 0..30 {
        let path = format!("/item/{uri}");
        let first = t.get("hash.test", &path).await.service();
        for _ in 0..3 {
            assert_eq!(t.get("hash.test", &path).await.service(), first, "{path}");
        }
        endpoints.insert(first);
    }
    assert_eq!(endpoints.len(), 3, "30 URIs over 3 endpoints");

    // affinity: cookie (balanced): the first answer sets the cookie; it keeps the client on one
    // endpoint.
    for mode_host in ["sticky.test", "pinned.test"] {
        let first = t.get(mode_host, "/").await;
        let set_cookie = first.headers["set-cookie"].to_str().unwrap().to_string();
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        if mode_host == "sticky.test" {
            assert!(
                set_cookie.starts_with("route=") && set_cookie.contains("Max-Age=600"),
                "{set_cookie}"
            );
        } else {
            assert!(set_cookie.starts_with("INGRESSCOOKIE="), "{set_cookie}");
        }
        let stuck = first.service();
        for _ in 0..15 {
            let answer = t
                .send(mode_host, Request::get("/").header("cookie", &cookie), b"")
                .await;
            assert_eq!(answer.service(), stuck, "{mode_host} sticks");
            assert!(
                answer.headers.get("set-cookie").is_none(),
                "the cookie stays as it is"
            );
        }
    }

    // service-upstream: the Service's cluster IP and port, not its endpoints.
    assert_eq!(t.get("cip.test", "/").await.service(), "fast");
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_by_header_cookie_and_weight() {
    let stable = Backend::start("stable").await;
    let beta = Backend::start("beta").await;
    let dir = ManifestsDir::new();
    let root = &[("/", "Prefix")];
    dir.write(
        "app.yaml",
        &[
            service("stable", &[stable.addr]),
            service("beta", &[beta.addr]),
            annotated_ingress("main", Some("shop.test"), root, "stable", &[]),
            annotated_ingress(
                "canary",
                Some("shop.test"),
                root,
                "beta",
                &[
                    ("canary", "true"),
                    ("canary-by-header", "x-canary"),
                    ("canary-by-cookie", "canary"),
                    ("canary-weight", "30"),
                ],
            ),
            annotated_ingress("main2", Some("pattern.test"), root, "stable", &[]),
            annotated_ingress(
                "canary2",
                Some("pattern.test"),
                root,
                "beta",
                &[
                    ("canary", "true"),
                    ("canary-by-header", "x-region"),
                    ("canary-by-header-pattern", "^eu-"),
                ],
            ),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    assert_eq!(gw.routes()["warnings"], serde_json::json!([]));
    let t = Through {
        gw: &gw,
        client: HttpClient::new(),
    };
    let with = |name: &'static str, value: &'static str| Request::get("/").header(name, value);
    for _ in 0..10 {
        assert_eq!(
            t.send("shop.test", with("x-canary", "always"), b"")
                .await
                .service(),
            "beta"
        );
        // The header wins over the cookie.
        let both = with("x-canary", "never").header("cookie", "canary=always");
        assert_eq!(t.send("shop.test", both, b"").await.service(), "stable");
        let cases = [
            ("shop.test", "cookie", "canary=always", "beta"),
            ("shop.test", "cookie", "a=1; canary=never", "stable"),
            ("pattern.test", "x-region", "eu-west", "beta"),
            ("pattern.test", "x-region", "us-east", "stable"),
        ];
        for (host, header, value, expected) in cases {
            let answer = t.send(host, with(header, value), b"").await;
            assert_eq!(answer.service(), expected, "{host} {header}: {value}");
        }
    }
    let mut to_beta = 0;
    for _ in 0..300 {
        if t.get("shop.test", "/").await.service() == "beta" {
            to_beta += 1;
        }
    }
    // 30% of 300 is 90; the bounds are more than five standard deviations (8) away.
    assert!(
        (45..=135).contains(&to_beta),
        "{to_beta} of 300 to the canary"
    );
    let (_, metrics) = gw.admin_get("/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("nginx_ingress_controller_requests{canary=\"default-beta-80\"")),
        "canary requests are labelled"
    );
}

/// GET `path` for `host` from the local address `from` (a loopback address of its own).
async fn get_from(
    from: IpAddr,
    gateway: SocketAddr,
    host: &str,
    request: hyper::http::request::Builder,
) -> StatusCode {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(gateway).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = request
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    sender.send_request(request).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread")]
async fn source_ranges_limits_and_cors() {
    let web = Backend::start("web").await;
    let slow = Backend::start_behaving(
        "slow",
        Behaviour {
            delay: Duration::from_millis(500),
            ..Behaviour::default()
        },
    )
    .await;
    let dir = ManifestsDir::new();
    let root = &[("/", "Prefix")];
    dir.write(
        "app.yaml",
        &[
            service("web", &[web.addr]),
            service("slow", &[slow.addr]),
            annotated_ingress(
                "allow",
                Some("allow.test"),
                root,
                "web",
                &[("whitelist-source-range", "127.0.0.2/32")],
            ),
            annotated_ingress(
                "deny",
                Some("deny.test"),
                root,
                "web",
                &[("denylist-source-range", "127.0.0.3")],
            ),
            annotated_ingress(
                "rps",
                Some("rps.test"),
                root,
                "web",
                &[("limit-rps", "2"), ("limit-burst-multiplier", "2")],
            ),
            annotated_ingress(
                "exempt",
                Some("exempt.test"),
                root,
                "web",
                &[("limit-rps", "1"), ("limit-whitelist", "127.0.0.0/8")],
            ),
            annotated_ingress(
                "conns",
                Some("conns.test"),
                root,
                "slow",
                &[("limit-connections", "1")],
            ),
            annotated_ingress(
                "cors",
                Some("cors.test"),
                root,
                "web",
                &[
                    ("enable-cors", "true"),
                    (
                        "cors-allow-origin",
                        "https://app.example.com, https://*.partner.test",
                    ),
                    ("cors-allow-methods", "GET, PUT"),
                    ("cors-expose-headers", "X-Total"),
                ],
            ),
            annotated_ingress("open", Some("open.test"), root, "web", &[]),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let local = |last: u8| IpAddr::from([127, 0, 0, last]);
    let get = || Request::get("/");

    // Source ranges: 403 in the proxy; every other route is unaffected.
    let cases = [
        (1, "allow.test", StatusCode::FORBIDDEN),
        (2, "allow.test", StatusCode::OK),
        (3, "deny.test", StatusCode::FORBIDDEN),
        (1, "deny.test", StatusCode::OK),
        (3, "open.test", StatusCode::OK),
    ];
    for (from, host, expected) in cases {
        let status = get_from(local(from), gw.http, host, get()).await;
        assert_eq!(status, expected, "from 127.0.0.{from} to {host}");
    }

    // limit-rps 2 with a burst of 4: a quick run of 12 gets 4 through and 503 for the rest;
    // another client address has its own budget; limit-whitelist is exempt.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(get_from(local(4), gw.http, "rps.test", get()).await);
    }
    let passed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!((4..=6).contains(&passed), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(
        get_from(local(5), gw.http, "rps.test", get()).await,
        StatusCode::OK
    );
    for _ in 0..5 {
        assert_eq!(
            get_from(local(4), gw.http, "exempt.test", get()).await,
            StatusCode::OK
        );
    }

    // limit-connections 1: a second request while one is in progress is refused.
    let first = tokio::spawn(get_from(local(6), gw.http, "conns.test", get()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        get_from(local(6), gw.http, "conns.test", get()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(
        get_from(local(6), gw.http, "conns.test", get()).await,
        StatusCode::OK,
        "released"
    );

    // CORS: the preflight is answered by the gateway; allowed origins are echoed.
    let t = Through {
        gw: &gw,
        client: HttpClient::new(),
    };
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/api")
        .header("origin", "https://shop.partner.test")
        .header("access-control-request-method", "PUT");
    let answer = t.send("cors.test", preflight, b"").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(
        answer.headers["access-control-allow-origin"],
        "https://shop.partner.test"
    );
    assert_eq!(answer.headers["access-control-allow-methods"], "GET, PUT");
    assert_eq!(answer.headers["access-control-allow-credentials"], "true");
    assert_eq!(answer.headers["access-control-max-age"], "1728000");
    assert!(answer.body.is_empty(), "not proxied");
    let answer = t
        .send(
            "cors.test",
            Request::get("/").header("origin", "https://app.example.com"),
            b"",
        )
        .await;
    assert_eq!(answer.json()["service"], "web");
    assert_eq!(
        answer.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(answer.headers["access-control-expose-headers"], "X-Total");
    let answer = t
        .send(
            "cors.test",
            Request::get("/").header("origin", "https://evil.test"),
            b"",
        )
        .await;
    assert!(answer.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_target_copies_every_request_to_a_second_backend() {
    let web = Backend::start("web").await;
    let (record, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let shadow = Backend::start_behaving(
        "shadow",
        Behaviour {
            seen: Some(record),
            ..Default::default()
        },
    )
    .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let target = format!("http://{}$request_uri", shadow.addr);
    let headless = format!("http://{}/shadow/$request_uri", shadow.addr);
    let nowhere = format!("http://{dead}$request_uri");
    let dir = ManifestsDir::new();
    let root = &[("/", "Prefix")];
    dir.write(
        "app.yaml",
        &[
            service("web", &[web.addr]),
            annotated_ingress(
                "shop",
                Some("shop.test"),
                root,
                "web",
                &[("mirror-target", &target)],
            ),
            annotated_ingress(
                "bodyless",
                Some("bodyless.test"),
                root,
                "web",
                &[
                    ("mirror-target", &headless),
                    ("mirror-request-body", "off"),
                    ("mirror-host", "shadow.internal"),
                ],
            ),
            annotated_ingress(
                "dead",
                Some("dead.test"),
                root,
                "web",
                &[("mirror-target", &nowhere)],
            ),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let through = Through {
        gw: &gw,
        client: HttpClient::new(),
    };

    // Each request is answered by its backend and copied, head and body, to the target.
    for i in 0..5 {
        let answer = through.get("shop.test", &format!("/items/{i}?q=1")).await;
        assert_eq!(
            (answer.status, answer.service()),
            (StatusCode::OK, "web".into())
        );
        let copy = next_seen(&mut seen).await;
        assert_eq!(copy["path"], format!("/items/{i}?q=1"));
        assert_eq!(copy["headers"]["host"], shadow.addr.to_string());
    }
    let answer = through
        .send("shop.test", Request::post("/upload"), b"0123456789")
        .await;
    assert_eq!(answer.json()["body_bytes"], 10);
    let copy = next_seen(&mut seen).await;
    assert_eq!(
        (copy["method"].as_str(), copy["body_bytes"].as_u64()),
        (Some("POST"), Some(10))
    );

    // Without the body, to a path of its own, with its own Host.
    let answer = through
        .send("bodyless.test", Request::post("/upload"), b"0123456789")
        .await;
    assert_eq!(answer.json()["body_bytes"], 10);
    let copy = next_seen(&mut seen).await;
    assert_eq!(copy["path"], "/shadow/upload");
    assert_eq!(copy["headers"]["host"], "shadow.internal");
    assert_eq!(copy["body_bytes"], 0);

    // A target that refuses connections never fails the original; the failure is counted.
    for _ in 0..3 {
        assert_eq!(through.get("dead.test", "/").await.status, StatusCode::OK);
    }
    let failed = || {
        let (_, metrics) = gw.admin_get("/metrics").unwrap();
        gateway_e2e::gateway::sample(
            &metrics,
            "xdp_gateway_mirrored_requests_total",
            &[("result", "failed")],
        )
        .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while failed() < 3.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed(), 3.0);
    let (_, metrics) = gw.admin_get("/metrics").unwrap();
    let sent = gateway_e2e::gateway::sample(
        &metrics,
        "xdp_gateway_mirrored_requests_total",
        &[("result", "sent")],
    );
    assert_eq!(sent, Some(7.0));
}
