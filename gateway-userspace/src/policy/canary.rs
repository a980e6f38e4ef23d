//! Canary releases: an Ingress annotated `canary: "true"` sends part of the traffic of the same
//! host and path to its own backend. By ingress-nginx's precedence: `canary-by-header`, then
//! `canary-by-cookie`, then `canary-weight`.

use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderName};
use regex::Regex;

use super::balance::cookie;
use crate::snapshot::Backend;

#[derive(Debug)]
pub struct Canary {
    pub backend: Arc<Backend>,
    /// The canary Ingress (`namespace/name`).
    pub ingress: Arc<str>,
    pub by_header: Option<(HeaderName, HeaderMatch)>,
    pub by_cookie: Option<String>,
    /// Out of `total` requests, how many go to the canary.
    pub weight: u32,
    pub total: u32,
}

/// What value of the canary header sends a request to the canary.
#[derive(Clone, Debug)]
pub enum HeaderMatch {
    /// `always` routes to the canary, `never` away from it, anything else is ignored.
    AlwaysNever,
    /// `canary-by-header-value`: this exact value.
    Value(String),
    /// `canary-by-header-pattern`: a value matching this expression.
    Pattern(Regex),
}

/// What decides whether a request goes to the canary, in ingress-nginx's precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanaryDecision {
    /// The canary header's value decided (`true`: to the canary).
    Header(bool),
    /// The canary cookie's value (`always` or `never`) decided.
    Cookie(bool),
    /// Neither did: `weight` requests out of `total` go to the canary, at random.
    Weight { weight: u32, total: u32 },
}

impl Canary {
    /// Whether this request goes to the canary.
    pub fn chosen(&self, headers: &HeaderMap) -> bool {
        match self.decide(headers) {
            CanaryDecision::Header(chosen) | CanaryDecision::Cookie(chosen) => chosen,
            CanaryDecision::Weight { weight, total } => {
                weight > 0 && crate::random::below(u64::from(total)) < u64::from(weight)
            }
        }
    }

    /// What decides for a request with these headers.
    pub fn decide(&self, headers: &HeaderMap) -> CanaryDecision {
        if let Some((name, matcher)) = &self.by_header
            && let Some(value) = headers.get(name).and_then(|v| v.to_str().ok())
        {
            match matcher {
                HeaderMatch::AlwaysNever if value == "always" => {
                    return CanaryDecision::Header(true);
                }
                HeaderMatch::AlwaysNever if value == "never" => {
                    return CanaryDecision::Header(false);
                }
                HeaderMatch::Value(wanted) if value == wanted => {
                    return CanaryDecision::Header(true);
                }
                HeaderMatch::Pattern(pattern) if pattern.is_match(value) => {
                    return CanaryDecision::Header(true);
                }
                _ => {}
            }
        }
        if let Some(name) = &self.by_cookie {
            match cookie(headers, name) {
                Some("always") => return CanaryDecision::Cookie(true),
                Some("never") => return CanaryDecision::Cookie(false),
                _ => {}
            }
        }
        CanaryDecision::Weight {
            weight: self.weight,
            total: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn canary(by_header: Option<HeaderMatch>, weight: u32) -> Canary {
        Canary {
            backend: Arc::new(Backend::new("default", "canary", "80", vec![])),
            ingress: "default/canary".into(),
            by_header: by_header.map(|m| (HeaderName::from_static("x-canary"), m)),
            by_cookie: Some("canary".into()),
            weight,
            total: 100,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn header_then_cookie_then_weight() {
        let c = canary(Some(HeaderMatch::AlwaysNever), 100);
        assert!(!c.chosen(&headers(&[
            ("x-canary", "never"),
            ("cookie", "canary=always")
        ])));
        assert!(c.chosen(&headers(&[("x-canary", "always")])));
        let c = canary(Some(HeaderMatch::AlwaysNever), 0);
        assert!(c.chosen(&headers(&[
            ("x-canary", "other"),
            ("cookie", "canary=always")
        ])));
        assert!(!c.chosen(&headers(&[("cookie", "canary=never")])));
        assert!(!c.chosen(&headers(&[])), "weight 0: never by weight");
        let all = canary(None, 100);
        assert!((0..100).all(|_| all.chosen(&headers(&[]))));
    }

    #[test]
    fn header_values_and_patterns() {
        let c = canary(Some(HeaderMatch::Value("us-east".into())), 0);
        assert!(c.chosen(&headers(&[("x-canary", "us-east")])));
        assert!(!c.chosen(&headers(&[("x-canary", "always")])));
        let c = canary(Some(HeaderMatch::Pattern(Regex::new("^beta-").unwrap())), 0);
        assert!(c.chosen(&headers(&[("x-canary", "beta-7")])));
        assert!(!c.chosen(&headers(&[("x-canary", "stable")])));
    }

    #[test]
    fn weights_split_traffic() {
        let c = canary(None, 30);
        let chosen = (0..10_000).filter(|_| c.chosen(&headers(&[]))).count();
        assert!((2500..3500).contains(&chosen), "{chosen}");
    }
}
