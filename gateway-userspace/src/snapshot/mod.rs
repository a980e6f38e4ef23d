//! The immutable route table the proxy serves from. `translate` builds one; it is swapped whole,
//! and every lookup structure is built once per snapshot, never per request.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use regex::Regex;

use crate::cidr::Cidr;
use crate::policy::Protocol;
use crate::policy::RoutePolicy;
use crate::policy::balance::{EndpointLoads, Ring};
use crate::policy::canary::Canary;
use crate::tls::CertificateTable;
use crate::tls::backend::BackendTls;
use crate::tls::client_auth::ClientAuth;

use crate::warning::Warning;

pub mod listener;
pub mod stream;

use listener::{ListenerTable, MatchConditions, ObjectReport, WeightedBackends};

/// The maps a request looks up (hosts, listeners, pooled backend connections): their keys come
/// from the configuration and clients only look them up, never insert, so a fast hash seeded
/// per process does where std's SipHash cost about 3% of a proxied request's instructions.
pub type LookupMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Virtual hosts by name (or by wildcard suffix). A map keeps up to half of its slots empty:
/// boxed, 10,000 hosts take 1.4 MB where inline they took 2 MB, and the key is the host's
/// shared name rather than a copy.
pub type HostMap = LookupMap<Arc<str>, Box<VirtualHost>>;

/// One generation of the route table, with the report of how it was made.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Virtual hosts by exact (lower-case) name.
    pub exact_hosts: HostMap,
    /// Wildcard virtual hosts by the suffix after `*.` (`*.foo.com` is stored as `foo.com`).
    pub wildcard_hosts: HostMap,
    /// Rules without a host: they serve any host that has no virtual host of its own.
    pub any_host: Option<VirtualHost>,
    /// Where requests go that match no rule (an Ingress's `spec.defaultBackend`).
    pub default_backend: Option<DefaultBackend>,
    /// What happened to each Ingress: served or not, and its warnings.
    pub ingresses: Vec<IngressReport>,
    /// Every warning, including those about files and objects other than Ingresses.
    pub warnings: Vec<Warning>,
    /// Certificates by host, for the TLS handshake.
    pub certificates: CertificateTable,
    /// VIP:port pairs of the published gateway Service (LoadBalancer IPs, external IPs,
    /// NodePorts on the node's addresses), for the kernel fast path.
    pub listeners: Vec<ListenerSpec>,
    /// The source ranges every served Ingress allows (`whitelist-source-range`), when they all
    /// name the same ones: what the kernel can enforce for every host of a listener.
    pub source_allow: Option<Vec<Cidr>>,
    /// Some host only redirects to its other spelling (`from-to-www-redirect`).
    pub has_www_redirects: bool,
    /// Some host asks for client certificates: handshakes look at the server name first.
    pub has_client_auth: bool,
    /// Gateway API listeners by the address:port they are served on.
    pub gateway_listeners: LookupMap<SocketAddr, Arc<ListenerTable>>,
    /// The status of every Gateway API object this gateway is responsible for.
    pub gateway_api: Vec<ObjectReport>,
    /// Layer 4: TCP and UDP ports, and TLS passed through.
    pub stream: stream::StreamTables,
}

/// A VIP:port the gateway owns, and what its connections speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    pub kind: ListenerKind,
}

/// What a listener's connections speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    Http,
    Https,
    /// TCP relayed whole (`tcp-services`).
    Tcp,
    /// UDP relayed by client flow (`udp-services`).
    Udp,
    /// TLS passed through by server name, never terminated (a Gateway's TLS listener).
    Tls,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Tls => "tls",
        }
    }
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ListenerSpec {
    type Err = String;

    /// `ADDR:PORT=KIND` with KIND one of http, https, tcp, udp, tls (`[v6]:PORT=...` for
    /// IPv6).
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, kind) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("{text:?}: expected ADDR:PORT=http|https|tcp|udp"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?}: not an ADDR:PORT"))?;
        let kind = match kind {
            "http" => ListenerKind::Http,
            "https" => ListenerKind::Https,
            "tcp" => ListenerKind::Tcp,
            "udp" => ListenerKind::Udp,
            "tls" => ListenerKind::Tls,
            other => return Err(format!("{other:?}: must be http, https, tcp, udp or tls")),
        };
        Ok(Self { addr, kind })
    }
}

/// The routes of one host.
#[derive(Debug, Default)]
pub struct VirtualHost {
    /// The host as written in the rules (`shop.example.com`, `*.example.com`, or `*` for any);
    /// its routes' identities share it.
    pub name: Arc<str>,
    /// Sorted so that the first match is the right one: longest path first, `Exact` before
    /// `Prefix` for the same path.
    pub routes: Vec<Route>,
    /// The `spec.defaultBackend` of an Ingress that has rules for this host: it serves this
    /// host's requests that match no path.
    pub default_backend: Option<DefaultBackend>,
    /// Listed under `spec.tls` of an Ingress: served over HTTPS, with HSTS.
    pub tls: bool,
    /// `from-to-www-redirect`: this host only redirects (308) to the other spelling.
    pub www_redirect: Option<String>,
    /// `auth-tls-secret`: client certificates are asked for in this host's handshakes.
    pub client_auth: Option<Arc<ClientAuth>>,
}

/// How a rule's path is compared with the request's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PathType {
    /// The whole path, case-sensitive, no trailing-slash equivalence.
    Exact,
    /// Element by element on `/`: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`.
    Prefix,
    /// Kubernetes leaves this to the controller: here it is `Prefix`.
    ImplementationSpecific,
}

impl PathType {
    /// Parses the `pathType` field.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "Exact" => Some(Self::Exact),
            "Prefix" => Some(Self::Prefix),
            "ImplementationSpecific" => Some(Self::ImplementationSpecific),
            _ => None,
        }
    }

    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "Exact",
            Self::Prefix => "Prefix",
            Self::ImplementationSpecific => "ImplementationSpecific",
        }
    }

    /// Whether the path is matched as a prefix (element by element).
    pub fn is_prefix(self) -> bool {
        self != Self::Exact
    }
}

/// One path of one host.
#[derive(Debug)]
pub struct Route {
    /// The path as the rule wrote it. This and the next two are shared through the table's
    /// [`Names`]: most routes of a table repeat a few paths (`/`) and owners.
    pub path: Arc<str>,
    /// The path compared with requests ([`Route::match_path_of`]).
    pub match_path: Arc<str>,
    pub path_type: PathType,
    pub backend: Arc<Backend>,
    /// The Ingress the route came from (`namespace/name`).
    pub ingress: Arc<str>,
    /// Plain-HTTP requests get a 308 to HTTPS instead of being proxied.
    pub https_redirect: bool,
    /// Its metric labels and log fields (set once its host is known).
    pub identity: Arc<RouteIdentity>,
    /// What its Ingress's annotations ask for.
    pub policy: Arc<RoutePolicy>,
    /// The path as a case-insensitive regular expression, when its host uses regex paths
    /// (`use-regex` or `rewrite-target` on any of the host's Ingresses). Boxed, as the canary:
    /// few routes have one, and inline it would take every route to the next size class.
    pub regex: Option<Box<Regex>>,
    /// A canary Ingress for the same host and path (boxed: few routes have one, and every
    /// route would carry its 136 bytes).
    pub canary: Option<Box<Canary>>,
    /// Gateway API matches on the method, headers and query.
    pub conditions: Option<Box<MatchConditions>>,
    /// Gateway API backends sharing the requests by weight (`backend` names the route).
    pub split: Option<Arc<WeightedBackends>>,
}

/// Who a request was served for, as metrics label it and access logs name it: the host as the
/// rule wrote it and the rule's path (bounded, unlike the request's), the Ingress and Service.
/// Empty strings where nothing matched. The names are shared: a host's routes hold one copy of
/// its name, and a table one copy of each namespace, Ingress and Service name ([`Names`]).
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteIdentity {
    pub host: Arc<str>,
    pub path: Arc<str>,
    pub namespace: Arc<str>,
    pub ingress: Arc<str>,
    pub service: Arc<str>,
}

impl RouteIdentity {
    /// The identity of requests that `ingress` (`namespace/name`) sends to `backend` for
    /// `host` and `path`.
    pub fn new(
        host: Arc<str>,
        path: Arc<str>,
        ingress: &str,
        backend: &Backend,
        names: &mut Names,
    ) -> Self {
        let name = ingress.split_once('/').map_or(ingress, |(_, name)| name);
        Self {
            host,
            path,
            namespace: names.get(&backend.namespace),
            ingress: names.get(name),
            service: names.get(&backend.service),
        }
    }
}

/// One copy of each name a table repeats: hosts, paths, owners (`namespace/name`), and the
/// namespace, Ingress and Service names of route identities. 10,000 routes of one Ingress held
/// 10,000 copies of each (1 MB of 13 at rest for the identities' names alone).
#[derive(Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(shared.clone());
        shared
    }
}

/// A default backend and the identity of the requests it serves.
#[derive(Debug)]
pub struct DefaultBackend {
    pub backend: Arc<Backend>,
    pub identity: Arc<RouteIdentity>,
}

impl Route {
    /// The part of a rule's `path` compared with requests: for prefixes, without the trailing
    /// slash (`/` stays).
    pub fn match_path_of(path: &str, path_type: PathType) -> &str {
        if !path_type.is_prefix() {
            return path;
        }
        match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        }
    }

    /// Whether a request path matches this route.
    pub fn matches(&self, path: &str) -> bool {
        if let Some(regex) = &self.regex {
            return regex.is_match(path);
        }
        if !self.path_type.is_prefix() {
            return path == &*self.match_path;
        }
        if &*self.match_path == "/" {
            return true;
        }
        match path.strip_prefix(&*self.match_path) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// A Service port and the ready endpoints behind it. Routes to the same Service port share one
/// `Backend`, so round robin spreads over all of its requests.
#[derive(Debug)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    /// The port as the Ingress named it: a number or a port name.
    pub port: String,
    /// Ready endpoints (address and target port).
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
    /// Latency and requests in flight per endpoint (`load-balance: ewma`).
    pub load: EndpointLoads,
    /// The hash ring over the endpoints, made on first use (`upstream-hash-by`, affinity).
    ring: OnceLock<Ring>,
    /// A BackendTLSPolicy's TLS towards this Service port (Gateway API routes).
    pub tls: Option<Arc<BackendTls>>,
}

impl Backend {
    /// A backend for `namespace/service:port` with these endpoints.
    pub fn new(namespace: &str, service: &str, port: &str, endpoints: Vec<SocketAddr>) -> Self {
        Self {
            namespace: namespace.to_string(),
            service: service.to_string(),
            port: port.to_string(),
            load: EndpointLoads::new(endpoints.len()),
            endpoints,
            next: AtomicUsize::new(0),
            ring: OnceLock::new(),
            tls: None,
        }
    }

    /// The same Service port and endpoints, reached over `tls`.
    pub fn with_tls(&self, tls: Arc<BackendTls>) -> Self {
        Self {
            tls: Some(tls),
            ..Self::new(
                &self.namespace,
                &self.service,
                &self.port,
                self.endpoints.clone(),
            )
        }
    }

    /// How a route speaking `protocol` reaches this backend: over TLS where a BackendTLSPolicy
    /// says so.
    pub fn protocol(&self, protocol: Protocol) -> Protocol {
        match self.tls {
            Some(_) => protocol.over_tls(),
            None => protocol,
        }
    }

    /// The consistent-hash ring over the endpoints.
    pub fn ring(&self) -> &Ring {
        self.ring.get_or_init(|| Ring::new(&self.endpoints))
    }

    /// The index of `endpoint` among the endpoints.
    pub fn index_of(&self, endpoint: SocketAddr) -> Option<usize> {
        self.endpoints.iter().position(|e| *e == endpoint)
    }

    /// The next endpoint in round-robin order, or `None` when there is no ready endpoint.
    pub fn next_endpoint(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[turn % self.endpoints.len()])
    }

    /// The endpoint round robin gives next, without taking the turn.
    pub fn peek_next_endpoint(&self) -> Option<SocketAddr> {
        let turn = self.next.load(Ordering::Relaxed);
        self.endpoints
            .get(turn % self.endpoints.len().max(1))
            .copied()
    }

    /// `namespace/service:port`, for logs and error pages.
    pub fn name(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.service, self.port)
    }

    /// `namespace-service-port`, as ingress-nginx names upstreams in its logs.
    pub fn upstream_name(&self) -> String {
        format!("{}-{}-{}", self.namespace, self.service, self.port)
    }
}

/// How a virtual host's name covers a request's host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HostMatch {
    Exact,
    Wildcard,
    AnyHost,
}

/// The answer to "where does this request go".
#[derive(Debug)]
pub struct RouteMatch<'a> {
    pub backend: &'a Arc<Backend>,
    /// The matched route, or `None` when a default backend answered.
    pub route: Option<&'a Route>,
    /// Plain-HTTP requests go to HTTPS instead.
    pub https_redirect: bool,
    /// The host has TLS configured (HSTS applies).
    pub tls_host: bool,
    pub identity: &'a Arc<RouteIdentity>,
}

impl Snapshot {
    /// Finds the backend for a request. `host` is the Host header or `:authority` after
    /// [`normalize_host`]; `path` is the request path without the query.
    pub fn route(&self, host: &str, path: &str) -> Option<RouteMatch<'_>> {
        let vhost = self.virtual_host(host);
        if let Some(vhost) = vhost {
            if let Some(route) = vhost.routes.iter().find(|r| r.matches(path)) {
                return Some(RouteMatch {
                    backend: &route.backend,
                    route: Some(route),
                    https_redirect: route.https_redirect,
                    tls_host: vhost.tls,
                    identity: &route.identity,
                });
            }
            if let Some(default) = &vhost.default_backend {
                return Some(RouteMatch {
                    backend: &default.backend,
                    route: None,
                    https_redirect: vhost.tls,
                    tls_host: vhost.tls,
                    identity: &default.identity,
                });
            }
        }
        let tls_host = vhost.is_some_and(|v| v.tls);
        self.default_backend.as_ref().map(|default| RouteMatch {
            backend: &default.backend,
            route: None,
            https_redirect: tls_host,
            tls_host,
            identity: &default.identity,
        })
    }

    /// The host `host` redirects to (`from-to-www-redirect`), if it only redirects.
    pub fn www_redirect(&self, host: &str) -> Option<&str> {
        if !self.has_www_redirects {
            return None;
        }
        self.exact_hosts.get(host)?.www_redirect.as_deref()
    }

    /// The client certificate rules of `host`, if it has any.
    pub fn client_auth(&self, host: &str) -> Option<&Arc<ClientAuth>> {
        if !self.has_client_auth {
            return None;
        }
        self.virtual_host(host)?.client_auth.as_ref()
    }

    /// The virtual host that serves `host` (already normalized): the most specific that covers
    /// it. Ingress rules of a less specific host are never tried.
    fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.covering_hosts(host).next().map(|(_, vhost)| vhost)
    }

    /// The virtual hosts whose names cover `host`, most specific first: the exact name, a
    /// wildcard covering exactly one more label, then the rules without a host.
    /// Lazy: the proxy takes the first, and a less specific host is only looked up when a
    /// more specific one is missing.
    pub fn covering_hosts<'s, 'h>(
        &'s self,
        host: &'h str,
    ) -> impl Iterator<Item = (HostMatch, &'s VirtualHost)> + use<'s, 'h> {
        let exact = std::iter::once_with(move || self.exact_hosts.get(host))
            .flatten()
            .map(|v| (HostMatch::Exact, &**v));
        let wildcard = std::iter::once_with(move || {
            let (label, suffix) = host.split_once('.')?;
            if label.is_empty() {
                return None;
            }
            self.wildcard_hosts.get(suffix)
        })
        .flatten()
        .map(|v| (HostMatch::Wildcard, &**v));
        let any = self.any_host.iter().map(|v| (HostMatch::AnyHost, v));
        exact.chain(wildcard).chain(any)
    }

    /// Every virtual host, exact names first, in name order (for reports).
    pub fn virtual_hosts(&self) -> Vec<&VirtualHost> {
        let mut exact: Vec<&VirtualHost> = self.exact_hosts.values().map(|v| &**v).collect();
        exact.sort_by(|a, b| a.name.cmp(&b.name));
        let mut wildcard: Vec<&VirtualHost> = self.wildcard_hosts.values().map(|v| &**v).collect();
        wildcard.sort_by(|a, b| a.name.cmp(&b.name));
        exact
            .into_iter()
            .chain(wildcard)
            .chain(self.any_host.as_ref())
            .collect()
    }
}

/// Lower-cases a Host header value and strips its port and a trailing dot, keeping IPv6
/// literals whole (`[::1]:8080` becomes `[::1]`).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let name = without_port.trim_end_matches('.');
    // Most clients send the name in lower case: then it is borrowed, not copied.
    match name.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(name.to_ascii_lowercase()),
        false => Cow::Borrowed(name),
    }
}

/// What happened to one Ingress, for `/routes`, `gateway routes` and (later) its status.
#[derive(Clone, Debug, Serialize)]
pub struct IngressReport {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Whether this gateway serves the Ingress.
    pub served: bool,
    /// Why it is not served (another class, ...), when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The hosts of its rules (`*` for a rule without a host), shared with the virtual hosts'
    /// names.
    pub hosts: Vec<Arc<str>>,
    /// The hosts listed under `spec.tls`.
    pub tls_hosts: Vec<String>,
    pub warnings: Vec<Warning>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, path_type: PathType, service: &str) -> Route {
        Route {
            path: path.into(),
            match_path: Route::match_path_of(path, path_type).into(),
            path_type,
            backend: Arc::new(Backend::new("default", service, "80", vec![])),
            ingress: "default/test".into(),
            https_redirect: false,
            identity: Arc::default(),
            policy: Arc::default(),
            regex: None,
            canary: None,
            conditions: None,
            split: None,
        }
    }

    fn default_backend(service: &str) -> Option<DefaultBackend> {
        Some(DefaultBackend {
            backend: Arc::new(Backend::new("default", service, "80", vec![])),
            identity: Arc::default(),
        })
    }

    #[test]
    fn prefix_matches_element_by_element() {
        let r = route("/foo", PathType::Prefix, "s");
        assert!(r.matches("/foo"));
        assert!(r.matches("/foo/"));
        assert!(r.matches("/foo/bar"));
        assert!(!r.matches("/foobar"));
        assert!(!r.matches("/fo"));
        assert!(!r.matches("/"));
        let trailing = route("/foo/", PathType::Prefix, "s");
        assert!(trailing.matches("/foo"));
        assert!(trailing.matches("/foo/bar"));
        assert!(!trailing.matches("/foobar"));
        let root = route("/", PathType::Prefix, "s");
        assert!(root.matches("/"));
        assert!(root.matches("/anything/at/all"));
        let deep = route("/aaa/bb", PathType::Prefix, "s");
        assert!(!deep.matches("/aaa/bbb"));
        assert!(deep.matches("/aaa/bb/ccc"));
    }

    #[test]
    fn exact_is_case_sensitive_and_slash_strict() {
        let r = route("/foo", PathType::Exact, "s");
        assert!(r.matches("/foo"));
        assert!(!r.matches("/foo/"));
        assert!(!r.matches("/Foo"));
        assert!(!r.matches("/foo/bar"));
        let prefix = route("/foo", PathType::Prefix, "s");
        assert!(!prefix.matches("/FOO"));
    }

    #[test]
    fn implementation_specific_is_prefix() {
        let r = route("/api", PathType::ImplementationSpecific, "s");
        assert!(r.matches("/api/v1"));
        assert!(!r.matches("/apis"));
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("Foo.Example.COM:8080"), "foo.example.com");
        assert_eq!(normalize_host("foo.example.com."), "foo.example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host("example.com"), "example.com");
    }

    fn vhost(name: &str, routes: Vec<Route>) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            routes,
            ..VirtualHost::default()
        }
    }

    fn service_for(snapshot: &Snapshot, host: &str, path: &str) -> Option<String> {
        snapshot
            .route(&normalize_host(host), path)
            .map(|m| m.backend.service.clone())
    }

    #[test]
    fn host_lookup_order_and_wildcards() {
        let mut snapshot = Snapshot::default();
        snapshot.exact_hosts.insert(
            "a.foo.com".into(),
            Box::new(vhost(
                "a.foo.com",
                vec![route("/", PathType::Prefix, "exact")],
            )),
        );
        snapshot.wildcard_hosts.insert(
            "foo.com".into(),
            Box::new(vhost(
                "*.foo.com",
                vec![route("/", PathType::Prefix, "wild")],
            )),
        );
        snapshot.any_host = Some(vhost("*", vec![route("/", PathType::Prefix, "any")]));
        assert_eq!(service_for(&snapshot, "a.foo.com", "/").unwrap(), "exact");
        assert_eq!(
            service_for(&snapshot, "A.FOO.com:80", "/").unwrap(),
            "exact"
        );
        assert_eq!(service_for(&snapshot, "b.foo.com", "/").unwrap(), "wild");
        // A wildcard covers exactly one label.
        assert_eq!(service_for(&snapshot, "x.b.foo.com", "/").unwrap(), "any");
        assert_eq!(service_for(&snapshot, "foo.com", "/").unwrap(), "any");
        assert_eq!(service_for(&snapshot, ".foo.com", "/").unwrap(), "any");
        assert_eq!(service_for(&snapshot, "other.org", "/x").unwrap(), "any");
    }

    #[test]
    fn unmatched_path_falls_to_host_default_then_global_default() {
        let mut snapshot = Snapshot::default();
        let mut host = vhost("a.com", vec![route("/api", PathType::Prefix, "api")]);
        snapshot.exact_hosts.insert(
            "a.com".into(),
            Box::new(vhost("a.com", vec![route("/api", PathType::Prefix, "api")])),
        );
        snapshot.exact_hosts.insert("b.com".into(), {
            host.name = "b.com".into();
            host.default_backend = default_backend("b-default");
            Box::new(host)
        });
        assert_eq!(service_for(&snapshot, "a.com", "/other"), None);
        snapshot.default_backend = default_backend("global");
        assert_eq!(service_for(&snapshot, "a.com", "/other").unwrap(), "global");
        assert_eq!(
            service_for(&snapshot, "b.com", "/other").unwrap(),
            "b-default"
        );
        assert_eq!(service_for(&snapshot, "b.com", "/api/x").unwrap(), "api");
        assert_eq!(service_for(&snapshot, "nohost.com", "/").unwrap(), "global");
    }

    #[test]
    fn round_robin_visits_every_endpoint() {
        let endpoints: Vec<SocketAddr> = (0..3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect();
        let backend = Backend::new("default", "s", "80", endpoints.clone());
        let picked: Vec<_> = (0..6).filter_map(|_| backend.next_endpoint()).collect();
        assert_eq!(&picked[..3], &endpoints[..]);
        assert_eq!(&picked[3..], &endpoints[..]);
        assert_eq!(Backend::new("d", "s", "80", vec![]).next_endpoint(), None);
    }
}
