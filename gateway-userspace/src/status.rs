//! Where each route can be reached: the `/routes` document and the `gateway routes` table, the
//! way a console's route detail page shows them.

use std::fmt::Write;
use std::net::SocketAddr;

use serde::Serialize;

use crate::snapshot::listener::ObjectReport;
use crate::snapshot::stream::StreamRoute;
use crate::snapshot::{IngressReport, PathType, Route, Snapshot};
use crate::warning::Warning;

/// The whole report: every Ingress, the effective table and every warning.
#[derive(Debug, Serialize)]
pub struct RoutesReport<'a> {
    pub generation: u64,
    /// The address clients reach the gateway on.
    pub address: String,
    pub ingresses: Vec<IngressView<'a>>,
    pub routes: Vec<RouteView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<BackendView>,
    /// Layer 4 routes: TCP and UDP ports, TLS passed through.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamView>,
    /// The Gateway API objects this gateway is responsible for, with their conditions.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub gateway_api: &'a [ObjectReport],
    pub warnings: &'a [Warning],
}

/// One Ingress and where it is served.
#[derive(Debug, Serialize)]
pub struct IngressView<'a> {
    #[serde(flatten)]
    pub report: &'a IngressReport,
    /// The gateway address that serves it, when it is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One line of the effective table.
#[derive(Clone, Debug, Serialize)]
pub struct RouteView {
    pub host: String,
    pub path: String,
    pub path_type: &'static str,
    /// The kind of the object the route comes from (`Ingress`, `HTTPRoute`) ...
    pub kind: &'static str,
    /// ... and its `namespace/name`.
    pub ingress: String,
    /// The Gateway listener (address:port) that serves it; Ingress routes are served on the
    /// gateway's own listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<SocketAddr>,
    pub backend: BackendView,
    /// The URL of the route, and a curl line that reaches it through the gateway's address.
    pub url: String,
    pub curl: String,
}

/// One layer 4 route.
#[derive(Debug, Serialize)]
pub struct StreamView {
    /// `tcp`, `udp`, or `tls` (passed through by server name).
    pub protocol: &'static str,
    /// Where it is served: a listener address, or for `tls` the HTTPS listener.
    pub listener: SocketAddr,
    /// The TLS server name (`tls` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// What asked for it (`configmap ns/name port 9000`, `ingress ns/name`).
    pub route: String,
    pub backends: Vec<BackendView>,
    pub accept_proxy_protocol: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_proxy_protocol: Option<crate::snapshot::stream::ProxyProtocol>,
    /// A command that reaches it.
    pub try_with: String,
}

/// A backend and its ready endpoints.
#[derive(Clone, Debug, Serialize)]
pub struct BackendView {
    pub namespace: String,
    pub service: String,
    pub port: String,
    pub endpoints: Vec<SocketAddr>,
}

impl BackendView {
    fn of(backend: &crate::snapshot::Backend) -> Self {
        Self {
            namespace: backend.namespace.clone(),
            service: backend.service.clone(),
            port: backend.port.clone(),
            endpoints: backend.endpoints.clone(),
        }
    }
}

/// Where the gateway serves plain HTTP and HTTPS.
#[derive(Clone, Copy, Debug)]
pub struct Listeners {
    pub http: SocketAddr,
    pub https: SocketAddr,
}

/// Builds the report of `snapshot` as served on `listeners`.
pub fn report(snapshot: &Snapshot, generation: u64, listeners: Listeners) -> RoutesReport<'_> {
    let address = listeners.http.to_string();
    let mut routes = Vec::new();
    for vhost in snapshot.virtual_hosts() {
        for route in &vhost.routes {
            let https = vhost.tls || route.https_redirect;
            let listener = if https {
                listeners.https
            } else {
                listeners.http
            };
            let (url, curl) = reach(&vhost.name, &route.path, https, listener);
            routes.push(RouteView {
                host: vhost.name.to_string(),
                path: route.path.to_string(),
                path_type: route.path_type.as_str(),
                kind: "Ingress",
                ingress: route.ingress.to_string(),
                listener: None,
                backend: BackendView::of(&route.backend),
                url,
                curl,
            });
        }
    }
    let mut gateway_listeners: Vec<_> = snapshot.gateway_listeners.iter().collect();
    gateway_listeners.sort_by_key(|(addr, _)| **addr);
    for (addr, table) in gateway_listeners {
        for vhost in table.virtual_hosts() {
            for route in &vhost.routes {
                let (url, curl) = reach(&vhost.name, &route.path, table.tls, *addr);
                routes.push(RouteView {
                    host: vhost.name.to_string(),
                    path: route.path.to_string(),
                    path_type: gateway_path_type(route),
                    kind: "HTTPRoute",
                    ingress: route.ingress.to_string(),
                    listener: Some(*addr),
                    backend: BackendView::of(&route.backend),
                    url,
                    curl,
                });
            }
        }
    }
    RoutesReport {
        streams: streams(snapshot, listeners.https),
        generation,
        ingresses: snapshot
            .ingresses
            .iter()
            .map(|report| IngressView {
                report,
                address: report.served.then(|| address.clone()),
            })
            .collect(),
        address,
        routes,
        default_backend: snapshot
            .default_backend
            .as_ref()
            .map(|default| BackendView::of(&default.backend)),
        gateway_api: &snapshot.gateway_api,
        warnings: &snapshot.warnings,
    }
}

/// The layer 4 routes of `snapshot`, TLS passthrough shown on `https`.
fn streams(snapshot: &Snapshot, https: SocketAddr) -> Vec<StreamView> {
    let view = |protocol, listener: SocketAddr, name: Option<&str>, route: &StreamRoute| {
        let try_with = match (protocol, name) {
            ("udp", _) => format!("nc -u {} {}", listener.ip(), listener.port()),
            (_, Some(name)) => format!("openssl s_client -connect {listener} -servername {name}"),
            _ => format!("nc {} {}", listener.ip(), listener.port()),
        };
        StreamView {
            protocol,
            listener,
            server_name: name.map(str::to_string),
            route: route.owner.clone(),
            backends: (route.backends.choices.iter())
                .filter_map(|choice| choice.backend.as_deref().map(BackendView::of))
                .collect(),
            accept_proxy_protocol: route.accept_proxy_protocol,
            send_proxy_protocol: route.send_proxy_protocol,
            try_with,
        }
    };
    let tables = &snapshot.stream;
    let mut ports: Vec<StreamView> = (tables.tcp.iter().map(|(addr, route)| ("tcp", addr, route)))
        .chain(tables.udp.iter().map(|(addr, route)| ("udp", addr, route)))
        .map(|(protocol, addr, route)| view(protocol, *addr, None, route))
        .collect();
    ports.sort_by_key(|v| (v.listener, v.protocol));
    let names = &tables.passthrough;
    let mut passed: Vec<StreamView> = (names.exact.iter())
        .map(|(name, route)| (name.clone(), route))
        .chain((names.wildcard.iter()).map(|(suffix, route)| (format!("*.{suffix}"), route)))
        .map(|(name, route)| view("tls", https, Some(&name), route))
        .collect();
    passed.sort_by(|a, b| a.server_name.cmp(&b.server_name));
    ports.extend(passed);
    ports
}

/// A Gateway API path match type by its own name.
/// A Gateway API route's path match type, as the Gateway API names it.
pub fn gateway_path_type(route: &Route) -> &'static str {
    match (route.path_type, &route.regex) {
        (PathType::Exact, _) => "Exact",
        (_, Some(_)) => "RegularExpression",
        _ => "PathPrefix",
    }
}

impl RoutesReport<'_> {
    /// The report as a table for a person.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let header = ["HOST", "PATH", "TYPE", "BACKEND", "ENDPOINTS", "TRY"];
        let rows: Vec<[String; 6]> = self
            .routes
            .iter()
            .map(|r| {
                [
                    r.host.clone(),
                    r.path.clone(),
                    r.path_type.to_string(),
                    format!(
                        "{}/{}:{}",
                        r.backend.namespace, r.backend.service, r.backend.port
                    ),
                    match r.backend.endpoints.len() {
                        0 => "none ready".to_string(),
                        n => format!("{n} ready"),
                    },
                    r.curl.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut line = |cells: &[&str]| {
            let mut text = String::new();
            for (cell, width) in cells.iter().zip(widths) {
                let _ = write!(text, "{cell:width$}  ");
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(&header);
        for row in &rows {
            line(&row.each_ref().map(String::as_str));
        }
        if !self.streams.is_empty() {
            let _ = writeln!(out, "\nLAYER 4");
            for stream in &self.streams {
                let backends: Vec<String> = (stream.backends.iter())
                    .map(|b| {
                        let ready = b.endpoints.len();
                        format!("{}/{}:{} ({ready} ready)", b.namespace, b.service, b.port)
                    })
                    .collect();
                let name = (stream.server_name.as_ref()).map_or(String::new(), |n| format!(" {n}"));
                let _ = writeln!(
                    out,
                    "  {} {}{name} -> {}  ({})  try: {}",
                    stream.protocol,
                    stream.listener,
                    backends.join(", "),
                    stream.route,
                    stream.try_with
                );
            }
        }
        if let Some(backend) = &self.default_backend {
            let _ = writeln!(
                out,
                "\nUnmatched requests go to {}/{}:{} ({} ready endpoints).",
                backend.namespace,
                backend.service,
                backend.port,
                backend.endpoints.len()
            );
        } else {
            let _ = writeln!(out, "\nUnmatched requests get 404.");
        }
        let _ = writeln!(out, "\nINGRESSES");
        for ingress in &self.ingresses {
            let r = ingress.report;
            let state = match (&ingress.address, &r.reason) {
                (Some(address), _) => format!("served at {address}"),
                (None, Some(reason)) => format!("not served: {reason}"),
                (None, None) => "not served".to_string(),
            };
            let _ = writeln!(
                out,
                "  {}/{}  hosts: {}  {state}",
                r.namespace,
                r.name,
                r.hosts.join(", ")
            );
        }
        if !self.gateway_api.is_empty() {
            let _ = writeln!(out, "\nGATEWAY API");
            for object in self.gateway_api {
                let name = match &object.namespace {
                    Some(namespace) => format!("{namespace}/{}", object.name),
                    None => object.name.clone(),
                };
                let conditions = |list: &[crate::snapshot::listener::Condition]| {
                    list.iter()
                        .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    out,
                    "  {} {name}  {}",
                    object.kind,
                    conditions(&object.conditions)
                );
                for listener in &object.listeners {
                    let _ = writeln!(
                        out,
                        "    listener {} (port {}, {} routes)  {}",
                        listener.name,
                        listener.port,
                        listener.attached_routes,
                        conditions(&listener.conditions)
                    );
                }
                for parent in &object.parents {
                    let _ = writeln!(
                        out,
                        "    parent {}  {}",
                        parent.parent_ref.name,
                        conditions(&parent.conditions)
                    );
                }
            }
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "\nWARNINGS");
            for warning in self.warnings {
                let _ = writeln!(out, "  {warning}");
            }
        }
        out
    }
}

/// The URL of a route and a curl line that reaches it through the gateway's own address, over
/// HTTPS where the route is served there.
fn reach(host: &str, path: &str, https: bool, listener: SocketAddr) -> (String, String) {
    let (scheme, default_port) = if https { ("https", 443) } else { ("http", 80) };
    let port = match listener.port() {
        p if p == default_port => String::new(),
        p => format!(":{p}"),
    };
    if host == "*" {
        let url = format!("{scheme}://{listener}{path}");
        return (url.clone(), format!("curl {url}"));
    }
    // A wildcard host is shown with a sample first label.
    let host = host.replace('*', "any");
    let url = format!("{scheme}://{host}{port}{path}");
    let curl = if https {
        format!(
            "curl --resolve {host}:{}:{} {url}",
            listener.port(),
            listener.ip()
        )
    } else {
        format!("curl -H 'Host: {host}' http://{listener}{path}")
    };
    (url, curl)
}

/// What `gateway check` found, in numbers.
#[derive(Debug, Serialize)]
pub struct CheckSummary {
    pub ingresses: usize,
    pub served: usize,
    pub routes: usize,
    /// Mistakes in the input: `gateway check` fails on any.
    pub problems: usize,
    /// Worth knowing, not mistakes (objects of other kinds, Services without endpoints yet).
    pub notices: usize,
}

impl CheckSummary {
    pub fn of(snapshot: &Snapshot) -> Self {
        Self {
            ingresses: snapshot.ingresses.len(),
            served: snapshot.ingresses.iter().filter(|i| i.served).count(),
            routes: snapshot
                .virtual_hosts()
                .iter()
                .map(|h| h.routes.len())
                .sum(),
            problems: snapshot.warnings.iter().filter(|w| !w.notice).count(),
            notices: snapshot.warnings.iter().filter(|w| w.notice).count(),
        }
    }
}

impl std::fmt::Display for CheckSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |n: usize, what: &str| match n {
            0 => format!("no {what}s"),
            1 => format!("1 {what}"),
            n => format!("{n} {what}s"),
        };
        write!(
            f,
            "checked {} ingresses ({} served, {} routes): {}",
            self.ingresses,
            self.served,
            self.routes,
            count(self.problems, "problem")
        )?;
        if self.notices > 0 {
            write!(f, ", {}", count(self.notices, "notice"))?;
        }
        Ok(())
    }
}
