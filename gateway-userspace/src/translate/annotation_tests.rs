//! ingress-nginx annotations at the translate level: each one parsed into the route's policy,
//! each invalid value refused with a warning naming annotation, value and reason, with the rest
//! of the route and every other route untouched.

use std::time::Duration;

use hyper::StatusCode;

use super::tests::{service, snapshot_of, warnings_of};
use crate::policy::balance::AffinityMode;
use crate::policy::service_url::ServiceUrl;
use crate::policy::{Balance, Protocol, RoutePolicy};
use crate::snapshot::{Route, Snapshot};

/// An Ingress `name` for `host` with `paths` (path, pathType) to `web`, with annotations
/// (`key: value` lines without the prefix).
fn annotated(
    name: &str,
    host: &str,
    paths: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| {
            format!(
                "    nginx.ingress.kubernetes.io/{k}: {}\n",
                serde_json::to_string(v).unwrap()
            )
        })
        .collect();
    let paths: String = paths
        .iter()
        .map(|(path, kind)| {
            format!(
                "      - path: {}\n        pathType: {kind}\n        backend: {{service: {{name: web, port: {{number: 80}}}}}}\n",
                serde_json::to_string(path).unwrap()
            )
        })
        .collect();
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{annotations}")
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n{annotations}spec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n{paths}---\n"
    )
}

fn with(annotations: &[(&str, &str)]) -> Snapshot {
    snapshot_of(
        &(service("web", 9001) + &annotated("shop", "shop.com", &[("/", "Prefix")], annotations)),
    )
}

fn route<'a>(snapshot: &'a Snapshot, host: &str, path: &str) -> &'a Route {
    snapshot
        .route(host, path)
        .and_then(|m| m.route)
        .unwrap_or_else(|| panic!("no route for {host}{path}: {:#?}", warnings_of(snapshot)))
}

fn policy(snapshot: &Snapshot) -> &RoutePolicy {
    &route(snapshot, "shop.com", "/").policy
}

/// Asserts one warning about annotation `name` that quotes the value and gives `reason`, and
/// that the route is still served.
fn refused(annotations: &[(&str, &str)], name: &str, reason: &str) -> Snapshot {
    let snapshot = with(annotations);
    let field = format!("metadata.annotations[\"nginx.ingress.kubernetes.io/{name}\"]");
    let warning = snapshot
        .warnings
        .iter()
        .find(|w| w.field == field)
        .unwrap_or_else(|| panic!("no warning for {name}: {:#?}", warnings_of(&snapshot)));
    assert!(
        warning.message.contains(reason),
        "{name}: {}",
        warning.message
    );
    assert_eq!(warning.object, "ingress default/shop");
    assert!(snapshot.route("shop.com", "/").is_some(), "the route stays");
    snapshot
}

#[test]
fn paths_and_redirect_annotations_become_policy() {
    let s = with(&[
        ("permanent-redirect", "https://new.example.com/x"),
        ("permanent-redirect-code", "308"),
    ]);
    let redirect = policy(&s).redirect.as_ref().unwrap();
    assert_eq!(
        (redirect.status, redirect.location.to_str().unwrap()),
        (StatusCode::PERMANENT_REDIRECT, "https://new.example.com/x")
    );
    let s = with(&[("permanent-redirect", "/moved")]);
    assert_eq!(
        policy(&s).redirect.as_ref().unwrap().status,
        StatusCode::MOVED_PERMANENTLY
    );
    let s = with(&[
        ("temporal-redirect", "https://t.example.com"),
        ("permanent-redirect", "https://p.example.com"),
    ]);
    let redirect = policy(&s).redirect.as_ref().unwrap();
    assert_eq!(
        redirect.status,
        StatusCode::FOUND,
        "temporal wins, as in ingress-nginx"
    );
    assert_eq!(redirect.location, "https://t.example.com");
    assert_eq!(
        policy(&with(&[("app-root", "/app")])).app_root.as_deref(),
        Some("/app")
    );
    assert_eq!(
        policy(&with(&[("x-forwarded-prefix", "/shop")]))
            .forwarded_prefix
            .as_ref()
            .unwrap(),
        "/shop"
    );
    assert_eq!(
        policy(&with(&[("upstream-vhost", "internal.svc:8080")]))
            .upstream_vhost
            .as_ref()
            .unwrap(),
        "internal.svc:8080"
    );
    assert_eq!(
        policy(&with(&[("custom-http-errors", "404, 503")])).custom_errors,
        vec![StatusCode::NOT_FOUND, StatusCode::SERVICE_UNAVAILABLE]
    );
}

#[test]
fn invalid_path_and_redirect_values_are_refused() {
    refused(
        &[("permanent-redirect", "javascript:alert(1)")],
        "permanent-redirect",
        "must be an http(s) URL",
    );
    refused(
        &[("permanent-redirect", "//evil.com")],
        "permanent-redirect",
        "single \"/\"",
    );
    refused(
        &[
            ("permanent-redirect-code", "200"),
            ("permanent-redirect", "/x"),
        ],
        "permanent-redirect-code",
        "between 300 and 308",
    );
    refused(
        &[("temporal-redirect", "https://a b")],
        "temporal-redirect",
        "not a valid URL",
    );
    refused(&[("app-root", "app")], "app-root", "starting with a single");
    refused(
        &[("x-forwarded-prefix", "/a b")],
        "x-forwarded-prefix",
        "not a valid URL path",
    );
    refused(
        &[("upstream-vhost", "a;b")],
        "upstream-vhost",
        "host name or address",
    );
    refused(
        &[("custom-http-errors", "404,abc")],
        "custom-http-errors",
        "\"abc\" must be a whole number",
    );
    refused(
        &[("custom-http-errors", "200")],
        "custom-http-errors",
        "between 400 and 599",
    );
    refused(
        &[("default-backend", "Bad_Name")],
        "default-backend",
        "name of a Service",
    );
    refused(
        &[("from-to-www-redirect", "yes")],
        "from-to-www-redirect",
        "must be \"true\" or \"false\"",
    );
}

#[test]
fn regex_paths_are_host_wide_and_rewrite_uses_their_captures() {
    let yaml = service("web", 9001)
        + &annotated(
            "rx",
            "shop.com",
            &[("/api/v[0-9]+/(.*)", "ImplementationSpecific")],
            &[("rewrite-target", "/$1")],
        )
        + &annotated("plain", "shop.com", &[("/static", "Prefix")], &[]);
    let s = snapshot_of(&yaml);
    assert!(s.warnings.is_empty(), "{:#?}", warnings_of(&s));
    let rx = route(&s, "shop.com", "/API/v2/items");
    assert!(rx.regex.is_some(), "case-insensitive regex");
    let captures = rx
        .regex
        .as_ref()
        .unwrap()
        .captures("/api/v2/items")
        .unwrap();
    assert_eq!(
        rx.policy
            .rewrite
            .as_ref()
            .unwrap()
            .apply(Some(&captures), None),
        "/items"
    );
    // The other Ingress of the host is matched as a regex too (`/static` as `^/static`).
    assert!(route(&s, "shop.com", "/STATICfiles").regex.is_some());

    let s = snapshot_of(
        &(service("web", 9001)
            + &annotated(
                "shop",
                "shop.com",
                &[("/(unclosed", "Prefix")],
                &[("use-regex", "true")],
            )),
    );
    let w = warnings_of(&s).join("\n");
    assert!(
        w.contains("use-regex") && w.contains("not a valid regular expression"),
        "{w}"
    );
    assert!(
        route(&s, "shop.com", "/(unclosed").regex.is_none(),
        "matched literally"
    );

    let s = snapshot_of(
        &(service("web", 9001)
            + &annotated(
                "shop",
                "shop.com",
                &[("/a/(.*)", "Prefix")],
                &[("rewrite-target", "/$2")],
            )),
    );
    let w = warnings_of(&s).join("\n");
    assert!(
        w.contains("uses $2 but path \"/a/(.*)\" has 1 capture group(s)"),
        "{w}"
    );
    assert!(
        route(&s, "shop.com", "/a/(.*)").policy.rewrite.is_none(),
        "a literal path now"
    );
    refused(
        &[("rewrite-target", "/$0")],
        "rewrite-target",
        "is not a capture",
    );
    refused(
        &[("use-regex", "1")],
        "use-regex",
        "must be \"true\" or \"false\"",
    );
}

#[test]
fn upstream_annotations_become_policy() {
    let p = |a: &[(&str, &str)]| {
        let s = with(a);
        assert!(s.warnings.is_empty(), "{:#?}", warnings_of(&s));
        let p = policy(&s);
        (
            p.protocol,
            p.connect_timeout,
            p.read_timeout,
            p.send_timeout,
            p.body_limit,
            p.retry.clone(),
            p.balance.clone(),
        )
    };
    assert_eq!(p(&[("backend-protocol", "GRPCS")]).0, Protocol::Grpcs);
    assert_eq!(p(&[("backend-protocol", "https")]).0, Protocol::Https);
    let timeouts = p(&[
        ("proxy-connect-timeout", "3"),
        ("proxy-read-timeout", "120"),
        ("proxy-send-timeout", "30"),
    ]);
    assert_eq!(
        (timeouts.1, timeouts.2, timeouts.3),
        (
            Some(Duration::from_secs(3)),
            Some(Duration::from_secs(120)),
            Some(Duration::from_secs(30))
        )
    );
    assert_eq!(p(&[("proxy-body-size", "8m")]).4, Some(8 << 20));
    assert_eq!(p(&[("proxy-body-size", "0")]).4, None, "0 is unlimited");
    let retry = p(&[
        ("proxy-next-upstream", "error http_502 non_idempotent"),
        ("proxy-next-upstream-tries", "5"),
    ])
    .5;
    assert!(retry.on_error && !retry.on_timeout && retry.non_idempotent);
    assert_eq!(
        (retry.on_status, retry.tries),
        (vec![StatusCode::BAD_GATEWAY], 5)
    );
    let off = p(&[("proxy-next-upstream", "off")]).5;
    assert!(!off.on_error && !off.on_timeout);
    assert_eq!(p(&[("load-balance", "ewma")]).6, Balance::Ewma);
    assert!(matches!(
        p(&[("upstream-hash-by", "$request_uri")]).6,
        Balance::Hash(_)
    ));
    let Balance::Cookie(affinity) = p(&[
        ("affinity", "cookie"),
        ("affinity-mode", "persistent"),
        ("session-cookie-name", "route"),
        ("session-cookie-max-age", "3600"),
        ("session-cookie-path", "/app"),
        ("session-cookie-samesite", "Strict"),
        ("upstream-hash-by", "$remote_addr"),
    ])
    .6
    else {
        panic!("affinity wins over upstream-hash-by");
    };
    assert_eq!(
        (
            affinity.cookie.as_str(),
            affinity.max_age,
            affinity.path.as_str(),
            affinity.same_site,
            affinity.mode
        ),
        (
            "route",
            Some(3600),
            "/app",
            Some("Strict"),
            AffinityMode::Persistent
        )
    );
}

#[test]
fn invalid_upstream_values_are_refused() {
    refused(
        &[("backend-protocol", "FCGI")],
        "backend-protocol",
        "not supported",
    );
    refused(
        &[("backend-protocol", "SMTP")],
        "backend-protocol",
        "must be HTTP, HTTPS, GRPC or GRPCS",
    );
    refused(
        &[("proxy-read-timeout", "60s")],
        "proxy-read-timeout",
        "must be a whole number",
    );
    refused(
        &[("proxy-connect-timeout", "0")],
        "proxy-connect-timeout",
        "between 1 and 3600",
    );
    refused(
        &[("proxy-send-timeout", "-1")],
        "proxy-send-timeout",
        "whole number",
    );
    refused(
        &[("proxy-body-size", "10x")],
        "proxy-body-size",
        "unit must be k, m or g",
    );
    refused(
        &[("proxy-body-size", "99999999g")],
        "proxy-body-size",
        "at most 1024g",
    );
    refused(
        &[("proxy-next-upstream", "error sometimes")],
        "proxy-next-upstream",
        "\"sometimes\" is not one of",
    );
    refused(
        &[("proxy-next-upstream", "off error")],
        "proxy-next-upstream",
        "cannot be combined",
    );
    refused(
        &[("proxy-next-upstream-tries", "many")],
        "proxy-next-upstream-tries",
        "whole number",
    );
    refused(
        &[("load-balance", "least_conn")],
        "load-balance",
        "round_robin or ewma",
    );
    refused(
        &[("upstream-hash-by", "$whatever")],
        "upstream-hash-by",
        "$whatever is not a variable",
    );
    refused(&[("affinity", "ip")], "affinity", "must be \"cookie\"");
    refused(
        &[("affinity", "cookie"), ("session-cookie-name", "a b")],
        "session-cookie-name",
        "not a cookie name",
    );
    refused(
        &[("affinity", "cookie"), ("session-cookie-samesite", "lax")],
        "session-cookie-samesite",
        "None, Lax or Strict",
    );
    refused(
        &[("session-cookie-name", "x")],
        "session-cookie-name",
        "no effect without affinity",
    );
    refused(
        &[("service-upstream", "True")],
        "service-upstream",
        "must be \"true\" or \"false\"",
    );
}

#[test]
fn access_annotations_become_policy_and_bad_ones_are_refused() {
    let s = with(&[
        ("whitelist-source-range", "10.0.0.0/8, 192.168.1.1"),
        ("denylist-source-range", "10.9.0.0/16"),
        ("limit-rps", "5"),
        ("limit-connections", "2"),
        ("enable-cors", "true"),
        ("cors-allow-origin", "https://app.example.com"),
        ("cors-allow-methods", "GET, POST"),
        ("cors-max-age", "60"),
    ]);
    assert!(s.warnings.is_empty(), "{:#?}", warnings_of(&s));
    let p = policy(&s);
    assert!(p.admits("10.1.2.3".parse().unwrap()));
    assert!(
        !p.admits("10.9.1.1".parse().unwrap()),
        "denied inside the allowed range"
    );
    assert!(!p.admits("172.16.0.1".parse().unwrap()));
    assert!(p.limits.is_some());
    let cors = p.cors.as_ref().unwrap();
    assert_eq!(
        (&cors.methods, cors.max_age, cors.credentials),
        (
            &crate::policy::cors::Tokens::Listed(hyper::header::HeaderValue::from_static(
                "GET, POST"
            )),
            60,
            true
        )
    );

    refused(
        &[("whitelist-source-range", "10.0.0.0/33")],
        "whitelist-source-range",
        "10.0.0.0/33",
    );
    refused(
        &[("denylist-source-range", "")],
        "denylist-source-range",
        "empty list",
    );
    refused(&[("limit-rps", "0")], "limit-rps", "between 1 and");
    refused(&[("limit-rpm", "ten")], "limit-rpm", "whole number");
    refused(
        &[("limit-connections", "1.5")],
        "limit-connections",
        "whole number",
    );
    refused(
        &[("limit-whitelist", "nope"), ("limit-rps", "1")],
        "limit-whitelist",
        "not an IP address",
    );
    refused(
        &[
            ("enable-cors", "true"),
            ("cors-allow-origin", "*.example.com"),
        ],
        "cors-allow-origin",
        "scheme://host",
    );
    refused(
        &[
            ("enable-cors", "true"),
            ("cors-allow-methods", "GET;rm -rf"),
        ],
        "cors-allow-methods",
        "is not a method or header name",
    );
    refused(
        &[("cors-allow-origin", "https://a.com")],
        "cors-allow-origin",
        "no effect without enable-cors",
    );
}

#[test]
fn snippets_and_unknown_annotations_are_never_applied() {
    let s = with(&[
        ("configuration-snippet", "more_set_headers \"X: y\";"),
        ("server-snippet", "location /x { return 200; }"),
        ("auth-snippet", "x"),
        ("auth-keepalive", "10"),
    ]);
    let w = warnings_of(&s).join("\n");
    for snippet in ["configuration-snippet", "server-snippet", "auth-snippet"] {
        assert!(
            w.contains(&format!(
                "{snippet}\"]: configuration snippets are never applied"
            )),
            "{w}"
        );
    }
    assert!(
        w.contains("auth-keepalive\"]: \"10\": this annotation is not supported"),
        "{w}"
    );
    assert_eq!(*policy(&s), RoutePolicyView::plain());
}

/// The parts of a policy that show whether anything was applied.
#[derive(Debug, PartialEq)]
struct RoutePolicyView {
    redirect: bool,
    rewrite: bool,
    cors: bool,
    limits: bool,
}

impl RoutePolicyView {
    fn plain() -> Self {
        Self {
            redirect: false,
            rewrite: false,
            cors: false,
            limits: false,
        }
    }
}

impl PartialEq<RoutePolicyView> for RoutePolicy {
    fn eq(&self, view: &RoutePolicyView) -> bool {
        self.redirect.is_some() == view.redirect
            && self.rewrite.is_some() == view.rewrite
            && self.cors.is_some() == view.cors
            && self.limits.is_some() == view.limits
            && self.protocol == Protocol::Http
            && self.balance == Balance::RoundRobin
    }
}

#[test]
fn canaries_attach_to_the_main_route_by_precedence() {
    let main = annotated("main", "shop.com", &[("/", "Prefix")], &[]);
    let canary = annotated(
        "beta",
        "shop.com",
        &[("/", "Prefix")],
        &[
            ("canary", "true"),
            ("canary-by-header", "x-beta"),
            ("canary-by-header-value", "yes"),
            ("canary-weight", "20"),
        ],
    );
    let yaml = service("web", 9001) + &main + &canary;
    let s = snapshot_of(&yaml);
    assert!(s.warnings.is_empty(), "{:#?}", warnings_of(&s));
    let canary = route(&s, "shop.com", "/")
        .canary
        .as_ref()
        .expect("attached");
    assert_eq!(
        (canary.weight, canary.total, &*canary.ingress),
        (20, 100, "default/beta")
    );
    assert_eq!(
        &*route(&s, "shop.com", "/").ingress,
        "default/main",
        "the main route stays"
    );

    let orphan = annotated(
        "beta",
        "other.com",
        &[("/", "Prefix")],
        &[("canary", "true"), ("canary-weight", "50")],
    );
    let s = snapshot_of(&(service("web", 9001) + &main + &orphan));
    let w = warnings_of(&s).join("\n");
    assert!(
        w.contains("no other Ingress serves host other.com path \"/\""),
        "{w}"
    );
    assert!(
        s.route("other.com", "/").is_none(),
        "a canary never serves on its own"
    );

    let over = annotated(
        "beta",
        "shop.com",
        &[("/", "Prefix")],
        &[("canary", "true"), ("canary-weight", "150")],
    );
    let s = snapshot_of(&(service("web", 9001) + &main + &over));
    let w = warnings_of(&s).join("\n");
    assert!(
        w.contains("canary-weight\"]: \"150\": must be a whole number from 0 to the total (100)"),
        "{w}"
    );
    let bad_pattern = annotated(
        "beta",
        "shop.com",
        &[("/", "Prefix")],
        &[
            ("canary", "true"),
            ("canary-by-header", "x"),
            ("canary-by-header-pattern", "("),
        ],
    );
    let s = snapshot_of(&(service("web", 9001) + &main + &bad_pattern));
    assert!(
        warnings_of(&s)
            .join("\n")
            .contains("canary-by-header-pattern\"]: \"(\": not a valid regular expression")
    );
    let stray = annotated(
        "shop",
        "shop.com",
        &[("/", "Prefix")],
        &[("canary-weight", "10")],
    );
    let s = snapshot_of(&(service("web", 9001) + &stray));
    assert!(
        warnings_of(&s)
            .join("\n")
            .contains("no effect without canary")
    );
}

#[test]
fn www_redirects_default_backends_and_service_upstream() {
    let s = with(&[("from-to-www-redirect", "true")]);
    assert_eq!(s.www_redirect("www.shop.com"), Some("shop.com"));
    assert_eq!(s.www_redirect("shop.com"), None);
    // Not when the other spelling is served by an Ingress of its own.
    let yaml = service("web", 9001)
        + &annotated(
            "shop",
            "shop.com",
            &[("/", "Prefix")],
            &[("from-to-www-redirect", "true")],
        )
        + &annotated("www", "www.shop.com", &[("/", "Prefix")], &[]);
    assert_eq!(snapshot_of(&yaml).www_redirect("www.shop.com"), None);

    let yaml = service("web", 9001)
        + &service("errors", 9002)
        + &annotated(
            "shop",
            "shop.com",
            &[("/", "Prefix")],
            &[("default-backend", "errors")],
        );
    let s = snapshot_of(&yaml);
    assert_eq!(policy(&s).fallback.as_ref().unwrap().service, "errors");
    refused(
        &[("default-backend", "nowhere")],
        "default-backend",
        "service default/nowhere not found",
    );

    let cluster = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.12, ports: [{name: http, port: 80}]}\n---\n";
    let s = snapshot_of(
        &(cluster.to_string()
            + &annotated(
                "shop",
                "shop.com",
                &[("/", "Prefix")],
                &[("service-upstream", "true")],
            )),
    );
    assert_eq!(
        route(&s, "shop.com", "/").backend.endpoints,
        vec!["10.96.0.12:80".parse().unwrap()]
    );
}

/// An Opaque Secret `name` of the default namespace with `data` (key, value), base64-encoded.
fn secret(name: &str, data: &[(&str, &str)]) -> String {
    use base64::Engine;
    let data: String = data
        .iter()
        .map(|(k, v)| {
            let v = base64::engine::general_purpose::STANDARD.encode(v);
            format!("  {k}: {v}\n")
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: Opaque\ndata:\n{data}---\n"
    )
}

/// `secret` in htpasswd's `{SHA}` form.
const HTPASSWD: &str = "ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n";

fn with_secret(secret_yaml: &str, annotations: &[(&str, &str)]) -> Snapshot {
    snapshot_of(
        &(service("web", 9001)
            + secret_yaml
            + &annotated("shop", "shop.com", &[("/", "Prefix")], annotations)),
    )
}

#[test]
fn auth_secrets_are_read_and_fail_closed() {
    let basic = [
        ("auth-type", "basic"),
        ("auth-secret", "users"),
        ("auth-realm", "Shop"),
    ];
    let s = with_secret(&secret("users", &[("auth", HTPASSWD)]), &basic);
    assert!(s.warnings.is_empty(), "{:#?}", warnings_of(&s));
    let p = policy(&s);
    assert!(p.closed.is_none());
    assert_eq!(
        p.basic_auth.as_ref().unwrap().challenge,
        "Basic realm=\"Shop\""
    );
    let map = [
        ("auth-type", "basic"),
        ("auth-secret", "default/users"),
        ("auth-secret-type", "auth-map"),
    ];
    let s = with_secret(
        &secret("users", &[("ann", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=")]),
        &map,
    );
    assert!(policy(&s).basic_auth.is_some(), "{:#?}", warnings_of(&s));

    // Each way the users cannot be known closes the route, with the Secret and the reason.
    let closed = |secret_yaml: &str, annotations: &[(&str, &str)], name: &str, reason: &str| {
        let s = with_secret(secret_yaml, annotations);
        let field = format!("metadata.annotations[\"nginx.ingress.kubernetes.io/{name}\"]");
        let warning = s.warnings.iter().find(|w| w.field == field);
        assert!(
            warning.is_some_and(|w| w.message.contains(reason) && w.message.contains("503")),
            "{name} {reason}: {:#?}",
            warnings_of(&s)
        );
        let p = policy(&s);
        assert!(p.closed.is_some() && p.basic_auth.is_none());
    };
    closed("", &basic, "auth-secret", "default/users not found");
    closed(
        &secret("users", &[("other", HTPASSWD)]),
        &basic,
        "auth-secret",
        "has no key \"auth\"",
    );
    closed(
        &secret("users", &[("auth", "ann:plaintext")]),
        &basic,
        "auth-secret",
        "line 1",
    );
    closed(
        &secret("users", &[("auth", "# nobody\n")]),
        &basic,
        "auth-secret",
        "has no user",
    );
    let elsewhere = [("auth-type", "basic"), ("auth-secret", "kube-system/users")];
    closed(
        &secret("users", &[("auth", HTPASSWD)]),
        &elsewhere,
        "auth-secret",
        "another namespace",
    );
    closed("", &[("auth-type", "basic")], "auth-secret", "is missing");
    closed("", &[("auth-type", "digest")], "auth-type", "not supported");
    closed(
        "",
        &[("auth-tls-secret", "default/ca")],
        "auth-tls-secret",
        "default/ca not found",
    );
    let ca = secret("ca", &[("ca.crt", "not a certificate")]);
    closed(
        &ca,
        &[("auth-tls-secret", "ca")],
        "auth-tls-secret",
        "ca.crt holds no certificate",
    );
    let tls = [
        ("auth-tls-secret", "ca"),
        ("auth-tls-verify-client", "sometimes"),
    ];
    closed(&ca, &tls, "auth-tls-verify-client", "must be on, optional");
    let cn = [("auth-tls-secret", "ca"), ("auth-tls-match-cn", "O=admins")];
    closed(&ca, &cn, "auth-tls-match-cn", "must start with \"CN=\"");
}

#[test]
fn external_auth_annotations_become_policy_and_fail_closed() {
    let s = with(&[
        (
            "auth-url",
            "http://oauth2-proxy.auth.svc.cluster.local:4180/oauth2/auth",
        ),
        ("auth-method", "GET"),
        (
            "auth-signin",
            "https://$host/oauth2/start?rd=$escaped_request_uri",
        ),
        (
            "auth-response-headers",
            "X-Auth-Request-User, X-Auth-Request-Email",
        ),
        ("auth-cache-key", "$cookie__oauth2_proxy"),
        ("auth-cache-duration", "200 1m"),
        ("auth-always-set-cookie", "true"),
    ]);
    assert!(s.warnings.is_empty(), "{:#?}", warnings_of(&s));
    let auth = policy(&s).external_auth.clone().unwrap();
    assert_eq!(
        (auth.url.host.as_str(), auth.url.port),
        ("oauth2-proxy.auth.svc.cluster.local", 4180)
    );
    assert_eq!(auth.method, Some(hyper::Method::GET));
    assert_eq!(auth.response_headers.len(), 2);
    assert!(auth.always_set_cookie && auth.cache.is_some());
    let signin = auth.signin.as_ref().unwrap();
    assert_eq!(
        signin.redirect_param, None,
        "the URL carries the request already"
    );
    let s = with(&[
        ("auth-url", "http://auth/"),
        ("auth-signin", "https://login.example.com/start"),
    ]);
    let auth = policy(&s).external_auth.clone().unwrap();
    assert_eq!(
        auth.signin.as_ref().unwrap().redirect_param.as_deref(),
        Some("rd")
    );

    let closes = |annotations: &[(&str, &str)], name: &str, reason: &str| {
        let s = refused(annotations, name, reason);
        assert!(policy(&s).closed.is_some(), "{name}: {annotations:?}");
    };
    closes(
        &[("auth-url", "ftp://auth/")],
        "auth-url",
        "http:// or https://",
    );
    closes(
        &[("auth-url", "https://$host/oauth2/auth")],
        "auth-url",
        "plain URL",
    );
    closes(
        &[("auth-url", "http://auth/\r\nX-Injected: 1")],
        "auth-url",
        "control character",
    );
    closes(
        &[
            ("auth-url", "http://auth/"),
            ("auth-response-headers", "X-User, X User"),
        ],
        "auth-response-headers",
        "not a header name",
    );
    closes(
        &[
            ("auth-url", "http://auth/"),
            ("auth-signin", "javascript:alert(1)"),
        ],
        "auth-signin",
        "http(s) URL",
    );
    closes(
        &[
            ("auth-url", "http://auth/"),
            ("auth-cache-key", "$remote_user"),
        ],
        "auth-cache-key",
        "$remote_user",
    );
    closes(
        &[("auth-url", "http://auth/"), ("auth-method", "get it")],
        "auth-method",
        "HTTP method",
    );
    let s = refused(
        &[("auth-signin", "https://login/")],
        "auth-signin",
        "no effect without auth-url",
    );
    assert!(policy(&s).closed.is_none() && policy(&s).external_auth.is_none());
}

#[test]
fn global_auth_applies_unless_an_ingress_opts_out_or_has_its_own() {
    let mut options = super::tests::options();
    options.global_auth = Some(ServiceUrl::parse("http://global-auth/check").unwrap());
    let yaml = service("web", 9001)
        + &annotated("shop", "shop.com", &[("/", "Prefix")], &[])
        + &annotated(
            "own",
            "own.com",
            &[("/", "Prefix")],
            &[("auth-url", "http://own-auth/")],
        )
        + &annotated(
            "out",
            "out.com",
            &[("/", "Prefix")],
            &[("enable-global-auth", "false")],
        );
    let s = super::translate(
        &super::tests::store_of(&yaml),
        &options,
        Vec::new(),
        &Snapshot::default(),
        std::time::SystemTime::now(),
    );
    let host = |h: &str| {
        route(&s, h, "/")
            .policy
            .external_auth
            .as_ref()
            .map(|a| a.url.host.clone())
    };
    assert_eq!(host("shop.com").as_deref(), Some("global-auth"));
    assert_eq!(host("own.com").as_deref(), Some("own-auth"));
    assert_eq!(host("out.com"), None);
}

#[test]
fn rate_limit_counters_survive_unrelated_changes() {
    let limited = annotated(
        "shop",
        "shop.com",
        &[("/", "Prefix")],
        &[("limit-rps", "5")],
    );
    let first = snapshot_of(&(service("web", 9001) + &limited));
    let previous_limits = policy(&first).limits.clone().unwrap();
    let next = super::translate(
        &super::tests::store_of(&(service("web", 9002) + &limited)),
        &super::tests::options(),
        Vec::new(),
        &first,
        std::time::SystemTime::now(),
    );
    assert!(std::sync::Arc::ptr_eq(
        policy(&next).limits.as_ref().unwrap(),
        &previous_limits
    ));
    let changed = annotated(
        "shop",
        "shop.com",
        &[("/", "Prefix")],
        &[("limit-rps", "9")],
    );
    let next = super::translate(
        &super::tests::store_of(&(service("web", 9001) + &changed)),
        &super::tests::options(),
        Vec::new(),
        &first,
        std::time::SystemTime::now(),
    );
    assert!(!std::sync::Arc::ptr_eq(
        policy(&next).limits.as_ref().unwrap(),
        &previous_limits
    ));
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::cidr::Cidr;
    use crate::policy::service_url::ServiceUrl;

    /// Annotations with values of every shape: the access rules, and some of the others.
    const NAMES: [&str; 8] = [
        "whitelist-source-range",
        "denylist-source-range",
        "auth-url",
        "rewrite-target",
        "proxy-body-size",
        "limit-rps",
        "cors-allow-origin",
        "permanent-redirect",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the values, translate answers; the other Ingress is untouched; an access
        /// rule that does not parse closes its route instead of leaving it open.
        #[test]
        fn any_annotation_values_translate_and_access_rules_fail_closed(
            values in proptest::collection::btree_map(0..NAMES.len(), "[ -~]{0,30}|\\PC{0,10}", 1..5),
        ) {
            let annotations: Vec<(&str, &str)> =
                values.iter().map(|(i, v)| (NAMES[*i], v.as_str())).collect();
            let yaml = service("web", 9001)
                + &annotated("shop", "shop.com", &[("/", "Prefix")], &annotations)
                + &annotated("other", "other.com", &[("/", "Prefix")], &[]);
            let snapshot = snapshot_of(&yaml);
            let other = route(&snapshot, "other.com", "/");
            prop_assert!(other.policy.closed.is_none());
            let value = |name: &str| annotations.iter().find(|(n, _)| *n == name).map(|(_, v)| v.trim());
            let unparsable = |name: &str| {
                value(name).is_some_and(|v| Cidr::parse_list(v).map_or(true, |l| l.is_empty()))
            };
            let must_close = unparsable("whitelist-source-range")
                || unparsable("denylist-source-range")
                || value("auth-url").is_some_and(|v| ServiceUrl::parse(v).is_err());
            if let Some(shop) = snapshot.route("shop.com", "/").and_then(|m| m.route) {
                prop_assert_eq!(shop.policy.closed.is_some(), must_close, "{:?}", annotations);
            }
        }
    }
}
