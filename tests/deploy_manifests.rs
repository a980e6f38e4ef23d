//! Every manifest under deploy/, and every object each kustomize overlay of deploy/kubernetes
//! renders, parses as its Kubernetes type with no field the type does not know (a misspelled
//! field would be silently dropped by the API server): each document must survive a round trip
//! through its k8s-openapi type unchanged. The rendered installs also hang together: the image
//! is the one `cargo xtask image` tags, and every name an argument refers to is rendered.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use gateway::gateway_api;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn round_trip<T: DeserializeOwned + Serialize>(document: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(document.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// The YAML files below `dir` that hold Kubernetes objects (kustomization files are checked by
/// rendering them).
fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && path.file_stem().is_some_and(|stem| stem != "kustomization")
        {
            found.push(path);
        }
    }
}

/// Every document of `text` (from `origin`), checked to round-trip through its type.
fn checked_documents(text: &str, origin: &str) -> Vec<Value> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
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
            "GatewayClass" => round_trip::<gateway_api::GatewayClass>(&value),
            "Gateway" => round_trip::<gateway_api::Gateway>(&value),
            "HTTPRoute" => round_trip::<gateway_api::HTTPRoute>(&value),
            other => panic!("{origin}: kind {other} is not checked by this test"),
        };
        let name = format!("{origin} {kind} {}", value["metadata"]["name"]);
        let back = back.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            back, value,
            "{name}: a field is unknown to its type or malformed"
        );
        documents.push(value);
    }
    documents
}

#[test]
fn every_deploy_manifest_is_a_valid_kubernetes_object() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files = Vec::new();
    yaml_files(&deploy, &mut files);
    let mut kinds = BTreeSet::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for document in checked_documents(&text, &file.display().to_string()) {
            kinds.insert(document["kind"].as_str().unwrap().to_string());
            checked += 1;
        }
    }
    for wanted in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "IngressClass",
        "DaemonSet",
        "Deployment",
        "Service",
        "Ingress",
        "Secret",
        "Gateway",
        "HTTPRoute",
    ] {
        assert!(kinds.contains(wanted), "deploy/ has no {wanted}");
    }
    assert!(checked > 20, "{checked} documents");
}

/// `kubectl kustomize` of an overlay of deploy/kubernetes, checked object by object.
fn render(overlay: &str) -> Vec<Value> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/overlays")
        .join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&folder)
        .output()
        .expect("kubectl is installed (`cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        folder.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    checked_documents(
        &String::from_utf8_lossy(&out.stdout),
        &format!("overlay {overlay}"),
    )
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

/// The gateway's workload (DaemonSet or Deployment) with its container's arguments, `$(VAR)`
/// expanded from the fields the pod gets them from (as the kubelet expands them).
fn gateway(objects: &[Value]) -> (&Value, Vec<String>) {
    let workloads: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "DaemonSet" || o["kind"] == "Deployment")
        .collect();
    assert_eq!(workloads.len(), 1, "one gateway workload");
    let workload = workloads[0];
    let namespace = workload["metadata"]["namespace"].as_str().unwrap();
    let container = &workload["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap().replace("$(POD_NAMESPACE)", namespace))
        .collect();
    (workload, args)
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|arg| arg.strip_prefix(&format!("--{name}=")))
}

/// What every rendered install must get right, whatever the overlay.
fn hangs_together(overlay: &str, objects: &[Value]) -> (String, Vec<String>) {
    let (workload, args) = gateway(objects);
    let namespace = workload["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    let pod = &workload["spec"]["template"]["spec"];
    // The image `cargo xtask image` tags, named once for every overlay (components/image).
    assert_eq!(
        pod["containers"][0]["image"],
        format!("xdp-gateway:{}", env!("CARGO_PKG_VERSION")),
        "{overlay}"
    );
    let accounts: Vec<&str> = find(objects, "ServiceAccount")
        .into_iter()
        .map(name)
        .collect();
    assert!(
        accounts.contains(&pod["serviceAccountName"].as_str().unwrap()),
        "{overlay}: the pod's ServiceAccount is rendered"
    );
    // The Service the gateway publishes is rendered, selects its pods, and sends traffic to
    // ports it serves.
    let published = flag(&args, "publish-service").expect("--publish-service");
    let services = find(objects, "Service");
    let service = services
        .iter()
        .find(|s| {
            format!(
                "{}/{}",
                s["metadata"]["namespace"].as_str().unwrap(),
                name(s)
            ) == published
        })
        .unwrap_or_else(|| panic!("{overlay}: --publish-service={published} is not rendered"));
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &labels[key], value,
            "{overlay}: the Service selects the gateway's pods"
        );
    }
    let served: BTreeSet<u64> = args
        .iter()
        .filter(|arg| {
            ["--http-listen=", "--https-listen=", "--vip="]
                .iter()
                .any(|f| arg.starts_with(f))
        })
        .filter_map(|arg| arg.split('=').nth(1)?.rsplit(':').next()?.parse().ok())
        .collect();
    for port in service["spec"]["ports"].as_array().unwrap() {
        let target = port["targetPort"].as_u64().unwrap();
        assert!(
            served.contains(&target),
            "{overlay}: targetPort {target} is not served ({served:?})"
        );
    }
    // Its IngressClass is rendered and belongs to the gateway's controller.
    let class = flag(&args, "ingress-class").unwrap_or("xdp-gateway");
    let classes = find(objects, "IngressClass");
    let class = classes
        .iter()
        .find(|c| name(c) == class)
        .unwrap_or_else(|| panic!("{overlay}: IngressClass {class} is not rendered"));
    assert_eq!(class["spec"]["controller"], "xdp-gateway.io/ingress");
    for object in objects {
        if let Some(object_namespace) = object["metadata"]["namespace"].as_str() {
            assert_eq!(
                object_namespace,
                namespace,
                "{overlay}: {} {}",
                object["kind"],
                name(object)
            );
        }
    }
    (namespace, args)
}

#[test]
fn the_node_overlays_render_a_daemonset_on_the_host_network_reached_by_their_service() {
    for (overlay, service_type) in [("nodeport", "NodePort"), ("loadbalancer", "LoadBalancer")] {
        let objects = render(overlay);
        let (namespace, args) = hangs_together(overlay, &objects);
        assert_eq!(namespace, "xdp-gateway");
        let (workload, _) = gateway(&objects);
        assert_eq!(workload["kind"], "DaemonSet");
        assert_eq!(workload["spec"]["template"]["spec"]["hostNetwork"], true);
        assert!(
            flag(&args, "xdp-iface").is_some(),
            "{overlay}: XDP on the uplink"
        );
        let services = find(&objects, "Service");
        assert_eq!(services.len(), 1, "{overlay}");
        assert_eq!(services[0]["spec"]["type"], service_type, "{overlay}");
        assert_eq!(
            services[0]["spec"]["externalTrafficPolicy"], "Local",
            "{overlay}"
        );
    }
}

#[test]
fn the_per_project_overlay_renders_a_gateway_confined_to_its_project() {
    let objects = render("per-project");
    let (namespace, args) = hangs_together("per-project", &objects);
    let (workload, _) = gateway(&objects);
    assert_eq!(workload["kind"], "Deployment");
    assert_ne!(workload["spec"]["template"]["spec"]["hostNetwork"], true);
    assert_eq!(flag(&args, "watch-namespace"), Some(namespace.as_str()));
    assert_eq!(flag(&args, "fast-path"), Some("off"));
    // Its own class, not the node gateway's.
    assert_eq!(
        flag(&args, "ingress-class"),
        Some(format!("xdp-gateway-{namespace}").as_str())
    );
    // Nothing but the classes is granted cluster-wide; no Namespace is created (the project
    // exists).
    for role in find(&objects, "ClusterRole") {
        for rule in role["rules"].as_array().unwrap() {
            let classes = [
                json!(["ingressclasses"]),
                json!(["gatewayclasses"]),
                json!(["gatewayclasses/status"]),
            ];
            assert!(
                classes.contains(&rule["resources"]),
                "{}: {rule}",
                name(role)
            );
        }
    }
    assert!(find(&objects, "Namespace").is_empty());
    for binding in find(&objects, "ClusterRoleBinding") {
        assert_eq!(binding["subjects"][0]["namespace"], namespace.as_str());
    }
}
