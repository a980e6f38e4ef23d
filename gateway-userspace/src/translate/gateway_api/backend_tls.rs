//! BackendTLSPolicy: TLS from the gateway to a Service's pods, for the HTTPRoutes and
//! GRPCRoutes that send to it, verified with the CA bundles of ConfigMaps (`ca.crt`) or the
//! system's, against the policy's hostname (also sent as SNI). It is made into the same client
//! configurations as ingress-nginx's `proxy-ssl-*` annotations (`tls::backend`). A policy that
//! cannot be applied makes its Service's share of every route answer 500: never plaintext,
//! never unverified.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::gateway_api::BackendTLSPolicy;
use crate::snapshot::listener::{Condition, ObjectReport, WeightedBackends};
use crate::snapshot::{Backend, Snapshot};
use crate::store::{Sourced, Store, namespace_of};
use crate::tls::backend::{BackendTls, BackendTlsSettings};
use crate::translate::backend::{BackendResolver, PortRef};

use super::RefProblems;

/// What a policy gives a Service port: its TLS, or why it cannot be applied.
type Applied = Result<Arc<BackendTls>, String>;

/// By (namespace, Service): (a port name, or `None` for every port; what applies there).
type Targets = HashMap<(String, String), Vec<(Option<String>, Applied)>>;

/// The policies of one snapshot, by the Service ports they apply to.
pub(super) struct BackendTlsPolicies {
    targets: Targets,
    /// Backends reached over a policy's TLS, by the backend and the configuration (their
    /// addresses), so that routes to one Service port share one.
    reached: HashMap<(usize, usize), Arc<Backend>>,
}

impl BackendTlsPolicies {
    /// Reads every policy of `store`, with a report of each. A policy made into the same
    /// settings as one in `previous` (the table served until now) keeps that configuration, and
    /// with it the pooled connections to its backends.
    pub fn new(store: &Store, previous: &Snapshot, reports: &mut Vec<ObjectReport>) -> Self {
        let kept = configurations(previous);
        let mut policies: Vec<&Sourced<BackendTLSPolicy>> =
            store.backend_tls_policies.iter().collect();
        // The oldest policy for a target wins, as for routes.
        policies.sort_by_key(|p| {
            let meta = &p.object.metadata;
            let created = meta.creation_timestamp.clone().map(|t| t.0);
            (created, namespace_of(meta).to_string(), meta.name.clone())
        });
        let mut targets = Targets::new();
        for sourced in policies {
            let policy = &sourced.object;
            let namespace = namespace_of(&policy.metadata).to_string();
            let name = policy.metadata.name.clone().unwrap_or_default();
            let applied = settings(store, &namespace, policy).and_then(|settings| {
                match kept.iter().find(|tls| tls.is_from(&settings)) {
                    Some(tls) => Ok(tls.clone()),
                    None => BackendTls::new(settings).map(Arc::new),
                }
            });
            let mut conflicted = Vec::new();
            for target in &policy.spec.target_refs {
                if !target.group.is_empty() || target.kind != "Service" {
                    continue;
                }
                let ports = targets
                    .entry((namespace.clone(), target.name.clone()))
                    .or_default();
                if ports.iter().any(|(port, _)| *port == target.section_name) {
                    conflicted.push(target.name.clone());
                    continue;
                }
                let applied = applied.clone().map_err(|e| {
                    format!("BackendTLSPolicy {namespace}/{name} cannot be applied: {e}")
                });
                ports.push((target.section_name.clone(), applied));
            }
            reports.push(ObjectReport {
                kind: "BackendTLSPolicy",
                namespace: Some(namespace),
                name,
                source: sourced.source.clone(),
                conditions: conditions(policy, &applied, &conflicted),
                ..ObjectReport::default()
            });
        }
        Self {
            targets,
            reached: HashMap::new(),
        }
    }

    /// Sends every choice of `split` whose Service port has a policy over that policy's TLS;
    /// a choice whose policy cannot be applied keeps its share, answered with 500.
    pub fn apply(
        &mut self,
        split: &mut WeightedBackends,
        resolver: &BackendResolver<'_>,
        field: &str,
        problems: &mut RefProblems,
    ) {
        if self.targets.is_empty() {
            return;
        }
        for (i, choice) in split.choices.iter_mut().enumerate() {
            let Some(backend) = &choice.backend else {
                continue;
            };
            let key = (backend.namespace.clone(), backend.service.clone());
            let Some(ports) = self.targets.get(&key) else {
                continue;
            };
            let port_name = (backend.port.parse().ok()).and_then(|n| {
                resolver.port_name(&backend.namespace, &backend.service, &PortRef::Number(n))
            });
            // A policy for the port by name wins over one for the whole Service.
            let applied = (ports.iter())
                .find(|(port, _)| port.is_some() && port.as_deref() == port_name)
                .or_else(|| ports.iter().find(|(port, _)| port.is_none()));
            match applied {
                None => {}
                Some((_, Ok(tls))) => {
                    let reached = self
                        .reached
                        .entry((Arc::as_ptr(backend) as usize, Arc::as_ptr(tls) as usize))
                        .or_insert_with(|| Arc::new(backend.with_tls(tls.clone())));
                    choice.backend = Some(reached.clone());
                }
                Some((_, Err(reason))) => {
                    problems.unsupported.push(format!(
                        "{field}.backendRefs[{i}]: {reason}; its share answers 500"
                    ));
                    choice.backend = None;
                }
            }
        }
    }
}

/// The policies' client configurations in `snapshot`'s Gateway API routes.
fn configurations(snapshot: &Snapshot) -> Vec<Arc<BackendTls>> {
    let mut found: Vec<Arc<BackendTls>> = Vec::new();
    for table in snapshot.gateway_listeners.values() {
        let hosts = (table.exact_hosts.values().map(|host| &**host))
            .chain(table.wildcard_hosts.iter().map(|(_, host)| host))
            .chain(&table.any_host);
        let splits = hosts
            .flat_map(|host| &host.routes)
            .filter_map(|r| r.split.as_ref());
        for backend in splits
            .flat_map(|s| &s.choices)
            .filter_map(|c| c.backend.as_ref())
        {
            if let Some(tls) = &backend.tls
                && !found.iter().any(|f| Arc::ptr_eq(f, tls))
            {
                found.push(tls.clone());
            }
        }
    }
    found
}

/// The client configuration a policy asks for.
fn settings(
    store: &Store,
    namespace: &str,
    policy: &BackendTLSPolicy,
) -> Result<BackendTlsSettings, String> {
    let validation = &policy.spec.validation;
    if !validation.subject_alt_names.is_empty() {
        return Err(
            "spec.validation.subjectAltNames is not supported (the certificate is \
                    verified against spec.validation.hostname)"
                .into(),
        );
    }
    let mut bundle = Vec::new();
    for (i, reference) in validation.ca_certificate_refs.iter().enumerate() {
        let field = format!("spec.validation.caCertificateRefs[{i}]");
        if !reference.group.is_empty() || reference.kind != "ConfigMap" {
            return Err(format!("{field}: only ConfigMaps are supported"));
        }
        let config_map = (store.config_maps.iter())
            .map(|c| &c.object)
            .find(|c| {
                namespace_of(&c.metadata) == namespace
                    && c.metadata.name.as_deref() == Some(&reference.name)
            })
            .ok_or_else(|| {
                format!(
                    "{field}: configmap {namespace}/{} not found",
                    reference.name
                )
            })?;
        let ca = (config_map.data.as_ref())
            .and_then(|d| d.get("ca.crt"))
            .ok_or_else(|| {
                format!(
                    "{field}: configmap {namespace}/{} has no ca.crt",
                    reference.name
                )
            })?;
        bundle.extend_from_slice(ca.as_bytes());
        bundle.push(b'\n');
    }
    match (
        validation.well_known_ca_certificates.as_deref(),
        bundle.is_empty(),
    ) {
        (Some("System"), true) => bundle = system_roots()?.to_vec(),
        (Some(other), true) => {
            return Err(format!(
                "spec.validation.wellKnownCACertificates: {other:?} is not supported (System is)"
            ));
        }
        (Some(_), false) => {
            return Err(
                "spec.validation: caCertificateRefs and wellKnownCACertificates are \
                        exclusive"
                    .into(),
            );
        }
        (None, true) => {
            return Err("spec.validation names no CA (caCertificateRefs or \
                        wellKnownCACertificates)"
                .into());
        }
        (None, false) => {}
    }
    crate::translate::check_dns_name(&validation.hostname)
        .map_err(|e| format!("spec.validation.hostname: {e}"))?;
    Ok(BackendTlsSettings {
        verify_with: Some(bundle),
        name: Some(validation.hostname.clone()),
        send_server_name: true,
        tls12: true,
        tls13: true,
        ..BackendTlsSettings::default()
    })
}

/// The system's CA certificates as one PEM bundle, read once.
fn system_roots() -> Result<&'static [u8], String> {
    static ROOTS: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err("no system CA certificates were found".into());
        }
        Ok(found
            .certs
            .iter()
            .flat_map(|c| crate::tls::pem_of(c).into_bytes())
            .collect())
    });
    roots.as_deref().map_err(Clone::clone)
}

fn conditions(
    policy: &BackendTLSPolicy,
    applied: &Applied,
    conflicted: &[String],
) -> Vec<Condition> {
    let invalid_target =
        (policy.spec.target_refs.iter()).find(|t| !t.group.is_empty() || t.kind != "Service");
    let accepted = match (invalid_target, applied, conflicted.first()) {
        (Some(target), _, _) => Condition::new(
            "Accepted",
            false,
            "Invalid",
            format!(
                "targetRefs: {} {:?} is not a Service",
                target.kind, target.name
            ),
        ),
        (None, _, Some(service)) => Condition::new(
            "Accepted",
            false,
            "Conflicted",
            format!("an older policy already applies to Service {service}"),
        ),
        (None, Err(reason), None) => Condition::new("Accepted", false, "Invalid", reason.clone()),
        (None, Ok(_), None) => Condition::new("Accepted", true, "Accepted", ""),
    };
    let resolved = match applied {
        Err(reason) if reason.contains("caCertificateRefs") => Condition::new(
            "ResolvedRefs",
            false,
            "InvalidCACertificateRef",
            reason.clone(),
        ),
        _ => Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
    };
    vec![accepted, resolved]
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::translate::tests::{options, service, store_of};

    /// A Gateway, an HTTPRoute to `web`, a BackendTLSPolicy for `web` and its CA's ConfigMap.
    fn manifests(hostname: &str) -> String {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let pem: String = ca
            .cert
            .pem()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect();
        service("web", 9001)
            + "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: xdp}\nspec: {controllerName: xdp-gateway.io/gateway-controller}\n---\n\
               apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: default}\nspec:\n  gatewayClassName: xdp\n  listeners: [{name: web, port: 18080, protocol: HTTP}]\n---\n\
               apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: app, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n---\n"
            + &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca, namespace: default}}\ndata:\n  ca.crt: |\n{pem}---\n"
            )
            + &format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: web, namespace: default}}\n\
                 spec:\n  targetRefs: [{{group: \"\", kind: Service, name: web}}]\n  validation:\n    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: ca}}]\n    hostname: {hostname}\n"
            )
    }

    fn policy_tls(snapshot: &Snapshot) -> Arc<BackendTls> {
        configurations(snapshot)
            .pop()
            .expect("the route's backend has the policy's TLS")
    }

    #[test]
    fn an_unchanged_policy_keeps_its_configuration_across_tables() {
        let translate = |yaml: &str, previous: &Snapshot| {
            let store = store_of(yaml);
            crate::translate::translate(&store, &options(), Vec::new(), previous, SystemTime::now())
        };
        let yaml = manifests("web.default.svc");
        let first = translate(&yaml, &Snapshot::default());
        let kept = translate(&yaml, &first);
        assert!(Arc::ptr_eq(&policy_tls(&first), &policy_tls(&kept)));
        let renamed = translate(
            &yaml.replace("hostname: web.default.svc", "hostname: other.svc"),
            &first,
        );
        assert!(!Arc::ptr_eq(&policy_tls(&first), &policy_tls(&renamed)));
    }
}
