//! External authentication (`auth-url`, how oauth2-proxy protects an application): before a
//! request goes to its backend, a subrequest with its headers (no body) asks an auth service.
//! 2xx lets it through, 401 and 403 go back to the client, anything else is a 500. The verdicts
//! may be cached (`auth-cache-key`, `auth-cache-duration`). The subrequest itself is sent by
//! `proxy::auth`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::policy::service_url::ServiceUrl;
use crate::policy::template::{RequestView, Template};

/// Verdicts cached at most per route.
const MAX_CACHED: usize = 16_384;

/// Where a 401 sends the browser instead (`auth-signin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    pub url: Template,
    /// The query parameter that carries the original URL (`auth-signin-redirect-param`, `rd`);
    /// `None` when the URL already carries the request itself.
    pub redirect_param: Option<String>,
}

/// Which auth answers are cached, and for how long (`auth-cache-duration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    pub statuses: Vec<StatusCode>,
    pub duration: Duration,
}

/// One route's external auth.
#[derive(Debug)]
pub struct ExternalAuth {
    pub url: ServiceUrl,
    /// `auth-method`: the subrequest's method (else the request's).
    pub method: Option<Method>,
    pub signin: Option<SignIn>,
    /// `auth-response-headers`: copied from a 2xx answer into the request to the backend.
    pub response_headers: Vec<HeaderName>,
    /// `auth-request-redirect`: the `X-Auth-Request-Redirect` sent (else the request URI).
    pub request_redirect: Option<HeaderValue>,
    /// `auth-always-set-cookie`: the auth answer's cookies are set whatever the backend answers.
    pub always_set_cookie: bool,
    pub cache: Option<VerdictCache>,
}

/// What the auth service said about a request.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// 2xx: the headers to copy into the request, the cookies to set on the response.
    Allowed {
        headers: Vec<(HeaderName, HeaderValue)>,
        cookies: Vec<HeaderValue>,
    },
    /// 401 or 403, with the service's `WWW-Authenticate` and cookies.
    Denied {
        status: StatusCode,
        challenge: Option<HeaderValue>,
        cookies: Vec<HeaderValue>,
    },
}

impl ExternalAuth {
    /// Auth at `url` with every companion at its default (`--global-auth-url`).
    pub fn new(url: ServiceUrl) -> Self {
        Self {
            url,
            method: None,
            signin: None,
            response_headers: Vec::new(),
            request_redirect: None,
            always_set_cookie: false,
            cache: None,
        }
    }
}

/// `auth-cache-key` and `auth-cache-duration`: verdicts by a digest of the rendered key.
#[derive(Debug)]
pub struct VerdictCache {
    key: Template,
    rules: Vec<CacheRule>,
    entries: Mutex<HashMap<[u8; 32], (Verdict, Instant)>>,
}

impl VerdictCache {
    pub fn new(key: Template, rules: Vec<CacheRule>) -> Self {
        Self {
            key,
            rules,
            entries: Mutex::default(),
        }
    }

    /// The cache key of `request`: a digest, so keys holding tokens are not kept in memory.
    pub fn key(&self, request: &RequestView<'_>) -> [u8; 32] {
        Sha256::digest(self.key.render(request).as_bytes()).into()
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Verdict> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (verdict, until) = entries.get(key)?;
        (Instant::now() < *until).then(|| verdict.clone())
    }

    /// Keeps `verdict` if its status is cached, for its rule's duration.
    pub fn put(&self, key: [u8; 32], verdict: &Verdict, status: StatusCode) {
        let Some(rule) = self.rules.iter().find(|r| r.statuses.contains(&status)) else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
        }
        if entries.len() < MAX_CACHED {
            entries.insert(key, (verdict.clone(), Instant::now() + rule.duration));
        }
    }
}

/// `auth-cache-duration`: `200 202 10m, 401 30s` (statuses, then nginx's time: `s`, `m`, `h`,
/// `d`, or seconds).
pub fn cache_rules(text: &str) -> Result<Vec<CacheRule>, String> {
    text.split(',')
        .map(|rule| {
            let words: Vec<&str> = rule.split_whitespace().collect();
            let (time, statuses) = words.split_last().ok_or("has an empty entry")?;
            if statuses.is_empty() {
                return Err(format!("{rule:?} names no status before its time"));
            }
            let statuses = statuses
                .iter()
                .map(|s| {
                    s.parse::<u16>()
                        .ok()
                        .filter(|code| (200..600).contains(code))
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .ok_or_else(|| format!("{s:?} is not an HTTP status"))
                })
                .collect::<Result<_, _>>()?;
            Ok(CacheRule {
                statuses,
                duration: nginx_time(time)?,
            })
        })
        .collect()
}

/// nginx's time syntax, at most a day: `30s`, `5m`, `1h`, `1d`, `45`.
pub fn nginx_time(text: &str) -> Result<Duration, String> {
    let (digits, unit) = match text.strip_suffix(|c: char| c.is_ascii_alphabetic()) {
        Some(digits) => (digits, &text[digits.len()..]),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    digits
        .parse::<u64>()
        .ok()
        .map(|n| n * scale)
        .filter(|s| (1..=86_400).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is not a time from 1s to 1d (such as 30s or 5m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_durations_follow_nginx_syntax() {
        let rules = cache_rules("200 202 10m, 401 30s").unwrap();
        assert_eq!(rules[0].statuses, [StatusCode::OK, StatusCode::ACCEPTED]);
        assert_eq!(rules[0].duration, Duration::from_secs(600));
        assert_eq!(rules[1].duration, Duration::from_secs(30));
        assert_eq!(nginx_time("45").unwrap(), Duration::from_secs(45));
        for bad in ["10m", "200 10x", "abc 5m", "200 0s", "200 2d", ""] {
            assert!(cache_rules(bad).is_err(), "{bad}");
        }
    }
}
