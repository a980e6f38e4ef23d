//! Ingress backends to endpoints: a Service port, resolved through the Service's ports and the
//! EndpointSlices labelled with the Service's name, keeping only ready endpoints.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{IngressBackend, IngressServiceBackend, ServiceBackendPort};

use crate::snapshot::Backend;
use crate::store::{Sourced, Store, index, namespace_of};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Resolves backends against one store, sharing one [`Backend`] per Service port.
pub struct BackendResolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    resolved: HashMap<(String, String, String), Resolved>,
}

/// A backend, and why it has no endpoints where it has none.
pub type Resolved = (Arc<Backend>, Option<Problem>);

/// Why a backend has no endpoints.
#[derive(Clone, Debug)]
pub struct Problem {
    pub kind: ProblemKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The Service and port exist, no endpoint is ready (yet): state, not a mistake.
    NoEndpoints,
    /// The reference is wrong: no such Service or port, an unsupported type.
    Broken,
}

impl<'a> BackendResolver<'a> {
    /// Indexes the Services and EndpointSlices of `store`.
    pub fn new(store: &'a Store) -> Self {
        let services = index(&store.services);
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for Sourced { object, .. } in &store.endpoint_slices {
            let service = object
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(service) = service {
                slices
                    .entry((namespace_of(&object.metadata), service.as_str()))
                    .or_default()
                    .push(&**object);
            }
        }
        Self {
            services,
            slices,
            resolved: HashMap::new(),
        }
    }

    /// The backend an Ingress backend names, and a problem to warn about when it cannot have
    /// endpoints (the route still exists and answers 503, as in ingress-nginx). `Err` when the
    /// backend is not a usable Service reference at all.
    pub fn resolve(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
    ) -> Result<Resolved, String> {
        let Some(service) = &backend.service else {
            return Err(if backend.resource.is_some() {
                "resource backends are not supported; use service".to_string()
            } else {
                "backend names no service".to_string()
            });
        };
        if service.name.is_empty() {
            return Err("service.name is empty".to_string());
        }
        let port = match &service.port {
            Some(p) => match (&p.name, p.number) {
                (Some(name), None) if !name.is_empty() => PortRef::Name(name.clone()),
                (None, Some(number)) if (1..=65535).contains(&number) => PortRef::Number(number),
                (Some(_), Some(_)) => {
                    return Err("service.port sets both name and number; set one".to_string());
                }
                (None, Some(number)) => {
                    return Err(format!("service.port.number {number} is not in 1-65535"));
                }
                _ => return Err("service.port names no port".to_string()),
            },
            None => return Err("service.port is required".to_string()),
        };
        Ok(self.resolve_port(namespace, &service.name, &port))
    }

    /// The backend of port `port` of Service `namespace/name`, shared with every other route
    /// to it, and why it has no endpoints where it has none.
    pub fn resolve_port(&mut self, namespace: &str, name: &str, port: &PortRef) -> Resolved {
        let key = (namespace.to_string(), name.to_string(), port.to_string());
        if let Some(found) = self.resolved.get(&key) {
            return found.clone();
        }
        let (endpoints, problem) = match self.endpoints(namespace, name, port) {
            Ok(endpoints) if endpoints.is_empty() => (
                endpoints,
                Some(Problem {
                    kind: ProblemKind::NoEndpoints,
                    text: format!("service {namespace}/{name} port {port} has no ready endpoints"),
                }),
            ),
            Ok(endpoints) => (endpoints, None),
            Err(text) => (
                Vec::new(),
                Some(Problem {
                    kind: ProblemKind::Broken,
                    text,
                }),
            ),
        };
        let resolved = (
            Arc::new(Backend::new(namespace, name, &port.to_string(), endpoints)),
            problem,
        );
        self.resolved.insert(key, resolved.clone());
        resolved
    }

    /// The backend of Service `name` on its first port (the `default-backend` annotation).
    pub fn resolve_first_port(&mut self, namespace: &str, name: &str) -> Result<Resolved, String> {
        let service = self.service(namespace, name)?;
        let port = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.first())
            .ok_or_else(|| format!("service {namespace}/{name} has no port"))?;
        let backend = IngressBackend {
            service: Some(IngressServiceBackend {
                name: name.to_string(),
                port: Some(ServiceBackendPort {
                    number: Some(port.port),
                    name: None,
                }),
            }),
            resource: None,
        };
        self.resolve(namespace, &backend)
    }

    /// A backend whose one endpoint is the Service's cluster IP and port (`service-upstream`:
    /// kube-proxy picks the pod).
    pub fn resolve_cluster_ip(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
    ) -> Result<Arc<Backend>, String> {
        let reference = backend.service.as_ref().ok_or("backend names no service")?;
        let service = self.service(namespace, &reference.name)?;
        let name = &reference.name;
        let spec = service
            .spec
            .as_ref()
            .ok_or_else(|| format!("service {namespace}/{name} has no spec"))?;
        let ip: IpAddr = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| format!("service {namespace}/{name} has no cluster IP"))?;
        let wanted = reference.port.as_ref();
        let port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| match wanted {
                Some(w) if w.number.is_some() => w.number == Some(p.port),
                Some(w) => w.name.is_some() && w.name == p.name,
                None => false,
            })
            .ok_or_else(|| format!("service {namespace}/{name} has no such port"))?;
        let port_number = u16::try_from(port.port).map_err(|_| "port out of range")?;
        Ok(Arc::new(Backend::new(
            namespace,
            name,
            &port.port.to_string(),
            vec![SocketAddr::new(ip, port_number)],
        )))
    }

    fn service(&self, namespace: &str, name: &str) -> Result<&'a Service, String> {
        self.services
            .get(&(namespace, name))
            .copied()
            .ok_or_else(|| format!("service {namespace}/{name} not found"))
    }

    /// The `appProtocol` of port `port` of Service `namespace/name`, where it has one.
    pub fn app_protocol(&self, namespace: &str, name: &str, port: &PortRef) -> Option<&'a str> {
        self.service_port(namespace, name, port)?
            .app_protocol
            .as_deref()
    }

    /// The name of port `port` of Service `namespace/name`, where it has one.
    pub fn port_name(&self, namespace: &str, name: &str, port: &PortRef) -> Option<&'a str> {
        self.service_port(namespace, name, port)?.name.as_deref()
    }

    fn service_port(
        &self,
        namespace: &str,
        name: &str,
        port: &PortRef,
    ) -> Option<&'a k8s_openapi::api::core::v1::ServicePort> {
        let service: &'a Service = self.service(namespace, name).ok()?;
        let ports = service.spec.as_ref()?.ports.as_deref()?;
        ports.iter().find(|p| port.names(p))
    }

    fn endpoints(
        &self,
        namespace: &str,
        name: &str,
        port: &PortRef,
    ) -> Result<Vec<SocketAddr>, String> {
        let service = self.service(namespace, name)?;
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(format!(
                "service {namespace}/{name} is of type ExternalName, which is not supported"
            ));
        }
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let service_port = ports
            .iter()
            .find(|p| port.names(p))
            .ok_or_else(|| format!("service {namespace}/{name} has no port {port}"))?;
        let wanted_name = service_port.name.as_deref().unwrap_or("");
        let mut endpoints = Vec::new();
        for slice in self.slices.get(&(namespace, name)).into_iter().flatten() {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let slice_port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == wanted_name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok());
            let Some(slice_port) = slice_port else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        let addr = SocketAddr::new(ip, slice_port);
                        if !endpoints.contains(&addr) {
                            endpoints.push(addr);
                        }
                    }
                }
            }
        }
        Ok(endpoints)
    }
}

/// How a route names a Service port.
#[derive(Debug, PartialEq, Eq)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

impl PortRef {
    fn names(&self, port: &ServicePort) -> bool {
        match self {
            PortRef::Number(n) => port.port == *n,
            PortRef::Name(name) => port.name.as_deref() == Some(name.as_str()),
        }
    }
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}
