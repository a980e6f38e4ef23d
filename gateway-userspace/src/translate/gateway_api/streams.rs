//! TLSRoute, TCPRoute and UDPRoute on a Gateway's TLS (Passthrough), TCP and UDP listeners:
//! attached as HTTPRoutes are (parents, allowedRoutes, hostnames), each rule's weighted
//! backends resolved the same way. A TCP or UDP listener carries one route, the oldest; a TLS
//! listener carries one route per server name, the oldest for each.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use super::{
    Attachable, Bind, Grants, RefProblems, RouteNamespace, RouteView, age_key, attach, backends,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::gateway_api::StreamRouteSpec;
use crate::snapshot::ListenerKind;
use crate::snapshot::listener::{Condition, ObjectReport, ParentReport, WeightedBackends};
use crate::snapshot::stream::{ProxyProtocol, ServerNames, StreamRoute};
use crate::store::{Sourced, Store, namespace_of};
use crate::translate::backend::BackendResolver;

/// The annotation that asks for a PROXY protocol header to the backends of a TCPRoute or
/// TLSRoute: `v1` or `v2`.
pub const PROXY_PROTOCOL_ANNOTATION: &str = "xdp-gateway.io/proxy-protocol";

/// What one TLS, TCP or UDP listener carries.
pub enum Carried {
    /// TCP or UDP: every connection (flow) goes to one route.
    Port(Arc<StreamRoute>),
    /// TLS: by server name.
    Names(ServerNames),
}

/// The routes of TLS, TCP and UDP listeners, by the address they are served on.
#[derive(Debug, Default)]
pub struct ListenerStreams {
    pub tcp: HashMap<SocketAddr, Arc<StreamRoute>>,
    pub udp: HashMap<SocketAddr, Arc<StreamRoute>>,
    pub tls: HashMap<SocketAddr, Arc<ServerNames>>,
}

impl ListenerStreams {
    /// Serves what a listener of `kind` carries (nothing: its connections are closed) at each
    /// of its addresses, all sharing one table.
    pub fn add(&mut self, addrs: &[SocketAddr], kind: ListenerKind, carried: Option<Carried>) {
        match carried {
            Some(Carried::Port(route)) => {
                let table = match kind {
                    ListenerKind::Udp => &mut self.udp,
                    _ => &mut self.tcp,
                };
                table.extend(addrs.iter().map(|addr| (*addr, route.clone())));
            }
            Some(Carried::Names(names)) => {
                let names = Arc::new(names);
                (self.tls).extend(addrs.iter().map(|addr| (*addr, names.clone())));
            }
            None => {}
        }
    }
}

/// Attaches every TLSRoute, TCPRoute and UDPRoute of `store` (oldest first), adding their
/// reports; what each listener carries, by its bind and kind.
pub fn translate(
    store: &Store,
    attachable: &[Attachable<'_>],
    (grants, labels): (&Grants<'_>, &HashMap<&str, &BTreeMap<String, String>>),
    resolver: &mut BackendResolver<'_>,
    reports: &mut Vec<ObjectReport>,
) -> BTreeMap<(Bind, ListenerKind), Carried> {
    let mut routes: Vec<StreamRouteView<'_>> = Vec::new();
    routes.extend(
        store
            .tls_routes
            .iter()
            .map(|r| view("TLSRoute", r, &r.object.spec.route)),
    );
    routes.extend(
        store
            .tcp_routes
            .iter()
            .map(|r| view("TCPRoute", r, &r.object.spec.route)),
    );
    routes.extend(
        store
            .udp_routes
            .iter()
            .map(|r| view("UDPRoute", r, &r.object.spec.route)),
    );
    routes.sort_by_key(|route| age_key(route.meta));
    let mut carried: BTreeMap<(Bind, ListenerKind), Carried> = BTreeMap::new();
    for StreamRouteView {
        kind,
        meta,
        source,
        spec,
    } in routes
    {
        let namespace = namespace_of(meta);
        let name = meta.name.clone().unwrap_or_default();
        let from = RouteNamespace {
            name: namespace,
            labels: labels.get(namespace).copied(),
        };
        let view = RouteView {
            kind,
            grpc: false,
            meta,
            source,
            parent_refs: &spec.parent_refs,
            hostnames: &spec.hostnames,
            rules: Vec::new(),
        };
        let mut parents = Vec::new();
        let mut placements = Vec::new();
        for parent in &spec.parent_refs {
            let Some(outcome) = attach(parent, &view, &from, attachable, reports) else {
                continue;
            };
            let conditions = match outcome {
                Ok(found) => {
                    placements.extend(found.into_iter().map(|p| (parent.clone(), p)));
                    vec![Condition::new("Accepted", true, "Accepted", "attached")]
                }
                Err(condition) => vec![condition],
            };
            parents.push(ParentReport {
                parent_ref: parent.clone(),
                conditions,
            });
        }
        if parents.is_empty() {
            continue;
        }
        let mut refs = RefProblems::default();
        let mut choices = Vec::new();
        for (i, rule) in spec.rules.iter().enumerate() {
            let field = format!("spec.rules[{i}]");
            let refs_of_rule = &rule.backend_refs;
            let (split, _) = backends(
                refs_of_rule,
                (kind, namespace),
                &field,
                grants,
                resolver,
                &mut refs,
            );
            choices.extend(split.choices);
        }
        let send_proxy_protocol = match proxy_protocol(meta, kind) {
            Ok(version) => version,
            Err(problem) => {
                refs.unsupported.push(problem);
                None
            }
        };
        let route = Arc::new(StreamRoute {
            owner: format!("{kind} {namespace}/{name}"),
            backends: WeightedBackends {
                total: choices.iter().map(|c| c.weight).sum(),
                choices,
            },
            accept_proxy_protocol: false,
            send_proxy_protocol,
        });
        // A route that asks for what cannot be done is not served anywhere.
        let mut taken_by: HashMap<_, String> = HashMap::new();
        if refs.unsupported.is_empty() {
            for (parent, placement) in placements {
                let kind = match placement.protocol.as_str() {
                    "TLS" => ListenerKind::Tls,
                    "TCP" => ListenerKind::Tcp,
                    _ => ListenerKind::Udp,
                };
                let key = (placement.bind, kind);
                match carried.get_mut(&key) {
                    None if kind == ListenerKind::Tls => {
                        let mut names = ServerNames::default();
                        add_names(&mut names, &placement.hosts, &route);
                        carried.insert(key, Carried::Names(names));
                    }
                    None => {
                        carried.insert(key, Carried::Port(route.clone()));
                    }
                    Some(Carried::Names(names)) => add_names(names, &placement.hosts, &route),
                    Some(Carried::Port(other)) => {
                        taken_by.insert(parent, other.owner.clone());
                    }
                }
            }
        }
        let resolved = refs.resolved_condition();
        let unsupported = (!refs.unsupported.is_empty()).then(|| refs.unsupported.join("; "));
        for parent in &mut parents {
            if !parent.conditions[0].status {
                continue;
            }
            if let Some(problem) = &unsupported {
                parent.conditions[0] =
                    Condition::new("Accepted", false, "UnsupportedValue", problem.clone());
            } else if let Some(owner) = taken_by.get(&parent.parent_ref) {
                let message = format!("the listener already carries {owner} (the older route)");
                parent.conditions[0] = Condition::new("Accepted", false, "Conflicted", message);
            }
            parent.conditions.push(resolved.clone());
        }
        reports.push(ObjectReport {
            kind,
            namespace: Some(namespace.to_string()),
            name,
            source: source.clone(),
            parents,
            ..ObjectReport::default()
        });
    }
    carried
}

/// A TLSRoute, TCPRoute or UDPRoute, as translating sees it.
struct StreamRouteView<'a> {
    kind: &'static str,
    meta: &'a ObjectMeta,
    source: &'a Option<String>,
    spec: &'a StreamRouteSpec,
}

fn view<'a, T: kube::Resource<DynamicType = ()>>(
    kind: &'static str,
    sourced: &'a Sourced<T>,
    spec: &'a StreamRouteSpec,
) -> StreamRouteView<'a> {
    StreamRouteView {
        kind,
        meta: sourced.object.meta(),
        source: &sourced.source,
        spec,
    }
}

/// Routes the server names `hosts` to `route`, where no older route has them.
fn add_names(names: &mut ServerNames, hosts: &[String], route: &Arc<StreamRoute>) {
    names.any_depth = true;
    for host in hosts {
        if host == "*" {
            names.any.get_or_insert_with(|| route.clone());
            continue;
        }
        let (table, name) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut names.wildcard, suffix),
            None => (&mut names.exact, host.as_str()),
        };
        table
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| route.clone());
    }
}

/// The PROXY protocol version a route's annotation asks for.
fn proxy_protocol(meta: &ObjectMeta, kind: &str) -> Result<Option<ProxyProtocol>, String> {
    let Some(value) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROXY_PROTOCOL_ANNOTATION))
    else {
        return Ok(None);
    };
    match (value.as_str(), kind) {
        (_, "UDPRoute") => Err(format!(
            "metadata.annotations[{PROXY_PROTOCOL_ANNOTATION}]: the PROXY protocol is for TCPRoutes and TLSRoutes"
        )),
        ("v1", _) => Ok(Some(ProxyProtocol::V1)),
        ("v2", _) => Ok(Some(ProxyProtocol::V2)),
        (other, _) => Err(format!(
            "metadata.annotations[{PROXY_PROTOCOL_ANNOTATION}]: {other:?} is not v1 or v2"
        )),
    }
}
