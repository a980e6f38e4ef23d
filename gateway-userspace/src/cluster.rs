//! What the gateway writes back to the cluster, from one replica only (the holder of a
//! `coordination.k8s.io` Lease): the address of every Ingress it serves in
//! `status.loadBalancer.ingress` (never touching other Ingresses, never rewriting a status that
//! is already right), and an Event for every warning about an Ingress (once per warning).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};

use crate::gateway_api::{GROUP, RouteStatus};
use crate::gateway_status::wanted;
use crate::snapshot::listener::ObjectReport;
use crate::snapshot::{IngressReport, Snapshot};
use crate::store::{Store, by_name, find, namespace_of};
use crate::translate::GatewayOptions;
use crate::warning::Warning;

/// Reports without parents for the routes whose status still has an entry of `controller`
/// though none of their parents is one of its Gateways any more: writing them removes the
/// entries (those of other controllers stay).
fn routes_no_longer_ours(
    store: &Store,
    snapshot: &Snapshot,
    controller: &str,
) -> Vec<ObjectReport> {
    let reported: HashSet<(&str, Option<&str>, &str)> = snapshot
        .gateway_api
        .iter()
        .map(|r| (r.kind, r.namespace.as_deref(), r.name.as_str()))
        .collect();
    let ours = |status: &Option<RouteStatus>| {
        status
            .as_ref()
            .is_some_and(|s| s.parents.iter().any(|p| p.controller_name == controller))
    };
    fn kind<'a, T: kube::Resource<DynamicType = ()>>(
        name: &'static str,
        routes: &'a [crate::store::Sourced<T>],
        status: impl Fn(&T) -> &Option<RouteStatus> + 'a,
        ours: impl Fn(&Option<RouteStatus>) -> bool + 'a,
    ) -> impl Iterator<Item = (&'static str, &'a ObjectMeta)> + 'a {
        (routes.iter())
            .filter(move |r| ours(status(&r.object)))
            .map(move |r| (name, r.object.meta()))
    }
    let all = kind("HTTPRoute", &store.http_routes, |r| &r.status, ours)
        .chain(kind("GRPCRoute", &store.grpc_routes, |r| &r.status, ours))
        .chain(kind("TLSRoute", &store.tls_routes, |r| &r.status, ours))
        .chain(kind("TCPRoute", &store.tcp_routes, |r| &r.status, ours))
        .chain(kind("UDPRoute", &store.udp_routes, |r| &r.status, ours));
    all.filter(|(kind, meta)| {
        let name = meta.name.as_deref().unwrap_or_default();
        !reported.contains(&(*kind, Some(namespace_of(meta)), name))
    })
    .map(|(kind, meta)| ObjectReport {
        kind,
        namespace: Some(namespace_of(meta).to_string()),
        name: meta.name.clone().unwrap_or_default(),
        ..ObjectReport::default()
    })
    .collect()
}

/// The object a Gateway API report is about, as JSON, with its metadata.
fn gateway_object<'a>(
    store: &'a Store,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<(serde_json::Result<serde_json::Value>, &'a ObjectMeta)> {
    fn of<T: serde::Serialize + kube::Resource<DynamicType = ()>>(
        found: Option<&crate::store::Sourced<T>>,
    ) -> Option<(serde_json::Result<serde_json::Value>, &ObjectMeta)> {
        found.map(|o| (serde_json::to_value(&*o.object), o.object.meta()))
    }
    match kind {
        "GatewayClass" => of(find(&store.gateway_classes, namespace, name)),
        "Gateway" => of(find(&store.gateways, namespace, name)),
        "HTTPRoute" => of(find(&store.http_routes, namespace, name)),
        "GRPCRoute" => of(find(&store.grpc_routes, namespace, name)),
        "TLSRoute" => of(find(&store.tls_routes, namespace, name)),
        "TCPRoute" => of(find(&store.tcp_routes, namespace, name)),
        "UDPRoute" => of(find(&store.udp_routes, namespace, name)),
        _ => None,
    }
}

/// How long a Lease stays held without renewal.
const LEASE_SECONDS: i32 = 15;
/// How often the holder renews it (and others try to take it).
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Where the gateway is reached, for Ingress status.
#[derive(Clone, Debug, Default)]
pub struct PublishedAddress {
    /// `--publish-address`: IPs or host names, used as they are.
    pub addresses: Vec<String>,
    /// `--publish-service`: its LoadBalancer IPs and host names, or the node IPs for a
    /// NodePort Service.
    pub service: Option<(String, String)>,
    pub node_ips: Vec<IpAddr>,
}

impl PublishedAddress {
    /// The status entries, sorted, from the flags and the current objects.
    fn entries(&self, store: &Store) -> Vec<IngressLoadBalancerIngress> {
        let mut texts: Vec<String> = self.addresses.clone();
        if let Some((namespace, name)) = &self.service
            && let Some(service) = find(&store.services, namespace, name).map(|s| &s.object)
        {
            let balancer = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref());
            for ingress in balancer
                .and_then(|b| b.ingress.as_ref())
                .into_iter()
                .flatten()
            {
                texts.extend(ingress.ip.clone().or_else(|| ingress.hostname.clone()));
            }
            texts.extend(
                service
                    .spec
                    .as_ref()
                    .and_then(|s| s.external_ips.clone())
                    .unwrap_or_default(),
            );
            let node_port =
                service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("NodePort");
            if node_port {
                texts.extend(self.node_ips.iter().map(IpAddr::to_string));
            }
        }
        let mut entries: Vec<IngressLoadBalancerIngress> = texts
            .into_iter()
            .map(|text| {
                if text.parse::<IpAddr>().is_ok() {
                    IngressLoadBalancerIngress {
                        ip: Some(text),
                        ..Default::default()
                    }
                } else {
                    IngressLoadBalancerIngress {
                        hostname: Some(text),
                        ..Default::default()
                    }
                }
            })
            .collect();
        sort_entries(&mut entries);
        entries.dedup();
        entries
    }
}

/// One order for wanted and current status, so that equal sets compare equal.
fn sort_entries(entries: &mut [IngressLoadBalancerIngress]) {
    entries.sort_by(|a, b| (&a.ip, &a.hostname).cmp(&(&b.ip, &b.hostname)));
}

/// The writer: leadership, status, events.
pub struct ClusterWriter {
    client: Client,
    identity: String,
    lease_namespace: String,
    lease_name: String,
    leader: AtomicBool,
    address: PublishedAddress,
    recorder: Recorder,
    reported: Mutex<HashSet<Warning>>,
    /// The status last written to each Ingress, with the resourceVersion it was written over:
    /// until the watch brings the new version, the store still shows the old status.
    written: Mutex<HashMap<(String, String), WrittenStatus>>,
    /// Whose Gateway API objects these are, and where their Gateways are served.
    gateway: GatewayOptions,
    /// The resourceVersion each Gateway API object (by kind, namespace and name) had when its
    /// status was last written: not written again until the watch brings a newer one.
    written_gateway_api: Mutex<HashMap<GatewayObject, Option<String>>>,
}

/// A Gateway API object: kind, namespace (`default` for cluster-scoped kinds) and name.
type GatewayObject = (&'static str, String, String);

/// A status written, and the resourceVersion of the Ingress it was written over.
type WrittenStatus = (Option<String>, Vec<IngressLoadBalancerIngress>);

impl ClusterWriter {
    pub fn new(
        client: Client,
        identity: String,
        lease_namespace: String,
        lease_name: String,
        address: PublishedAddress,
        gateway: GatewayOptions,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "xdp-gateway".into(),
                instance: Some(identity.clone()),
            },
        );
        Self {
            client,
            identity,
            lease_namespace,
            lease_name,
            leader: AtomicBool::new(false),
            address,
            recorder,
            reported: Mutex::new(HashSet::new()),
            written: Mutex::new(HashMap::new()),
            gateway,
            written_gateway_api: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this replica writes.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// Takes or renews the Lease every few seconds, forever.
    pub async fn lead(self: std::sync::Arc<Self>) {
        loop {
            let leading = match self.try_lead().await {
                Ok(leading) => leading,
                Err(error) => {
                    tracing::warn!(%error, "leader election: cannot reach the Lease");
                    false
                }
            };
            if leading != self.leader.swap(leading, Ordering::AcqRel) {
                tracing::info!(identity = %self.identity, leading, "leadership changed");
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    async fn try_lead(&self) -> kube::Result<bool> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.lease_namespace);
        let now = Timestamp::now();
        let spec = |acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        };
        let Some(mut lease) = leases.get_opt(&self.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(None)),
            };
            return conflict_is_false(leases.create(&PostParams::default(), &lease).await);
        };
        let current = lease.spec.clone().unwrap_or_default();
        let mine = current.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = current.renew_time.as_ref().is_none_or(|renewed| {
            let duration = i64::from(current.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
            renewed.0 + SignedDuration::from_secs(duration) < now
        });
        if !mine && !expired {
            return Ok(false);
        }
        lease.spec = Some(spec(if mine { current.acquire_time } else { None }));
        // The resourceVersion from the read makes this a compare-and-swap: two replicas
        // taking over at once cannot both win.
        conflict_is_false(
            leases
                .replace(&self.lease_name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// After a table is published: status for every served Ingress, Events for new warnings.
    pub async fn write(&self, store: &Store, snapshot: &Snapshot) {
        if !self.is_leader() {
            return;
        }
        let wanted = self.address.entries(store);
        // Looked up by name: walking the list for each of 10,000 Ingresses took a second.
        let ingresses = by_name(&store.ingresses);
        for report in snapshot.ingresses.iter().filter(|r| r.served) {
            let name = (report.namespace.as_str(), report.name.as_str());
            let Some(ingress) = ingresses.get(&name).map(|i| &i.object) else {
                continue;
            };
            let mut have = ingress
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|b| b.ingress.clone())
                .unwrap_or_default();
            sort_entries(&mut have);
            let key = (report.namespace.clone(), report.name.clone());
            let version = ingress.metadata.resource_version.clone();
            let pending = self
                .written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                == Some(&(version.clone(), wanted.clone()));
            if have == wanted || pending {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &report.namespace);
            let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": wanted } } });
            match api
                .patch_status(&report.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %report.namespace, name = %report.name, "Ingress status updated");
                    self.written
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, (version, wanted.clone()));
                }
                Err(error) => {
                    tracing::warn!(namespace = %report.namespace, name = %report.name, %error, "cannot update Ingress status")
                }
            }
        }
        self.write_gateway_api(store, snapshot).await;
        self.report_warnings(store, snapshot).await;
    }

    /// The status of every Gateway API object this gateway is responsible for, and of routes
    /// it no longer serves (its entries among their parents removed).
    async fn write_gateway_api(&self, store: &Store, snapshot: &Snapshot) {
        let now = Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(Timestamp::now());
        let now = now.to_string();
        let cleared = routes_no_longer_ours(store, snapshot, &self.gateway.controller);
        for report in snapshot.gateway_api.iter().chain(&cleared) {
            let namespace = report.namespace.as_deref().unwrap_or("default");
            let found = gateway_object(store, report.kind, namespace, &report.name);
            let Some((Ok(object), meta)) = found else {
                continue;
            };
            let controller = &self.gateway.controller;
            let Some(status) = wanted(report, &object, controller, &now) else {
                continue;
            };
            let key = (report.kind, namespace.to_string(), report.name.clone());
            let version = meta.resource_version.clone();
            let pending = self
                .written_gateway_api
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                == Some(&version);
            if pending {
                continue;
            }
            let patch = Patch::Merge(serde_json::json!({ "status": status }));
            let params = PatchParams::default();
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", report.kind));
            let api: Api<DynamicObject> = match report.kind {
                "GatewayClass" => Api::all_with(self.client.clone(), &resource),
                _ => Api::namespaced_with(self.client.clone(), namespace, &resource),
            };
            let result = api
                .patch_status(&report.name, &params, &patch)
                .await
                .map(drop);
            match result {
                Ok(()) => {
                    tracing::info!(kind = report.kind, %namespace, name = %report.name, "status updated");
                    self.written_gateway_api
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, version);
                }
                Err(error) => {
                    tracing::warn!(kind = report.kind, %namespace, name = %report.name, %error, "cannot update status")
                }
            }
        }
    }

    async fn report_warnings(&self, store: &Store, snapshot: &Snapshot) {
        // Each new warning, with the Ingress its report is about.
        let fresh: Vec<(&IngressReport, Warning)> = {
            let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            snapshot
                .ingresses
                .iter()
                .flat_map(|r| r.warnings.iter().map(move |w| (r, w)))
                .filter(|(_, w)| reported.insert((*w).clone()))
                .map(|(r, w)| (r, w.clone()))
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        let ingresses = by_name(&store.ingresses);
        for (report, warning) in fresh {
            let name = (report.namespace.as_str(), report.name.as_str());
            let Some(ingress) = ingresses.get(&name).map(|i| &i.object) else {
                continue;
            };
            let reference = ObjectReference {
                api_version: Some("networking.k8s.io/v1".into()),
                kind: Some("Ingress".into()),
                namespace: Some(namespace_of(&ingress.metadata).to_string()),
                name: ingress.metadata.name.clone(),
                uid: ingress.metadata.uid.clone(),
                ..ObjectReference::default()
            };
            let note = if warning.field.is_empty() {
                warning.message.clone()
            } else {
                format!("{}: {}", warning.field, warning.message)
            };
            // The recorder folds Events with the same reason and action into one series
            // (keeping the first note): the field in the action keeps each problem its own.
            let action = match warning.field.as_str() {
                "" => "Translate".to_string(),
                field => format!("Translate {field}").chars().take(128).collect(),
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidIngress".into(),
                note: Some(note.chars().take(1000).collect()),
                action,
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(%error, object = %warning.object, "cannot publish an Event");
                // Try again with the next table.
                self.reported
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&warning);
            }
        }
    }
}

/// A 409 Conflict (someone else wrote first) is a lost election, not an error.
fn conflict_is_false<T>(result: kube::Result<T>) -> kube::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}
