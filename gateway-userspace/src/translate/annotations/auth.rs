//! The authentication annotations: `auth-type: basic` (its Secret is read by `translate`, which
//! has the store) and external auth (`auth-url` and its companions). Any of them that cannot be
//! applied closes the route (503): it never serves without the authentication it asks for.

use std::sync::Arc;

use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};

use super::{Annotations, Values, boolean, location, secret_name};
use crate::policy::auth::external::{self, ExternalAuth, SignIn, VerdictCache};
use crate::policy::service_url::ServiceUrl;
use crate::policy::template::Template;
use crate::tls::client_auth::VerifyClient;

/// `auth-type: basic`, before its Secret is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthSpec {
    /// `auth-secret`: a Secret of the Ingress's namespace (`NAME` or `NAMESPACE/NAME`).
    pub secret: String,
    /// `auth-secret-type: auth-map` (a key per user) rather than `auth-file` (key `auth`).
    pub map: bool,
    pub realm: String,
}

/// `auth-tls-secret` and its companions, before the Secret is read.
#[derive(Debug, Clone)]
pub struct ClientAuthSpec {
    /// A Secret of the Ingress's namespace holding `ca.crt` (and optionally `ca.crl`).
    pub secret: String,
    pub mode: VerifyClient,
    pub depth: usize,
    pub pass_certificate: bool,
    pub error_page: Option<HeaderValue>,
    pub match_cn: Option<regex::Regex>,
}

/// ingress-nginx's `auth-cache-duration` default.
const DEFAULT_CACHE_DURATION: &str = "200 202 401 5m";

impl Annotations {
    pub(super) fn read_auth(&mut self, v: &mut Values<'_, '_>) {
        const BASIC: [&str; 3] = ["auth-secret", "auth-secret-type", "auth-realm"];
        let basic = v.get("auth-type", |s| match s {
            "basic" => Ok(()),
            "digest" => Err("digest authentication is not supported (basic is)".into()),
            _ => Err("must be \"basic\"".into()),
        });
        if basic.is_some() {
            let map = v
                .get("auth-secret-type", |s| match s {
                    "auth-file" => Ok(false),
                    "auth-map" => Ok(true),
                    _ => Err("must be auth-file or auth-map".into()),
                })
                .unwrap_or(false);
            let realm = v.get("auth-realm", realm).unwrap_or_default();
            match v.get("auth-secret", secret_name) {
                Some(secret) => self.basic_auth = Some(BasicAuthSpec { secret, map, realm }),
                None => v.require(
                    "auth-secret",
                    "auth-type \"basic\" needs the Secret that lists its users",
                ),
            }
        } else {
            v.unused(&BASIC, "auth-type: \"basic\"");
        }
        self.global_auth_off = !v.get("enable-global-auth", boolean).unwrap_or(true);
        self.read_external_auth(v);
        self.read_client_auth(v);
    }

    fn read_client_auth(&mut self, v: &mut Values<'_, '_>) {
        const COMPANIONS: [&str; 5] = [
            "auth-tls-verify-client",
            "auth-tls-verify-depth",
            "auth-tls-pass-certificate-to-upstream",
            "auth-tls-error-page",
            "auth-tls-match-cn",
        ];
        let mode = v.get("auth-tls-verify-client", |s| match s {
            "on" => Ok(Some(VerifyClient::On)),
            "optional" => Ok(Some(VerifyClient::Optional)),
            "optional_no_ca" => Ok(Some(VerifyClient::OptionalNoCa)),
            "off" => Ok(None),
            _ => Err("must be on, optional, optional_no_ca or off".to_string()),
        });
        let Some(secret) = v.get("auth-tls-secret", secret_name) else {
            v.unused(&COMPANIONS, "auth-tls-secret");
            return;
        };
        let Some(mode) = mode.unwrap_or(Some(VerifyClient::On)) else {
            v.unused(&COMPANIONS, "auth-tls-verify-client other than \"off\"");
            return;
        };
        let depth = v
            .get("auth-tls-verify-depth", |s| super::number(s, 0..=10))
            .unwrap_or(1) as usize;
        let pass_certificate = v
            .get("auth-tls-pass-certificate-to-upstream", boolean)
            .unwrap_or(false);
        let error_page = v.get("auth-tls-error-page", location);
        let match_cn = v.get("auth-tls-match-cn", |s| {
            if !s.starts_with("CN=") {
                return Err("must start with \"CN=\"".to_string());
            }
            super::header_pattern(s)
        });
        self.client_auth = Some(ClientAuthSpec {
            secret,
            mode,
            depth,
            pass_certificate,
            error_page,
            match_cn,
        });
    }

    fn read_external_auth(&mut self, v: &mut Values<'_, '_>) {
        const COMPANIONS: [&str; 8] = [
            "auth-method",
            "auth-signin",
            "auth-signin-redirect-param",
            "auth-response-headers",
            "auth-request-redirect",
            "auth-cache-key",
            "auth-cache-duration",
            "auth-always-set-cookie",
        ];
        let Some(url) = v.get("auth-url", ServiceUrl::parse) else {
            v.unused(&COMPANIONS, "auth-url");
            return;
        };
        let method = v.get("auth-method", |s| {
            (s.bytes().all(|b| b.is_ascii_uppercase()))
                .then(|| Method::from_bytes(s.as_bytes()).ok())
                .flatten()
                .ok_or_else(|| "must be an HTTP method such as GET or POST".to_string())
        });
        let redirect_param = v
            .get("auth-signin-redirect-param", |s| {
                let valid = !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
                valid
                    .then(|| s.to_string())
                    .ok_or_else(|| "must be a query parameter name (letters, digits, _, -)".into())
            })
            .unwrap_or_else(|| "rd".into());
        let signin = v.get("auth-signin", |s| {
            let url = signin_url(s)?;
            // A URL that already carries the request (`?rd=$escaped_request_uri`) is kept as is.
            let carries_request = s.contains(&format!("{redirect_param}="));
            Ok(SignIn {
                url,
                redirect_param: (!carries_request).then(|| redirect_param.clone()),
            })
        });
        let response_headers = v
            .get("auth-response-headers", header_names)
            .unwrap_or_default();
        let request_redirect = v.get("auth-request-redirect", location);
        let always_set_cookie = v.get("auth-always-set-cookie", boolean).unwrap_or(false);
        let key = v.get("auth-cache-key", |s| {
            Template::parse(s).map_err(|e| format!("is not a valid key: {e}"))
        });
        let cache = match key {
            Some(key) => {
                let rules = v
                    .get("auth-cache-duration", external::cache_rules)
                    .unwrap_or_else(|| {
                        external::cache_rules(DEFAULT_CACHE_DURATION).expect("the default is valid")
                    });
                Some(VerdictCache::new(key, rules))
            }
            None => {
                v.unused(&["auth-cache-duration"], "auth-cache-key");
                None
            }
        };
        self.policy.external_auth = Some(Arc::new(ExternalAuth {
            method,
            signin,
            response_headers,
            request_redirect,
            always_set_cookie,
            cache,
            ..ExternalAuth::new(url)
        }));
    }
}

/// `auth-realm`: shown by browsers in the login prompt.
fn realm(value: &str) -> Result<String, String> {
    (value.len() <= 256)
        .then(|| value.to_string())
        .ok_or_else(|| "must be at most 256 characters".into())
}

/// `auth-signin`: an http(s) URL or a path, possibly with variables (`https://$host/...`).
fn signin_url(value: &str) -> Result<Template, String> {
    let starts_well = [
        "http://",
        "https://",
        "/",
        "$scheme://",
        "$pass_access_scheme://",
    ]
    .iter()
    .any(|start| value.starts_with(start))
        && !value.starts_with("//");
    if !starts_well {
        return Err("must be an http(s) URL or a path".into());
    }
    HeaderValue::from_str(value).map_err(|_| "is not a valid URL".to_string())?;
    Template::parse(value)
}

/// `auth-response-headers`: a comma-separated list of header names.
fn header_names(value: &str) -> Result<Vec<HeaderName>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a header name"))
        })
        .collect()
}
