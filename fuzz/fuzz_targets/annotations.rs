//! Annotation values of every shape on one Ingress beside an untouched one: translate never
//! panics, the other Ingress's route never changes, and an access rule that is refused closes
//! its route.
#![no_main]

use std::time::SystemTime;

use gateway::snapshot::Snapshot;
use gateway::translate::translate;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const NAMES: [&str; 24] = [
    "whitelist-source-range",
    "denylist-source-range",
    "auth-url",
    "auth-type",
    "rewrite-target",
    "use-regex",
    "app-root",
    "permanent-redirect",
    "temporal-redirect",
    "proxy-body-size",
    "proxy-read-timeout",
    "limit-rps",
    "limit-connections",
    "enable-cors",
    "cors-allow-origin",
    "canary",
    "canary-by-header",
    "canary-weight",
    "affinity",
    "session-cookie-name",
    "upstream-hash-by",
    "backend-protocol",
    "custom-http-errors",
    "configuration-snippet",
];

/// `value` as a double-quoted YAML string: JSON's escapes, plus the control characters JSON
/// leaves as they are (DEL and C1), which YAML refuses raw.
fn yaml_string(value: &str) -> String {
    serde_json::to_string(value)
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{:04x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn ingress(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| {
            format!(
                "    nginx.ingress.kubernetes.io/{k}: {}\n",
                yaml_string(v)
            )
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations:\n{annotations}    x: y\nspec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {{service: {{name: web, port: {{number: 80}}}}}}\n---\n"
    )
}

fuzz_target!(|values: Vec<(u8, String)>| {
    let mut annotations: Vec<(&str, &str)> = Vec::new();
    for (name, value) in &values {
        let name = NAMES[usize::from(*name) % NAMES.len()];
        if annotations.iter().all(|(n, _)| *n != name) {
            annotations.push((name, value.as_str()));
        }
    }
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n{}{}",
        ingress("fuzzed", "fuzzed.test", &annotations),
        ingress("plain", "plain.test", &[]),
    );
    let (store, warnings) = match common::store_of(&yaml) {
        Ok(parsed) => parsed,
        Err(error) => panic!("the generated YAML must parse: {error}\n{yaml}"),
    };
    let options = common::options();
    let snapshot = translate(&store, &options, warnings, &Snapshot::default(), SystemTime::UNIX_EPOCH);
    let plain = snapshot.route("plain.test", "/").and_then(|m| m.route).expect("plain route");
    assert!(plain.policy.closed.is_none());
    let auth = annotations.iter().any(|(n, _)| n.starts_with("auth-"));
    if auth && let Some(fuzzed) = snapshot.route("fuzzed.test", "/").and_then(|m| m.route) {
        assert!(fuzzed.policy.closed.is_some(), "{annotations:?}");
    }
});
