//! End to end: the real `gateway` binary on a manifests folder, real backends on loopback.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gateway_e2e::backend::Backend;
use gateway_e2e::client::{HttpClient, SteadyLoad};
use gateway_e2e::gateway::{Gateway, binary};
use gateway_e2e::manifests::{ManifestsDir, annotated_ingress, ingress, service};
use hyper::{Request, StatusCode};
use tokio_tungstenite::tungstenite::Message;

/// Starts the named backends and writes a Service with one endpoint for each.
async fn backends(dir: &ManifestsDir, names: &[&str]) -> Vec<Backend> {
    let mut started = Vec::new();
    let mut yaml = String::new();
    for name in names {
        let backend = Backend::start(name).await;
        yaml += &service(name, &[backend.addr]);
        started.push(backend);
    }
    dir.write("services.yaml", &yaml);
    started
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_exact_and_wildcard_host() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["exact", "wild", "any"]).await;
    dir.write(
        "ingress.yaml",
        &(ingress("exact", Some("shop.example.com"), "/", "Prefix", "exact")
            + &ingress("wild", Some("*.example.com"), "/", "Prefix", "wild")
            + &ingress("any", None, "/", "Prefix", "any")),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    for (host, expected) in [
        ("shop.example.com", "exact"),
        ("SHOP.example.COM:8080", "exact"),
        ("blog.example.com", "wild"),
        ("deep.blog.example.com", "any"),
        ("example.com", "any"),
        ("127.0.0.1", "any"),
    ] {
        let answer = client.get(gw.http, host, "/").await;
        assert_eq!(answer.status, StatusCode::OK, "{host}: {}", answer.body);
        assert_eq!(answer.service(), expected, "host {host}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn path_types_follow_the_kubernetes_rules() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["root", "prefix", "exact", "impl"]).await;
    dir.write(
        "ingress.yaml",
        &(ingress("root", Some("a.com"), "/", "Prefix", "root")
            + &ingress("prefix", Some("a.com"), "/foo/", "Prefix", "prefix")
            + &ingress("exact", Some("a.com"), "/foo", "Exact", "exact")
            + &ingress(
                "impl",
                Some("a.com"),
                "/impl",
                "ImplementationSpecific",
                "impl",
            )),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    for (path, expected) in [
        ("/foo", "exact"),
        ("/foo/", "prefix"),
        ("/foo/bar?x=1", "prefix"),
        ("/foobar", "root"),
        ("/Foo", "root"),
        ("/impl/deeper", "impl"),
        ("/implx", "root"),
        ("/", "root"),
    ] {
        let answer = client.get(gw.http, "a.com", path).await;
        assert_eq!(answer.service(), expected, "path {path}");
    }
    // The query string reaches the backend untouched.
    let answer = client.get(gw.http, "a.com", "/foo/bar?x=1&y=%20").await;
    assert_eq!(answer.json()["uri"], "/foo/bar?x=1&y=%20");
}

#[tokio::test(flavor = "multi_thread")]
async fn default_backend_and_404() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["web", "fallback"]).await;
    dir.write(
        "web.yaml",
        &ingress("web", Some("a.com"), "/app", "Prefix", "web"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    let missing = client.get(gw.http, "a.com", "/other").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("no route for this host and path"),
        "{}",
        missing.body
    );
    assert_eq!(
        client.get(gw.http, "nowhere.com", "/").await.status,
        StatusCode::NOT_FOUND
    );

    dir.write(
        "default.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: catch-all}\n\
         spec: {defaultBackend: {service: {name: fallback, port: {number: 80}}}}\n",
    );
    gw.wait_routes("the default backend", |r| {
        r["default_backend"]["service"] == "fallback"
    });
    assert_eq!(
        client.get(gw.http, "a.com", "/other").await.service(),
        "fallback"
    );
    assert_eq!(
        client.get(gw.http, "nowhere.com", "/").await.service(),
        "fallback"
    );
    assert_eq!(
        client.get(gw.http, "a.com", "/app/x").await.service(),
        "web"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_only_its_ingress_classes() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["mine", "theirs", "classless"]).await;
    let classes = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: xdp}\n\
                   spec: {controller: xdp-gateway.io/ingress}\n---\n\
                   apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\n\
                   spec: {controller: k8s.io/ingress-nginx}\n";
    dir.write("classes.yaml", classes);
    let with_class = |name: &str, class: &str| {
        ingress(name, Some(&format!("{name}.com")), "/", "Prefix", name)
            .replace("spec:\n", &format!("spec:\n  ingressClassName: {class}\n"))
    };
    dir.write(
        "ingress.yaml",
        &(with_class("mine", "xdp")
            + &with_class("theirs", "nginx")
            + &ingress(
                "classless",
                Some("classless.com"),
                "/",
                "Prefix",
                "classless",
            )),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    assert_eq!(client.get(gw.http, "mine.com", "/").await.service(), "mine");
    assert_eq!(
        client.get(gw.http, "theirs.com", "/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        client.get(gw.http, "classless.com", "/").await.status,
        StatusCode::NOT_FOUND
    );

    // Making our class the default picks up class-less Ingresses, live.
    dir.write(
        "classes.yaml",
        &classes.replace(
            "metadata: {name: xdp}",
            "metadata: {name: xdp, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}",
        ),
    );
    gw.wait_routes("classless served", |r| {
        r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|route| route["host"] == "classless.com")
    });
    assert_eq!(
        client.get(gw.http, "classless.com", "/").await.service(),
        "classless"
    );
    let routes = gw.routes();
    let theirs = routes["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "theirs")
        .unwrap();
    assert_eq!(theirs["served"], false);
    assert!(
        theirs["reason"]
            .as_str()
            .unwrap()
            .contains("k8s.io/ingress-nginx")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn service_port_by_name_and_number() {
    let dir = ManifestsDir::new();
    let web = Backend::start("web").await;
    let admin = Backend::start("admin").await;
    dir.write(
        "service.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: multi}}\n\
             spec: {{ports: [{{name: web, port: 80}}, {{name: admin, port: 9000}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: multi-a, labels: {{kubernetes.io/service-name: multi}}}}\n\
             addressType: IPv4\nports: [{{name: web, port: {}}}, {{name: admin, port: {}}}]\n\
             endpoints: [{{addresses: [127.0.0.1]}}]\n",
            web.addr.port(),
            admin.addr.port()
        ),
    );
    dir.write(
        "ingress.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: multi}\nspec:\n  rules:\n  - host: a.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: multi, port: {number: 80}}}}\n      - {path: /admin, pathType: Prefix, backend: {service: {name: multi, port: {name: admin}}}}\n",
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    assert_eq!(client.get(gw.http, "a.com", "/").await.service(), "web");
    assert_eq!(
        client.get(gw.http, "a.com", "/admin").await.service(),
        "admin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spreads_load_over_all_ready_endpoints() {
    let dir = ManifestsDir::new();
    let mut endpoints = Vec::new();
    let mut running = Vec::new();
    for i in 0..10 {
        let backend = Backend::start(&format!("pod-{i}")).await;
        endpoints.push(backend.addr);
        running.push(backend);
    }
    dir.write("service.yaml", &service("web", &endpoints));
    dir.write(
        "ingress.yaml",
        &ingress("web", Some("a.com"), "/", "Prefix", "web"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    gw.wait_routes("10 endpoints", |r| {
        r["routes"][0]["backend"]["endpoints"]
            .as_array()
            .map(Vec::len)
            == Some(10)
    });
    let client = HttpClient::new();
    let mut hits: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        let answer = client.get(gw.http, "a.com", "/").await;
        *hits.entry(answer.service()).or_default() += 1;
    }
    assert_eq!(hits.len(), 10, "{hits:?}");
    assert!(
        hits.values().all(|&n| n == 10),
        "round robin is even: {hits:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_and_hop_by_hop() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["web"]).await;
    dir.write(
        "ingress.yaml",
        &ingress("web", Some("shop.example.com"), "/", "Prefix", "web"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    let request = Request::get("/headers")
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-custom", "kept");
    let answer = client
        .send(gw.http, "Shop.Example.com:8080", request, Bytes::new())
        .await
        .unwrap();
    let seen = answer.json();
    let headers = &seen["headers"];
    assert_eq!(
        headers["host"], "Shop.Example.com:8080",
        "Host is preserved"
    );
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "client claims are replaced"
    );
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "Shop.Example.com:8080");
    assert_eq!(headers["x-forwarded-port"], gw.http.port().to_string());
    assert_eq!(headers["x-custom"], "kept");
    for gone in ["x-drop-me", "keep-alive", "proxy-connection"] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} must not be forwarded: {headers}"
        );
    }
    assert_eq!(seen["version"], "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_prior_knowledge_is_proxied() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["web"]).await;
    dir.write(
        "ingress.yaml",
        &ingress("web", Some("a.com"), "/", "Prefix", "web"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::http2();
    let answer = client.get(gw.http, "a.com", "/h2").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.service(), "web");
    assert_eq!(answer.json()["headers"]["host"], "a.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_stream_through() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["web"]).await;
    dir.write(
        "ingress.yaml",
        &ingress("web", Some("a.com"), "/", "Prefix", "web"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let body = Bytes::from(vec![b'x'; 8 << 20]);
    for client in [HttpClient::new(), HttpClient::http2()] {
        let answer = client
            .send(gw.http, "a.com", Request::post("/upload"), body.clone())
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["body_bytes"], 8 << 20);
        assert_eq!(answer.json()["method"], "POST");
    }
}

/// Two large downloads at once on one HTTP/2 connection whose client opens small windows and
/// reads slowly: both arrive whole, sent no faster than the client's windows take them.
#[tokio::test(flavor = "multi_thread")]
async fn large_http2_responses_stream_within_the_clients_windows() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["web"]).await;
    dir.write(
        "ingress.yaml",
        &ingress("web", Some("a.com"), "/", "Prefix", "web"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(32 * 1024)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let length = 2_000_000;
    let download = |pause: Duration| {
        let mut sender = sender.clone();
        async move {
            let request = Request::get(format!("http://a.com/bytes/{length}"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let mut body = response.into_body();
            let mut received = Vec::with_capacity(length);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    received.extend_from_slice(&data);
                    tokio::time::sleep(pause).await;
                }
            }
            received
        }
    };
    let both = async { tokio::join!(download(Duration::from_millis(1)), download(Duration::ZERO)) };
    let (slow, fast) = tokio::time::timeout(Duration::from_secs(30), both)
        .await
        .expect("the downloads finish");
    let expected: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
    assert!(
        slow == expected,
        "the slow download arrived whole ({} bytes)",
        slow.len()
    );
    assert!(
        fast == expected,
        "the fast download arrived whole ({} bytes)",
        fast.len()
    );
}

/// A WebSocket to `/chat` through the gateway at `addr` for `host`, and the upgrade response.
async fn websocket(
    addr: std::net::SocketAddr,
    host: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}/chat"
        ))
        .unwrap();
    request.headers_mut().insert("host", host.parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_websocket_is_closed_after_the_read_timeout_and_a_talking_one_is_not() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["ws"]).await;
    dir.write(
        "ingress.yaml",
        &annotated_ingress(
            "ws",
            Some("ws.example.com"),
            &[("/", "Prefix")],
            "ws",
            &[("proxy-read-timeout", "2")],
        ),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let connect = || async { websocket(gw.http, "ws.example.com").await.0 };
    let (mut talking, mut idle) = (connect().await, connect().await);
    // The talking one sends every half second for four seconds, twice the timeout.
    for i in 0..8 {
        talking.send(Message::text(format!("{i}"))).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), talking.next())
            .await
            .expect("echo in time")
            .expect("still open")
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), format!("{i}"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The idle one has said nothing for four seconds: the gateway closed it.
    let ended = tokio::time::timeout(Duration::from_secs(5), idle.next())
        .await
        .expect("the idle tunnel is closed within the timeout, not left open");
    assert!(
        matches!(ended, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_is_tunnelled() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["ws"]).await;
    dir.write(
        "ingress.yaml",
        &ingress("ws", Some("ws.example.com"), "/", "Prefix", "ws"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let (mut socket, response) = websocket(gw.http, "ws.example.com").await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "through", "the gateway"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_map_to_502_503_504() {
    let dir = ManifestsDir::new();
    let slow = Backend::start("slow").await;
    // A port that was just released: connecting to it is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    dir.write(
        "services.yaml",
        &(service("slow", &[slow.addr]) + &service("dead", &[closed]) + &service("empty", &[])),
    );
    dir.write(
        "ingress.yaml",
        &(ingress("slow", Some("slow.com"), "/", "Prefix", "slow")
            + &ingress("dead", Some("dead.com"), "/", "Prefix", "dead")
            + &ingress("empty", Some("empty.com"), "/", "Prefix", "empty")
            + &ingress(
                "missing",
                Some("missing.com"),
                "/",
                "Prefix",
                "no-such-service",
            )),
    );
    let gw = Gateway::start(dir.path(), &["--proxy-read-timeout", "1"]);
    let client = HttpClient::new();

    let answer = client.get(gw.http, "dead.com", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        answer
            .body
            .contains("could not connect to backend default/dead:80"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains(&closed.to_string()), "{}", answer.body);

    for host in ["empty.com", "missing.com"] {
        let answer = client.get(gw.http, host, "/").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{host}");
        assert!(
            answer.body.contains("has no ready endpoint"),
            "{}",
            answer.body
        );
    }

    let answer = client.get(gw.http, "slow.com", "/sleep/3000").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        answer.body.contains("did not answer within 1s"),
        "{}",
        answer.body
    );
    assert_eq!(
        client.get(gw.http, "slow.com", "/sleep/10").await.status,
        StatusCode::OK
    );

    let routes = gw.routes();
    let warnings = routes["warnings"].to_string();
    assert!(
        warnings.contains("service default/no-such-service not found"),
        "{warnings}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_endpoint_is_retried_on_another() {
    let dir = ManifestsDir::new();
    let live = Backend::start("live").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    dir.write("services.yaml", &service("web", &[closed, live.addr]));
    dir.write(
        "ingress.yaml",
        &ingress("web", Some("a.com"), "/", "Prefix", "web"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    let body = Bytes::from_static(b"payload that must survive the retry");
    for _ in 0..6 {
        let answer = client
            .send(gw.http, "a.com", Request::post("/"), body.clone())
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.json()["body_bytes"], body.len());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn live_changes_under_load_fail_no_request() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["blue", "green"]).await;
    dir.write(
        "steady.yaml",
        &ingress("steady", Some("steady.com"), "/", "Prefix", "blue"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let http = gw.http;

    let load = SteadyLoad::start(http, "steady.com", 4);
    // 40 changes: the steady host flips between two healthy services, other hosts come and go.
    for i in 0..40 {
        let target = if i % 2 == 0 { "green" } else { "blue" };
        dir.write(
            "steady.yaml",
            &ingress("steady", Some("steady.com"), "/", "Prefix", target),
        );
        dir.write(
            &format!("extra-{i}.yaml"),
            &ingress(
                &format!("extra-{i}"),
                Some(&format!("e{i}.com")),
                "/",
                "Prefix",
                "blue",
            ),
        );
        if i >= 2 {
            dir.remove(&format!("extra-{}.yaml", i - 2));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    gw.wait_routes("the last change", |r| {
        let hosts: Vec<_> = r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["host"].clone())
            .collect();
        hosts.contains(&"e39.com".into()) && !hosts.contains(&"e37.com".into())
    });
    let client = HttpClient::new();
    assert_eq!(client.get(http, "steady.com", "/").await.service(), "blue");
    let (served, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served > 100, "the load ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_never_takes_other_routes_down() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["web", "other"]).await;
    dir.write(
        "good.yaml",
        &ingress("good", Some("good.com"), "/", "Prefix", "web"),
    );
    dir.write(
        "other.yaml",
        &ingress("other", Some("other.com"), "/", "Prefix", "other"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    assert_eq!(
        client.get(gw.http, "other.com", "/").await.service(),
        "other"
    );

    // A file that is not YAML keeps its last good version; the gateway keeps running.
    dir.write("other.yaml", "kind: [this is not yaml");
    dir.write("junk.yml", "\u{0}\u{1}binary");
    dir.write(
        "broken.yaml",
        &(ingress("bad-path", Some("bad.com"), "no-slash", "Prefix", "web")
            + "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n---\n"
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: typo}\n\
               spec: {rules: [{host: typo.com, http: {paths: [{path: /, pathType: Prefix, \
               backend: {service: {name: web, port: {number: eighty}}}}]}}]}\n"),
    );
    gw.wait_routes("warnings for every bad input", |r| {
        let w = r["warnings"].to_string();
        w.contains("other.yaml")
            && w.contains("no-slash")
            && w.contains("kind Deployment")
            && w.contains("ingress default/typo")
    });
    let warnings: Vec<String> = gw.routes()["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{} {} {} {}",
                w["object"], w["source"], w["field"], w["message"]
            )
        })
        .collect();
    let typo = warnings
        .iter()
        .find(|w| w.contains("ingress default/typo"))
        .unwrap();
    assert!(
        typo.contains("spec.rules[0].http.paths[0].backend.service.port.number"),
        "{typo}"
    );
    let bad_path = warnings.iter().find(|w| w.contains("no-slash")).unwrap();
    assert!(
        bad_path.contains("ingress default/bad-path") && bad_path.contains("broken.yaml"),
        "{bad_path}"
    );
    assert!(
        bad_path.contains("spec.rules[0].http.paths[0].path"),
        "{bad_path}"
    );
    let kept = warnings.iter().find(|w| w.contains("other.yaml")).unwrap();
    assert!(kept.contains("serving the last good version"), "{kept}");

    assert_eq!(client.get(gw.http, "good.com", "/").await.service(), "web");
    assert_eq!(
        client.get(gw.http, "other.com", "/").await.service(),
        "other"
    );
    assert_eq!(
        client.get(gw.http, "bad.com", "/").await.status,
        StatusCode::NOT_FOUND
    );

    // Removing the folder itself keeps the last table too.
    std::fs::remove_dir_all(dir.path()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.get(gw.http, "good.com", "/").await.service(), "web");
    let mut gw = gw;
    assert!(gw.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_and_the_routes_report() {
    let dir = ManifestsDir::new();
    let _backends = backends(&dir, &["web"]).await;
    dir.write(
        "ingress.yaml",
        &ingress("shop", Some("shop.example.com"), "/api", "Prefix", "web"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    use gateway_e2e::client::blocking_get;
    assert_eq!(blocking_get(gw.admin, "/healthz").unwrap().0, 200);
    assert_eq!(blocking_get(gw.admin, "/readyz").unwrap().0, 200);
    let routes = gw.routes();
    let route = &routes["routes"][0];
    assert_eq!(route["host"], "shop.example.com");
    assert_eq!(route["path"], "/api");
    assert_eq!(route["path_type"], "Prefix");
    assert_eq!(route["ingress"], "default/shop");
    assert_eq!(route["backend"]["service"], "web");
    assert_eq!(
        route["url"],
        format!("http://shop.example.com:{}/api", gw.http.port())
    );
    let report = &routes["ingresses"][0];
    assert_eq!(report["served"], true);
    assert_eq!(report["address"], gw.http.to_string());

    // The same table for a person, with a curl line that reaches the route.
    let output = std::process::Command::new(binary("gateway"))
        .args(["routes", "--manifests"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("shop.example.com"), "{text}");
    assert!(text.contains("default/web:80"), "{text}");
    assert!(
        text.contains("curl -H 'Host: shop.example.com' http://127.0.0.1:8080/api"),
        "{text}"
    );
    assert!(
        text.contains("default/shop  hosts: shop.example.com  served at 127.0.0.1:8080"),
        "{text}"
    );

    // A route command on a broken folder still prints, with the warning.
    dir.write(
        "bad.yaml",
        &ingress("bad", Some("x.com"), "nope", "Prefix", "web"),
    );
    let output = std::process::Command::new(binary("gateway"))
        .args(["routes", "--json", "--manifests"])
        .arg(dir.path())
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        json["warnings"]
            .to_string()
            .contains("path must start with")
    );
}

#[test]
fn bundled_examples_translate_without_warnings() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let output = std::process::Command::new(binary("gateway"))
        .args(["routes", "--json", "--manifests"])
        .arg(&examples)
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["warnings"], serde_json::json!([]), "{report:#}");
    let of_kind = |kind: &str| {
        report["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == kind)
            .count()
    };
    assert_eq!(
        (of_kind("Ingress"), of_kind("HTTPRoute")),
        (5, 3),
        "{report:#}"
    );
    for route in report["routes"].as_array().unwrap() {
        assert_eq!(
            route["backend"]["endpoints"].as_array().unwrap().len(),
            1,
            "{route}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_closing_idle_keepalive_connections_cost_no_request() {
    use std::io::{Read, Write};
    // A backend that answers each connection once, keep-alive in words, then closes it, as a
    // backend whose idle timeout is shorter than the gateway's does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 19\r\n\r\n{\"service\":\"brief\"}");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let dir = ManifestsDir::new();
    dir.write("service.yaml", &service("brief", &[addr]));
    dir.write(
        "ingress.yaml",
        &ingress("brief", Some("a.com"), "/", "Prefix", "brief"),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let client = HttpClient::new();
    for _ in 0..10 {
        let answer = client.get(gw.http, "a.com", "/").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}
