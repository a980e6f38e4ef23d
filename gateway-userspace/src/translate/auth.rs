//! `auth-type: basic`: the users of an Ingress's htpasswd Secret, as `auth-file` (key `auth`)
//! or `auth-map` (a key per user). The Secret must be in the Ingress's own namespace.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::annotations::BasicAuthSpec;
use super::tls::secret_value;
use crate::policy::auth::BasicAuth;
use crate::policy::auth::basic::{htpasswd, user_entry};

/// The users of `spec`'s Secret; `previous` (the same Ingress's, from the snapshot served until
/// now) is kept when nothing changed, with the credentials it verified.
pub(super) fn basic_auth<'s>(
    spec: &BasicAuthSpec,
    namespace: &str,
    lookup: impl Fn(&str) -> Option<&'s Secret>,
    previous: Option<&Arc<BasicAuth>>,
) -> Result<Arc<BasicAuth>, String> {
    let name = match spec.secret.split_once('/') {
        Some((other, _)) if other != namespace => {
            return Err(format!(
                "{:?}: a Secret in another namespace is never used (it would let an Ingress \
                 read credentials it does not own)",
                spec.secret
            ));
        }
        Some((_, name)) => name,
        None => spec.secret.as_str(),
    };
    let secret = lookup(name).ok_or_else(|| format!("secret {namespace}/{name} not found"))?;
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

fn keys(secret: &Secret) -> std::collections::BTreeSet<String> {
    let data = secret.data.iter().flat_map(|d| d.keys());
    let string_data = secret.string_data.iter().flat_map(|d| d.keys());
    data.chain(string_data).cloned().collect()
}

fn text(secret: &Secret, key: &str) -> Result<String, String> {
    let bytes = secret_value(secret, key).ok_or_else(|| format!("has no key {key:?}"))?;
    String::from_utf8(bytes).map_err(|_| format!("key {key:?} is not UTF-8 text"))
}
