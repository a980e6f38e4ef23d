//! The gateway's own Service to listeners: the VIP:port pairs whose traffic the kernel programs
//! classify and steer into the proxy.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::streams::PortRoutes;
use crate::snapshot::{ListenerKind, ListenerSpec};
use crate::store::{ObjectKey, Store, find};
use crate::warning::Warning;

/// The listeners of the published Service `namespace/name`: its LoadBalancer ingress IPs,
/// `spec.loadBalancerIP` and `spec.externalIPs` on each port, and each NodePort on every
/// address in `node_ips`. A port claimed by the tcp-services or udp-services ConfigMap is
/// theirs; another TCP port is HTTPS when its name or target port says so (`https`, `tls`, or
/// 443), else HTTP. Each listener comes with the Service port it stands for.
pub fn published(
    store: &Store,
    (namespace, name): (&str, &str),
    node_ips: &[IpAddr],
    streams: &PortRoutes,
    warnings: &mut Vec<Warning>,
) -> Vec<(ListenerSpec, u16)> {
    let found = find(&store.services, namespace, name);
    let key = ObjectKey {
        kind: "service",
        namespace: Some(namespace.to_string()),
        name: name.to_string(),
    };
    let Some(sourced) = found else {
        warnings.push(Warning::new(
            &key,
            None,
            "",
            "the published gateway Service (--publish-service) does not exist; no listeners from it",
        ));
        return Vec::new();
    };
    let service: &Service = &sourced.object;
    let source = sourced.source.as_deref();
    let spec = service.spec.as_ref();
    let mut addresses: BTreeSet<IpAddr> = BTreeSet::new();
    let mut texts: Vec<(String, String)> = Vec::new();
    for (i, ingress) in service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(ip) = &ingress.ip {
            texts.push((format!("status.loadBalancer.ingress[{i}].ip"), ip.clone()));
        }
    }
    if let Some(ip) = spec.and_then(|s| s.load_balancer_ip.clone()) {
        texts.push(("spec.loadBalancerIP".to_string(), ip));
    }
    for (i, ip) in spec
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        texts.push((format!("spec.externalIPs[{i}]"), ip.clone()));
    }
    for (field, text) in texts {
        match text.parse::<IpAddr>() {
            Ok(ip) => {
                addresses.insert(ip);
            }
            Err(_) => warnings.push(Warning::new(
                &key,
                source,
                field,
                format!("{text:?} is not an IP address; ignored"),
            )),
        }
    }
    let mut listeners = BTreeSet::new();
    for port in spec.and_then(|s| s.ports.as_deref()).unwrap_or_default() {
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let kind = match streams.kind_of(protocol, number) {
            Some(kind) => kind,
            None if protocol != "TCP" => continue,
            None if is_https(port) => ListenerKind::Https,
            None => ListenerKind::Http,
        };
        let node_port = port.node_port.and_then(|p| u16::try_from(p).ok());
        let on_addresses = addresses.iter().map(|ip| SocketAddr::new(*ip, number));
        let on_nodes = node_ips
            .iter()
            .filter_map(|ip| Some(SocketAddr::new(*ip, node_port?)));
        for addr in on_addresses.chain(on_nodes) {
            listeners.insert((ListenerSpec { addr, kind }, number));
        }
    }
    listeners.into_iter().collect()
}

fn is_https(port: &ServicePort) -> bool {
    let named = |name: &str| {
        let name = name.to_ascii_lowercase();
        name.contains("https") || name.contains("tls")
    };
    port.port == 443
        || port.name.as_deref().is_some_and(named)
        || match &port.target_port {
            Some(IntOrString::Int(443)) => true,
            Some(IntOrString::String(name)) => named(name),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::tests::store_of;

    #[test]
    fn load_balancer_ips_external_ips_and_node_ports() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: gateway, namespace: xdp-gateway}
spec:
  type: LoadBalancer
  externalIPs: [198.51.100.20, not-an-ip]
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: web-secure, port: 8443, targetPort: https, nodePort: 30443}
  - {name: dns, port: 53, protocol: UDP}
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.10}, {hostname: lb.example.com}]
"#;
        let store = store_of(yaml);
        let mut warnings = Vec::new();
        let node: IpAddr = "192.0.2.5".parse().unwrap();
        let none = PortRoutes::default();
        let listeners = published(
            &store,
            ("xdp-gateway", "gateway"),
            &[node],
            &none,
            &mut warnings,
        );
        let shown: Vec<String> = listeners
            .iter()
            .map(|(l, _)| format!("{}={}", l.addr, l.kind))
            .collect();
        assert_eq!(
            shown,
            [
                "192.0.2.5:30080=http",
                "192.0.2.5:30443=https",
                "198.51.100.10:80=http",
                "198.51.100.10:8443=https",
                "198.51.100.20:80=http",
                "198.51.100.20:8443=https",
            ]
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .to_string()
                .contains("spec.externalIPs[1]: \"not-an-ip\"")
        );
        let missing = published(&store, ("xdp-gateway", "nope"), &[], &none, &mut warnings);
        assert!(missing.is_empty());
        assert!(warnings[1].to_string().contains("does not exist"));
    }
}
