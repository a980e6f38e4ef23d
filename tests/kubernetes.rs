//! The real gateway in Kubernetes mode, its real kube-rs client talking the list/watch protocol
//! to a fake API server in this process, real backends on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_e2e::apiserver::FakeApiServer;
use gateway_e2e::backend::Backend;
use gateway_e2e::client::{HttpClient, SteadyLoad};
use gateway_e2e::gateway::Gateway;
use gateway_e2e::manifests::{free_port, gateway, gateway_class, http_gateway, loopback};
use gateway_e2e::pki::{Ca, connect, presented};
use hyper::{Request, StatusCode};

fn service(namespace: &str, name: &str, endpoint: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n---\n",
        endpoint.port(),
        endpoint.ip()
    )
}

fn ingress(
    namespace: &str,
    name: &str,
    host: &str,
    path: &str,
    service: &str,
    extra_spec: &str,
) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n{extra_spec}  rules:\n  - host: {host}\n    http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}\n---\n"
    )
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn served_by(client: &HttpClient, gateway: SocketAddr, host: &str) -> Option<String> {
    let answer = client
        .send(gateway, host, Request::get("/"), Bytes::new())
        .await
        .ok()?;
    (answer.status == StatusCode::OK).then(|| answer.service())
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_in_the_api_server_are_served_within_a_second_without_failures() {
    let api = FakeApiServer::start().await;
    let one = Backend::start("one").await;
    let two = Backend::start("two").await;
    api.apply(
        &(service("shop", "web", one.addr)
            + &ingress("shop", "steady", "steady.com", "/", "web", "")),
    );
    let gw = Gateway::start_kubernetes(api.kubeconfig(), &[]);
    let client = HttpClient::new();
    assert_eq!(
        served_by(&client, gw.http, "steady.com").await.as_deref(),
        Some("one")
    );

    let load = SteadyLoad::start(gw.http, "steady.com", 1);
    let second = Duration::from_secs(1);

    // A new Ingress.
    api.apply(&ingress("shop", "new", "new.com", "/", "web", ""));
    assert!(
        within(second, async || served_by(&client, gw.http, "new.com")
            .await
            .is_some())
        .await,
        "new Ingress"
    );
    // An EndpointSlice moves the Service to another pod.
    api.apply(&service("shop", "web", two.addr));
    assert!(
        within(second, async || served_by(&client, gw.http, "steady.com")
            .await
            .as_deref()
            == Some("two"))
        .await,
        "new endpoints"
    );
    // A Service that is gone leaves its route answering 503.
    api.apply(&ingress("shop", "other", "other.com", "/", "other-svc", ""));
    api.apply(&service("shop", "other-svc", one.addr));
    assert!(
        within(second, async || served_by(&client, gw.http, "other.com")
            .await
            .as_deref()
            == Some("one"))
        .await
    );
    api.delete("Service", Some("shop"), "other-svc");
    assert!(
        within(second, async || {
            client.get(gw.http, "other.com", "/").await.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await,
        "deleted Service"
    );
    // A deleted Ingress.
    api.delete("Ingress", Some("shop"), "new");
    assert!(
        within(second, async || client
            .get(gw.http, "new.com", "/")
            .await
            .status
            == StatusCode::NOT_FOUND)
        .await,
        "deleted Ingress"
    );
    // A TLS Secret and the Ingress that uses it.
    let ca = Ca::new();
    let leaf = ca.leaf(&["secure.com"]);
    api.apply(&leaf.secret("shop", "secure-tls"));
    api.apply(&ingress(
        "shop",
        "secure",
        "secure.com",
        "/",
        "web",
        "  tls: [{hosts: [secure.com], secretName: secure-tls}]\n",
    ));
    let config = ca.client_config(&["http/1.1"]);
    assert!(
        within(second, async || {
            match connect(config.clone(), gw.https, "secure.com").await {
                Ok(stream) => presented(&stream) == Some(leaf.der.clone()),
                Err(_) => false,
            }
        })
        .await,
        "certificate from the new Secret"
    );

    let (served, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served > 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_routes_serve_through_api_server_outages_and_it_resyncs_after() {
    let api = FakeApiServer::start().await;
    let web = Backend::start("web").await;
    api.apply(
        &(service("default", "web", web.addr) + &ingress("default", "a", "a.com", "/", "web", "")),
    );
    let gw = Gateway::start_kubernetes(api.kubeconfig(), &[]);
    let client = HttpClient::new();
    assert_eq!(
        served_by(&client, gw.http, "a.com").await.as_deref(),
        Some("web")
    );

    api.set_down(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..20 {
        assert_eq!(
            served_by(&client, gw.http, "a.com").await.as_deref(),
            Some("web"),
            "served while the API server is down"
        );
    }
    api.set_down(false);
    api.apply(&ingress("default", "b", "b.com", "/", "web", ""));
    assert!(
        within(Duration::from_secs(15), async || served_by(
            &client, gw.http, "b.com"
        )
        .await
        .is_some())
        .await,
        "resynced after the outage"
    );

    // Dropped watches resume; an expired version (410 Gone) makes the client list again.
    api.disconnect_watches();
    api.apply(&ingress("default", "c", "c.com", "/", "web", ""));
    assert!(
        within(Duration::from_secs(15), async || served_by(
            &client, gw.http, "c.com"
        )
        .await
        .is_some())
        .await,
        "after a disconnect"
    );
    api.expire_history();
    api.apply(&ingress("default", "d", "d.com", "/", "web", ""));
    assert!(
        within(Duration::from_secs(15), async || served_by(
            &client, gw.http, "d.com"
        )
        .await
        .is_some())
        .await,
        "after 410 Gone"
    );
    let relisted = api
        .log()
        .iter()
        .filter(|l| {
            l.method == "GET" && l.path.contains("/ingresses?") && !l.path.contains("watch=true")
        })
        .count();
    let paths: Vec<String> = api
        .log()
        .into_iter()
        .filter(|l| l.path.contains("/ingresses"))
        .map(|l| l.path)
        .collect();
    assert!(
        relisted >= 2,
        "the client listed again after 410: {paths:#?}"
    );
    assert_eq!(
        served_by(&client, gw.http, "a.com").await.as_deref(),
        Some("web")
    );
}

fn status_patches(api: &FakeApiServer, name: &str) -> usize {
    api.log()
        .iter()
        .filter(|l| l.method == "PATCH" && l.path.contains(&format!("/ingresses/{name}/status")))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_goes_to_our_ingresses_only_from_the_leader_and_is_not_rewritten() {
    let api = FakeApiServer::start().await;
    let web = Backend::start("web").await;
    api.apply(
        &(service("default", "web", web.addr)
            + "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: xdp-gateway, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}\nspec: {controller: xdp-gateway.io/ingress}\n---\n"
            + "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}\n---\n"
            + &ingress("default", "ours", "ours.com", "/", "web", "")
            + &ingress("default", "theirs", "theirs.com", "/", "web", "  ingressClassName: nginx\n")),
    );
    let flags = ["--publish-address", "203.0.113.10,gateway.example.com"];
    let first = Gateway::start_kubernetes(api.kubeconfig(), &flags);
    let second = Gateway::start_kubernetes(api.kubeconfig(), &flags);
    let written = within(Duration::from_secs(10), async || {
        api.get("Ingress", Some("default"), "ours")
            .is_some_and(|i| {
                i["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .is_some_and(|a| a.len() == 2)
            })
    })
    .await;
    assert!(
        written,
        "status of ours: {:?}",
        api.get("Ingress", Some("default"), "ours")
    );
    let status =
        api.get("Ingress", Some("default"), "ours").unwrap()["status"]["loadBalancer"]["ingress"]
            .clone();
    assert_eq!(
        status,
        serde_json::json!([{"hostname": "gateway.example.com"}, {"ip": "203.0.113.10"}])
    );
    let lease = api
        .get("Lease", Some("default"), "xdp-gateway-leader")
        .expect("a Lease");
    assert!(lease["spec"]["holderIdentity"].is_string());

    // More changes and more renewals: the right status is not written again, by anyone.
    api.apply(&ingress("default", "later", "later.com", "/", "web", ""));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        status_patches(&api, "ours"),
        1,
        "written once, by one replica"
    );
    assert_eq!(
        status_patches(&api, "theirs"),
        0,
        "another controller's Ingress is never touched"
    );
    assert!(api.get("Ingress", Some("default"), "theirs").unwrap()["status"].is_null());
    assert_eq!(status_patches(&api, "later"), 1);
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_scoped_gateway_ignores_other_namespaces() {
    let api = FakeApiServer::start().await;
    let web = Backend::start("web").await;
    api.apply(
        &(service("team-a", "web", web.addr)
            + &service("team-b", "web", web.addr)
            + &ingress("team-a", "a", "a.team.com", "/", "web", "")
            + &ingress("team-b", "b", "b.team.com", "/", "web", "")),
    );
    let gw = Gateway::start_kubernetes(api.kubeconfig(), &["--watch-namespace", "team-a"]);
    let client = HttpClient::new();
    assert_eq!(
        served_by(&client, gw.http, "a.team.com").await.as_deref(),
        Some("web")
    );
    assert_eq!(
        client.get(gw.http, "b.team.com", "/").await.status,
        StatusCode::NOT_FOUND
    );
    let namespaced = ["/ingresses", "/services", "/endpointslices", "/secrets"];
    for request in api
        .log()
        .iter()
        .filter(|l| l.method == "GET" && namespaced.iter().any(|k| l.path.contains(k)))
    {
        assert!(request.path.contains("/namespaces/team-a/"), "{request:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_ingress_gets_an_event_once() {
    let api = FakeApiServer::start().await;
    let web = Backend::start("web").await;
    api.apply(
        &(service("default", "web", web.addr)
            + &ingress("default", "broken", "x.com", "no-slash", "web", "")),
    );
    let _gw = Gateway::start_kubernetes(api.kubeconfig(), &[]);
    let has_event = within(Duration::from_secs(10), async || {
        !api.list("Event").is_empty()
    })
    .await;
    assert!(has_event, "an Event for the broken Ingress");
    api.apply(&ingress("default", "fine", "fine.com", "/", "web", ""));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let events = api.list("Event");
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["regarding"]["name"], "broken");
    assert_eq!(event["regarding"]["kind"], "Ingress");
    assert_eq!(event["type"], "Warning");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("spec.rules[0].http.paths[0].path") && note.contains("must start with"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_annotation_gets_an_event_naming_it() {
    let api = FakeApiServer::start().await;
    let web = Backend::start("web").await;
    api.apply(
        &(service("default", "web", web.addr)
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: snippet\n  namespace: default\n  annotations:\n    nginx.ingress.kubernetes.io/configuration-snippet: \"more_set_headers 'X: y';\"\n    nginx.ingress.kubernetes.io/proxy-read-timeout: \"soon\"\nspec:\n  rules:\n  - host: snippet.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n"),
    );
    let gw = Gateway::start_kubernetes(api.kubeconfig(), &[]);
    let both = within(Duration::from_secs(10), async || {
        api.list("Event").len() >= 2
    })
    .await;
    let events = api.list("Event");
    assert!(both, "{events:#?}");
    let notes: Vec<&str> = events.iter().filter_map(|e| e["note"].as_str()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("configuration-snippet") && n.contains("never applied")),
        "{notes:#?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("proxy-read-timeout") && n.contains("\"soon\"")),
        "{notes:#?}"
    );
    // The route itself serves, with neither annotation applied.
    let answer = HttpClient::new().get(gw.http, "snippet.com", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.get("x").is_none());
}

/// Gateway API objects come from the API server as from a folder; a cluster without the
/// Gateway API CRDs is served all the same (Ingresses only), and the gateway says why.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_api_objects_are_watched_where_the_cluster_serves_them() {
    let port = free_port();
    let api = FakeApiServer::start().await;
    let web = Backend::start("web").await;
    let v2 = Backend::start("v2").await;
    api.apply(
        &(service("shop", "web", web.addr)
            + &service("shop", "v2", v2.addr)
            + &http_gateway("shop", port)
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
               metadata: {name: shop, namespace: shop}\n\
               spec:\n  parentRefs: [{name: edge}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n"),
    );
    let gw = Gateway::start_kubernetes(api.kubeconfig(), &[]);
    let listener = loopback(port);
    let client = HttpClient::new();
    assert_eq!(
        served_by(&client, listener, "shop.test").await.as_deref(),
        Some("web")
    );

    // The leader writes the conditions to the objects' status.
    let condition_holds = |object: Option<serde_json::Value>, pointer: &str, type_: &str| {
        object.is_some_and(|o| {
            o.pointer(pointer)
                .and_then(|c| c.as_array().cloned())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == type_ && c["status"] == "True")
                })
        })
    };
    assert!(
        within(Duration::from_secs(10), async || {
            condition_holds(
                api.get("Gateway", Some("shop"), "edge"),
                "/status/conditions",
                "Programmed",
            ) && condition_holds(
                api.get("HTTPRoute", Some("shop"), "shop"),
                "/status/parents/0/conditions",
                "Accepted",
            ) && condition_holds(
                api.get("GatewayClass", None, "xdp"),
                "/status/conditions",
                "Accepted",
            )
        })
        .await,
        "{:#?}",
        (
            api.get("Gateway", Some("shop"), "edge"),
            api.get("HTTPRoute", Some("shop"), "shop")
        )
    );
    let gateway = api.get("Gateway", Some("shop"), "edge").unwrap();
    assert_eq!(gateway["status"]["listeners"][0]["attachedRoutes"], 1);
    assert_eq!(gateway["status"]["addresses"][0]["value"], "127.0.0.1");
    let route = api.get("HTTPRoute", Some("shop"), "shop").unwrap();
    assert_eq!(
        route["status"]["parents"][0]["controllerName"],
        "xdp-gateway.io/gateway-controller"
    );

    // A change on the API server is served.
    api.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: shop, namespace: shop}\n\
         spec:\n  parentRefs: [{name: edge}]\n  rules:\n  \
         - backendRefs: [{name: v2, port: 80}]\n",
    );
    assert!(
        within(Duration::from_secs(5), async || {
            served_by(&client, listener, "shop.test").await.as_deref() == Some("v2")
        })
        .await
    );

    // A route that moved to another controller's Gateway loses this controller's entry among
    // its parents; the other controller's entry stays as it is.
    api.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: moved, namespace: shop}\n\
         spec:\n  parentRefs: [{name: theirs}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n\
         status:\n  parents:\n  \
         - {parentRef: {name: edge}, controllerName: xdp-gateway.io/gateway-controller, conditions: []}\n  \
         - {parentRef: {name: theirs}, controllerName: example.com/other, conditions: []}\n",
    );
    let parents = |route: Option<serde_json::Value>| route.map(|r| r["status"]["parents"].clone());
    assert!(
        within(Duration::from_secs(10), async || {
            parents(api.get("HTTPRoute", Some("shop"), "moved")).is_some_and(|p| {
                p.as_array().is_some_and(|list| {
                    list.len() == 1 && list[0]["controllerName"] == "example.com/other"
                })
            })
        })
        .await,
        "{:#?}",
        api.get("HTTPRoute", Some("shop"), "moved")
    );
    drop(gw);

    // Without the CRDs: ready, Ingresses served, nothing of the Gateway API watched.
    let api = FakeApiServer::start().await;
    api.hide_gateway_api();
    api.apply(
        &(service("shop", "web", web.addr) + &ingress("shop", "web", "web.test", "/", "web", "")),
    );
    let gw = Gateway::start_kubernetes(api.kubeconfig(), &[]);
    assert_eq!(
        served_by(&client, gw.http, "web.test").await.as_deref(),
        Some("web")
    );
    assert!(
        gw.log()
            .iter()
            .any(|l| l.contains("Gateway API objects are not watched")),
        "{:#?}",
        gw.log()
    );
    assert!(!api.log().iter().any(|l| l.path.contains("/gateways")));
}

/// What an HTTP backend answers to a request sent through the raw TCP port `port`.
async fn through_tcp(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(loopback(port)).await.ok()?;
    let request = b"GET / HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n";
    stream.write_all(request).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer);
    let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()?;
    body["service"].as_str().map(str::to_string)
}

/// The tcp-services ConfigMap (watched by name, so other ConfigMaps are none of its
/// business) and TCPRoutes come from the API server, with the TCPRoute's status written.
#[tokio::test(flavor = "multi_thread")]
async fn layer4_sources_are_watched_from_the_api_server() {
    let (port, route_port) = (free_port(), free_port());
    let api = FakeApiServer::start().await;
    let web = Backend::start("web").await;
    let v2 = Backend::start("v2").await;
    let config_map = |name: &str, service: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: ingress-nginx}}\n\
             data: {{\"{port}\": \"shop/{service}:80\"}}\n---\n"
        )
    };
    api.apply(
        &(service("shop", "web", web.addr)
            + &service("shop", "v2", v2.addr)
            + &config_map("tcp-services", "web")
            + &config_map("unrelated", "v2")
            + &gateway_api_layer4(route_port)),
    );
    let gw = Gateway::start_kubernetes(
        api.kubeconfig(),
        &["--tcp-services-configmap", "ingress-nginx/tcp-services"],
    );
    assert_eq!(through_tcp(port).await.as_deref(), Some("web"));
    assert_eq!(through_tcp(route_port).await.as_deref(), Some("web"));

    api.apply(&config_map("tcp-services", "v2"));
    assert!(
        within(Duration::from_secs(5), async || {
            through_tcp(port).await.as_deref() == Some("v2")
        })
        .await
    );
    assert!(
        within(Duration::from_secs(10), async || {
            api.get("TCPRoute", Some("shop"), "raw")
                .is_some_and(|route| {
                    route["status"]["parents"][0]["conditions"]
                        .as_array()
                        .is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Accepted" && c["status"] == "True")
                        })
                })
        })
        .await,
        "{:#?}",
        api.get("TCPRoute", Some("shop"), "raw")
    );
    drop(gw);
}

/// A Gateway `edge` in `shop` with a TCP listener on `port`, and a TCPRoute `raw` to `web`.
fn gateway_api_layer4(port: u16) -> String {
    let listener = format!("{{name: raw, port: {port}, protocol: TCP}}");
    gateway_class().to_string()
        + &gateway("shop", "edge", &[listener])
        + "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {name: raw, namespace: shop}\n\
           spec:\n  parentRefs: [{name: edge}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n---\n"
}

/// Basic auth from an Opaque Secret watched on the API server: a password changed there is the
/// only one that works a moment later.
#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_users_come_from_an_opaque_secret_in_the_cluster() {
    use base64::Engine;
    let api = FakeApiServer::start().await;
    let web = Backend::start("web").await;
    let users = |line: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(line);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: default}}\ntype: Opaque\ndata: {{auth: {encoded}}}\n---\n"
        )
    };
    // `secret`, then `changed`, as htpasswd -s writes them.
    let (before, after) = (
        "ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "ann:{SHA}N8bFe+30MF70EknBeUdgtcuPrRc=",
    );
    api.apply(
        &(service("default", "web", web.addr)
            + &users(before)
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: private\n  namespace: default\n  annotations:\n    nginx.ingress.kubernetes.io/auth-type: basic\n    nginx.ingress.kubernetes.io/auth-secret: users\nspec:\n  rules:\n  - host: private.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n"),
    );
    let gw = Gateway::start_kubernetes(api.kubeconfig(), &["--access-log", "off"]);
    let client = HttpClient::new();
    let status = async |password: &str| {
        let credential =
            base64::engine::general_purpose::STANDARD.encode(format!("ann:{password}"));
        let request = Request::get("/").header("authorization", format!("Basic {credential}"));
        let answer = client
            .send(gw.http, "private.com", request, Bytes::new())
            .await;
        answer.map(|a| a.status).ok()
    };
    assert!(
        within(Duration::from_secs(10), async || status("secret").await
            == Some(StatusCode::OK))
        .await,
        "{:?}",
        gw.routes()
    );
    assert_eq!(status("changed").await, Some(StatusCode::UNAUTHORIZED));
    api.apply(&users(after));
    assert!(
        within(Duration::from_secs(10), async || status("changed").await
            == Some(StatusCode::OK))
        .await
    );
    assert_eq!(status("secret").await, Some(StatusCode::UNAUTHORIZED));
}
