//! `gateway explain` end to end: the real binary over the bundled example, and a running
//! gateway's `/explain`, whose named endpoint is the one that then serves the request.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use gateway_e2e::backend::Backend;
use gateway_e2e::client::HttpClient;
use gateway_e2e::gateway::{Gateway, binary};
use gateway_e2e::manifests::{ManifestsDir, annotated_ingress, service};
use hyper::Request;
use serde_json::Value;

fn explain(args: &[&str]) -> Value {
    let output = Command::new(binary("gateway"))
        .arg("explain")
        .args(args)
        .arg("--json")
        .output()
        .expect("run gateway explain");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("gateway explain --json prints JSON")
}

/// The step of `stage` with `verdict`.
fn step<'a>(explanation: &'a Value, stage: &str, verdict: &str) -> &'a Value {
    explanation["steps"]
        .as_array()
        .and_then(|steps| {
            steps
                .iter()
                .find(|s| s["stage"] == stage && s["verdict"] == verdict)
        })
        .unwrap_or_else(|| panic!("no {stage} step {verdict} in {explanation:#}"))
}

#[test]
fn the_bundled_example_explains_why_a_rule_lost() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let explanation = explain(&[
        "--manifests",
        examples.to_str().unwrap(),
        "https://shop.example.com:8443/api/orders",
    ]);
    assert_eq!(explanation["outcome"]["backend"], "shop/api:8080");
    assert_eq!(explanation["outcome"]["route"], "Ingress shop/shop");
    let lost = step(&explanation, "rule", "lost");
    assert_eq!(
        lost["subject"],
        "Ingress shop/shop: shop.example.com/ (Prefix)"
    );
    assert!(
        lost["reason"]
            .as_str()
            .unwrap()
            .contains("the longer path /api wins"),
        "{lost}"
    );
    // Plain HTTP to a TLS host is redirected, and the step says why.
    let plain = explain(&[
        "--manifests",
        examples.to_str().unwrap(),
        "http://shop.example.com:8080/api/orders",
    ]);
    assert_eq!(plain["outcome"]["status"], 308);
    assert_eq!(step(&plain, "policy", "answers")["subject"], "ssl-redirect");

    let output = Command::new(binary("gateway"))
        .args(["explain", "--manifests", examples.to_str().unwrap()])
        .arg("ftp://shop.example.com/")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not http or https"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_gateway_names_the_endpoint_that_then_serves() {
    let backends = [
        Backend::start("one").await,
        Backend::start("two").await,
        Backend::start("three").await,
    ];
    let names: HashMap<String, &str> = backends
        .iter()
        .zip(["one", "two", "three"])
        .map(|(b, name)| (b.addr.to_string(), name))
        .collect();
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let dir = ManifestsDir::new();
    dir.write(
        "app.yaml",
        &(service("app", &addrs)
            + &annotated_ingress(
                "app",
                Some("app.test"),
                &[("/", "Prefix")],
                "app",
                &[("upstream-hash-by", "$http_x_user")],
            )),
    );
    let gw = Gateway::start(dir.path(), &[]);
    let admin = gw.admin.to_string();
    let url = format!("http://{}/cart", gw.http);
    let client = HttpClient::new();
    for user in ["ann", "bob", "cyd", "dee", "eve"] {
        let explanation = explain(&[
            "--admin",
            &admin,
            &url,
            "-H",
            "Host: app.test",
            "-H",
            &format!("x-user: {user}"),
        ]);
        let endpoint = explanation["outcome"]["endpoint"]
            .as_str()
            .unwrap_or_else(|| panic!("no endpoint in {explanation:#}"));
        let answer = client
            .send(
                gw.http,
                "app.test",
                Request::get("/cart").header("x-user", user),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(answer.service(), names[endpoint], "{explanation:#}");
    }

    let (status, body) = gw
        .admin_get("/explain?url=ftp%3A%2F%2Fapp.test%2F")
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is not http or https"), "{body}");
    let (status, body) = gw.admin_get("/explain").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("url parameter is required"), "{body}");
}

#[test]
fn the_readme_example_is_what_the_binary_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(binary("gateway"))
        .args(["explain", "--manifests"])
        .arg(root.join("deploy/examples"))
        .arg("https://shop.example.com:8443/api/orders")
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(printed.trim()),
        "update the README's explain example to:\n{printed}"
    );
}
