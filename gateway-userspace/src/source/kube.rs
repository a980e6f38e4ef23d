//! The Kubernetes API as a source: reflectors (list, then watch, re-listed with backoff after
//! errors, disconnects or 410 Gone) for Ingress, IngressClass, Service, EndpointSlice and Secrets
//! (TLS and Opaque), the tcp-services and udp-services ConfigMaps by name, and for GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, UDPRoute, ReferenceGrant, BackendTLSPolicy (with the ConfigMaps of its CA bundles) and Namespace
//! (its labels, for listeners' namespace selectors) where the cluster serves the Gateway API, feeding the same `Store` as the manifests folder. Nothing is handed on
//! before every kind has completed its first full list; after that, changes are debounced into
//! one store.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store as Reader};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::gateway_api::{
    BackendTLSPolicy, GROUP, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant, TCPRoute,
    TLSRoute, UDPRoute,
};
use crate::store::{Sourced, Store};

/// Changes within this window are published together.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct KubeSource {
    /// Only this namespace (a per-project gateway); all namespaces when `None`.
    pub namespace: Option<String>,
    /// ConfigMaps by (namespace, name): the tcp-services and udp-services ones.
    pub config_maps: Vec<(String, String)>,
}

/// The reflector stores of every kind.
struct Readers {
    ingresses: Reader<Ingress>,
    ingress_classes: Reader<IngressClass>,
    services: Reader<Service>,
    endpoint_slices: Reader<EndpointSlice>,
    /// Certificates (`kubernetes.io/tls`) and `Opaque` Secrets (htpasswd files, CA bundles).
    secrets: [Reader<Secret>; 2],
    /// One reader per named ConfigMap, each watching that one object.
    config_maps: Vec<Reader<ConfigMap>>,
    /// `None` where the cluster does not serve the Gateway API.
    gateway_api: Option<GatewayReaders>,
}

struct GatewayReaders {
    classes: Reader<GatewayClass>,
    gateways: Reader<Gateway>,
    routes: Reader<HTTPRoute>,
    grants: Reader<ReferenceGrant>,
    /// `None` where the cluster's Gateway API has no GRPCRoute (before v1.1), and no
    /// TLSRoute, TCPRoute or UDPRoute (standard channel before v1.5).
    grpc_routes: Option<Reader<GRPCRoute>>,
    tls_routes: Option<Reader<TLSRoute>>,
    tcp_routes: Option<Reader<TCPRoute>>,
    udp_routes: Option<Reader<UDPRoute>>,
    /// BackendTLSPolicies, and every ConfigMap of the watched namespaces for their CA bundles,
    /// where the cluster serves BackendTLSPolicy v1 (Gateway API v1.4 and later).
    backend_tls: Option<(Reader<BackendTLSPolicy>, Reader<ConfigMap>)>,
    /// For listeners' namespace selectors; `None` for a gateway of one namespace (which may
    /// not list namespaces: its selectors admit nothing).
    namespaces: Option<Reader<Namespace>>,
}

/// The Gateway API resources the gateway reads, as the group's discovery document names them.
const GATEWAY_RESOURCES: [&str; 4] = [
    "gatewayclasses",
    "gateways",
    "httproutes",
    "referencegrants",
];

impl Readers {
    fn store(&self) -> Store {
        fn all<K: Clone + kube::Resource<DynamicType = ()> + 'static>(
            reader: &Reader<K>,
        ) -> Vec<Sourced<K>> {
            reader
                .state()
                .iter()
                .map(|o| Sourced::unsourced(o.clone()))
                .collect()
        }
        fn some<K: Clone + kube::Resource<DynamicType = ()> + 'static>(
            reader: &Option<Reader<K>>,
        ) -> Vec<Sourced<K>> {
            reader.as_ref().map_or_else(Vec::new, all)
        }
        let mut store = match &self.gateway_api {
            Some(g) => Store {
                gateway_classes: all(&g.classes),
                gateways: all(&g.gateways),
                http_routes: all(&g.routes),
                reference_grants: all(&g.grants),
                grpc_routes: some(&g.grpc_routes),
                tls_routes: some(&g.tls_routes),
                tcp_routes: some(&g.tcp_routes),
                udp_routes: some(&g.udp_routes),
                backend_tls_policies: g
                    .backend_tls
                    .as_ref()
                    .map_or_else(Vec::new, |(p, _)| all(p)),
                namespaces: some(&g.namespaces),
                ..Store::default()
            },
            None => Store::default(),
        };
        store.ingresses = all(&self.ingresses);
        store.ingress_classes = all(&self.ingress_classes);
        store.services = all(&self.services);
        store.endpoint_slices = all(&self.endpoint_slices);
        store.secrets = self.secrets.iter().flat_map(all).collect();
        store.config_maps = self.config_maps.iter().flat_map(all).collect();
        if let Some((_, config_maps)) = self
            .gateway_api
            .as_ref()
            .and_then(|g| g.backend_tls.as_ref())
        {
            store.config_maps.extend(all(config_maps));
        }
        store
    }
}

impl KubeSource {
    /// Watches until the task is dropped, calling `on_change` with the whole store once every
    /// kind is listed, then after every (debounced) change.
    pub async fn watch(self, client: Client, mut on_change: impl FnMut(Store)) {
        let (changed, mut changes) = mpsc::channel::<()>(1);
        let namespaced =
            |client: &Client| -> (Api<Ingress>, Api<Service>, Api<EndpointSlice>, Api<Secret>) {
                match &self.namespace {
                    Some(ns) => (
                        Api::namespaced(client.clone(), ns),
                        Api::namespaced(client.clone(), ns),
                        Api::namespaced(client.clone(), ns),
                        Api::namespaced(client.clone(), ns),
                    ),
                    None => (
                        Api::all(client.clone()),
                        Api::all(client.clone()),
                        Api::all(client.clone()),
                        Api::all(client.clone()),
                    ),
                }
            };
        let (ingresses, services, slices, secrets) = namespaced(&client);
        let gateway_api = serves_gateway_api(&client).await;
        let classes: Api<IngressClass> = Api::all(client.clone());
        let config = watcher::Config::default();
        let readers = Readers {
            ingresses: reflect(ingresses, config.clone(), changed.clone()),
            ingress_classes: reflect(classes, config.clone(), changed.clone()),
            services: reflect(services, config.clone(), changed.clone()),
            endpoint_slices: reflect(slices, config.clone(), changed.clone()),
            // Only the types annotations can name: service account tokens, Helm releases and
            // the like are none of the gateway's business.
            secrets: ["kubernetes.io/tls", "Opaque"].map(|kind| {
                let of_kind = config.clone().fields(&format!("type={kind}"));
                reflect(secrets.clone(), of_kind, changed.clone())
            }),
            config_maps: (self.config_maps.iter())
                .map(|(namespace, name)| {
                    let api = Api::namespaced(client.clone(), namespace);
                    let one = config.clone().fields(&format!("metadata.name={name}"));
                    reflect(api, one, changed.clone())
                })
                .collect(),
            gateway_api: gateway_api.map(|served| {
                let namespace = self.namespace.as_deref();
                let optional = |plural: &str| served.iter().any(|r| r == plural);
                GatewayReaders {
                    classes: reflect(Api::all(client.clone()), config.clone(), changed.clone()),
                    gateways: reflect(scoped(&client, namespace), config.clone(), changed.clone()),
                    routes: reflect(scoped(&client, namespace), config.clone(), changed.clone()),
                    grants: reflect(scoped(&client, namespace), config.clone(), changed.clone()),
                    grpc_routes: optional("grpcroutes").then(|| {
                        reflect(scoped(&client, namespace), config.clone(), changed.clone())
                    }),
                    tls_routes: optional("tlsroutes").then(|| {
                        reflect(scoped(&client, namespace), config.clone(), changed.clone())
                    }),
                    tcp_routes: optional("tcproutes").then(|| {
                        reflect(scoped(&client, namespace), config.clone(), changed.clone())
                    }),
                    udp_routes: optional("udproutes").then(|| {
                        reflect(scoped(&client, namespace), config.clone(), changed.clone())
                    }),
                    backend_tls: optional("backendtlspolicies").then(|| {
                        let policies = scoped(&client, namespace);
                        let config_maps = scoped(&client, namespace);
                        (
                            reflect(policies, config.clone(), changed.clone()),
                            reflect(config_maps, config.clone(), changed.clone()),
                        )
                    }),
                    namespaces: namespace.is_none().then(|| {
                        reflect(Api::all(client.clone()), config.clone(), changed.clone())
                    }),
                }
            }),
        };
        let listed = tokio::try_join!(
            readers.ingresses.wait_until_ready(),
            readers.ingress_classes.wait_until_ready(),
            readers.services.wait_until_ready(),
            readers.endpoint_slices.wait_until_ready(),
            futures_util::future::try_join_all(
                readers.secrets.iter().map(|r| r.wait_until_ready())
            ),
            futures_util::future::try_join_all(
                readers.config_maps.iter().map(|r| r.wait_until_ready())
            ),
            async {
                match &readers.gateway_api {
                    Some(g) => tokio::try_join!(
                        g.classes.wait_until_ready(),
                        g.gateways.wait_until_ready(),
                        g.routes.wait_until_ready(),
                        g.grants.wait_until_ready(),
                        ready(&g.grpc_routes),
                        ready(&g.tls_routes),
                        ready(&g.tcp_routes),
                        ready(&g.udp_routes),
                        async {
                            match &g.backend_tls {
                                Some((policies, config_maps)) => tokio::try_join!(
                                    policies.wait_until_ready(),
                                    config_maps.wait_until_ready()
                                )
                                .map(drop),
                                None => Ok(()),
                            }
                        },
                        ready(&g.namespaces),
                    )
                    .map(drop),
                    None => Ok(()),
                }
            },
        );
        if listed.is_err() {
            return;
        }
        tracing::info!("Kubernetes objects listed");
        loop {
            on_change(readers.store());
            if changes.recv().await.is_none() {
                return;
            }
            tokio::time::sleep(DEBOUNCE).await;
            while changes.try_recv().is_ok() {}
        }
    }
}

/// Until an optional reader has listed its kind (at once where there is none).
async fn ready<K: kube::Resource<DynamicType = ()> + Clone>(
    reader: &Option<Reader<K>>,
) -> Result<(), reflector::store::WriterDropped> {
    match reader {
        Some(reader) => reader.wait_until_ready().await,
        None => Ok(()),
    }
}

/// The objects of kind `K` in `namespace`, or in every namespace.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Whether the cluster serves the Gateway API kinds the gateway reads (its CRDs are installed),
/// and if so, every resource of the group (GRPCRoute, TLSRoute, ... are optional). Checked
/// once at start: CRDs installed later are read after a restart.
async fn serves_gateway_api(client: &Client) -> Option<Vec<String>> {
    let group_version = format!("{GROUP}/v1");
    match client.list_api_group_resources(&group_version).await {
        Ok(list) => {
            let missing: Vec<&str> = GATEWAY_RESOURCES
                .into_iter()
                .filter(|plural| !list.resources.iter().any(|r| r.name == *plural))
                .collect();
            if missing.is_empty() {
                return Some(list.resources.into_iter().map(|r| r.name).collect());
            }
            tracing::warn!(
                ?missing,
                "{group_version} lacks resources the gateway reads: Gateway API objects are not watched"
            );
            None
        }
        Err(error) => {
            tracing::info!(%error, "the cluster does not serve {group_version} (the Gateway API CRDs are not installed): Gateway API objects are not watched");
            None
        }
    }
}

/// Starts a reflector for `api` and returns its store; every event signals `changed`.
fn reflect<K>(api: Api<K>, config: watcher::Config, changed: mpsc::Sender<()>) -> Reader<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    let watched = watcher(api, config).modify(forget_field_managers);
    let stream = reflector::reflector(writer, watched).default_backoff();
    tokio::spawn(drive(stream, kind, changed));
    reader
}

/// `metadata.managedFields`, which the API server sends with every object and no part of the
/// gateway reads, is not kept: it is often as large as the rest of an Ingress. (A console edit
/// replaces an object without it; the API server then keeps the object's own.)
fn forget_field_managers<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

async fn drive<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    kind: String,
    changed: mpsc::Sender<()>,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            // The list restarting and its pages carry no complete state yet: wait for its end.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => {
                let _ = changed.try_send(());
            }
            Err(error) => {
                // The watcher backs off and lists again; the last table keeps serving.
                tracing::warn!(kind, %error, "watching the API server failed; retrying");
            }
        }
    }
}

/// A client from `--kubeconfig`, else KUBECONFIG / ~/.kube/config, else in-cluster config.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}
