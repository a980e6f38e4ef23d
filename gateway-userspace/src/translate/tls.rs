//! `spec.tls` to certificates by host: Secrets of the Ingress's own namespace holding
//! `tls.crt` and `tls.key`, checked to cover each host. A Secret that breaks keeps serving the
//! certificate it held before; one that never worked leaves its hosts on the default certificate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::IngressTLS;

use super::{HostPattern, IngressWarnings};
use crate::store::{Store, index};
use crate::tls::{Certificate, CertificateTable};

/// Builds the certificate table of one snapshot.
pub(super) struct TlsBuilder<'a> {
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    previous: &'a CertificateTable,
    now: SystemTime,
    table: CertificateTable,
    /// Secrets already loaded for this snapshot (`namespace/name`), with the problem if any.
    loaded: HashMap<String, Loaded>,
    /// Which Ingress set the certificate of each host.
    owners: HashMap<String, String>,
    /// Hosts listed under `spec.tls` of a served Ingress: they redirect to HTTPS and get HSTS.
    tls_hosts: HashSet<HostPattern>,
}

/// A Secret's certificate (possibly the one kept from before), and what is wrong with the
/// Secret, for the caller to say what follows from it.
type Loaded = (Option<Arc<Certificate>>, Option<String>);

impl<'a> TlsBuilder<'a> {
    pub fn new(store: &'a Store, previous: &'a CertificateTable, now: SystemTime) -> Self {
        let secrets = index(&store.secrets);
        Self {
            secrets,
            previous,
            now,
            table: CertificateTable::default(),
            loaded: HashMap::new(),
            owners: HashMap::new(),
            tls_hosts: HashSet::new(),
        }
    }

    /// Secret `namespace/name`, for the annotations that name one (`auth-secret`).
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.secrets.get(&(namespace, name)).copied()
    }

    /// Adds the `spec.tls` entries of one served Ingress. `rule_hosts` are its rules' hosts,
    /// used for an entry that lists no hosts.
    pub fn add_ingress(
        &mut self,
        namespace: &str,
        owner: &str,
        entries: &[IngressTLS],
        rule_hosts: &[HostPattern],
        warnings: &mut IngressWarnings<'_>,
    ) {
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("spec.tls[{i}]");
            let listed: Vec<(String, HostPattern)> = match &entry.hosts {
                Some(hosts) if !hosts.is_empty() => hosts
                    .iter()
                    .enumerate()
                    .filter_map(|(j, host)| match HostPattern::parse(Some(host)) {
                        Ok(HostPattern::Any) | Err(_) => {
                            warnings.add(
                                format!("{field}.hosts[{j}]"),
                                format!("{host:?} is not a DNS name or wildcard; ignored"),
                            );
                            None
                        }
                        Ok(pattern) => Some((format!("{field}.hosts[{j}]"), pattern)),
                    })
                    .collect(),
                _ => rule_hosts
                    .iter()
                    .filter(|p| **p != HostPattern::Any)
                    .map(|p| (format!("{field}.hosts"), p.clone()))
                    .collect(),
            };
            self.tls_hosts.extend(listed.iter().map(|(_, p)| p.clone()));

            // An entry without a Secret turns HTTPS on with the default certificate.
            let Some(secret_name) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let secret_field = format!("{field}.secretName");
            let name = match secret_name.split_once('/') {
                Some((other, _)) if other != namespace => {
                    warnings.add(
                        secret_field,
                        format!(
                            "{secret_name:?}: a Secret in another namespace is never used; the \
                             hosts get the default certificate"
                        ),
                    );
                    continue;
                }
                Some((_, name)) => name,
                None => secret_name,
            };
            let (certificate, problem) = self.load(namespace, name);
            if let Some(problem) = problem {
                let consequence = if certificate.is_some() {
                    "keeping the certificate it held before"
                } else {
                    "its hosts get the default certificate"
                };
                warnings.add(secret_field.clone(), format!("{problem}; {consequence}"));
            }
            let Some(certificate) = certificate else {
                continue;
            };
            for (host_field, pattern) in listed {
                let host = pattern.display();
                if !certificate.covers(&host) {
                    warnings.add(
                        host_field,
                        format!(
                            "the certificate of secret {namespace}/{name} does not cover {host} \
                             (it names {}); {host} gets the default certificate",
                            certificate.names.join(", ")
                        ),
                    );
                    continue;
                }
                match self.owners.get(&host) {
                    Some(other) if other != owner => warnings.add(
                        host_field,
                        format!(
                            "{host} already takes its certificate from the older ingress {other}; \
                             secret {namespace}/{name} is not used for it"
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        self.owners.insert(host.clone(), owner.to_string());
                        self.table.insert(&host, certificate.clone());
                    }
                }
            }
        }
    }

    /// Serves the certificate of Secret `namespace/name` for a Gateway listener: for its
    /// `hostname`, or for the names in the certificate when the listener has none. Hosts whose
    /// certificate an Ingress set keep it.
    pub fn add_listener(
        &mut self,
        namespace: &str,
        name: &str,
        hostname: Option<&str>,
    ) -> Result<(), String> {
        let (certificate, problem) = self.load(namespace, name);
        let Some(certificate) = certificate else {
            let problem = problem.unwrap_or_default();
            return Err(format!("{problem}; the listener is not served"));
        };
        let hosts = match hostname {
            Some(hostname) if !certificate.covers(hostname) => {
                return Err(format!(
                    "the certificate of secret {namespace}/{name} does not cover {hostname} (it \
                     names {})",
                    certificate.names.join(", ")
                ));
            }
            Some(hostname) => vec![hostname.to_string()],
            None => certificate.names.clone(),
        };
        for host in hosts {
            if !self.owners.contains_key(&host) {
                self.owners.insert(
                    host.clone(),
                    format!("gateway listener (secret {namespace}/{name})"),
                );
                self.table.insert(&host, certificate.clone());
            }
        }
        Ok(())
    }

    /// The certificate of Secret `namespace/name`, parsed once per snapshot and only when its
    /// content changed since the previous snapshot.
    fn load(&mut self, namespace: &str, name: &str) -> Loaded {
        let key = format!("{namespace}/{name}");
        if let Some(loaded) = self.loaded.get(&key) {
            return loaded.clone();
        }
        let loaded = match self.parse(namespace, name, &key) {
            Ok(certificate) => (Some(certificate), None),
            Err(reason) => {
                let kept = self
                    .previous
                    .by_secret
                    .get(&key)
                    .filter(|c| c.not_after >= unix_seconds(self.now))
                    .cloned();
                (kept, Some(format!("secret {key}: {reason}")))
            }
        };
        if let Some(certificate) = &loaded.0 {
            self.table
                .by_secret
                .insert(key.clone(), certificate.clone());
        }
        self.loaded.insert(key, loaded.clone());
        loaded
    }

    fn parse(&self, namespace: &str, name: &str, key: &str) -> Result<Arc<Certificate>, String> {
        let secret = self
            .secrets
            .get(&(namespace, name))
            .ok_or_else(|| "not found".to_string())?;
        if let Some(kind) = secret.type_.as_deref()
            && !matches!(kind, "kubernetes.io/tls" | "Opaque")
        {
            return Err(format!("type {kind} is not kubernetes.io/tls"));
        }
        let chain = secret_value(secret, "tls.crt").ok_or("has no tls.crt")?;
        let private_key = secret_value(secret, "tls.key").ok_or("has no tls.key")?;
        if let Some(previous) = self.previous.by_secret.get(key)
            && previous.is_from(&chain, &private_key)
            && previous.not_after >= unix_seconds(self.now)
        {
            return Ok(previous.clone());
        }
        Certificate::from_pem(&chain, &private_key, self.now).map(Arc::new)
    }

    /// The finished table, and the hosts that have TLS.
    pub fn finish(self) -> (CertificateTable, HashSet<HostPattern>) {
        (self.table, self.tls_hosts)
    }
}

/// A Secret value from `data` (base64 in the API, decoded by the client) or `stringData`
/// (which a manifest may use; the API server would fold it into `data`).
pub(super) fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(value) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(value.as_bytes().to_vec());
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
