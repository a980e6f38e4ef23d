//! Request mirroring (Gateway API's `RequestMirror`, ingress-nginx's `mirror-target`): a copy of
//! a share of a route's requests goes elsewhere, and its answer is thrown away.

use std::sync::Arc;

use hyper::header::HeaderValue;

use super::service_url::ServiceUrl;
use super::template::Template;
use crate::snapshot::Backend;

/// Where copies go, and which share of the requests is copied.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub to: MirrorTo,
    /// `numerator / denominator` of the requests (`percent` is `n / 100`).
    pub numerator: u32,
    pub denominator: u32,
    /// Whether the copies carry the request's body (`mirror-request-body`, on by default).
    pub body: bool,
}

#[derive(Clone, Debug)]
pub enum MirrorTo {
    /// A backend of the route table (Gateway API's `backendRef`).
    Backend(Arc<Backend>),
    /// `mirror-target`: a URL, its path made from the request (`/$request_uri`).
    Url {
        url: ServiceUrl,
        path: Template,
        /// The copies' Host header (`mirror-host`, else the URL's host).
        host: HeaderValue,
    },
}

impl Mirror {
    /// `mirror-target` (`https://test.env.com$request_uri`): every request is copied.
    pub fn target(text: &str, host: Option<HeaderValue>, body: bool) -> Result<Self, String> {
        if text.contains(|c: char| c.is_whitespace() || "#\"<>\\^`|".contains(c)) {
            return Err("is not a valid URL (no spaces, #, quotes, <>, \\, ^, ` or |)".into());
        }
        let scheme_end = text.find("://").map_or(0, |i| i + 3);
        // The path starts at `/`, `?` or a variable after the host (`https://host$request_uri`);
        // a variable in the host's place is left for ServiceUrl to refuse.
        let host_end = text[scheme_end..]
            .find(['/', '?'])
            .map_or(text.len(), |i| scheme_end + i);
        let path_start = text[scheme_end..host_end]
            .find('$')
            .filter(|i| *i > 0)
            .map_or(host_end, |i| scheme_end + i);
        let url = ServiceUrl::parse(&text[..path_start])?;
        let path = match &text[path_start..] {
            "" => "$request_uri",
            path => path,
        };
        Ok(Self {
            to: MirrorTo::Url {
                host: host.unwrap_or_else(|| url.authority.clone()),
                url,
                path: Template::parse(path)?,
            },
            numerator: 1,
            denominator: 1,
            body,
        })
    }
}

impl Mirror {
    /// Whether this request is one of the share that is copied.
    pub fn chosen(&self) -> bool {
        self.numerator >= self.denominator
            || crate::random::below(u64::from(self.denominator)) < u64::from(self.numerator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_copied_follows_the_fraction() {
        let backend = Arc::new(Backend::new("ns", "mirror", "80", Vec::new()));
        let share = |numerator, denominator| {
            let mirror = Mirror {
                to: MirrorTo::Backend(backend.clone()),
                numerator,
                denominator,
                body: true,
            };
            (0..10_000).filter(|_| mirror.chosen()).count()
        };
        assert_eq!(share(1, 1), 10_000);
        assert_eq!(share(0, 100), 0);
        let half = share(50, 100);
        assert!((4_500..5_500).contains(&half), "{half}");
    }

    #[test]
    fn mirror_targets_are_a_service_url_and_a_path_made_from_the_request() {
        let mirror = Mirror::target("https://test.env.com/$request_uri", None, true).unwrap();
        let MirrorTo::Url { url, path, host } = &mirror.to else {
            panic!("{mirror:?}")
        };
        assert_eq!(
            (url.https, url.host.as_str(), host.to_str().unwrap()),
            (true, "test.env.com", "test.env.com")
        );
        assert!(!path.is_literal());
        let mirror = Mirror::target(
            "http://10.0.0.9:8080",
            Some(HeaderValue::from_static("shadow")),
            false,
        )
        .unwrap();
        assert!(
            matches!(&mirror.to, MirrorTo::Url { url, host, .. } if url.port == 8080 && host == "shadow")
        );
        let mirror = Mirror::target("https://test.env.com$request_uri", None, true).unwrap();
        assert!(matches!(&mirror.to, MirrorTo::Url { url, .. } if url.host == "test.env.com"));
        for bad in [
            "ftp://x/",
            "http://$host/",
            "http://a/$nonsense",
            "/path",
            "http://x/; } load_module /x.so; #",
        ] {
            assert!(Mirror::target(bad, None, true).is_err(), "{bad}");
        }
    }
}
