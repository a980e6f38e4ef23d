//! Gateway API objects to listener tables: the GatewayClasses of this gateway's controller,
//! their Gateways' listeners (served on each Gateway address at the listener's port), and the
//! HTTPRoutes attached to them, in the precedence the Gateway API defines. Each object gets the
//! conditions the specification defines (in `/routes`, and on the API server from the leader).

mod backend_tls;
mod streams;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use regex::{Regex, RegexBuilder};

use super::backend::{BackendResolver, PortRef, ProblemKind};
use super::tls::TlsBuilder;
use crate::gateway_api::{
    BackendRef, GROUP, GRPCRoute, GRPCRouteMatch, Gateway, HTTPBackendRef, HTTPCORSFilter,
    HTTPHeader, HTTPHeaderFilter, HTTPPathMatch, HTTPPathModifier, HTTPRequestMirrorFilter,
    HTTPRoute, HTTPRouteFilter, HTTPRouteMatch, HTTPRouteTimeouts, HTTPValueMatch, Listener,
    ParentReference, ReferenceGrant,
};
use crate::policy::cors::{Origins, Tokens, tokens_of};
use crate::policy::{
    Cors, HeaderEdits, Mirror, MirrorTo, PathRewrite, Protocol, RedirectRule, RoutePolicy,
};
use crate::snapshot::listener::{
    Condition, ListenerReport, ListenerTable, MatchConditions, ObjectReport, ParentReport,
    ValueMatch, WeightedBackend, WeightedBackends,
};
use crate::snapshot::{
    Backend, ListenerKind, ListenerSpec, LookupMap, Names, PathType, Route, RouteIdentity,
    Snapshot, VirtualHost,
};
use crate::store::{ObjectKey, Sourced, Store, namespace_of};
use crate::warning::Warning;

/// How the Gateway API part of the table is made, besides the objects.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// GatewayClasses with this `spec.controllerName` are ours.
    pub controller: String,
    /// Where every Gateway's listeners are served when the Gateway names no address.
    pub addresses: Vec<IpAddr>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            controller: "xdp-gateway.io/gateway-controller".to_string(),
            addresses: vec![IpAddr::from([127, 0, 0, 1])],
        }
    }
}

/// The Gateway API part of a snapshot.
#[derive(Debug, Default)]
pub struct GatewayTables {
    /// The table of every address:port a Gateway listener is served on.
    pub listeners: LookupMap<SocketAddr, Arc<ListenerTable>>,
    /// The same addresses, and those of TLS, TCP and UDP listeners, for the sockets (kernel
    /// steering or direct binding).
    pub specs: Vec<ListenerSpec>,
    /// The routes of TLS, TCP and UDP listeners.
    pub streams: streams::ListenerStreams,
    pub reports: Vec<ObjectReport>,
    /// Every condition that says something is wrong, as a warning (for `gateway check`).
    pub warnings: Vec<Warning>,
}

/// Where a listener is served: its Gateway's addresses, at its port. Listeners with the same
/// `Bind` share one table (and so must not conflict).
type Bind = (Vec<IpAddr>, u16);

/// A listener that routes may attach to.
struct Attachable<'a> {
    gateway: &'a Gateway,
    listener: &'a Listener,
    bind: Bind,
    /// Its index in the Gateway's report.
    report: (usize, usize),
}

/// Where a route's rules go: a listener's addresses and port, and the host patterns they
/// serve there.
struct Placement {
    bind: Bind,
    /// The listener's protocol (`HTTP`, `TLS`, ...).
    protocol: String,
    hosts: Vec<String>,
}

/// Translates the Gateway API objects of `store`.
pub fn translate<'a>(
    store: &'a Store,
    options: &GatewayOptions,
    resolver: &mut BackendResolver<'_>,
    tls: &mut TlsBuilder<'a>,
    previous: &Snapshot,
    names: &mut Names,
) -> GatewayTables {
    let grants = Grants::new(&store.reference_grants);
    let mut reports = Vec::new();
    let mut tls_policies = backend_tls::BackendTlsPolicies::new(store, previous, &mut reports);
    let classes: Vec<&str> = store
        .gateway_classes
        .iter()
        .filter(|class| class.object.spec.controller_name == options.controller)
        .map(|class| {
            reports.push(ObjectReport {
                kind: "GatewayClass",
                name: class.object.metadata.name.clone().unwrap_or_default(),
                source: class.source.clone(),
                conditions: vec![
                    Condition::new("Accepted", true, "Accepted", "handled by this gateway"),
                    Condition::new("SupportedVersion", true, "SupportedVersion", "v1"),
                ],
                ..ObjectReport::default()
            });
            class.object.metadata.name.as_deref().unwrap_or_default()
        })
        .collect();

    let mut gateways: Vec<&Sourced<Gateway>> = store
        .gateways
        .iter()
        .filter(|g| classes.contains(&g.object.spec.gateway_class_name.as_str()))
        .collect();
    gateways.sort_by_key(|g| age_key(&g.object.metadata));
    let mut attachable = Vec::new();
    let mut ports: BTreeMap<(Bind, bool), PortClaim> = BTreeMap::new();
    let mut certificates = Certificates {
        tls,
        grants: &grants,
    };
    for sourced in gateways {
        let gateway = &sourced.object;
        let gateway_namespace = namespace_of(&gateway.metadata);
        let index = reports.len();
        let mut report = ObjectReport {
            kind: "Gateway",
            namespace: Some(gateway_namespace.to_string()),
            name: gateway.metadata.name.clone().unwrap_or_default(),
            source: sourced.source.clone(),
            ..ObjectReport::default()
        };
        let addresses = match gateway_addresses(gateway, &options.addresses) {
            Ok(addresses) => addresses,
            Err(message) => {
                report.conditions = vec![
                    Condition::new("Accepted", false, "UnsupportedAddress", message.clone()),
                    Condition::new("Programmed", false, "AddressNotUsable", message),
                ];
                reports.push(report);
                continue;
            }
        };
        report.addresses = addresses.clone();
        let mut programmed = 0;
        for listener in &gateway.spec.listeners {
            let (port, mut conditions) = check_listener(
                listener,
                (gateway_namespace, &addresses),
                &mut ports,
                &mut certificates,
            );
            let (supported_kinds, invalid_kinds) = route_kinds(listener);
            if let Some(message) = invalid_kinds {
                refuse_kinds(&mut conditions, message, supported_kinds.is_empty());
            }
            let accepted = conditions
                .iter()
                .any(|c| c.type_ == "Programmed" && c.status);
            if let (Some(port), true) = (port, accepted) {
                programmed += 1;
                attachable.push(Attachable {
                    gateway,
                    listener,
                    bind: (addresses.clone(), port),
                    report: (index, report.listeners.len()),
                });
            }
            report.listeners.push(ListenerReport {
                name: listener.name.clone(),
                port: port.unwrap_or(0),
                supported_kinds,
                attached_routes: 0,
                conditions,
            });
        }
        let all = gateway.spec.listeners.len();
        report.conditions = vec![
            Condition::new("Accepted", true, "Accepted", "handled by this gateway"),
            if programmed == all && all > 0 {
                Condition::new("Programmed", true, "Programmed", "every listener is served")
            } else {
                Condition::new(
                    "Programmed",
                    programmed > 0,
                    if programmed > 0 {
                        "Programmed"
                    } else {
                        "Invalid"
                    },
                    format!("{programmed} of {all} listeners are served"),
                )
            },
        ];
        reports.push(report);
    }

    let mut hosts: BTreeMap<Bind, BTreeMap<String, Vec<(RuleKey, Route)>>> = BTreeMap::new();
    let mut routes: Vec<RouteView<'_>> = store
        .http_routes
        .iter()
        .map(RouteView::http)
        .chain(store.grpc_routes.iter().map(RouteView::grpc))
        .collect();
    routes.sort_by_key(|r| age_key(r.meta));
    let labels: HashMap<&str, &BTreeMap<String, String>> = (store.namespaces.iter())
        .filter_map(|n| {
            Some((
                n.object.metadata.name.as_deref()?,
                n.object.metadata.labels.as_ref()?,
            ))
        })
        .collect();
    for (age, route) in routes.iter().enumerate() {
        let namespace = namespace_of(route.meta);
        let from = RouteNamespace {
            name: namespace,
            labels: labels.get(namespace).copied(),
        };
        let mut parents = Vec::new();
        let mut placements = Vec::new();
        for parent in route.parent_refs {
            let Some(outcome) = attach(parent, route, &from, &attachable, &mut reports) else {
                continue; // Another controller's parent: not ours to report on.
            };
            match outcome {
                Ok(found) => {
                    parents.push(ParentReport {
                        parent_ref: parent.clone(),
                        conditions: vec![Condition::new("Accepted", true, "Accepted", "attached")],
                    });
                    placements.extend(found);
                }
                Err(condition) => parents.push(ParentReport {
                    parent_ref: parent.clone(),
                    conditions: vec![condition],
                }),
            }
        }
        if parents.is_empty() {
            continue;
        }
        let owner = format!("{namespace}/{}", route.meta.name.as_deref().unwrap_or(""));
        let mut refs = RefProblems::default();
        let mut rules = Vec::new();
        for (rule_index, rule) in route.rules.iter().enumerate() {
            let field = format!("spec.rules[{rule_index}]");
            let filters = RuleFilters::parse(rule.filters).and_then(|mut filters| {
                filters.timeout = response_timeout(rule.timeouts)?;
                // A mirror whose backend cannot be used is left out (and reported): the
                // original requests are served all the same.
                filters.mirrors = (filters.mirror_refs.iter())
                    .filter_map(|(place, target, numerator, denominator)| {
                        let place = format!("{field}.{place}");
                        let resolved = resolve_ref(
                            target,
                            (route.kind, namespace),
                            &place,
                            &grants,
                            resolver,
                            &mut refs,
                        );
                        resolved.map(|(backend, _)| Mirror {
                            to: MirrorTo::Backend(backend),
                            numerator: *numerator,
                            denominator: *denominator,
                            body: true,
                        })
                    })
                    .collect();
                Ok(filters)
            });
            // A redirect answers by itself: the rule's backends are not used.
            let redirects = matches!(&filters, Ok(f) if f.redirect.is_some());
            let backends = (!redirects).then(|| {
                let (mut split, h2c) = backends(
                    rule.backend_refs,
                    (route.kind, namespace),
                    &field,
                    &grants,
                    resolver,
                    &mut refs,
                );
                tls_policies.apply(&mut split, resolver, &field, &mut refs);
                (split, h2c)
            });
            let h2c = backends.as_ref().is_some_and(|(_, h2c)| *h2c);
            let split = backends.map(|(split, _)| Arc::new(split));
            let own_filters = backend_filters(rule.backend_refs, &field, &mut refs);
            for (match_index, compiled) in rule.matches.iter().enumerate() {
                let compiled = match compiled {
                    Ok(compiled) => compiled,
                    Err(reason) => {
                        let place = format!("{field}.matches[{match_index}]");
                        refs.unsupported
                            .push(format!("{place}: {reason}; match ignored"));
                        continue;
                    }
                };
                // A rule whose filters cannot be applied answers 500: never the request
                // unfiltered.
                let policy = filters
                    .clone()
                    .and_then(|f| f.policy(compiled, route.grpc || h2c));
                let (policy, split) = match policy {
                    Ok(policy) => {
                        let split = match (&split, &filters, &own_filters) {
                            (Some(split), Ok(rule_filters), Some(own)) => {
                                let http2 = route.grpc || h2c;
                                let with = (rule_filters, compiled, http2);
                                let report = (field.as_str(), &mut refs);
                                Some(Arc::new(with_backend_filters(split, own, with, report)))
                            }
                            _ => split.clone(),
                        };
                        (policy, split)
                    }
                    Err(reason) => {
                        refs.unsupported
                            .push(format!("{field}.{reason}; the rule answers 500"));
                        let nothing = WeightedBackends {
                            choices: Vec::new(),
                            total: 0,
                        };
                        (RoutePolicy::plain(), Some(Arc::new(nothing)))
                    }
                };
                let key = RuleKey::new(compiled, age, rule_index, match_index);
                rules.push((key, compiled, policy, split));
            }
        }
        let resolved = refs.resolved_condition();
        let accepted_problem = (!refs.unsupported.is_empty()).then(|| refs.unsupported.join("; "));
        for parent in &mut parents {
            if parent.conditions[0].status {
                if let Some(problem) = &accepted_problem {
                    parent.conditions[0] =
                        Condition::new("Accepted", false, "UnsupportedValue", problem.clone());
                }
                parent.conditions.push(resolved.clone());
            }
        }
        for placement in &placements {
            for host in &placement.hosts {
                let rules_of_host = hosts
                    .entry(placement.bind.clone())
                    .or_default()
                    .entry(host.clone())
                    .or_default();
                let host_name = names.get(host);
                for (key, compiled, policy, split) in &rules {
                    let route = compiled.route(
                        &owner,
                        host_name.clone(),
                        policy.clone(),
                        split.clone(),
                        names,
                    );
                    rules_of_host.push((key.clone(), route));
                }
            }
        }
        reports.push(ObjectReport {
            kind: route.kind,
            namespace: Some(namespace.to_string()),
            name: route.meta.name.clone().unwrap_or_default(),
            source: route.source.clone(),
            parents,
            ..ObjectReport::default()
        });
    }

    let mut stream_binds = streams::translate(
        store,
        &attachable,
        (&grants, &labels),
        resolver,
        &mut reports,
    );
    let mut tables = GatewayTables {
        warnings: reports.iter().flat_map(warnings_of).collect(),
        reports,
        ..GatewayTables::default()
    };
    // Ports where no listener could be programmed are not served at all.
    let served: BTreeSet<(&Bind, &str)> = (attachable.iter())
        .map(|a| (&a.bind, a.listener.protocol.as_str()))
        .collect();
    for ((bind, _), claim) in &ports {
        if !served.contains(&(bind, claim.protocol.as_str())) {
            continue;
        }
        let (addresses, port) = bind;
        let kind = match claim.protocol.as_str() {
            "HTTPS" => ListenerKind::Https,
            "HTTP" => ListenerKind::Http,
            "TLS" => ListenerKind::Tls,
            "TCP" => ListenerKind::Tcp,
            _ => ListenerKind::Udp,
        };
        let mut serve = |addr: SocketAddr| tables.specs.push(ListenerSpec { addr, kind });
        if !matches!(kind, ListenerKind::Http | ListenerKind::Https) {
            let addrs: Vec<SocketAddr> = (addresses.iter())
                .map(|ip| SocketAddr::new(*ip, *port))
                .collect();
            addrs.iter().for_each(|addr| serve(*addr));
            let carried = stream_binds.remove(&(bind.clone(), kind));
            tables.streams.add(&addrs, kind, carried);
            continue;
        }
        let mut table = ListenerTable {
            tls: kind == ListenerKind::Https,
            ..ListenerTable::default()
        };
        for (host, mut rules) in hosts.remove(bind).unwrap_or_default() {
            rules.sort_by(|a, b| a.0.cmp(&b.0));
            let vhost = VirtualHost {
                name: names.get(&host),
                routes: rules.into_iter().map(|(_, route)| route).collect(),
                ..VirtualHost::default()
            };
            match host.strip_prefix("*.") {
                _ if host == "*" => table.any_host = Some(vhost),
                Some(suffix) => table.wildcard_hosts.push((suffix.to_string(), vhost)),
                None => {
                    table
                        .exact_hosts
                        .insert(vhost.name.clone(), Box::new(vhost));
                }
            }
        }
        // The most specific wildcard (the longest suffix) first.
        table
            .wildcard_hosts
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let table = Arc::new(table);
        for ip in addresses {
            let addr = SocketAddr::new(*ip, *port);
            serve(addr);
            tables.listeners.insert(addr, table.clone());
        }
    }
    tables
}

/// The first condition that says something is wrong, of each listener and each parent of a
/// route, as a warning on the object.
fn warnings_of(report: &ObjectReport) -> Vec<Warning> {
    let kind = match report.kind {
        "Gateway" => "gateway",
        "HTTPRoute" => "httproute",
        "GRPCRoute" => "grpcroute",
        "TLSRoute" => "tlsroute",
        "TCPRoute" => "tcproute",
        "UDPRoute" => "udproute",
        _ => "gatewayclass",
    };
    let key = ObjectKey {
        kind,
        namespace: report.namespace.clone(),
        name: report.name.clone(),
    };
    let wrong = |conditions: &[Condition]| {
        conditions
            .iter()
            .find(|c| c.status == (c.type_ == "Conflicted"))
            .map(|c| {
                let status = if c.status { "True" } else { "False" };
                format!("{} is {status} ({}): {}", c.type_, c.reason, c.message)
            })
    };
    let listeners = report
        .listeners
        .iter()
        .enumerate()
        .filter_map(|(i, listener)| {
            let message = wrong(&listener.conditions)?;
            Some((format!("spec.listeners[{i}]"), message))
        });
    let parents = report.parents.iter().filter_map(|parent| {
        let message = wrong(&parent.conditions)?;
        Some((
            "spec.parentRefs".to_string(),
            format!("parent {}: {message}", parent.parent_ref.name),
        ))
    });
    listeners
        .chain(parents)
        .map(|(field, message)| Warning::new(&key, report.source.as_deref(), field, message))
        .collect()
}

/// Oldest first, then by namespace and name: the Gateway API's tie-breaker.
fn age_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (Option<Time>, String, String) {
    (
        meta.creation_timestamp.clone(),
        namespace_of(meta).to_string(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// What the listeners on one port share: its protocol, and the hostnames already claimed.
struct PortClaim {
    protocol: String,
    hostnames: Vec<Option<String>>,
}

/// A listener's port and conditions; `None` for a port that cannot be served.
fn check_listener(
    listener: &Listener,
    (gateway_namespace, addresses): (&str, &[IpAddr]),
    ports: &mut BTreeMap<(Bind, bool), PortClaim>,
    certificates: &mut Certificates<'_, '_>,
) -> (Option<u16>, Vec<Condition>) {
    let Ok(port) = u16::try_from(listener.port)
        .map_err(drop)
        .and_then(|p| if p == 0 { Err(()) } else { Ok(p) })
    else {
        return (
            None,
            vec![Condition::new(
                "Accepted",
                false,
                "PortUnavailable",
                format!("port {} is not in 1-65535", listener.port),
            )],
        );
    };
    if route_kinds_of(&listener.protocol).is_empty() {
        return (
            Some(port),
            vec![Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                format!(
                    "protocol {} is not served (HTTP, HTTPS, TLS, TCP and UDP are)",
                    listener.protocol
                ),
            )],
        );
    }
    let https = listener.protocol == "HTTPS";
    let mode = listener.tls.as_ref().and_then(|tls| tls.mode.as_deref());
    let wrong_mode = match listener.protocol.as_str() {
        "HTTPS" if mode.is_some_and(|mode| mode != "Terminate") => {
            Some("only TLS mode Terminate is served on HTTPS listeners")
        }
        "TLS" if mode != Some("Passthrough") => Some(
            "TLS listeners are served in mode Passthrough (routed by server name to a TLSRoute's \
             backends, never decrypted); Terminate is not served",
        ),
        _ => None,
    };
    if let Some(message) = wrong_mode {
        return (
            Some(port),
            vec![Condition::new(
                "Accepted",
                false,
                "UnsupportedValue",
                message,
            )],
        );
    }
    if let Some(hostname) = &listener.hostname
        && let Err(reason) = check_hostname(hostname)
    {
        return (
            Some(port),
            vec![Condition::new("Accepted", false, "Invalid", reason)],
        );
    }
    // TCP and UDP listeners may share a port number: they are different sockets.
    let udp = listener.protocol == "UDP";
    let claim = ports
        .entry(((addresses.to_vec(), port), udp))
        .or_insert_with(|| PortClaim {
            protocol: listener.protocol.clone(),
            hostnames: Vec::new(),
        });
    let conflict = if claim.protocol != listener.protocol {
        Some((
            "ProtocolConflict",
            format!("port {port} is already {}", claim.protocol),
        ))
    } else if claim.hostnames.contains(&listener.hostname) {
        Some((
            "HostnameConflict",
            format!("another listener on port {port} has the same hostname"),
        ))
    } else {
        None
    };
    if let Some((reason, message)) = conflict {
        return (
            Some(port),
            vec![
                Condition::new("Accepted", false, reason, message.clone()),
                Condition::new("Conflicted", true, reason, message),
            ],
        );
    }
    claim.hostnames.push(listener.hostname.clone());
    let resolved = match https {
        true => certificates.attach(listener, gateway_namespace),
        false => Ok(()),
    };
    let mut conditions = vec![
        Condition::new("Accepted", true, "Accepted", "served"),
        Condition::new("Conflicted", false, "NoConflicts", ""),
    ];
    match resolved {
        Ok(()) => conditions.extend([
            Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
            Condition::new("Programmed", true, "Programmed", ""),
        ]),
        Err((reason, message)) => conditions.extend([
            Condition::new("ResolvedRefs", false, reason, message.clone()),
            Condition::new("Programmed", false, "Invalid", message),
        ]),
    }
    (Some(port), conditions)
}

/// A Gateway's addresses: its `spec.addresses` (of type `IPAddress`), else the gateway's
/// own (`--gateway-address`); why they cannot be used otherwise.
fn gateway_addresses(gateway: &Gateway, default: &[IpAddr]) -> Result<Vec<IpAddr>, String> {
    if gateway.spec.addresses.is_empty() {
        return Ok(default.to_vec());
    }
    let mut addresses = Vec::new();
    for (i, address) in gateway.spec.addresses.iter().enumerate() {
        let field = format!("spec.addresses[{i}]");
        match address.type_.as_deref().unwrap_or("IPAddress") {
            "IPAddress" => addresses.push(
                address
                    .value
                    .parse()
                    .map_err(|_| format!("{field}: {:?} is not an IP address", address.value))?,
            ),
            other => {
                return Err(format!(
                    "{field}: type {other} is not served (IPAddress is)"
                ));
            }
        }
    }
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// The route kinds a listener of `protocol` serves (none for a protocol not served).
fn route_kinds_of(protocol: &str) -> &'static [&'static str] {
    match protocol {
        "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
        "TLS" => &["TLSRoute"],
        "TCP" => &["TCPRoute"],
        "UDP" => &["UDPRoute"],
        _ => &[],
    }
}

/// The kinds of routes a listener admits, and what it asks for that is not served.
fn route_kinds(listener: &Listener) -> (Vec<&'static str>, Option<String>) {
    let served_kinds = route_kinds_of(&listener.protocol);
    let asked = listener
        .allowed_routes
        .as_ref()
        .map(|a| a.kinds.as_slice())
        .unwrap_or_default();
    if asked.is_empty() {
        return (served_kinds.to_vec(), None);
    }
    let mut supported = Vec::new();
    let mut invalid = Vec::new();
    for kind in asked {
        let served = (kind.group.as_deref().is_none_or(|g| g == GROUP))
            .then(|| served_kinds.iter().find(|k| **k == kind.kind))
            .flatten();
        match served {
            Some(served) => supported.push(*served),
            None => invalid.push(kind.kind.clone()),
        }
    }
    let problem = (!invalid.is_empty()).then(|| {
        format!(
            "allowedRoutes.kinds: {} not served on a {} listener ({} are)",
            invalid.join(", "),
            listener.protocol,
            served_kinds.join(" and ")
        )
    });
    (supported, problem)
}

fn refuse_kinds(conditions: &mut Vec<Condition>, message: String, none_left: bool) {
    let resolved = Condition::new("ResolvedRefs", false, "InvalidRouteKinds", message.clone());
    // A reference problem found before stays the reason.
    match conditions.iter_mut().find(|c| c.type_ == "ResolvedRefs") {
        Some(had) if had.status => *had = resolved,
        Some(_) => {}
        None => conditions.push(resolved),
    }
    if none_left && let Some(programmed) = conditions.iter_mut().find(|c| c.type_ == "Programmed") {
        *programmed = Condition::new("Programmed", false, "Invalid", message);
    }
}

/// A hostname as Gateway API listeners and routes allow it: a lower-case DNS name, or
/// `*.` before one.
fn check_hostname(hostname: &str) -> Result<(), String> {
    let name = hostname.strip_prefix("*.").unwrap_or(hostname);
    if hostname.parse::<IpAddr>().is_ok() {
        return Err(format!("{hostname:?} is an IP address, not a hostname"));
    }
    super::check_dns_name(name).map_err(|reason| format!("{hostname:?}: {reason}"))
}

/// Attaches a route to the listeners `parent` names: `None` when the parent is not one of
/// this gateway's Gateways, else where its rules go or why they go nowhere.
fn attach(
    parent: &ParentReference,
    route: &RouteView<'_>,
    from: &RouteNamespace<'_>,
    attachable: &[Attachable<'_>],
    reports: &mut [ObjectReport],
) -> Option<Result<Vec<Placement>, Condition>> {
    let is_gateway = parent.group.as_deref().is_none_or(|g| g == GROUP)
        && parent.kind.as_deref().is_none_or(|k| k == "Gateway");
    let parent_namespace = parent.namespace.as_deref().unwrap_or(from.name);
    let of_gateway: Vec<&Attachable<'_>> = attachable
        .iter()
        .filter(|a| {
            is_gateway
                && namespace_of(&a.gateway.metadata) == parent_namespace
                && a.gateway.metadata.name.as_deref() == Some(&parent.name)
        })
        .collect();
    if of_gateway.is_empty() {
        return None;
    }
    let named: Vec<&&Attachable<'_>> = of_gateway
        .iter()
        .filter(|a| {
            parent
                .section_name
                .as_deref()
                .is_none_or(|s| s == a.listener.name)
        })
        .filter(|a| parent.port.is_none_or(|p| i32::from(a.bind.1) == p))
        .collect();
    if named.is_empty() {
        return Some(Err(Condition::new(
            "Accepted",
            false,
            "NoMatchingParent",
            "no listener has this sectionName and port",
        )));
    }
    let allowed: Vec<&&&Attachable<'_>> = named
        .iter()
        .filter(|a| {
            allows(
                a.listener,
                namespace_of(&a.gateway.metadata),
                route.kind,
                from,
            )
        })
        .collect();
    if allowed.is_empty() {
        return Some(Err(Condition::new(
            "Accepted",
            false,
            "NotAllowedByListeners",
            "the listeners' allowedRoutes do not admit this route",
        )));
    }
    let mut placements = Vec::new();
    for listener in allowed {
        let hosts = intersect(listener.listener.hostname.as_deref(), route.hostnames);
        if hosts.is_empty() {
            continue;
        }
        let (gateway_index, listener_index) = listener.report;
        reports[gateway_index].listeners[listener_index].attached_routes += 1;
        placements.push(Placement {
            bind: listener.bind.clone(),
            protocol: listener.listener.protocol.clone(),
            hosts,
        });
    }
    if placements.is_empty() {
        return Some(Err(Condition::new(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            "no hostname of the route matches a listener's",
        )));
    }
    Some(Ok(placements))
}

/// The namespace a route is in, with its labels (when its Namespace object is known).
struct RouteNamespace<'a> {
    name: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
}

impl RouteNamespace<'_> {
    /// The value of a label; `kubernetes.io/metadata.name` is the name, as the API server
    /// sets it on every namespace.
    fn label(&self, key: &str) -> Option<&str> {
        match key {
            "kubernetes.io/metadata.name" => Some(self.name),
            key => self.labels?.get(key).map(String::as_str),
        }
    }

    /// Whether a label selector selects it; an operator that is not known selects nothing.
    fn selected_by(&self, selector: &LabelSelector) -> bool {
        let labels_ok = (selector.match_labels.iter().flatten())
            .all(|(key, value)| self.label(key) == Some(value.as_str()));
        let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
            let value = self.label(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            let listed = value.is_some_and(|v| values.iter().any(|x| x == v));
            match e.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        });
        labels_ok && expressions_ok
    }
}

/// Whether `listener` (of a Gateway in `gateway_namespace`) admits routes of `kind` from
/// `namespace`.
fn allows(
    listener: &Listener,
    gateway_namespace: &str,
    kind: &str,
    namespace: &RouteNamespace<'_>,
) -> bool {
    let allowed = listener.allowed_routes.as_ref();
    let kinds_ok = route_kinds_of(&listener.protocol).contains(&kind)
        && allowed.is_none_or(|a| {
            a.kinds.is_empty()
                || a.kinds
                    .iter()
                    .any(|k| k.kind == kind && k.group.as_deref().is_none_or(|g| g == GROUP))
        });
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    let namespace_ok = match namespaces.and_then(|n| n.from.as_deref()) {
        None | Some("Same") => namespace.name == gateway_namespace,
        Some("All") => true,
        // A `Selector` without a selector admits nothing (fail closed).
        Some("Selector") => (namespaces.and_then(|n| n.selector.as_ref()))
            .is_some_and(|selector| namespace.selected_by(selector)),
        _ => false,
    };
    kinds_ok && namespace_ok
}

/// The hostnames a route serves on a listener: the route's that the listener's covers, or the
/// listener's where a route's wildcard covers it; all of either where the other has none.
fn intersect(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let covers = |wildcard: &str, name: &str| {
        wildcard.strip_prefix("*.").is_some_and(|suffix| {
            name.len() > suffix.len() + 1
                && name.ends_with(suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        })
    };
    let Some(listener) = listener else {
        return if route.is_empty() {
            vec!["*".to_string()]
        } else {
            route.to_vec()
        };
    };
    if route.is_empty() {
        return vec![listener.to_string()];
    }
    let mut hosts: Vec<String> = route
        .iter()
        .filter_map(|host| {
            if host == listener || covers(listener, host) {
                Some(host.clone())
            } else if covers(host, listener) {
                Some(listener.to_string())
            } else {
                None
            }
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// ReferenceGrants by the namespace they grant access to.
struct Grants<'a>(HashMap<&'a str, Vec<&'a ReferenceGrant>>);

impl<'a> Grants<'a> {
    fn new(grants: &'a [Sourced<ReferenceGrant>]) -> Self {
        let mut by_namespace: HashMap<&str, Vec<&ReferenceGrant>> = HashMap::new();
        for grant in grants {
            by_namespace
                .entry(namespace_of(&grant.object.metadata))
                .or_default()
                .push(&grant.object);
        }
        Self(by_namespace)
    }

    /// Whether a `from_kind` (of this API group) in `from` may refer to the `to_kind` (of the
    /// core group) `to_namespace/name`.
    fn allow(
        &self,
        (from_kind, from): (&str, &str),
        (to_kind, to_namespace, name): (&str, &str, &str),
    ) -> bool {
        self.0.get(to_namespace).into_iter().flatten().any(|grant| {
            grant
                .spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from)
                && grant.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
    }
}

/// The certificates of HTTPS listeners, from their `tls.certificateRefs`.
struct Certificates<'t, 'a> {
    tls: &'t mut TlsBuilder<'a>,
    grants: &'t Grants<'a>,
}

impl Certificates<'_, '_> {
    /// Serves the certificates `listener` (of a Gateway in `namespace`) refers to, or says
    /// why it cannot: the reason and message of its ResolvedRefs condition.
    fn attach(
        &mut self,
        listener: &Listener,
        namespace: &str,
    ) -> Result<(), (&'static str, String)> {
        let refs = listener
            .tls
            .as_ref()
            .map_or(&[][..], |tls| &tls.certificate_refs[..]);
        if refs.is_empty() {
            let message = "an HTTPS listener needs tls.certificateRefs".to_string();
            return Err(("InvalidCertificateRef", message));
        }
        for (i, reference) in refs.iter().enumerate() {
            let field = format!("tls.certificateRefs[{i}]");
            let core_group = reference.group.as_deref().is_none_or(str::is_empty);
            if !core_group || reference.kind.as_deref().is_some_and(|k| k != "Secret") {
                let message = format!("{field}: only Secrets hold certificates");
                return Err(("InvalidCertificateRef", message));
            }
            let secret_namespace = reference.namespace.as_deref().unwrap_or(namespace);
            let granted = secret_namespace == namespace
                || self.grants.allow(
                    ("Gateway", namespace),
                    ("Secret", secret_namespace, &reference.name),
                );
            if !granted {
                let message = format!("{field}: no ReferenceGrant in {secret_namespace} allows it");
                return Err(("RefNotPermitted", message));
            }
            self.tls
                .add_listener(
                    secret_namespace,
                    &reference.name,
                    listener.hostname.as_deref(),
                )
                .map_err(|problem| ("InvalidCertificateRef", format!("{field}: {problem}")))?;
        }
        Ok(())
    }
}

/// Why references of a route could not be used, for its ResolvedRefs and Accepted conditions.
#[derive(Default)]
struct RefProblems {
    /// (reason, message) of the first unresolved reference.
    unresolved: Option<(&'static str, String)>,
    unsupported: Vec<String>,
}

impl RefProblems {
    fn add(&mut self, reason: &'static str, message: String) {
        self.unresolved.get_or_insert((reason, message));
    }

    fn resolved_condition(&self) -> Condition {
        match &self.unresolved {
            None => Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
            Some((reason, message)) => {
                Condition::new("ResolvedRefs", false, reason, message.clone())
            }
        }
    }
}

/// A rule's backends and their weights (for a route of `kind` in `namespace`), and whether
/// every one of them speaks h2c (its Service port's `appProtocol`); a reference that cannot be
/// used keeps its share, which is answered with 500.
fn backends(
    refs: &[HTTPBackendRef],
    (kind, namespace): (&str, &str),
    field: &str,
    grants: &Grants<'_>,
    resolver: &mut BackendResolver<'_>,
    problems: &mut RefProblems,
) -> (WeightedBackends, bool) {
    let mut choices = Vec::new();
    let mut h2c = !refs.is_empty();
    for (i, backend_ref) in refs.iter().enumerate() {
        let weight = backend_ref.weight.unwrap_or(1).max(0) as u32;
        let field = format!("{field}.backendRefs[{i}]");
        let resolved = resolve_ref(
            &backend_ref.backend,
            (kind, namespace),
            &field,
            grants,
            resolver,
            problems,
        );
        if let Some((_, speaks_h2c)) = &resolved {
            h2c &= *speaks_h2c;
        }
        choices.push(WeightedBackend {
            backend: resolved.map(|(backend, _)| backend),
            weight,
            policy: None,
        });
    }
    let total = choices.iter().map(|c| c.weight).sum();
    (WeightedBackends { choices, total }, h2c)
}

/// The filters of each backendRef (`Ok(None)` for one without), or why they cannot be
/// applied (reported, and that backend's share answers 500); `None` when no backendRef has
/// filters.
fn backend_filters(
    refs: &[HTTPBackendRef],
    field: &str,
    problems: &mut RefProblems,
) -> Option<Vec<Result<Option<RuleFilters>, ()>>> {
    if refs.iter().all(|r| r.filters.is_empty()) {
        return None;
    }
    let parse = |(i, backend_ref): (usize, &HTTPBackendRef)| {
        if backend_ref.filters.is_empty() {
            return Ok(None);
        }
        let parsed = RuleFilters::parse(&backend_ref.filters).and_then(|parsed| {
            if !parsed.mirror_refs.is_empty() {
                return Err("filters: RequestMirror is not served on a backend".to_string());
            }
            Ok(Some(parsed))
        });
        parsed.map_err(|reason| {
            problems.unsupported.push(format!(
                "{field}.backendRefs[{i}].{reason}; its share answers 500"
            ));
        })
    };
    Some(refs.iter().enumerate().map(parse).collect())
}

/// A rule's backends for one of its matches, each with its own filters after the rule's; a
/// backend whose filters cannot apply to this match keeps its share, answered with 500.
fn with_backend_filters(
    split: &WeightedBackends,
    own: &[Result<Option<RuleFilters>, ()>],
    (rule, compiled, http2): (&RuleFilters, &CompiledMatch, bool),
    (field, problems): (&str, &mut RefProblems),
) -> WeightedBackends {
    let mut choices = Vec::new();
    for (i, (choice, own)) in split.choices.iter().zip(own).enumerate() {
        let (backend, policy) = match own {
            Ok(None) => (choice.backend.clone(), None),
            Ok(Some(own)) => {
                let merged = rule.clone().with(own);
                match merged.and_then(|m| m.policy(compiled, http2)) {
                    Ok(policy) => (choice.backend.clone(), Some(policy)),
                    Err(reason) => {
                        let problem =
                            format!("{field}.backendRefs[{i}].{reason}; its share answers 500");
                        if !problems.unsupported.contains(&problem) {
                            problems.unsupported.push(problem);
                        }
                        (None, None)
                    }
                }
            }
            Err(()) => (None, None),
        };
        choices.push(WeightedBackend {
            backend,
            weight: choice.weight,
            policy,
        });
    }
    WeightedBackends {
        choices,
        total: split.total,
    }
}

/// The Service port a backendRef names, and whether it speaks h2c; `None` (with the problem
/// reported) when it cannot be used.
fn resolve_ref(
    target: &BackendRef,
    (kind, namespace): (&str, &str),
    field: &str,
    grants: &Grants<'_>,
    resolver: &mut BackendResolver<'_>,
    problems: &mut RefProblems,
) -> Option<(Arc<Backend>, bool)> {
    let target_namespace = target.namespace.as_deref().unwrap_or(namespace);
    if target.group.as_deref().is_some_and(|g| !g.is_empty())
        || target.kind.as_deref().is_some_and(|k| k != "Service")
    {
        problems.add(
            "InvalidKind",
            format!("{field}: only Services are backends"),
        );
        return None;
    }
    if target_namespace != namespace
        && !grants.allow(
            (kind, namespace),
            ("Service", target_namespace, &target.name),
        )
    {
        problems.add(
            "RefNotPermitted",
            format!("{field}: no ReferenceGrant in {target_namespace} allows it"),
        );
        return None;
    }
    let Some(port) = target
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
    else {
        problems.add(
            "UnsupportedValue",
            format!("{field}.port: a Service backend needs a port"),
        );
        return None;
    };
    let port = PortRef::Number(i32::from(port));
    let h2c = resolver.app_protocol(target_namespace, &target.name, &port) == Some(H2C);
    match resolver.resolve_port(target_namespace, &target.name, &port) {
        (_, Some(problem)) if problem.kind == ProblemKind::Broken => {
            problems.add("BackendNotFound", format!("{field}: {}", problem.text));
            None
        }
        (backend, _) => Some((backend, h2c)),
    }
}

/// The `appProtocol` of Service ports that speak HTTP/2 without TLS.
const H2C: &str = "kubernetes.io/h2c";

/// One match of a rule, compiled.
struct CompiledMatch {
    path: String,
    match_path: String,
    path_type: PathType,
    regex: Option<Regex>,
    conditions: Option<Box<MatchConditions>>,
    /// For precedence: method set, header and query match counts.
    counts: (bool, usize, usize),
}

impl CompiledMatch {
    fn route(
        &self,
        owner: &str,
        host: Arc<str>,
        policy: Arc<RoutePolicy>,
        split: Option<Arc<WeightedBackends>>,
        names: &mut Names,
    ) -> Route {
        // The first resolved backend names the route in metrics and logs.
        let first = split
            .as_ref()
            .and_then(|s| s.first().cloned())
            .unwrap_or_else(|| Arc::new(Backend::new("", "", "", Vec::new())));
        let path = names.get(&self.path);
        Route {
            match_path: names.get(&self.match_path),
            path_type: self.path_type,
            identity: Arc::new(RouteIdentity::new(host, path.clone(), owner, &first, names)),
            path,
            backend: first,
            ingress: names.get(owner),
            https_redirect: false,
            policy,
            regex: self.regex.clone().map(Box::new),
            canary: None,
            conditions: self.conditions.clone(),
            split,
        }
    }
}

fn compile_match(matched: &HTTPRouteMatch) -> Result<CompiledMatch, String> {
    let path_match = matched.path.clone().unwrap_or_default();
    let value = path_match.value.clone().unwrap_or_else(|| "/".to_string());
    if !value.starts_with('/') {
        return Err(format!("path {value:?} must start with \"/\""));
    }
    let (path_type, regex) = match path_match.type_.as_deref().unwrap_or("PathPrefix") {
        "Exact" => (PathType::Exact, None),
        "PathPrefix" => (PathType::Prefix, None),
        "RegularExpression" => (PathType::Prefix, Some(full_match(&value)?)),
        other => {
            return Err(format!(
                "path type {other:?} is not Exact, PathPrefix or RegularExpression"
            ));
        }
    };
    let match_path = match regex {
        Some(_) => value.clone(),
        None => Route::match_path_of(&value, path_type).to_string(),
    };
    let method = matched
        .method
        .as_deref()
        .map(|m| {
            Method::from_bytes(m.as_bytes())
                .map_err(|_| format!("method {m:?} is not an HTTP method"))
        })
        .transpose()?;
    let headers = matched
        .headers
        .iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("header name {:?} is not valid", h.name))?;
            Ok((name, value_match(h)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let query = matched
        .query_params
        .iter()
        .map(|q| Ok((q.name.clone(), value_match(q)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let counts = (method.is_some(), headers.len(), query.len());
    let conditions = (method.is_some() || !headers.is_empty() || !query.is_empty()).then(|| {
        Box::new(MatchConditions {
            method,
            headers,
            query,
        })
    });
    Ok(CompiledMatch {
        path: value,
        match_path,
        path_type,
        regex,
        conditions,
        counts,
    })
}

fn value_match(matched: &HTTPValueMatch) -> Result<ValueMatch, String> {
    match matched.type_.as_deref().unwrap_or("Exact") {
        "Exact" => Ok(ValueMatch::Exact(matched.value.clone())),
        "RegularExpression" => Ok(ValueMatch::Regex(full_match(&matched.value)?)),
        other => Err(format!(
            "match type {other:?} is not Exact or RegularExpression"
        )),
    }
}

/// A regular expression that must match the whole value; linear time, bounded in size.
fn full_match(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .nest_limit(32)
        .build()
        .map_err(|e| format!("{pattern:?} is not a regular expression: {e}"))
}

/// The Gateway API's precedence among the rules of one host: an exact path first, then the
/// longest prefix (regular expressions, whose rank the specification leaves open, before
/// prefixes, longest first, as Envoy Gateway orders them), then a method match,
/// then more header matches, then more query matches; ties go to the oldest route, then the
/// earlier rule and match.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RuleKey {
    path_rank: u8,
    longer_first: std::cmp::Reverse<usize>,
    no_method: bool,
    more_headers: std::cmp::Reverse<usize>,
    more_query: std::cmp::Reverse<usize>,
    age: usize,
    rule: usize,
    matched: usize,
}

impl RuleKey {
    fn new(compiled: &CompiledMatch, age: usize, rule: usize, matched: usize) -> Self {
        let path_rank = match (compiled.path_type, &compiled.regex) {
            (PathType::Exact, _) => 0,
            (_, Some(_)) => 1,
            (_, None) => 2,
        };
        let (method, headers, query) = compiled.counts;
        Self {
            path_rank,
            longer_first: std::cmp::Reverse(compiled.match_path.len()),
            no_method: !method,
            more_headers: std::cmp::Reverse(headers),
            more_query: std::cmp::Reverse(query),
            age,
            rule,
            matched,
        }
    }
}

/// A rule's filters, checked; what depends on the matched path is made per match.
#[derive(Clone, Default)]
struct RuleFilters {
    request_headers: Option<HeaderEdits>,
    response_headers: Option<HeaderEdits>,
    redirect: Option<(RedirectRule, Option<HTTPPathModifier>)>,
    rewrite_host: Option<HeaderValue>,
    rewrite_path: Option<HTTPPathModifier>,
    cors: Option<Cors>,
    /// `RequestMirror`s as written (their field, backend and share); resolved into `mirrors`
    /// where the Services are known.
    mirror_refs: Vec<(String, BackendRef, u32, u32)>,
    mirrors: Vec<Mirror>,
    /// From the rule's `timeouts`: how long the backend has to answer.
    timeout: Option<Duration>,
}

impl RuleFilters {
    /// The filters, or what is wrong with them (from the field on: `filters[0]...`).
    fn parse(filters: &[HTTPRouteFilter]) -> Result<Self, String> {
        let mut parsed = Self::default();
        for (i, filter) in filters.iter().enumerate() {
            let field = format!("filters[{i}]");
            let missing = || format!("{field}: type {} without its settings", filter.type_);
            match filter.type_.as_str() {
                "RequestHeaderModifier" => {
                    let edits = filter.request_header_modifier.as_ref();
                    parsed.request_headers =
                        Some(header_edits(edits.ok_or_else(missing)?, &field)?);
                }
                "ResponseHeaderModifier" => {
                    let edits = filter.response_header_modifier.as_ref();
                    parsed.response_headers =
                        Some(header_edits(edits.ok_or_else(missing)?, &field)?);
                }
                "RequestRedirect" => {
                    let redirect = filter.request_redirect.as_ref().ok_or_else(missing)?;
                    let field = format!("{field}.requestRedirect");
                    let status = match redirect.status_code.unwrap_or(302) {
                        code @ (301 | 302 | 303 | 307 | 308) => {
                            StatusCode::from_u16(code as u16).expect("a redirect status")
                        }
                        code => {
                            return Err(format!(
                                "{field}.statusCode: {code} is not a redirect status"
                            ));
                        }
                    };
                    let scheme = match redirect.scheme.as_deref() {
                        None => None,
                        Some(scheme @ ("http" | "https")) => Some(scheme.to_string()),
                        Some(other) => {
                            return Err(format!("{field}.scheme: {other:?} is not http or https"));
                        }
                    };
                    if let Some(hostname) = &redirect.hostname {
                        super::check_dns_name(hostname)
                            .map_err(|r| format!("{field}.hostname: {r}"))?;
                    }
                    let port = match redirect.port {
                        None => None,
                        Some(port) => Some(
                            u16::try_from(port)
                                .ok()
                                .filter(|p| *p > 0)
                                .ok_or(format!("{field}.port: {port} is not in 1-65535"))?,
                        ),
                    };
                    let rule = RedirectRule {
                        scheme,
                        hostname: redirect.hostname.clone(),
                        port,
                        path: None,
                        status,
                    };
                    parsed.redirect = Some((rule, redirect.path.clone()));
                }
                "URLRewrite" => {
                    let rewrite = filter.url_rewrite.as_ref().ok_or_else(missing)?;
                    if let Some(hostname) = &rewrite.hostname {
                        super::check_dns_name(hostname)
                            .map_err(|r| format!("{field}.urlRewrite.hostname: {r}"))?;
                        parsed.rewrite_host = HeaderValue::from_str(hostname).ok();
                    }
                    parsed.rewrite_path = rewrite.path.clone();
                }
                "RequestMirror" => {
                    let mirror = filter.request_mirror.as_ref().ok_or_else(missing)?;
                    let field = format!("{field}.requestMirror");
                    let (numerator, denominator) = mirror_share(mirror)
                        .ok_or(format!("{field}: percent or fraction out of range"))?;
                    let target = mirror.backend_ref.clone();
                    parsed.mirror_refs.push((
                        format!("{field}.backendRef"),
                        target,
                        numerator,
                        denominator,
                    ));
                }
                "CORS" => {
                    let cors = filter.cors.as_ref().ok_or_else(missing)?;
                    parsed.cors = Some(cors_of(cors).map_err(|r| format!("{field}.cors.{r}"))?);
                }
                other => return Err(format!("{field}: {other} is not supported")),
            }
        }
        let rewrites = parsed.rewrite_host.is_some() || parsed.rewrite_path.is_some();
        if parsed.redirect.is_some() && rewrites {
            return Err("filters: RequestRedirect and URLRewrite cannot both be used".to_string());
        }
        Ok(parsed)
    }

    /// These filters with a backendRef's `own` after them: its header edits after these, its
    /// redirect, rewrites and CORS instead of these.
    fn with(mut self, own: &RuleFilters) -> Result<Self, String> {
        self.request_headers = HeaderEdits::then(&self.request_headers, &own.request_headers);
        self.response_headers = HeaderEdits::then(&self.response_headers, &own.response_headers);
        self.redirect = own.redirect.clone().or(self.redirect);
        self.rewrite_host = own.rewrite_host.clone().or(self.rewrite_host);
        self.rewrite_path = own.rewrite_path.clone().or(self.rewrite_path);
        self.cors = own.cors.clone().or(self.cors);
        if self.redirect.is_some() && (self.rewrite_host.is_some() || self.rewrite_path.is_some()) {
            return Err("filters: RequestRedirect and URLRewrite cannot both be used".to_string());
        }
        Ok(self)
    }

    /// The policy of one match of the rule; `http2`: the backends are spoken to over h2c (a
    /// GRPCRoute's, or Services whose port says `kubernetes.io/h2c`).
    fn policy(self, compiled: &CompiledMatch, http2: bool) -> Result<Arc<RoutePolicy>, String> {
        let redirect_rule = match self.redirect {
            Some((rule, modifier)) => Some(RedirectRule {
                path: path_rewrite(modifier.as_ref(), compiled, "requestRedirect")?,
                ..rule
            }),
            None => None,
        };
        let path_rewrite = path_rewrite(self.rewrite_path.as_ref(), compiled, "urlRewrite")?;
        let plain = !http2
            && self.timeout.is_none()
            && self.request_headers.is_none()
            && self.response_headers.is_none()
            && redirect_rule.is_none()
            && path_rewrite.is_none()
            && self.rewrite_host.is_none()
            && self.cors.is_none()
            && self.mirrors.is_empty();
        if plain {
            return Ok(RoutePolicy::plain());
        }
        Ok(Arc::new(RoutePolicy {
            request_headers: self.request_headers,
            response_headers: self.response_headers,
            redirect_rule,
            path_rewrite,
            upstream_vhost: self.rewrite_host,
            read_timeout: self.timeout,
            cors: self.cors,
            mirrors: self.mirrors,
            // HTTP/2 without TLS, trailers both ways (as gRPC needs).
            protocol: if http2 {
                Protocol::Grpc
            } else {
                Protocol::Http
            },
            ..RoutePolicy::default()
        }))
    }
}

/// The share of requests a `RequestMirror` copies: `percent` (0-100) or `fraction`
/// (denominator 100 by default), every request when neither is given.
fn mirror_share(mirror: &HTTPRequestMirrorFilter) -> Option<(u32, u32)> {
    let (numerator, denominator) = match (&mirror.percent, &mirror.fraction) {
        (Some(_), Some(_)) => return None,
        (Some(percent), None) => (*percent, 100),
        (None, Some(fraction)) => (fraction.numerator, fraction.denominator.unwrap_or(100)),
        (None, None) => (100, 100),
    };
    let numerator = u32::try_from(numerator).ok()?;
    let denominator = u32::try_from(denominator).ok().filter(|d| *d > 0)?;
    (numerator <= denominator).then_some((numerator, denominator))
}

/// The `CORS` filter as the policy the annotations make; what is wrong names its field.
fn cors_of(filter: &HTTPCORSFilter) -> Result<Cors, String> {
    fn strs(list: &[String]) -> Vec<&str> {
        list.iter().map(String::as_str).collect()
    }
    let listed = |list: &[String], field: &str| {
        (!list.is_empty())
            .then(|| tokens_of(&strs(list)).map_err(|r| format!("{field}: {r}")))
            .transpose()
    };
    let origins = match filter.allow_origins.as_slice() {
        // No origin allowed: the headers are never added.
        [] => Origins::List(Vec::new()),
        list => Origins::of(&strs(list)).map_err(|r| format!("allowOrigins: {r}"))?,
    };
    let none = || Tokens::Listed(HeaderValue::from_static(""));
    Ok(Cors {
        origins,
        methods: listed(&filter.allow_methods, "allowMethods")?.unwrap_or_else(none),
        headers: listed(&filter.allow_headers, "allowHeaders")?.unwrap_or_else(none),
        expose: listed(&filter.expose_headers, "exposeHeaders")?,
        credentials: filter.allow_credentials.unwrap_or(false),
        max_age: match filter.max_age {
            None => 5,
            Some(age) => u32::try_from(age)
                .ok()
                .filter(|a| *a >= 1)
                .ok_or(format!("maxAge: {age} is not a positive number of seconds"))?,
        },
    })
}

fn header_edits(filter: &HTTPHeaderFilter, field: &str) -> Result<HeaderEdits, String> {
    let name = |name: &str| {
        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("{field}: {name:?} is not a header name"))
    };
    let pair = |header: &HTTPHeader| {
        let value = HeaderValue::from_str(&header.value).map_err(|_| {
            format!(
                "{field}: the value of {} is not a header value",
                header.name
            )
        })?;
        Ok((name(&header.name)?, value))
    };
    Ok(HeaderEdits {
        set: filter.set.iter().map(pair).collect::<Result<_, String>>()?,
        add: filter.add.iter().map(pair).collect::<Result<_, String>>()?,
        remove: filter
            .remove
            .iter()
            .map(|n| name(n))
            .collect::<Result<_, String>>()?,
        then: None,
    })
}

/// A path modifier for one match; `ReplacePrefixMatch` needs a `PathPrefix` match.
fn path_rewrite(
    modifier: Option<&HTTPPathModifier>,
    compiled: &CompiledMatch,
    filter: &str,
) -> Result<Option<PathRewrite>, String> {
    let Some(modifier) = modifier else {
        return Ok(None);
    };
    let path = |value: &Option<String>, name: &str| {
        value
            .clone()
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| format!("filters: {filter}.path.{name} must be a path"))
    };
    match modifier.type_.as_str() {
        "ReplaceFullPath" => Ok(Some(PathRewrite::Full(path(
            &modifier.replace_full_path,
            "replaceFullPath",
        )?))),
        "ReplacePrefixMatch" => {
            let with = path(&modifier.replace_prefix_match, "replacePrefixMatch")?;
            if compiled.path_type != PathType::Prefix || compiled.regex.is_some() {
                return Err(format!(
                    "filters: {filter} ReplacePrefixMatch needs a PathPrefix match"
                ));
            }
            Ok(Some(PathRewrite::Prefix {
                matched: compiled.match_path.clone(),
                with,
            }))
        }
        other => Err(format!(
            "filters: {filter}.path.type {other:?} is not ReplaceFullPath or ReplacePrefixMatch"
        )),
    }
}

/// An HTTPRoute or a GRPCRoute, as attaching and translating see them.
struct RouteView<'a> {
    kind: &'static str,
    grpc: bool,
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    source: &'a Option<String>,
    parent_refs: &'a [ParentReference],
    hostnames: &'a [String],
    rules: Vec<RuleView<'a>>,
}

/// A rule: its matches compiled (or why one cannot be), its filters and backends.
struct RuleView<'a> {
    matches: Vec<Result<CompiledMatch, String>>,
    filters: &'a [HTTPRouteFilter],
    backend_refs: &'a [HTTPBackendRef],
    timeouts: Option<&'a HTTPRouteTimeouts>,
}

impl<'a> RouteView<'a> {
    fn http(sourced: &'a Sourced<HTTPRoute>) -> Self {
        let route = &sourced.object;
        let rules = route.spec.rules.iter().map(|rule| RuleView {
            matches: compile_all(&rule.matches, compile_match),
            filters: &rule.filters,
            backend_refs: &rule.backend_refs,
            timeouts: rule.timeouts.as_ref(),
        });
        Self {
            kind: "HTTPRoute",
            grpc: false,
            meta: &route.metadata,
            source: &sourced.source,
            parent_refs: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            rules: rules.collect(),
        }
    }

    fn grpc(sourced: &'a Sourced<GRPCRoute>) -> Self {
        let route = &sourced.object;
        let rules = route.spec.rules.iter().map(|rule| RuleView {
            matches: compile_all(&rule.matches, compile_grpc_match),
            filters: &rule.filters,
            backend_refs: &rule.backend_refs,
            timeouts: None,
        });
        Self {
            kind: "GRPCRoute",
            grpc: true,
            meta: &route.metadata,
            source: &sourced.source,
            parent_refs: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            rules: rules.collect(),
        }
    }
}

/// A rule's matches compiled; a rule without any has the default match (every request).
fn compile_all<M: Default>(
    matches: &[M],
    compile: fn(&M) -> Result<CompiledMatch, String>,
) -> Vec<Result<CompiledMatch, String>> {
    match matches.is_empty() {
        true => vec![compile(&M::default())],
        false => matches.iter().map(compile).collect(),
    }
}

/// A gRPC match as a path match on `/SERVICE/METHOD`: both exact is an exact path, a service
/// alone is its prefix, a method alone or a regular expression is an expression on the path.
fn compile_grpc_match(matched: &GRPCRouteMatch) -> Result<CompiledMatch, String> {
    let method = matched.method.clone().unwrap_or_default();
    let regex = method.type_.as_deref() == Some("RegularExpression");
    if !regex && method.type_.as_deref().is_some_and(|t| t != "Exact") {
        return Err(format!(
            "method match type {:?} is not Exact or RegularExpression",
            method.type_
        ));
    }
    let part = |value: &Option<String>| match (value, regex) {
        (Some(value), true) => format!("(?:{value})"),
        (Some(value), false) => regex::escape(value),
        (None, _) => "[^/]+".to_string(),
    };
    let path = match (&method.service, &method.method, regex) {
        (Some(service), Some(name), false) => HTTPPathMatch {
            type_: Some("Exact".into()),
            value: Some(format!("/{service}/{name}")),
        },
        (Some(service), None, false) => HTTPPathMatch {
            type_: Some("PathPrefix".into()),
            value: Some(format!("/{service}")),
        },
        (None, None, _) => HTTPPathMatch::default(),
        _ => HTTPPathMatch {
            type_: Some("RegularExpression".into()),
            value: Some(format!(
                "/{}/{}",
                part(&method.service),
                part(&method.method)
            )),
        },
    };
    compile_match(&HTTPRouteMatch {
        path: Some(path),
        headers: matched.headers.clone(),
        ..HTTPRouteMatch::default()
    })
}

/// How long the backend has to answer a rule's requests: `backendRequest`, else `request` (the
/// gateway bounds the wait for the response head; `0s` is no limit, kept to a day).
fn response_timeout(timeouts: Option<&HTTPRouteTimeouts>) -> Result<Option<Duration>, String> {
    let Some(timeouts) = timeouts else {
        return Ok(None);
    };
    let parse = |value: &Option<String>, field: &str| {
        value
            .as_deref()
            .map(|text| {
                duration(text).ok_or(format!(
                    "timeouts.{field}: {text:?} is not a duration such as 10s, 1m30s or 500ms"
                ))
            })
            .transpose()
    };
    let request = parse(&timeouts.request, "request")?;
    let backend = parse(&timeouts.backend_request, "backendRequest")?;
    if let (Some(request), Some(backend)) = (request, backend)
        && !request.is_zero()
        && backend > request
    {
        return Err("timeouts: backendRequest is longer than request".to_string());
    }
    Ok(backend.or(request).map(|limit| match limit.is_zero() {
        true => Duration::from_secs(24 * 3600),
        false => limit,
    }))
}

/// A Gateway API duration: one to four numbers of up to five digits, each with a unit of h,
/// m, s or ms (`1h`, `1m30s`, `500ms`).
fn duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, seconds_per): (&str, f64) = if rest.starts_with("ms") {
            ("ms", 0.001)
        } else if rest.starts_with('h') {
            ("h", 3600.0)
        } else if rest.starts_with('m') {
            ("m", 60.0)
        } else if rest.starts_with('s') {
            ("s", 1.0)
        } else {
            return None;
        };
        rest = &rest[unit.len()..];
        total += Duration::from_secs_f64(number as f64 * seconds_per);
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_the_gateway_api_writes_them() {
        assert_eq!(duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(duration("0s"), Some(Duration::ZERO));
        for bad in ["", "10", "s", "1d", "123456s", "1h1h1h1h1h", "1.5s", "-1s"] {
            assert_eq!(duration(bad), None, "{bad}");
        }
    }
}
