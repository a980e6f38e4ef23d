//! ingress-nginx annotations, parsed strictly into typed values: a value that does not parse is
//! a warning naming the annotation, and the annotation is ignored.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::IngressWarnings;
use crate::cidr::Cidr;

/// The prefix of every ingress-nginx annotation.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// What the annotations of one Ingress ask for.
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    /// `ssl-redirect`: redirect plain HTTP to HTTPS for TLS hosts (default true).
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`: redirect even hosts without a TLS entry.
    pub force_ssl_redirect: bool,
    /// `whitelist-source-range`: the only client ranges allowed.
    pub whitelist_source_range: Option<Vec<Cidr>>,
}

impl Annotations {
    /// Parses the annotations of `meta`.
    pub fn parse(meta: &ObjectMeta, warnings: &mut IngressWarnings<'_>) -> Self {
        let mut parsed = Self::default();
        let Some(all) = &meta.annotations else {
            return parsed;
        };
        for (key, value) in all {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            let field = format!("metadata.annotations[{key:?}]");
            match name {
                "ssl-redirect" => parsed.ssl_redirect = boolean(value, &field, warnings),
                "force-ssl-redirect" => {
                    parsed.force_ssl_redirect = boolean(value, &field, warnings).unwrap_or(false);
                }
                "whitelist-source-range" => match Cidr::parse_list(value) {
                    Ok(list) if !list.is_empty() => parsed.whitelist_source_range = Some(list),
                    Ok(_) => warnings.add(field, "empty list; annotation ignored"),
                    Err(reason) => warnings.add(field, format!("{reason}; annotation ignored")),
                },
                _ => {}
            }
        }
        parsed
    }
}

fn boolean(value: &str, field: &str, warnings: &mut IngressWarnings<'_>) -> Option<bool> {
    match value {
        "true" => Some(true),
        "false" => Some(false),
        other => {
            warnings.add(
                field,
                format!("{other:?}: must be \"true\" or \"false\"; annotation ignored"),
            );
            None
        }
    }
}
