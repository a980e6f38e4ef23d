//! Operations: metrics under ingress-nginx's names after known traffic, access log lines with
//! the documented fields, graceful drain on SIGTERM and hitless restarts, with the real binary.

use std::time::Duration;

use bytes::Bytes;
use gateway_e2e::backend::Backend;
use gateway_e2e::client::HttpClient;
use gateway_e2e::gateway::{Gateway, log_lines, sample};
use gateway_e2e::manifests::{ManifestsDir, ingress, service};
use hyper::{Request, StatusCode};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_known_traffic_under_ingress_nginx_names() {
    let api = Backend::start("api").await;
    let dir = ManifestsDir::new();
    dir.write(
        "app.yaml",
        &(service("api", &[api.addr])
            + &ingress("shop", Some("shop.test"), "/api", "Prefix", "api")),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let client = HttpClient::new();
    for _ in 0..3 {
        assert_eq!(
            client
                .get(gw.http, "shop.test", "/api/items?page=1")
                .await
                .status,
            StatusCode::OK
        );
    }
    let upload = Bytes::from(vec![b'x'; 10_000]);
    let posted = client
        .send(gw.http, "shop.test", Request::post("/api/upload"), upload)
        .await
        .unwrap();
    assert_eq!(posted.status, StatusCode::OK);
    assert_eq!(
        client.get(gw.http, "shop.test", "/elsewhere").await.status,
        StatusCode::NOT_FOUND
    );
    // A method clients invent does not add a series of its own.
    let brewed = client
        .send(
            gw.http,
            "shop.test",
            Request::builder().method("BREW").uri("/api/pot"),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(brewed.status, StatusCode::OK);

    let (status, metrics) = gw.admin_get("/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    let route = [
        ("host", "shop.test"),
        ("path", "/api"),
        ("namespace", "default"),
        ("ingress", "shop"),
        ("service", "api"),
        ("controller_class", "xdp-gateway"),
        ("canary", ""),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        route.iter().chain(extra).copied().collect()
    };
    let requests = "nginx_ingress_controller_requests";
    assert_eq!(
        sample(
            &metrics,
            requests,
            &with(&[("method", "GET"), ("status", "200")])
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            requests,
            &with(&[("method", "POST"), ("status", "200")])
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            requests,
            &with(&[("method", "OTHER"), ("status", "200")])
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            requests,
            &[("host", ""), ("path", ""), ("status", "404")]
        ),
        Some(1.0),
        "an unmatched request is counted without a route"
    );
    // The request path never becomes a label.
    assert!(!metrics.contains("/api/items"), "{metrics}");
    assert!(!metrics.contains("/elsewhere"), "{metrics}");

    let post = with(&[("method", "POST"), ("status", "200")]);
    let size = sample(&metrics, "nginx_ingress_controller_request_size_sum", &post).unwrap();
    assert!((10_000.0..11_000.0).contains(&size), "request size {size}");
    let response_size = sample(
        &metrics,
        "nginx_ingress_controller_response_size_sum",
        &post,
    )
    .unwrap();
    assert!(response_size > 100.0, "response size {response_size}");
    let get = with(&[("method", "GET"), ("status", "200")]);
    for histogram in [
        "nginx_ingress_controller_request_duration_seconds",
        "nginx_ingress_controller_response_duration_seconds",
        "nginx_ingress_controller_request_size",
        "nginx_ingress_controller_response_size",
    ] {
        let count = format!("{histogram}_count");
        assert_eq!(sample(&metrics, &count, &get), Some(3.0), "{histogram}");
        let mut inf = get.clone();
        inf.push(("le", "+Inf"));
        assert_eq!(
            sample(&metrics, &format!("{histogram}_bucket"), &inf),
            Some(3.0),
            "{histogram}"
        );
    }
    let duration = sample(
        &metrics,
        "nginx_ingress_controller_request_duration_seconds_sum",
        &get,
    )
    .unwrap();
    assert!(duration > 0.0 && duration < 3.0, "{duration}");

    // The gateway's own: the first request opened a backend connection, the rest reused it.
    let reused = sample(
        &metrics,
        "xdp_gateway_upstream_requests_total",
        &[("reused", "true")],
    )
    .unwrap();
    let new = sample(
        &metrics,
        "xdp_gateway_upstream_requests_total",
        &[("reused", "false")],
    )
    .unwrap();
    assert_eq!(reused + new, 5.0, "{metrics}");
    assert!(
        reused >= 3.0,
        "keep-alive to the backend: {reused} reused, {new} new"
    );
    assert!(
        sample(
            &metrics,
            "xdp_gateway_connections_total",
            &[("scheme", "http")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(sample(&metrics, "xdp_gateway_config_generation", &[]).unwrap() >= 1.0);
    assert_eq!(
        sample(&metrics, "xdp_gateway_config_warnings", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "xdp_gateway_config_apply_duration_seconds_count",
            &[]
        ),
        sample(&metrics, "xdp_gateway_config_generation", &[])
    );
    assert!(metrics.ends_with("# EOF\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_access_log_lines_carry_the_documented_fields() {
    let api = Backend::start("api").await;
    let dir = ManifestsDir::new();
    dir.write(
        "app.yaml",
        &(service("api", &[api.addr])
            + &ingress("shop", Some("shop.test"), "/api", "Prefix", "api")),
    );
    let log = dir.path().join("access.log");
    let gw = Gateway::start(dir.path(), &["--access-log", log.to_str().unwrap()]);
    let client = HttpClient::new();

    let answer = client
        .send(
            gw.http,
            "shop.test",
            Request::post("/api/orders?id=7")
                .header("user-agent", "ops-test/1")
                .header("x-request-id", "trace-abc-123"),
            Bytes::from_static(b"hello"),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json()["headers"]["x-request-id"],
        "trace-abc-123",
        "propagated to the backend"
    );
    let generated = client.get(gw.http, "shop.test", "/api/other").await;
    let generated_id = generated.json()["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(generated_id.len(), 32, "a generated id: {generated_id}");
    assert_eq!(
        client.get(gw.http, "nobody.test", "/").await.status,
        StatusCode::NOT_FOUND
    );

    let lines = log_lines(&log, 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let first = &entries[0];
    for field in [
        "time",
        "request_id",
        "remote_addr",
        "host",
        "method",
        "path",
        "protocol",
        "status",
        "bytes_sent",
        "request_length",
        "duration",
        "upstream_addr",
        "upstream_status",
        "upstream_response_time",
        "upstream_header_time",
        "namespace",
        "ingress",
        "service",
        "route_path",
        "scheme",
        "tls_version",
        "sni",
        "user_agent",
        "referer",
    ] {
        assert!(first.get(field).is_some(), "field {field} missing: {first}");
    }
    assert_eq!(first["request_id"], "trace-abc-123");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/api/orders?id=7");
    assert_eq!(first["host"], "shop.test");
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream_status"], 200);
    assert_eq!(first["upstream_addr"], api.addr.to_string());
    assert_eq!(first["namespace"], "default");
    assert_eq!(first["ingress"], "shop");
    assert_eq!(first["service"], "api");
    assert_eq!(first["route_path"], "/api");
    assert_eq!(first["user_agent"], "ops-test/1");
    assert_eq!(first["scheme"], "http");
    assert!(first["request_length"].as_u64().unwrap() > 5);
    assert_eq!(
        first["bytes_sent"].as_u64().unwrap() as usize,
        answer.body.len()
    );
    assert!(first["time"].as_str().unwrap().starts_with("20"));
    assert!(
        first["duration"].as_f64().unwrap() >= first["upstream_response_time"].as_f64().unwrap()
    );
    assert_eq!(
        entries[1]["request_id"],
        generated_id.as_str(),
        "the log and the backend agree"
    );
    assert_eq!(entries[2]["status"], 404);
    assert!(entries[2]["upstream_addr"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreaminfo_lines_follow_the_ingress_nginx_layout() {
    let api = Backend::start("api").await;
    let dir = ManifestsDir::new();
    dir.write(
        "app.yaml",
        &(service("api", &[api.addr]) + &ingress("shop", Some("shop.test"), "/", "Prefix", "api")),
    );
    let log = dir.path().join("access.log");
    let gw = Gateway::start(
        dir.path(),
        &[
            "--access-log",
            log.to_str().unwrap(),
            "--access-log-format",
            "upstreaminfo",
        ],
    );
    let client = HttpClient::new();
    let answer = client
        .send(
            gw.http,
            "shop.test",
            Request::get("/a\"b?q=1")
                .header("x-request-id", "rid-1")
                .header("referer", "http://r/"),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let lines = log_lines(&log, 1);
    let line = &lines[0];
    // $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    // "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name]
    // [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length
    // $upstream_response_time $upstream_status $req_id
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    // A quote in the request line is escaped as nginx escapes it, so the line still parses.
    let request = "\"GET /a\\x22b?q=1 HTTP/1.1\" 200 ";
    assert!(line.contains(request), "{line}");
    assert!(line.contains(" \"http://r/\" \"\" "), "{line}");
    assert!(line.contains(" [default-api-80] [] "), "{line}");
    assert!(
        line.contains(&format!(" {} {} ", api.addr, answer.body.len())),
        "{line}"
    );
    assert!(line.ends_with(" 200 rid-1"), "{line}");
}

/// A POST whose body trickles in `chunks` pieces of `size` bytes, one every `every`.
async fn slow_upload(
    addr: std::net::SocketAddr,
    host: &str,
    chunks: usize,
    size: usize,
    every: Duration,
) -> Result<(StatusCode, Value), String> {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let (chunk_sender, chunk_receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for _ in 0..chunks {
            tokio::time::sleep(every).await;
            if chunk_sender
                .send(Bytes::from(vec![b'u'; size]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let frames = futures_util::stream::unfold(chunk_receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Frame::data(chunk)),
            receiver,
        ))
    });
    let request = Request::post("/upload")
        .header("host", host)
        .body(StreamBody::new(frames))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let json = serde_json::from_slice(&body).map_err(|e| format!("{e}: {body:?}"))?;
    Ok((status, json))
}

/// Sends requests on keep-alive connections until the admin /readyz turns unready (checked
/// between requests, as a load balancer's health check would), and reports what failed.
async fn until_unready(gw: &Gateway, host: &str) -> (usize, usize, Vec<String>) {
    let client = HttpClient::new();
    let (mut served, mut closing, mut failures) = (0, 0, Vec::new());
    let admin = gw.admin;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match client
            .send(gw.http, host, Request::get("/"), Bytes::new())
            .await
        {
            Ok(answer) if answer.status == StatusCode::OK => {
                served += 1;
                if answer
                    .headers
                    .get("connection")
                    .is_some_and(|v| v == "close")
                {
                    closing += 1;
                }
            }
            Ok(answer) => failures.push(format!("{} {}", answer.status, answer.body)),
            Err(error) => failures.push(error),
        }
        let ready = tokio::task::spawn_blocking(move || {
            gateway_e2e::client::blocking_get(admin, "/readyz").map(|(status, _)| status)
        })
        .await
        .unwrap();
        if ready != Some(200) {
            return (served, closing, failures);
        }
    }
    panic!("/readyz never turned unready");
}

/// An echo backend and a manifests folder routing `host` to it.
async fn web_behind(host: &str) -> (Backend, ManifestsDir) {
    let web = Backend::start("web").await;
    let dir = ManifestsDir::new();
    dir.write(
        "app.yaml",
        &(service("web", &[web.addr]) + &ingress("web", Some(host), "/", "Prefix", "web")),
    );
    (web, dir)
}

/// A gateway serving an echo backend for `host`, draining with a 1 s delay and the given
/// deadline (the backend and folder live as long as the returned values).
async fn draining_gateway(host: &str, deadline: &str) -> (Gateway, Backend, ManifestsDir) {
    let (web, dir) = web_behind(host).await;
    let flags = [
        "--access-log",
        "off",
        "--drain-delay",
        "1",
        "--drain-timeout",
        deadline,
    ];
    let gw = Gateway::start(dir.path(), &flags);
    (gw, web, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_without_failing_requests_and_finishes_an_upload_in_flight() {
    let (gw, _web, _dir) = draining_gateway("web.test", "10").await;
    // An HTTP/2 connection, idle after one request: it must get GOAWAY when the drain stops.
    let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut h2, h2_connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let h2_connection = tokio::spawn(h2_connection);
    let request = Request::get("http://web.test/").body(http_body_util::Empty::<Bytes>::new());
    assert_eq!(
        h2.send_request(request.unwrap()).await.unwrap().status(),
        StatusCode::OK
    );

    // 3 s of upload, 1 MB in all, still going when the listeners close at SIGTERM + 1 s.
    let upload = tokio::spawn(slow_upload(
        gw.http,
        "web.test",
        30,
        32 * 1024,
        Duration::from_millis(100),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let steady = {
        let client = HttpClient::new();
        assert_eq!(
            client.get(gw.http, "web.test", "/").await.status,
            StatusCode::OK
        );
        gw.terminate();
        until_unready(&gw, "web.test").await
    };
    let (served, _, failures) = steady;
    assert!(failures.is_empty(), "failed during the drain: {failures:?}");
    assert!(served >= 1);
    assert_eq!(gw.admin_get("/readyz").map(|(s, _)| s), Some(503));

    // Until the delay is over the node still serves, and tells keep-alive clients to move.
    let client = HttpClient::new();
    let answer = client.get(gw.http, "web.test", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["connection"], "close");

    // Then the listeners close, the idle HTTP/2 connection gets GOAWAY ...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        tokio::net::TcpStream::connect(gw.http).await.is_err(),
        "the listener is closed after the delay"
    );
    tokio::time::timeout(Duration::from_secs(2), h2_connection)
        .await
        .expect("the idle HTTP/2 connection is closed with GOAWAY")
        .unwrap()
        .expect("closed cleanly");
    // ... and the upload in flight still finishes, whole.
    let (status, seen) = upload
        .await
        .unwrap()
        .expect("the upload in flight completes");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["body_bytes"], 30 * 32 * 1024);

    exits_cleanly_saying(gw, "drained; exiting").await;
}

/// Waits (up to 15 s) for `gateway` to exit by itself with success, having logged `line`.
async fn exits_cleanly_saying(mut gateway: Gateway, line: &'static str) {
    let (status, log) = tokio::task::spawn_blocking(move || {
        let status = gateway.wait_exit(Duration::from_secs(15));
        (status, gateway.log())
    })
    .await
    .unwrap();
    assert_eq!(status.map(|s| s.success()), Some(true), "{log:#?}");
    assert!(log.iter().any(|l| l.contains(line)), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_hands_the_sockets_over_and_fails_no_request() {
    use gateway_e2e::client::{Connections, SteadyLoad};
    let (_web, dir) = web_behind("web.test").await;
    let handoff = dir.path().join("handoff.sock");
    let flags: Vec<String> = [
        "--access-log",
        "off",
        "--drain-delay",
        "1",
        "--handoff-socket",
        handoff.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let start = {
        let dir = dir.path().to_path_buf();
        move || {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            Gateway::start(&dir, &flags)
        }
    };
    let old = start.clone()();
    let (http, admin) = (old.http, old.admin);
    let keep_alive = SteadyLoad::start_with(http, "web.test", 2, Connections::KeepAlive);
    let fresh = SteadyLoad::start_with(http, "web.test", 2, Connections::Fresh);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let new = tokio::task::spawn_blocking(start).await.unwrap();
    assert_eq!(
        (new.http, new.admin),
        (http, admin),
        "the same sockets, taken over"
    );
    exits_cleanly_saying(old, "a new process took over").await;
    // The new process alone serves now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (kept, kept_failures) = keep_alive.stop().await;
    let (fresh_served, fresh_failures) = fresh.stop().await;
    assert!(
        kept_failures.is_empty(),
        "keep-alive clients failed: {kept_failures:?}"
    );
    assert!(
        fresh_failures.is_empty(),
        "new connections failed: {fresh_failures:?}"
    );
    assert!(kept > 50 && fresh_served > 50, "{kept} {fresh_served}");
    assert!(
        new.log()
            .iter()
            .any(|l| l.contains("took over from the running gateway"))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&handoff).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the gateway's user may take its sockets"
    );
    let (_, metrics) = new.admin_get("/metrics").unwrap();
    let served_by_new = sample(
        &metrics,
        "nginx_ingress_controller_requests",
        &[("status", "200")],
    );
    assert!(
        served_by_new.unwrap_or(0.0) > 10.0,
        "the new process serves: {served_by_new:?}"
    );
}

/// A WebSocket to `host` through `gateway`, and the echo of one message on it.
async fn websocket(
    gateway: std::net::SocketAddr,
    host: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{gateway}/chat")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert("host", host.parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
}

async fn echoes<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>, text: &str) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    if socket.send(Message::text(text)).await.is_err() {
        return false;
    }
    match tokio::time::timeout(Duration::from_secs(3), socket.next()).await {
        Ok(Some(Ok(message))) => message.into_text().is_ok_and(|t| t.as_str() == text),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_keep_working_through_the_drain_until_its_deadline() {
    let (mut gw, _web, _dir) = draining_gateway("ws.test", "2").await;
    let mut before = websocket(gw.http, "ws.test").await;
    assert!(echoes(&mut before, "before").await);
    gw.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Upgrades still work while the node is being taken out (no `Connection: close` on a 101).
    let mut during = websocket(gw.http, "ws.test").await;
    assert!(echoes(&mut during, "during").await);
    // After the listeners closed, open tunnels carry on until the drain deadline.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(echoes(&mut before, "still").await);
    assert!(echoes(&mut during, "still").await);
    let exit = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(exit.is_some(), "the deadline ends the drain");
    assert!(
        !echoes(&mut before, "after").await,
        "tunnels end with the process"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successor_that_fails_before_serving_leaves_the_old_process_serving() {
    use gateway_e2e::client::SteadyLoad;
    let (_web, dir) = web_behind("web.test").await;
    let handoff = dir.path().join("handoff.sock");
    let handoff_flag = handoff.to_str().unwrap().to_string();
    let mut old = Gateway::start(
        dir.path(),
        &[
            "--access-log",
            "off",
            "--handoff-socket",
            &handoff_flag,
            "--drain-delay",
            "0",
        ],
    );
    let load = SteadyLoad::start(old.http, "web.test", 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // It takes the sockets, then cannot reach its Kubernetes API and exits before READY.
    let failed = std::process::Command::new(gateway_e2e::gateway::binary("gateway"))
        .args([
            "run",
            "--kubernetes",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--https-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--handoff-socket",
            &handoff_flag,
        ])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (served, failures) = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(served > 20);
    assert!(old.is_running(), "the old process keeps serving");
    assert!(
        old.log()
            .iter()
            .any(|l| l.contains("did not take over; still serving")),
        "{:#?}",
        old.log()
    );
    // And a later successor still takes over.
    let new = Gateway::start(
        dir.path(),
        &["--access-log", "off", "--handoff-socket", &handoff_flag],
    );
    exits_cleanly_saying(old, "a new process took over").await;
    let answer = HttpClient::new().get(new.http, "web.test", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
}

/// `--fast-path off`, as a per-project gateway in a pod network runs: its published Service
/// gives Ingress status its addresses but no listeners, so nothing of the kernel path starts;
/// asking for VIPs as well is refused.
#[tokio::test(flavor = "multi_thread")]
async fn fast_path_off_takes_the_published_service_for_status_only() {
    let (_web, dir) = web_behind("web.test").await;
    dir.write(
        "gateway-service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: gw, namespace: project}\n\
         spec:\n  type: NodePort\n  ports:\n  - {name: http, port: 80, targetPort: 80, nodePort: 30080}\n",
    );
    let published = ["--publish-service", "project/gw", "--node-ip", "127.0.0.1"];
    let gw = Gateway::start(
        dir.path(),
        &[
            &published[..],
            &["--fast-path", "off", "--access-log", "off"],
        ]
        .concat(),
    );
    let answer = HttpClient::new().get(gw.http, "web.test", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(gw.admin_get("/bpf/stats").map(|(s, _)| s), Some(404));
    let log = gw.log();
    assert!(
        !log.iter().any(|l| l.to_lowercase().contains("fast path")),
        "{log:#?}"
    );

    let refused = std::process::Command::new(gateway_e2e::gateway::binary("gateway"))
        .arg("run")
        .arg("--manifests")
        .arg(dir.path())
        .args(["--fast-path", "off", "--vip", "127.0.0.1:80=http"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--fast-path off"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_dealt_to_every_worker_thread() {
    let (_web, dir) = web_behind("web.test").await;
    let gw = Gateway::start(
        dir.path(),
        &["--worker-threads", "3", "--access-log", "off"],
    );
    let before = gw.cpu_time_of_threads("worker-");
    let names: Vec<_> = before.keys().map(String::as_str).collect();
    assert_eq!(names, ["worker-1", "worker-2", "worker-3"]);
    // Six keep-alive connections (a client each), opened one after another.
    for _ in 0..6 {
        let client = HttpClient::new();
        for i in 0..10 {
            let answer = client.get(gw.http, "web.test", &format!("/{i}")).await;
            assert_eq!(answer.status, StatusCode::OK);
        }
    }
    // An idle worker sleeps in its poller: every one has run since.
    let after = gw.cpu_time_of_threads("worker-");
    for (name, time) in &after {
        assert!(
            *time > before[name],
            "{name} served nothing: {before:?} {after:?}"
        );
    }
}
