//! The console's pages: what each shows, gathered from the published table, the objects it was
//! made from, the fast path's counters and `explain`; rendered by the templates under
//! `templates/console/`.

use std::collections::BTreeSet;

use askama::Template;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use k8s_openapi::api::networking::v1::Ingress;

use super::access::{self, Entry, Visit};
use super::edit::{self, DryRun, RouteForm};
use super::{Console, Form, field, find};
use crate::bpf::plan;
use crate::explain::{self, Explanation, Question, join};
use crate::snapshot::IngressReport;
use crate::status::{self, RouteView};
use crate::store::{Store, namespace_of};
use crate::warning::Warning;

/// What every page knows.
pub struct Context<'a> {
    pub console: &'a Console,
    pub signed_in: bool,
}

/// The header of every page.
pub struct Base {
    pub title: String,
    pub generation: u64,
    pub signed_in: bool,
    /// Changes can be made (a token is set and the source takes writes).
    pub writable: bool,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "console/routes.html")]
struct RoutesPage {
    base: Base,
    namespace: String,
    search: String,
    namespaces: Vec<String>,
    rows: Vec<RouteRow>,
    notice: String,
}

struct RouteRow {
    kind: &'static str,
    namespace: String,
    name: String,
    alias: String,
    hosts: Vec<String>,
    /// Where it is reached (the first link of each host).
    urls: Vec<String>,
    served: bool,
    status: String,
    warnings: usize,
    href: String,
}

#[derive(Template)]
#[template(path = "console/route.html")]
struct RoutePage {
    base: Base,
    namespace: String,
    name: String,
    alias: String,
    served: bool,
    reason: String,
    source: String,
    rules: Vec<RuleRow>,
    tls: Vec<TlsRow>,
    annotations: Vec<AnnotationRow>,
    /// Warnings about anything but the annotations.
    warnings: Vec<String>,
    /// The addresses in the Ingress's status.
    addresses: Vec<String>,
    xdp: Vec<XdpRow>,
    explain_url: String,
    /// Set after a change was applied.
    applied: bool,
}

struct RuleRow {
    host: String,
    path: String,
    path_type: String,
    backend: String,
    endpoints: String,
    visits: Vec<Visit>,
}

struct TlsRow {
    secret: String,
    hosts: String,
    expires: String,
}

struct AnnotationRow {
    key: String,
    value: String,
    warnings: Vec<String>,
}

struct XdpRow {
    listener: String,
    allow_list: String,
    passed: u64,
    dropped_acl: u64,
    dropped_syn_budget: u64,
}

#[derive(Template)]
#[template(path = "console/gateway.html")]
struct GatewayPage {
    base: Base,
    entries: Vec<EntryRow>,
    xdp_mode: String,
    fast_path: Vec<FastPathRow>,
    xdp: Vec<XdpRow>,
    hosts: usize,
    routes: usize,
    problems: usize,
    publish_service: String,
    access_mode: String,
    explain_url: String,
}

struct EntryRow {
    addr: String,
    scheme: &'static str,
    how: &'static str,
}

struct FastPathRow {
    listener: String,
    allow: String,
    syn_budget: String,
}

#[derive(Template)]
#[template(path = "console/form.html")]
struct FormPage {
    base: Base,
    form: RouteForm,
    /// `namespace/name` of the Ingress being edited; empty for a new one.
    original: String,
    gateway_address: String,
    error: String,
}

#[derive(Template)]
#[template(path = "console/yaml.html")]
struct YamlPage {
    base: Base,
    original: String,
    yaml: String,
    error: String,
}

#[derive(Template)]
#[template(path = "console/dry_run.html")]
struct DryRunPage {
    base: Base,
    original: String,
    object: String,
    yaml: String,
    served: bool,
    reason: String,
    warnings: Vec<Warning>,
    routes: Vec<RouteView>,
    applicable: bool,
}

#[derive(Template)]
#[template(path = "console/explain.html")]
struct ExplainPage {
    base: Base,
    url: String,
    method: String,
    headers: String,
    from: String,
    error: String,
    explanation: Option<Explanation>,
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    base: Base,
    error: String,
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage {
    title: String,
    text: String,
}

impl Context<'_> {
    fn base(&self, title: impl Into<String>) -> Base {
        let console = self.console;
        Base {
            title: title.into(),
            generation: console.table.generation(),
            signed_in: self.signed_in,
            writable: console.token.is_some() && console.writer.read_only().is_none(),
            csrf: match (&console.token, self.signed_in) {
                (Some(token), true) => token.csrf(),
                _ => String::new(),
            },
        }
    }

    fn entries(&self) -> Vec<Entry> {
        let console = self.console;
        access::entries(&console.table.current(), &console.place, &console.options)
    }

    pub fn routes(&self, query: &Form) -> Response<Full<Bytes>> {
        let snapshot = self.console.table.current();
        let store = self.console.store();
        let entries = self.entries();
        let report = status::report(&snapshot, 0, self.console.place.listeners);
        let mut rows: Vec<RouteRow> = snapshot
            .ingresses
            .iter()
            .map(|ingress| ingress_row(ingress, &store, &entries))
            .collect();
        for object in snapshot
            .gateway_api
            .iter()
            .filter(|o| o.kind.ends_with("Route"))
        {
            let namespace = object.namespace.clone().unwrap_or_default();
            let owner = format!("{namespace}/{}", object.name);
            let mine: Vec<&RouteView> = report
                .routes
                .iter()
                .filter(|r| r.kind == object.kind && r.ingress == owner)
                .collect();
            let conditions = object
                .parents
                .iter()
                .flat_map(|p| &p.conditions)
                .chain(&object.conditions);
            let failing: Vec<String> = conditions
                .filter(|c| !c.status && c.type_ != "Conflicted")
                .map(|c| format!("{} {}: {}", c.type_, c.reason, c.message))
                .collect();
            rows.push(RouteRow {
                kind: object.kind,
                namespace,
                name: object.name.clone(),
                alias: String::new(),
                hosts: dedup(mine.iter().map(|r| r.host.clone())),
                urls: dedup(mine.iter().map(|r| r.url.clone())),
                served: failing.is_empty() && !mine.is_empty(),
                status: failing.join("; "),
                warnings: failing.len(),
                href: String::new(),
            });
        }
        let namespaces = dedup(rows.iter().map(|r| r.namespace.clone()));
        let namespace = field(query, "namespace").to_string();
        let search = field(query, "q").trim().to_lowercase();
        rows.retain(|row| {
            (namespace.is_empty() || row.namespace == namespace)
                && (search.is_empty()
                    || row.name.contains(&search)
                    || row.alias.to_lowercase().contains(&search)
                    || row.hosts.iter().any(|h| h.contains(&search)))
        });
        rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let notice = if field(query, "deleted") == "1" {
            "The route was deleted; the table follows in a moment."
        } else {
            ""
        };
        render(&RoutesPage {
            base: self.base("Routes"),
            namespace,
            search,
            namespaces,
            rows,
            notice: notice.into(),
        })
    }

    pub fn route(&self, namespace: &str, name: &str, query: &Form) -> Response<Full<Bytes>> {
        let applied = field(query, "applied") == "1";
        let snapshot = self.console.table.current();
        let Some(report) = snapshot
            .ingresses
            .iter()
            .find(|r| r.namespace == namespace && r.name == name)
        else {
            return message(
                StatusCode::NOT_FOUND,
                "No such route",
                &format!("there is no Ingress {namespace}/{name}"),
            );
        };
        let store = self.console.store();
        let object = find(&store, namespace, name).map(|s| &*s.object);
        let entries = self.entries();
        let owner = format!("{namespace}/{name}");
        let routes = status::report(&snapshot, 0, self.console.place.listeners).routes;
        let rules: Vec<RuleRow> = routes
            .iter()
            .filter(|r| r.kind == "Ingress" && r.ingress == owner)
            .map(|r| {
                let tls = report.tls_hosts.contains(&r.host);
                RuleRow {
                    host: r.host.clone(),
                    path: r.path.clone(),
                    path_type: r.path_type.into(),
                    backend: format!("{}:{}", r.backend.service, r.backend.port),
                    endpoints: match r.backend.endpoints.len() {
                        0 => "none ready".into(),
                        _ => join(&r.backend.endpoints),
                    },
                    visits: access::visits(&r.host, &r.path, tls, &entries),
                }
            })
            .collect();
        let (annotation_warnings, warnings): (Vec<&Warning>, Vec<&Warning>) = report
            .warnings
            .iter()
            .partition(|w| w.field.starts_with("metadata.annotations"));
        let annotations = object
            .and_then(|o| o.metadata.annotations.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| AnnotationRow {
                warnings: annotation_warnings
                    .iter()
                    .filter(|w| w.field.contains(&key))
                    .map(|w| w.message.clone())
                    .collect(),
                key,
                value,
            })
            .collect();
        let tls = object
            .and_then(|o| o.spec.as_ref()?.tls.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let hosts = t.hosts.unwrap_or_default();
                let expires = hosts
                    .iter()
                    .find_map(|h| snapshot.certificates.lookup(h))
                    .map_or("no certificate served (see the warnings)".into(), |c| {
                        date(c.not_after)
                    });
                TlsRow {
                    secret: t.secret_name.unwrap_or_default(),
                    hosts: hosts.join(", "),
                    expires,
                }
            })
            .collect();
        let addresses = object
            .and_then(|o| o.status.as_ref()?.load_balancer.as_ref()?.ingress.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.ip.or(a.hostname))
            .collect();
        let explain_url = rules
            .first()
            .and_then(|r| r.visits.first())
            .map_or(String::new(), |v| v.url.clone());
        render(&RoutePage {
            base: self.base(format!("Route {namespace}/{name}")),
            namespace: namespace.into(),
            name: name.into(),
            alias: alias(object),
            served: report.served,
            reason: report.reason.clone().unwrap_or_default(),
            source: report.source.clone().unwrap_or_default(),
            rules,
            tls,
            annotations,
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
            addresses,
            xdp: self.counters(&entries),
            explain_url,
            applied,
        })
    }

    /// The XDP counters of the listeners in `entries`.
    fn counters(&self, entries: &[Entry]) -> Vec<XdpRow> {
        let Some(Ok(stats)) = self.console.steering.as_ref().and_then(|s| s.stats()) else {
            return Vec::new();
        };
        stats
            .listeners
            .iter()
            .filter(|l| entries.is_empty() || entries.iter().any(|e| e.addr == l.address))
            .map(|l| {
                let count = |reason: &str| l.counters.get(reason).map_or(0, |c| c.packets);
                XdpRow {
                    listener: format!("{} {}", l.protocol, l.address),
                    allow_list: if l.allow_list { "yes" } else { "no" }.into(),
                    passed: count("passed"),
                    dropped_acl: count("dropped_acl"),
                    dropped_syn_budget: count("dropped_syn_budget"),
                }
            })
            .collect()
    }

    pub fn gateway(&self) -> Response<Full<Bytes>> {
        let console = self.console;
        let snapshot = console.table.current();
        let entries = self.entries();
        let summary = status::CheckSummary::of(&snapshot);
        let wanted = plan::wanted(&console.place.fast_path, &snapshot);
        let fast_path = console
            .place
            .fast_path
            .listeners(&snapshot)
            .filter(|spec| plan::steerable(spec))
            .filter_map(|spec| {
                let listener = wanted.get(&plan::listener_key(spec))?;
                Some(FastPathRow {
                    listener: format!("{} {}", spec.kind, spec.addr),
                    allow: match listener.allow.is_empty() {
                        true => "every source".into(),
                        false => join(&listener.allow),
                    },
                    syn_budget: listener.syn_budget.map_or("none".into(), |b| {
                        format!("{}/s, burst {}", b.rate, b.burst)
                    }),
                })
            })
            .collect();
        let xdp_mode = match console.steering.as_ref().map(|s| s.attached()) {
            Some(attached) if !attached.is_empty() => attached
                .iter()
                .map(|(interface, mode)| format!("{interface}: {mode}"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "off: listeners are bound directly".into(),
        };
        let access_mode = if entries.iter().any(|e| e.how == "LoadBalancer") {
            "LoadBalancer"
        } else if entries.iter().any(|e| e.how == "NodePort") {
            "NodePort"
        } else {
            "the gateway's own listeners (no published Service)"
        };
        let explain_url = entries
            .first()
            .map_or(String::new(), |e| format!("http://{}/", e.addr));
        render(&GatewayPage {
            base: self.base("Gateway"),
            entries: entries
                .iter()
                .map(|e| EntryRow {
                    addr: e.addr.to_string(),
                    scheme: if e.tls { "https" } else { "http" },
                    how: e.how,
                })
                .collect(),
            xdp_mode,
            fast_path,
            xdp: self.counters(&[]),
            hosts: snapshot.exact_hosts.len() + snapshot.wildcard_hosts.len(),
            routes: summary.routes,
            problems: summary.problems,
            publish_service: console
                .options
                .publish_service
                .as_ref()
                .map_or(String::new(), |(ns, name)| format!("{ns}/{name}")),
            access_mode: access_mode.into(),
            explain_url,
        })
    }

    pub fn form(
        &self,
        form: &RouteForm,
        original: Option<&str>,
        error: Option<&str>,
    ) -> Response<Full<Bytes>> {
        let mut form = form.clone();
        if form.paths.is_empty() {
            form.paths.push(edit::PathRow {
                path: "/".into(),
                path_type: "Prefix".into(),
                ..Default::default()
            });
        }
        if form.host_mode.is_empty() {
            form.host_mode = "auto".into();
        }
        let title = match original {
            Some(original) => format!("Edit route {original}"),
            None => "Create route".into(),
        };
        render(&FormPage {
            base: self.base(title),
            form,
            original: original.unwrap_or_default().into(),
            gateway_address: access::gateway_address(&self.entries()).to_string(),
            error: error.unwrap_or_default().into(),
        })
    }

    pub fn edit(&self, namespace: &str, name: &str) -> Response<Full<Bytes>> {
        let store = self.console.store();
        let original = format!("{namespace}/{name}");
        match find(&store, namespace, name).map(|s| RouteForm::of(&s.object)) {
            Some(Some(form)) => self.form(&form, Some(&original), None),
            Some(None) => self.yaml(
                namespace,
                name,
                None,
                Some("this route has more than one host or a default backend: edit it as YAML"),
            ),
            None => message(
                StatusCode::NOT_FOUND,
                "No such route",
                &format!("there is no Ingress {original}"),
            ),
        }
    }

    pub fn yaml(
        &self,
        namespace: &str,
        name: &str,
        text: Option<&str>,
        error: Option<&str>,
    ) -> Response<Full<Bytes>> {
        let store = self.console.store();
        let yaml = match (text, find(&store, namespace, name)) {
            (Some(text), _) => text.to_string(),
            (None, Some(existing)) => edit::to_yaml(&existing.object),
            (None, None) => {
                return message(
                    StatusCode::NOT_FOUND,
                    "No such route",
                    &format!("there is no Ingress {namespace}/{name}"),
                );
            }
        };
        render(&YamlPage {
            base: self.base(format!("Edit YAML of {namespace}/{name}")),
            original: format!("{namespace}/{name}"),
            yaml,
            error: error.unwrap_or_default().into(),
        })
    }

    /// The dry run of a posted dialog or YAML; a mistake sends the user back to it.
    pub fn dry_run(&self, fields: &Form) -> Response<Full<Bytes>> {
        let console = self.console;
        let original = field(fields, "original");
        let (namespace, name) = original.split_once('/').unwrap_or_default();
        let ingress = if fields.iter().any(|(k, _)| k == "yaml") {
            edit::parse_yaml(field(fields, "yaml"))
                .map_err(|e| self.yaml(namespace, name, Some(field(fields, "yaml")), Some(&e)))
        } else {
            let form = RouteForm::from_pairs(fields);
            let address = access::gateway_address(&self.entries()).to_string();
            form.to_ingress(&console.options.classes.class_name, &address)
                .map_err(|e| self.form(&form, Some(original).filter(|o| !o.is_empty()), Some(&e)))
        };
        let ingress = match ingress {
            Ok(ingress) => ingress,
            Err(page) => return page,
        };
        let renamed = !original.is_empty()
            && (namespace_of(&ingress.metadata) != namespace
                || ingress.metadata.name.as_deref() != Some(name));
        if renamed {
            return self.yaml(
                namespace,
                name,
                Some(&edit::to_yaml(&ingress)),
                Some("metadata.name and metadata.namespace cannot change: create a new route instead"),
            );
        }
        let store = console.store();
        let source = console.source_of(&store, &ingress);
        let dry_run = self.check(&store, &ingress, source);
        self.dry_run_of(&ingress, original, &dry_run)
    }

    /// Translates the table with `ingress` changed.
    pub fn check(&self, store: &Store, ingress: &Ingress, source: Option<String>) -> DryRun {
        let console = self.console;
        edit::dry_run(
            store,
            &console.options,
            console.place.listeners,
            ingress,
            source,
        )
    }

    pub fn dry_run_of(
        &self,
        ingress: &Ingress,
        original: &str,
        dry_run: &DryRun,
    ) -> Response<Full<Bytes>> {
        let object = format!(
            "{}/{}",
            namespace_of(&ingress.metadata),
            ingress.metadata.name.as_deref().unwrap_or_default()
        );
        render(&DryRunPage {
            base: self.base(format!("Dry run of {object}")),
            original: original.into(),
            object,
            yaml: edit::to_yaml(ingress),
            served: dry_run.served,
            reason: dry_run.reason.clone().unwrap_or_default(),
            warnings: dry_run.warnings.clone(),
            routes: dry_run.routes.clone(),
            applicable: dry_run.applicable(),
        })
    }

    pub fn explain(&self, query: &Form) -> Response<Full<Bytes>> {
        let url = field(query, "url").trim().to_string();
        let method = match field(query, "method").trim() {
            "" => "GET".to_string(),
            method => method.to_string(),
        };
        let headers_text = field(query, "headers").to_string();
        let from = field(query, "from").trim().to_string();
        let headers: Vec<String> = headers_text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let (explanation, error) = if url.is_empty() {
            (None, String::new())
        } else {
            let from_ip = Some(from.as_str()).filter(|f| !f.is_empty());
            match Question::new(&url, &method, &headers, from_ip) {
                Ok(question) => (
                    Some(explain::explain(
                        &self.console.table.current(),
                        &self.console.place,
                        &question,
                    )),
                    String::new(),
                ),
                Err(error) => (None, error),
            }
        };
        render(&ExplainPage {
            base: self.base("Explain a request"),
            url,
            method,
            headers: headers_text,
            from,
            error,
            explanation,
        })
    }

    pub fn login(&self, error: Option<&str>) -> Response<Full<Bytes>> {
        render(&LoginPage {
            base: self.base("Sign in"),
            error: error.unwrap_or_default().into(),
        })
    }
}

fn ingress_row(report: &IngressReport, store: &Store, entries: &[Entry]) -> RouteRow {
    let object = find(store, &report.namespace, &report.name).map(|s| &*s.object);
    let urls = report
        .hosts
        .iter()
        .filter_map(|host| {
            let tls = report.tls_hosts.iter().any(|t| **t == **host);
            access::visits(host, "/", tls, entries)
                .into_iter()
                .next()
                .map(|v| v.url)
        })
        .collect();
    RouteRow {
        kind: "Ingress",
        namespace: report.namespace.clone(),
        name: report.name.clone(),
        alias: alias(object),
        hosts: report.hosts.iter().map(|h| h.to_string()).collect(),
        urls,
        served: report.served,
        status: report.reason.clone().unwrap_or_default(),
        warnings: report.warnings.iter().filter(|w| !w.notice).count(),
        href: format!("/console/routes/{}/{}", report.namespace, report.name),
    }
}

fn alias(object: Option<&Ingress>) -> String {
    object
        .and_then(|o| o.metadata.annotations.as_ref()?.get(edit::ALIAS).cloned())
        .unwrap_or_default()
}

fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    items.collect::<BTreeSet<_>>().into_iter().collect()
}

/// A Unix time as a UTC date and time.
fn date(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

fn render(page: &impl Template) -> Response<Full<Bytes>> {
    match page.render() {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(error) => html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {error}"),
        ),
    }
}

/// A page with only a title and a sentence (errors, refusals).
pub fn message(status: StatusCode, title: &str, text: &str) -> Response<Full<Bytes>> {
    let page = MessagePage {
        title: title.into(),
        text: text.into(),
    };
    match page.render() {
        Ok(html) => html_response(status, html),
        Err(_) => html_response(status, text.to_string()),
    }
}

fn html_response(status: StatusCode, html: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Nothing is loaded from elsewhere, and no other site may frame the console.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
             frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
