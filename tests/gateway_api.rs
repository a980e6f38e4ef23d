//! Gateway API from a manifests folder, with the real binary: a GatewayClass of this gateway's
//! controller, a Gateway whose listener is served at its own port, HTTPRoutes with path,
//! header, query and method matches in the specification's precedence, weighted backends,
//! ReferenceGrants, and the conditions every object gets.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use bytes::Bytes;
use gateway_e2e::backend::{Backend, next_seen};
use gateway_e2e::client::HttpClient;
use gateway_e2e::gateway::{Gateway, condition, object};
use gateway_e2e::manifests::{
    ManifestsDir, free_port, gateway, gateway_class, http_gateway, ingress, loopback, service,
};
use hyper::{Request, StatusCode};
use serde_json::Value;

async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    host: &str,
    request: hyper::http::request::Builder,
) -> (StatusCode, String) {
    let answer = client
        .send(addr, host, request, Bytes::new())
        .await
        .expect("the gateway answers");
    let service = if answer.status == StatusCode::OK {
        answer.service()
    } else {
        String::new()
    };
    (answer.status, service)
}

#[tokio::test(flavor = "multi_thread")]
async fn httproutes_match_in_the_specifications_precedence_and_split_by_weight() {
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let api = Backend::start("api").await;
    let exact = Backend::start("exact").await;
    let legacy = Backend::start("legacy").await;
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write(
        "backends.yaml",
        &[
            service("stable", &[stable.addr]),
            service("canary", &[canary.addr]),
            service("api", &[api.addr]),
            service("exact", &[exact.addr]),
            service("legacy", &[legacy.addr]),
        ]
        .concat(),
    );
    // The Ingress beside it keeps its own listener.
    dir.write(
        "legacy.yaml",
        &ingress("legacy", Some("legacy.test"), "/", "Prefix", "legacy"),
    );
    dir.write(
        "gateway.yaml",
        &(gateway_class().to_string()
            + &gateway(
                "default",
                "edge",
                &[format!(
                    "{{name: web, port: {port}, protocol: HTTP, hostname: \"*.example.com\"}}"
                )],
            )),
    );
    dir.write(
        "shop.yaml",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [shop.example.com]
  rules:
  - backendRefs: [{name: stable, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: X-Canary, value: "yes"}]}]
    backendRefs: [{name: canary, port: 80}]
  - matches: [{queryParams: [{name: v, value: "2"}]}]
    backendRefs: [{name: canary, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]
    backendRefs: [{name: api, port: 80}]
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: exact, port: 80}]
  - matches: [{path: {type: RegularExpression, value: "/v[0-9]+/items"}}]
    backendRefs: [{name: exact, port: 80}]
  - matches: [{path: {value: /split}}]
    backendRefs: [{name: stable, port: 80, weight: 1}, {name: canary, port: 80, weight: 1}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: stable, port: 80, weight: 0}]
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: nowhere, port: 80}]
"#,
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let listener = loopback(port);
    let client = HttpClient::new();
    let host = "shop.example.com";
    let cases = [
        (Request::get("/"), (StatusCode::OK, "stable")),
        (
            Request::get("/anything").header("x-canary", "yes"),
            (StatusCode::OK, "canary"),
        ),
        (
            Request::get("/anything").header("x-canary", "no"),
            (StatusCode::OK, "stable"),
        ),
        (Request::get("/?v=2"), (StatusCode::OK, "canary")),
        (Request::get("/?v=22"), (StatusCode::OK, "stable")),
        (Request::post("/api/orders"), (StatusCode::OK, "api")),
        (Request::get("/api/orders"), (StatusCode::OK, "stable")),
        (Request::get("/exact"), (StatusCode::OK, "exact")),
        (Request::get("/exact/"), (StatusCode::OK, "stable")),
        (Request::get("/v12/items"), (StatusCode::OK, "exact")),
        (Request::get("/v12/items/1"), (StatusCode::OK, "stable")),
        (
            Request::get("/zero"),
            (StatusCode::INTERNAL_SERVER_ERROR, ""),
        ),
        (
            Request::get("/missing"),
            (StatusCode::INTERNAL_SERVER_ERROR, ""),
        ),
    ];
    for (request, (status, service)) in cases {
        let described = format!(
            "{} {}",
            request.method_ref().unwrap(),
            request.uri_ref().unwrap()
        );
        let answer = send(&client, listener, host, request).await;
        assert_eq!(answer, (status, service.to_string()), "{described}");
    }
    // The header match outranks the query match: both given, the header's rule is first.
    let both = Request::get("/?v=2").header("x-canary", "yes");
    assert_eq!(send(&client, listener, host, both).await.1, "canary");

    let mut seen = BTreeSet::new();
    for _ in 0..64 {
        seen.insert(
            send(&client, listener, host, Request::get("/split"))
                .await
                .1,
        );
    }
    assert_eq!(
        seen,
        BTreeSet::from(["canary".to_string(), "stable".to_string()])
    );

    // Hosts the route does not name, on the Gateway's port: 404; the Ingress's host is served
    // on the gateway's own listener only.
    assert_eq!(
        send(&client, listener, "other.example.com", Request::get("/"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&client, listener, "legacy.test", Request::get("/"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&client, gw.http, "legacy.test", Request::get("/")).await,
        (StatusCode::OK, "legacy".to_string())
    );
    assert_eq!(
        send(&client, gw.http, host, Request::get("/")).await.0,
        StatusCode::NOT_FOUND
    );

    let routes = gw.routes();
    let route = object(&routes, "HTTPRoute", "shop");
    let parent = &route["parents"][0]["conditions"];
    assert_eq!(condition(parent, "Accepted")["status"], true, "{route:#}");
    assert_eq!(condition(parent, "ResolvedRefs")["status"], false);
    assert_eq!(
        condition(parent, "ResolvedRefs")["reason"],
        "BackendNotFound"
    );
    let edge = object(&routes, "Gateway", "edge");
    assert_eq!(edge["listeners"][0]["attached_routes"], 1);
    assert_eq!(condition(&edge["conditions"], "Programmed")["status"], true);
    assert_eq!(
        condition(
            &object(&routes, "GatewayClass", "xdp")["conditions"],
            "Accepted"
        )["status"],
        true
    );
    let kinds: BTreeSet<&str> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["HTTPRoute", "Ingress"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_in_another_namespace_is_used_only_under_a_reference_grant() {
    let shared = Backend::start("shared").await;
    let local = Backend::start("local").await;
    let port = free_port();
    let dir = ManifestsDir::new();
    let shared_service = service("shared", &[shared.addr]).replace(
        "metadata: {name: shared",
        "metadata: {namespace: backends, name: shared",
    );
    assert!(
        shared_service.matches("namespace: backends").count() >= 2,
        "{shared_service}"
    );
    dir.write("shared.yaml", &shared_service);
    let local_service = service("local", &[local.addr]).replace(
        "metadata: {name: local",
        "metadata: {namespace: shop, name: local",
    );
    dir.write("local.yaml", &local_service);
    dir.write(
        "gateway.yaml",
        &(http_gateway("shop", port)
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
               metadata: {name: shop, namespace: shop}\n\
               spec:\n  parentRefs: [{name: edge}]\n  rules:\n  \
               - backendRefs: [{name: shared, namespace: backends, port: 80}]\n---\n\
               apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
               metadata: {name: stays, namespace: shop}\n\
               spec:\n  parentRefs: [{name: edge}]\n  hostnames: [stays.test]\n  rules:\n  \
               - backendRefs: [{name: local, port: 80}]\n"),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let listener = loopback(port);
    let client = HttpClient::new();
    // What stays allowed is served without a failure while the grant comes and goes.
    let load = gateway_e2e::client::SteadyLoad::start(listener, "stays.test", 4);
    assert_eq!(
        send(&client, listener, "any.test", Request::get("/"))
            .await
            .0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let reason = |routes: &Value| {
        condition(
            &object(routes, "HTTPRoute", "shop")["parents"][0]["conditions"],
            "ResolvedRefs",
        )["reason"]
            .clone()
    };
    assert_eq!(reason(&gw.routes()), "RefNotPermitted");

    dir.write(
        "grant.yaml",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
         metadata: {name: shop-to-shared, namespace: backends}\n\
         spec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]\n  \
         to: [{group: \"\", kind: Service, name: shared}]\n",
    );
    gw.wait_routes("the grant", |routes| reason(routes) == "ResolvedRefs");
    assert_eq!(
        send(&client, listener, "any.test", Request::get("/")).await,
        (StatusCode::OK, "shared".to_string())
    );

    dir.remove("grant.yaml");
    gw.wait_routes("the grant removed", |routes| {
        reason(routes) == "RefNotPermitted"
    });
    assert_eq!(
        send(&client, listener, "any.test", Request::get("/"))
            .await
            .0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let (served, failures) = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(served > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn listeners_and_routes_that_cannot_be_served_say_why() {
    let web = Backend::start("web").await;
    let (port, other_port) = (free_port(), free_port());
    let dir = ManifestsDir::new();
    dir.write("web.yaml", &service("web", &[web.addr]));
    let route = |name: &str, namespace: &str, parent: &str, hostnames: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: {namespace}}}\n\
             spec:\n  parentRefs: [{parent}]\n  hostnames: {hostnames}\n  rules:\n  \
             - backendRefs: [{{name: web, namespace: default, port: 80}}]\n---\n"
        )
    };
    dir.write(
        "gateway.yaml",
        &(gateway_class().to_string()
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: theirs}\n\
               spec: {controllerName: example.com/another}\n---\n"
            + &gateway(
                "default",
                "edge",
                &[
                    format!("{{name: a, port: {port}, protocol: HTTP, hostname: a.example.com}}"),
                    format!("{{name: b, port: {port}, protocol: HTTP, hostname: a.example.com}}"),
                    format!("{{name: sctp, port: {other_port}, protocol: SCTP}}"),
                    format!(
                        "{{name: kinds, port: {port}, protocol: HTTP, hostname: k.example.com, \
                         allowedRoutes: {{kinds: [{{kind: HTTPRoute}}, {{kind: FooRoute}}]}}}}"
                    ),
                ],
            )
            + &route("good", "default", "{name: edge, sectionName: a}", "[a.example.com]")
            + &route("no-section", "default", "{name: edge, sectionName: z}", "[]")
            + &route("elsewhere", "other", "{name: edge, namespace: default}", "[]")
            + &route("wrong-host", "default", "{name: edge, sectionName: a}", "[b.example.com]")
            + &route("theirs", "default", "{name: their-gateway}", "[]")),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let routes = gw.routes();
    let edge = object(&routes, "Gateway", "edge");
    let listener = |name: &str| {
        edge["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
    };
    assert_eq!(
        condition(&listener("a")["conditions"], "Accepted")["status"],
        true
    );
    assert_eq!(
        condition(&listener("b")["conditions"], "Conflicted")["reason"],
        "HostnameConflict"
    );
    assert_eq!(
        condition(&listener("sctp")["conditions"], "Accepted")["reason"],
        "UnsupportedProtocol"
    );
    // A kind that is not served: InvalidRouteKinds, the served one still listed.
    let kinds = listener("kinds");
    assert_eq!(
        condition(&kinds["conditions"], "ResolvedRefs")["reason"],
        "InvalidRouteKinds"
    );
    assert_eq!(kinds["supported_kinds"], serde_json::json!(["HTTPRoute"]));
    assert_eq!(
        listener("a")["supported_kinds"],
        serde_json::json!(["HTTPRoute", "GRPCRoute"])
    );
    assert_eq!(
        condition(&edge["conditions"], "Programmed")["message"],
        "2 of 4 listeners are served"
    );
    let accepted = |name: &str| {
        condition(
            &object(&routes, "HTTPRoute", name)["parents"][0]["conditions"],
            "Accepted",
        )
        .clone()
    };
    assert_eq!(accepted("good")["status"], true);
    assert_eq!(accepted("no-section")["reason"], "NoMatchingParent");
    assert_eq!(accepted("elsewhere")["reason"], "NotAllowedByListeners");
    assert_eq!(
        accepted("wrong-host")["reason"],
        "NoMatchingListenerHostname"
    );
    // Objects of another controller are not this gateway's to report on.
    let reported: Vec<&str> = routes["gateway_api"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(!reported.contains(&"theirs"), "{reported:?}");

    // `gateway check` fails on them, naming the object and the field.
    let check = std::process::Command::new(gateway_e2e::gateway::binary("gateway"))
        .arg("check")
        .arg("--manifests")
        .arg(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{report}");
    for expected in [
        "gateway default/edge (",
        "spec.listeners[1]: Accepted is False (HostnameConflict)",
        "httproute default/no-section (",
        "spec.parentRefs: parent edge: Accepted is False (NoMatchingParent)",
    ] {
        assert!(report.contains(expected), "{expected:?} in {report}");
    }

    let client = HttpClient::new();
    let listener = loopback(port);
    assert_eq!(
        send(&client, listener, "a.example.com", Request::get("/")).await,
        (StatusCode::OK, "web".to_string())
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", other_port))
            .await
            .is_err(),
        "the TCP listener is not served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_edit_headers_redirect_and_rewrite_and_unsupported_ones_answer_500() {
    let web = Backend::start("web").await;
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write("web.yaml", &service("web", &[web.addr]));
    dir.write("gateway.yaml", &http_gateway("default", port));
    dir.write(
        "route.yaml",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filtered, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: new}]
        add: [{name: X-Add, value: "2"}]
        remove: [X-Gone]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Answer, value: filtered}]
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example.com, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 9999, path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}}
  - matches: [{path: {value: /rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: backend.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /extension}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: example.com, kind: Plugin, name: magic}
    backendRefs: [{name: web, port: 80}]
"#,
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let listener = loopback(port);
    let client = HttpClient::new();
    let host = "shop.example.com";
    let get = |request: hyper::http::request::Builder| {
        let client = &client;
        async move {
            client
                .send(listener, host, request, Bytes::new())
                .await
                .unwrap()
        }
    };

    let answer = get(Request::get("/headers")
        .header("x-set", "old")
        .header("x-gone", "bye")
        .header("x-add", "1"))
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-answer"], "filtered");
    let seen = &answer.json()["headers"];
    assert_eq!(seen["x-set"], "new");
    assert!(seen.get("x-gone").is_none(), "{seen:#}");
    assert!(seen.get("x-add").is_some(), "{seen:#}");

    let answer = get(Request::get("/old/items?page=2")).await;
    assert_eq!(answer.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        answer.headers["location"],
        "https://new.example.com/new/items?page=2"
    );
    let answer = get(Request::get("/moved/x")).await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(
        answer.headers["location"],
        "http://shop.example.com:9999/elsewhere"
    );

    let answer = get(Request::get("/rewrite/users?id=1")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["uri"], "/v2/users?id=1");
    assert_eq!(answer.json()["headers"]["host"], "backend.internal");

    assert_eq!(
        get(Request::get("/extension")).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let routes = gw.routes();
    let accepted = condition(
        &object(&routes, "HTTPRoute", "filtered")["parents"][0]["conditions"],
        "Accepted",
    )
    .clone();
    assert_eq!(accepted["reason"], "UnsupportedValue");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules[4].filters[0]: ExtensionRef is not supported"),
        "{accepted:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listeners_terminate_tls_with_their_certificate_refs() {
    use gateway_e2e::pki::{Ca, TlsHttp, connect};
    let web = Backend::start("web").await;
    let ca = Ca::new();
    let (port, denied_port) = (free_port(), free_port());
    let dir = ManifestsDir::new();
    dir.write("web.yaml", &service("web", &[web.addr]));
    dir.write(
        "certificates.yaml",
        &(ca.leaf(&["*.example.com"]).secret("infra", "wildcard")
            + &ca.leaf(&["other.test"]).secret("vault", "other")),
    );
    dir.write(
        "gateway.yaml",
        &(gateway_class().to_string()
            + &gateway(
                "infra",
                "edge",
                &[
                    format!(
                        "{{name: https, port: {port}, protocol: HTTPS, hostname: \"*.example.com\", \
                         tls: {{certificateRefs: [{{name: wildcard}}]}}, \
                         allowedRoutes: {{namespaces: {{from: All}}}}}}"
                    ),
                    format!(
                        "{{name: denied, port: {denied_port}, protocol: HTTPS, \
                         tls: {{certificateRefs: [{{name: other, namespace: vault}}]}}}}"
                    ),
                ],
            )
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
               metadata: {name: shop, namespace: default}\n\
               spec:\n  parentRefs: [{name: edge, namespace: infra, sectionName: https}]\n  \
               hostnames: [shop.example.com]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n"),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let listener = loopback(port);
    let stream = connect(
        ca.client_config(&["h2", "http/1.1"]),
        listener,
        "shop.example.com",
    )
    .await
    .expect("the listener's certificate is trusted for the route's host");
    let mut http = TlsHttp::over(stream).await;
    let (status, _, body) = http.get("shop.example.com", "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"web\""), "{body}");
    // A host the connection's certificate does not cover is misdirected on it.
    let (status, _, _) = http.get("other.test", "/").await.unwrap();
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);

    // A certificate in another namespace needs a ReferenceGrant: until then the listener is
    // not served and says why.
    let routes = gw.routes();
    let edge = object(&routes, "Gateway", "edge");
    let denied = &edge["listeners"][1]["conditions"];
    assert_eq!(
        condition(denied, "ResolvedRefs")["reason"],
        "RefNotPermitted",
        "{edge:#}"
    );
    assert_eq!(condition(denied, "Programmed")["status"], false);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", denied_port))
            .await
            .is_err()
    );
    dir.write(
        "grant.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\n\
         metadata: {name: gateways, namespace: vault}\n\
         spec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]\n  \
         to: [{group: \"\", kind: Secret}]\n",
    );
    gw.wait_routes("the grant", |routes| {
        condition(
            &object(routes, "Gateway", "edge")["listeners"][1]["conditions"],
            "Programmed",
        )["status"]
            == true
    });
    let denied = loopback(denied_port);
    let stream = connect(ca.client_config(&["http/1.1"]), denied, "other.test").await;
    assert!(stream.is_ok(), "{:?}", stream.err());
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcroutes_match_services_and_methods_and_reach_backends_over_http2() {
    use gateway_e2e::client::grpc_call;
    let say = Backend::start("say").await;
    let echo = Backend::start("echo").await;
    let getter = Backend::start("getter").await;
    let remote = Backend::start("remote").await;
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write(
        "backends.yaml",
        &[
            service("say", &[say.addr]),
            service("echo", &[echo.addr]),
            service("getter", &[getter.addr]),
            service("remote", &[remote.addr]).replace(
                "metadata: {name: remote",
                "metadata: {namespace: backends, name: remote",
            ),
            // Granted to GRPCRoutes (not to HTTPRoutes) of the default namespace.
            "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\n\
             metadata: {name: grpc, namespace: backends}\n\
             spec:\n  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: default}]\n  \
             to: [{group: \"\", kind: Service}]\n---\n"
                .to_string(),
        ]
        .concat(),
    );
    dir.write("gateway.yaml", &http_gateway("default", port));
    dir.write(
        "route.yaml",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: echo.Echo}}]
    backendRefs: [{name: echo, port: 80}]
  - matches: [{method: {service: echo.Echo, method: Say}}]
    backendRefs: [{name: say, port: 80}]
  - matches: [{method: {type: RegularExpression, method: "Get.*"}}]
    backendRefs: [{name: getter, port: 80}]
  - matches: [{method: {service: remote.Svc}}]
    backendRefs: [{name: remote, namespace: backends, port: 80}]
"#,
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    // gRPC over h2c, prior knowledge, to the Gateway's port.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for (path, backend) in [
        ("/echo.Echo/Say", "say"),
        ("/echo.Echo/Shout", "echo"),
        ("/catalog.Items/GetItem", "getter"),
        ("/remote.Svc/Call", "remote"),
    ] {
        let (status, body, trailers) =
            grpc_call(&mut sender, "grpc.example.com", "http", path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(&body[..], b"\0\0\0\0\x05hello", "{path}");
        assert_eq!(trailers["grpc-status"], "0", "{path}");
        // The backend names itself and the protocol it was spoken to in.
        assert_eq!(
            trailers["grpc-message"],
            format!("{backend} HTTP/2.0"),
            "{path}"
        );
    }
    let (status, _, _) =
        grpc_call(&mut sender, "grpc.example.com", "http", "/other.Svc/Call").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let routes = gw.routes();
    let route = object(&routes, "GRPCRoute", "echo");
    assert_eq!(
        condition(&route["parents"][0]["conditions"], "Accepted")["status"],
        true,
        "{route:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rules_timeouts_bound_the_wait_for_its_backend() {
    let web = Backend::start("web").await;
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write("web.yaml", &service("web", &[web.addr]));
    dir.write(
        "gateway.yaml",
        &(http_gateway("default", port)
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
               metadata: {name: slow, namespace: default}\n\
               spec:\n  parentRefs: [{name: edge}]\n  rules:\n  \
               - matches: [{path: {value: /sleep}}]\n    timeouts: {request: 2s, backendRequest: 500ms}\n    \
               backendRefs: [{name: web, port: 80}]\n  \
               - matches: [{path: {value: /bad}}]\n    timeouts: {request: 1d}\n    \
               backendRefs: [{name: web, port: 80}]\n"),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let listener = loopback(port);
    let client = HttpClient::new();
    assert_eq!(
        send(&client, listener, "a.test", Request::get("/sleep/100"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&client, listener, "a.test", Request::get("/sleep/1500"))
            .await
            .0,
        StatusCode::GATEWAY_TIMEOUT
    );
    // A timeout that cannot be read closes its rule (500), saying which field.
    assert_eq!(
        send(&client, listener, "a.test", Request::get("/bad"))
            .await
            .0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let routes = gw.routes();
    let accepted = condition(
        &object(&routes, "HTTPRoute", "slow")["parents"][0]["conditions"],
        "Accepted",
    )
    .clone();
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules[1].timeouts.request"),
        "{accepted:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_whose_service_port_says_h2c_are_spoken_to_over_http2() {
    let plain = Backend::start("plain").await;
    let h2c = Backend::start("h2c").await;
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write(
        "backends.yaml",
        &(service("plain", &[plain.addr])
            + &service("h2c", &[h2c.addr]).replace(
                "ports: [{name: http, port: 80}]",
                "ports: [{name: http, port: 80, appProtocol: kubernetes.io/h2c}]",
            )),
    );
    dir.write(
        "gateway.yaml",
        &(http_gateway("default", port)
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
               metadata: {name: both, namespace: default}\n\
               spec:\n  parentRefs: [{name: edge}]\n  rules:\n  \
               - matches: [{path: {value: /h2c}}]\n    backendRefs: [{name: h2c, port: 80}]\n  \
               - backendRefs: [{name: plain, port: 80}]\n"),
    );
    let _gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let listener = loopback(port);
    let client = HttpClient::new();
    for (path, version) in [("/h2c", "HTTP/2.0"), ("/", "HTTP/1.1")] {
        let answer = client.get(listener, "a.test", path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.json()["version"], version, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_mirrors_copy_a_share_of_requests_and_never_hold_the_original() {
    let web = Backend::start("web").await;
    let (record, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let shadow = Backend::start_behaving(
        "shadow",
        gateway_e2e::backend::Behaviour {
            seen: Some(record),
            ..Default::default()
        },
    )
    .await;
    // A mirror that accepts connections and never reads from them.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write("web.yaml", &service("web", &[web.addr]));
    dir.write("shadow.yaml", &service("shadow", &[shadow.addr]));
    dir.write(
        "stuck.yaml",
        &service("stuck", &[stuck.local_addr().unwrap()]),
    );
    dir.write("gateway.yaml", &http_gateway("default", port));
    dir.write(
        "route.yaml",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirrored, namespace: default}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{path: {value: /all}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /half}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 1, denominator: 2}}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /stuck}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: stuck, port: 80}}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /missing}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: nowhere, port: 80}}
    backendRefs: [{name: web, port: 80}]
"#,
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let listener = loopback(port);
    let client = HttpClient::new();
    let post = |path: &str, body: Bytes| {
        let (client, request) = (&client, Request::post(path));
        async move {
            let answer = client.send(listener, "a.test", request, body).await;
            answer.expect("the gateway answers")
        }
    };

    // Every request is copied, head and body, and the original is answered by its backend.
    let answer = client.get(listener, "a.test", "/all/items?page=2").await;
    assert_eq!(
        (answer.status, answer.service()),
        (StatusCode::OK, "web".into())
    );
    let copy = next_seen(&mut seen).await;
    assert_eq!(
        (copy["method"].as_str(), copy["uri"].as_str()),
        (Some("GET"), Some("/all/items?page=2"))
    );
    assert_eq!(copy["headers"]["host"], "a.test");
    let upload = Bytes::from(vec![b'x'; 256 * 1024]);
    let answer = post("/all/upload", upload.clone()).await;
    assert_eq!(answer.json()["body_bytes"], upload.len());
    let copy = next_seen(&mut seen).await;
    assert_eq!(
        (copy["method"].as_str(), copy["body_bytes"].as_u64()),
        (Some("POST"), Some(upload.len() as u64))
    );

    // A fraction: about half of 200 requests (the bounds are 7 standard deviations out).
    for _ in 0..200 {
        let answer = client.get(listener, "a.test", "/half").await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let mut copies = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), seen.recv()).await
    {
        copies += 1;
    }
    assert!((50..=150).contains(&copies), "{copies} copies of 200");

    // A mirror that never reads: the original and its 4 MiB body go through all the same.
    let big = Bytes::from(vec![b'y'; 4 << 20]);
    let answer = post("/stuck", big.clone()).await;
    assert_eq!(
        (answer.status, answer.json()["body_bytes"].as_u64()),
        (StatusCode::OK, Some(big.len() as u64))
    );

    // A mirror whose Service does not exist is left out and said; the route serves.
    let answer = client.get(listener, "a.test", "/missing").await;
    assert_eq!(answer.status, StatusCode::OK);
    let routes = gw.routes();
    let resolved = condition(
        &object(&routes, "HTTPRoute", "mirrored")["parents"][0]["conditions"],
        "ResolvedRefs",
    )
    .clone();
    assert_eq!(resolved["reason"], "BackendNotFound", "{resolved:#}");
    assert!(
        resolved["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules[3].filters[0].requestMirror.backendRef"),
        "{resolved:#}"
    );
    let (_, metrics) = gw.admin_get("/metrics").unwrap();
    let sent = metrics
        .lines()
        .find(|l| l.starts_with("xdp_gateway_mirrored_requests_total{result=\"sent\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no mirrored requests metric in {metrics}"));
    assert!(sent >= 2 + copies as u64, "{sent}");
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_filters_answer_preflights_and_decorate_answers_as_the_conformance_suite_expects() {
    let web = Backend::start("web").await;
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write("web.yaml", &service("web", &[web.addr]));
    dir.write("gateway.yaml", &http_gateway("default", port));
    // Two routes of the upstream suite's httproute-cors.yaml (Gateway API v1.6).
    dir.write(
        "route.yaml",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors, namespace: default}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{path: {value: /cors-1}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /cors-wildcard}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"]}
    backendRefs: [{name: web, port: 80}]
"#,
    );
    let _gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let listener = loopback(port);
    let client = HttpClient::new();
    let ask = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let client = &client;
        async move {
            let answer = client.send(listener, "a.test", request, Bytes::new()).await;
            answer.expect("the gateway answers")
        }
    };
    let preflight = |origin: &'static str, path: &'static str, method: &'static str| {
        ask(
            "OPTIONS",
            path,
            &[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
        )
    };

    for origin in [
        "https://www.foo.com",
        "https://www.bar.com",
        "https://xpto.www.bar.com",
    ] {
        let answer = preflight(origin, "/cors-1", "GET").await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        let h = &answer.headers;
        assert_eq!(h["access-control-allow-origin"], origin);
        assert_eq!(h["access-control-allow-methods"], "GET, OPTIONS");
        assert_eq!(h["access-control-allow-headers"], "x-header-1, x-header-2");
        assert_eq!(h["access-control-expose-headers"], "x-header-3, x-header-4");
        assert_eq!(h["access-control-max-age"], "3600");
        assert_eq!(h["access-control-allow-credentials"], "true");
    }
    let refused = preflight("https://foobar.com", "/cors-1", "GET").await;
    assert!(!refused.headers.contains_key("access-control-allow-origin"));

    let simple = ask("GET", "/cors-1", &[("origin", "https://www.bar.com")]).await;
    assert_eq!(
        (simple.status, simple.service()),
        (StatusCode::OK, "web".into())
    );
    assert_eq!(
        simple.headers["access-control-allow-origin"],
        "https://www.bar.com"
    );
    let other = ask("GET", "/cors-1", &[("origin", "https://foobar.com")]).await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));

    // Wildcards without credentials: `*` for the origin, the request's method and headers.
    let answer = preflight("https://foobar.com:12345", "/cors-wildcard", "PUT").await;
    let h = &answer.headers;
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-methods"], "PUT");
    assert_eq!(h["access-control-allow-headers"], "x-header-1, x-header-2");
    assert_eq!(h["access-control-max-age"], "5");
    assert!(!h.contains_key("access-control-allow-credentials"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_refs_own_filters_apply_to_its_share_only() {
    let one = Backend::start("one").await;
    let two = Backend::start("two").await;
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write("one.yaml", &service("one", &[one.addr]));
    dir.write("two.yaml", &service("two", &[two.addr]));
    dir.write("gateway.yaml", &http_gateway("default", port));
    // As the upstream suite's httproute-request-header-modifier-backend-weights.yaml, with a
    // rule filter under the backends' and a backend filter that is not served on a backend.
    dir.write(
        "route.yaml",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: default}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{path: {value: /split}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: Rule, value: split}, {name: Backend, value: rule}]}
    backendRefs:
    - name: one
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: Backend, value: one}]}
    - name: two
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: Backend, value: two}]}
      - type: ResponseHeaderModifier
        responseHeaderModifier: {add: [{name: X-Via, value: two}]}
  - matches: [{path: {value: /mirrored}}]
    backendRefs:
    - name: one
      port: 80
      filters:
      - type: RequestMirror
        requestMirror: {backendRef: {name: two, port: 80}}
"#,
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let listener = loopback(port);
    let client = HttpClient::new();
    let mut served = BTreeSet::new();
    for _ in 0..40 {
        let answer = client.get(listener, "a.test", "/split").await;
        assert_eq!(answer.status, StatusCode::OK);
        let service = answer.service();
        let seen = &answer.json()["headers"];
        assert_eq!(seen["backend"], service.as_str(), "{seen:#}");
        assert_eq!(seen["rule"], "split");
        let via = answer.headers.get("x-via").map(|v| v.to_str().unwrap());
        assert_eq!(via, (service == "two").then_some("two"));
        served.insert(service);
    }
    assert_eq!(
        served,
        BTreeSet::from(["one".to_string(), "two".to_string()])
    );

    let answer = client.get(listener, "a.test", "/mirrored").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    let routes = gw.routes();
    let accepted = condition(
        &object(&routes, "HTTPRoute", "split")["parents"][0]["conditions"],
        "Accepted",
    )
    .clone();
    assert!(
        accepted["message"].as_str().unwrap().contains(
            "spec.rules[1].backendRefs[0].filters: RequestMirror is not served on a backend"
        ),
        "{accepted:#}"
    );
}

/// BackendTLSPolicy: the routes to a Service it targets speak TLS to its pods, verified with the
/// CA of a ConfigMap against the policy's hostname; a policy that cannot be applied answers 500,
/// never plaintext.
#[tokio::test(flavor = "multi_thread")]
async fn backend_tls_policies_verify_the_pods_of_their_services() {
    use gateway_e2e::backend::Behaviour;
    use gateway_e2e::pki::Ca;
    let backends = Ca::named("backend CA");
    let serving = |ca: &Ca| Behaviour {
        tls: Some({
            let leaf = ca.leaf(&["web.default.svc"]);
            (leaf.cert_pem, leaf.key_pem)
        }),
        ..Behaviour::default()
    };
    let secure = Backend::start_behaving("secure", serving(&backends)).await;
    let impostor = Backend::start_behaving("impostor", serving(&Ca::named("other CA"))).await;
    let plain = Backend::start("plain").await;
    let port = free_port();
    let dir = ManifestsDir::new();
    dir.write("gateway.yaml", &http_gateway("default", port));
    dir.write(
        "services.yaml",
        &[
            service("secure", &[secure.addr]),
            service("impostor", &[impostor.addr]),
            service("unchecked", &[secure.addr]),
            service("plain", &[plain.addr]),
        ]
        .concat(),
    );
    let ca = backends
        .pem()
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>();
    let policy = |name: &str, service: &str, config_map: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n  validation:\n    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {config_map}}}]\n    hostname: web.default.svc\n---\n"
        )
    };
    dir.write(
        "policies.yaml",
        &(format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: backend-ca, namespace: default}}\ndata:\n  ca.crt: |\n{ca}---\n")
            + &policy("secure", "secure", "backend-ca")
            + &policy("impostor", "impostor", "backend-ca")
            + &policy("unchecked", "unchecked", "no-such-ca")),
    );
    let rule = |path: &str, service: &str| {
        format!(
            "  - matches: [{{path: {{value: {path}}}}}]\n    backendRefs: [{{name: {service}, port: 80}}]\n"
        )
    };
    dir.write(
        "route.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: app, namespace: default}}\nspec:\n  parentRefs: [{{name: edge}}]\n  rules:\n{}{}{}{}",
            rule("/secure", "secure"),
            rule("/impostor", "impostor"),
            rule("/unchecked", "unchecked"),
            rule("/plain", "plain"),
        ),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let client = HttpClient::new();
    let listener = loopback(port);
    let answer = client.get(listener, "a.test", "/secure").await;
    assert_eq!(
        (answer.status, answer.service()),
        (StatusCode::OK, "secure".into())
    );
    assert_eq!(
        client.get(listener, "a.test", "/impostor").await.status,
        StatusCode::BAD_GATEWAY
    );
    let unchecked = client.get(listener, "a.test", "/unchecked").await;
    assert_eq!(unchecked.status, StatusCode::INTERNAL_SERVER_ERROR);
    let answer = client.get(listener, "a.test", "/plain").await;
    assert_eq!(
        (answer.status, answer.service()),
        (StatusCode::OK, "plain".into())
    );

    let routes = gw.routes();
    let accepted = condition(
        &object(&routes, "BackendTLSPolicy", "secure")["conditions"],
        "Accepted",
    )
    .clone();
    assert_eq!(accepted["status"], true, "{accepted:#}");
    let refs = object(&routes, "BackendTLSPolicy", "unchecked")["conditions"].clone();
    let resolved = condition(&refs, "ResolvedRefs");
    assert_eq!(
        (resolved["status"].as_bool(), resolved["reason"].as_str()),
        (Some(false), Some("InvalidCACertificateRef")),
        "{refs:#}"
    );
    assert!(
        resolved["message"].as_str().unwrap().contains("no-such-ca"),
        "{refs:#}"
    );
}
