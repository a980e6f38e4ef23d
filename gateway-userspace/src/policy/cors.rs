//! CORS, from ingress-nginx's `enable-cors` and `cors-*` annotations and from Gateway API's
//! `CORS` filter: preflight requests are answered by the gateway (204), other responses get the
//! CORS headers when the request's Origin is allowed.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};

/// The defaults of ingress-nginx.
pub const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
pub const DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,\
                                   Cache-Control,Content-Type,Range,Authorization";
pub const DEFAULT_MAX_AGE: u32 = 1_728_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    pub origins: Origins,
    pub methods: Tokens,
    pub headers: Tokens,
    pub expose: Option<Tokens>,
    pub credentials: bool,
    pub max_age: u32,
}

/// Methods or header names a preflight allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tokens {
    Listed(HeaderValue),
    /// `*`: whatever the preflight asks for, echoed (a credentialed request may not be
    /// answered with a literal `*`).
    Any,
}

/// Which origins may call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    Any,
    /// `scheme://host[:port]`, the host possibly `*.suffix` (one or more labels).
    List(Vec<OriginPattern>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    /// Lower-case; `.example.com` for `*.example.com`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl Origins {
    /// `*`, or a comma-separated list of origins.
    pub fn parse(text: &str) -> Result<Self, String> {
        let listed: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        Self::of(&listed)
    }

    /// Origins given one by one; `*` among them is any.
    pub fn of(listed: &[&str]) -> Result<Self, String> {
        if listed.contains(&"*") {
            return Ok(Self::Any);
        }
        let list = listed
            .iter()
            .map(|origin| OriginPattern::parse(origin).map_err(|e| format!("{origin:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err("no origin listed".into());
        }
        Ok(Self::List(list))
    }
}

impl OriginPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("an origin is scheme://host[:port]")?;
        if scheme != "http" && scheme != "https" {
            return Err("the scheme must be http or https".into());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                Some(port.parse::<u16>().map_err(|_| "not a port number")?),
            ),
            None => (rest, None),
        };
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, host),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err("the host must be a DNS name, possibly starting with *.".into());
        }
        let name = name.to_ascii_lowercase();
        Ok(Self {
            scheme: scheme.to_string(),
            host: if wildcard { format!(".{name}") } else { name },
            wildcard,
            port,
        })
    }

    fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().ok()),
            None => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.ends_with(&self.host) && host.len() > self.host.len()
        } else {
            host == self.host
        };
        scheme == self.scheme && host_ok && port == self.port
    }
}

/// A comma-separated list of tokens (methods, header names); `*` alone is any.
pub fn token_list(text: &str) -> Result<Tokens, String> {
    let tokens: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    tokens_of(&tokens)
}

/// Tokens given one by one (as Gateway API lists them); `*` among them is any.
pub fn tokens_of(tokens: &[&str]) -> Result<Tokens, String> {
    if tokens.is_empty() {
        return Err("the list is empty".into());
    }
    if tokens.contains(&"*") {
        return Ok(Tokens::Any);
    }
    if let Some(bad) = tokens.iter().find(|t| {
        t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return Err(format!("{bad:?} is not a method or header name"));
    }
    HeaderValue::from_str(&tokens.join(", "))
        .map(Tokens::Listed)
        .map_err(|e| e.to_string())
}

impl Tokens {
    /// The allowed list, or for `*` what the preflight `asked` (else `*` itself).
    fn answer(&self, asked: Option<&HeaderValue>) -> HeaderValue {
        match (self, asked) {
            (Self::Listed(list), _) => list.clone(),
            (Self::Any, Some(asked)) => asked.clone(),
            (Self::Any, None) => HeaderValue::from_static("*"),
        }
    }
}

static ALLOW_ORIGIN: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;

impl Cors {
    /// The Access-Control-Allow-Origin for a request from `origin`, if it may call.
    fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            // Browsers refuse a literal `*` on credentialed requests: the origin is echoed.
            Origins::Any if self.credentials && origin.is_some() => origin.cloned(),
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(list) => {
                let origin = origin?;
                let text = origin.to_str().ok()?;
                list.iter().any(|p| p.matches(text)).then(|| origin.clone())
            }
        }
    }

    /// Whether a request is a CORS preflight (answered by the gateway).
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The status and headers of the answer to a preflight with these request headers.
    pub fn preflight(&self, request: &HeaderMap) -> (StatusCode, HeaderMap) {
        let mut headers = HeaderMap::new();
        if let Some(allowed) = self.allowed(request.get(header::ORIGIN)) {
            headers.insert(&ALLOW_ORIGIN, allowed);
            let asked = |name| request.get(name);
            let methods = self
                .methods
                .answer(asked(header::ACCESS_CONTROL_REQUEST_METHOD));
            let allowed_headers = self
                .headers
                .answer(asked(header::ACCESS_CONTROL_REQUEST_HEADERS));
            // An empty list (a Gateway API filter that lists none) is said by leaving it out.
            for (name, value) in [
                (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, allowed_headers),
            ] {
                if !value.is_empty() {
                    headers.insert(name, value);
                }
            }
            if let Some(expose) = &self.expose {
                headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.answer(None));
            }
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.into());
            if self.credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        (StatusCode::NO_CONTENT, headers)
    }

    /// Adds the CORS headers to a response for a request from `origin`.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(allowed) = self.allowed(origin) else {
            return;
        };
        headers.insert(&ALLOW_ORIGIN, allowed);
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.answer(None));
        }
        if matches!(self.origins, Origins::List(_)) || self.credentials {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &str) -> Cors {
        Cors {
            origins: Origins::parse(origins).unwrap(),
            methods: token_list(DEFAULT_METHODS).unwrap(),
            headers: token_list(DEFAULT_HEADERS).unwrap(),
            expose: None,
            credentials: true,
            max_age: DEFAULT_MAX_AGE,
        }
    }

    #[test]
    fn listed_and_wildcard_origins_are_echoed_others_get_nothing() {
        let cors = cors("https://app.example.com, https://*.partner.org:8443");
        let from = |o: &'static str| cors.allowed(Some(&HeaderValue::from_static(o)));
        assert_eq!(
            from("https://app.example.com").unwrap(),
            "https://app.example.com"
        );
        assert!(from("https://a.b.partner.org:8443").is_some());
        assert!(from("https://partner.org:8443").is_none());
        assert!(from("http://app.example.com").is_none());
        assert!(from("https://evil.com").is_none());
        assert!(from("https://app.example.com.evil.com").is_none());
        assert_eq!(self::cors("*").allowed(None).unwrap(), "*");
    }

    #[test]
    fn bad_lists_are_refused() {
        for bad in [
            "app.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://",
            "https://a..b",
        ] {
            assert!(Origins::parse(bad).is_err(), "{bad}");
        }
        assert!(token_list("GET, PO ST").is_err());
        assert!(token_list("X-Foo\r\nSet-Cookie: a").is_err());
        assert_eq!(
            token_list("GET,POST").unwrap(),
            Tokens::Listed(HeaderValue::from_static("GET, POST"))
        );
        assert_eq!(token_list("*").unwrap(), Tokens::Any);
    }

    #[test]
    fn wildcards_echo_what_a_credentialed_preflight_asks() {
        let mut cors = cors("*");
        cors.methods = Tokens::Any;
        cors.headers = Tokens::Any;
        let mut request = HeaderMap::new();
        request.insert(header::ORIGIN, HeaderValue::from_static("https://a.test"));
        request.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        request.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-one, x-two"),
        );
        let (_, answer) = cors.preflight(&request);
        assert_eq!(answer[&ALLOW_ORIGIN], "https://a.test");
        assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-one, x-two");
        cors.credentials = false;
        let (_, answer) = cors.preflight(&request);
        assert_eq!(answer[&ALLOW_ORIGIN], "*");
        assert!(!answer.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }
}
