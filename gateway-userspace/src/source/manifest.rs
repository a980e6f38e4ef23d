//! Kubernetes YAML documents to typed objects, with a warning naming the document, the object
//! and the field for everything that cannot be used.

use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::store::{Object, ObjectKey};
use crate::warning::Warning;

const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";
const GATEWAY_V1BETA1: &str = "gateway.networking.k8s.io/v1beta1";
const GATEWAY_V1ALPHA2: &str = "gateway.networking.k8s.io/v1alpha2";
const GATEWAY_V1ALPHA3: &str = "gateway.networking.k8s.io/v1alpha3";

/// Parses every document of one file (multi-document YAML, and `kind: List`). Documents that
/// cannot be used are left out with a warning; the others are returned.
pub fn parse(source: &str, text: &str) -> Result<(Vec<Object>, Vec<Warning>), Warning> {
    let mut objects = Vec::new();
    let mut warnings = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|e| {
            Warning::file(
                source,
                format!("document {}: not valid YAML: {e}", index + 1),
            )
        })?;
        let place = format!("document {}", index + 1);
        parse_value(source, &place, value, &mut objects, &mut warnings);
    }
    Ok((objects, warnings))
}

fn parse_value(
    source: &str,
    place: &str,
    value: Value,
    objects: &mut Vec<Object>,
    warnings: &mut Vec<Warning>,
) {
    if value.is_null() {
        return;
    }
    let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_string);
    let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
        warnings.push(Warning::file(
            source,
            format!("{place}: not a Kubernetes object (apiVersion and kind are required)"),
        ));
        return;
    };
    let key = key_of(&kind, &value);
    let warn = |field: &str, message: String| {
        Warning::new(&key, Some(source), field, format!("{place}: {message}"))
    };
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") => {
            let items = match value.get("items") {
                Some(Value::Sequence(items)) => items.clone(),
                _ => Vec::new(),
            };
            for (i, item) in items.into_iter().enumerate() {
                parse_value(
                    source,
                    &format!("{place} items[{i}]"),
                    item,
                    objects,
                    warnings,
                );
            }
            return;
        }
        ("networking.k8s.io/v1", "Ingress") => typed(value).map(Object::Ingress),
        ("networking.k8s.io/v1", "IngressClass") => typed(value).map(Object::IngressClass),
        ("v1", "Service") => typed(value).map(Object::Service),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(value).map(Object::EndpointSlice),
        ("v1", "Secret") => typed(value).map(Object::Secret),
        ("v1", "Namespace") => typed(value).map(Object::Namespace),
        ("v1", "ConfigMap") => typed(value).map(Object::ConfigMap),
        // v1beta1 is still served for these, with the same schema.
        (GATEWAY_V1 | GATEWAY_V1BETA1, "GatewayClass") => typed(value).map(Object::GatewayClass),
        (GATEWAY_V1 | GATEWAY_V1BETA1, "Gateway") => typed(value).map(Object::Gateway),
        (GATEWAY_V1 | GATEWAY_V1BETA1, "HTTPRoute") => typed(value).map(Object::HTTPRoute),
        (GATEWAY_V1, "GRPCRoute") => typed(value).map(Object::GRPCRoute),
        // v1alpha2 (the experimental channel before v1.5) has the same fields.
        (GATEWAY_V1 | GATEWAY_V1ALPHA2, "TLSRoute") => typed(value).map(Object::TLSRoute),
        (GATEWAY_V1 | GATEWAY_V1ALPHA2, "TCPRoute") => typed(value).map(Object::TCPRoute),
        (GATEWAY_V1 | GATEWAY_V1ALPHA2, "UDPRoute") => typed(value).map(Object::UDPRoute),
        (GATEWAY_V1 | GATEWAY_V1BETA1, "ReferenceGrant") => {
            typed(value).map(Object::ReferenceGrant)
        }
        (GATEWAY_V1 | GATEWAY_V1ALPHA3, "BackendTLSPolicy") => {
            typed(value).map(Object::BackendTLSPolicy)
        }
        (
            _,
            "Ingress" | "IngressClass" | "Service" | "EndpointSlice" | "Secret" | "Namespace"
            | "ConfigMap" | "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "TLSRoute"
            | "TCPRoute" | "UDPRoute" | "ReferenceGrant" | "BackendTLSPolicy",
        ) => {
            warnings.push(warn(
                "apiVersion",
                format!("{api_version:?} is not supported for kind {kind}; object ignored"),
            ));
            return;
        }
        _ => {
            // Folders commonly hold a whole application: other kinds are expected.
            warnings.push(
                warn(
                    "kind",
                    format!(
                        "kind {kind} ({api_version}) is not read by the gateway; object ignored"
                    ),
                )
                .as_notice(),
            );
            return;
        }
    };
    match object {
        Ok(object) => objects.push(object),
        Err((field, reason)) => {
            warnings.push(warn(&field, format!("{reason}; object ignored")));
        }
    }
}

/// Deserializes into a k8s-openapi type; on failure, the path of the field at fault and why.
fn typed<T: DeserializeOwned>(value: Value) -> Result<Arc<T>, (String, String)> {
    serde_path_to_error::deserialize(value)
        .map(Arc::new)
        .map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            (field, e.into_inner().to_string())
        })
}

/// The object's identity read from the raw document, so that even an object that does not
/// deserialize can be named in its warning.
fn key_of(kind: &str, value: &Value) -> ObjectKey {
    let meta = value.get("metadata");
    let field = |name: &str| {
        meta.and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let kind: &'static str = match kind {
        "Ingress" => "ingress",
        "IngressClass" => "ingressclass",
        "Service" => "service",
        "EndpointSlice" => "endpointslice",
        "Secret" => "secret",
        "Namespace" => "namespace",
        "ConfigMap" => "configmap",
        "GatewayClass" => "gatewayclass",
        "Gateway" => "gateway",
        "HTTPRoute" => "httproute",
        "GRPCRoute" => "grpcroute",
        "TLSRoute" => "tlsroute",
        "TCPRoute" => "tcproute",
        "UDPRoute" => "udproute",
        "ReferenceGrant" => "referencegrant",
        "BackendTLSPolicy" => "backendtlspolicy",
        _ => "object",
    };
    let cluster_scoped = matches!(kind, "ingressclass" | "gatewayclass" | "namespace");
    ObjectKey {
        kind,
        namespace: (!cluster_scoped).then(|| field("namespace").unwrap_or("default".into())),
        name: field("name").unwrap_or_else(|| "(unnamed)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_documents_and_lists() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: IngressClass
  metadata: {name: xdp}
  spec: {controller: xdp-gateway.io/ingress}
---
"#;
        let (objects, warnings) = parse("a.yaml", text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].key().to_string(), "service shop/web");
        assert_eq!(objects[1].key().to_string(), "ingressclass xdp");
    }

    #[test]
    fn missing_field_names_object_and_field() {
        let text = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  rules:
  - http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: eighty}}}
"#;
        let (objects, warnings) = parse("shop.yaml", text).unwrap();
        assert!(objects.is_empty());
        let w = warnings[0].to_string();
        assert!(
            w.starts_with("ingress default/shop (shop.yaml): spec.rules[0].http.paths[0]"),
            "{w}"
        );
        assert!(w.contains("backend.service.port.number"), "{w}");
    }

    #[test]
    fn unknown_kind_and_bad_api_version_warn_and_keep_the_rest() {
        let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: old}
---
apiVersion: v1
kind: Service
metadata: {name: web}
"#;
        let (objects, warnings) = parse("mixed.yaml", text).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].to_string().contains("kind Deployment"));
        assert!(warnings[1].to_string().contains("ingress default/old"));
        assert_eq!(warnings[1].field, "apiVersion");
    }

    #[test]
    fn broken_yaml_is_an_error_for_the_whole_file() {
        let err = parse("bad.yaml", "kind: [unclosed\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("file bad.yaml: document 1: not valid YAML"),
            "{err}"
        );
        let (objects, warnings) = parse("empty.yaml", "").unwrap();
        assert!(objects.is_empty() && warnings.is_empty());
    }

    #[test]
    fn not_an_object() {
        let (_, warnings) = parse("x.yaml", "hello: world\n").unwrap();
        assert!(
            warnings[0]
                .message
                .contains("apiVersion and kind are required")
        );
    }
}
