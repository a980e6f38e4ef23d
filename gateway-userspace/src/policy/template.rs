//! Strings with nginx variables, as annotations carry them: `upstream-hash-by`
//! (`$http_x_user$host`), `auth-signin` (`https://$host/oauth2/start?rd=$escaped_request_uri`),
//! `auth-cache-key`, `mirror-target`. Parsed once; an unknown variable is an error, never
//! passed through as text.

use std::fmt::Write;
use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderName};
use hyper::{Method, Uri};

use super::balance::cookie;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `$request_uri`: the path and query.
    RequestUri,
    /// `$escaped_request_uri`: the same, percent-encoded for a query parameter.
    EscapedRequestUri,
    /// `$uri`: the normalised path, without the query.
    Path,
    Args,
    Host,
    RemoteAddr,
    Scheme,
    Method,
    Header(HeaderName),
    Cookie(String),
    Argument(String),
}

/// The request facts a template (or an endpoint choice) may depend on.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    /// The request's host, normalised (no port).
    pub host: &'a str,
    pub client: IpAddr,
    pub scheme: &'static str,
    pub headers: &'a HeaderMap,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            if dollar > 0 {
                parts.push(Part::Text(rest[..dollar].to_string()));
            }
            let after = &rest[dollar + 1..];
            let (name, next) = match after.strip_prefix('{') {
                Some(braced) => {
                    let end = braced.find('}').ok_or("has a \"${\" without \"}\"")?;
                    (&braced[..end], &braced[end + 1..])
                }
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            parts.push(Part::variable(name)?);
            rest = next;
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Whether the template has no variable.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    pub fn render(&self, request: &RequestView<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::RequestUri => out.push_str(request_uri(request.uri)),
                Part::EscapedRequestUri => escape_into(request_uri(request.uri), &mut out),
                Part::Path => out.push_str(request.uri.path()),
                Part::Args => out.push_str(request.uri.query().unwrap_or("")),
                Part::Host => out.push_str(request.host),
                Part::RemoteAddr => {
                    let _ = write!(out, "{}", request.client);
                }
                Part::Scheme => out.push_str(request.scheme),
                Part::Method => out.push_str(request.method.as_str()),
                Part::Header(name) => out.push_str(
                    (request.headers.get(name))
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(""),
                ),
                Part::Cookie(name) => out.push_str(cookie(request.headers, name).unwrap_or("")),
                Part::Argument(name) => out.push_str(argument(request.uri, name).unwrap_or("")),
            }
        }
        out
    }
}

impl Part {
    fn variable(name: &str) -> Result<Self, String> {
        Ok(match name {
            "request_uri" => Self::RequestUri,
            "escaped_request_uri" => Self::EscapedRequestUri,
            "uri" | "document_uri" => Self::Path,
            "args" | "query_string" => Self::Args,
            "host" | "http_host" => Self::Host,
            "remote_addr" | "binary_remote_addr" => Self::RemoteAddr,
            "scheme" | "pass_access_scheme" => Self::Scheme,
            "request_method" => Self::Method,
            _ => {
                if let Some(header) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                    let header = header.replace('_', "-");
                    Self::Header(
                        HeaderName::from_bytes(header.as_bytes()).map_err(|e| e.to_string())?,
                    )
                } else if let Some(cookie) = name.strip_prefix("cookie_").filter(|c| !c.is_empty())
                {
                    Self::Cookie(cookie.to_string())
                } else if let Some(arg) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    Self::Argument(arg.to_string())
                } else {
                    return Err(format!("${name} is not a variable the gateway knows"));
                }
            }
        })
    }
}

fn request_uri(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn escape_into(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

fn argument<'u>(uri: &'u Uri, name: &str) -> Option<&'u str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{self, HeaderValue};

    #[test]
    fn variables_are_rendered_from_the_request() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; _oauth2_proxy=tok"),
        );
        headers.insert("x-user", HeaderValue::from_static("ann"));
        let uri: Uri = "/p/q?x=1&rd=/home".parse().unwrap();
        let view = RequestView {
            method: &Method::GET,
            uri: &uri,
            host: "app.test",
            client: IpAddr::from([10, 1, 2, 3]),
            scheme: "https",
            headers: &headers,
        };
        let render = |text: &str| Template::parse(text).unwrap().render(&view);
        assert_eq!(
            render("https://$host/oauth2/start?rd=$escaped_request_uri"),
            "https://app.test/oauth2/start?rd=%2Fp%2Fq%3Fx%3D1%26rd%3D%2Fhome"
        );
        assert_eq!(
            render("$http_x_user-${request_uri}"),
            "ann-/p/q?x=1&rd=/home"
        );
        assert_eq!(
            render("$cookie__oauth2_proxy|$arg_x|$uri|$args"),
            "tok|1|/p/q|x=1&rd=/home"
        );
        assert_eq!(
            render("$remote_addr $scheme $request_method"),
            "10.1.2.3 https GET"
        );
        assert!(Template::parse("plain").unwrap().is_literal());
        assert!(!Template::parse("a$host").unwrap().is_literal());
    }

    #[test]
    fn unknown_variables_are_refused() {
        assert!(
            Template::parse("$remote_user")
                .unwrap_err()
                .contains("$remote_user")
        );
        assert!(Template::parse("${host").is_err());
        assert!(Template::parse("$cookie_").is_err());
        assert!(Template::parse("$nonsense").is_err());
    }
}
