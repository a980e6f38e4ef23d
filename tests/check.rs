//! `gateway check`: the real binary validates a manifests folder or a live (fake) API server,
//! names every problem by object and field, and exits non-zero when there is one.

use std::path::Path;
use std::process::{Command, Output};

use gateway_e2e::apiserver::FakeApiServer;
use gateway_e2e::gateway::binary;
use gateway_e2e::manifests::ManifestsDir;
use serde_json::Value;

fn check(args: &[&str]) -> (Output, Value) {
    let output = Command::new(binary("gateway"))
        .arg("check")
        .args(args)
        .arg("--json")
        .output()
        .expect("run gateway check");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "gateway check printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, report)
}

/// The warning about `object` whose field starts with `field`, if there is one.
fn find<'a>(report: &'a Value, object: &str, field: &str) -> Option<&'a Value> {
    report["warnings"].as_array()?.iter().find(|w| {
        w["object"].as_str() == Some(object)
            && w["field"].as_str().is_some_and(|f| f.starts_with(field))
    })
}

#[test]
fn the_bundled_example_passes() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let (output, report) = check(&["--manifests", examples.to_str().unwrap()]);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["summary"]["problems"], 0);
    assert!(report["summary"]["routes"].as_u64().unwrap() > 0);
}

#[test]
fn every_class_of_bad_input_is_named_by_object_and_field() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("check_fixtures");
    let (output, report) = check(&["--manifests", fixtures.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{report:#}");

    let broken = "ingress default/broken";
    let expected = [
        // (object, field, words of the reason)
        (
            format!("file {}", fixtures.join("notyaml.yaml").display()),
            "",
            "not valid YAML",
        ),
        (
            format!("file {}", fixtures.join("nokind.yaml").display()),
            "",
            "apiVersion and kind are required",
        ),
        (
            "ingress default/schema".into(),
            "spec.rules",
            "expected a sequence",
        ),
        (
            broken.into(),
            "metadata.annotations[\"nginx.ingress.kubernetes.io/ssl-redirect\"]",
            "\"maybe\": must be \"true\" or \"false\"",
        ),
        (
            broken.into(),
            "spec.rules[0].host",
            "not a lower-case DNS label",
        ),
        (
            broken.into(),
            "spec.rules[1].http.paths[0].pathType",
            "must be Exact, Prefix or ImplementationSpecific",
        ),
        (
            broken.into(),
            "spec.rules[1].http.paths[1].path",
            "must start with \"/\"",
        ),
        (
            broken.into(),
            "spec.rules[1].http.paths[2].backend.service",
            "service default/nosuch not found",
        ),
        (
            broken.into(),
            "spec.rules[1].http.paths[3].backend.service",
            "has no port grpc",
        ),
        (
            broken.into(),
            "spec.tls[0].secretName",
            "secret default/missing-cert: not found",
        ),
        (
            "ingress default/younger".into(),
            "spec.rules[0].http.paths[0]",
            "already routed by the older ingress default/good",
        ),
    ];
    for (object, field, reason) in &expected {
        let warning = find(&report, object, field)
            .unwrap_or_else(|| panic!("no warning for {object} {field}: {report:#}"));
        let message = warning["message"].as_str().unwrap();
        assert!(message.contains(reason), "{object} {field}: {message}");
    }
    assert_eq!(
        report["summary"]["problems"].as_u64(),
        Some(expected.len() as u64),
        "{report:#}"
    );
    // The good Ingress is untouched by its broken neighbours.
    assert!(
        find(&report, "ingress default/good", "").is_none(),
        "{report:#}"
    );
    assert_eq!(report["summary"]["ingresses"], 3);
}

#[test]
fn the_text_output_has_one_line_per_problem_and_a_summary() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("check_fixtures");
    let output = Command::new(binary("gateway"))
        .args(["check", "--manifests", fixtures.to_str().unwrap()])
        .output()
        .expect("run gateway check");
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12, "{text}");
    assert!(
        lines.contains(
            &"ingress default/broken (FIXTURES/broken.yaml): spec.rules[1].http.paths[1].path: \
              \"nope\": path must start with \"/\"; path ignored"
                .replace("FIXTURES", fixtures.to_str().unwrap())
                .as_str()
        ),
        "{text}"
    );
    assert_eq!(
        lines.last(),
        Some(&"checked 3 ingresses (3 served, 3 routes): 11 problems")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_cluster_is_checked_through_the_api() {
    let api = FakeApiServer::start().await;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("check_fixtures");
    api.apply(&std::fs::read_to_string(fixtures.join("good.yaml")).unwrap());
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_string();
    let check_cluster = move || {
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || check(&["--kubernetes", "--kubeconfig", &kubeconfig]))
    };
    let (output, report) = check_cluster().await.unwrap();
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["summary"]["routes"], 1);

    api.apply(&std::fs::read_to_string(fixtures.join("broken.yaml")).unwrap());
    let (output, report) = check_cluster().await.unwrap();
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    let warning = find(
        &report,
        "ingress default/broken",
        "spec.rules[1].http.paths[2]",
    )
    .expect("the missing Service is reported");
    assert!(
        warning["source"].is_null(),
        "objects of the API have no file"
    );
    assert_eq!(report["summary"]["ingresses"], 3);
}

#[test]
fn a_whole_application_folder_passes_with_notices() {
    // The node install as kustomize renders it (a DaemonSet, RBAC, a Service whose
    // EndpointSlices only a cluster makes) beside the example route: nothing wrong.
    let kubernetes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(kubernetes.join("overlays/nodeport"))
        .output()
        .expect("kubectl is installed (`cargo xtask test` installs it)");
    assert!(rendered.status.success(), "{rendered:?}");
    let folder = ManifestsDir::new();
    folder.write("install.yaml", &String::from_utf8_lossy(&rendered.stdout));
    folder.write(
        "example-route.yaml",
        &std::fs::read_to_string(kubernetes.join("example-route.yaml")).unwrap(),
    );
    let deploy = folder.path();
    let (output, report) = check(&["--manifests", deploy.to_str().unwrap()]);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["summary"]["problems"], 0);
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        !warnings.is_empty() && warnings.iter().all(|w| w["notice"] == true),
        "{report:#}"
    );
    assert_eq!(
        report["summary"]["notices"].as_u64(),
        Some(warnings.len() as u64)
    );
    assert!(
        warnings
            .iter()
            .any(|w| w["message"].as_str().unwrap().contains("kind DaemonSet")),
        "{report:#}"
    );
}
