//! Which virtual host and which rule: every candidate, and why it won or lost.

use std::sync::Arc;

use super::{Question, Stage, Step, Trace, Verdict};
use crate::snapshot::listener::ListenerTable;
use crate::snapshot::{Backend, HostMatch, Route, Snapshot, VirtualHost};
use crate::status::gateway_path_type;

/// The rule (or default backend) that serves the request.
pub(super) struct Found<'a> {
    pub backend: &'a Arc<Backend>,
    /// `None` when a default backend serves.
    pub route: Option<&'a Route>,
    pub https_redirect: bool,
    /// The object that asked for it (`Ingress default/shop`).
    pub object: String,
}

/// How Ingress rules and Gateway API routes are told apart in the steps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ingress,
    HttpRoute,
}

impl Trace {
    /// Ingress semantics: only the most specific host that covers the request's is tried;
    /// then its defaultBackend, then the gateway's default backend.
    pub(super) fn ingress_rules<'a>(
        &mut self,
        snapshot: &'a Snapshot,
        question: &Question,
        path: &str,
    ) -> Option<Found<'a>> {
        let mut hosts = snapshot.covering_hosts(&question.host);
        let chosen = hosts.next().map(|(how, vhost)| {
            self.push(
                Stage::Host,
                &*vhost.name,
                Verdict::Chosen,
                host_reason(how, &question.host, Kind::Ingress),
            );
            vhost
        });
        for (_, other) in hosts {
            self.push(
                Stage::Host,
                &*other.name,
                Verdict::NotTried,
                format!(
                    "{} is more specific: the Ingress rules of less specific hosts are not tried",
                    chosen.map_or("", |c| &*c.name)
                ),
            );
        }
        let Some(vhost) = chosen else {
            self.push(
                Stage::Host,
                display_host(&question.host),
                Verdict::NoMatch,
                "no Ingress rule names this host, and there is no rule without a host",
            );
            return self.default_backend(snapshot, false);
        };
        if let Some(route) = self.rules(vhost, question, path, Kind::Ingress) {
            return Some(Found {
                backend: &route.backend,
                route: Some(route),
                https_redirect: route.https_redirect,
                object: format!("Ingress {}", route.ingress),
            });
        }
        if let Some(default) = &vhost.default_backend {
            self.push(
                Stage::Rule,
                format!("defaultBackend {}", default.backend.name()),
                Verdict::Chosen,
                "no rule of this host matches: the spec.defaultBackend of an Ingress with rules \
                 for this host serves",
            );
            return Some(Found {
                backend: &default.backend,
                route: None,
                https_redirect: vhost.tls,
                object: format!(
                    "Ingress {}/{}",
                    default.identity.namespace, default.identity.ingress
                ),
            });
        }
        self.default_backend(snapshot, vhost.tls)
    }

    /// The gateway's default backend, when nothing else serves the request.
    fn default_backend<'a>(&mut self, snapshot: &'a Snapshot, tls_host: bool) -> Option<Found<'a>> {
        let Some(default) = &snapshot.default_backend else {
            self.push(
                Stage::Rule,
                "default backend",
                Verdict::NoMatch,
                "nothing matches and no Ingress has a spec.defaultBackend without rules: 404",
            );
            return None;
        };
        self.push(
            Stage::Rule,
            format!("default backend {}", default.backend.name()),
            Verdict::Chosen,
            "nothing else matches: the spec.defaultBackend of an Ingress serves",
        );
        Some(Found {
            backend: &default.backend,
            route: None,
            https_redirect: tls_host,
            object: format!(
                "Ingress {}/{}",
                default.identity.namespace, default.identity.ingress
            ),
        })
    }

    /// Gateway API semantics: the hosts that cover the request's, most specific first, until
    /// one has a matching rule.
    pub(super) fn gateway_rules<'a>(
        &mut self,
        table: &'a ListenerTable,
        question: &Question,
        path: &str,
    ) -> Option<Found<'a>> {
        let mut found: Option<&Route> = None;
        let mut any_host = false;
        for (how, vhost) in table.covering_hosts(&question.host) {
            any_host = true;
            if let Some(winner) = found {
                self.push(
                    Stage::Host,
                    &*vhost.name,
                    Verdict::NotTried,
                    format!(
                        "a more specific host's rule ({}) matched first",
                        winner.path
                    ),
                );
                continue;
            }
            // The host's step goes before its rules', with the verdict they give it.
            let at = self.steps.len();
            found = self.rules(vhost, question, path, Kind::HttpRoute);
            let (verdict, reason) = match found {
                Some(_) => (
                    Verdict::Chosen,
                    host_reason(how, &question.host, Kind::HttpRoute),
                ),
                None => (
                    Verdict::NoMatch,
                    format!(
                        "{}; none of its rules matches, so less specific hosts are tried",
                        host_reason(how, &question.host, Kind::HttpRoute)
                    ),
                ),
            };
            self.steps.insert(
                at,
                Step {
                    stage: Stage::Host,
                    subject: vhost.name.to_string(),
                    verdict,
                    reason,
                },
            );
        }
        if !any_host {
            self.push(
                Stage::Host,
                display_host(&question.host),
                Verdict::NoMatch,
                "no route of this listener names this host, and none is without a host",
            );
        }
        let route = found?;
        Some(Found {
            backend: &route.backend,
            route: Some(route),
            https_redirect: false,
            object: format!("HTTPRoute {}", route.ingress),
        })
    }

    /// Every rule of `vhost` in precedence order: the first that matches wins.
    fn rules<'a>(
        &mut self,
        vhost: &'a VirtualHost,
        question: &Question,
        path: &str,
        kind: Kind,
    ) -> Option<&'a Route> {
        let mut winner: Option<&Route> = None;
        for route in &vhost.routes {
            let path_type = match kind {
                Kind::Ingress if route.regex.is_some() => "regex",
                Kind::Ingress => route.path_type.as_str(),
                Kind::HttpRoute => gateway_path_type(route),
            };
            let object = match kind {
                Kind::Ingress => "Ingress",
                Kind::HttpRoute => "HTTPRoute",
            };
            let subject = format!(
                "{object} {}: {}{} ({path_type})",
                route.ingress, vhost.name, route.path
            );
            let path_matches = route.matches(path);
            let conditions_hold = route.conditions.as_ref().is_none_or(|c| {
                c.hold(
                    &question.method,
                    &question.headers,
                    question.query.as_deref(),
                )
            });
            match winner {
                _ if !(path_matches && conditions_hold) => self.push(
                    Stage::Rule,
                    subject,
                    Verdict::NoMatch,
                    no_match_reason(route, path, path_matches),
                ),
                None => {
                    winner = Some(route);
                    self.push(
                        Stage::Rule,
                        subject,
                        Verdict::Chosen,
                        won_reason(route, path),
                    );
                }
                Some(first) => self.push(
                    Stage::Rule,
                    subject,
                    Verdict::Lost,
                    lost_reason(first, route, kind),
                ),
            }
        }
        winner
    }
}

fn display_host(host: &str) -> &str {
    if host.is_empty() { "(no host)" } else { host }
}

fn host_reason(how: HostMatch, host: &str, kind: Kind) -> String {
    match (how, kind) {
        (HostMatch::Exact, _) => "the exact host name".into(),
        (HostMatch::Wildcard, Kind::Ingress) => {
            format!("a wildcard that covers {host} (exactly one label more)")
        }
        (HostMatch::Wildcard, Kind::HttpRoute) => format!("a wildcard that covers {host}"),
        (HostMatch::AnyHost, _) => {
            "rules without a host serve every host that has no rules of its own".into()
        }
    }
}

fn won_reason(route: &Route, path: &str) -> String {
    let how = if let Some(regex) = &route.regex {
        format!(
            "the regular expression {} matches {path} (regex paths are tried longest first)",
            regex.as_str()
        )
    } else if !route.path_type.is_prefix() {
        format!("{path} is exactly {}", route.path)
    } else if &*route.match_path == "/" {
        "the prefix / matches every path".into()
    } else {
        format!(
            "{path} is under {} (prefixes match whole path elements)",
            route.match_path
        )
    };
    match route.conditions.as_deref().map(|c| c.describe()) {
        Some(conditions) if !conditions.is_empty() => format!("{how}, and {conditions} hold"),
        _ => format!("{how}: the first matching rule in precedence order"),
    }
}

fn no_match_reason(route: &Route, path: &str, path_matches: bool) -> String {
    if path_matches {
        let conditions = route
            .conditions
            .as_deref()
            .map(|c| c.describe())
            .unwrap_or_default();
        return format!("the path matches, but {conditions} does not hold");
    }
    if let Some(regex) = &route.regex {
        return format!(
            "the regular expression {} does not match {path}",
            regex.as_str()
        );
    }
    if !route.path_type.is_prefix() {
        return format!("{path} is not exactly {} (Exact)", route.path);
    }
    format!(
        "{path} is not under {} (prefixes match whole path elements: /foo covers /foo/bar, not \
         /foobar)",
        route.match_path
    )
}

fn lost_reason(winner: &Route, loser: &Route, kind: Kind) -> String {
    let (won, lost) = (winner.match_path.len(), loser.match_path.len());
    if winner.regex.is_some() && kind == Kind::Ingress {
        return format!(
            "{} matches too; regex paths are tried longest first, and {} comes before it",
            loser.path, winner.path
        );
    }
    if !winner.path_type.is_prefix() && loser.path_type.is_prefix() && won == lost {
        return format!("Exact {} wins over a prefix of the same path", winner.path);
    }
    if won > lost {
        return format!(
            "{} matches too, but the longer path {} wins ({won} characters against {lost})",
            loser.path, winner.path
        );
    }
    match kind {
        Kind::Ingress => format!(
            "the same path and type as {}, whose Ingress is older and wins",
            winner.ingress
        ),
        Kind::HttpRoute => format!(
            "{} comes first in Gateway API precedence (exact path, longest path, method, most \
             header matches, most query matches, oldest route)",
            winner.ingress
        ),
    }
}
