//! The create and edit dialogs: the fields of KubeSphere's route dialog made into an Ingress
//! and back, YAML read the way the manifests folder reads it, and the dry run that translates
//! the change together with every other object (the code `gateway check` runs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::networking::v1::Ingress;
use serde_json::json;

use crate::source::manifest;
use crate::status::{self, Listeners, RouteView};
use crate::store::{Object, Sourced, Store, namespace_of};
use crate::translate::{TranslateOptions, translate};
use crate::warning::Warning;

/// KubeSphere keeps a route's display name in this annotation.
pub const ALIAS: &str = "kubesphere.io/alias-name";

/// The fields of the route dialog.
#[derive(Clone, Debug, Default)]
pub struct RouteForm {
    pub namespace: String,
    pub name: String,
    pub alias: String,
    /// `auto` (`{service}.{namespace}.{gateway address}.nip.io`) or `custom`.
    pub host_mode: String,
    pub host: String,
    /// `http` or `https`.
    pub protocol: String,
    /// The TLS Secret (`tls.crt`, `tls.key`) of https.
    pub secret: String,
    pub paths: Vec<PathRow>,
    /// `key: value` lines.
    pub annotations: String,
}

#[derive(Clone, Debug, Default)]
pub struct PathRow {
    pub path: String,
    pub path_type: String,
    pub service: String,
    pub port: String,
}

impl RouteForm {
    /// The form as posted (`application/x-www-form-urlencoded`; path rows repeat their fields).
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut form = RouteForm::default();
        let mut columns: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (key, value) in pairs {
            let value = value.trim().to_string();
            match key.as_str() {
                "namespace" => form.namespace = value,
                "name" => form.name = value,
                "alias" => form.alias = value,
                "host_mode" => form.host_mode = value,
                "host" => form.host = value,
                "protocol" => form.protocol = value,
                "secret" => form.secret = value,
                "annotations" => form.annotations = value,
                column @ ("path" | "path_type" | "service" | "port") => {
                    columns.entry(column).or_default().push(value)
                }
                _ => {}
            }
        }
        let column = |name: &str, row: usize| {
            columns
                .get(name)
                .and_then(|c| c.get(row).cloned())
                .unwrap_or_default()
        };
        let rows = columns.values().map(Vec::len).max().unwrap_or(0);
        form.paths = (0..rows)
            .map(|row| PathRow {
                path: column("path", row),
                path_type: column("path_type", row),
                service: column("service", row),
                port: column("port", row),
            })
            .filter(|row| !(row.path.is_empty() && row.service.is_empty()))
            .collect();
        form
    }

    /// The form of an Ingress, when the dialog can show it: one host (its rules may have
    /// several paths). Others are edited as YAML.
    pub fn of(ingress: &Ingress) -> Option<Self> {
        let spec = ingress.spec.as_ref()?;
        let rules = spec.rules.as_deref().unwrap_or_default();
        let [rule] = rules else {
            return None;
        };
        if spec.default_backend.is_some() {
            return None;
        }
        let host = rule.host.clone().unwrap_or_default();
        let tls = spec.tls.as_deref().unwrap_or_default();
        let secret = tls
            .iter()
            .find(|t| t.hosts.as_deref().unwrap_or_default().contains(&host))
            .and_then(|t| t.secret_name.clone());
        let paths = rule
            .http
            .as_ref()?
            .paths
            .iter()
            .map(|p| {
                let service = p.backend.service.as_ref();
                let port = service.and_then(|s| s.port.as_ref());
                PathRow {
                    path: p.path.clone().unwrap_or_default(),
                    path_type: p.path_type.clone(),
                    service: service.map(|s| s.name.clone()).unwrap_or_default(),
                    port: port
                        .and_then(|p| p.number.map(|n| n.to_string()).or(p.name.clone()))
                        .unwrap_or_default(),
                }
            })
            .collect();
        let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
        Some(Self {
            namespace: namespace_of(&ingress.metadata).to_string(),
            name: ingress.metadata.name.clone().unwrap_or_default(),
            alias: annotations.get(ALIAS).cloned().unwrap_or_default(),
            host_mode: "custom".into(),
            host,
            protocol: if secret.is_some() { "https" } else { "http" }.into(),
            secret: secret.unwrap_or_default(),
            paths,
            annotations: annotations
                .iter()
                .filter(|(k, _)| *k != ALIAS)
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n"),
        })
    }

    /// The Ingress of these fields, of class `class`; auto hosts end in `gateway_address`.
    /// Errors name the field.
    pub fn to_ingress(&self, class: &str, gateway_address: &str) -> Result<Ingress, String> {
        check_name("namespace", &self.namespace)?;
        check_name("name", &self.name)?;
        if self.paths.is_empty() {
            return Err("paths: a route needs at least one path, service and port".into());
        }
        let mut paths = Vec::new();
        for (index, row) in self.paths.iter().enumerate() {
            let at = |field: &str| format!("paths[{index}].{field}");
            check_name(&at("service"), &row.service)?;
            let port = match row.port.parse::<u16>() {
                Ok(number) if number > 0 => json!({"number": number}),
                _ if !row.port.is_empty() && row.port.len() <= 15 => json!({"name": row.port}),
                _ => {
                    return Err(format!(
                        "{}: {:?} is not a port number or name",
                        at("port"),
                        row.port
                    ));
                }
            };
            let path_type = if row.path_type.is_empty() {
                "Prefix"
            } else {
                &row.path_type
            };
            paths.push(json!({
                "path": if row.path.is_empty() { "/" } else { &row.path },
                "pathType": path_type,
                "backend": {"service": {"name": row.service, "port": port}},
            }));
        }
        let host = match self.host_mode.as_str() {
            "auto" => format!(
                "{}.{}.{gateway_address}.nip.io",
                self.paths[0].service, self.namespace
            ),
            _ if self.host.is_empty() => {
                return Err("host: give a domain, or choose Auto Generate".into());
            }
            _ => self.host.to_ascii_lowercase(),
        };
        let mut annotations = serde_json::Map::new();
        for (index, line) in self.annotations.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| format!("annotations line {}: expected key: value", index + 1))?;
            annotations.insert(key.trim().to_string(), json!(value.trim()));
        }
        if !self.alias.is_empty() {
            annotations.insert(ALIAS.into(), json!(self.alias));
        }
        let mut spec = json!({
            "ingressClassName": class,
            "rules": [{"host": host, "http": {"paths": paths}}],
        });
        match self.protocol.as_str() {
            "https" if self.secret.is_empty() => {
                return Err("secret: https needs a TLS Secret (tls.crt, tls.key)".into());
            }
            "https" => {
                check_name("secret", &self.secret)?;
                spec["tls"] = json!([{"hosts": [host], "secretName": self.secret}]);
            }
            "http" | "" => {}
            other => return Err(format!("protocol: {other:?} is not http or https")),
        }
        let mut metadata = json!({"name": self.name, "namespace": self.namespace});
        if !annotations.is_empty() {
            metadata["annotations"] = annotations.into();
        }
        let ingress = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": metadata,
            "spec": spec,
        });
        serde_json::from_value(ingress).map_err(|e| e.to_string())
    }
}

/// A Kubernetes name (an RFC 1123 label): it also becomes part of a file name.
fn check_name(field: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{field}: {name:?} is not a valid name (lower-case letters, digits and '-', at most \
             63)"
        ))
    }
}

/// The one Ingress of `yaml`, read as the manifests folder reads files.
pub fn parse_yaml(yaml: &str) -> Result<Ingress, String> {
    let (objects, warnings) = manifest::parse("console", yaml).map_err(|w| w.to_string())?;
    if let Some(warning) = warnings.iter().find(|w| !w.notice) {
        return Err(warning.to_string());
    }
    let mut ingresses = objects.into_iter().filter_map(|object| match object {
        Object::Ingress(ingress) => Some(Arc::unwrap_or_clone(ingress)),
        _ => None,
    });
    let ingress = ingresses
        .next()
        .ok_or("the YAML holds no Ingress (kind: Ingress, apiVersion: networking.k8s.io/v1)")?;
    if ingresses.next().is_some() {
        return Err("the YAML holds more than one Ingress: change one at a time".into());
    }
    check_name("metadata.namespace", namespace_of(&ingress.metadata))?;
    check_name(
        "metadata.name",
        ingress.metadata.name.as_deref().unwrap_or_default(),
    )?;
    Ok(ingress)
}

/// The manifest of `ingress`, as written to a file or shown for editing.
pub fn to_yaml(ingress: &Ingress) -> String {
    let mut value = serde_json::to_value(ingress).unwrap_or_default();
    if let Some(metadata) = value["metadata"].as_object_mut() {
        for noise in [
            "managedFields",
            "resourceVersion",
            "uid",
            "generation",
            "creationTimestamp",
        ] {
            metadata.remove(noise);
        }
    }
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    serde_yaml::to_string(&value).unwrap_or_default()
}

/// What the table would be with one Ingress changed.
pub struct DryRun {
    pub served: bool,
    pub reason: Option<String>,
    pub warnings: Vec<Warning>,
    /// The routes it would have.
    pub routes: Vec<RouteView>,
}

impl DryRun {
    /// Whether it may be applied: nothing but notices (a Service with no ready endpoint yet).
    pub fn applicable(&self) -> bool {
        self.warnings.iter().all(|w| w.notice)
    }
}

/// Translates `store` with `ingress` in place of the Ingress of the same name (or added).
pub fn dry_run(
    store: &Store,
    options: &TranslateOptions,
    listeners: Listeners,
    ingress: &Ingress,
    source: Option<String>,
) -> DryRun {
    let namespace = namespace_of(&ingress.metadata).to_string();
    let name = ingress.metadata.name.clone().unwrap_or_default();
    let mut store = store.clone();
    store.ingresses.retain(|i| {
        namespace_of(&i.object.metadata) != namespace
            || i.object.metadata.name.as_deref() != Some(&name)
    });
    store.ingresses.push(Sourced {
        source,
        object: Arc::new(ingress.clone()),
    });
    let snapshot = translate(
        &store,
        options,
        Vec::new(),
        &Default::default(),
        SystemTime::now(),
    );
    let report = snapshot
        .ingresses
        .iter()
        .find(|r| r.namespace == namespace && r.name == name);
    let owner = format!("{namespace}/{name}");
    let routes = status::report(&snapshot, 0, listeners)
        .routes
        .into_iter()
        .filter(|r| r.kind == "Ingress" && r.ingress == owner)
        .collect();
    DryRun {
        served: report.is_some_and(|r| r.served),
        reason: report.and_then(|r| r.reason.clone()),
        warnings: report.map(|r| r.warnings.clone()).unwrap_or_default(),
        routes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dialog_makes_an_ingress_and_reads_it_back() {
        let form = RouteForm::from_pairs(&pairs(&[
            ("namespace", "shop"),
            ("name", "web"),
            ("alias", "Web shop"),
            ("host_mode", "auto"),
            ("protocol", "https"),
            ("secret", "web-tls"),
            ("path", "/"),
            ("path_type", "Prefix"),
            ("service", "web"),
            ("port", "80"),
            ("path", "/api"),
            ("path_type", "Exact"),
            ("service", "api"),
            ("port", "http"),
            ("path", ""),
            ("path_type", "Prefix"),
            ("service", ""),
            ("port", ""),
            (
                "annotations",
                "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"",
            ),
        ]));
        assert_eq!(form.paths.len(), 2);
        let ingress = form.to_ingress("xdp-gateway", "10.0.0.5").unwrap();
        let yaml = to_yaml(&ingress);
        assert!(yaml.contains("host: web.shop.10.0.0.5.nip.io"), "{yaml}");
        assert!(yaml.contains("secretName: web-tls"), "{yaml}");
        assert!(
            yaml.contains("kubesphere.io/alias-name: Web shop"),
            "{yaml}"
        );
        let back = RouteForm::of(&parse_yaml(&yaml).unwrap()).unwrap();
        assert_eq!(back.host, "web.shop.10.0.0.5.nip.io");
        assert_eq!(back.alias, "Web shop");
        assert_eq!(back.paths[1].port, "http");
        assert_eq!(back.protocol, "https");
        assert_eq!(
            back.annotations,
            "nginx.ingress.kubernetes.io/ssl-redirect: \"false\""
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let base = [
            ("namespace", "shop"),
            ("name", "web"),
            ("host_mode", "custom"),
            ("host", "a.test"),
            ("path", "/"),
            ("service", "web"),
            ("port", "80"),
        ];
        let with = |key: &str, value: &str| {
            let mut list = pairs(&base);
            list.retain(|(k, _)| k != key);
            list.push((key.into(), value.into()));
            RouteForm::from_pairs(&list).to_ingress("c", "127.0.0.1")
        };
        assert!(with("name", "../etc").unwrap_err().starts_with("name:"));
        assert!(
            with("namespace", "Shop")
                .unwrap_err()
                .starts_with("namespace:")
        );
        assert!(with("port", "").unwrap_err().starts_with("paths[0].port"));
        assert!(with("host", "").unwrap_err().starts_with("host:"));
        assert!(
            with("protocol", "https")
                .unwrap_err()
                .starts_with("secret:")
        );
        assert!(
            with("annotations", "no colon")
                .unwrap_err()
                .starts_with("annotations")
        );
        assert!(parse_yaml("kind: Service\napiVersion: v1\nmetadata: {name: a}\n").is_err());
        assert!(
            parse_yaml("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: ../a}\n")
                .unwrap_err()
                .contains("metadata.name")
        );
    }
}
