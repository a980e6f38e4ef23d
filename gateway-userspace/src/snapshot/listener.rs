//! The routes of Gateway API listeners: one table per listener port, whose routes can also
//! match on the method, headers and query parameters, and split requests between weighted
//! backends. Hosts are tried most specific first, and a request that no rule of a host
//! matches is tried against the less specific hosts that cover it (the Gateway API orders
//! every matching rule of every route, hostname first).

use std::sync::Arc;

use hyper::Method;
use hyper::header::{HeaderMap, HeaderName};
use regex::Regex;

use serde::Serialize;

use super::{Backend, HostMap, HostMatch, RouteMatch, VirtualHost};
use crate::gateway_api::ParentReference;
use crate::policy::RoutePolicy;

/// The routes served on one listener port.
#[derive(Debug, Default)]
pub struct ListenerTable {
    /// HTTPS (the listener terminates TLS).
    pub tls: bool,
    pub exact_hosts: HostMap,
    /// `*.example.com` hosts by suffix (`example.com`), most specific first: a Gateway API
    /// wildcard covers any number of labels before its suffix.
    pub wildcard_hosts: Vec<(String, VirtualHost)>,
    pub any_host: Option<VirtualHost>,
}

/// What a rule can match besides the path.
#[derive(Clone, Debug, Default)]
pub struct MatchConditions {
    pub method: Option<Method>,
    pub headers: Vec<(HeaderName, ValueMatch)>,
    /// Query parameters by name (case-sensitive); the first occurrence counts.
    pub query: Vec<(String, ValueMatch)>,
}

#[derive(Clone, Debug)]
pub enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(wanted) => wanted == value,
            Self::Regex(regex) => regex.is_match(value),
        }
    }
}

impl MatchConditions {
    /// The conditions in words (`method GET, header x-env = canary`).
    pub fn describe(&self) -> String {
        let value = |wanted: &ValueMatch| match wanted {
            ValueMatch::Exact(text) => format!("= {text:?}"),
            ValueMatch::Regex(regex) => format!("~ /{}/", regex.as_str()),
        };
        let method = self.method.iter().map(|m| format!("method {m}"));
        let headers = self
            .headers
            .iter()
            .map(|(name, wanted)| format!("header {name} {}", value(wanted)));
        let query = self
            .query
            .iter()
            .map(|(name, wanted)| format!("query {name} {}", value(wanted)));
        method
            .chain(headers)
            .chain(query)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether a request with this method, these headers and this query string satisfies
    /// every condition. Header names were lower-cased when the table was made; a header that
    /// appears more than once is matched on its values joined by `,`.
    pub fn hold(&self, method: &Method, headers: &HeaderMap, query: Option<&str>) -> bool {
        if self.method.as_ref().is_some_and(|wanted| wanted != method) {
            return false;
        }
        let headers_hold = self.headers.iter().all(|(name, wanted)| {
            let mut values = headers.get_all(name).iter();
            let Some(first) = values.next() else {
                return false;
            };
            let rest: Vec<&[u8]> = values.map(|v| v.as_bytes()).collect();
            if rest.is_empty() {
                return std::str::from_utf8(first.as_bytes()).is_ok_and(|v| wanted.matches(v));
            }
            let joined: Vec<&[u8]> = std::iter::once(first.as_bytes()).chain(rest).collect();
            std::str::from_utf8(&joined.join(&b","[..])).is_ok_and(|v| wanted.matches(v))
        });
        headers_hold
            && self.query.iter().all(|(name, wanted)| {
                query_value(query.unwrap_or(""), name).is_some_and(|v| wanted.matches(&v))
            })
    }
}

/// The first value of the query parameter `name`, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Backends that share a rule's requests by weight. An unresolved reference (`backend:
/// None`) keeps its share of the requests, answered with 500, as the Gateway API requires.
#[derive(Debug)]
pub struct WeightedBackends {
    pub choices: Vec<WeightedBackend>,
    pub total: u32,
}

#[derive(Debug)]
pub struct WeightedBackend {
    pub backend: Option<Arc<Backend>>,
    pub weight: u32,
    /// The rule's policy with this backendRef's own filters, when it has some.
    pub policy: Option<Arc<RoutePolicy>>,
}

impl WeightedBackends {
    /// A backend chosen at random by weight; `None` when the choice falls on an unresolved
    /// reference, or every weight is 0.
    pub fn choose(&self) -> Option<&WeightedBackend> {
        if self.total == 0 {
            return None;
        }
        self.at(crate::random::below(u64::from(self.total)) as u32)
    }

    /// The choice whose share holds `point` (in `0..total`), if it is resolved.
    fn at(&self, mut point: u32) -> Option<&WeightedBackend> {
        for choice in &self.choices {
            if point < choice.weight {
                return choice.backend.is_some().then_some(choice);
            }
            point -= choice.weight;
        }
        None
    }

    /// The first resolved backend.
    pub fn first(&self) -> Option<&Arc<Backend>> {
        self.choices.iter().find_map(|c| c.backend.as_ref())
    }
}

impl ListenerTable {
    /// The route for a request on this listener: the first rule, in precedence order, of the
    /// most specific host that has one matching.
    pub fn route(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Option<RouteMatch<'_>> {
        self.covering_hosts(host).find_map(|(_, vhost)| {
            let route = vhost.routes.iter().find(|route| {
                route.matches(path)
                    && route
                        .conditions
                        .as_ref()
                        .is_none_or(|c| c.hold(method, headers, query))
            })?;
            Some(RouteMatch {
                backend: &route.backend,
                route: Some(route),
                https_redirect: false,
                // HSTS on a Gateway's routes is theirs to ask for (a response header).
                tls_host: false,
                identity: &route.identity,
            })
        })
    }

    /// The virtual hosts whose names cover `host`, most specific first: the exact name, the
    /// wildcards (longest suffix first), then the rules without a host.
    pub fn covering_hosts(&self, host: &str) -> impl Iterator<Item = (HostMatch, &VirtualHost)> {
        let exact = self.exact_hosts.get(host).map(|v| (HostMatch::Exact, &**v));
        let wildcards = self
            .wildcard_hosts
            .iter()
            .filter(move |(suffix, _)| {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            })
            .map(|(_, vhost)| (HostMatch::Wildcard, vhost));
        let any = self.any_host.as_ref().map(|v| (HostMatch::AnyHost, v));
        exact.into_iter().chain(wildcards).chain(any)
    }

    /// Every virtual host, most specific first (for reports).
    pub fn virtual_hosts(&self) -> Vec<&VirtualHost> {
        let mut exact: Vec<&VirtualHost> = self.exact_hosts.values().map(|v| &**v).collect();
        exact.sort_by(|a, b| a.name.cmp(&b.name));
        exact
            .into_iter()
            .chain(self.wildcard_hosts.iter().map(|(_, vhost)| vhost))
            .chain(self.any_host.as_ref())
            .collect()
    }
}

/// One condition of an object's status, as the Gateway API names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The status of one Gateway API object this gateway is responsible for.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ObjectReport {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// A Gateway's listeners.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerReport>,
    /// A route's parents (the Gateways and listeners it asked to attach to).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<ParentReport>,
    /// Where a Gateway's listeners are served.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<std::net::IpAddr>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ListenerReport {
    pub name: String,
    pub port: u16,
    /// The route kinds it admits (`allowedRoutes.kinds` that this gateway serves).
    pub supported_kinds: Vec<&'static str>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ParentReport {
    pub parent_ref: ParentReference,
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded_and_the_first_one_counts() {
        assert_eq!(query_value("a=1&b=x%20y&a=2", "a").as_deref(), Some("1"));
        assert_eq!(query_value("a=1&b=x%20y", "b").as_deref(), Some("x y"));
        assert_eq!(query_value("flag&b=1", "flag").as_deref(), Some(""));
        assert_eq!(query_value("a=1", "A"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn weights_split_by_share_and_unresolved_shares_are_none() {
        let backend = Arc::new(Backend::new("ns", "a", "80", vec![]));
        let choice = |backend, weight| WeightedBackend {
            backend,
            weight,
            policy: None,
        };
        let split = WeightedBackends {
            choices: vec![choice(Some(backend), 3), choice(None, 1)],
            total: 4,
        };
        let chosen: Vec<bool> = (0..4).map(|point| split.at(point).is_some()).collect();
        assert_eq!(chosen, [true, true, true, false]);
        let nothing = WeightedBackends {
            choices: vec![],
            total: 0,
        };
        assert!(nothing.choose().is_none());
    }
}
