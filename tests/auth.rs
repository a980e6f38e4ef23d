//! Authentication end to end: basic auth against htpasswd Secrets (bcrypt, {SHA}, $apr1$),
//! external auth against a real auth service process that answers as oauth2-proxy does, and
//! client certificates per host (CAs made with rcgen, real TLS); each rule that cannot be
//! applied closes its route with 503 while the others serve.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use gateway_e2e::backend::{Backend, Behaviour};
use gateway_e2e::client::{Answer, HttpClient};
use gateway_e2e::gateway::{Gateway, binary};
use gateway_e2e::manifests::{ManifestsDir, annotated_ingress, service};
use gateway_e2e::pki::{Ca, Leaf, TlsHttp, connect};
use hyper::{Request, StatusCode};

/// An Ingress `name` for host `name.test`, `/` to `service`, with annotations.
fn route(name: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let host = format!("{name}.test");
    annotated_ingress(name, Some(&host), &[("/", "Prefix")], service, annotations)
}

/// `secret` for `ann` ({SHA}), `bob` ($apr1$, from `openssl passwd -apr1`) and `cy` (bcrypt).
fn htpasswd() -> String {
    let bcrypt = bcrypt::hash_with_salt("secret", 4, [7; 16])
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    format!(
        "ann:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\nbob:$apr1$S1t2Y3z4$3y9iwmVX5fbIS751PfHe/0\ncy:{bcrypt}\n"
    )
}

fn opaque_secret(name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: Opaque\ndata:\n  {key}: {}\n---\n",
        BASE64.encode(value)
    )
}

async fn get(gw: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    HttpClient::new()
        .send(gw.http, host, request, Bytes::new())
        .await
        .expect("request")
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_admits_each_hash_scheme_and_fails_closed() {
    let web = Backend::start("web").await;
    let dir = ManifestsDir::new();
    let log = dir.path().join("access.log");
    let auth = |secret: &'static str| {
        [
            ("auth-type", "basic"),
            ("auth-secret", secret),
            ("auth-realm", "Shop staff"),
        ]
    };
    dir.write(
        "app.yaml",
        &[
            service("web", &[web.addr]),
            opaque_secret("users", "auth", &htpasswd()),
            route("private", "web", &auth("users")),
            route("missing", "web", &auth("nobody")),
            route("public", "web", &[]),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", log.to_str().unwrap()]);

    let answer = get(&gw, "private.test", "/", &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.headers["www-authenticate"],
        "Basic realm=\"Shop staff\""
    );
    for user in ["ann", "bob", "cy"] {
        let good = get(
            &gw,
            "private.test",
            "/a",
            &[("authorization", &basic(user, "secret"))],
        )
        .await;
        assert_eq!(good.status, StatusCode::OK, "{user}: {}", good.body);
        assert_eq!(good.service(), "web");
        // Twice: the second is answered from the verified credentials.
        let again = get(
            &gw,
            "private.test",
            "/b",
            &[("authorization", &basic(user, "secret"))],
        )
        .await;
        assert_eq!(again.status, StatusCode::OK, "{user}");
        let bad = get(
            &gw,
            "private.test",
            "/",
            &[("authorization", &basic(user, "Secret"))],
        )
        .await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED, "{user}");
    }
    for header in [
        basic("dan", "secret"),
        "Basic !!!".into(),
        "Bearer secret".into(),
    ] {
        let answer = get(&gw, "private.test", "/", &[("authorization", &header)]).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{header}");
    }

    // A route whose users cannot be read is closed; the others serve.
    let closed = get(
        &gw,
        "missing.test",
        "/",
        &[("authorization", &basic("ann", "secret"))],
    )
    .await;
    assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        get(&gw, "public.test", "/", &[]).await.status,
        StatusCode::OK
    );
    let routes = gw.routes().to_string();
    assert!(
        routes.contains("secret default/nobody not found"),
        "{routes}"
    );

    // Credentials are never written to the access log.
    let written = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(written.contains("private.test"), "{written}");
    assert!(!written.contains(&BASE64.encode("ann:secret")) && !written.contains("secret"));
}

/// The auth service as its own process, stopped when dropped.
struct AuthServer {
    addr: SocketAddr,
    child: Child,
}

impl AuthServer {
    fn start() -> AuthServer {
        let mut child = Command::new(binary("auth-server"))
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start auth-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("auth-server said {line:?}"));
        AuthServer { addr, child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many auth requests it answered, and the headers of the last one.
    async fn stats(&self) -> (u64, serde_json::Value) {
        let answer = HttpClient::new().get(self.addr, "auth", "/stats").await;
        let stats = answer.json();
        (stats["requests"].as_u64().unwrap(), stats["last"].clone())
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn external_auth_asks_an_oauth2_proxy_like_service() {
    let web = Backend::start("web").await;
    let auth = AuthServer::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let verify = auth.url("/oauth2/auth");
    let protected = |extra: &[(&'static str, &'static str)]| {
        let mut annotations = vec![
            ("auth-url", verify.as_str()),
            (
                "auth-response-headers",
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
        ];
        annotations.extend_from_slice(extra);
        annotations
    };
    let fail_url = auth.url("/oauth2/fail");
    let dead_url = format!("http://{dead}/oauth2/auth");
    let dir = ManifestsDir::new();
    dir.write(
        "app.yaml",
        &[
            service("web", &[web.addr]),
            route(
                "app",
                "web",
                &protected(&[("auth-signin", "https://login.test/oauth2/start")]),
            ),
            route("api", "web", &protected(&[])),
            route(
                "cached",
                "web",
                &protected(&[
                    ("auth-cache-key", "$cookie__oauth2_proxy"),
                    ("auth-cache-duration", "202 401 5m"),
                ]),
            ),
            route("failing", "web", &[("auth-url", fail_url.as_str())]),
            route("unreachable", "web", &[("auth-url", dead_url.as_str())]),
            route("broken", "web", &[("auth-url", "ftp://auth.test/")]),
            route("public", "web", &[]),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);

    // Not signed in: a browser is sent to sign in, with the URL to come back to.
    let answer = get(&gw, "app.test", "/orders?page=2", &[]).await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(
        answer.headers["location"],
        "https://login.test/oauth2/start?rd=http%3A%2F%2Fapp.test%2Forders%3Fpage%3D2"
    );
    // Without auth-signin, the service's 401 and its challenge go back as they are.
    let answer = get(&gw, "api.test", "/", &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.headers["www-authenticate"],
        "Bearer realm=\"oauth2-proxy\""
    );

    // Signed in: the backend gets the user from the auth service, never the client's claim.
    let answer = get(
        &gw,
        "app.test",
        "/orders?page=2",
        &[
            ("cookie", "_oauth2_proxy=ann"),
            ("x-auth-request-user", "root"),
            ("x-auth-request-email", "root@evil"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let seen = answer.json();
    assert_eq!(seen["headers"]["x-auth-request-user"], "ann");
    assert_eq!(seen["headers"]["x-auth-request-email"], "ann@example.com");
    assert_eq!(
        answer.headers["set-cookie"],
        "_oauth2_proxy=ann; Path=/; HttpOnly"
    );
    // What the auth service saw, as ingress-nginx sends it.
    let (_, last) = auth.stats().await;
    assert_eq!(last[":path"], "/oauth2/auth");
    assert_eq!(last[":method"], "GET");
    assert_eq!(last["host"], auth.addr.to_string());
    assert_eq!(last["x-original-url"], "http://app.test/orders?page=2");
    assert_eq!(last["x-original-method"], "GET");
    assert_eq!(last["x-auth-request-redirect"], "/orders?page=2");
    assert_eq!(last["x-forwarded-for"], "127.0.0.1");
    assert_eq!(last["cookie"], "_oauth2_proxy=ann");
    assert_eq!(last["x-request-id"], seen["headers"]["x-request-id"]);

    // A request body is not sent to the auth service; the method is passed on.
    let post = HttpClient::new()
        .send(
            gw.http,
            "api.test",
            Request::post("/items").header("cookie", "_oauth2_proxy=bob"),
            Bytes::from_static(b"{\"item\": 1}"),
        )
        .await
        .unwrap();
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(post.json()["body_bytes"], 11);
    let (_, last) = auth.stats().await;
    assert_eq!(
        (last[":method"].as_str(), last.get("content-length")),
        (Some("POST"), None)
    );

    // Signed in but not allowed: 403.
    let answer = get(&gw, "app.test", "/", &[("cookie", "_oauth2_proxy=eve")]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    // Cached verdicts: one auth request per session for the cache's duration.
    let (before, _) = auth.stats().await;
    for _ in 0..3 {
        let answer = get(&gw, "cached.test", "/", &[("cookie", "_oauth2_proxy=bob")]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["headers"]["x-auth-request-user"], "bob");
        assert_eq!(
            get(&gw, "cached.test", "/", &[]).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let (after, _) = auth.stats().await;
    assert_eq!(
        after - before,
        2,
        "one for bob's session, one for no session"
    );

    // An auth service that fails or cannot be reached: 500, never the backend.
    assert_eq!(
        get(&gw, "failing.test", "/", &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let answer = get(
        &gw,
        "unreachable.test",
        "/",
        &[("cookie", "_oauth2_proxy=ann")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    // An auth-url that cannot be used closes its route; the others serve.
    assert_eq!(
        get(&gw, "broken.test", "/", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&gw, "public.test", "/", &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn global_auth_covers_every_ingress_that_does_not_opt_out() {
    let web = Backend::start("web").await;
    let auth = AuthServer::start();
    let dir = ManifestsDir::new();
    dir.write(
        "app.yaml",
        &[
            service("web", &[web.addr]),
            route("app", "web", &[]),
            route("open", "web", &[("enable-global-auth", "false")]),
        ]
        .concat(),
    );
    let url = auth.url("/oauth2/auth");
    let gw = Gateway::start(
        dir.path(),
        &["--access-log", "off", "--global-auth-url", &url],
    );
    assert_eq!(
        get(&gw, "app.test", "/", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let answer = get(&gw, "app.test", "/", &[("cookie", "_oauth2_proxy=ann")]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(get(&gw, "open.test", "/", &[]).await.status, StatusCode::OK);
}

/// An Ingress `name` for `host` over TLS (Secret `site`) to `web`, with annotations.
fn tls_ingress(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let plain = annotated_ingress(name, Some(host), &[("/", "Prefix")], "web", annotations);
    let spec = format!("spec:\n  tls:\n  - hosts: [{host}]\n    secretName: site\n");
    plain.replacen("spec:\n", &spec, 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_asked_for_and_verified_per_host() {
    let web = Backend::start("web").await;
    let sites = Ca::named("site CA");
    let hosts = [
        "mtls.test",
        "optional.test",
        "errors.test",
        "open.test",
        "broken.test",
    ];
    let site = sites.leaf(&hosts);
    let clients = Ca::named("client CA");
    let (ann, bob) = (clients.client_leaf("ann"), clients.client_leaf("bob"));
    let eve = Ca::named("outsider CA").client_leaf("eve");
    let ca = |verify: &'static str| {
        vec![
            ("auth-tls-secret", "default/client-ca"),
            ("auth-tls-verify-client", verify),
        ]
    };
    let mut mtls = ca("on");
    mtls.extend([
        ("auth-tls-pass-certificate-to-upstream", "true"),
        ("auth-tls-match-cn", "CN=(ann|eve)$"),
    ]);
    let mut errors = ca("on");
    errors.push(("auth-tls-error-page", "https://help.test/certificates"));
    let dir = ManifestsDir::new();
    dir.write(
        "app.yaml",
        &[
            service("web", &[web.addr]),
            site.secret("default", "site"),
            opaque_secret("client-ca", "ca.crt", &clients.pem()),
            tls_ingress("mtls", "mtls.test", &mtls),
            tls_ingress("optional", "optional.test", &ca("optional")),
            tls_ingress("errors", "errors.test", &errors),
            tls_ingress("open", "open.test", &[]),
            tls_ingress(
                "broken",
                "broken.test",
                &[("auth-tls-secret", "default/no-such-ca")],
            ),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let fetch = |host: &'static str,
                 sni: &'static str,
                 client: Option<&Leaf>,
                 headers: &'static [(&'static str, &'static str)]| {
        let config = sites.client_config_presenting(&[], client);
        let https = gw.https;
        async move {
            let stream = connect(config, https, sni).await?;
            TlsHttp::over(stream)
                .await
                .get_with(host, "/", headers)
                .await
        }
    };
    let seen =
        |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["headers"].clone();

    // Required and verified: the backend learns who it is, with the certificate.
    let (status, _, body) = fetch("mtls.test", "mtls.test", Some(&ann), &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let headers = seen(&body);
    assert_eq!(headers["ssl-client-verify"], "SUCCESS");
    assert_eq!(headers["ssl-client-subject-dn"], "CN=ann");
    assert_eq!(headers["ssl-client-issuer-dn"], "CN=client CA");
    assert!(
        headers["ssl-client-cert"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN%20CERTIFICATE-----%0A")
    );
    // No certificate, one from another CA, a subject auth-tls-match-cn does not admit.
    let (status, _, body) = fetch("mtls.test", "mtls.test", None, &[]).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("no required SSL certificate was sent"),
        "{body}"
    );
    let (status, _, body) = fetch("mtls.test", "mtls.test", Some(&eve), &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("the SSL certificate error"), "{body}");
    let (status, _, _) = fetch("mtls.test", "mtls.test", Some(&bob), &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Optional: none is fine (and a forged verdict never reaches the backend), a bad one is not.
    let forged = &[
        ("ssl-client-verify", "SUCCESS"),
        ("ssl-client-subject-dn", "CN=admin"),
    ];
    let (status, _, body) = fetch("optional.test", "optional.test", None, forged)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let headers = seen(&body);
    assert_eq!(
        (
            headers["ssl-client-verify"].as_str(),
            headers["ssl-client-subject-dn"].as_str()
        ),
        (Some("NONE"), Some(""))
    );
    let (status, _, _) = fetch("optional.test", "optional.test", Some(&eve), &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The error page instead of a 400.
    let (status, headers, _) = fetch("errors.test", "errors.test", None, &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "https://help.test/certificates");

    // A connection made for one host's rules never carries another host's requests.
    let (status, _, _) = fetch("mtls.test", "open.test", None, &[]).await.unwrap();
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    let (status, _, _) = fetch("open.test", "mtls.test", Some(&ann), &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    let (status, _, _) = fetch("open.test", "open.test", None, &[]).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // Plain HTTP goes to HTTPS first; a CA that cannot be read closes its routes.
    assert_eq!(
        get(&gw, "mtls.test", "/", &[]).await.status,
        StatusCode::PERMANENT_REDIRECT
    );
    let (status, _, _) = fetch("broken.test", "broken.test", None, &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_are_verified_and_authenticated_with_proxy_ssl_annotations() {
    let backends = Ca::named("backend CA");
    let gateway_client = backends.client_leaf("gateway");
    let serving = |leaf: &Leaf, client_ca: Option<String>| Behaviour {
        tls: Some((leaf.cert_pem.clone(), leaf.key_pem.clone())),
        client_ca,
        ..Behaviour::default()
    };
    let secure = Backend::start_behaving(
        "secure",
        serving(&backends.leaf(&["web.default.svc"]), None),
    )
    .await;
    let impostor_leaf = Ca::named("impostor CA").leaf(&["web.default.svc"]);
    let impostor = Backend::start_behaving("impostor", serving(&impostor_leaf, None)).await;
    let mutual = serving(&backends.leaf(&["web.default.svc"]), Some(backends.pem()));
    let mutual = Backend::start_behaving("mutual", mutual).await;
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: backend-tls}}\ntype: Opaque\ndata:\n  ca.crt: {}\n  tls.crt: {}\n  tls.key: {}\n---\n",
        BASE64.encode(backends.pem()),
        BASE64.encode(&gateway_client.cert_pem),
        BASE64.encode(&gateway_client.key_pem),
    );
    let verified = |name: &'static str| {
        vec![
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-secret", "default/backend-tls"),
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-name", name),
        ]
    };
    let dir = ManifestsDir::new();
    dir.write(
        "app.yaml",
        &[
            service("secure", &[secure.addr]),
            service("impostor", &[impostor.addr]),
            service("mutual", &[mutual.addr]),
            secret,
            route("verified", "secure", &verified("web.default.svc")),
            route("impostor", "impostor", &verified("web.default.svc")),
            route("wrong-name", "secure", &verified("db.default.svc")),
            route("mutual", "mutual", &verified("web.default.svc")),
            route("unverified", "impostor", &[("backend-protocol", "HTTPS")]),
            route("no-client-cert", "mutual", &[("backend-protocol", "HTTPS")]),
            route(
                "no-ca",
                "secure",
                &[("backend-protocol", "HTTPS"), ("proxy-ssl-verify", "on")],
            ),
            route(
                "tls13",
                "secure",
                &[
                    ("backend-protocol", "HTTPS"),
                    ("proxy-ssl-protocols", "TLSv1.3"),
                ],
            ),
        ]
        .concat(),
    );
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let status = |host: &'static str| {
        let gw = &gw;
        async move { get(gw, host, "/", &[]).await.status }
    };
    // Verified against the route's CA and name; mutual TLS with the Secret's certificate.
    let answer = get(&gw, "verified.test", "/", &[]).await;
    assert_eq!(
        (answer.status, answer.service()),
        (StatusCode::OK, "secure".into())
    );
    assert_eq!(status("mutual.test").await, StatusCode::OK);
    assert_eq!(status("tls13.test").await, StatusCode::OK);
    // Another CA's certificate, another name, no client certificate: the backend is refused.
    assert_eq!(status("impostor.test").await, StatusCode::BAD_GATEWAY);
    assert_eq!(status("wrong-name.test").await, StatusCode::BAD_GATEWAY);
    assert_eq!(status("no-client-cert.test").await, StatusCode::BAD_GATEWAY);
    // Without proxy-ssl-verify, as ingress-nginx: encrypted, not verified.
    assert_eq!(status("unverified.test").await, StatusCode::OK);
    // Verification asked for without a CA closes the route.
    assert_eq!(status("no-ca.test").await, StatusCode::SERVICE_UNAVAILABLE);
}
