//! The Ingress rules of Kubernetes, one test per rule, written as the YAML a user would write.

use super::*;
use crate::source::manifest;

const CONTROLLER: &str = "xdp-gateway.io/ingress";

pub(super) fn options() -> TranslateOptions {
    TranslateOptions {
        classes: ClassSelector {
            class_name: "xdp-gateway".into(),
            controller: CONTROLLER.into(),
            serve_classless: false,
        },
        ..TranslateOptions::default()
    }
}

/// A Service `name` with port 80 named `http` and one ready endpoint 127.0.0.1:`target`.
pub(crate) fn service(name: &str, target: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abc
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {target}}}]
endpoints:
- addresses: [127.0.0.1]
---
"#
    )
}

/// The objects of `yaml` in a store, and the problems of the YAML itself.
fn parsed(yaml: &str) -> (Store, Vec<Warning>) {
    let (objects, warnings) = manifest::parse("test.yaml", yaml).expect("valid YAML");
    let mut store = Store::default();
    for object in objects {
        store.insert(Some("test.yaml".into()), object);
    }
    (store, warnings)
}

/// The objects of `yaml` in a store (the YAML must have no problems of its own).
pub(super) fn store_of(yaml: &str) -> Store {
    let (store, warnings) = parsed(yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    store
}

pub(crate) fn snapshot_of(yaml: &str) -> Snapshot {
    let (store, warnings) = parsed(yaml);
    translate(
        &store,
        &options(),
        warnings,
        &Snapshot::default(),
        SystemTime::now(),
    )
}

fn routed(snapshot: &Snapshot, host: &str, path: &str) -> Option<String> {
    snapshot
        .route(&crate::snapshot::normalize_host(host), path)
        .map(|m| m.backend.service.clone())
}

pub(super) fn warnings_of(snapshot: &Snapshot) -> Vec<String> {
    snapshot.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn exact_wildcard_and_hostless_rules() {
    let yaml = service("exact", 9001)
        + &service("wild", 9002)
        + &service("any", 9003)
        + r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: hosts}
spec:
  rules:
  - host: shop.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: exact, port: {number: 80}}}}]}
  - host: "*.example.com"
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: wild, port: {number: 80}}}}]}
  - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: any, port: {number: 80}}}}]}
"#;
    let s = snapshot_of(&yaml);
    assert!(s.warnings.is_empty(), "{:?}", warnings_of(&s));
    assert_eq!(routed(&s, "shop.example.com", "/").unwrap(), "exact");
    assert_eq!(routed(&s, "SHOP.Example.com:8080", "/x").unwrap(), "exact");
    assert_eq!(routed(&s, "blog.example.com", "/").unwrap(), "wild");
    assert_eq!(routed(&s, "a.blog.example.com", "/").unwrap(), "any");
    assert_eq!(routed(&s, "example.com", "/").unwrap(), "any");
    assert_eq!(routed(&s, "10.0.0.1", "/").unwrap(), "any");
    let backend = s.route("shop.example.com", "/").unwrap().backend;
    assert_eq!(backend.endpoints, vec!["127.0.0.1:9001".parse().unwrap()]);
}

#[test]
fn longest_path_wins_and_exact_beats_prefix() {
    let yaml = service("root", 1)
        + &service("api", 2)
        + &service("exact", 3)
        + &service("v1", 4)
        + r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: paths}
spec:
  rules:
  - host: a.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: root, port: {number: 80}}}}
      - {path: /api/, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /api, pathType: Exact, backend: {service: {name: exact, port: {number: 80}}}}
      - {path: /api/v1, pathType: ImplementationSpecific, backend: {service: {name: v1, port: {number: 80}}}}
"#;
    let s = snapshot_of(&yaml);
    assert!(s.warnings.is_empty(), "{:?}", warnings_of(&s));
    assert_eq!(routed(&s, "a.com", "/api").unwrap(), "exact");
    assert_eq!(routed(&s, "a.com", "/api/").unwrap(), "api");
    assert_eq!(routed(&s, "a.com", "/api/users").unwrap(), "api");
    assert_eq!(routed(&s, "a.com", "/api/v1").unwrap(), "v1");
    assert_eq!(routed(&s, "a.com", "/api/v1/x").unwrap(), "v1");
    assert_eq!(routed(&s, "a.com", "/api/v10").unwrap(), "api");
    assert_eq!(routed(&s, "a.com", "/apis").unwrap(), "root");
    assert_eq!(routed(&s, "a.com", "/").unwrap(), "root");
}

#[test]
fn bad_paths_are_left_out_with_a_warning_naming_the_field() {
    let yaml = service("web", 1)
        + r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  rules:
  - host: a.com
    http:
      paths:
      - {path: /ok, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: foo, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /x, pathType: Regex, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /y, backend: {service: {name: web, port: {number: 80}}}}
      - {pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /z, pathType: Prefix, backend: {resource: {kind: Bucket, name: b}}}
  - host: "Bad_Host.com"
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: 10.0.0.1
"#;
    let s = snapshot_of(&yaml);
    let w = warnings_of(&s);
    assert_eq!(w.len(), 7, "{w:#?}");
    assert_eq!(
        w[0],
        r#"ingress default/shop (test.yaml): spec.rules[0].http.paths[1].path: "foo": path must start with "/"; path ignored"#
    );
    assert!(
        w[1].contains("spec.rules[0].http.paths[2].pathType: \"Regex\""),
        "{}",
        w[1]
    );
    assert!(
        w[2].contains("spec.rules[0].http.paths[3].pathType: \"\""),
        "{}",
        w[2]
    );
    assert!(
        w[3].contains("paths[4].path: a path is required for pathType Exact"),
        "{}",
        w[3]
    );
    assert!(
        w[4].contains("paths[5].backend: resource backends are not supported"),
        "{}",
        w[4]
    );
    assert!(
        w[5].contains("spec.rules[1].host: \"Bad_Host.com\""),
        "{}",
        w[5]
    );
    assert!(
        w[6].contains("spec.rules[2].host: \"10.0.0.1\": host must be a DNS name"),
        "{}",
        w[6]
    );
    // The good path of the same Ingress is still served.
    assert_eq!(routed(&s, "a.com", "/ok").unwrap(), "web");
    assert_eq!(s.exact_hosts["a.com"].routes.len(), 1);
    assert_eq!(s.ingresses[0].warnings.len(), 7);
}

#[test]
fn missing_service_keeps_the_route_and_warns() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  rules:
  - host: a.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: gone, port: {number: 80}}}}]}
"#;
    let s = snapshot_of(yaml);
    let m = s.route("a.com", "/").unwrap();
    assert_eq!(m.backend.service, "gone");
    assert!(m.backend.endpoints.is_empty());
    assert!(
        warnings_of(&s)[0].contains(
            "spec.rules[0].http.paths[0].backend.service: service default/gone not found"
        ),
        "{:?}",
        warnings_of(&s)
    );
}

#[test]
fn ports_by_name_and_number_resolve_through_endpoint_slices() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 9000}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: multi-1, namespace: shop, labels: {kubernetes.io/service-name: multi}}
addressType: IPv4
ports: [{name: http, port: 18080}, {name: admin, port: 19000}]
endpoints:
- addresses: [10.0.0.1]
- addresses: [10.0.0.2]
  conditions: {ready: true}
- addresses: [10.0.0.3]
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: multi-2, namespace: shop, labels: {kubernetes.io/service-name: multi}}
addressType: IPv6
ports: [{name: http, port: 18080}]
endpoints:
- addresses: ["fd00::1"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other, namespace: default, labels: {kubernetes.io/service-name: multi}}
addressType: IPv4
ports: [{name: http, port: 1}]
endpoints:
- addresses: [10.9.9.9]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: multi, namespace: shop}
spec:
  rules:
  - host: a.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: multi, port: {number: 80}}}}
      - {path: /admin, pathType: Prefix, backend: {service: {name: multi, port: {name: admin}}}}
      - {path: /nope, pathType: Prefix, backend: {service: {name: multi, port: {name: nope}}}}
"#;
    let s = snapshot_of(yaml);
    let web = s.route("a.com", "/").unwrap().backend;
    let expected: Vec<std::net::SocketAddr> = vec![
        "10.0.0.1:18080".parse().unwrap(),
        "10.0.0.2:18080".parse().unwrap(),
        "[fd00::1]:18080".parse().unwrap(),
    ];
    assert_eq!(web.endpoints, expected);
    let admin = s.route("a.com", "/admin").unwrap().backend;
    assert_eq!(
        admin.endpoints,
        vec![
            "10.0.0.1:19000".parse().unwrap(),
            "10.0.0.2:19000".parse().unwrap()
        ]
    );
    assert!(
        s.route("a.com", "/nope")
            .unwrap()
            .backend
            .endpoints
            .is_empty()
    );
    let w = warnings_of(&s);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("paths[2].backend.service: service shop/multi has no port nope"),
        "{}",
        w[0]
    );
}

#[test]
fn same_service_port_shares_one_backend() {
    let yaml = service("web", 1)
        + r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: twice}
spec:
  rules:
  - host: a.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: b.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}]}
"#;
    let s = snapshot_of(&yaml);
    let a = s.route("a.com", "/").unwrap().backend;
    let b = s.route("b.com", "/").unwrap().backend;
    assert!(Arc::ptr_eq(
        a,
        &s.route("a.com", "/x").unwrap().backend.clone()
    ));
    assert_eq!(a.endpoints, b.endpoints);
}

fn ingress(name: &str, created: &str, host: &str, path: &str, service: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, creationTimestamp: "{created}"}}
spec:
  rules:
  - host: {host}
    http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}
---
"#
    )
}

#[test]
fn ingresses_for_one_host_merge_and_the_oldest_wins_a_conflict() {
    let yaml = service("old", 1)
        + &service("new", 2)
        + &service("extra", 3)
        + &ingress("young", "2024-05-01T00:00:00Z", "a.com", "/", "new")
        + &ingress("elder", "2023-01-01T00:00:00Z", "a.com", "/", "old")
        + &ingress("more", "2025-01-01T00:00:00Z", "a.com", "/extra", "extra");
    let s = snapshot_of(&yaml);
    assert_eq!(routed(&s, "a.com", "/").unwrap(), "old");
    assert_eq!(routed(&s, "a.com", "/extra/1").unwrap(), "extra");
    let w = warnings_of(&s);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("ingress default/young (test.yaml): spec.rules[0].http.paths[0]: host a.com path \"/\" (Prefix) is already routed by the older ingress default/elder"),
        "{}",
        w[0]
    );
    // Same age: namespace/name order decides.
    let tie = service("x", 1)
        + &service("y", 2)
        + &ingress("bbb", "2023-01-01T00:00:00Z", "t.com", "/", "y")
        + &ingress("aaa", "2023-01-01T00:00:00Z", "t.com", "/", "x");
    assert_eq!(routed(&snapshot_of(&tie), "t.com", "/").unwrap(), "x");
}

#[test]
fn default_backends() {
    let yaml = service("fallback", 1)
        + &service("shop-default", 2)
        + &service("web", 3)
        + r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: catch-all, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  defaultBackend: {service: {name: shop-default, port: {number: 80}}}
  rules:
  - host: shop.com
    http: {paths: [{path: /api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: late, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
"#;
    let s = snapshot_of(&yaml);
    assert_eq!(routed(&s, "shop.com", "/api").unwrap(), "web");
    assert_eq!(routed(&s, "shop.com", "/other").unwrap(), "shop-default");
    assert_eq!(routed(&s, "unknown.com", "/").unwrap(), "fallback");
    let w = warnings_of(&s);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("ingress default/late") && w[0].contains("spec.defaultBackend"));
    // Without any default backend, nothing matches.
    let bare = service("web", 3) + &ingress("i", "2023-01-01T00:00:00Z", "a.com", "/api", "web");
    assert!(snapshot_of(&bare).route("a.com", "/other").is_none());
}

fn class(name: &str, controller: &str, default: bool) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: {name}
  annotations: {{ingressclass.kubernetes.io/is-default-class: "{default}"}}
spec: {{controller: {controller}}}
---
"#
    )
}

fn classed(name: &str, class: Option<&str>) -> String {
    let class = class.map_or(String::new(), |c| format!("ingressClassName: {c}"));
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  {class}
  rules:
  - host: {name}.com
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
---
"#
    )
}

fn served(s: &Snapshot) -> Vec<(String, bool)> {
    s.ingresses
        .iter()
        .map(|i| (i.name.clone(), i.served))
        .collect()
}

#[test]
fn ingress_class_selection() {
    let objects = service("web", 1)
        + &classed("mine", Some("xdp"))
        + &classed("theirs", Some("nginx"))
        + &classed("classless", None)
        + &classed("phantom", Some("ghost"));
    // No IngressClass at all: class-less Ingresses are served, and so is our own class name.
    let s = snapshot_of(&(objects.clone() + &classed("named", Some("xdp-gateway"))));
    assert_eq!(
        served(&s),
        vec![
            ("classless".into(), true),
            ("mine".into(), false),
            ("named".into(), true),
            ("phantom".into(), false),
            ("theirs".into(), false)
        ]
    );
    // Classes exist: ours is served, theirs ignored, class-less only if ours is the default.
    let with_classes = objects.clone()
        + &class("xdp", CONTROLLER, false)
        + &class("nginx", "k8s.io/ingress-nginx", true);
    let s = snapshot_of(&with_classes);
    let by_name: std::collections::HashMap<_, _> = served(&s).into_iter().collect();
    assert!(by_name["mine"]);
    assert!(!by_name["theirs"]);
    assert!(!by_name["classless"]);
    assert!(!by_name["phantom"]);
    assert!(s.route("theirs.com", "/").is_none());
    let reason = s
        .ingresses
        .iter()
        .find(|i| i.name == "theirs")
        .unwrap()
        .reason
        .clone()
        .unwrap();
    assert!(reason.contains("k8s.io/ingress-nginx"), "{reason}");

    let with_default = objects + &class("xdp", CONTROLLER, true);
    let s = snapshot_of(&with_default);
    let by_name: std::collections::HashMap<_, _> = served(&s).into_iter().collect();
    assert!(by_name["classless"]);
    assert!(by_name["mine"]);
    assert!(!by_name["theirs"]);
}

#[test]
fn legacy_class_annotation_is_honoured() {
    let yaml = service("web", 1)
        + &class("xdp", CONTROLLER, false)
        + r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: annotated
  annotations: {kubernetes.io/ingress.class: xdp}
spec:
  rules:
  - host: a.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"#;
    assert_eq!(routed(&snapshot_of(&yaml), "a.com", "/").unwrap(), "web");
}

#[test]
fn translation_is_deterministic() {
    let yaml = service("a", 1)
        + &service("b", 2)
        + &ingress("x", "2023-01-01T00:00:00Z", "h.com", "/", "a")
        + &ingress("y", "2023-01-01T00:00:00Z", "h.com", "/", "b");
    let first = warnings_of(&snapshot_of(&yaml));
    for _ in 0..5 {
        assert_eq!(warnings_of(&snapshot_of(&yaml)), first);
    }
}

/// A `kubernetes.io/tls` Secret for `names`, signed by itself, with its PEM under stringData.
fn tls_secret(namespace: &str, name: &str, names: &[&str]) -> String {
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    secret_yaml(
        namespace,
        name,
        &generated.cert.pem(),
        &generated.signing_key.serialize_pem(),
    )
}

fn secret_yaml(namespace: &str, name: &str, cert: &str, key: &str) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(cert),
        indent(key)
    )
}

fn tls_ingress(name: &str, hosts: &[&str], secret: &str, annotations: &str) -> String {
    let rules: String = hosts
        .iter()
        .map(|h| {
            format!(
                "  - host: \"{h}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
            )
        })
        .collect();
    let listed: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{{annotations}}}\nspec:\n  tls:\n  - hosts: [{}]\n    secretName: {secret}\n  rules:\n{rules}---\n",
        listed.join(", ")
    )
}

fn snapshot_after(yaml: &str, previous: &Snapshot) -> Snapshot {
    let (objects, warnings) = manifest::parse("test.yaml", yaml).expect("valid YAML");
    let mut store = Store::default();
    for object in objects {
        store.insert(Some("test.yaml".into()), object);
    }
    translate(&store, &options(), warnings, previous, SystemTime::now())
}

#[test]
fn certificates_come_from_secrets_of_the_same_namespace() {
    let yaml = service("web", 1)
        + &tls_secret("default", "shop-tls", &["shop.com"])
        + &tls_secret("default", "wild-tls", &["*.apps.com"])
        + &tls_secret("other", "stolen", &["steal.com"])
        + &tls_ingress("shop", &["shop.com"], "shop-tls", "")
        + &tls_ingress("wild", &["*.apps.com"], "wild-tls", "")
        + &tls_ingress("thief", &["steal.com"], "other/stolen", "");
    let s = snapshot_of(&yaml);
    let shop = s
        .certificates
        .lookup("shop.com")
        .expect("shop.com has a certificate");
    assert_eq!(shop.names, vec!["shop.com"]);
    assert_eq!(
        s.certificates.lookup("a.apps.com").unwrap().names,
        vec!["*.apps.com"]
    );
    assert!(s.certificates.lookup("steal.com").is_none());
    let w = warnings_of(&s);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with("ingress default/thief (test.yaml): spec.tls[0].secretName: \"other/stolen\": a Secret in another namespace is never used"),
        "{}",
        w[0]
    );
    // Hosts under spec.tls redirect plain HTTP; others do not.
    assert!(s.route("shop.com", "/").unwrap().https_redirect);
    assert!(s.route("x.apps.com", "/").unwrap().tls_host);
}

#[test]
fn a_certificate_must_cover_its_hosts() {
    let yaml = service("web", 1)
        + &tls_secret("default", "narrow", &["a.com"])
        + &tls_ingress("two", &["a.com", "b.com"], "narrow", "");
    let s = snapshot_of(&yaml);
    assert!(s.certificates.lookup("a.com").is_some());
    assert!(s.certificates.lookup("b.com").is_none());
    let w = warnings_of(&s);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].contains("spec.tls[0].hosts[1]: the certificate of secret default/narrow does not cover b.com (it names a.com); b.com gets the default certificate"), "{}", w[0]);
    // b.com still has TLS (default certificate) and redirects.
    assert!(s.route("b.com", "/").unwrap().https_redirect);
}

#[test]
fn broken_or_missing_secrets_warn_and_a_broken_one_keeps_its_last_certificate() {
    let good = service("web", 1)
        + &tls_secret("default", "shop-tls", &["shop.com"])
        + &tls_ingress("shop", &["shop.com"], "shop-tls", "")
        + &tls_ingress("ghost", &["ghost.com"], "no-such-secret", "");
    let first = snapshot_of(&good);
    let w = warnings_of(&first);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].contains("spec.tls[0].secretName: secret default/no-such-secret: not found; its hosts get the default certificate"), "{}", w[0]);

    // The same objects again: the certificate is reused, not parsed again.
    let again = snapshot_after(&good, &first);
    assert!(Arc::ptr_eq(
        again.certificates.lookup("shop.com").unwrap(),
        first.certificates.lookup("shop.com").unwrap()
    ));

    // A key that does not match: the previous certificate keeps serving.
    let other = rcgen::generate_simple_self_signed(vec!["shop.com".to_string()]).unwrap();
    let mismatched = rcgen::generate_simple_self_signed(vec!["x.com".to_string()]).unwrap();
    let broken = service("web", 1)
        + &secret_yaml(
            "default",
            "shop-tls",
            &other.cert.pem(),
            &mismatched.signing_key.serialize_pem(),
        )
        + &tls_ingress("shop", &["shop.com"], "shop-tls", "");
    let after = snapshot_after(&broken, &first);
    assert!(Arc::ptr_eq(
        after.certificates.lookup("shop.com").unwrap(),
        first.certificates.lookup("shop.com").unwrap()
    ));
    let w = warnings_of(&after);
    assert!(w[0].contains("secret default/shop-tls: tls.key does not belong to the certificate in tls.crt; keeping the certificate it held before"), "{w:#?}");
    // Without a previous certificate, the host falls back to the default one.
    let fresh = snapshot_after(&broken, &Snapshot::default());
    assert!(fresh.certificates.lookup("shop.com").is_none());
    assert!(warnings_of(&fresh)[0].contains("its hosts get the default certificate"));
}

#[test]
fn redirect_annotations() {
    let yaml = service("web", 1)
        + &tls_secret("default", "tls", &["*.a.com"])
        + &tls_ingress("plain-allowed", &["x.a.com"], "tls", "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"")
        + &tls_ingress("typo", &["y.a.com"], "tls", "nginx.ingress.kubernetes.io/ssl-redirect: \"no\"")
        + &ingress("forced", "2023-01-01T00:00:00Z", "forced.com", "/", "web").replace(
            "metadata: {name: forced,",
            "metadata: {annotations: {nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"}, name: forced,",
        )
        + &ingress("plain", "2023-01-01T00:00:00Z", "plain.com", "/", "web");
    let s = snapshot_of(&yaml);
    assert!(!s.route("x.a.com", "/").unwrap().https_redirect);
    assert!(s.route("y.a.com", "/").unwrap().https_redirect);
    assert!(s.route("forced.com", "/").unwrap().https_redirect);
    assert!(!s.route("forced.com", "/").unwrap().tls_host);
    assert!(!s.route("plain.com", "/").unwrap().https_redirect);
    let w = warnings_of(&s);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].contains(r#"metadata.annotations["nginx.ingress.kubernetes.io/ssl-redirect"]: "no": must be "true" or "false""#), "{}", w[0]);
}
