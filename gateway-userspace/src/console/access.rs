//! Where routes are reached from outside: the gateway's Service addresses (LoadBalancer IPs,
//! NodePorts on the node's addresses), `--vip`s, or its own listeners; and the links and curl
//! lines of a route's "Click to visit".

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::explain::Place;
use crate::snapshot::{ListenerKind, Snapshot};
use crate::translate::TranslateOptions;

/// One address:port the gateway is reached on, and how.
#[derive(Clone, Debug)]
pub struct Entry {
    pub addr: SocketAddr,
    pub tls: bool,
    /// `LoadBalancer`, `NodePort`, `VIP` or `listener`.
    pub how: &'static str,
}

/// Every address the gateway is reached on, the published ones first.
pub fn entries(snapshot: &Snapshot, place: &Place, options: &TranslateOptions) -> Vec<Entry> {
    let published = snapshot.listeners.iter().map(|spec| {
        let how = if options.node_ips.contains(&spec.addr.ip()) {
            "NodePort"
        } else {
            "LoadBalancer"
        };
        (spec, how)
    });
    let vips = place.fast_path.vips.iter().map(|spec| (spec, "VIP"));
    let mut entries: Vec<Entry> = published
        .chain(vips)
        .filter(|(spec, _)| matches!(spec.kind, ListenerKind::Http | ListenerKind::Https))
        // Gateway API listeners are in the table too; their routes have their own links.
        .filter(|(spec, _)| !snapshot.gateway_listeners.contains_key(&spec.addr))
        .map(|(spec, how)| Entry {
            addr: spec.addr,
            tls: spec.kind == ListenerKind::Https,
            how,
        })
        .collect();
    for (addr, tls) in [(place.listeners.http, false), (place.listeners.https, true)] {
        if !entries.iter().any(|e| e.tls == tls) {
            entries.push(Entry {
                addr: reachable(addr),
                tls,
                how: "listener",
            });
        }
    }
    entries
}

/// A listen address as clients dial it (a wildcard is reached on loopback here).
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

/// The address auto-generated hosts point at (`{service}.{namespace}.{address}.nip.io`): a
/// LoadBalancer IP, else a node's, else the gateway's own.
pub fn gateway_address(entries: &[Entry]) -> IpAddr {
    ["LoadBalancer", "NodePort", "VIP", "listener"]
        .iter()
        .find_map(|how| entries.iter().find(|e| e.how == *how))
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |e| e.addr.ip())
}

/// A link that reaches a route.
#[derive(Clone, Debug)]
pub struct Visit {
    pub url: String,
    pub curl: String,
    pub how: &'static str,
}

/// The links of `host` and `path` (a TLS host is visited over https), one per address.
pub fn visits(host: &str, path: &str, tls: bool, entries: &[Entry]) -> Vec<Visit> {
    entries
        .iter()
        .filter(|entry| entry.tls == tls)
        .map(|entry| {
            let scheme = if tls { "https" } else { "http" };
            let ip = match entry.addr.ip() {
                IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            // A host with a wildcard or none is visited as one name it covers, or the address.
            let name = match host {
                "*" | "" => ip.clone(),
                wildcard if wildcard.starts_with("*.") => format!("any{}", &wildcard[1..]),
                name => name.to_string(),
            };
            let port = entry.addr.port();
            let default_port = if tls { 443 } else { 80 };
            let authority = if port == default_port {
                name.clone()
            } else {
                format!("{name}:{port}")
            };
            let url = format!("{scheme}://{authority}{path}");
            // A nip.io name resolves to the address it carries; others need telling.
            let resolves = name == ip || name.ends_with(&format!(".{ip}.nip.io"));
            let curl = if resolves {
                format!("curl {url}")
            } else {
                format!("curl --resolve {name}:{port}:{ip} {url}")
            };
            Visit {
                url,
                curl,
                how: entry.how,
            }
        })
        .collect()
}
