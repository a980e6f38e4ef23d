//! Names of services outside the route table (`auth-url`, `mirror-target`), resolved with
//! the system resolver (in a pod, the cluster's DNS) and cached briefly, as nginx's `resolver
//! ... valid=30s`. An address is used as it is.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;

use super::upstream::Target;
use crate::policy::Protocol;
use crate::policy::service_url::ServiceUrl;

/// How long an answer is used.
const VALID_FOR: Duration = Duration::from_secs(30);
/// How long a lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Names cached at most (the annotations name a handful).
const MAX_NAMES: usize = 1024;

/// The addresses of a name and port, and when they were looked up.
type Answer = (Vec<SocketAddr>, Instant);

#[derive(Default)]
pub struct Resolver {
    cache: Mutex<HashMap<(String, u16), Answer>>,
}

impl Resolver {
    /// Where a request to `url` goes: one of its host's addresses, TLS for `https`.
    pub async fn target(
        &self,
        url: &ServiceUrl,
        connect_timeout: Duration,
    ) -> Result<Target, String> {
        Ok(Target {
            endpoint: self.resolve(&url.host, url.port).await?,
            protocol: if url.https {
                Protocol::Https
            } else {
                Protocol::Http
            },
            server_name: url
                .https
                .then(|| ServerName::try_from(url.host.clone()).ok())
                .flatten(),
            tls: None,
            connect_timeout,
        })
    }

    /// One address of `host:port`, picked at random among the answers.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_string(), port);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(&key)
                .filter(|(_, at)| at.elapsed() < VALID_FOR)
                .map(|(addresses, _)| addresses.clone())
        };
        let addresses = match cached {
            Some(addresses) => addresses,
            None => {
                let found: Vec<SocketAddr> =
                    tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port)))
                        .await
                        .map_err(|_| format!("resolving {host} timed out"))?
                        .map_err(|e| format!("cannot resolve {host}: {e}"))?
                        .collect();
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= MAX_NAMES {
                    cache.retain(|_, (_, at)| at.elapsed() < VALID_FOR);
                }
                if cache.len() < MAX_NAMES && !found.is_empty() {
                    cache.insert(key, (found.clone(), Instant::now()));
                }
                found
            }
        };
        let count = addresses.len() as u64;
        (count > 0)
            .then(|| addresses[crate::random::below(count) as usize])
            .ok_or_else(|| format!("{host} has no address"))
    }
}
