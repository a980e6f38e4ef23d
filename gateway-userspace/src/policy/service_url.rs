//! The URL of a service outside the route table (`auth-url`, `mirror-target`): http or https,
//! a host written out, no variables in it, no credentials, no fragment.

use hyper::Uri;
use hyper::header::HeaderValue;
use hyper::http::uri::PathAndQuery;

/// A service's address, fixed when the annotation is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    pub https: bool,
    /// The host as written (the Host header, the TLS server name and the name resolved).
    pub host: String,
    pub port: u16,
    pub path_and_query: PathAndQuery,
    /// The Host header of the subrequest (with the port when it is not the scheme's).
    pub authority: HeaderValue,
}

impl ServiceUrl {
    /// An `http` or `https` URL with a host, written out (no variables: the service is never
    /// chosen by the request).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains('$') {
            return Err(
                "must be a plain URL: variables such as $host would let a request choose \
                        where its credentials are sent; name the auth service instead (such as \
                        http://oauth2-proxy.auth.svc.cluster.local/oauth2/auth)"
                    .into(),
            );
        }
        let lower = text.to_ascii_lowercase();
        if !lower.starts_with("http://") && !lower.starts_with("https://") {
            return Err("must be an http:// or https:// URL".into());
        }
        if text.contains('#') || text.contains(char::is_whitespace) {
            return Err("is not a valid URL (no #fragment and no spaces)".into());
        }
        let uri: Uri = text.parse().map_err(|_| "is not a valid URL".to_string())?;
        let https = uri.scheme_str() == Some("https");
        let authority = uri.authority().ok_or("must name a host")?;
        if authority.as_str().contains('@') {
            return Err("must not carry credentials (user@host)".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err("must name a host".into());
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path_and_query: uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            authority: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls_are_plain_http_urls_with_a_host() {
        let url = ServiceUrl::parse("http://oauth2-proxy.auth.svc:4180/oauth2/auth?x=1").unwrap();
        assert_eq!(
            (url.https, url.host.as_str(), url.port),
            (false, "oauth2-proxy.auth.svc", 4180)
        );
        assert_eq!(url.path_and_query.as_str(), "/oauth2/auth?x=1");
        assert_eq!(url.authority, "oauth2-proxy.auth.svc:4180");
        let url = ServiceUrl::parse("https://[::1]/").unwrap();
        assert_eq!((url.https, url.host.as_str(), url.port), (true, "::1", 443));
        for bad in [
            "ftp://auth/",
            "file:///etc/passwd",
            "/relative",
            "https://$host/oauth2/auth",
            "http://user:pw@auth/",
            "gopher://auth:70/",
            "http://auth/#;load_module /x.so;",
        ] {
            assert!(ServiceUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
