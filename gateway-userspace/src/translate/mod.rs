//! Objects in, route table out: the one pure function where Ingress semantics live.
//!
//! No I/O and no clock: the same store always gives the same snapshot and the same warnings.
//! Ingresses are visited oldest first (creationTimestamp, then namespace/name), so that when two
//! claim the same host and path, the older one wins and the younger one gets the warning.

mod annotations;
mod backend;
mod class;
mod gateway_api;
mod listeners;
mod secrets;
mod streams;
mod tls;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend, IngressClass};

pub use class::ClassSelector;
pub use gateway_api::GatewayOptions;
pub use streams::StreamOptions;

use crate::cidr::Cidr;
use crate::policy::RoutePolicy;
use crate::policy::auth::ExternalAuth;
use crate::policy::canary::Canary;
use crate::policy::rewrite::path_regex;
use crate::policy::service_url::ServiceUrl;
use crate::snapshot::stream::{ServerNames, StreamTables};
use crate::snapshot::{
    Backend, DefaultBackend, IngressReport, Names, PathType, Route, RouteIdentity, Snapshot,
    VirtualHost,
};
use crate::store::{ObjectKey, Sourced, Store, namespace_of};
use crate::tls::client_auth::ClientAuth;
use crate::warning::Warning;
use annotations::Annotations;

/// What the annotations of an Ingress decide for each of its routes.
struct RouteOptions {
    policy: Arc<RoutePolicy>,
    use_regex: bool,
    service_upstream: bool,
}

use backend::{BackendResolver, ProblemKind};
use tls::TlsBuilder;

/// What shapes the translation besides the objects.
#[derive(Clone, Debug, Default)]
pub struct TranslateOptions {
    pub classes: ClassSelector,
    /// The gateway's own Service (`namespace`, `name`), whose addresses and ports are the
    /// listeners of the kernel fast path.
    pub publish_service: Option<(String, String)>,
    /// This node's addresses, on which the published Service's NodePorts are listeners.
    pub node_ips: Vec<IpAddr>,
    pub gateway: GatewayOptions,
    /// Layer 4: the tcp-services and udp-services ConfigMaps, and TLS passthrough.
    pub streams: StreamOptions,
    /// `--global-auth-url`: the auth service of every Ingress without an `auth-url` of its own
    /// or `enable-global-auth: "false"`.
    pub global_auth: Option<ServiceUrl>,
}

/// Translates every object of `store` into one route table. `source_warnings` (problems the
/// source met while reading, such as unparsable files) are carried into the snapshot's report.
/// `previous` is the table served until now: certificates of unchanged Secrets are reused from
/// it, and so are the rate-limit counters of Ingresses whose limits did not change (a change
/// elsewhere must not hand every client a fresh burst).
/// A Secret that breaks keeps the certificate it had there. `now` decides expiry.
pub fn translate(
    store: &Store,
    options: &TranslateOptions,
    source_warnings: Vec<Warning>,
    previous: &Snapshot,
    now: SystemTime,
) -> Snapshot {
    let mut ingresses: Vec<&Sourced<Ingress>> = store.ingresses.iter().collect();
    ingresses.sort_by_key(|i| {
        let meta = &i.object.metadata;
        (
            meta.creation_timestamp.clone().map(|t| t.0),
            namespace_of(meta).to_string(),
            meta.name.clone(),
        )
    });

    // Canary Ingresses attach to the routes of the others, so they come last.
    ingresses.sort_by_key(|i| annotations::is_canary(&i.object.metadata));

    let mut table = TableBuilder {
        resolver: BackendResolver::new(store),
        tls: TlsBuilder::new(store, &previous.certificates, now),
        hosts: HashMap::new(),
        default_backend: None,
        allow_lists: Vec::new(),
        www_aliases: Vec::new(),
        passthrough: ServerNames::default(),
        previous_policies: previous
            .virtual_hosts()
            .iter()
            .flat_map(|host| &host.routes)
            .map(|route| (route.ingress.clone(), route.policy.clone()))
            .collect(),
        global_auth: options
            .global_auth
            .clone()
            .map(|url| Arc::new(ExternalAuth::new(url))),
        previous_client_auth: (previous.virtual_hosts().iter())
            .filter_map(|host| host.client_auth.clone())
            .collect(),
        names: Names::default(),
    };
    let reports: Vec<IngressReport> = ingresses
        .into_iter()
        .map(|ingress| table.add_ingress(ingress, &store.ingress_classes, options))
        .collect();

    let gateway = gateway_api::translate(
        store,
        &options.gateway,
        &mut table.resolver,
        &mut table.tls,
        previous,
        &mut table.names,
    );

    let mut warnings = source_warnings;
    warnings.extend(reports.iter().flat_map(|r| r.warnings.iter().cloned()));
    let port_routes =
        streams::services(store, &options.streams, &mut table.resolver, &mut warnings);
    let mut published = match &options.publish_service {
        Some((namespace, name)) => listeners::published(
            store,
            (namespace, name),
            &options.node_ips,
            &port_routes,
            &mut warnings,
        ),
        None => Vec::new(),
    };
    published.extend(
        options
            .streams
            .address
            .into_iter()
            .flat_map(|a| port_routes.listeners(a)),
    );
    let mut stream = StreamTables {
        passthrough: table.passthrough,
        tcp: gateway.streams.tcp,
        udp: gateway.streams.udp,
        tls: gateway.streams.tls,
    };
    port_routes.place(&published, &mut stream);
    let mut listeners: Vec<_> = published.into_iter().map(|(spec, _)| spec).collect();
    listeners.extend(gateway.specs);
    warnings.extend(gateway.warnings);
    let source_allow = consensus(&table.allow_lists);
    let (certificates, tls_hosts) = table.tls.finish();
    let mut snapshot = Snapshot {
        default_backend: table.default_backend.map(|(backend, owner)| {
            default_backend(table.names.get(""), backend, &owner, &mut table.names)
        }),
        ingresses: reports,
        warnings,
        certificates,
        listeners,
        source_allow,
        gateway_listeners: gateway.listeners,
        gateway_api: gateway.reports,
        stream,
        ..Snapshot::default()
    };
    // `from-to-www-redirect`: the other spelling of a host redirects to it, unless some Ingress
    // serves that spelling itself.
    for (alias, target) in table.www_aliases {
        let alias_pattern = HostPattern::Exact(alias.clone());
        if table.hosts.contains_key(&alias_pattern) {
            continue;
        }
        snapshot.has_www_redirects = true;
        let name: Arc<str> = Arc::from(alias);
        snapshot.exact_hosts.insert(
            name.clone(),
            Box::new(VirtualHost {
                name,
                www_redirect: Some(target),
                ..VirtualHost::default()
            }),
        );
    }
    for (pattern, host) in table.hosts {
        let vhost = host.build(&pattern, tls_hosts.contains(&pattern), &mut table.names);
        snapshot.has_client_auth |= vhost.client_auth.is_some();
        match pattern {
            HostPattern::Exact(_) => {
                snapshot
                    .exact_hosts
                    .insert(vhost.name.clone(), Box::new(vhost));
            }
            HostPattern::Wildcard(suffix) => {
                snapshot
                    .wildcard_hosts
                    .insert(Arc::from(suffix), Box::new(vhost));
            }
            HostPattern::Any => snapshot.any_host = Some(vhost),
        }
    }
    snapshot
}

/// A default backend serving `host` (empty for the global one) for the Ingress `owner`.
fn default_backend(
    host: Arc<str>,
    backend: Arc<Backend>,
    owner: &str,
    names: &mut Names,
) -> DefaultBackend {
    DefaultBackend {
        identity: Arc::new(RouteIdentity::new(
            host,
            names.get(""),
            owner,
            &backend,
            names,
        )),
        backend,
    }
}

/// Which requests a rule's `host` covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum HostPattern {
    Exact(String),
    /// `*.foo.com`, stored as `foo.com`.
    Wildcard(String),
    Any,
}

impl HostPattern {
    fn parse(host: Option<&str>) -> Result<Self, String> {
        let host = match host {
            None | Some("") => return Ok(Self::Any),
            Some(host) => host,
        };
        if host.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "{host:?}: host must be a DNS name, not an IP address"
            ));
        }
        match host.strip_prefix("*.") {
            Some(suffix) => check_dns_name(suffix)
                .map(|()| Self::Wildcard(suffix.to_string()))
                .map_err(|reason| format!("{host:?}: {reason}")),
            None => check_dns_name(host)
                .map(|()| Self::Exact(host.to_string()))
                .map_err(|reason| format!("{host:?}: {reason}")),
        }
    }

    fn display(&self) -> String {
        match self {
            Self::Exact(name) => name.clone(),
            Self::Wildcard(suffix) => format!("*.{suffix}"),
            Self::Any => "*".to_string(),
        }
    }
}

/// A DNS-1123 subdomain, as the API server requires of `spec.rules[].host`.
fn check_dns_name(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err("host is longer than 253 characters".to_string());
    }
    for label in name.split('.') {
        if !is_dns_label(label) {
            return Err(format!(
                "label {label:?} is not a lower-case DNS label (a-z, 0-9, '-', 1-63 characters, \
                 a wildcard only as the whole first label)"
            ));
        }
    }
    Ok(())
}

/// A DNS-1123 label: a-z, 0-9 and '-', 1-63 characters, not starting or ending with '-' (a
/// name's label, and the name of a Service or namespace).
fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// The table being built, one Ingress at a time.
struct TableBuilder<'a> {
    resolver: BackendResolver<'a>,
    tls: TlsBuilder<'a>,
    hosts: HashMap<HostPattern, HostBuilder>,
    /// The global default backend and the Ingress (`namespace/name`) it came from.
    default_backend: Option<(Arc<Backend>, String)>,
    /// The `whitelist-source-range` of every served Ingress (sorted), `None` where it has none.
    allow_lists: Vec<Option<Vec<Cidr>>>,
    /// `from-to-www-redirect`: (the other spelling, the host it redirects to).
    www_aliases: Vec<(String, String)>,
    /// TLS passed through by server name (`ssl-passthrough`), oldest Ingress first.
    passthrough: ServerNames,
    /// The policies of the previous table, by Ingress (`namespace/name`): its rate limiters
    /// and verified credentials are kept where they did not change.
    previous_policies: HashMap<Arc<str>, Arc<RoutePolicy>>,
    /// `--global-auth-url`, made once for every Ingress it applies to.
    global_auth: Option<Arc<ExternalAuth>>,
    /// The client certificate rules of the previous table, kept where unchanged.
    previous_client_auth: Vec<Arc<ClientAuth>>,
    /// One copy of each name, path and owner for the whole table: Ingress and Gateway API
    /// routes share them.
    names: Names,
}

/// The allow-list every served Ingress agrees on, if they all have the same one.
fn consensus(lists: &[Option<Vec<Cidr>>]) -> Option<Vec<Cidr>> {
    let first = lists.first()?.as_ref()?;
    lists
        .iter()
        .all(|list| list.as_ref() == Some(first))
        .then(|| first.clone())
}

#[derive(Default)]
struct HostBuilder {
    /// Routes by (match path, exact?), so that a second claim on the same path is a conflict.
    routes: HashMap<(Arc<str>, bool), (Route, Redirect)>,
    default_backend: Option<(Arc<Backend>, String)>,
    /// An Ingress of this host uses regular expressions: then all its paths are (as in
    /// ingress-nginx, where the whole server block switches to regex locations).
    regex: bool,
    /// `auth-tls-secret`: the host's client certificate rules, and the Ingress that set them.
    client_auth: Option<(Arc<ClientAuth>, String)>,
}

/// When a route sends plain-HTTP requests to HTTPS (ingress-nginx's `ssl-redirect` and
/// `force-ssl-redirect`).
#[derive(Clone, Copy, Debug)]
enum Redirect {
    IfTls,
    Never,
    Always,
}

impl HostBuilder {
    fn build(self, pattern: &HostPattern, tls: bool, names: &mut Names) -> VirtualHost {
        let name = names.get(&pattern.display());
        // Collected into the exact size: a map's values are not a `TrustedLen` iterator, and
        // collecting them keeps room for four routes at least (most hosts have one).
        let mut routes = Vec::with_capacity(self.routes.len());
        routes.extend(self.routes.into_values().map(|(mut route, redirect)| {
            route.https_redirect = match redirect {
                Redirect::Always => true,
                Redirect::Never => false,
                Redirect::IfTls => tls,
            };
            route.identity = Arc::new(RouteIdentity::new(
                name.clone(),
                route.path.clone(),
                &route.ingress,
                &route.backend,
                names,
            ));
            if self.regex {
                // Paths of the host's other Ingresses were not written as expressions: one
                // that does not compile is matched literally.
                let exact = !route.path_type.is_prefix();
                route.regex = path_regex(&route.path, exact)
                    .or_else(|_| path_regex(&regex::escape(&route.path), exact))
                    .ok()
                    .map(Box::new);
            }
            route
        }));
        routes.sort_by(|a: &Route, b: &Route| {
            b.match_path
                .len()
                .cmp(&a.match_path.len())
                .then(a.path_type.is_prefix().cmp(&b.path_type.is_prefix()))
                .then(a.match_path.cmp(&b.match_path))
        });
        VirtualHost {
            default_backend: self
                .default_backend
                .map(|(backend, owner)| default_backend(name.clone(), backend, &owner, names)),
            name,
            routes,
            tls,
            www_redirect: None,
            client_auth: self.client_auth.map(|(auth, _)| auth),
        }
    }
}

/// Collects the warnings of one Ingress.
struct IngressWarnings<'a> {
    key: &'a ObjectKey,
    source: Option<&'a str>,
    list: Vec<Warning>,
}

impl IngressWarnings<'_> {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list
            .push(Warning::new(self.key, self.source, field, message));
    }

    /// Why a backend has no endpoints, and what happens meanwhile: a notice when it only has
    /// none yet (see [`Warning::notice`]), a warning when the reference is wrong.
    fn backend(&mut self, field: String, problem: &backend::Problem, meanwhile: &str) {
        let mut warning = Warning::new(
            self.key,
            self.source,
            field,
            format!("{}; {meanwhile}", problem.text),
        );
        warning.notice = problem.kind == ProblemKind::NoEndpoints;
        self.list.push(warning);
    }
}

impl TableBuilder<'_> {
    fn add_ingress(
        &mut self,
        sourced: &Sourced<Ingress>,
        classes: &[Sourced<IngressClass>],
        options: &TranslateOptions,
    ) -> IngressReport {
        let ingress = &sourced.object;
        let key = ObjectKey::namespaced("ingress", &ingress.metadata);
        let namespace = namespace_of(&ingress.metadata).to_string();
        let owner = format!("{namespace}/{}", key.name);
        let mut warnings = IngressWarnings {
            key: &key,
            source: sourced.source.as_deref(),
            list: Vec::new(),
        };
        let mut report = IngressReport {
            namespace: namespace.clone(),
            name: key.name.clone(),
            source: sourced.source.clone(),
            served: false,
            reason: None,
            hosts: Vec::new(),
            tls_hosts: Vec::new(),
            warnings: Vec::new(),
        };
        if let Err(reason) = options.classes.select(ingress, classes) {
            report.reason = Some(reason);
            return report;
        }
        report.served = true;
        let paths: Vec<(String, bool)> = ingress
            .spec
            .iter()
            .flat_map(|spec| spec.rules.iter().flatten())
            .flat_map(|rule| rule.http.iter().flat_map(|h| h.paths.iter()))
            .map(|p| {
                let path = p.path.clone().unwrap_or_else(|| "/".into());
                (path, p.path_type == "Exact")
            })
            .collect();
        let mut annotations = Annotations::parse(&ingress.metadata, &paths, &mut warnings);
        if let Some(name) = annotations.default_backend.take() {
            annotations.policy.fallback = self.fallback(&namespace, &name, &mut warnings);
        }
        let previous = self.previous_policies.get(owner.as_str());
        if let Some(limits) = &mut annotations.policy.limits
            && let Some(kept) = previous.and_then(|p| p.limits.as_ref())
            && kept.same_limits(limits)
        {
            *limits = kept.clone();
        }
        let lookup = |name: &str| self.tls.secret(&namespace, name);
        let client_auth = secrets::read(
            &mut annotations,
            (&namespace, lookup),
            (previous.map(|p| &**p), &self.previous_client_auth),
            &mut warnings,
        );
        let global_auth = match &self.global_auth {
            Some(auth)
                if annotations.policy.external_auth.is_none() && !annotations.global_auth_off =>
            {
                annotations.policy.external_auth = Some(auth.clone());
                true
            }
            _ => false,
        };
        if annotations.canary.is_none() {
            self.allow_lists
                .push(annotations.policy.allow.clone().map(|mut list| {
                    list.sort();
                    list.dedup();
                    list
                }));
        }
        let has_annotations = ingress
            .metadata
            .annotations
            .iter()
            .flatten()
            .any(|(key, _)| key.starts_with(annotations::PREFIX));
        let options_of_routes = RouteOptions {
            // Most Ingresses have no annotation: they share one policy.
            policy: match has_annotations || global_auth {
                true => Arc::new(std::mem::take(&mut annotations.policy)),
                false => RoutePolicy::plain(),
            },
            use_regex: annotations.use_regex,
            service_upstream: annotations.service_upstream,
        };
        let redirect = if annotations.force_ssl_redirect {
            Redirect::Always
        } else if annotations.ssl_redirect == Some(false) {
            Redirect::Never
        } else {
            Redirect::IfTls
        };
        let Some(spec) = &ingress.spec else {
            warnings.add("spec", "the Ingress has no spec; nothing to route");
            report.warnings = warnings.list;
            return report;
        };
        report.tls_hosts = spec
            .tls
            .iter()
            .flatten()
            .flat_map(|tls| tls.hosts.iter().flatten().cloned())
            .collect();

        let default_backend = spec.default_backend.as_ref().and_then(|backend| {
            self.resolve(
                &namespace,
                backend,
                "spec.defaultBackend",
                None,
                &mut warnings,
            )
        });
        let passthrough = annotations.ssl_passthrough && annotations.canary.is_none();
        if passthrough && !options.streams.ssl_passthrough {
            warnings.add(
                format!(
                    "metadata.annotations[\"{}ssl-passthrough\"]",
                    annotations::PREFIX
                ),
                "needs the gateway started with --enable-ssl-passthrough; TLS is terminated here",
            );
        }
        let passthrough = passthrough && options.streams.ssl_passthrough;
        let mut own_hosts = Vec::new();
        for (r, rule) in spec.rules.iter().flatten().enumerate() {
            let field = format!("spec.rules[{r}]");
            let pattern = match HostPattern::parse(rule.host.as_deref()) {
                Ok(pattern) => pattern,
                Err(reason) => {
                    warnings.add(format!("{field}.host"), format!("{reason}; rule ignored"));
                    continue;
                }
            };
            report.hosts.push(self.names.get(&pattern.display()));
            own_hosts.push(pattern.clone());
            if annotations.canary.is_none() {
                if annotations.www_redirect
                    && let HostPattern::Exact(host) = &pattern
                {
                    let alias = match host.strip_prefix("www.") {
                        Some(bare) => bare.to_string(),
                        None => format!("www.{host}"),
                    };
                    self.www_aliases.push((alias, host.clone()));
                }
                let host = self.hosts.entry(pattern.clone()).or_default();
                host.regex |= options_of_routes.use_regex;
                if let Some(auth) = &client_auth {
                    match &host.client_auth {
                        None => host.client_auth = Some((auth.clone(), owner.clone())),
                        Some((theirs, by)) if !Arc::ptr_eq(theirs, auth) => warnings.add(
                            annotations::field("auth-tls-secret"),
                            format!(
                                "host {} has the client certificate rules of {by} (they apply \
                                 to every route of a host); these are not used",
                                pattern.display()
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            let mut root_backend = None;
            for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let field = format!("{field}.http.paths[{p}]");
                let route = self.route(
                    &namespace,
                    &owner,
                    path,
                    &field,
                    &options_of_routes,
                    &mut warnings,
                );
                if let Some(route) = &route
                    && &*route.match_path == "/"
                    && route.path_type.is_prefix()
                {
                    root_backend = Some(route.backend.clone());
                }
                // A canary's paths attach to the routes of the others; it has none of its own.
                match (route, &annotations.canary) {
                    (Some(route), Some(canary)) => {
                        self.add_canary(&pattern, route, canary, &field, &mut warnings)
                    }
                    (Some(route), None) => {
                        self.add_route(&pattern, route, redirect, &field, &mut warnings)
                    }
                    (None, _) => {}
                }
            }
            if passthrough {
                self.add_passthrough(&pattern, root_backend, &owner, &field, &mut warnings);
            }
        }
        if annotations.canary.is_some() {
            // A canary shares the main Ingress's TLS and default backend; its own are unused.
            report.hosts.dedup();
            report.warnings = warnings.list;
            return report;
        }
        report.hosts.dedup();
        let tls_entries = spec.tls.as_deref().unwrap_or_default();
        self.tls
            .add_ingress(&namespace, &owner, tls_entries, &own_hosts, &mut warnings);

        if let Some(backend) = default_backend {
            self.add_default_backend(backend, &owner, &own_hosts, &mut warnings);
        }
        report.warnings = warnings.list;
        report
    }

    /// Passes TLS for `pattern` through to `backend` (the rule's `/` backend); the oldest
    /// Ingress to ask for a host has it.
    fn add_passthrough(
        &mut self,
        pattern: &HostPattern,
        backend: Option<Arc<Backend>>,
        owner: &str,
        field: &str,
        warnings: &mut IngressWarnings<'_>,
    ) {
        let Some(backend) = backend else {
            warnings.add(
                field,
                "ssl-passthrough sends a host's TLS to the backend of its path \"/\" (Prefix or \
                 ImplementationSpecific), which this rule lacks; TLS is terminated here",
            );
            return;
        };
        let names = &mut self.passthrough;
        let (table, name) = match pattern {
            HostPattern::Exact(name) => (&mut names.exact, name),
            HostPattern::Wildcard(suffix) => (&mut names.wildcard, suffix),
            HostPattern::Any => {
                warnings.add(
                    format!("{field}.host"),
                    "ssl-passthrough routes by TLS server name: a rule without a host cannot be \
                     passed through",
                );
                return;
            }
        };
        match table.entry(name.clone()) {
            Entry::Occupied(taken) => warnings.add(
                field,
                format!(
                    "host {} is already passed through for {}; TLS for it is not passed to this \
                     Ingress's backend",
                    pattern.display(),
                    taken.get().owner
                ),
            ),
            Entry::Vacant(free) => {
                let route = streams::route_to(format!("ingress {owner}"), backend);
                free.insert(Arc::new(route));
            }
        }
    }

    /// Validates one `spec.rules[].http.paths[]` entry into a route.
    fn route(
        &mut self,
        namespace: &str,
        owner: &str,
        path: &HTTPIngressPath,
        field: &str,
        options: &RouteOptions,
        warnings: &mut IngressWarnings<'_>,
    ) -> Option<Route> {
        let Some(path_type) = PathType::parse(&path.path_type) else {
            warnings.add(
                format!("{field}.pathType"),
                format!(
                    "{:?}: must be Exact, Prefix or ImplementationSpecific; path ignored",
                    path.path_type
                ),
            );
            return None;
        };
        let path_value = match (path.path.as_deref(), path_type) {
            (Some(p), _) if !p.is_empty() => p,
            (_, PathType::ImplementationSpecific) => "/",
            _ => {
                warnings.add(
                    format!("{field}.path"),
                    format!(
                        "a path is required for pathType {}; path ignored",
                        path_type.as_str()
                    ),
                );
                return None;
            }
        };
        if !path_value.starts_with('/') {
            warnings.add(
                format!("{field}.path"),
                format!("{path_value:?}: path must start with \"/\"; path ignored"),
            );
            return None;
        }
        let backend_field = format!("{field}.backend");
        let backend = if options.service_upstream {
            self.resolve_cluster_ip(namespace, &path.backend, &backend_field, warnings)?
        } else {
            let fallback = options.policy.fallback.as_deref();
            self.resolve(namespace, &path.backend, &backend_field, fallback, warnings)?
        };
        Some(Route {
            match_path: self.names.get(Route::match_path_of(path_value, path_type)),
            path: self.names.get(path_value),
            path_type,
            backend,
            ingress: self.names.get(owner),
            https_redirect: false,
            identity: Arc::default(),
            policy: options.policy.clone(),
            regex: None,
            canary: None,
            conditions: None,
            split: None,
        })
    }

    /// Resolves a backend; one without endpoints stays, answering 503, or sending its requests
    /// to `fallback` (the `default-backend` annotation's Service) when there is one.
    fn resolve(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
        field: &str,
        fallback: Option<&Backend>,
        warnings: &mut IngressWarnings<'_>,
    ) -> Option<Arc<Backend>> {
        match self.resolver.resolve(namespace, backend) {
            Ok((backend, None)) => Some(backend),
            Ok((backend, Some(problem))) => {
                let meanwhile = match fallback {
                    Some(fallback) => {
                        format!("its requests go to the default-backend {}", fallback.name())
                    }
                    None => "requests answer 503 until it has endpoints".to_string(),
                };
                warnings.backend(format!("{field}.service"), &problem, &meanwhile);
                Some(backend)
            }
            Err(reason) => {
                warnings.add(field, format!("{reason}; ignored"));
                None
            }
        }
    }

    /// The `default-backend` annotation's Service, on its first port.
    fn fallback(
        &mut self,
        namespace: &str,
        service: &str,
        warnings: &mut IngressWarnings<'_>,
    ) -> Option<Arc<Backend>> {
        let field = format!(
            "metadata.annotations[\"{}default-backend\"]",
            annotations::PREFIX
        );
        match self.resolver.resolve_first_port(namespace, service) {
            Ok((backend, None)) => Some(backend),
            Ok((backend, Some(problem))) => {
                warnings.backend(field, &problem, "it serves nothing until it has endpoints");
                Some(backend)
            }
            Err(reason) => {
                warnings.add(field, format!("{reason}; annotation ignored"));
                None
            }
        }
    }

    /// `service-upstream`: the backend is the Service's cluster IP and port.
    fn resolve_cluster_ip(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
        field: &str,
        warnings: &mut IngressWarnings<'_>,
    ) -> Option<Arc<Backend>> {
        match self.resolver.resolve_cluster_ip(namespace, backend) {
            Ok(backend) => Some(backend),
            Err(reason) => {
                warnings.add(field, format!("{reason} (service-upstream); ignored"));
                None
            }
        }
    }

    /// Attaches a canary Ingress's path to the main route of the same host and path.
    fn add_canary(
        &mut self,
        pattern: &HostPattern,
        route: Route,
        spec: &annotations::CanarySpec,
        field: &str,
        warnings: &mut IngressWarnings<'_>,
    ) {
        let key = (route.match_path.clone(), !route.path_type.is_prefix());
        let main = self
            .hosts
            .get_mut(pattern)
            .and_then(|host| host.routes.get_mut(&key));
        let Some((main, _)) = main else {
            warnings.add(
                field,
                format!(
                    "canary: no other Ingress serves host {} path {:?} ({}); this canary path is \
                     ignored",
                    pattern.display(),
                    route.path,
                    route.path_type.as_str()
                ),
            );
            return;
        };
        if let Some(existing) = &main.canary {
            warnings.add(
                field,
                format!(
                    "canary: host {} path {:?} already has the canary {}; ignored",
                    pattern.display(),
                    route.path,
                    existing.ingress
                ),
            );
            return;
        }
        main.canary = Some(Box::new(Canary {
            backend: route.backend,
            ingress: route.ingress,
            by_header: spec.by_header.clone(),
            by_cookie: spec.by_cookie.clone(),
            weight: spec.weight,
            total: spec.total,
        }));
    }

    fn add_route(
        &mut self,
        pattern: &HostPattern,
        route: Route,
        redirect: Redirect,
        field: &str,
        warnings: &mut IngressWarnings<'_>,
    ) {
        let host = self.hosts.entry(pattern.clone()).or_default();
        let key = (route.match_path.clone(), !route.path_type.is_prefix());
        match host.routes.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert((route, redirect));
            }
            Entry::Occupied(existing) => {
                let (existing, _) = existing.get();
                if existing.ingress != route.ingress {
                    warnings.add(
                        field,
                        format!(
                            "host {} path {:?} ({}) is already routed by the older ingress {}; \
                             this path is ignored",
                            pattern.display(),
                            route.path,
                            route.path_type.as_str(),
                            existing.ingress
                        ),
                    );
                } else {
                    warnings.add(
                        field,
                        format!(
                            "host {} path {:?} ({}) is listed twice in this Ingress; the first \
                             one is used",
                            pattern.display(),
                            route.path,
                            route.path_type.as_str()
                        ),
                    );
                }
            }
        }
    }

    /// An Ingress's `spec.defaultBackend` serves the unmatched paths of its own hosts, and the
    /// oldest one also serves requests that match no host at all.
    fn add_default_backend(
        &mut self,
        backend: Arc<Backend>,
        owner: &str,
        own_hosts: &[HostPattern],
        warnings: &mut IngressWarnings<'_>,
    ) {
        for pattern in own_hosts {
            let host = self.hosts.entry(pattern.clone()).or_default();
            match &host.default_backend {
                None => host.default_backend = Some((backend.clone(), owner.to_string())),
                Some((_, other)) if other != owner => warnings.add(
                    "spec.defaultBackend",
                    format!(
                        "host {} already takes its default backend from the older ingress \
                         {other}; not used for this host",
                        pattern.display()
                    ),
                ),
                Some(_) => {}
            }
        }
        match &self.default_backend {
            None => self.default_backend = Some((backend, owner.to_string())),
            Some((_, other)) if own_hosts.is_empty() => warnings.add(
                "spec.defaultBackend",
                format!(
                    "the older ingress {other} already provides the default backend for \
                     unmatched requests; this one is not used"
                ),
            ),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod annotation_tests;
#[cfg(test)]
pub(crate) mod tests;
