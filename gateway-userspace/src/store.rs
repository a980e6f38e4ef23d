//! The Kubernetes objects the gateway translates, as one value: whatever the source (a manifests
//! folder or the API server), `translate` sees the same `Store`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::Metadata;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::gateway_api::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant, TCPRoute,
    TLSRoute, UDPRoute,
};

/// An object together with where it came from, so that a warning can point at the file.
#[derive(Clone, Debug)]
pub struct Sourced<T> {
    /// The manifest file it was read from; `None` for objects from the API server.
    pub source: Option<String>,
    /// Shared with the source's own cache (the folder's files, the API server's reflectors):
    /// one copy of each object.
    pub object: Arc<T>,
}

impl<T> Sourced<T> {
    /// An object that has no file behind it (e.g. from the API server).
    pub fn unsourced(object: impl Into<Arc<T>>) -> Self {
        Self {
            source: None,
            object: object.into(),
        }
    }
}

/// Every object kind the gateway reads.
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub ingresses: Vec<Sourced<Ingress>>,
    pub ingress_classes: Vec<Sourced<IngressClass>>,
    pub services: Vec<Sourced<Service>>,
    pub endpoint_slices: Vec<Sourced<EndpointSlice>>,
    pub secrets: Vec<Sourced<Secret>>,
    pub gateway_classes: Vec<Sourced<GatewayClass>>,
    pub gateways: Vec<Sourced<Gateway>>,
    pub http_routes: Vec<Sourced<HTTPRoute>>,
    pub grpc_routes: Vec<Sourced<GRPCRoute>>,
    pub tls_routes: Vec<Sourced<TLSRoute>>,
    pub tcp_routes: Vec<Sourced<TCPRoute>>,
    pub udp_routes: Vec<Sourced<UDPRoute>>,
    pub reference_grants: Vec<Sourced<ReferenceGrant>>,
    pub backend_tls_policies: Vec<Sourced<BackendTLSPolicy>>,
    /// Read for their labels (Gateway listeners' `allowedRoutes` namespace selectors).
    pub namespaces: Vec<Sourced<Namespace>>,
    /// The tcp-services and udp-services ConfigMaps (layer 4 ports), and the CA bundles of
    /// BackendTLSPolicies.
    pub config_maps: Vec<Sourced<ConfigMap>>,
}

/// One object of any kind the store holds.
#[derive(Clone, Debug)]
pub enum Object {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    HTTPRoute(Arc<HTTPRoute>),
    GRPCRoute(Arc<GRPCRoute>),
    TLSRoute(Arc<TLSRoute>),
    TCPRoute(Arc<TCPRoute>),
    UDPRoute(Arc<UDPRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
    BackendTLSPolicy(Arc<BackendTLSPolicy>),
    Namespace(Arc<Namespace>),
    ConfigMap(Arc<ConfigMap>),
}

impl Object {
    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HTTPRoute(o) => &o.metadata,
            Object::GRPCRoute(o) => &o.metadata,
            Object::TLSRoute(o) => &o.metadata,
            Object::TCPRoute(o) => &o.metadata,
            Object::UDPRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::BackendTLSPolicy(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
        }
    }

    /// The identity of the object: kind, namespace (absent for cluster-scoped kinds) and name.
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        let (kind, namespaced) = match self {
            Object::Ingress(_) => ("ingress", true),
            Object::IngressClass(_) => ("ingressclass", false),
            Object::Service(_) => ("service", true),
            Object::EndpointSlice(_) => ("endpointslice", true),
            Object::Secret(_) => ("secret", true),
            Object::GatewayClass(_) => ("gatewayclass", false),
            Object::Gateway(_) => ("gateway", true),
            Object::HTTPRoute(_) => ("httproute", true),
            Object::GRPCRoute(_) => ("grpcroute", true),
            Object::TLSRoute(_) => ("tlsroute", true),
            Object::TCPRoute(_) => ("tcproute", true),
            Object::UDPRoute(_) => ("udproute", true),
            Object::ReferenceGrant(_) => ("referencegrant", true),
            Object::BackendTLSPolicy(_) => ("backendtlspolicy", true),
            Object::Namespace(_) => ("namespace", false),
            Object::ConfigMap(_) => ("configmap", true),
        };
        ObjectKey {
            kind,
            namespace: namespaced.then(|| namespace_of(meta).to_string()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// Kind, namespace and name: how warnings name an object (`ingress default/shop`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of a namespaced object.
    pub fn namespaced(kind: &'static str, meta: &ObjectMeta) -> Self {
        Self {
            kind,
            namespace: Some(namespace_of(meta).to_string()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// The namespace of an object, `default` where the manifest leaves it out (as kubectl does).
pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// The objects of one kind by (namespace, name), for lookups while translating.
pub fn index<T: Metadata<Ty = ObjectMeta>>(objects: &[Sourced<T>]) -> HashMap<(&str, &str), &T> {
    objects
        .iter()
        .map(|Sourced { object, .. }| {
            let meta = object.metadata();
            (
                (namespace_of(meta), meta.name.as_deref().unwrap_or("")),
                &**object,
            )
        })
        .collect()
}

/// The object `namespace/name` among `objects`.
/// The objects by namespace and name, for looking many of them up (`find` walks the list); the
/// first of two with the same name is the one found, as with `find`.
pub fn by_name<T: kube::Resource>(objects: &[Sourced<T>]) -> HashMap<(&str, &str), &Sourced<T>> {
    let mut index = HashMap::with_capacity(objects.len());
    for sourced in objects {
        let meta = sourced.object.meta();
        if let Some(name) = meta.name.as_deref() {
            index.entry((namespace_of(meta), name)).or_insert(sourced);
        }
    }
    index
}

pub fn find<'a, T: kube::Resource>(
    objects: &'a [Sourced<T>],
    namespace: &str,
    name: &str,
) -> Option<&'a Sourced<T>> {
    objects.iter().find(|sourced| {
        let meta = sourced.object.meta();
        namespace_of(meta) == namespace && meta.name.as_deref() == Some(name)
    })
}

impl Store {
    /// Adds one object, keeping its source.
    pub fn insert(&mut self, source: Option<String>, object: Object) {
        match object {
            Object::Ingress(o) => self.ingresses.push(Sourced { source, object: o }),
            Object::IngressClass(o) => self.ingress_classes.push(Sourced { source, object: o }),
            Object::Service(o) => self.services.push(Sourced { source, object: o }),
            Object::EndpointSlice(o) => self.endpoint_slices.push(Sourced { source, object: o }),
            Object::Secret(o) => self.secrets.push(Sourced { source, object: o }),
            Object::GatewayClass(o) => self.gateway_classes.push(Sourced { source, object: o }),
            Object::Gateway(o) => self.gateways.push(Sourced { source, object: o }),
            Object::HTTPRoute(o) => self.http_routes.push(Sourced { source, object: o }),
            Object::GRPCRoute(o) => self.grpc_routes.push(Sourced { source, object: o }),
            Object::TLSRoute(o) => self.tls_routes.push(Sourced { source, object: o }),
            Object::TCPRoute(o) => self.tcp_routes.push(Sourced { source, object: o }),
            Object::UDPRoute(o) => self.udp_routes.push(Sourced { source, object: o }),
            Object::ReferenceGrant(o) => self.reference_grants.push(Sourced { source, object: o }),
            Object::BackendTLSPolicy(o) => self
                .backend_tls_policies
                .push(Sourced { source, object: o }),
            Object::Namespace(o) => self.namespaces.push(Sourced { source, object: o }),
            Object::ConfigMap(o) => self.config_maps.push(Sourced { source, object: o }),
        }
    }
}
