//! ingress-nginx annotations, parsed strictly into typed values once per snapshot. A value that
//! does not parse is a warning naming the annotation, the value and the reason, and only that
//! annotation is ignored. Nothing here is ever spliced into a configuration: there is none, so
//! the injections behind ingress-nginx's worst CVEs have nowhere to go. Snippets and annotations
//! the gateway does not support are never applied, and each gets a warning.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::uri::{PathAndQuery, Uri};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

mod auth;

pub use auth::{BasicAuthSpec, ClientAuthSpec};

use super::IngressWarnings;
use crate::cidr::Cidr;
use crate::policy::balance::{Affinity, AffinityMode, hash_key, is_cookie_name};
use crate::policy::canary::HeaderMatch;
use crate::policy::cors::{self, Cors, Origins};
use crate::policy::limit::Rate;
use crate::policy::rewrite::{Rewrite, path_regex};
use crate::policy::{Balance, Mirror, Protocol, Redirect, Retry, RoutePolicy};

/// The prefix of every ingress-nginx annotation.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Longer values are refused (no supported annotation needs more).
const MAX_VALUE: usize = 4096;

/// Annotations that inject nginx configuration in ingress-nginx: never applied here.
const SNIPPETS: [&str; 5] = [
    "configuration-snippet",
    "server-snippet",
    "auth-snippet",
    "stream-snippet",
    "modsecurity-snippet",
];

/// Whether an Ingress is a canary (it attaches to the routes of others).
pub fn is_canary(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{PREFIX}canary")))
        .is_some_and(|v| v == "true")
}

/// What the annotations of one Ingress ask for.
#[derive(Debug, Default)]
pub struct Annotations {
    /// `ssl-redirect`: redirect plain HTTP to HTTPS for TLS hosts (default true).
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`: redirect even hosts without a TLS entry.
    pub force_ssl_redirect: bool,
    /// `use-regex` (or `rewrite-target`): the host's paths are regular expressions.
    pub use_regex: bool,
    /// `from-to-www-redirect`.
    pub www_redirect: bool,
    /// `default-backend`: a Service of the Ingress's namespace.
    pub default_backend: Option<String>,
    /// `service-upstream`: the Service's cluster IP instead of its endpoints.
    pub service_upstream: bool,
    /// `ssl-passthrough`: TLS for the Ingress's hosts goes to its `/` backend undecrypted.
    pub ssl_passthrough: bool,
    /// `canary: "true"` and its rules.
    pub canary: Option<CanarySpec>,
    /// `auth-type: basic`: its Secret is read by the caller.
    pub basic_auth: Option<BasicAuthSpec>,
    /// `proxy-ssl-*`: TLS towards the backends (its Secret is read by the caller).
    pub backend_tls: Option<BackendTlsSpec>,
    /// `auth-tls-secret`: client certificates for the Ingress's hosts (read by the caller).
    pub client_auth: Option<ClientAuthSpec>,
    /// `enable-global-auth: "false"`: `--global-auth-url` does not apply.
    pub global_auth_off: bool,
    /// Everything that shapes requests (the fallback backend is resolved by the caller).
    pub policy: RoutePolicy,
}

/// `proxy-ssl-*`, before its Secret is read.
#[derive(Debug, Clone)]
pub struct BackendTlsSpec {
    /// `proxy-ssl-secret`: `ca.crt` to verify with, `tls.crt`/`tls.key` to present.
    pub secret: Option<String>,
    /// `proxy-ssl-verify: on`.
    pub verify: bool,
    pub name: Option<String>,
    pub send_server_name: bool,
    pub tls12: bool,
    pub tls13: bool,
}

/// A canary Ingress's rules, before its backend is known.
#[derive(Debug)]
pub struct CanarySpec {
    pub by_header: Option<(HeaderName, HeaderMatch)>,
    pub by_cookie: Option<String>,
    pub weight: u32,
    pub total: u32,
}

/// The annotations of one Ingress by short name, each read at most once.
struct Values<'v, 'w> {
    values: BTreeMap<&'v str, &'v str>,
    warnings: &'v mut IngressWarnings<'w>,
    /// Why the route is closed: an access or authentication annotation that cannot be applied.
    closed: Option<String>,
}

/// The end of the warning of an access annotation that closed its route.
pub(super) const CLOSED: &str = "the route answers 503 until this is fixed";

/// Whether `name` restricts who may use a route, or how its backends are verified: one that
/// cannot be applied closes the route (503) instead of leaving it open, as ingress-nginx denies
/// such a location.
fn is_access_control(name: &str) -> bool {
    matches!(name, "whitelist-source-range" | "denylist-source-range")
        || (name.starts_with("auth-") && name != "auth-snippet")
        || name.starts_with("proxy-ssl-")
}

/// The field path of an annotation in warnings.
pub(super) fn field(name: &str) -> String {
    format!("metadata.annotations[\"{PREFIX}{name}\"]")
}

/// A value as warnings quote it: whole when short, else its start.
fn quoted(value: &str) -> String {
    if value.chars().count() <= 80 {
        format!("{value:?}")
    } else {
        let start: String = value.chars().take(60).collect();
        format!("{start:?}... ({} bytes)", value.len())
    }
}

impl Values<'_, '_> {
    /// Takes `name` out, parsed by `parse`; a parse error is a warning and `None`.
    fn get<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let value = self.values.remove(name)?;
        match parse(value) {
            Ok(parsed) => Some(parsed),
            Err(reason) => {
                self.reject(name, value, &reason);
                None
            }
        }
    }

    fn reject(&mut self, name: &str, value: &str, reason: &str) {
        let outcome = if self.closes(name, reason) {
            CLOSED
        } else {
            "annotation ignored"
        };
        self.warnings.add(
            field(name),
            format!("{}: {reason}; {outcome}", quoted(value)),
        );
    }

    /// Whether refusing annotation `name` closes the route (then it does).
    fn closes(&mut self, name: &str, reason: &str) -> bool {
        if !is_access_control(name) {
            return false;
        }
        self.closed
            .get_or_insert_with(|| format!("annotation {PREFIX}{name}: {reason}"));
        true
    }

    /// Closes the route for want of annotation `name`, which another one requires.
    fn require(&mut self, name: &str, reason: &str) {
        let reason = format!("is missing: {reason}");
        self.closes(name, &reason);
        self.warnings
            .add(field(name), format!("{reason}; {CLOSED}"));
    }

    /// Takes out the companions of an annotation that is off: they would do nothing.
    fn unused(&mut self, names: &[&str], needs: &str) {
        for name in names {
            if let Some(value) = self.values.remove(*name) {
                self.warnings.add(
                    field(name),
                    format!("{}: has no effect without {needs}; ignored", quoted(value)),
                );
            }
        }
    }
}

fn boolean(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be \"true\" or \"false\"".into()),
    }
}

fn number(value: &str, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| "must be a whole number".to_string())?;
    if !range.contains(&n) {
        return Err(format!(
            "must be between {} and {}",
            range.start(),
            range.end()
        ));
    }
    Ok(n)
}

fn seconds(value: &str) -> Result<Duration, String> {
    number(value, 1..=86_400).map(Duration::from_secs)
}

/// nginx's size syntax: `1024`, `8k`, `10m`, `1g`; 0 means unlimited.
fn size(value: &str) -> Result<Option<u64>, String> {
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], Some(c.to_ascii_lowercase())),
        _ => (value, None),
    };
    let multiplier = match unit {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some(_) => return Err("the unit must be k, m or g".into()),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| "must be a size such as 8m, 512k or 1g".to_string())?;
    let bytes = n
        .checked_mul(multiplier)
        .filter(|b| *b <= 1 << 40)
        .ok_or("must be at most 1024g")?;
    Ok((bytes > 0).then_some(bytes))
}

/// A path for headers and redirects: absolute, no scheme-relative `//`, a valid URI path.
fn path(value: &str) -> Result<String, String> {
    if !value.starts_with('/') || value.starts_with("//") {
        return Err("must be a path starting with a single \"/\"".into());
    }
    value
        .parse::<PathAndQuery>()
        .map_err(|_| "is not a valid URL path".to_string())?;
    Ok(value.to_string())
}

/// A redirect target: an absolute http(s) URL or a path.
fn location(value: &str) -> Result<HeaderValue, String> {
    if value.starts_with('/') {
        path(value)?;
    } else {
        let uri: Uri = value
            .parse()
            .map_err(|_| "is not a valid URL".to_string())?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.authority().is_none() {
            return Err("must be an http(s) URL with a host, or a path".into());
        }
    }
    HeaderValue::from_str(value).map_err(|_| "is not a valid header value".to_string())
}

fn redirect_code(value: &str) -> Result<StatusCode, String> {
    let code = number(value, 300..=308)?;
    StatusCode::from_u16(code as u16).map_err(|e| e.to_string())
}

/// `host` or `host:port`, a DNS name or an IP address.
fn host_value(value: &str) -> Result<HeaderValue, String> {
    const EXPECTED: &str = "must be a host name or address, with an optional :port";
    let host = match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            port.parse::<u16>().map_err(|_| EXPECTED)?;
            host
        }
        _ => value,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid = host.parse::<std::net::IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !valid {
        return Err(EXPECTED.into());
    }
    HeaderValue::from_str(value).map_err(|e| e.to_string())
}

/// A DNS-1123 label (a Service name).
fn service_name(value: &str) -> Result<String, String> {
    super::is_dns_label(value)
        .then(|| value.to_string())
        .ok_or_else(|| "must be the name of a Service (a DNS label)".into())
}

/// A Secret: `NAME` or `NAMESPACE/NAME` (the namespace is checked by `translate`).
fn secret_name(value: &str) -> Result<String, String> {
    let name = value.rsplit_once('/').map_or(value, |(_, name)| name);
    crate::translate::check_dns_name(name).map_err(|e| format!("is not a Secret name: {e}"))?;
    Ok(value.to_string())
}

fn cidrs(value: &str) -> Result<Vec<Cidr>, String> {
    let list = Cidr::parse_list(value)?;
    if list.is_empty() {
        return Err("empty list".into());
    }
    Ok(list)
}

fn status_list(value: &str) -> Result<Vec<StatusCode>, String> {
    value
        .split(',')
        .map(str::trim)
        .map(|code| {
            number(code, 400..=599)
                .map_err(|e| format!("{code:?} {e}"))
                .and_then(|n| StatusCode::from_u16(n as u16).map_err(|e| e.to_string()))
        })
        .collect()
}

fn protocol(value: &str) -> Result<Protocol, String> {
    match value.to_ascii_uppercase().as_str() {
        "HTTP" => Ok(Protocol::Http),
        "HTTPS" => Ok(Protocol::Https),
        "GRPC" => Ok(Protocol::Grpc),
        "GRPCS" => Ok(Protocol::Grpcs),
        "AJP" | "FCGI" | "AUTO_HTTP" => {
            Err("is not supported (HTTP, HTTPS, GRPC, GRPCS are)".into())
        }
        _ => Err("must be HTTP, HTTPS, GRPC or GRPCS".into()),
    }
}

fn next_upstream(value: &str, retry: &mut Retry) -> Result<(), String> {
    let mut parsed = Retry {
        on_error: false,
        on_timeout: false,
        on_status: Vec::new(),
        non_idempotent: false,
        tries: retry.tries,
    };
    for token in value.split_whitespace() {
        match token {
            "error" => parsed.on_error = true,
            "timeout" => parsed.on_timeout = true,
            "non_idempotent" => parsed.non_idempotent = true,
            "off" => {}
            "invalid_header" => parsed.on_error = true,
            _ => {
                let code = token
                    .strip_prefix("http_")
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| [500, 502, 503, 504, 403, 404, 429].contains(c))
                    .ok_or_else(|| {
                        format!(
                            "{token:?} is not one of error, timeout, invalid_header, http_500, \
                             http_502, http_503, http_504, http_403, http_404, http_429, \
                             non_idempotent, off"
                        )
                    })?;
                parsed
                    .on_status
                    .push(StatusCode::from_u16(code).map_err(|e| e.to_string())?);
            }
        }
    }
    if value.split_whitespace().any(|t| t == "off") && value.split_whitespace().count() > 1 {
        return Err("\"off\" cannot be combined with other conditions".into());
    }
    *retry = parsed;
    Ok(())
}

fn header_name(value: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(value.as_bytes()).map_err(|_| "is not a valid header name".to_string())
}

impl Annotations {
    /// Parses the annotations of `meta`. `paths` are the Ingress's paths with whether each is
    /// `Exact`: regular expressions and rewrite captures are checked against them.
    pub fn parse(
        meta: &ObjectMeta,
        paths: &[(String, bool)],
        warnings: &mut IngressWarnings<'_>,
    ) -> Self {
        let mut parsed = Self::default();
        let Some(all) = &meta.annotations else {
            return parsed;
        };
        let mut values = Values {
            values: BTreeMap::new(),
            warnings,
            closed: None,
        };
        for (key, value) in all {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            if SNIPPETS.contains(&name) {
                values.warnings.add(
                    field(name),
                    "configuration snippets are never applied: they splice raw configuration \
                     into the proxy (the cause of ingress-nginx's worst CVEs); use the typed \
                     annotations instead",
                );
                continue;
            }
            if value.len() > MAX_VALUE {
                values.reject(name, value, &format!("is longer than {MAX_VALUE} bytes"));
                continue;
            }
            if value.chars().any(char::is_control) {
                values.reject(
                    name,
                    value,
                    "contains a control character (such as a newline)",
                );
                continue;
            }
            values.values.insert(name, value.trim());
        }
        parsed.read(&mut values, paths);
        // Whatever is left is not something the gateway does.
        let left: Vec<(&str, &str)> = values.values.iter().map(|(k, v)| (*k, *v)).collect();
        for (name, value) in left {
            let reason = "this annotation is not supported by xdp-gateway";
            let outcome = if values.closes(name, reason) {
                CLOSED
            } else {
                "it is not applied"
            };
            values.warnings.add(
                field(name),
                format!("{}: {reason}; {outcome}", quoted(value)),
            );
        }
        parsed.policy.closed = values.closed.map(Into::into);
        parsed
    }

    fn read(&mut self, v: &mut Values<'_, '_>, paths: &[(String, bool)]) {
        self.ssl_redirect = v.get("ssl-redirect", boolean);
        self.force_ssl_redirect = v.get("force-ssl-redirect", boolean).unwrap_or(false);
        self.read_paths(v, paths);
        self.read_redirects(v);
        self.www_redirect = v.get("from-to-www-redirect", boolean).unwrap_or(false);
        self.ssl_passthrough = v.get("ssl-passthrough", boolean).unwrap_or(false);
        self.default_backend = v.get("default-backend", service_name);
        let policy = &mut self.policy;
        policy.custom_errors = v.get("custom-http-errors", status_list).unwrap_or_default();
        policy.upstream_vhost = v.get("upstream-vhost", host_value);
        policy.forwarded_prefix = v.get("x-forwarded-prefix", |s| {
            path(s).and_then(|p| HeaderValue::from_str(&p).map_err(|e| e.to_string()))
        });
        policy.protocol = v.get("backend-protocol", protocol).unwrap_or_default();
        self.read_backend_tls(v);
        let policy = &mut self.policy;
        policy.connect_timeout = v.get("proxy-connect-timeout", |s| {
            number(s, 1..=3600).map(Duration::from_secs)
        });
        policy.read_timeout = v.get("proxy-read-timeout", seconds);
        policy.send_timeout = v.get("proxy-send-timeout", seconds);
        policy.body_limit = v.get("proxy-body-size", size).flatten();
        if let Some(tries) = v.get("proxy-next-upstream-tries", |s| number(s, 0..=100)) {
            policy.retry.tries = tries as u32;
        }
        let mut retry = policy.retry.clone();
        if v.get("proxy-next-upstream", |s| next_upstream(s, &mut retry))
            .is_some()
        {
            policy.retry = retry;
        }
        self.service_upstream = v.get("service-upstream", boolean).unwrap_or(false);
        self.read_balance(v);
        self.read_access(v);
        self.read_auth(v);
        self.read_mirror(v);
        self.read_cors(v);
        self.read_canary(v);
    }

    fn read_paths(&mut self, v: &mut Values<'_, '_>, paths: &[(String, bool)]) {
        let use_regex = v.get("use-regex", boolean).unwrap_or(false);
        let rewrite = v.get("rewrite-target", Rewrite::parse);
        if !use_regex && rewrite.is_none() {
            return;
        }
        // Every path of this Ingress must be a valid expression, with the captures the
        // rewrite uses.
        let name = if use_regex {
            "use-regex"
        } else {
            "rewrite-target"
        };
        for (path, exact) in paths {
            match path_regex(path, *exact) {
                Err(reason) => {
                    v.warnings.add(
                        field(name),
                        format!(
                            "path {}: {reason}; regular expressions and rewrite-target are \
                             ignored for this Ingress",
                            quoted(path)
                        ),
                    );
                    return;
                }
                Ok(regex) => {
                    let groups = regex.captures_len() - 1;
                    if let Some(rewrite) = &rewrite
                        && rewrite.highest_capture() > groups
                    {
                        v.warnings.add(
                            field("rewrite-target"),
                            format!(
                                "uses ${} but path {} has {groups} capture group(s); annotation \
                                 ignored",
                                rewrite.highest_capture(),
                                quoted(path)
                            ),
                        );
                        self.use_regex = use_regex;
                        return;
                    }
                }
            }
        }
        self.use_regex = true;
        self.policy.rewrite = rewrite;
    }

    fn read_redirects(&mut self, v: &mut Values<'_, '_>) {
        let permanent_code = v.get("permanent-redirect-code", redirect_code);
        let temporal_code = v.get("temporal-redirect-code", redirect_code);
        let temporal = v.get("temporal-redirect", location);
        let permanent = v.get("permanent-redirect", location);
        // ingress-nginx's precedence: a temporal redirect wins over a permanent one.
        self.policy.redirect = match (temporal, permanent) {
            (Some(location), _) => Some(Redirect {
                location,
                status: temporal_code.unwrap_or(StatusCode::FOUND),
            }),
            (None, Some(location)) => Some(Redirect {
                location,
                status: permanent_code.unwrap_or(StatusCode::MOVED_PERMANENTLY),
            }),
            (None, None) => None,
        };
        self.policy.app_root = v.get("app-root", path);
    }

    fn read_balance(&mut self, v: &mut Values<'_, '_>) {
        let mut balance = match v.get("load-balance", |s| match s {
            "round_robin" => Ok(Balance::RoundRobin),
            "ewma" => Ok(Balance::Ewma),
            _ => Err("must be round_robin or ewma".to_string()),
        }) {
            Some(balance) => balance,
            None => Balance::RoundRobin,
        };
        if let Some(key) = v.get("upstream-hash-by", hash_key) {
            balance = Balance::Hash(key);
        }
        const COOKIE: [&str; 5] = [
            "affinity-mode",
            "session-cookie-name",
            "session-cookie-max-age",
            "session-cookie-path",
            "session-cookie-samesite",
        ];
        match v.get("affinity", |s| match s {
            "cookie" => Ok(()),
            _ => Err("must be \"cookie\"".to_string()),
        }) {
            Some(()) => {
                let mode = v
                    .get("affinity-mode", |s| match s {
                        "balanced" => Ok(AffinityMode::Balanced),
                        "persistent" => Ok(AffinityMode::Persistent),
                        _ => Err("must be balanced or persistent".to_string()),
                    })
                    .unwrap_or(AffinityMode::Balanced);
                let cookie = v
                    .get("session-cookie-name", |s| {
                        is_cookie_name(s)
                            .then(|| s.to_string())
                            .ok_or_else(|| "is not a cookie name".to_string())
                    })
                    .unwrap_or_else(|| "INGRESSCOOKIE".to_string());
                let max_age = v.get("session-cookie-max-age", |s| number(s, 0..=315_360_000));
                let path = v
                    .get("session-cookie-path", path)
                    .unwrap_or_else(|| "/".into());
                let same_site = v.get("session-cookie-samesite", |s| match s {
                    "None" => Ok("None"),
                    "Lax" => Ok("Lax"),
                    "Strict" => Ok("Strict"),
                    _ => Err("must be None, Lax or Strict".to_string()),
                });
                balance = Balance::Cookie(Affinity {
                    cookie,
                    max_age,
                    path,
                    same_site,
                    mode,
                });
            }
            None => v.unused(&COOKIE, "affinity: \"cookie\""),
        }
        self.policy.balance = balance;
    }

    fn read_access(&mut self, v: &mut Values<'_, '_>) {
        self.policy.allow = v.get("whitelist-source-range", cidrs);
        self.policy.deny = v.get("denylist-source-range", cidrs);
        let multiplier = v
            .get("limit-burst-multiplier", |s| number(s, 1..=1000))
            .unwrap_or(5) as f64;
        // As ingress-nginx: the burst is the limit times the multiplier, in the limit's unit.
        let rps = v
            .get("limit-rps", |s| number(s, 1..=1_000_000))
            .map(|n| Rate {
                per_second: n as f64,
                burst: n as f64 * multiplier,
            });
        let rpm = v
            .get("limit-rpm", |s| number(s, 1..=60_000_000))
            .map(|n| Rate {
                per_second: n as f64 / 60.0,
                burst: n as f64 * multiplier,
            });
        let connections = v
            .get("limit-connections", |s| number(s, 1..=1_000_000))
            .map(|n| n as u32);
        let exempt = v.get("limit-whitelist", cidrs).unwrap_or_default();
        if rps.is_some() || rpm.is_some() || connections.is_some() {
            self.policy.limits = Some(std::sync::Arc::new(crate::policy::Limits::new(
                rps,
                rpm,
                connections,
                exempt,
            )));
        }
    }

    /// `proxy-ssl-*`: how HTTPS and GRPCS backends are verified (the Secret is read by the
    /// caller).
    fn read_backend_tls(&mut self, v: &mut Values<'_, '_>) {
        const ALL: [&str; 5] = [
            "proxy-ssl-secret",
            "proxy-ssl-verify",
            "proxy-ssl-name",
            "proxy-ssl-server-name",
            "proxy-ssl-protocols",
        ];
        if !self.policy.protocol.is_tls() {
            v.unused(&ALL, "backend-protocol HTTPS or GRPCS");
            return;
        }
        if !ALL.iter().any(|name| v.values.contains_key(name)) {
            return;
        }
        let on_off = |s: &str| match s {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err("must be \"on\" or \"off\"".to_string()),
        };
        let secret = v.get("proxy-ssl-secret", secret_name);
        let verify = v.get("proxy-ssl-verify", on_off).unwrap_or(false);
        let name = v.get("proxy-ssl-name", |s| {
            super::check_dns_name(s)
                .map(|()| s.to_string())
                .map_err(|e| format!("is not a server name: {e}"))
        });
        let send_server_name = v.get("proxy-ssl-server-name", on_off).unwrap_or(true);
        let (tls12, tls13) = v
            .get("proxy-ssl-protocols", |s| {
                let mut versions = (false, false);
                for protocol in s.split_whitespace() {
                    match protocol {
                        "TLSv1.2" => versions.0 = true,
                        "TLSv1.3" => versions.1 = true,
                        "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => {}
                        _ => return Err(format!("{protocol:?} is not a TLS protocol")),
                    }
                }
                match versions {
                    (false, false) => Err("names neither TLSv1.2 nor TLSv1.3 (older ones are \
                                           not supported)"
                        .to_string()),
                    versions => Ok(versions),
                }
            })
            .unwrap_or((true, true));
        if verify && secret.is_none() {
            v.require(
                "proxy-ssl-secret",
                "proxy-ssl-verify \"on\" needs the Secret with ca.crt",
            );
            return;
        }
        self.backend_tls = Some(BackendTlsSpec {
            secret,
            verify,
            name,
            send_server_name,
            tls12,
            tls13,
        });
    }

    /// `mirror-target` (`https://shadow.example.com$request_uri`), `mirror-host`,
    /// `mirror-request-body`: a copy of every request, its answer thrown away.
    fn read_mirror(&mut self, v: &mut Values<'_, '_>) {
        const COMPANIONS: [&str; 2] = ["mirror-host", "mirror-request-body"];
        if !v.values.contains_key("mirror-target") {
            v.unused(&COMPANIONS, "mirror-target");
            return;
        }
        let host = v.get("mirror-host", host_value);
        let body = v
            .get("mirror-request-body", |s| match s {
                "on" => Ok(true),
                "off" => Ok(false),
                _ => Err("must be \"on\" or \"off\"".to_string()),
            })
            .unwrap_or(true);
        if let Some(mirror) = v.get("mirror-target", |s| Mirror::target(s, host, body)) {
            self.policy.mirrors.push(mirror);
        }
    }

    fn read_cors(&mut self, v: &mut Values<'_, '_>) {
        const COMPANIONS: [&str; 6] = [
            "cors-allow-origin",
            "cors-allow-methods",
            "cors-allow-headers",
            "cors-expose-headers",
            "cors-allow-credentials",
            "cors-max-age",
        ];
        if !v.get("enable-cors", boolean).unwrap_or(false) {
            v.unused(&COMPANIONS, "enable-cors: \"true\"");
            return;
        }
        let default_list = |text| cors::token_list(text).expect("the defaults are valid");
        self.policy.cors = Some(Cors {
            origins: v
                .get("cors-allow-origin", Origins::parse)
                .unwrap_or(Origins::Any),
            methods: v
                .get("cors-allow-methods", cors::token_list)
                .unwrap_or_else(|| default_list(cors::DEFAULT_METHODS)),
            headers: v
                .get("cors-allow-headers", cors::token_list)
                .unwrap_or_else(|| default_list(cors::DEFAULT_HEADERS)),
            expose: v.get("cors-expose-headers", cors::token_list),
            credentials: v.get("cors-allow-credentials", boolean).unwrap_or(true),
            max_age: v
                .get("cors-max-age", |s| number(s, 0..=31_536_000))
                .map_or(cors::DEFAULT_MAX_AGE, |n| n as u32),
        });
    }

    fn read_canary(&mut self, v: &mut Values<'_, '_>) {
        const RULES: [&str; 6] = [
            "canary-weight",
            "canary-weight-total",
            "canary-by-header",
            "canary-by-header-value",
            "canary-by-header-pattern",
            "canary-by-cookie",
        ];
        if !v.get("canary", boolean).unwrap_or(false) {
            v.unused(&RULES, "canary: \"true\"");
            return;
        }
        let total = v
            .get("canary-weight-total", |s| number(s, 1..=1_000_000))
            .unwrap_or(100) as u32;
        let weight = v
            .get("canary-weight", |s| {
                number(s, 0..=u64::from(total))
                    .map_err(|_| format!("must be a whole number from 0 to the total ({total})"))
            })
            .unwrap_or(0) as u32;
        let by_header = v.get("canary-by-header", header_name).map(|name| {
            let value = v.get("canary-by-header-value", |s| {
                (!s.is_empty() && s.len() <= 256)
                    .then(|| s.to_string())
                    .ok_or_else(|| "must be 1 to 256 characters".to_string())
            });
            let pattern = v.get("canary-by-header-pattern", header_pattern);
            // ingress-nginx: a value wins over a pattern.
            let matcher = match (value, pattern) {
                (Some(value), _) => HeaderMatch::Value(value),
                (None, Some(pattern)) => HeaderMatch::Pattern(pattern),
                (None, None) => HeaderMatch::AlwaysNever,
            };
            (name, matcher)
        });
        if by_header.is_none() {
            v.unused(
                &["canary-by-header-value", "canary-by-header-pattern"],
                "canary-by-header",
            );
        }
        let by_cookie = v.get("canary-by-cookie", |s| {
            is_cookie_name(s)
                .then(|| s.to_string())
                .ok_or_else(|| "is not a cookie name".to_string())
        });
        self.canary = Some(CanarySpec {
            by_header,
            by_cookie,
            weight,
            total,
        });
    }
}

/// A header-value pattern: an unanchored regular expression with the same limits as paths.
fn header_pattern(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .nest_limit(32)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "the regular expression is too large".into(),
            other => format!("not a valid regular expression: {other}"),
        })
}
