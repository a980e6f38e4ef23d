//! Kubernetes YAML documents to typed objects, with a warning naming the document, the object
//! and the field for everything that cannot be used.

use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

use super::yaml;
use crate::store::{Object, ObjectKey};
use crate::warning::Warning;

const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";
const GATEWAY_V1BETA1: &str = "gateway.networking.k8s.io/v1beta1";
const GATEWAY_V1ALPHA2: &str = "gateway.networking.k8s.io/v1alpha2";
const GATEWAY_V1ALPHA3: &str = "gateway.networking.k8s.io/v1alpha3";

/// Parses every document of one file (multi-document YAML, and `kind: List`). Documents that
/// cannot be used are left out with a warning; the others are returned.
pub fn parse(source: &str, text: &str) -> Result<(Vec<Object>, Vec<Warning>), Warning> {
    match parse_directly(text) {
        Some(objects) => Ok((objects, Vec::new())),
        None => parse_through_values(source, text),
    }
}

/// Every document through a YAML value first: slower, and able to say what is wrong and where.
fn parse_through_values(source: &str, text: &str) -> Result<(Vec<Object>, Vec<Warning>), Warning> {
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

/// The common case, read without building a YAML value tree first (building it and reading the
/// objects from it took 40% longer than reading them straight from the YAML): block-style
/// documents whose top-level `apiVersion` and `kind` lines name a kind the gateway reads are
/// deserialized straight into their types by the manifest reader (`yaml`). `None` when any
/// document is not like that (a List, another kind, an object that does not deserialize, YAML
/// the manifest reader leaves to serde_yaml): the whole file is then read through values, which
/// name what is wrong.
fn parse_directly(text: &str) -> Option<Vec<Object>> {
    let mut objects = Vec::new();
    for document in block_documents(text)? {
        let (api_version, kind) = head(document)?;
        objects.push(trimmed(read_directly(api_version, kind, document)?));
    }
    Some(objects)
}

/// One document through the manifest reader; `None` where it does not read it.
fn read_directly(api_version: &str, kind: &str, document: &str) -> Option<Object> {
    let mut reader = yaml::Reader::new(document).ok()?;
    let object = deserialize_object(api_version, kind, reader.root())?.ok()?;
    reader.at_end().then_some(object)
}

/// Deserialized straight from the YAML, lists get no length hint and grow by doubling: a
/// rule with one path would keep room for four. An Ingress's lists, the ones that reach
/// thousands of entries, are trimmed to their lengths.
fn trimmed(mut object: Object) -> Object {
    if let Object::Ingress(ingress) = &mut object
        && let Some(spec) = Arc::get_mut(ingress).and_then(|i| i.spec.as_mut())
    {
        if let Some(rules) = &mut spec.rules {
            for rule in rules.iter_mut() {
                if let Some(http) = &mut rule.http {
                    http.paths.shrink_to_fit();
                }
            }
            rules.shrink_to_fit();
        }
        if let Some(tls) = &mut spec.tls {
            for hosts in tls.iter_mut().filter_map(|t| t.hosts.as_mut()) {
                hosts.shrink_to_fit();
            }
            tls.shrink_to_fit();
        }
    }
    object
}

/// The documents of a YAML stream split at their `---` lines (a `---` at the start of a line
/// cannot be inside a document), leaving out those with nothing but blank lines and comments.
/// `None` for streams with directives (`%`) or end markers (`...`).
fn block_documents(text: &str) -> Option<Vec<&str>> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut has_content = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare.starts_with('%') || bare.starts_with("...") {
            return None;
        }
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            if has_content {
                documents.push(&text[start..offset]);
            }
            start = offset;
            // Content after the marker (`--- {...}`) is read by the typed deserializer, which
            // checks apiVersion and kind.
            has_content =
                !bare[3..].trim_start().is_empty() && !bare[3..].trim_start().starts_with('#');
        } else if !bare.trim_start().is_empty() && !bare.trim_start().starts_with('#') {
            has_content = true;
        }
        offset += line.len();
    }
    if has_content {
        documents.push(&text[start..]);
    }
    Some(documents)
}

/// The plain or quoted values of the document's top-level `apiVersion:` and `kind:` lines, when
/// each appears exactly once. The typed deserializers check both again.
fn head(document: &str) -> Option<(&str, &str)> {
    let mut api_version = None;
    let mut kind = None;
    for line in document.lines() {
        let (slot, value) = if let Some(value) = line.strip_prefix("apiVersion:") {
            (&mut api_version, value)
        } else if let Some(value) = line.strip_prefix("kind:") {
            (&mut kind, value)
        } else {
            continue;
        };
        if slot.is_some() {
            return None;
        }
        let value = value.split(" #").next().unwrap_or_default().trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        *slot = Some(value);
    }
    Some((api_version?, kind?))
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
    if (api_version.as_str(), kind.as_str()) == ("v1", "List") {
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
    let Some(object) = deserialize_object(&api_version, &kind, value) else {
        warnings.push(if READ_KINDS.contains(&kind.as_str()) {
            warn(
                "apiVersion",
                format!("{api_version:?} is not supported for kind {kind}; object ignored"),
            )
        } else {
            // Folders commonly hold a whole application: other kinds are expected.
            warn(
                "kind",
                format!("kind {kind} ({api_version}) is not read by the gateway; object ignored"),
            )
            .as_notice()
        });
        return;
    };
    match object {
        Ok(object) => objects.push(object),
        Err((field, reason)) => {
            warnings.push(warn(&field, format!("{reason}; object ignored")));
        }
    }
}

/// The kinds the gateway reads (in some apiVersion).
const READ_KINDS: [&str; 16] = [
    "Ingress",
    "IngressClass",
    "Service",
    "EndpointSlice",
    "Secret",
    "Namespace",
    "ConfigMap",
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "TCPRoute",
    "UDPRoute",
    "ReferenceGrant",
    "BackendTLSPolicy",
];

/// Deserializes one document into the type of its apiVersion and kind; on failure, the path of
/// the field at fault and why. `None` for a kind or version the gateway does not read.
fn deserialize_object<'de>(
    api_version: &str,
    kind: &str,
    document: impl Deserializer<'de>,
) -> Option<Result<Object, (String, String)>> {
    Some(match (api_version, kind) {
        ("networking.k8s.io/v1", "Ingress") => typed(document).map(Object::Ingress),
        ("networking.k8s.io/v1", "IngressClass") => typed(document).map(Object::IngressClass),
        ("v1", "Service") => typed(document).map(Object::Service),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(document).map(Object::EndpointSlice),
        ("v1", "Secret") => typed(document).map(Object::Secret),
        ("v1", "Namespace") => typed(document).map(Object::Namespace),
        ("v1", "ConfigMap") => typed(document).map(Object::ConfigMap),
        // v1beta1 is still served for these, with the same schema.
        (GATEWAY_V1 | GATEWAY_V1BETA1, "GatewayClass") => typed(document).map(Object::GatewayClass),
        (GATEWAY_V1 | GATEWAY_V1BETA1, "Gateway") => typed(document).map(Object::Gateway),
        (GATEWAY_V1 | GATEWAY_V1BETA1, "HTTPRoute") => typed(document).map(Object::HTTPRoute),
        (GATEWAY_V1, "GRPCRoute") => typed(document).map(Object::GRPCRoute),
        // v1alpha2 (the experimental channel before v1.5) has the same fields.
        (GATEWAY_V1 | GATEWAY_V1ALPHA2, "TLSRoute") => typed(document).map(Object::TLSRoute),
        (GATEWAY_V1 | GATEWAY_V1ALPHA2, "TCPRoute") => typed(document).map(Object::TCPRoute),
        (GATEWAY_V1 | GATEWAY_V1ALPHA2, "UDPRoute") => typed(document).map(Object::UDPRoute),
        (GATEWAY_V1 | GATEWAY_V1BETA1, "ReferenceGrant") => {
            typed(document).map(Object::ReferenceGrant)
        }
        (GATEWAY_V1 | GATEWAY_V1ALPHA3, "BackendTLSPolicy") => {
            typed(document).map(Object::BackendTLSPolicy)
        }
        _ => return None,
    })
}

/// Deserializes into a typed object; on failure, the path of the field at fault and why.
fn typed<'de, T: Deserialize<'de>>(
    document: impl Deserializer<'de>,
) -> Result<Arc<T>, (String, String)> {
    serde_path_to_error::deserialize(document)
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
    fn block_documents_are_read_directly_as_through_values() {
        let text = "# a shop\r\n---\r\napiVersion: v1\r\nkind: \"Service\"  # quoted\r\n\
            metadata: {name: web, namespace: shop}\r\nspec: {ports: [{port: 80}]}\r\n\
            --- # the next one\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  \
            name: shop\n  annotations:\n    a: |\n      kind: x\n      ---\nspec:\n  rules:\n  \
            - host: a.test\n    http: {paths: [{path: /, pathType: Prefix, backend: \
            {service: {name: web, port: {number: 80}}}}]}\n---\n# nothing\n---\n";
        let direct = parse_directly(text).expect("read directly");
        let (through_values, warnings) = parse_through_values("a.yaml", text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(direct.len(), 2);
        assert_eq!(format!("{direct:?}"), format!("{through_values:?}"));
        let Object::Ingress(ingress) = &direct[1] else {
            panic!("{direct:?}")
        };
        let rules = ingress
            .spec
            .as_ref()
            .and_then(|s| s.rules.as_ref())
            .unwrap();
        assert_eq!(rules[0].http.as_ref().unwrap().paths.capacity(), 1);
    }

    /// serde_yaml's reading of one document straight into its type.
    fn through_serde_yaml(api_version: &str, kind: &str, document: &str) -> Option<Object> {
        let document = serde_yaml::Deserializer::from_str(document);
        deserialize_object(api_version, kind, document)?.ok()
    }

    /// Where the manifest reader reads a document, serde_yaml reads the same object.
    fn assert_read_as_serde_yaml_reads(api_version: &str, kind: &str, document: &str) -> bool {
        let Some(ours) = read_directly(api_version, kind, document) else {
            return false;
        };
        let theirs = through_serde_yaml(api_version, kind, document);
        assert_eq!(
            Some(format!("{ours:?}")),
            theirs.map(|o| format!("{o:?}")),
            "{document}"
        );
        true
    }

    #[test]
    fn the_manifest_reader_reads_every_manifest_of_the_repository_as_serde_yaml_does() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        let mut folders = vec![root.join("deploy"), root.join("tests")];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml") {
                    files.push(path);
                }
            }
        }
        let mut read = 0;
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for document in block_documents(&text).unwrap_or_default() {
                let Some((api_version, kind)) = head(document) else {
                    continue;
                };
                if through_serde_yaml(api_version, kind, document).is_none() {
                    continue;
                }
                // Every object serde_yaml reads straight into its type is read here too.
                assert!(
                    assert_read_as_serde_yaml_reads(api_version, kind, document),
                    "{}: not read: {document}",
                    file.display()
                );
                read += 1;
            }
        }
        assert!(
            files.len() > 50 && read > 100,
            "{} files, {read} objects",
            files.len()
        );
    }

    #[test]
    fn edited_objects_read_as_serde_yaml_reads_them_or_not_at_all() {
        for sample in yaml::tests::SAMPLES {
            let (api_version, kind) = head(sample).unwrap();
            let read = yaml::tests::mutations(sample, 2000)
                .filter(|text| assert_read_as_serde_yaml_reads(api_version, kind, text))
                .count();
            assert!(read > 200, "{kind}: {read} of 2000 read");
        }
    }

    #[test]
    fn anything_unusual_is_read_through_values() {
        let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n";
        assert!(parse_directly(service).is_some());
        for unusual in [
            "apiVersion: v1\nkind: List\nitems: []\n".to_string(),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n".to_string(),
            "apiVersion: v1\nkind: Service\nmetadata: {name: [web]}\n".to_string(),
            "{apiVersion: v1, kind: Service, metadata: {name: web}}\n".to_string(),
            format!("%YAML 1.2\n---\n{service}"),
            format!("{service}...\n"),
            format!("{service}kind: Service\n"),
        ] {
            assert!(parse_directly(&unusual).is_none(), "{unusual}");
        }
    }

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
