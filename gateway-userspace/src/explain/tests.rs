//! One test per kind of decision, on snapshots translated from the YAML a user would write.

use super::*;
use crate::bpf::plan::SynBudget;
use crate::cidr::Cidr;
use crate::translate::tests::{service, snapshot_of};

fn place() -> Place {
    Place {
        listeners: Listeners {
            http: "127.0.0.1:8080".parse().unwrap(),
            https: "127.0.0.1:8443".parse().unwrap(),
        },
        fast_path: FastPathConfig::default(),
        https_redirect_port: 8443,
    }
}

/// An Ingress of class xdp-gateway with `annotations` and rules `(host, path, type, service)`.
fn ingress(name: &str, annotations: &str, rules: &[(&str, &str, &str, &str)]) -> String {
    let rules: String = rules
        .iter()
        .map(|(host, path, path_type, service)| {
            let host = match *host {
                "" => String::new(),
                host => format!("host: \"{host}\", "),
            };
            format!(
                "  - {{{host}http: {{paths: [{{path: \"{path}\", pathType: {path_type}, backend: \
                 {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  \
         namespace: default\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: \
         xdp-gateway\n  rules:\n{rules}---\n"
    )
}

fn ask(snapshot: &Snapshot, url: &str, headers: &[&str], from: Option<&str>) -> Explanation {
    ask_at(snapshot, &place(), url, "GET", headers, from)
}

fn ask_at(
    snapshot: &Snapshot,
    place: &Place,
    url: &str,
    method: &str,
    headers: &[&str],
    from: Option<&str>,
) -> Explanation {
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let question = Question::new(url, method, &headers, from).expect("a valid question");
    explain(snapshot, place, &question)
}

/// The steps of one stage, as (verdict, subject).
fn steps(explanation: &Explanation, stage: Stage) -> Vec<(Verdict, String)> {
    explanation
        .steps
        .iter()
        .filter(|s| s.stage == stage)
        .map(|s| (s.verdict, s.subject.clone()))
        .collect()
}

fn reason(explanation: &Explanation, stage: Stage, verdict: Verdict) -> String {
    explanation
        .steps
        .iter()
        .find(|s| s.stage == stage && s.verdict == verdict)
        .map(|s| s.reason.clone())
        .unwrap_or_else(|| panic!("no {stage:?} step {verdict:?} in\n{explanation}"))
}

#[test]
fn the_longest_path_wins_and_the_others_say_why_they_lost() {
    let snapshot = snapshot_of(
        &(service("api", 9001)
            + &service("web", 9002)
            + &service("v2", 9003)
            + &ingress(
                "shop",
                "",
                &[
                    ("shop.test", "/", "Prefix", "web"),
                    ("shop.test", "/api", "Prefix", "api"),
                    ("shop.test", "/api/v2", "Exact", "v2"),
                ],
            )),
    );
    let explanation = ask(&snapshot, "http://shop.test:8080/api/v2/x", &[], None);
    let rules = steps(&explanation, Stage::Rule);
    assert_eq!(
        rules,
        [
            (
                Verdict::NoMatch,
                "Ingress default/shop: shop.test/api/v2 (Exact)".into()
            ),
            (
                Verdict::Chosen,
                "Ingress default/shop: shop.test/api (Prefix)".into()
            ),
            (
                Verdict::Lost,
                "Ingress default/shop: shop.test/ (Prefix)".into()
            ),
        ],
        "{explanation}"
    );
    assert!(
        reason(&explanation, Stage::Rule, Verdict::Lost).contains("the longer path /api wins"),
        "{explanation}"
    );
    assert!(reason(&explanation, Stage::Rule, Verdict::NoMatch).contains("is not exactly"));
    assert_eq!(
        explanation.outcome.backend.as_deref(),
        Some("default/api:80")
    );
    assert_eq!(
        explanation.outcome.endpoint,
        Some("127.0.0.1:9001".parse().unwrap())
    );
    assert_eq!(
        explanation.outcome.route.as_deref(),
        Some("Ingress default/shop")
    );
    let text = explanation.to_string();
    assert!(
        text.contains("lost") && text.ends_with("as /api/v2/x"),
        "{text}"
    );

    let mismatched = ask(&snapshot, "http://shop.test:8443/api", &[], None);
    assert_eq!(
        steps(&mismatched, Stage::Listener)[1],
        (Verdict::Note, "http on a https listener".into()),
        "{mismatched}"
    );

    let exact = ask(&snapshot, "http://shop.test:8080/api/v2", &[], None);
    assert_eq!(exact.outcome.backend.as_deref(), Some("default/v2:80"));
    assert!(
        reason(&exact, Stage::Rule, Verdict::Lost).contains("the longer path /api/v2 wins"),
        "{exact}"
    );
}

#[test]
fn the_most_specific_host_is_tried_alone_and_a_path_outside_it_is_not_found() {
    let snapshot = snapshot_of(
        &(service("exact", 9001)
            + &service("wild", 9002)
            + &service("any", 9003)
            + &ingress(
                "hosts",
                "",
                &[
                    ("a.example.com", "/only", "Prefix", "exact"),
                    ("*.example.com", "/", "Prefix", "wild"),
                    ("", "/", "Prefix", "any"),
                ],
            )),
    );
    let explanation = ask(&snapshot, "http://a.example.com:8080/other", &[], None);
    assert_eq!(
        steps(&explanation, Stage::Host),
        [
            (Verdict::Chosen, "a.example.com".into()),
            (Verdict::NotTried, "*.example.com".into()),
            (Verdict::NotTried, "*".into()),
        ],
        "{explanation}"
    );
    assert_eq!(explanation.outcome.status, Some(404), "{explanation}");

    let wildcard = ask(&snapshot, "http://b.example.com:8080/", &[], None);
    assert!(
        reason(&wildcard, Stage::Host, Verdict::Chosen).contains("wildcard"),
        "{wildcard}"
    );
    assert_eq!(wildcard.outcome.backend.as_deref(), Some("default/wild:80"));
    // A wildcard covers one label only.
    let deep = ask(&snapshot, "http://x.b.example.com:8080/", &[], None);
    assert_eq!(deep.outcome.backend.as_deref(), Some("default/any:80"));
    // The Host header routes, as with curl.
    let by_header = ask(
        &snapshot,
        "http://127.0.0.1:8080/only",
        &["Host: a.example.com"],
        None,
    );
    assert_eq!(
        by_header.outcome.backend.as_deref(),
        Some("default/exact:80")
    );
}

#[test]
fn the_canary_decision_names_its_inputs() {
    let snapshot = snapshot_of(
        &(service("main", 9001)
            + &service("beta", 9002)
            + &ingress("main", "", &[("c.test", "/", "Prefix", "main")])
            + &ingress(
                "beta",
                "nginx.ingress.kubernetes.io/canary: \"true\", \
                 nginx.ingress.kubernetes.io/canary-by-header: x-beta, \
                 nginx.ingress.kubernetes.io/canary-weight: \"10\"",
                &[("c.test", "/", "Prefix", "beta")],
            )),
    );
    let asked = ask(&snapshot, "http://c.test:8080/", &["x-beta: always"], None);
    assert_eq!(
        steps(&asked, Stage::Canary),
        [(
            Verdict::Chosen,
            "Ingress default/beta (default/beta:80)".into()
        )],
        "{asked}"
    );
    assert!(reason(&asked, Stage::Canary, Verdict::Chosen).contains("canary-by-header x-beta"));
    assert_eq!(asked.outcome.backend.as_deref(), Some("default/beta:80"));

    let never = ask(&snapshot, "http://c.test:8080/", &["x-beta: never"], None);
    assert_eq!(never.outcome.backend.as_deref(), Some("default/main:80"));
    let weighted = ask(&snapshot, "http://c.test:8080/", &[], None);
    assert!(
        reason(&weighted, Stage::Canary, Verdict::Lost).contains("10 of 100 requests"),
        "{weighted}"
    );
}

#[test]
fn policy_steps_rewrite_refuse_and_redirect() {
    let snapshot = snapshot_of(
        &(service("app", 9001)
            + &ingress(
                "rewrite",
                "nginx.ingress.kubernetes.io/rewrite-target: /$2, \
                 nginx.ingress.kubernetes.io/use-regex: \"true\"",
                &[("r.test", "/app(/|$)(.*)", "ImplementationSpecific", "app")],
            )
            + &ingress(
                "office",
                "nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8",
                &[("o.test", "/", "Prefix", "app")],
            )
            + &ingress(
                "moved",
                "nginx.ingress.kubernetes.io/permanent-redirect: https://example.org/new",
                &[("m.test", "/", "Prefix", "app")],
            )),
    );
    let rewritten = ask(&snapshot, "http://r.test:8080/app/items?id=3", &[], None);
    assert_eq!(
        rewritten.outcome.upstream_target.as_deref(),
        Some("/items?id=3"),
        "{rewritten}"
    );
    assert!(
        reason(&rewritten, Stage::Rule, Verdict::Chosen).contains("regular expression"),
        "{rewritten}"
    );

    let outsider = ask(&snapshot, "http://o.test:8080/", &[], Some("192.0.2.1"));
    assert_eq!(outsider.outcome.status, Some(403), "{outsider}");
    assert!(reason(&outsider, Stage::Policy, Verdict::Answers).contains("10.0.0.0/8"));
    let insider = ask(&snapshot, "http://o.test:8080/", &[], Some("10.1.2.3"));
    assert_eq!(insider.outcome.status, None, "{insider}");
    let unknown = ask(&snapshot, "http://o.test:8080/", &[], None);
    assert!(reason(&unknown, Stage::Policy, Verdict::Note).contains("--from"));

    let moved = ask(&snapshot, "http://m.test:8080/x", &[], None);
    assert_eq!(moved.outcome.status, Some(301), "{moved}");
    assert!(moved.outcome.summary.contains("https://example.org/new"));

    let bad = ask(&snapshot, "http://m.test:8080/%zz", &[], None);
    assert_eq!(bad.outcome.status, Some(400), "{bad}");
    let dotted = ask(&snapshot, "http://r.test:8080/x/../app/a", &[], None);
    assert_eq!(
        steps(&dotted, Stage::Path),
        [(Verdict::Applies, "/x/../app/a".into())]
    );
    assert_eq!(dotted.outcome.upstream_target.as_deref(), Some("/a"));
}

#[test]
fn the_endpoint_of_a_hash_key_is_the_one_the_proxy_picks() {
    let yaml = service("app", 9001).replace(
        "- addresses: [127.0.0.1]",
        "- addresses: [127.0.0.1]\n- addresses: [127.0.0.2]\n- addresses: [127.0.0.3]",
    ) + &ingress(
        "hashed",
        "nginx.ingress.kubernetes.io/upstream-hash-by: \"$http_x_user\"",
        &[("h.test", "/", "Prefix", "app")],
    );
    let snapshot = snapshot_of(&yaml);
    let found = snapshot.route("h.test", "/").unwrap();
    let policy = &found.route.unwrap().policy;
    for user in ["ann", "bob", "cyd", "dee"] {
        let explanation = ask(
            &snapshot,
            "http://h.test:8080/",
            &[&format!("x-user: {user}")],
            None,
        );
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-user", user.parse().unwrap());
        let uri: hyper::Uri = "/".parse().unwrap();
        let view = RequestView {
            method: &hyper::Method::GET,
            uri: &uri,
            host: "h.test",
            client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            scheme: "http",
            headers: &headers,
        };
        let picked = policy.balance.pick(found.backend, &view).unwrap().endpoint;
        assert_eq!(explanation.outcome.endpoint, Some(picked), "{explanation}");
        assert!(reason(&explanation, Stage::Endpoint, Verdict::Chosen).contains(user));
    }
}

#[test]
fn the_fast_path_step_says_which_allow_list_entry_admits_or_drops() {
    let snapshot = snapshot_of(
        &(service("app", 9001) + &ingress("app", "", &[("v.test", "/", "Prefix", "app")])),
    );
    let mut place = place();
    place.fast_path = FastPathConfig {
        vips: vec!["192.0.2.10:80=http".parse().unwrap()],
        allow_source: Some(vec![
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            "172.16.0.0/12".parse().unwrap(),
        ]),
        syn_budget: Some(SynBudget {
            rate: 100,
            burst: 200,
        }),
        http3: false,
    };
    let url = "http://192.0.2.10/";
    let dropped = ask_at(
        &snapshot,
        &place,
        url,
        "GET",
        &["Host: v.test"],
        Some("192.0.2.99"),
    );
    assert_eq!(
        steps(&dropped, Stage::FastPath),
        [(Verdict::Drops, "http 192.0.2.10:80".into())],
        "{dropped}"
    );
    assert_eq!(dropped.outcome.status, None);
    assert!(
        dropped
            .outcome
            .summary
            .contains("dropped by the XDP program")
    );
    assert!(steps(&dropped, Stage::Rule).is_empty());

    let admitted = ask_at(
        &snapshot,
        &place,
        url,
        "GET",
        &["Host: v.test"],
        Some("172.20.1.1"),
    );
    assert!(
        reason(&admitted, Stage::FastPath, Verdict::Applies).contains("entry 172.16.0.0/12"),
        "{admitted}"
    );
    assert!(reason(&admitted, Stage::FastPath, Verdict::Note).contains("100 new connections"));
    assert_eq!(admitted.outcome.backend.as_deref(), Some("default/app:80"));

    let elsewhere = ask(&snapshot, "http://v.test:8080/", &[], Some("192.0.2.99"));
    assert_eq!(
        steps(&elsewhere, Stage::FastPath),
        [(Verdict::Note, "port 8080".into())]
    );
}

#[test]
fn gateway_api_matches_fall_through_to_less_specific_hosts() {
    let snapshot = snapshot_of(
        &(service("beta", 9001)
            + &service("stable", 9002)
            + &service("wild", 9003)
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: \
               ours}\nspec: {controllerName: xdp-gateway.io/gateway-controller}\n---\n\
               apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, \
               namespace: default}\nspec:\n  gatewayClassName: ours\n  listeners: [{name: web, \
               port: 8081, protocol: HTTP}]\n---\n\
               apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: app, \
               namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  hostnames: \
               [app.example.com]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: \
               /}, headers: [{name: x-env, value: beta}]}]\n    backendRefs: [{name: beta, \
               port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /v1}}]\n    \
               backendRefs: [{name: stable, port: 80}]\n---\n\
               apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: \
               wild, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  hostnames: \
               [\"*.example.com\"]\n  rules:\n  - backendRefs: [{name: wild, port: 80}]\n---\n"),
    );
    let url = "http://127.0.0.1:8081/x";
    let host = "Host: app.example.com";
    let beta = ask(&snapshot, url, &[host, "x-env: beta"], None);
    assert_eq!(
        steps(&beta, Stage::Listener),
        [(Verdict::Chosen, "Gateway listener 127.0.0.1:8081".into())],
        "{beta}"
    );
    assert_eq!(
        beta.outcome.backend.as_deref(),
        Some("default/beta:80"),
        "{beta}"
    );
    assert!(reason(&beta, Stage::Rule, Verdict::Chosen).contains("header x-env = \"beta\""));

    let other = ask(&snapshot, url, &[host], None);
    assert_eq!(
        steps(&other, Stage::Host),
        [
            (Verdict::NoMatch, "app.example.com".into()),
            (Verdict::Chosen, "*.example.com".into()),
        ],
        "{other}"
    );
    assert!(
        other
            .to_string()
            .contains("the path matches, but header x-env = \"beta\" does not hold"),
        "{other}"
    );
    assert_eq!(other.outcome.backend.as_deref(), Some("default/wild:80"));
    assert_eq!(
        other.outcome.route.as_deref(),
        Some("HTTPRoute default/wild")
    );
}

#[test]
fn questions_are_checked_like_curl_arguments() {
    for (url, method, header, from) in [
        ("shop.test/x", "GET", "a: b", None),
        ("ftp://shop.test/x", "GET", "a: b", None),
        ("http://shop.test/x", "G ET", "a: b", None),
        ("http://shop.test/x", "GET", "no colon", None),
        ("http://shop.test/x", "GET", "a: b", Some("not-an-ip")),
    ] {
        assert!(
            Question::new(url, method, &[header.to_string()], from).is_err(),
            "{url} {method} {header} {from:?}"
        );
    }
    let question = Question::new("https://[::1]/a?b=c", "POST", &[], Some("10.0.0.1")).unwrap();
    assert_eq!(question.port, 443);
    assert_eq!(question.address, Some("::1".parse().unwrap()));
    assert_eq!(
        question.to_string(),
        "POST https://[::1]/a?b=c from 10.0.0.1"
    );
}
