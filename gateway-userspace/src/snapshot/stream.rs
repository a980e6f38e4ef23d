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
    /// TLS passed through on Gateway TLS listeners (TLSRoute), by listener address.
    pub tls: HashMap<SocketAddr, Arc<ServerNames>>,
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

/// Routes by TLS server name: exact names, then `*.` wildcards (the most specific first),
/// then a route for any name.
#[derive(Clone, Debug, Default)]
pub struct ServerNames {
    pub exact: HashMap<String, Arc<StreamRoute>>,
    /// By the suffix after `*.`.
    pub wildcard: HashMap<String, Arc<StreamRoute>>,
    /// For a name nothing else matches (or a hello without one).
    pub any: Option<Arc<StreamRoute>>,
    /// A wildcard covers any number of labels (the Gateway API's), not just one (Ingress's).
    pub any_depth: bool,
}

impl ServerNames {
    /// The route for `name` (lower-case, as the ClientHello reader gives it; `None` for a
    /// hello without one).
    pub fn route(&self, name: Option<&str>) -> Option<&Arc<StreamRoute>> {
        let Some(name) = name else {
            return self.any.as_ref();
        };
        if let Some(route) = self.exact.get(name) {
            return Some(route);
        }
        let mut rest = name;
        while let Some((label, suffix)) = rest.split_once('.') {
            if label.is_empty() {
                break;
            }
            if let Some(route) = self.wildcard.get(suffix) {
                return Some(route);
            }
            if !self.any_depth {
                break;
            }
            rest = suffix;
        }
        self.any.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_then_wildcards_then_any() {
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
        let owner = |names: &ServerNames, name| names.route(Some(name)).map(|r| r.owner.clone());
        assert_eq!(owner(&names, "db.example.com").as_deref(), Some("exact"));
        assert_eq!(owner(&names, "mq.example.com").as_deref(), Some("wild"));
        assert_eq!(owner(&names, "a.mq.example.com"), None);
        assert_eq!(owner(&names, "example.com"), None);
        assert_eq!(owner(&names, ".example.com"), None);
        assert!(names.route(None).is_none());
        // The Gateway API's wildcards cover any depth; the most specific suffix wins.
        names.any_depth = true;
        names
            .wildcard
            .insert("mq.example.com".into(), route("deeper"));
        assert_eq!(owner(&names, "a.mq.example.com").as_deref(), Some("deeper"));
        assert_eq!(owner(&names, "b.a.db.example.com").as_deref(), Some("wild"));
        names.any = Some(route("any"));
        assert_eq!(owner(&names, "other.org").as_deref(), Some("any"));
        assert_eq!(names.route(None).map(|r| r.owner.as_str()), Some("any"));
    }
}
