//! The Secrets annotations name, which must be in the Ingress's own namespace: `auth-type:
//! basic` (the users of an htpasswd Secret, as `auth-file`, key `auth`, or `auth-map`, a key
//! per user), `auth-tls-secret` (`ca.crt`, and `ca.crl` if present) and `proxy-ssl-secret`
//! (`ca.crt` to verify backends with, `tls.crt` and `tls.key` to present to them).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::IngressWarnings;
use super::annotations::{self, Annotations, BackendTlsSpec, BasicAuthSpec, ClientAuthSpec};
use super::tls::secret_value;
use crate::policy::RoutePolicy;
use crate::policy::auth::BasicAuth;
use crate::policy::auth::basic::{htpasswd, user_entry};
use crate::tls::backend::{BackendTls, BackendTlsSettings};
use crate::tls::client_auth::ClientAuth;

/// Reads the Secrets `annotations` name into their policy (with what `previous`, the same
/// Ingress's policy in the last snapshot, and `previous_client_auth` hold, where unchanged).
/// A Secret that cannot be used closes the Ingress's routes with a warning. Returns the client
/// certificate rules for the Ingress's hosts.
pub(super) fn read<'s>(
    annotations: &mut Annotations,
    (namespace, lookup): (&str, impl Fn(&str) -> Option<&'s Secret> + Copy),
    (previous, previous_client_auth): (Option<&RoutePolicy>, &[Arc<ClientAuth>]),
    warnings: &mut IngressWarnings<'_>,
) -> Option<Arc<ClientAuth>> {
    let policy = &mut annotations.policy;
    if let Some(spec) = &annotations.basic_auth {
        let kept = previous.and_then(|p| p.basic_auth.as_ref());
        let users = basic_auth(spec, namespace, lookup, kept);
        policy.basic_auth = usable(users, "auth-secret", policy, warnings);
    }
    if let Some(spec) = &annotations.backend_tls {
        let kept = previous.and_then(|p| p.backend_tls.as_ref());
        let tls = backend_tls(spec, namespace, lookup, kept);
        policy.backend_tls = usable(tls, "proxy-ssl-secret", policy, warnings);
    }
    let spec = annotations.client_auth.as_ref()?;
    let rules = client_auth(spec, namespace, lookup, previous_client_auth);
    usable(rules, "auth-tls-secret", policy, warnings)
}

/// The value, or `None` with the route closed and a warning on `annotation`.
fn usable<T>(
    result: Result<T, String>,
    annotation: &str,
    policy: &mut RoutePolicy,
    warnings: &mut IngressWarnings<'_>,
) -> Option<T> {
    result
        .map_err(|reason| {
            let message = format!("{reason}; {}", annotations::CLOSED);
            warnings.add(annotations::field(annotation), message);
            policy.closed.get_or_insert(reason.into());
        })
        .ok()
}

/// The users of `spec`'s Secret; `previous` (the same Ingress's, from the snapshot served until
/// now) is kept when nothing changed, with the credentials it verified.
fn basic_auth<'s>(
    spec: &BasicAuthSpec,
    namespace: &str,
    lookup: impl Fn(&str) -> Option<&'s Secret>,
    previous: Option<&Arc<BasicAuth>>,
) -> Result<Arc<BasicAuth>, String> {
    let (name, secret) = own_secret(&spec.secret, namespace, lookup)?;
    let in_secret = |e: String| format!("secret {namespace}/{name}: {e}");
    let users = if spec.map {
        let mut users = HashMap::new();
        for key in keys(secret) {
            let hash = text(secret, &key).map_err(in_secret)?;
            user_entry(&key, &hash, &mut users).map_err(in_secret)?;
        }
        users
    } else {
        htpasswd(&text(secret, "auth").map_err(in_secret)?).map_err(in_secret)?
    };
    let auth = BasicAuth::new(&spec.realm, users).map_err(in_secret)?;
    Ok(match previous {
        Some(previous) if previous.same_as(&auth) => previous.clone(),
        _ => Arc::new(auth),
    })
}

/// The client certificate rules of `spec`; one of `previous` (the last snapshot's) is kept when
/// it verifies the same way, with its handshake configuration.
fn client_auth<'s>(
    spec: &ClientAuthSpec,
    namespace: &str,
    lookup: impl Fn(&str) -> Option<&'s Secret>,
    previous: &[Arc<ClientAuth>],
) -> Result<Arc<ClientAuth>, String> {
    let (name, secret) = own_secret(&spec.secret, namespace, lookup)?;
    let in_secret = |e: String| format!("secret {namespace}/{name}: {e}");
    let ca =
        secret_value(secret, "ca.crt").ok_or_else(|| in_secret("has no key \"ca.crt\"".into()))?;
    let crl = secret_value(secret, "ca.crl");
    let mut auth =
        ClientAuth::new(&ca, crl.as_deref(), spec.mode, spec.depth).map_err(in_secret)?;
    auth.pass_certificate = spec.pass_certificate;
    auth.error_page = spec.error_page.clone();
    auth.match_cn = spec.match_cn.clone();
    Ok(match previous.iter().find(|p| p.same_as(&auth)) {
        Some(previous) => previous.clone(),
        None => Arc::new(auth),
    })
}

/// The backend TLS configuration of `spec`; `previous` (the same Ingress's, from the last
/// snapshot) is kept when made from the same settings, and with it its pooled connections.
fn backend_tls<'s>(
    spec: &BackendTlsSpec,
    namespace: &str,
    lookup: impl Fn(&str) -> Option<&'s Secret>,
    previous: Option<&Arc<BackendTls>>,
) -> Result<Arc<BackendTls>, String> {
    let mut settings = BackendTlsSettings {
        name: spec.name.clone(),
        send_server_name: spec.send_server_name,
        tls12: spec.tls12,
        tls13: spec.tls13,
        ..BackendTlsSettings::default()
    };
    if let Some(reference) = &spec.secret {
        let (name, secret) = own_secret(reference, namespace, lookup)?;
        let in_secret = |e: &str| format!("secret {namespace}/{name}: {e}");
        if spec.verify {
            settings.verify_with = Some(
                secret_value(secret, "ca.crt").ok_or_else(|| in_secret("has no key \"ca.crt\""))?,
            );
        }
        settings.client_certificate = match (
            secret_value(secret, "tls.crt"),
            secret_value(secret, "tls.key"),
        ) {
            (Some(chain), Some(key)) => Some((chain, key)),
            (None, None) => None,
            _ => {
                return Err(in_secret(
                    "has one of tls.crt and tls.key without the other",
                ));
            }
        };
    }
    if let Some(previous) = previous.filter(|p| p.is_from(&settings)) {
        return Ok(previous.clone());
    }
    let in_secret = |e: String| match &spec.secret {
        Some(reference) => format!("secret {reference}: {e}"),
        None => e,
    };
    BackendTls::new(settings).map(Arc::new).map_err(in_secret)
}

/// The Secret `reference` (`NAME` or `NAMESPACE/NAME`) names, which must be of `namespace`.
fn own_secret<'r, 's>(
    reference: &'r str,
    namespace: &str,
    lookup: impl Fn(&str) -> Option<&'s Secret>,
) -> Result<(&'r str, &'s Secret), String> {
    let name = match reference.split_once('/') {
        Some((other, _)) if other != namespace => {
            return Err(format!(
                "{reference:?}: a Secret in another namespace is never used (it would let an \
                 Ingress read credentials it does not own)"
            ));
        }
        Some((_, name)) => name,
        None => reference,
    };
    let secret = lookup(name).ok_or_else(|| format!("secret {namespace}/{name} not found"))?;
    Ok((name, secret))
}

fn keys(secret: &Secret) -> std::collections::BTreeSet<String> {
    let data = secret.data.iter().flat_map(|d| d.keys());
    let string_data = secret.string_data.iter().flat_map(|d| d.keys());
    data.chain(string_data).cloned().collect()
}

fn text(secret: &Secret, key: &str) -> Result<String, String> {
    let bytes = secret_value(secret, key).ok_or_else(|| format!("has no key {key:?}"))?;
    String::from_utf8(bytes).map_err(|_| format!("key {key:?} is not UTF-8 text"))
}
