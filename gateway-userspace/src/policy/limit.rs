//! `limit-rps`, `limit-rpm` and `limit-connections`, per client address and per Ingress (as
//! ingress-nginx's zones): token buckets whose burst is the rate times
//! `limit-burst-multiplier` (5), without delaying (nginx's `nodelay`), and a count of requests
//! in progress. Clients in `limit-whitelist` are not limited.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::cidr::Cidr;

const SHARDS: usize = 16;
/// Past this many clients in a shard, idle ones are forgotten.
const PRUNE_ABOVE: usize = 4096;

/// A rate: `per_second` tokens a second, at most `burst` saved up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// The limits of one Ingress and the state of every client it has seen.
#[derive(Debug)]
pub struct Limits {
    per_second: Option<Rate>,
    per_minute: Option<Rate>,
    connections: Option<u32>,
    exempt: Vec<Cidr>,
    hasher: RandomState,
    shards: [Mutex<HashMap<IpAddr, Client>>; SHARDS],
}

#[derive(Debug)]
struct Client {
    second: f64,
    minute: f64,
    refilled: Instant,
    active: u32,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Rate,
    Connections,
}

/// A request in progress, counted against `limit-connections` until dropped.
pub struct InProgress {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut shard = self.limits.shard(self.client);
        if let Some(state) = shard.get_mut(&self.client) {
            state.active = state.active.saturating_sub(1);
        }
    }
}

impl Limits {
    pub fn new(
        per_second: Option<Rate>,
        per_minute: Option<Rate>,
        connections: Option<u32>,
        exempt: Vec<Cidr>,
    ) -> Self {
        Self {
            per_second,
            per_minute,
            connections,
            exempt,
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }

    /// Whether `other` limits the same way (then its clients' state can carry over).
    pub fn same_limits(&self, other: &Limits) -> bool {
        self.per_second == other.per_second
            && self.per_minute == other.per_minute
            && self.connections == other.connections
            && self.exempt == other.exempt
    }

    /// The limits in words, for `gateway explain` (`client` is exempt when listed).
    pub fn describe(&self, client: Option<IpAddr>) -> String {
        if let Some(client) = client
            && let Some(exempt) = self.exempt.iter().find(|c| c.contains(client))
        {
            return format!("{client} is exempt (limit-whitelist {exempt})");
        }
        let mut parts = Vec::new();
        if let Some(rate) = self.per_second {
            parts.push(format!(
                "{} requests/s, burst {}",
                rate.per_second, rate.burst
            ));
        }
        if let Some(rate) = self.per_minute {
            let per_minute = rate.per_second * 60.0;
            parts.push(format!(
                "{per_minute:.0} requests/min, burst {}",
                rate.burst
            ));
        }
        if let Some(connections) = self.connections {
            parts.push(format!("{connections} requests in progress"));
        }
        format!("per client address: {}; beyond them 503", parts.join(", "))
    }

    fn shard(&self, client: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Client>> {
        let index = self.hasher.hash_one(client) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request of `client` now, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Option<InProgress>, Refused> {
        if self.exempt.iter().any(|c| c.contains(client)) {
            return Ok(None);
        }
        let now = Instant::now();
        let mut shard = self.shard(client);
        if shard.len() > PRUNE_ABOVE {
            shard.retain(|_, c| c.active > 0 || now.duration_since(c.refilled).as_secs() < 60);
        }
        let state = shard.entry(client).or_insert_with(|| Client {
            second: self.per_second.map_or(0.0, |r| r.burst),
            minute: self.per_minute.map_or(0.0, |r| r.burst),
            refilled: now,
            active: 0,
        });
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.refilled = now;
        let refill = |tokens: &mut f64, rate: Option<Rate>| {
            if let Some(rate) = rate {
                *tokens = (*tokens + elapsed * rate.per_second).min(rate.burst);
            }
        };
        refill(&mut state.second, self.per_second);
        refill(&mut state.minute, self.per_minute);
        let has = |tokens: f64, rate: Option<Rate>| rate.is_none() || tokens >= 1.0;
        if !has(state.second, self.per_second) || !has(state.minute, self.per_minute) {
            return Err(Refused::Rate);
        }
        if self.connections.is_some_and(|max| state.active >= max) {
            return Err(Refused::Connections);
        }
        state.second -= 1.0;
        state.minute -= 1.0;
        if self.connections.is_none() {
            return Ok(None);
        }
        state.active += 1;
        Ok(Some(InProgress {
            limits: self.clone(),
            client,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_burst_is_admitted_then_refused_per_client() {
        let rate = Rate {
            per_second: 1.0,
            burst: 5.0,
        };
        let limits = Arc::new(Limits::new(Some(rate), None, None, vec![]));
        let admitted = (0..20).filter(|_| limits.admit(A).is_ok()).count();
        assert_eq!(admitted, 5);
        assert_eq!(limits.admit(A).err(), Some(Refused::Rate));
        assert!(limits.admit(B).is_ok(), "another client has its own bucket");
    }

    #[test]
    fn requests_in_progress_are_capped_and_released() {
        let limits = Arc::new(Limits::new(None, None, Some(2), vec![]));
        let first = limits.admit(A).unwrap();
        let second = limits.admit(A).unwrap();
        assert_eq!(limits.admit(A).err(), Some(Refused::Connections));
        drop(first);
        assert!(limits.admit(A).is_ok());
        drop(second);
    }

    #[test]
    fn same_limits_compare_settings_not_state() {
        let rate = Some(Rate {
            per_second: 2.0,
            burst: 10.0,
        });
        let a = Arc::new(Limits::new(rate, None, None, vec![]));
        let _ = a.admit(A);
        assert!(a.same_limits(&Limits::new(rate, None, None, vec![])));
        assert!(!a.same_limits(&Limits::new(rate, None, Some(1), vec![])));
    }

    #[test]
    fn exempt_clients_are_not_limited() {
        let rate = Rate {
            per_second: 1.0,
            burst: 1.0,
        };
        let exempt = vec!["10.0.0.0/24".parse().unwrap()];
        let limits = Arc::new(Limits::new(Some(rate), None, None, exempt));
        assert!((0..10).all(|_| limits.admit(A).is_ok()));
    }
}
