//! Objects in, route table out: the one pure function where Ingress semantics live.
//!
//! No I/O and no clock: the same store always gives the same snapshot and the same warnings.
//! Ingresses are visited oldest first (creationTimestamp, then namespace/name), so that when two
//! claim the same host and path, the older one wins and the younger one gets the warning.

mod annotations;
mod backend;
mod class;
mod listeners;
mod tls;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend, IngressClass};

pub use class::ClassSelector;

use crate::cidr::Cidr;
use crate::snapshot::{
    Backend, DefaultBackend, IngressReport, PathType, Route, RouteIdentity, Snapshot, VirtualHost,
};
use crate::store::{ObjectKey, Sourced, Store, namespace_of};
use crate::warning::Warning;
use annotations::Annotations;

use backend::BackendResolver;
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
}

/// Translates every object of `store` into one route table. `source_warnings` (problems the
/// source met while reading, such as unparsable files) are carried into the snapshot's report.
/// `previous` is the table served until now: certificates of unchanged Secrets are reused from
/// it, and a Secret that breaks keeps the certificate it had there. `now` decides expiry.
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

    let mut table = TableBuilder {
        resolver: BackendResolver::new(store),
        tls: TlsBuilder::new(store, &previous.certificates, now),
        hosts: HashMap::new(),
        default_backend: None,
        allow_lists: Vec::new(),
    };
    let reports: Vec<IngressReport> = ingresses
        .into_iter()
        .map(|ingress| table.add_ingress(ingress, &store.ingress_classes, options))
        .collect();

    let mut warnings = source_warnings;
    warnings.extend(reports.iter().flat_map(|r| r.warnings.iter().cloned()));
    let listeners = match &options.publish_service {
        Some((namespace, name)) => {
            listeners::published(store, (namespace, name), &options.node_ips, &mut warnings)
        }
        None => Vec::new(),
    };
    let source_allow = consensus(&table.allow_lists);
    let (certificates, tls_hosts) = table.tls.finish();
    let mut snapshot = Snapshot {
        default_backend: table
            .default_backend
            .map(|(backend, owner)| default_backend("", backend, &owner)),
        ingresses: reports,
        warnings,
        certificates,
        listeners,
        source_allow,
        ..Snapshot::default()
    };
    for (pattern, host) in table.hosts {
        let vhost = host.build(&pattern, tls_hosts.contains(&pattern));
        match pattern {
            HostPattern::Exact(name) => {
                snapshot.exact_hosts.insert(name, vhost);
            }
            HostPattern::Wildcard(suffix) => {
                snapshot.wildcard_hosts.insert(suffix, vhost);
            }
            HostPattern::Any => snapshot.any_host = Some(vhost),
        }
    }
    snapshot
}

/// A default backend serving `host` (empty for the global one) for the Ingress `owner`.
fn default_backend(host: &str, backend: Arc<Backend>, owner: &str) -> DefaultBackend {
    DefaultBackend {
        identity: Arc::new(RouteIdentity::new(host, "", owner, &backend)),
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
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(format!(
                "label {label:?} is not a lower-case DNS label (a-z, 0-9, '-', 1-63 characters, \
                 a wildcard only as the whole first label)"
            ));
        }
    }
    Ok(())
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
    routes: HashMap<(String, bool), (Route, Redirect)>,
    default_backend: Option<(Arc<Backend>, String)>,
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
    fn build(self, pattern: &HostPattern, tls: bool) -> VirtualHost {
        let name = pattern.display();
        let mut routes: Vec<Route> = self
            .routes
            .into_values()
            .map(|(mut route, redirect)| {
                route.https_redirect = match redirect {
                    Redirect::Always => true,
                    Redirect::Never => false,
                    Redirect::IfTls => tls,
                };
                route.identity = Arc::new(RouteIdentity::new(
                    &name,
                    &route.path,
                    &route.ingress,
                    &route.backend,
                ));
                route
            })
            .collect();
        routes.sort_by(|a, b| {
            b.match_path
                .len()
                .cmp(&a.match_path.len())
                .then(a.path_type.is_prefix().cmp(&b.path_type.is_prefix()))
                .then(a.match_path.cmp(&b.match_path))
        });
        VirtualHost {
            default_backend: self
                .default_backend
                .map(|(backend, owner)| default_backend(&name, backend, &owner)),
            name,
            routes,
            tls,
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
        let annotations = Annotations::parse(&ingress.metadata, &mut warnings);
        self.allow_lists
            .push(annotations.whitelist_source_range.clone().map(|mut list| {
                list.sort();
                list.dedup();
                list
            }));
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
            self.resolve(&namespace, backend, "spec.defaultBackend", &mut warnings)
        });
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
            report.hosts.push(pattern.display());
            own_hosts.push(pattern.clone());
            self.hosts.entry(pattern.clone()).or_default();
            for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let field = format!("{field}.http.paths[{p}]");
                if let Some(route) = self.route(&namespace, &owner, path, &field, &mut warnings) {
                    self.add_route(&pattern, route, redirect, &field, &mut warnings);
                }
            }
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

    /// Validates one `spec.rules[].http.paths[]` entry into a route.
    fn route(
        &mut self,
        namespace: &str,
        owner: &str,
        path: &HTTPIngressPath,
        field: &str,
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
            (Some(p), _) if !p.is_empty() => p.to_string(),
            (_, PathType::ImplementationSpecific) => "/".to_string(),
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
        let backend = self.resolve(
            namespace,
            &path.backend,
            &format!("{field}.backend"),
            warnings,
        )?;
        let match_path = if path_type.is_prefix() && path_value.len() > 1 {
            path_value.trim_end_matches('/').to_string()
        } else {
            path_value.clone()
        };
        Some(Route {
            path: path_value,
            match_path: if match_path.is_empty() {
                "/".to_string()
            } else {
                match_path
            },
            path_type,
            backend,
            ingress: owner.to_string(),
            https_redirect: false,
            identity: Arc::default(),
        })
    }

    fn resolve(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
        field: &str,
        warnings: &mut IngressWarnings<'_>,
    ) -> Option<Arc<Backend>> {
        match self.resolver.resolve(namespace, backend) {
            Ok((backend, None)) => Some(backend),
            Ok((backend, Some(problem))) => {
                warnings.add(
                    format!("{field}.service"),
                    format!("{problem}; requests answer 503 until it has endpoints"),
                );
                Some(backend)
            }
            Err(reason) => {
                warnings.add(field, format!("{reason}; ignored"));
                None
            }
        }
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
mod tests;
