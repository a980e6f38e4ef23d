//! The upstream Gateway API conformance tests (v1.6.1, vendored in tests/conformance/ from
//! kubernetes-sigs/gateway-api at 4564255), run in file mode: each test's manifests with the
//! suite's base manifests go into a manifests folder (the GatewayClass named as the suite's
//! `{GATEWAY_CLASS_NAME}`, each Service backed by an echo backend that reports its namespace and
//! name), and its expected responses are read from its own Go source and checked as the suite's
//! `CompareRoundTrip` checks them (httproute-redirect-port-and-scheme is left out: its cases
//! go to three Gateways through variables this reader does not follow, one of them HTTPS; its
//! Locations are checked by the unit tests of policy/filters.rs). What the suite checks on the API server (status, events) and
//! the checks written as code rather than `ExpectedResponse` literals (weight distributions,
//! mirror logs) are covered by tests/gateway_api.rs and tests/kubernetes.rs instead.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use gateway_e2e::backend::Backend;
use gateway_e2e::client::{Answer, HttpClient};
use gateway_e2e::gateway::Gateway;
use gateway_e2e::go_literal::{Value, literals_of, string_map, text};
use gateway_e2e::manifests::{ManifestsDir, gateway_class};
use hyper::Request;

/// The suite's tests that are run: all of `ExpectedResponse` form that need HTTP only.
const TESTS: &[&str] = &[
    "httproute-simple-same-namespace",
    "httproute-matching",
    "httproute-matching-across-routes",
    "httproute-exact-path-matching",
    "httproute-path-match-order",
    "httproute-header-matching",
    "httproute-query-param-matching",
    "httproute-method-matching",
    "httproute-hostname-intersection",
    "httproute-listener-hostname-matching",
    "httproute-request-header-modifier",
    "httproute-response-header-modifier",
    "httproute-request-header-modifier-backend-weights",
    "httproute-redirect-host-and-status",
    "httproute-redirect-path",
    "httproute-redirect-port",
    "httproute-redirect-scheme",
    "httproute-303-redirect",
    "httproute-307-redirect",
    "httproute-308-redirect",
    "httproute-rewrite-host",
    "httproute-rewrite-path",
    "httproute-weight",
    "httproute-reference-grant",
    "httproute-invalid-reference-grant",
    "httproute-invalid-nonexistent-backendref",
    "httproute-invalid-backendref-unknown-kind",
    "httproute-invalid-cross-namespace-backend-ref",
    "httproute-partially-invalid-via-invalid-reference-grant",
    "httproute-omitted-backendrefs",
    "httproute-named-rule",
    "httproute-cors",
    "httproute-request-mirror",
    "httproute-request-multiple-mirrors",
    "httproute-request-percentage-mirror",
    "httproute-timeout-request",
    "httproute-timeout-backend-request",
    "httproute-backend-request-redirect",
    "httproute-backend-url-rewrite",
    "httproute-multiple-gateways",
    "httproute-cross-namespace",
    "httproute-backend-protocol-h2c",
];

/// Cases that follow a change the suite makes on the API server between requests (which the
/// tests in tests/gateway_api.rs and tests/kubernetes.rs make instead).
const SKIPPED: &[(&str, usize, &str)] = &[(
    "HTTPRouteReferenceGrant",
    1,
    "it follows the ReferenceGrant's deletion",
)];

const INFRA: &str = "gateway-conformance-infra";

/// The suite's named constants that its expectations use.
fn constants() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("ns", INFRA),
        ("confsuite.InfrastructureNamespace", INFRA),
        (
            "confsuite.AppBackendNamespace",
            "gateway-conformance-app-backend",
        ),
        (
            "confsuite.WebBackendNamespace",
            "gateway-conformance-web-backend",
        ),
        ("confsuite.InfraBackendServiceNameV1", "infra-backend-v1"),
        ("confsuite.InfraBackendServiceNameV2", "infra-backend-v2"),
        ("confsuite.InfraBackendServiceNameV3", "infra-backend-v3"),
    ])
}

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// One `ConformanceTest` of a source file: its name, manifests, the Gateway its requests go
/// to, and its expected responses.
struct SuiteTest {
    name: String,
    manifests: Vec<String>,
    /// Each expected response with the Gateway it is asked of (the `gwNN` in force where the
    /// source states it).
    expected: Vec<(String, Value)>,
}

fn suite_tests(file: &str) -> Vec<SuiteTest> {
    let source = std::fs::read_to_string(conformance_dir().join(format!("{file}.go")))
        .unwrap_or_else(|e| panic!("{file}.go: {e}"));
    let tests: Vec<(SuiteTest, Option<String>)> = source
        .split("confsuite.ConformanceTest{")
        .skip(1)
        .map(|part| {
            let name = part
                .split("ShortName:")
                .nth(1)
                .and_then(|rest| rest.split('"').nth(1))
                .unwrap_or(file)
                .to_string();
            let manifests = part
                .split('"')
                .filter(|s| s.starts_with("tests/") && s.ends_with(".yaml"))
                .map(|s| s.trim_start_matches("tests/").to_string())
                .collect();
            let part = part.replace("gwNN = types", "gwNN := types");
            let mut expected = Vec::new();
            for (i, chunk) in part.split("gwNN := types.NamespacedName{").enumerate() {
                let gateway = match i {
                    0 => "same-namespace",
                    _ => (chunk.split("Name: \"").nth(1))
                        .and_then(|rest| rest.split('"').next())
                        .unwrap_or("same-namespace"),
                };
                let found = literals_of(chunk, "http.ExpectedResponse");
                expected.extend(found.into_iter().map(|v| (gateway.to_string(), v)));
            }
            // `Test: OtherTest.Test`: the other test's requests, on this one's manifests.
            let borrowed = (part.split("Test:").nth(1))
                .and_then(|rest| rest.trim_start().split(".Test,").next())
                .filter(|name| name.chars().all(char::is_alphanumeric))
                .map(str::to_string);
            (
                SuiteTest {
                    name,
                    manifests,
                    expected,
                },
                borrowed,
            )
        })
        .collect();
    let tests: Vec<SuiteTest> = tests
        .iter()
        .map(|(test, borrowed)| {
            let lender = borrowed
                .as_ref()
                .and_then(|b| tests.iter().find(|(t, _)| t.name == *b));
            SuiteTest {
                name: test.name.clone(),
                manifests: test.manifests.clone(),
                expected: lender.map_or_else(|| test.expected.clone(), |(t, _)| t.expected.clone()),
            }
        })
        .collect();
    tests
}

/// An expected response as the suite's `ExpectedResponse` says it, with its defaults.
#[derive(Debug, Default)]
struct Expected {
    host: String,
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    echo_set: BTreeMap<String, String>,
    statuses: Vec<u16>,
    response_headers: BTreeMap<String, String>,
    valid_header_values: BTreeMap<String, Vec<String>>,
    absent_headers: Vec<String>,
    ignore_whitespace: bool,
    backend: String,
    namespace: String,
    /// `ExpectedRequest`: what the backend must see (path, host, headers, absent headers).
    seen_path: Option<String>,
    seen_host: String,
    seen_method: String,
    seen_headers: BTreeMap<String, String>,
    seen_absent: Vec<String>,
    redirect: Option<BTreeMap<&'static str, String>>,
}

/// The expectation, or which of its fields could not be read.
fn expected_of(value: &Value, constants: &BTreeMap<&str, &str>) -> Result<Expected, String> {
    let empty = Value::Composite(Vec::new());
    let field = |v: &Value, name: &str| v.field(name).cloned().unwrap_or(empty.clone());
    let text_of = |v: &Value, name: &str| match v.field(name) {
        None => Ok(String::new()),
        Some(f) => text(f, constants).ok_or_else(|| format!("{name}: {f:?}")),
    };
    let map_of = |v: &Value, name: &str| match v.field(name) {
        None => Ok(BTreeMap::new()),
        Some(f) => string_map(f, constants).ok_or_else(|| format!("{name}: {f:?}")),
    };
    let list_of = |v: &Value| -> Result<Vec<String>, String> {
        v.entries()
            .into_iter()
            .map(|(_, e)| text(e, constants).ok_or_else(|| format!("{e:?}")))
            .collect()
    };
    let request = field(value, "Request");
    let response = field(value, "Response");
    let mut expected = Expected {
        host: text_of(&request, "Host")?,
        method: text_of(&request, "Method")?,
        path: text_of(&request, "Path")?,
        headers: map_of(&request, "Headers")?,
        echo_set: map_of(value, "BackendSetResponseHeaders")?,
        response_headers: map_of(&response, "Headers")?,
        absent_headers: list_of(&field(&response, "AbsentHeaders"))?,
        ignore_whitespace: response.field("IgnoreWhitespace") == Some(&Value::Name("true".into())),
        backend: text_of(value, "Backend")?,
        namespace: text_of(value, "Namespace")?,
        ..Expected::default()
    };
    if expected.method.is_empty() {
        expected.method = "GET".into();
    }
    let status = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).map_err(|_| format!("status {n}")),
        other => Err(format!("status {other:?}")),
    };
    if let Some(code) = response.field("StatusCode") {
        expected.statuses.push(status(code)?);
    }
    for (_, code) in field(&response, "StatusCodes").entries() {
        expected.statuses.push(status(code)?);
    }
    if expected.statuses.is_empty() {
        expected.statuses.push(200);
    }
    for (name, values) in field(&response, "ValidHeaderValues").entries() {
        let name = name.ok_or("ValidHeaderValues key")?;
        expected
            .valid_header_values
            .insert(name.to_string(), list_of(values)?);
    }
    match value.field("ExpectedRequest") {
        Some(seen) => {
            let request = field(seen, "Request");
            expected.seen_path = Some(text_of(&request, "Path")?);
            expected.seen_host = text_of(&request, "Host")?;
            expected.seen_method = text_of(&request, "Method")?;
            expected.seen_headers = map_of(&request, "Headers")?;
            expected.seen_absent = list_of(&field(seen, "AbsentHeaders"))?;
        }
        None => expected.seen_method = expected.method.clone(),
    }
    if expected.seen_method.is_empty() {
        expected.seen_method = "GET".into();
    }
    if let Some(redirect) = value.field("RedirectRequest") {
        let mut parts = BTreeMap::new();
        for key in ["Scheme", "Host", "Port", "Path"] {
            parts.insert(key, text_of(redirect, key)?);
        }
        expected.redirect = Some(parts);
    }
    Ok(expected)
}

/// Checks an answer as the suite's `CompareRoundTrip` does.
fn compare(expected: &Expected, answer: &Answer) -> Result<(), String> {
    let status = answer.status.as_u16();
    if !expected.statuses.contains(&status) {
        return Err(format!(
            "status {status}, not one of {:?}",
            expected.statuses
        ));
    }
    let header = |name: &str| -> Option<String> {
        let values: Vec<&str> = answer
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let squeeze = |s: &str| {
        if expected.ignore_whitespace {
            s.replace(' ', "")
        } else {
            s.to_string()
        }
    };
    if status == 200 || status == 204 {
        // The backend's report of what it saw (none when the gateway answered itself).
        if let Ok(seen) = serde_json::from_str::<serde_json::Value>(&answer.body) {
            let seen_path = expected.seen_path.as_deref().unwrap_or(&expected.path);
            if seen["path"] != seen_path {
                return Err(format!("the backend saw {}, not {seen_path}", seen["path"]));
            }
            if seen["method"] != expected.seen_method.as_str() {
                return Err(format!("the backend saw method {}", seen["method"]));
            }
            let (namespace, pod) = seen["service"]
                .as_str()
                .and_then(|s| s.split_once('/'))
                .unwrap_or_default();
            if namespace != expected.namespace {
                return Err(format!("namespace {namespace}, not {}", expected.namespace));
            }
            if !pod.starts_with(&expected.backend) {
                return Err(format!("backend {pod}, not {}", expected.backend));
            }
            let seen_header = |name: &str| seen["headers"][name.to_ascii_lowercase()].as_str();
            if !expected.seen_host.is_empty() && seen_header("host") != Some(&expected.seen_host) {
                return Err(format!("the backend saw host {:?}", seen_header("host")));
            }
            for (name, value) in &expected.seen_headers {
                if seen_header(name) != Some(value.as_str()) {
                    return Err(format!(
                        "the backend saw {name}: {:?}, not {value}",
                        seen_header(name)
                    ));
                }
            }
            if let Some(name) = expected
                .seen_absent
                .iter()
                .find(|n| seen_header(n).is_some())
            {
                return Err(format!("the backend saw {name}, which should be absent"));
            }
        } else if !expected.backend.is_empty() {
            return Err(format!(
                "no backend answered (expected {})",
                expected.backend
            ));
        }
        for (name, valid) in &expected.valid_header_values {
            let got = header(name).ok_or(format!("no {name} header"))?;
            if !valid.iter().any(|v| squeeze(v) == squeeze(&got)) {
                return Err(format!("{name}: {got}, not one of {valid:?}"));
            }
        }
        for (name, value) in &expected.response_headers {
            let got = header(name).ok_or(format!("no {name} header"))?;
            if squeeze(&got) != squeeze(value) {
                return Err(format!("{name}: {got}, not {value}"));
            }
        }
        if let Some(name) = expected.absent_headers.iter().find(|n| header(n).is_some()) {
            return Err(format!("{name} is set and should be absent"));
        }
    } else if (300..400).contains(&status)
        && let Some(redirect) = &expected.redirect
    {
        let location = header("location").ok_or("no Location")?;
        let (scheme, rest) = location
            .split_once("://")
            .ok_or("Location is not absolute")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = path.split('?').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => (authority, ""),
        };
        let want = |key: &str, default: &str| match redirect[key].as_str() {
            "" => default.to_string(),
            given => given.to_string(),
        };
        let request_path = expected.path.split('?').next().unwrap_or_default();
        let checks = [
            ("host", want("Host", host), host),
            ("scheme", want("Scheme", "http"), scheme),
            ("path", want("Path", request_path), path),
        ];
        for (what, wanted, got) in checks {
            if wanted != got {
                return Err(format!("redirect {what} {got}, not {wanted} ({location})"));
            }
        }
        let default_port = match scheme {
            "https" => ["443", ""],
            _ => ["80", ""],
        };
        let port_ok = match redirect["Port"].as_str() {
            "" => default_port.contains(&port),
            wanted => wanted == port,
        };
        if !port_ok {
            return Err(format!("redirect port {port:?} ({location})"));
        }
    }
    Ok(())
}

/// Echo backends for every Service of the manifests (as `namespace/name`), with the
/// EndpointSlices that make them the Services' endpoints.
async fn backends_for(documents: &[serde_yaml::Value], dir: &ManifestsDir) -> Vec<Backend> {
    let mut backends = Vec::new();
    for (i, service) in documents
        .iter()
        .filter(|d| d["kind"] == "Service")
        .enumerate()
    {
        let namespace = service["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let name = service["metadata"]["name"].as_str().unwrap_or_default();
        let backend = Backend::start(&format!("{namespace}/{name}")).await;
        let ports: Vec<String> = service["spec"]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|port| {
                let port_name = port["name"].as_str().unwrap_or("");
                let protocol = port["appProtocol"]
                    .as_str()
                    .map_or(String::new(), |p| format!(", appProtocol: {p}"));
                format!(
                    "{{name: \"{port_name}\", port: {}{protocol}}}",
                    backend.addr.port()
                )
            })
            .collect();
        dir.write(
            &format!("endpoints-{i}.yaml"),
            &format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {name}-1, namespace: {namespace}, \
                 labels: {{kubernetes.io/service-name: {name}}}}}\n\
                 addressType: IPv4\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n\
                 ports: [{}]\n",
                ports.join(", ")
            ),
        );
        backends.push(backend);
    }
    backends
}

/// Runs one suite test on addresses under `address`: how many cases ran, and what failed (one
/// line each).
async fn run(test: &SuiteTest, address: Ipv4Addr) -> (usize, Vec<String>) {
    let constants = constants();
    let dir = ManifestsDir::new();
    let class = gateway_class().replace("name: xdp", "name: gateway-conformance");
    let base = std::fs::read_to_string(conformance_dir().join("base-manifests.yaml")).unwrap();
    let mut yaml = class + &base.replace("{GATEWAY_CLASS_NAME}", "gateway-conformance");
    for manifest in &test.manifests {
        yaml += "\n---\n";
        yaml += &std::fs::read_to_string(conformance_dir().join(manifest))
            .unwrap_or_else(|e| panic!("{manifest}: {e}"))
            .replace("{GATEWAY_CLASS_NAME}", "gateway-conformance");
    }
    let mut documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .collect();
    let _backends = backends_for(&documents, &dir).await;
    // Each Gateway on an address of its own, as a cluster provisions one per Gateway; requests
    // go to its first listener (plain HTTP only).
    let mut gateways = BTreeMap::new();
    let gateway_documents = documents.iter_mut().filter(|d| d["kind"] == "Gateway");
    for (k, document) in gateway_documents.enumerate() {
        let [a, b, c, _] = address.octets();
        let ip = Ipv4Addr::new(a, b, c, 100 + k as u8);
        document["spec"]["addresses"] =
            serde_yaml::from_str(&format!("[{{type: IPAddress, value: \"{ip}\"}}]")).unwrap();
        let listener = &document["spec"]["listeners"][0];
        let port = listener["port"].as_u64().unwrap_or(80) as u16;
        let name = document["metadata"]["name"].as_str().unwrap_or_default();
        gateways.insert(
            name.to_string(),
            (SocketAddr::from((ip, port)), listener["protocol"] == "HTTP"),
        );
    }
    let yaml: Vec<String> = documents
        .iter()
        .map(|d| serde_yaml::to_string(d).unwrap())
        .collect();
    dir.write("suite.yaml", &yaml.join("---\n"));
    let address_flag = address.to_string();
    let _gw = Gateway::start(
        dir.path(),
        &["--access-log", "off", "--gateway-address", &address_flag],
    );
    let client = HttpClient::new();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (i, (gateway_name, value)) in test.expected.iter().enumerate() {
        if let Some((_, _, why)) = SKIPPED.iter().find(|(t, c, _)| *t == test.name && *c == i) {
            println!("{}: case {i} not run: {why}", test.name);
            continue;
        }
        let Some(&(gateway, plain)) = gateways.get(gateway_name) else {
            failures.push(format!("case {i}: no Gateway {gateway_name}"));
            continue;
        };
        if !plain {
            println!(
                "{}: case {i} not run: its Gateway listens with TLS",
                test.name
            );
            continue;
        }
        ran += 1;
        let expected = match expected_of(value, &constants) {
            Ok(expected) => expected,
            Err(unread) => {
                failures.push(format!("case {i}: cannot read the expectation ({unread})"));
                continue;
            }
        };
        let host = match expected.host.as_str() {
            "" => gateway.ip().to_string(),
            host => host.to_string(),
        };
        // As the suite: eventually consistent, then the same answer three times in a row.
        let mut outcome = Err(String::new());
        let mut passes = 0;
        for _ in 0..40 {
            let mut request = Request::builder()
                .method(expected.method.as_str())
                .uri(expected.path.as_str());
            for (name, value) in &expected.headers {
                request = request.header(name, value);
            }
            let echo: Vec<String> = expected
                .echo_set
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            request = request.header("x-echo-set-header", echo.join(","));
            outcome = match client.send(gateway, &host, request, Bytes::new()).await {
                Ok(answer) => compare(&expected, &answer),
                Err(error) => Err(error),
            };
            passes = if outcome.is_ok() { passes + 1 } else { 0 };
            if passes == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(reason) = outcome {
            failures.push(format!(
                "case {i} ({} {}{}): {reason}",
                expected.method, host, expected.path
            ));
        }
    }
    (ran, failures)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_conformance_tests_pass() {
    let mut report = Vec::new();
    let mut failed = BTreeSet::new();
    let mut cases = 0;
    for (index, file) in TESTS.iter().enumerate() {
        for (part, test) in suite_tests(file).iter().enumerate() {
            // Each test on its own loopback address, as the suite gives each its Gateway.
            let address = Ipv4Addr::new(127, 10 + part as u8, 1 + index as u8, 0);
            let (ran, failures) = run(test, address).await;
            cases += ran;
            if failures.is_empty() && ran == 0 {
                failed.insert(test.name.clone());
                report.push(format!("FAIL {}: no case was run", test.name));
            } else if failures.is_empty() {
                report.push(format!("pass {} ({} cases)", test.name, ran));
            } else {
                failed.insert(test.name.clone());
                report.push(format!(
                    "FAIL {}:\n    {}",
                    test.name,
                    failures.join("\n    ")
                ));
            }
        }
    }
    println!("{}\n{cases} cases", report.join("\n"));
    assert!(
        failed.is_empty(),
        "{}\nfailed: {failed:?}",
        report.join("\n")
    );
}
