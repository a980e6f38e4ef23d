//! Layer 4 routes from ingress-nginx's sources: the tcp-services and udp-services ConfigMaps
//! (`"PORT": "NAMESPACE/SERVICE:PORT[:PROXY][:PROXY]"`, the first `PROXY` reading the PROXY
//! protocol from clients, the second writing it to the backend) and Ingresses annotated
//! `ssl-passthrough`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::backend::{BackendResolver, PortRef, ProblemKind};
use super::is_dns_label;
use crate::snapshot::listener::{WeightedBackend, WeightedBackends};
use crate::snapshot::stream::{ProxyProtocol, StreamRoute, StreamTables};
use crate::snapshot::{Backend, ListenerKind, ListenerSpec};
use crate::store::{ObjectKey, Store, find};
use crate::warning::Warning;

/// Where the layer 4 ports come from, and where they are served.
#[derive(Clone, Debug, Default)]
pub struct StreamOptions {
    /// The tcp-services ConfigMap (`namespace`, `name`).
    pub tcp_services: Option<(String, String)>,
    /// The udp-services ConfigMap.
    pub udp_services: Option<(String, String)>,
    /// The address their ports are served on besides the published Service's (the IP of
    /// `--http-listen`).
    pub address: Option<IpAddr>,
    /// The gateway's own HTTP and HTTPS ports, which a ConfigMap entry cannot claim.
    pub taken_ports: Vec<u16>,
    /// `--enable-ssl-passthrough`: Ingresses may ask for their TLS to be passed through.
    pub ssl_passthrough: bool,
}

/// The routes of the ConfigMaps by the port they claim.
#[derive(Debug, Default)]
pub struct PortRoutes {
    pub tcp: BTreeMap<u16, Arc<StreamRoute>>,
    pub udp: BTreeMap<u16, Arc<StreamRoute>>,
}

impl PortRoutes {
    /// What a Service port of `protocol` (`TCP`, `UDP`) and number `port` carries, if one
    /// of the ConfigMaps claims it.
    pub fn kind_of(&self, protocol: &str, port: u16) -> Option<ListenerKind> {
        match protocol {
            "TCP" => self.tcp.contains_key(&port).then_some(ListenerKind::Tcp),
            "UDP" => self.udp.contains_key(&port).then_some(ListenerKind::Udp),
            _ => None,
        }
    }

    /// The listeners of the ports on `address`.
    pub fn listeners(&self, address: IpAddr) -> impl Iterator<Item = (ListenerSpec, u16)> + '_ {
        let on = move |kind, port: u16| {
            let spec = ListenerSpec {
                addr: SocketAddr::new(address, port),
                kind,
            };
            (spec, port)
        };
        let tcp = self
            .tcp
            .keys()
            .map(move |&port| on(ListenerKind::Tcp, port));
        let udp = self
            .udp
            .keys()
            .map(move |&port| on(ListenerKind::Udp, port));
        tcp.chain(udp)
    }

    /// Serves each layer 4 listener of `listeners` (with the Service port it stands for: a
    /// NodePort's listener serves its Service port's route) in `tables`.
    pub fn place(&self, listeners: &[(ListenerSpec, u16)], tables: &mut StreamTables) {
        for (spec, port) in listeners {
            let (routes, table) = match spec.kind {
                ListenerKind::Tcp => (&self.tcp, &mut tables.tcp),
                ListenerKind::Udp => (&self.udp, &mut tables.udp),
                _ => continue,
            };
            if let Some(route) = routes.get(port) {
                table.insert(spec.addr, route.clone());
            }
        }
    }
}

/// Reads both ConfigMaps.
pub fn services(
    store: &Store,
    options: &StreamOptions,
    resolver: &mut BackendResolver<'_>,
    warnings: &mut Vec<Warning>,
) -> PortRoutes {
    let mut routes = PortRoutes::default();
    for (wanted, udp) in [
        (&options.tcp_services, false),
        (&options.udp_services, true),
    ] {
        let Some((namespace, name)) = wanted else {
            continue;
        };
        let table = if udp {
            &mut routes.udp
        } else {
            &mut routes.tcp
        };
        let key = ObjectKey {
            kind: "configmap",
            namespace: Some(namespace.clone()),
            name: name.clone(),
        };
        let Some(sourced) = find(&store.config_maps, namespace, name) else {
            let flag = if udp { "udp" } else { "tcp" };
            warnings.push(Warning::new(
                &key,
                None,
                "",
                format!("the ConfigMap of --{flag}-services-configmap does not exist; no {flag} ports from it"),
            ));
            continue;
        };
        let source = sourced.source.as_deref();
        for (port, value) in sourced.object.data.iter().flatten() {
            let field = format!("data[{port:?}]");
            let mut warn = |message: String| {
                warnings.push(Warning::new(&key, source, field.clone(), message));
            };
            let entry = match Entry::parse(port, value) {
                Ok(entry) => entry,
                Err(reason) => {
                    warn(format!("{value:?}: {reason}; port not served"));
                    continue;
                }
            };
            if options.taken_ports.contains(&entry.port) {
                warn(format!(
                    "port {} is the gateway's own HTTP or HTTPS port; not served",
                    entry.port
                ));
                continue;
            }
            if udp && (entry.accept_proxy_protocol || entry.send_proxy_protocol) {
                warn(
                    "the PROXY protocol is for TCP ports; this UDP port is served without it"
                        .into(),
                );
            }
            let (backend, problem) =
                resolver.resolve_port(&entry.namespace, &entry.service, &entry.service_port);
            if let Some(problem) = problem {
                let meanwhile = "its connections are closed until it has some";
                let mut warning = Warning::new(
                    &key,
                    source,
                    field.clone(),
                    format!("{}; {meanwhile}", problem.text),
                );
                warning.notice = problem.kind == ProblemKind::NoEndpoints;
                warnings.push(warning);
            }
            let owner = format!("configmap {namespace}/{name} port {}", entry.port);
            let mut route = route_to(owner, backend);
            if !udp {
                route.accept_proxy_protocol = entry.accept_proxy_protocol;
                route.send_proxy_protocol = entry.send_proxy_protocol.then_some(ProxyProtocol::V1);
            }
            table.insert(entry.port, Arc::new(route));
        }
    }
    routes
}

/// A route of every connection to `backend`.
pub fn route_to(owner: String, backend: Arc<Backend>) -> StreamRoute {
    StreamRoute {
        owner,
        backends: WeightedBackends {
            choices: vec![WeightedBackend {
                backend: Some(backend),
                weight: 1,
                policy: None,
            }],
            total: 1,
        },
        accept_proxy_protocol: false,
        send_proxy_protocol: None,
    }
}

/// One entry of a ConfigMap.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    port: u16,
    namespace: String,
    service: String,
    service_port: PortRef,
    accept_proxy_protocol: bool,
    send_proxy_protocol: bool,
}

impl Entry {
    fn parse(port: &str, value: &str) -> Result<Self, String> {
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("the key {port:?} is not a port number (1-65535)"))?;
        let mut parts = value.trim().split(':');
        let service = parts.next().unwrap_or_default();
        let (namespace, service) = service
            .split_once('/')
            .filter(|(ns, name)| is_dns_label(ns) && is_dns_label(name))
            .ok_or("expected NAMESPACE/SERVICE:PORT[:PROXY][:PROXY]")?;
        let service_port = match parts.next() {
            Some(number) if number.bytes().all(|b| b.is_ascii_digit()) => number
                .parse::<i32>()
                .ok()
                .filter(|p| (1..=65535).contains(p))
                .map(PortRef::Number)
                .ok_or("the Service port is not 1-65535")?,
            Some(name) if is_dns_label(name) => PortRef::Name(name.to_string()),
            _ => return Err("expected NAMESPACE/SERVICE:PORT[:PROXY][:PROXY]".into()),
        };
        let mut proxy = [false; 2];
        for (i, suffix) in parts.enumerate() {
            match (i, suffix.eq_ignore_ascii_case("PROXY")) {
                (0 | 1, true) => proxy[i] = true,
                // ingress-nginx leaves an empty first suffix for "only send": `...:80::PROXY`.
                (0, false) if suffix.is_empty() => {}
                _ => {
                    return Err(format!(
                        "{suffix:?}: only PROXY may follow the port, twice at most"
                    ));
                }
            }
        }
        Ok(Self {
            port,
            namespace: namespace.to_string(),
            service: service.to_string(),
            service_port,
            accept_proxy_protocol: proxy[0],
            send_proxy_protocol: proxy[1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::tests::store_of;

    #[test]
    fn entries_parse_as_ingress_nginx_reads_them() {
        let entry = Entry::parse("9000", "default/db:5432").unwrap();
        assert_eq!(
            entry,
            Entry {
                port: 9000,
                namespace: "default".into(),
                service: "db".into(),
                service_port: PortRef::Number(5432),
                accept_proxy_protocol: false,
                send_proxy_protocol: false,
            }
        );
        let both = Entry::parse("9001", "apps/mqtt:mqtt:PROXY:PROXY").unwrap();
        assert_eq!(both.service_port, PortRef::Name("mqtt".into()));
        assert!(both.accept_proxy_protocol && both.send_proxy_protocol);
        let send_only = Entry::parse("9002", "apps/mqtt:1883::PROXY").unwrap();
        assert!(!send_only.accept_proxy_protocol && send_only.send_proxy_protocol);
        let accept_only = Entry::parse("9003", "apps/mqtt:1883:proxy").unwrap();
        assert!(accept_only.accept_proxy_protocol && !accept_only.send_proxy_protocol);
    }

    #[test]
    fn malformed_entries_are_refused_with_a_reason() {
        for (port, value) in [
            ("0", "default/db:5432"),
            ("70000", "default/db:5432"),
            ("http", "default/db:5432"),
            ("9000", "db:5432"),
            ("9000", "default/db"),
            ("9000", "default/db:0"),
            ("9000", "default/db:99999"),
            ("9000", "default/Db:5432"),
            ("9000", "default/db:5432:PROXY:PROXY:PROXY"),
            ("9000", "default/db:5432:SSL"),
            ("9000", "../etc/db:5432"),
        ] {
            assert!(Entry::parse(port, value).is_err(), "{port}: {value}");
        }
    }

    #[test]
    fn a_node_port_serves_the_route_of_its_service_port() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: gateway, namespace: edge}\n\
                    spec:\n  ports:\n  - {name: db, port: 9000, nodePort: 30900}\n  \
                    - {name: dns, port: 53, protocol: UDP, nodePort: 30053}\n  \
                    - {name: http, port: 80, nodePort: 30080}\n";
        let store = store_of(yaml);
        let backend = Arc::new(Backend::new("apps", "db", "5432", vec![]));
        let mut routes = PortRoutes::default();
        routes
            .tcp
            .insert(9000, Arc::new(route_to("tcp".into(), backend.clone())));
        routes
            .udp
            .insert(53, Arc::new(route_to("udp".into(), backend)));
        let node: IpAddr = "192.0.2.5".parse().unwrap();
        let mut warnings = Vec::new();
        let published = super::super::listeners::published(
            &store,
            ("edge", "gateway"),
            &[node],
            &routes,
            &mut warnings,
        );
        let kinds: Vec<String> = published
            .iter()
            .map(|(l, _)| format!("{}={}", l.addr, l.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                "192.0.2.5:30053=udp",
                "192.0.2.5:30080=http",
                "192.0.2.5:30900=tcp"
            ]
        );
        let mut tables = StreamTables::default();
        routes.place(&published, &mut tables);
        let at = |port: u16| SocketAddr::new(node, port);
        assert_eq!(tables.tcp[&at(30900)].owner, "tcp");
        assert_eq!(tables.udp[&at(30053)].owner, "udp");
        assert_eq!((tables.tcp.len(), tables.udp.len()), (1, 1));
    }
}
