//! What an Ingress's annotations ask of its routes: typed values made once per snapshot by
//! `translate` (never strings interpreted per request), and the request-time pieces they need:
//! path rewriting, rate limits, CORS, endpoint choice and canary choice.

pub mod auth;
pub mod balance;
pub mod canary;
pub mod cors;
pub mod filters;
pub mod limit;
pub mod mirror;
pub mod rewrite;
pub mod service_url;
pub mod template;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::HeaderValue;

use crate::cidr::Cidr;
use crate::snapshot::Backend;

pub use balance::Balance;
pub use canary::Canary;
pub use cors::Cors;
pub use filters::{HeaderEdits, PathRewrite, RedirectRule};
pub use limit::Limits;
pub use mirror::{Mirror, MirrorTo};
pub use rewrite::Rewrite;

/// Where ACME HTTP-01 challenges are answered: never redirected, so certificates can be issued
/// for hosts that already redirect (as in ingress-nginx).
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Where a plain-HTTP request for `host` and `target` (path and query) is redirected on a TLS
/// host: HTTPS on `port` (left out when it is 443).
pub fn https_location(port: u16, host: &str, target: &str) -> String {
    match port {
        443 => format!("https://{host}{target}"),
        port => format!("https://{host}:{port}{target}"),
    }
}

/// The policy of one Ingress's routes. The default is plain proxying.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    /// `permanent-redirect` / `temporal-redirect`: every request is redirected.
    pub redirect: Option<Redirect>,
    /// `app-root`: requests for `/` are redirected here (302).
    pub app_root: Option<String>,
    /// `rewrite-target`: the path the backend sees.
    pub rewrite: Option<Rewrite>,
    /// `x-forwarded-prefix`: sent to the backend as `X-Forwarded-Prefix`.
    pub forwarded_prefix: Option<HeaderValue>,
    /// `upstream-vhost`: the `Host` the backend sees.
    pub upstream_vhost: Option<HeaderValue>,
    /// `default-backend`: serves when the route's backend has no endpoint, and serves the
    /// `custom-http-errors`.
    pub fallback: Option<Arc<Backend>>,
    /// `custom-http-errors`: backend answers with these statuses are replaced by the fallback's.
    pub custom_errors: Vec<StatusCode>,
    /// `backend-protocol`.
    pub protocol: Protocol,
    /// `proxy-ssl-*`: how HTTPS and GRPCS backends are verified (else not at all).
    pub backend_tls: Option<Arc<crate::tls::backend::BackendTls>>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    /// `proxy-body-size`: larger request bodies are refused with 413.
    pub body_limit: Option<u64>,
    pub retry: Retry,
    pub balance: Balance,
    /// `whitelist-source-range`: only these clients (others get 403).
    pub allow: Option<Vec<Cidr>>,
    /// `denylist-source-range`: these clients get 403.
    pub deny: Option<Vec<Cidr>>,
    pub limits: Option<Arc<Limits>>,
    /// `auth-type: basic`: requests need one of these users' credentials.
    pub basic_auth: Option<Arc<auth::BasicAuth>>,
    /// `auth-url` (or `--global-auth-url`): an auth service admits each request.
    pub external_auth: Option<Arc<auth::ExternalAuth>>,
    /// Why every request is refused with 503: an access or authentication annotation that
    /// could not be applied (fail closed).
    pub closed: Option<Arc<str>>,
    pub cors: Option<Cors>,
    /// Gateway API `RequestHeaderModifier` and `ResponseHeaderModifier`.
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
    /// Gateway API `RequestRedirect`: every request is redirected to a Location made from it.
    pub redirect_rule: Option<RedirectRule>,
    /// Gateway API `URLRewrite` of the path.
    pub path_rewrite: Option<PathRewrite>,
    /// Gateway API `RequestMirror`: where copies of the requests go.
    pub mirrors: Vec<Mirror>,
}

impl RoutePolicy {
    /// The path and query the backend is sent, when `rewrite-target` (with the captures of
    /// the route's `regex`) or a Gateway API `URLRewrite` changes them.
    pub fn rewritten_target(
        &self,
        regex: Option<&regex::Regex>,
        path: &str,
        query: Option<&str>,
    ) -> Option<String> {
        if let Some(rewrite) = &self.rewrite {
            let captures = regex.and_then(|r| r.captures(path));
            return Some(rewrite.apply(captures.as_ref(), query));
        }
        let path = self.path_rewrite.as_ref()?.apply(path);
        Some(match query {
            Some(query) => format!("{path}?{query}"),
            None => path,
        })
    }

    /// The policy of routes no annotation shapes, shared by all of them.
    pub fn plain() -> Arc<RoutePolicy> {
        static PLAIN: std::sync::LazyLock<Arc<RoutePolicy>> =
            std::sync::LazyLock::new(Arc::default);
        PLAIN.clone()
    }

    /// Whether `client` may use the route at all.
    pub fn admits(&self, client: IpAddr) -> bool {
        let denied = self
            .deny
            .as_ref()
            .is_some_and(|list| list.iter().any(|c| c.contains(client)));
        let allowed = self
            .allow
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c.contains(client)));
        allowed && !denied
    }
}

/// A redirect of every request of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub location: HeaderValue,
    pub status: StatusCode,
}

/// How the gateway talks to a route's backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    #[default]
    Http,
    /// HTTP/1.1 over TLS (the backend's certificate is verified only with `proxy-ssl-verify`,
    /// as in ingress-nginx).
    Https,
    /// gRPC: HTTP/2 without TLS (h2c), trailers carried both ways.
    Grpc,
    /// gRPC over TLS (HTTP/2 by ALPN).
    Grpcs,
}

impl Protocol {
    pub fn is_http2(self) -> bool {
        matches!(self, Self::Grpc | Self::Grpcs)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::Grpcs)
    }

    /// The same over TLS.
    pub fn over_tls(self) -> Self {
        match self {
            Self::Http | Self::Https => Self::Https,
            Self::Grpc | Self::Grpcs => Self::Grpcs,
        }
    }
}

/// `proxy-next-upstream` and `proxy-next-upstream-tries`: when a request goes to another
/// endpoint. Only where it is safe: a request whose body was sent is never sent again, and a
/// non-idempotent one only with `non_idempotent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Connecting failed or the connection broke (`error`).
    pub on_error: bool,
    /// No response headers within the read timeout (`timeout`).
    pub on_timeout: bool,
    /// Responses with these statuses (`http_502`, ...).
    pub on_status: Vec<StatusCode>,
    /// POST, PATCH and other non-idempotent methods may be retried (`non_idempotent`).
    pub non_idempotent: bool,
    /// Attempts in all, first one included (0: as many as there are endpoints).
    pub tries: u32,
}

impl Default for Retry {
    /// ingress-nginx's: `error timeout`, 3 tries.
    fn default() -> Self {
        Self {
            on_error: true,
            on_timeout: true,
            on_status: Vec::new(),
            non_idempotent: false,
            tries: 3,
        }
    }
}

impl Retry {
    /// How many attempts a request may make over `endpoints` endpoints.
    pub fn attempts(&self, endpoints: usize) -> usize {
        let endpoints = endpoints.max(1);
        match self.tries {
            0 => endpoints,
            tries => endpoints.min(tries as usize),
        }
    }
}
