//! End to end over TLS: the real gateway, certificates made in the test, a rustls client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway_e2e::backend::Backend;
use gateway_e2e::client::HttpClient;
use gateway_e2e::gateway::Gateway;
use gateway_e2e::manifests::{ManifestsDir, service};
use gateway_e2e::pki::{Ca, TlsHttp, connect, presented};
use hyper::StatusCode;

/// An Ingress in `default` with one rule per host to service `web`, listing the hosts under
/// `spec.tls` with `secret` (no tls entry when `secret` is `None`).
fn ingress(name: &str, hosts: &[&str], secret: Option<&str>, annotations: &str) -> String {
    let rules: String = hosts
        .iter()
        .map(|h| {
            format!(
                "  - host: \"{h}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
            )
        })
        .collect();
    let tls = match secret {
        Some(secret) => {
            let listed: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
            format!(
                "  tls:\n  - hosts: [{}]\n    secretName: {secret}\n",
                listed.join(", ")
            )
        }
        None => String::new(),
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n{tls}  rules:\n{rules}---\n"
    )
}

struct Setup {
    dir: ManifestsDir,
    _web: Backend,
    ca: Ca,
}

async fn setup() -> Setup {
    let dir = ManifestsDir::new();
    let web = Backend::start("web").await;
    dir.write("service.yaml", &service("web", &[web.addr]));
    Setup {
        dir,
        _web: web,
        ca: Ca::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_certificate_of_each_host_and_routes_over_it() {
    let s = setup().await;
    let shop = s.ca.leaf(&["shop.example.com"]);
    let wild = s.ca.leaf(&["*.apps.example.com"]);
    let fallback = s.ca.leaf(&["default.test"]);
    s.dir.write(
        "tls.yaml",
        &(shop.secret("default", "shop-tls")
            + &wild.secret("default", "apps-tls")
            + &ingress("shop", &["shop.example.com"], Some("shop-tls"), "")
            + &ingress("apps", &["*.apps.example.com"], Some("apps-tls"), "")),
    );
    let fallback_cert = s.dir.path().join("default.crt.pem");
    let fallback_key = s.dir.path().join("default.key.pem");
    std::fs::write(&fallback_cert, &fallback.cert_pem).unwrap();
    std::fs::write(&fallback_key, &fallback.key_pem).unwrap();
    let gw = Gateway::start(
        s.dir.path(),
        &[
            "--default-cert",
            fallback_cert.to_str().unwrap(),
            "--default-key",
            fallback_key.to_str().unwrap(),
        ],
    );
    let config = s.ca.client_config(&["http/1.1"]);

    let stream = connect(config.clone(), gw.https, "shop.example.com")
        .await
        .unwrap();
    assert_eq!(presented(&stream).unwrap(), shop.der);
    let mut http = TlsHttp::over(stream).await;
    let (status, headers, body) = http.get("shop.example.com", "/cart").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"x-forwarded-proto\":\"https\""), "{body}");
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );

    let stream = connect(config.clone(), gw.https, "blog.apps.example.com")
        .await
        .unwrap();
    assert_eq!(presented(&stream).unwrap(), wild.der);
    let (status, _, _) = TlsHttp::over(stream)
        .await
        .get("blog.apps.example.com", "/")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    // Unknown names get the default certificate.
    let stream = connect(config.clone(), gw.https, "default.test")
        .await
        .unwrap();
    assert_eq!(presented(&stream).unwrap(), fallback.der);
    let err = connect(config, gw.https, "unknown.example.com")
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");

    // Monitoring sees the served certificates (ingress-nginx's names), the handshakes by
    // version, and the one that failed.
    let (_, metrics) = gw.admin_get("/metrics").unwrap();
    let line = |prefix: &str, needles: &[&str]| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix) && needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no {prefix} with {needles:?}:\n{metrics}"))
            .to_string()
    };
    let info = line(
        "nginx_ingress_controller_ssl_certificate_info{",
        &[
            "host=\"shop.example.com\"",
            "secret_name=\"shop-tls\"",
            "namespace=\"default\"",
        ],
    );
    assert!(info.contains("public_key_algorithm=\"ECDSA\""), "{info}");
    assert!(info.ends_with(" 1"), "{info}");
    line(
        "nginx_ingress_controller_ssl_certificate_info{",
        &["host=\"*.apps.example.com\"", "secret_name=\"apps-tls\""],
    );
    line(
        "nginx_ingress_controller_ssl_expire_time_seconds{",
        &["host=\"shop.example.com\""],
    );
    // A client is done with its handshake before the server is: wait for the server's counts
    // (three handshakes completed, one failed).
    let deadline = Instant::now() + Duration::from_secs(5);
    let counted = |metrics: &str| {
        let has = |wanted: &str| metrics.lines().any(|l| l == wanted);
        has("xdp_gateway_tls_handshakes_total{version=\"TLSv1.3\",resumed=\"false\"} 3")
            && has("xdp_gateway_tls_handshake_failures_total 1")
    };
    loop {
        let (_, metrics) = gw.admin_get("/metrics").unwrap();
        if counted(&metrics) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "handshakes not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_default_certificate_and_h2_by_alpn() {
    let s = setup().await;
    let shop = s.ca.leaf(&["shop.example.com"]);
    s.dir.write(
        "tls.yaml",
        &(shop.secret("default", "shop-tls")
            + &ingress("shop", &["shop.example.com"], Some("shop-tls"), "")),
    );
    let gw = Gateway::start(s.dir.path(), &[]);
    // The self-signed default certificate is not one our CA issued.
    let err = connect(s.ca.client_config(&[]), gw.https, "nobody.example.com")
        .await
        .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("BadSignature"),
        "{err}"
    );

    let stream = connect(
        s.ca.client_config(&["h2", "http/1.1"]),
        gw.https,
        "shop.example.com",
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut http = TlsHttp::over(stream).await;
    assert!(matches!(http, TlsHttp::H2(_)));
    for _ in 0..3 {
        let (status, _, body) = http.get("shop.example.com", "/h2").await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\"host\":\"shop.example.com\""), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_redirects_to_https_and_annotations_override() {
    let s = setup().await;
    let leaf = s.ca.leaf(&["*.example.com"]);
    s.dir.write(
        "tls.yaml",
        &(leaf.secret("default", "wild")
            + &ingress("secure", &["secure.example.com"], Some("wild"), "")
            + &ingress(
                "plain-ok",
                &["plain.example.com"],
                Some("wild"),
                "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"",
            )
            + &ingress(
                "forced",
                &["forced.example.com"],
                None,
                "nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"",
            )
            + &ingress("open", &["open.example.com"], None, "")),
    );
    let gw = Gateway::start(s.dir.path(), &["--redirect-https-port", "443"]);
    let client = HttpClient::new();
    let answer = client
        .get(gw.http, "secure.example.com:8080", "/a/b?c=d&e")
        .await;
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        answer.headers["location"],
        "https://secure.example.com/a/b?c=d&e"
    );
    let forced = client.get(gw.http, "forced.example.com", "/x").await;
    assert_eq!(forced.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(forced.headers["location"], "https://forced.example.com/x");
    assert_eq!(
        client.get(gw.http, "plain.example.com", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(
        client.get(gw.http, "open.example.com", "/").await.status,
        StatusCode::OK
    );
    // ACME HTTP-01 challenges are never redirected.
    let acme = client
        .get(
            gw.http,
            "secure.example.com",
            "/.well-known/acme-challenge/token",
        )
        .await;
    assert_eq!(acme.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_names_the_https_listener_port_by_default() {
    let s = setup().await;
    let leaf = s.ca.leaf(&["secure.example.com"]);
    s.dir.write(
        "tls.yaml",
        &(leaf.secret("default", "t") + &ingress("secure", &["secure.example.com"], Some("t"), "")),
    );
    let gw = Gateway::start(s.dir.path(), &[]);
    let answer = HttpClient::new()
        .get(gw.http, "secure.example.com", "/p")
        .await;
    assert_eq!(
        answer.headers["location"],
        format!("https://secure.example.com:{}/p", gw.https.port())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_secrets_never_affect_other_hosts() {
    let s = setup().await;
    let good = s.ca.leaf(&["good.example.com"]);
    let expired = s.ca.expired_leaf(&["expired.example.com"]);
    let mismatched = {
        let a = s.ca.leaf(&["mismatch.example.com"]);
        let b = s.ca.leaf(&["other.example.com"]);
        gateway_e2e::pki::Leaf {
            cert_pem: a.cert_pem,
            key_pem: b.key_pem,
            der: a.der,
        }
    };
    let foreign = s.ca.leaf(&["foreign.example.com"]);
    s.dir.write(
        "tls.yaml",
        &(good.secret("default", "good")
            + &expired.secret("default", "expired")
            + &mismatched.secret("default", "mismatch")
            + &foreign.secret("elsewhere", "foreign")
            + "apiVersion: v1\nkind: Secret\nmetadata: {name: garbage}\ntype: kubernetes.io/tls\n\
               stringData: {tls.crt: not a certificate, tls.key: not a key}\n---\n"
            + &ingress("good", &["good.example.com"], Some("good"), "")
            + &ingress("expired", &["expired.example.com"], Some("expired"), "")
            + &ingress("mismatch", &["mismatch.example.com"], Some("mismatch"), "")
            + &ingress(
                "foreign",
                &["foreign.example.com"],
                Some("elsewhere/foreign"),
                "",
            )
            + &ingress("garbage", &["garbage.example.com"], Some("garbage"), "")),
    );
    let gw = Gateway::start(s.dir.path(), &[]);
    let warnings = gw.routes()["warnings"].to_string();
    for expected in [
        "secret default/expired: the certificate expired on",
        "secret default/mismatch: tls.key does not belong to the certificate in tls.crt",
        "a Secret in another namespace is never used",
        "secret default/garbage: tls.crt holds no certificate",
    ] {
        assert!(
            warnings.contains(expected),
            "missing {expected:?} in {warnings}"
        );
    }
    let config = s.ca.client_config(&[]);
    let stream = connect(config.clone(), gw.https, "good.example.com")
        .await
        .unwrap();
    assert_eq!(presented(&stream).unwrap(), good.der);
    assert_eq!(
        TlsHttp::over(stream)
            .await
            .get("good.example.com", "/")
            .await
            .unwrap()
            .0,
        StatusCode::OK
    );
    for host in [
        "expired.example.com",
        "mismatch.example.com",
        "foreign.example.com",
        "garbage.example.com",
    ] {
        // Served with the default certificate, which our CA did not issue.
        assert!(
            connect(config.clone(), gw.https, host).await.is_err(),
            "{host}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_differs_from_sni_is_421_unless_the_certificate_covers_it() {
    let s = setup().await;
    let a = s.ca.leaf(&["a.example.com"]);
    let b = s.ca.leaf(&["b.example.com"]);
    let wide = s.ca.leaf(&["*.wide.example.com"]);
    s.dir.write(
        "tls.yaml",
        &(a.secret("default", "a")
            + &b.secret("default", "b")
            + &wide.secret("default", "wide")
            + &ingress("a", &["a.example.com"], Some("a"), "")
            + &ingress("b", &["b.example.com"], Some("b"), "")
            + &ingress(
                "wide",
                &["x.wide.example.com", "y.wide.example.com"],
                Some("wide"),
                "",
            )),
    );
    let gw = Gateway::start(s.dir.path(), &[]);
    for alpn in [&["http/1.1"][..], &["h2"][..]] {
        let config = s.ca.client_config(alpn);
        let stream = connect(config.clone(), gw.https, "a.example.com")
            .await
            .unwrap();
        let mut http = TlsHttp::over(stream).await;
        let (status, _, body) = http.get("b.example.com", "/").await.unwrap();
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{alpn:?}: {body}");
        assert_eq!(
            http.get("a.example.com", "/").await.unwrap().0,
            StatusCode::OK
        );

        // One certificate covering both names: the connection may carry both.
        let stream = connect(config, gw.https, "x.wide.example.com")
            .await
            .unwrap();
        let mut http = TlsHttp::over(stream).await;
        assert_eq!(
            http.get("y.wide.example.com", "/").await.unwrap().0,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_a_secret_switches_new_handshakes_with_no_failed_request() {
    let s = setup().await;
    let first = s.ca.leaf(&["rotate.example.com"]);
    let second = s.ca.leaf(&["rotate.example.com"]);
    let ingress_yaml = ingress("rotate", &["rotate.example.com"], Some("rotate-tls"), "");
    s.dir.write("ingress.yaml", &ingress_yaml);
    s.dir
        .write("secret.yaml", &first.secret("default", "rotate-tls"));
    let gw = Gateway::start(s.dir.path(), &[]);
    let config = s.ca.client_config(&["http/1.1"]);
    let https = gw.https;

    // Clients on kept-alive connections and clients making new handshakes, all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for new_connections in [false, true, false, true] {
        let (stop, served, config) = (stop.clone(), served.clone(), config.clone());
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut kept = None;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if new_connections || kept.is_none() {
                    match connect(config.clone(), https, "rotate.example.com").await {
                        Ok(stream) => kept = Some(TlsHttp::over(stream).await),
                        Err(e) => {
                            failures.push(e);
                            continue;
                        }
                    }
                }
                match kept.as_mut().unwrap().get("rotate.example.com", "/").await {
                    Ok((StatusCode::OK, _, _)) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, _, body)) => failures.push(format!("{status} {body}")),
                    Err(e) => failures.push(e),
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated_at = Instant::now();
    s.dir
        .write("secret.yaml", &second.secret("default", "rotate-tls"));
    // Full handshakes only: a resumed session carries the certificate of its first handshake.
    let mut probe = (*config).clone();
    probe.resumption = rustls::client::Resumption::disabled();
    let probe = Arc::new(probe);
    loop {
        let stream = connect(probe.clone(), https, "rotate.example.com")
            .await
            .unwrap();

        if presented(&stream).unwrap() == second.der {
            break;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(1),
            "rotation took over a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for task in load {
        failures.extend(task.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served.load(Ordering::Relaxed) > 50, "the load ran");

    // A broken update does not replace the certificate that works.
    let stranger = s.ca.leaf(&["stranger.example.com"]);
    let broken = gateway_e2e::pki::Leaf {
        cert_pem: second.cert_pem.clone(),
        key_pem: stranger.key_pem,
        der: second.der.clone(),
    };
    s.dir
        .write("secret.yaml", &broken.secret("default", "rotate-tls"));
    gw.wait_routes("the warning about the broken secret", |r| {
        r["warnings"]
            .to_string()
            .contains("keeping the certificate it held before")
    });
    let stream = connect(probe, https, "rotate.example.com").await.unwrap();
    assert_eq!(presented(&stream).unwrap(), second.der);
}
