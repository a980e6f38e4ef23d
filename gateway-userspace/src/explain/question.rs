//! The request to explain, as `curl` would be told it: a URL, a method, headers and the
//! client's address.

use std::fmt;
use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Uri};

use crate::snapshot::normalize_host;

/// One request to explain.
#[derive(Clone, Debug)]
pub struct Question {
    pub method: Method,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The URL's host and port as written.
    pub authority: String,
    /// The host that routes: the Host header when one is given, else the URL's (normalised).
    pub host: String,
    pub port: u16,
    /// The address the connection goes to, when the URL names one.
    pub address: Option<IpAddr>,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The client's address (`--from`).
    pub from: Option<IpAddr>,
}

impl Question {
    /// `url` is absolute (`http://shop.example.com/cart?x=1`); `headers` are `Name: value`.
    pub fn new(
        url: &str,
        method: &str,
        headers: &[String],
        from: Option<&str>,
    ) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("URL {url:?}: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            Some(other) => {
                return Err(format!(
                    "URL {url:?}: scheme {other:?} is not http or https"
                ));
            }
            None => return Err(format!("URL {url:?}: must be absolute (http://host/path)")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("URL {url:?}: has no host"))?;
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let address = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("method {method:?}: not a method name"))?;
        let mut map = HeaderMap::new();
        for line in headers {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header {line:?}: expected Name: value"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("header {line:?}: {:?} is not a header name", name.trim()))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("header {line:?}: the value is not a header value"))?;
            map.append(name, value);
        }
        let host = match map.get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(host)) => normalize_host(host).into_owned(),
            Some(Err(_)) => return Err("header Host: not text".into()),
            None => normalize_host(authority.as_str()).into_owned(),
        };
        let from = from
            .map(|from| {
                from.parse()
                    .map_err(|_| format!("--from {from:?}: not an IP address"))
            })
            .transpose()?;
        Ok(Self {
            method,
            scheme,
            authority: authority.as_str().to_string(),
            host,
            port,
            address,
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: map,
            from,
        })
    }

    /// `path` with the request's query.
    pub fn target(&self, path: &str) -> String {
        match &self.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        }
    }
}

impl fmt::Display for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}://{}{}",
            self.method,
            self.scheme,
            self.authority,
            self.target(&self.path)
        )?;
        if !self.host.is_empty() && normalize_host(&self.authority) != self.host {
            write!(f, " (Host: {})", self.host)?;
        }
        if let Some(from) = self.from {
            write!(f, " from {from}")?;
        }
        Ok(())
    }
}
