//! Every manifest under deploy/ parses as its Kubernetes type, with no field the type does not
//! know (a misspelled field would be silently dropped by the API server): each document must
//! survive a round trip through its k8s-openapi type unchanged.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn round_trip<T: DeserializeOwned + Serialize>(document: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(document.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

#[test]
fn every_deploy_manifest_is_a_valid_kubernetes_object() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files = Vec::new();
    yaml_files(&deploy, &mut files);
    let mut kinds = std::collections::BTreeSet::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let back = match kind.as_str() {
                "Namespace" => round_trip::<Namespace>(&value),
                "ServiceAccount" => round_trip::<ServiceAccount>(&value),
                "ClusterRole" => round_trip::<ClusterRole>(&value),
                "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(&value),
                "Role" => round_trip::<Role>(&value),
                "RoleBinding" => round_trip::<RoleBinding>(&value),
                "IngressClass" => round_trip::<IngressClass>(&value),
                "Ingress" => round_trip::<Ingress>(&value),
                "Service" => round_trip::<Service>(&value),
                "EndpointSlice" => round_trip::<EndpointSlice>(&value),
                "Secret" => round_trip::<Secret>(&value),
                "DaemonSet" => round_trip::<DaemonSet>(&value),
                "Deployment" => round_trip::<Deployment>(&value),
                other => panic!(
                    "{}: kind {other} is not checked by this test",
                    file.display()
                ),
            };
            let name = format!("{} {kind} {}", file.display(), value["metadata"]["name"]);
            let back = back.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                back, value,
                "{name}: a field is unknown to its type or malformed"
            );
            kinds.insert(kind);
            checked += 1;
        }
    }
    for wanted in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "IngressClass",
        "DaemonSet",
        "Service",
        "Ingress",
        "Secret",
    ] {
        assert!(kinds.contains(wanted), "deploy/ has no {wanted}");
    }
    assert!(checked > 20, "{checked} documents");
}
