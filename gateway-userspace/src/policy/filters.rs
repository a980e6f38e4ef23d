//! Gateway API filters, typed once per snapshot: header edits on the request and on the
//! response, redirects computed from the request, and path rewrites of the matched prefix or
//! the whole path.

use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// `RequestHeaderModifier` / `ResponseHeaderModifier`: headers set (replacing), added
/// (appending) and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
    /// Edits made after these (a backendRef's, after its rule's).
    pub then: Option<Box<HeaderEdits>>,
}

impl HeaderEdits {
    /// `first`'s edits, then `second`'s.
    pub fn then(first: &Option<Self>, second: &Option<Self>) -> Option<Self> {
        match (first, second) {
            (Some(first), Some(second)) => Some(Self {
                then: Some(Box::new(second.clone())),
                ..first.clone()
            }),
            (one, other) => one.clone().or_else(|| other.clone()),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
        if let Some(next) = &self.then {
            next.apply(headers);
        }
    }
}

/// How a path is rewritten (by a redirect or a URL rewrite).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRewrite {
    /// `ReplaceFullPath`.
    Full(String),
    /// `ReplacePrefixMatch`: the rule's matched prefix (without a trailing slash) is replaced.
    Prefix { matched: String, with: String },
}

impl PathRewrite {
    /// The rewritten path of `path` (which the rule's prefix matched).
    pub fn apply(&self, path: &str) -> String {
        match self {
            Self::Full(full) => full.clone(),
            Self::Prefix { matched, with } => {
                // Below the root prefix, the whole path is what follows it.
                let rest = match matched.as_str() {
                    "/" => path,
                    matched => path.strip_prefix(matched).unwrap_or(path),
                };
                let with = with.trim_end_matches('/');
                match (with.is_empty(), rest.is_empty()) {
                    (true, true) => "/".to_string(),
                    (true, false) => rest.to_string(),
                    (false, _) => format!("{with}{rest}"),
                }
            }
        }
    }
}

/// `RequestRedirect`: what the Location keeps from the request and what it replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectRule {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    pub status: StatusCode,
}

impl RedirectRule {
    /// The Location for a request with this scheme, host (without port), listener port, path
    /// and query. The port follows the specification: the one given, else the scheme's
    /// well-known port when the scheme changes, else the listener's; well-known ports are
    /// left out.
    pub fn location(
        &self,
        scheme: &str,
        host: &str,
        listener_port: u16,
        path: &str,
        query: Option<&str>,
    ) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let well_known = |scheme: &str| if scheme == "https" { 443 } else { 80 };
        let port = match (self.port, &self.scheme) {
            (Some(port), _) => port,
            (None, Some(scheme)) => well_known(scheme),
            (None, None) => listener_port,
        };
        let host = self.hostname.as_deref().unwrap_or(host);
        let port = if port == well_known(scheme) {
            String::new()
        } else {
            format!(":{port}")
        };
        let path = match &self.path {
            Some(rewrite) => rewrite.apply(path),
            None => path.to_string(),
        };
        match query {
            Some(query) => format!("{scheme}://{host}{port}{path}?{query}"),
            None => format!("{scheme}://{host}{port}{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(matched: &str, with: &str) -> PathRewrite {
        PathRewrite::Prefix {
            matched: matched.into(),
            with: with.into(),
        }
    }

    #[test]
    fn prefix_rewrites_keep_what_follows_the_match() {
        // The cases of the Gateway API conformance tests (HTTPRouteRewritePath).
        assert_eq!(
            prefix("/prefix/one", "/one").apply("/prefix/one/two"),
            "/one/two"
        );
        assert_eq!(
            prefix("/strip-prefix", "/").apply("/strip-prefix/three"),
            "/three"
        );
        assert_eq!(prefix("/strip-prefix", "/").apply("/strip-prefix"), "/");
        assert_eq!(
            prefix("/prefix", "/replacement").apply("/prefix"),
            "/replacement"
        );
        assert_eq!(
            prefix("/prefix", "/replacement/").apply("/prefix/x"),
            "/replacement/x"
        );
        assert_eq!(prefix("/", "/api").apply("/users"), "/api/users");
        assert_eq!(
            PathRewrite::Full("/one".into()).apply("/full/path?"),
            "/one"
        );
    }

    #[test]
    fn redirect_ports_follow_the_scheme_or_the_listener() {
        let rule = |scheme: Option<&str>, port: Option<u16>| RedirectRule {
            scheme: scheme.map(String::from),
            hostname: Some("example.org".into()),
            port,
            path: None,
            status: StatusCode::FOUND,
        };
        assert_eq!(
            rule(Some("https"), None).location("http", "a.test", 8080, "/x", Some("q=1")),
            "https://example.org/x?q=1"
        );
        assert_eq!(
            rule(None, None).location("http", "a.test", 8080, "/x", None),
            "http://example.org:8080/x"
        );
        assert_eq!(
            rule(None, Some(80)).location("http", "a.test", 8080, "/", None),
            "http://example.org/"
        );
        assert_eq!(
            rule(Some("https"), Some(8443)).location("http", "a.test", 80, "/", None),
            "https://example.org:8443/"
        );
    }

    #[test]
    fn header_edits_set_add_and_remove() {
        let name = |n: &'static str| HeaderName::from_static(n);
        let value = |v: &'static str| HeaderValue::from_static(v);
        let edits = HeaderEdits {
            set: vec![(name("x-set"), value("new"))],
            add: vec![(name("x-add"), value("2"))],
            remove: vec![name("x-gone")],
            then: None,
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-set", value("old"));
        headers.insert("x-add", value("1"));
        headers.insert("x-gone", value("bye"));
        edits.apply(&mut headers);
        assert_eq!(headers["x-set"], "new");
        let added: Vec<_> = headers.get_all("x-add").iter().collect();
        assert_eq!(added, [value("1"), value("2")]);
        assert!(!headers.contains_key("x-gone"));
    }
}
