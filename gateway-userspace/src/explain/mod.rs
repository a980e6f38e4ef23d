//! `gateway explain`: for one request, every decision the gateway would make and why: the
//! listener, what the XDP program would do with its connection, the virtual host, each
//! candidate rule, canary and weights, the policy steps and the endpoint. A pure function of a
//! snapshot and a request description, so the CLI, `/explain` and the console share it, and
//! it calls the same matching code as the proxy (never a copy of it).

mod question;
mod remote;
mod rules;
mod text;

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hyper::header;
use serde::{Deserialize, Serialize};

pub use question::Question;
pub use remote::ask_admin;

use crate::bpf::plan::{self, FastPathConfig};
use crate::policy::balance::RequestView;
use crate::policy::canary::CanaryDecision;
use crate::policy::{ACME_CHALLENGE, Cors, RoutePolicy, https_location};
use crate::snapshot::listener::ListenerTable;
use crate::snapshot::{Backend, ListenerKind, ListenerSpec, Snapshot};
use crate::status::Listeners;

/// Where the gateway serves, besides its route table.
#[derive(Clone, Debug)]
pub struct Place {
    /// The proxy's own listeners.
    pub listeners: Listeners,
    /// The fast path's flags (`--vip`, `--allow-source`, `--syn-budget`).
    pub fast_path: FastPathConfig,
    /// The port of redirects to HTTPS.
    pub https_redirect_port: u16,
}

/// Every decision for one request, in the order the gateway makes them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Explanation {
    /// The request as asked (`GET http://shop.example.com/cart from 10.0.0.1`).
    pub request: String,
    pub steps: Vec<Step>,
    pub outcome: Outcome,
}

/// One decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub stage: Stage,
    /// What was decided on: a listener, a host, a rule, a policy, an endpoint.
    pub subject: String,
    pub verdict: Verdict,
    pub reason: String,
}

/// The stages of a request, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Path,
    Listener,
    FastPath,
    Host,
    Rule,
    Canary,
    Split,
    Policy,
    Endpoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// This one was taken.
    Chosen,
    /// It matched too, and another one won.
    Lost,
    NoMatch,
    /// Never looked at: a decision before it settled the matter.
    NotTried,
    /// A policy that shapes the request, or a packet passed on.
    Applies,
    /// The gateway answers the request itself (a redirect or a refusal).
    Answers,
    /// The XDP program drops the packet.
    Drops,
    Note,
}

/// Where the request ends.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// The status the gateway answers with itself; `None` when a backend answers (or, for a
    /// dropped connection, nobody does).
    pub status: Option<u16>,
    pub summary: String,
    /// The object whose rule serves it (`Ingress default/shop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// `namespace/service:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
    /// The path and query the backend is sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_target: Option<String>,
}

impl Outcome {
    fn answer(status: u16, summary: impl Into<String>) -> Self {
        Self {
            status: Some(status),
            summary: summary.into(),
            ..Self::default()
        }
    }
}

/// Explains `question` against `snapshot` as served at `place`.
pub fn explain(snapshot: &Snapshot, place: &Place, question: &Question) -> Explanation {
    let mut trace = Trace::default();
    let outcome = trace.walk(snapshot, place, question);
    Explanation {
        request: question.to_string(),
        steps: trace.steps,
        outcome,
    }
}

/// The steps so far.
#[derive(Default)]
struct Trace {
    steps: Vec<Step>,
}

impl Trace {
    fn push(
        &mut self,
        stage: Stage,
        subject: impl Into<String>,
        verdict: Verdict,
        reason: impl Into<String>,
    ) {
        self.steps.push(Step {
            stage,
            subject: subject.into(),
            verdict,
            reason: reason.into(),
        });
    }

    fn walk(&mut self, snapshot: &Snapshot, place: &Place, question: &Question) -> Outcome {
        let path = match crate::normalize::path(&question.path) {
            Ok(Cow::Borrowed(path)) => path.to_string(),
            Ok(Cow::Owned(normal)) => {
                self.push(
                    Stage::Path,
                    &question.path,
                    Verdict::Applies,
                    format!("normalised to {normal} before matching and policy"),
                );
                normal
            }
            Err(error) => {
                self.push(
                    Stage::Path,
                    &question.path,
                    Verdict::Answers,
                    error.to_string(),
                );
                return Outcome::answer(400, "refused: the path cannot be normalised");
            }
        };
        let gateway_table = self.listener(snapshot, place, question);
        if let Some(outcome) = self.fast_path(snapshot, place, question) {
            return outcome;
        }
        let host = &question.host;
        if let Some(target) = snapshot.www_redirect(host) {
            let location = format!("{}://{target}{}", question.scheme, question.target(&path));
            self.push(
                Stage::Host,
                host,
                Verdict::Answers,
                format!("from-to-www-redirect: this host only redirects to {target}"),
            );
            return Outcome::answer(308, format!("redirected to {location}"));
        }
        let found = match &gateway_table {
            Some(table) => self.gateway_rules(table, question, &path),
            None => self.ingress_rules(snapshot, question, &path),
        };
        let Some(found) = found else {
            return Outcome::answer(404, "no rule matches and there is no default backend");
        };
        if question.scheme == "http" && found.https_redirect && !path.starts_with(ACME_CHALLENGE) {
            let location = https_location(
                place.https_redirect_port,
                host_or(question),
                &question.target(&path),
            );
            self.push(
                Stage::Policy,
                "ssl-redirect",
                Verdict::Answers,
                "the host has TLS: plain-HTTP requests are redirected to HTTPS",
            );
            return Outcome::answer(308, format!("redirected to {location}"));
        }
        if gateway_table.is_none()
            && let Some(outcome) = self.client_certificate(snapshot, question)
        {
            return outcome;
        }
        self.after_routing(question, &path, found)
    }

    /// The listener the request reaches: a Gateway's (whose table is returned), or the
    /// gateway's own, which serves the Ingress rules.
    fn listener(
        &mut self,
        snapshot: &Snapshot,
        place: &Place,
        question: &Question,
    ) -> Option<Arc<ListenerTable>> {
        let reaches = |addr: &SocketAddr| {
            addr.port() == question.port
                && question
                    .address
                    .is_none_or(|ip| ip == addr.ip() || addr.ip().is_unspecified())
        };
        let mut gateway: Vec<_> = snapshot
            .gateway_listeners
            .iter()
            .filter(|(addr, _)| reaches(addr))
            .collect();
        gateway.sort_by_key(|(addr, _)| **addr);
        if let Some((addr, table)) = gateway.first() {
            self.push(
                Stage::Listener,
                format!("Gateway listener {addr}"),
                Verdict::Chosen,
                "its Gateway API routes are tried, the most specific host first and then the \
                 less specific ones",
            );
            return Some((*table).clone());
        }
        let own = [
            (place.listeners.http, ListenerKind::Http),
            (place.listeners.https, ListenerKind::Https),
        ];
        let kind = if let Some(spec) = vips(snapshot, place).find(|spec| reaches(&spec.addr)) {
            self.push(
                Stage::Listener,
                format!("{} {}", spec.kind, spec.addr),
                Verdict::Chosen,
                "an address of the gateway's Service (LoadBalancer IP, external IP or \
                 NodePort): its connections are served by the Ingress rules",
            );
            Some(spec.kind)
        } else if let Some((addr, kind)) = own.iter().find(|(addr, _)| reaches(addr)) {
            self.push(
                Stage::Listener,
                format!("{kind} {addr}"),
                Verdict::Chosen,
                "the gateway's own listener: the Ingress rules serve it",
            );
            Some(*kind)
        } else {
            None
        };
        if let Some(kind) = kind.filter(|kind| kind.as_str() != question.scheme) {
            self.push(
                Stage::Listener,
                format!("{} on a {kind} listener", question.scheme),
                Verdict::Note,
                "the scheme does not fit the listener: a TLS handshake and plain HTTP meet, \
                 and the connection fails (explained as if it fit)",
            );
        }
        if kind.is_none() {
            self.push(
                Stage::Listener,
                format!("port {}", question.port),
                Verdict::Note,
                format!(
                    "not a port of this gateway (it serves http on {} and https on {}): \
                     explained as if the request reached its {} listener",
                    place.listeners.http, place.listeners.https, question.scheme
                ),
            );
        }
        None
    }

    /// What the XDP program does with the connection; `Some` when it drops it.
    fn fast_path(
        &mut self,
        snapshot: &Snapshot,
        place: &Place,
        question: &Question,
    ) -> Option<Outcome> {
        let spec = vips(snapshot, place).find(|spec| {
            spec.kind != ListenerKind::Udp
                && spec.addr.port() == question.port
                && question.address.is_none_or(|ip| ip == spec.addr.ip())
        });
        let Some(spec) = spec.filter(plan::steerable) else {
            self.push(
                Stage::FastPath,
                format!("port {}", question.port),
                Verdict::Note,
                "no VIP listener here: the XDP program leaves its packets to the kernel stack \
                 unchecked",
            );
            return None;
        };
        let wanted = plan::wanted(&place.fast_path, snapshot);
        let listener = wanted.get(&plan::listener_key(&spec))?;
        let subject = format!("{} {}", spec.kind, spec.addr);
        if !listener.allow.is_empty() {
            let list = join(&listener.allow);
            match question.from {
                None => self.push(
                    Stage::FastPath,
                    &subject,
                    Verdict::Note,
                    format!(
                        "allow-list {list}: connections from other sources are dropped (give \
                         --from to check one)"
                    ),
                ),
                Some(from) => match listener.allow.iter().find(|c| c.contains(from)) {
                    Some(entry) => self.push(
                        Stage::FastPath,
                        &subject,
                        Verdict::Applies,
                        format!("{from} is in the allow-list entry {entry}"),
                    ),
                    None => {
                        self.push(
                            Stage::FastPath,
                            &subject,
                            Verdict::Drops,
                            format!(
                                "{from} is in none of the allow-list entries ({list}): its \
                                 packets are dropped (counted as dropped_acl)"
                            ),
                        );
                        return Some(Outcome {
                            summary: "the connection is dropped by the XDP program".into(),
                            ..Outcome::default()
                        });
                    }
                },
            }
        }
        if let Some(budget) = listener.syn_budget {
            self.push(
                Stage::FastPath,
                &subject,
                Verdict::Note,
                format!(
                    "SYN budget: {} new connections per second per source after a burst of {}; \
                     beyond it SYNs are dropped (dropped_syn_budget)",
                    budget.rate, budget.burst
                ),
            );
        }
        self.push(
            Stage::FastPath,
            &subject,
            Verdict::Applies,
            format!(
                "passed and counted; sk_lookup hands the connection to the gateway's {} socket",
                spec.kind
            ),
        );
        None
    }

    /// The client-certificate rules of the host (`auth-tls-secret`); `Some` when they refuse.
    fn client_certificate(&mut self, snapshot: &Snapshot, question: &Question) -> Option<Outcome> {
        let auth = snapshot.client_auth(&question.host)?;
        let reason = format!(
            "auth-tls-verify-client {:?}: the handshake asks for a client certificate{}",
            auth.mode,
            auth.match_cn
                .as_ref()
                .map(|cn| format!(", whose subject must match {}", cn.as_str()))
                .unwrap_or_default()
        );
        if question.scheme == "http" {
            self.push(Stage::Policy, "auth-tls", Verdict::Answers, reason);
            return Some(Outcome::answer(
                400,
                "refused: this host requires a client certificate, over https",
            ));
        }
        self.push(Stage::Policy, "auth-tls", Verdict::Applies, reason);
        None
    }

    /// Canary, weights, fallback, rewrites, the policy's own answers, authentication and the
    /// endpoint.
    fn after_routing(
        &mut self,
        question: &Question,
        path: &str,
        found: rules::Found<'_>,
    ) -> Outcome {
        let route = found.route;
        let mut policy = route.map_or_else(RoutePolicy::plain, |r| r.policy.clone());
        let mut backend = found.backend.clone();
        if let Some(canary) = route.and_then(|r| r.canary.as_ref()) {
            let subject = format!("Ingress {} ({})", canary.ingress, canary.backend.name());
            let decision = canary.decide(&question.headers);
            let header = canary
                .by_header
                .as_ref()
                .map_or("none".into(), |(name, _)| name.to_string());
            let (verdict, reason) = match decision {
                CanaryDecision::Header(chosen) => (
                    chosen,
                    format!("canary-by-header {header}: the request's value decides"),
                ),
                CanaryDecision::Cookie(chosen) => (
                    chosen,
                    format!(
                        "canary-by-cookie {}: the request's cookie decides",
                        canary.by_cookie.as_deref().unwrap_or_default()
                    ),
                ),
                CanaryDecision::Weight { weight, total } => (
                    weight >= total && total > 0,
                    format!(
                        "neither canary-by-header ({header}) nor canary-by-cookie decided: \
                         {weight} of {total} requests go to the canary, at random{}",
                        if weight < total {
                            "; this explanation follows the main backend"
                        } else {
                            ""
                        }
                    ),
                ),
            };
            let verdict = if verdict {
                backend = canary.backend.clone();
                Verdict::Chosen
            } else {
                Verdict::Lost
            };
            self.push(Stage::Canary, subject, verdict, reason);
        }
        if let Some(split) = route.and_then(|r| r.split.as_ref()) {
            let followed = split
                .choices
                .iter()
                .filter(|c| c.backend.is_some())
                .max_by_key(|c| c.weight);
            for choice in &split.choices {
                let name = choice
                    .backend
                    .as_ref()
                    .map_or("an unresolved backendRef (answers 500)".into(), |b| {
                        b.name()
                    });
                let is_followed = followed.is_some_and(|f| std::ptr::eq(f, choice));
                self.push(
                    Stage::Split,
                    name,
                    if is_followed {
                        Verdict::Chosen
                    } else {
                        Verdict::Applies
                    },
                    format!(
                        "weight {} of {}: {:.0}% of the requests{}",
                        choice.weight,
                        split.total,
                        f64::from(choice.weight) * 100.0 / f64::from(split.total.max(1)),
                        if is_followed {
                            "; this explanation follows the largest share"
                        } else {
                            ""
                        }
                    ),
                );
            }
            let Some(followed) = followed else {
                return Outcome::answer(500, "every backendRef of the rule is unresolved");
            };
            if let Some(chosen) = &followed.backend {
                backend = chosen.clone();
            }
            if let Some(own) = &followed.policy {
                policy = own.clone();
            }
        }
        if backend.endpoints.is_empty()
            && let Some(fallback) = &policy.fallback
        {
            self.push(
                Stage::Policy,
                "default-backend",
                Verdict::Applies,
                format!(
                    "{} has no ready endpoint: the default-backend annotation's {} serves",
                    backend.name(),
                    fallback.name()
                ),
            );
            backend = fallback.clone();
        }
        let query = question.query.as_deref();
        let rewritten =
            policy.rewritten_target(route.and_then(|r| r.regex.as_deref()), path, query);
        if let Some(target) = &rewritten {
            self.push(
                Stage::Policy,
                "rewrite",
                Verdict::Applies,
                format!("the backend is sent {target}"),
            );
        }
        if let Some(outcome) = self.policy_answers(&policy, question, path) {
            return outcome;
        }
        if let Some(outcome) = self.authentication(&policy, question) {
            return outcome;
        }
        let upstream_target = rewritten.unwrap_or_else(|| question.target(path));
        self.endpoint(question, &policy, &backend, upstream_target, found.object)
    }

    /// What the policy answers by itself, in the proxy's order: closed routes, access lists,
    /// limits, CORS preflights, redirects, app-root, the body limit.
    fn policy_answers(
        &mut self,
        policy: &RoutePolicy,
        question: &Question,
        path: &str,
    ) -> Option<Outcome> {
        if let Some(reason) = &policy.closed {
            self.push(
                Stage::Policy,
                "closed",
                Verdict::Answers,
                reason.to_string(),
            );
            return Some(Outcome::answer(
                503,
                "refused: an access or authentication rule of the route cannot be applied",
            ));
        }
        if policy.allow.is_some() || policy.deny.is_some() {
            let lists = [
                ("whitelist-source-range", &policy.allow),
                ("denylist-source-range", &policy.deny),
            ]
            .into_iter()
            .filter_map(|(name, list)| Some(format!("{name} {}", join(list.as_ref()?))))
            .collect::<Vec<_>>()
            .join("; ");
            match question.from {
                None => self.push(
                    Stage::Policy,
                    "source ranges",
                    Verdict::Note,
                    format!("{lists}: the client address decides (give --from to check one)"),
                ),
                Some(from) if policy.admits(from) => self.push(
                    Stage::Policy,
                    "source ranges",
                    Verdict::Applies,
                    format!("{from} is admitted by {lists}"),
                ),
                Some(from) => {
                    self.push(
                        Stage::Policy,
                        "source ranges",
                        Verdict::Answers,
                        format!("{from} is refused by {lists}"),
                    );
                    return Some(Outcome::answer(403, "refused: the client address"));
                }
            }
        }
        if let Some(limits) = &policy.limits {
            self.push(
                Stage::Policy,
                "limits",
                Verdict::Applies,
                limits.describe(question.from),
            );
        }
        if let Some(cors) = &policy.cors
            && Cors::is_preflight(&question.method, &question.headers)
        {
            let (status, _) = cors.preflight(&question.headers);
            self.push(
                Stage::Policy,
                "enable-cors",
                Verdict::Answers,
                "a CORS preflight: the gateway answers it",
            );
            return Some(Outcome::answer(status.as_u16(), "answered: CORS preflight"));
        }
        if let Some(redirect) = &policy.redirect {
            let location = redirect.location.to_str().unwrap_or_default();
            self.push(
                Stage::Policy,
                "redirect",
                Verdict::Answers,
                "permanent-redirect / temporal-redirect: every request of the route",
            );
            return Some(Outcome::answer(
                redirect.status.as_u16(),
                format!("redirected to {location}"),
            ));
        }
        if let Some(rule) = &policy.redirect_rule {
            let location = rule.location(
                question.scheme,
                host_or(question),
                question.port,
                path,
                question.query.as_deref(),
            );
            self.push(
                Stage::Policy,
                "RequestRedirect",
                Verdict::Answers,
                "the rule's RequestRedirect filter",
            );
            return Some(Outcome::answer(
                rule.status.as_u16(),
                format!("redirected to {location}"),
            ));
        }
        if let Some(root) = &policy.app_root
            && path == "/"
        {
            self.push(
                Stage::Policy,
                "app-root",
                Verdict::Answers,
                format!("requests for / go to {root}"),
            );
            let location = format!("{}://{}{root}", question.scheme, host_or(question));
            return Some(Outcome::answer(302, format!("redirected to {location}")));
        }
        if let Some(limit) = policy.body_limit {
            let length = question
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if let Some(length) = length.filter(|length| *length > limit) {
                self.push(
                    Stage::Policy,
                    "proxy-body-size",
                    Verdict::Answers,
                    format!("a body of {length} bytes is over the limit of {limit}"),
                );
                return Some(Outcome::answer(413, "refused: the body is too large"));
            }
            self.push(
                Stage::Policy,
                "proxy-body-size",
                Verdict::Applies,
                format!("bodies over {limit} bytes are refused with 413"),
            );
        }
        None
    }

    /// Basic and external authentication: what they ask of the request.
    fn authentication(&mut self, policy: &RoutePolicy, question: &Question) -> Option<Outcome> {
        if let Some(basic) = &policy.basic_auth {
            let challenge = basic.challenge.to_str().unwrap_or_default();
            if !question.headers.contains_key(header::AUTHORIZATION) {
                self.push(
                    Stage::Policy,
                    "auth-type basic",
                    Verdict::Answers,
                    format!(
                        "the request has no credentials: 401 with WWW-Authenticate: {challenge}"
                    ),
                );
                return Some(Outcome::answer(401, "refused: credentials are required"));
            }
            self.push(
                Stage::Policy,
                "auth-type basic",
                Verdict::Applies,
                "the credentials are checked against the users of auth-secret when the request \
                 is made (explain never checks passwords)",
            );
        }
        if let Some(external) = &policy.external_auth {
            let url = &external.url;
            let scheme = if url.https { "https" } else { "http" };
            self.push(
                Stage::Policy,
                "auth-url",
                Verdict::Applies,
                format!(
                    "{scheme}://{}:{}{} is asked first: a 2xx lets the request through, 401 \
                     and 403 go back to the client{}",
                    url.host,
                    url.port,
                    url.path_and_query,
                    if external.signin.is_some() {
                        " (401 as a redirect to auth-signin)"
                    } else {
                        ""
                    }
                ),
            );
        }
        None
    }

    /// The endpoint of `backend` the request would be sent to.
    fn endpoint(
        &mut self,
        question: &Question,
        policy: &RoutePolicy,
        backend: &Backend,
        upstream_target: String,
        object: String,
    ) -> Outcome {
        let uri = upstream_target.parse().unwrap_or_default();
        let view = RequestView {
            method: &question.method,
            uri: &uri,
            host: &question.host,
            client: question.from.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            scheme: question.scheme,
            headers: &question.headers,
        };
        let choice = policy.balance.explain(backend, &view);
        let subject = choice
            .endpoint
            .map_or_else(|| backend.name(), |endpoint| endpoint.to_string());
        let mut outcome = Outcome {
            route: Some(object),
            backend: Some(backend.name()),
            endpoint: choice.endpoint,
            upstream_target: Some(upstream_target),
            ..Outcome::default()
        };
        if backend.endpoints.is_empty() {
            self.push(Stage::Endpoint, subject, Verdict::NoMatch, choice.reason);
            outcome.status = Some(503);
            outcome.summary = format!("refused: {} has no ready endpoint", backend.name());
            return outcome;
        }
        self.push(Stage::Endpoint, subject, Verdict::Chosen, choice.reason);
        outcome.summary = format!(
            "proxied to {}{} as {}",
            backend.name(),
            choice
                .endpoint
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            outcome.upstream_target.as_deref().unwrap_or("/")
        );
        outcome
    }
}

/// The VIP:port listeners: the `--vip` flags and the published Service's addresses.
fn vips<'a>(snapshot: &'a Snapshot, place: &'a Place) -> impl Iterator<Item = ListenerSpec> + 'a {
    place.fast_path.listeners(snapshot).copied()
}

/// The request's host, or the address it reached when it has none.
fn host_or(question: &Question) -> &str {
    if question.host.is_empty() {
        &question.authority
    } else {
        &question.host
    }
}

/// Items written out, comma-separated (address and range lists in explanations and pages).
pub(crate) fn join(items: &[impl std::fmt::Display]) -> String {
    items
        .iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
