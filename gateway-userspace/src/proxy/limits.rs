//! What one client may take from the gateway: how long it may be slow or idle, how large its
//! request head may be, and how many connections it and everyone together may hold.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::observe::metrics::Metrics;

/// Client-facing timeouts and limits. The defaults are nginx's.
#[derive(Clone, Debug)]
pub struct ClientLimits {
    /// From the first byte of a request head (or the connection's start) to its end
    /// (nginx `client_header_timeout`).
    pub header_timeout: Duration,
    /// Between a response's end and the next request's first byte; HTTP/2 connections with no
    /// open stream (nginx `keepalive_timeout`).
    pub keepalive_timeout: Duration,
    /// Between two reads of a request body (nginx `client_body_timeout`).
    pub body_timeout: Duration,
    /// TLS handshakes that take longer are dropped.
    pub handshake_timeout: Duration,
    /// HTTP/2 PING interval; a peer that does not answer within the same time is dropped.
    pub http2_ping_interval: Duration,
    /// Streams one HTTP/2 connection may have open (nginx `http2_max_concurrent_streams`).
    pub http2_max_streams: u32,
    /// Request target, and each header line, at most this long (nginx's
    /// `large_client_header_buffers` size): 414 and 431.
    pub max_line: usize,
    /// The whole request head (nginx's 4 x 8 KB): 431.
    pub max_head: usize,
    /// Header fields in one request: 431.
    pub max_headers: usize,
    /// Connections held at once, all clients together (0: no limit).
    pub max_connections: usize,
    /// Connections held at once by one source address (0: no limit).
    pub max_connections_per_source: usize,
    /// TLS handshakes in progress at once; later connections wait for a turn.
    pub max_tls_handshakes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            http2_ping_interval: Duration::from_secs(30),
            http2_max_streams: 128,
            max_line: 8 * 1024,
            max_head: 32 * 1024,
            max_headers: 100,
            max_connections: 65_536,
            max_connections_per_source: 0,
            max_tls_handshakes: 1024,
        }
    }
}

/// Counts connections against `--max-connections` and `--max-connections-per-source`.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    per_source_limit: usize,
    open: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooManyFromSource,
}

impl Refusal {
    /// The label of the refusals counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "max_connections",
            Refusal::TooManyFromSource => "max_connections_per_source",
        }
    }
}

/// One admitted connection; dropping it gives its places back.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    source: Option<IpAddr>,
}

/// An accepted client connection's places, under the connection limits and in the
/// open-connections gauge, given back when it closes: in its task, or in the parking lot.
#[derive(Debug)]
pub struct OpenConnection {
    _admitted: Admitted,
    active: Gauge,
}

impl OpenConnection {
    pub fn new(admitted: Admitted, active: Gauge) -> Self {
        active.inc();
        Self {
            _admitted: admitted,
            active,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.active.dec();
    }
}

impl Admission {
    pub fn new(limits: &ClientLimits) -> Arc<Self> {
        Arc::new(Self {
            limit: limits.max_connections,
            per_source_limit: limits.max_connections_per_source,
            open: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a connection from `client`, or counts its refusal in `refused` under the limit
    /// it was over (and logs it at debug level).
    pub fn admit_counted(
        self: &Arc<Self>,
        client: std::net::SocketAddr,
        refused: &Family<[(&'static str, &'static str); 1], Counter>,
    ) -> Option<Admitted> {
        self.admit(client.ip())
            .inspect_err(|refusal| {
                Metrics::labelled(refused, "limit", refusal.as_str()).inc();
                tracing::debug!(%client, limit = refusal.as_str(), "connection refused");
            })
            .ok()
    }

    /// Takes a place for a connection from `source`, or says which limit it is over.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Refusal> {
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        let mut admitted = Admitted {
            admission: self.clone(),
            source: None,
        };
        if self.limit != 0 && open >= self.limit {
            return Err(Refusal::TooManyConnections);
        }
        if self.per_source_limit != 0 {
            let mut per_source = self.lock();
            let count = per_source.entry(source).or_default();
            if *count >= self.per_source_limit {
                return Err(Refusal::TooManyFromSource);
            }
            *count += 1;
            admitted.source = Some(source);
        }
        Ok(admitted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map holds only counts; one a panicking thread left is still right.
        self.per_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(source) = self.source {
            let mut per_source = self.admission.lock();
            if let Some(count) = per_source.get_mut(&source) {
                *count -= 1;
                if *count == 0 {
                    per_source.remove(&source);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_source: usize) -> Arc<Admission> {
        Admission::new(&ClientLimits {
            max_connections: total,
            max_connections_per_source: per_source,
            ..ClientLimits::default()
        })
    }

    #[test]
    fn places_are_given_back_when_connections_end() {
        let admission = admission(2, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::TooManyConnections);
        drop(first);
        assert!(admission.admit(a).is_ok());
    }

    #[test]
    fn one_source_cannot_take_the_places_of_others() {
        let admission = admission(0, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let held: Vec<_> = (0..2).map(|_| admission.admit(a).unwrap()).collect();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::TooManyFromSource);
        assert!(admission.admit(b).is_ok());
        drop(held);
        assert!(admission.admit(a).is_ok());
        assert!(admission.lock().is_empty());
    }
}
