//! Layer 4 routes: TCP and UDP ports relayed whole to a Service, and TLS connections passed
//! through to a Service by the server name of their ClientHello, never terminated.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::listener::WeightedBackends;

/// Every layer 4 route of a snapshot.
#[derive(Debug, Default)]
pub struct StreamTables {
    /// TCP relayed to a Service (ingress-nginx's tcp-services), by the listener address it
    /// is served on (a NodePort's listener leads to the route of its Service port).
    pub tcp: HashMap<SocketAddr, Arc<StreamRoute>>,
    /// UDP, likewise (udp-services).
    pub udp: HashMap<SocketAddr, Arc<StreamRoute>>,
    /// TLS passed through on the HTTPS listeners of Ingresses (`ssl-passthrough`).
    pub passthrough: ServerNames,
}

/// Where one port's (or one server name's) connections go.
#[derive(Debug)]
pub struct StreamRoute {
    /// What asked for it, for logs and reports: `configmap ingress-nginx/tcp-services port
    /// 9000`, `ingress default/db`.
    pub owner: String,
    pub backends: WeightedBackends,
    /// The client's connection starts with a PROXY protocol header (v1 or v2), which is
    /// required and read for the client's address.
    pub accept_proxy_protocol: bool,
    /// The backend's connection starts with a PROXY protocol header of this version.
    pub send_proxy_protocol: Option<ProxyProtocol>,
}

/// A version of the PROXY protocol header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// Routes by TLS server name: exact names, then `*.` wildcards covering one more label.
#[derive(Debug, Default)]
pub struct ServerNames {
    pub exact: HashMap<String, Arc<StreamRoute>>,
    /// By the suffix after `*.`.
    pub wildcard: HashMap<String, Arc<StreamRoute>>,
}

impl ServerNames {
    /// The route for `name` (lower-case, as the ClientHello reader gives it).
    pub fn route(&self, name: &str) -> Option<&Arc<StreamRoute>> {
        self.exact.get(name).or_else(|| {
            let (label, suffix) = name.split_once('.')?;
            (!label.is_empty()).then(|| self.wildcard.get(suffix))?
        })
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_then_one_label_wildcards() {
        let route = |owner: &str| {
            Arc::new(StreamRoute {
                owner: owner.into(),
                backends: WeightedBackends {
                    choices: vec![],
                    total: 0,
                },
                accept_proxy_protocol: false,
                send_proxy_protocol: None,
            })
        };
        let mut names = ServerNames::default();
        names.exact.insert("db.example.com".into(), route("exact"));
        names.wildcard.insert("example.com".into(), route("wild"));
        let owner = |name: &str| names.route(name).map(|r| r.owner.as_str());
        assert_eq!(owner("db.example.com"), Some("exact"));
        assert_eq!(owner("mq.example.com"), Some("wild"));
        assert_eq!(owner("a.mq.example.com"), None);
        assert_eq!(owner("example.com"), None);
        assert_eq!(owner(".example.com"), None);
    }
}
