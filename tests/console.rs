//! The console in a real headless browser against the real binary: the list shows the routes;
//! a route created with Auto Generate is reached through its generated host; a broken
//! annotation shows in the dry run and is not applied; edit and delete work; writes without the
//! token are refused. A screenshot of each page is kept under target/test-artifacts/console/.

use gateway_e2e::backend::Backend;
use gateway_e2e::browser::{self, Browser};
use gateway_e2e::client::HttpClient;
use gateway_e2e::gateway::Gateway;
use gateway_e2e::manifests::{ManifestsDir, annotated_ingress, service};

const TOKEN: &str = "console-test-token-0123456789";

/// A gateway whose folder has one route (`shop.test` to the backend `web`), with a console
/// token.
fn gateway_with_token(web: &Backend) -> (ManifestsDir, Gateway, std::path::PathBuf) {
    let dir = ManifestsDir::new();
    dir.write(
        "shop.yaml",
        &(service("web", &[web.addr])
            + &annotated_ingress("shop", Some("shop.test"), &[("/", "Prefix")], "web", &[])),
    );
    let token = std::env::temp_dir().join(format!("console-token-{}", std::process::id()));
    std::fs::write(&token, TOKEN).unwrap();
    let gateway = Gateway::start(
        dir.path(),
        &["--console-token-file", token.to_str().unwrap()],
    );
    (dir, gateway, token)
}

fn skip_without_browser() -> bool {
    if browser::available() {
        return false;
    }
    eprintln!("skipped: /usr/bin/chromium and /usr/bin/chromedriver are not installed");
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_are_listed_created_edited_and_deleted_in_a_browser() {
    if skip_without_browser() {
        return;
    }
    let web = Backend::start("web").await;
    let (dir, gw, _token) = gateway_with_token(&web);
    let console = format!("http://{}", gw.admin);
    let browser = Browser::start(&["shop.test"]).await;

    // The list shows the folder's route, with where it is reached.
    browser.goto(&format!("{console}/")).await;
    let routes = browser.text("#routes").await;
    assert!(
        routes.contains("shop") && routes.contains("shop.test"),
        "{routes}"
    );
    browser.screenshot("routes").await;

    // Without signing in, a change is refused.
    browser.goto(&format!("{console}/console/new")).await;
    browser.fill("#name", "anonymous").await;
    browser.fill("#namespace", "default").await;
    browser.fill("input[name=service]", "web").await;
    browser.fill("input[name=port]", "80").await;
    browser.click("#dry-run").await;
    assert!(
        browser.text("#message").await.contains("sign in"),
        "{}",
        browser.source().await
    );

    browser.goto(&format!("{console}/console/login")).await;
    browser.fill("#token", TOKEN).await;
    browser.click("#sign-in").await;
    browser.text("#routes").await;
    assert!(browser.source().await.contains("signed in"));

    // Create with an auto-generated host: dry run, apply, then reach it by that host.
    browser.goto(&format!("{console}/console/new")).await;
    browser.screenshot("create").await;
    browser.fill("#name", "hello").await;
    browser.fill("#alias", "Hello app").await;
    browser.fill("#namespace", "default").await;
    browser.fill("input[name=service]", "web").await;
    browser.fill("input[name=port]", "80").await;
    browser.click("#dry-run").await;
    let verdict = browser.text("#verdict").await;
    assert!(verdict.contains("can be applied"), "{verdict}");
    browser.screenshot("dry-run").await;
    browser.click("#apply").await;
    assert!(browser.text("#applied").await.contains("applied"));
    assert!(browser.text("#status").await.contains("served"));
    let host = format!("web.default.{}.nip.io", gw.http.ip());
    let rules = browser.text("#rules").await;
    assert!(rules.contains(&host), "{rules}");
    browser.screenshot("route").await;
    assert!(
        std::fs::read_to_string(dir.path().join("console-default-hello.yaml"))
            .unwrap()
            .contains(&host)
    );
    // "Click to visit" reaches the backend through the generated host.
    browser.click("a.visit").await;
    let windows = browser.client.windows().await.unwrap();
    browser
        .client
        .switch_to_window(windows.last().unwrap().clone())
        .await
        .unwrap();
    let visited = browser.source().await;
    assert!(visited.contains("\"service\":\"web\""), "{visited}");
    browser
        .client
        .switch_to_window(windows[0].clone())
        .await
        .unwrap();
    let answer = HttpClient::new().get(gw.http, &host, "/").await;
    assert_eq!(answer.service(), "web");
    // The live part counts them, from /metrics.
    browser
        .goto(&format!("{console}/console/routes/default/hello"))
        .await;
    let counted = browser
        .wait_for("#total", |total| total.parse::<u64>().is_ok_and(|n| n >= 2))
        .await;
    assert!(counted, "the live total never counted the requests");

    // A broken annotation is shown in the dry run, and there is nothing to apply.
    browser.goto(&format!("{console}/console/new")).await;
    browser.fill("#name", "broken").await;
    browser.fill("#namespace", "default").await;
    browser.click("#custom").await;
    browser.fill("#host", "broken.test").await;
    browser.fill("input[name=service]", "web").await;
    browser.fill("input[name=port]", "80").await;
    browser
        .fill(
            "#annotations",
            "nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/33",
        )
        .await;
    browser.click("#dry-run").await;
    assert!(browser.text("#verdict").await.contains("not applied"));
    let warnings = browser.text("#warnings").await;
    assert!(
        warnings.contains("whitelist-source-range") && warnings.contains("10.0.0.0/33"),
        "{warnings}"
    );
    assert!(!browser.source().await.contains("id=\"apply\""));
    browser.screenshot("dry-run-refused").await;
    assert!(!dir.path().join("console-default-broken.yaml").exists());

    // Edit: the dialog comes back filled in; a new alias is applied.
    browser
        .goto(&format!("{console}/console/routes/default/hello/edit"))
        .await;
    browser.fill("#alias", "Hello, edited").await;
    browser.click("#dry-run").await;
    browser.click("#apply").await;
    browser.text("#applied").await;
    assert!(browser.source().await.contains("Hello, edited"));

    // The gateway page and the explain box.
    browser.goto(&format!("{console}/console/gateway")).await;
    assert!(
        browser
            .text("#entries")
            .await
            .contains(&gw.http.to_string())
    );
    browser.screenshot("gateway").await;
    browser
        .goto(&format!(
            "{console}/console/explain?url=http://{host}:{}/x",
            gw.http.port()
        ))
        .await;
    let outcome = browser.text("#outcome").await;
    assert!(outcome.contains("default/web:80"), "{outcome}");
    browser.screenshot("explain").await;

    // Delete, confirmed in the browser's dialog.
    browser
        .goto(&format!("{console}/console/routes/default/hello"))
        .await;
    browser.click("#delete").await;
    browser.client.accept_alert().await.unwrap();
    let routes = browser.text("#routes").await;
    assert!(!routes.contains("Hello"), "{routes}");
    assert!(!dir.path().join("console-default-hello.yaml").exists());
    let gone = HttpClient::new().get(gw.http, &host, "/").await;
    assert_eq!(gone.status, 404);
    browser.client.clone().close().await.unwrap();
}

/// A POST to the console with `headers` and a form `body`; the status and the whole answer.
fn post(gw: &Gateway, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    request(gw, "POST", path, headers, body)
}

fn request(gw: &Gateway, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(gw.admin).unwrap();
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        gw.admin,
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_need_the_token_and_a_cookie_needs_the_csrf_field_and_the_same_origin() {
    let web = Backend::start("web").await;
    let (dir, gw, _token) = gateway_with_token(&web);
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: scripted, \
                namespace: default}\nspec:\n  ingressClassName: xdp-gateway\n  rules:\n  - host: \
                scripted.test\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: \
                {name: web, port: {number: 80}}}}]}\n";
    let form: String = form_body(&[("yaml", yaml)]);

    let (status, _) = post(&gw, "/console/apply", &[], &form);
    assert_eq!(status, 401);
    let (status, _) = post(
        &gw,
        "/console/apply",
        &["Authorization: Bearer wrong-token-xxxxxx"],
        &form,
    );
    assert_eq!(status, 401);
    // The sign-in cookie alone is not enough: a form of another site has no CSRF field.
    let (status, signed_in) = post(&gw, "/console/login", &[], &form_body(&[("token", TOKEN)]));
    assert_eq!(status, 303);
    let cookie = signed_in
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    assert!(
        !cookie.contains(TOKEN),
        "the cookie must not carry the token"
    );
    let with_cookie = format!("Cookie: {cookie}");
    let (status, body) = post(&gw, "/console/apply", &[&with_cookie], &form);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"));
    // The CSRF field from a console page, but posted from another origin.
    let (_, page) = request(&gw, "GET", "/console/new", &[&with_cookie], "");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_string();
    let with_csrf = form_body(&[("yaml", yaml), ("csrf", &csrf)]);
    let (status, _) = post(
        &gw,
        "/console/apply",
        &[&with_cookie, "Origin: http://evil.example"],
        &with_csrf,
    );
    assert_eq!(status, 403);
    assert!(!dir.path().join("console-default-scripted.yaml").exists());
    // Same origin, cookie and CSRF field: applied.
    let origin = format!("Origin: http://{}", gw.admin);
    let (status, body) = post(&gw, "/console/apply", &[&with_cookie, &origin], &with_csrf);
    assert_eq!(status, 303, "{body}");
    assert!(dir.path().join("console-default-scripted.yaml").exists());
    // A bearer token needs no cookie (scripts).
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (status, _) = post(
        &gw,
        "/console/routes/default/scripted/delete",
        &[&bearer],
        "",
    );
    assert_eq!(status, 303);
    assert!(!dir.path().join("console-default-scripted.yaml").exists());
    // A file outside the folder is never touched, whatever the YAML says.
    let escape = yaml.replace("name: scripted", "name: ../../etc");
    let (status, body) = post(
        &gw,
        "/console/apply",
        &[&bearer],
        &form_body(&[("yaml", &escape)]),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("metadata.name"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_the_console_is_read_only_and_it_can_be_turned_off() {
    let web = Backend::start("web").await;
    let dir = ManifestsDir::new();
    dir.write("web.yaml", &service("web", &[web.addr]));
    let gw = Gateway::start(dir.path(), &[]);
    let (status, page) = gw.admin_get("/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("read-only"));
    let (status, body) = post(&gw, "/console/apply", &[], "yaml=x");
    assert_eq!(status, 403);
    assert!(body.contains("--console-token-file"), "{body}");
    drop(gw);
    let gw = Gateway::start(dir.path(), &["--console", "off"]);
    assert_eq!(gw.admin_get("/").unwrap().0, 404);
    assert_eq!(gw.admin_get("/healthz").unwrap().0, 200);
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_cluster_changes_go_through_the_api_server_only_with_console_write() {
    use gateway_e2e::apiserver::FakeApiServer;
    let api = FakeApiServer::start().await;
    let web = Backend::start("web").await;
    api.apply(&service("web", &[web.addr]).replace(
        "metadata: {name: web",
        "metadata: {namespace: shop, name: web",
    ));
    let token = std::env::temp_dir().join(format!("console-cluster-token-{}", std::process::id()));
    std::fs::write(&token, TOKEN).unwrap();
    let token = token.to_str().unwrap();
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let yaml = |path: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: hello, namespace: \
             shop}}\nspec:\n  ingressClassName: xdp-gateway\n  rules:\n  - host: hello.test\n    \
             http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: web, \
             port: {{number: 80}}}}}}}}]}}\n"
        )
    };

    // Without --console-write the console reads the cluster and changes nothing.
    let read_only = Gateway::start_kubernetes(api.kubeconfig(), &["--console-token-file", token]);
    let (status, body) = post(
        &read_only,
        "/console/apply",
        &[&bearer],
        &form_body(&[("yaml", &yaml("/"))]),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--console-write"));
    drop(read_only);

    let gw = Gateway::start_kubernetes(
        api.kubeconfig(),
        &["--console-token-file", token, "--console-write"],
    );
    let (status, body) = post(
        &gw,
        "/console/apply",
        &[&bearer],
        &form_body(&[("yaml", &yaml("/"))]),
    );
    assert_eq!(status, 303, "{body}");
    assert!(api.get("Ingress", Some("shop"), "hello").is_some());
    assert_eq!(
        HttpClient::new()
            .get(gw.http, "hello.test", "/")
            .await
            .service(),
        "web"
    );
    // An edit replaces the object (with its resourceVersion).
    let (status, body) = post(
        &gw,
        "/console/apply",
        &[&bearer],
        &form_body(&[("yaml", &yaml("/v2"))]),
    );
    assert_eq!(status, 303, "{body}");
    let stored = api.get("Ingress", Some("shop"), "hello").unwrap();
    assert_eq!(
        stored["spec"]["rules"][0]["http"]["paths"][0]["path"],
        "/v2"
    );
    assert_eq!(
        HttpClient::new()
            .get(gw.http, "hello.test", "/")
            .await
            .status,
        404
    );
    let (status, _) = post(&gw, "/console/routes/shop/hello/delete", &[&bearer], "");
    assert_eq!(status, 303);
    assert!(api.get("Ingress", Some("shop"), "hello").is_none());
}

/// Whether the admin listener closes `stream` (or answers `status`) within `limit`.
fn closed_within(stream: &mut std::net::TcpStream, limit: std::time::Duration) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
        Err(e) => panic!("still open after {limit:?}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_drops_slow_and_oversized_clients() {
    use std::io::Write;
    use std::time::Duration;
    let web = Backend::start("web").await;
    let dir = ManifestsDir::new();
    dir.write("web.yaml", &service("web", &[web.addr]));
    let gw = Gateway::start(
        dir.path(),
        &["--client-header-timeout", "1", "--client-body-timeout", "1"],
    );
    // A head that never ends.
    let mut slow = std::net::TcpStream::connect(gw.admin).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .unwrap();
    let answer = closed_within(&mut slow, Duration::from_secs(5));
    assert!(answer.is_empty() || answer.contains("408"), "{answer}");
    // A form that never arrives.
    let mut stalled = std::net::TcpStream::connect(gw.admin).unwrap();
    stalled
        .write_all(b"POST /console/login HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\ntoken=")
        .unwrap();
    let answer = closed_within(&mut stalled, Duration::from_secs(5));
    assert!(answer.contains("408"), "{answer}");
    // A form larger than 1 MiB (just larger: the whole of it fits in the socket buffers).
    let big = "x".repeat((1 << 20) + 1000);
    let (status, _) = post(&gw, "/console/login", &[], &format!("token={big}"));
    assert_eq!(status, 413);
}
