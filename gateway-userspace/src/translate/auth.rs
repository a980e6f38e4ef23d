//! The Secrets of the authentication annotations, which must be in the Ingress's own namespace:
//! `auth-type: basic` (the users of an htpasswd Secret, as `auth-file`, key `auth`, or
//! `auth-map`, a key per user) and `auth-tls-secret` (`ca.crt`, and `ca.crl` if present).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::annotations::{BasicAuthSpec, ClientAuthSpec};
use super::tls::secret_value;
use crate::policy::auth::BasicAuth;
use crate::policy::auth::basic::{htpasswd, user_entry};
use crate::tls::client_auth::ClientAuth;

/// The users of `spec`'s Secret; `previous` (the same Ingress's, from the snapshot served until
/// now) is kept when nothing changed, with the credentials it verified.
pub(super) fn basic_auth<'s>(
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
pub(super) fn client_auth<'s>(
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
