//! Which endpoint of a backend serves a request: round robin (the default), `load-balance:
//! ewma` (power of two choices over a moving average of latency), `upstream-hash-by`
//! (consistent hashing of a request variable) and `affinity: cookie` (sticky sessions).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::header::{self, HeaderMap, HeaderValue};

pub use super::template::RequestView;
use super::template::Template;
use crate::snapshot::Backend;

/// Points per endpoint on the hash ring: enough for an even spread over a few endpoints.
const RING_POINTS: usize = 160;
/// How fast the latency average forgets (ingress-nginx's EWMA decay time).
const EWMA_DECAY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    #[default]
    RoundRobin,
    Ewma,
    Hash(Template),
    Cookie(Affinity),
}

/// The chosen endpoint and, for cookie affinity, the cookie that keeps the client on it.
pub struct Pick {
    pub endpoint: SocketAddr,
    pub set_cookie: Option<HeaderValue>,
}

impl Balance {
    /// The endpoint of `backend` for `request` (`None` without endpoints).
    pub fn pick(&self, backend: &Backend, request: &RequestView<'_>) -> Option<Pick> {
        let endpoints = &backend.endpoints;
        if endpoints.is_empty() {
            return None;
        }
        let plain = |endpoint| Pick {
            endpoint,
            set_cookie: None,
        };
        match self {
            Self::RoundRobin => backend.next_endpoint().map(plain),
            Self::Ewma => Some(plain(endpoints[backend.load.pick_two()])),
            Self::Hash(key) => {
                let index = backend.ring().lookup(fnv1a(key.render(request).as_bytes()));
                Some(plain(endpoints[index]))
            }
            Self::Cookie(affinity) => affinity.pick(backend, request),
        }
    }
}

/// How an endpoint is chosen for one request, in words, and the endpoint where the request
/// alone decides it (for `gateway explain`; nothing is counted or remembered).
pub struct Choice {
    pub endpoint: Option<SocketAddr>,
    pub reason: String,
}

impl Balance {
    /// Which endpoint of `backend` this request would get, and why.
    pub fn explain(&self, backend: &Backend, request: &RequestView<'_>) -> Choice {
        let endpoints = &backend.endpoints;
        let count = endpoints.len();
        let choice = |endpoint, reason: String| Choice { endpoint, reason };
        if endpoints.is_empty() {
            return choice(None, "no ready endpoint".into());
        }
        match self {
            Self::RoundRobin if count == 1 => choice(
                backend.peek_next_endpoint(),
                "round robin: the only ready endpoint".into(),
            ),
            Self::RoundRobin => choice(
                backend.peek_next_endpoint(),
                format!("round robin over {count} endpoints: this is the next one"),
            ),
            Self::Ewma => choice(
                None,
                format!(
                    "load-balance ewma: the faster of two of the {count} endpoints taken at \
                     random, by moving average latency"
                ),
            ),
            Self::Hash(key) => {
                let value = key.render(request);
                let index = backend.ring().lookup(fnv1a(value.as_bytes()));
                choice(
                    Some(endpoints[index]),
                    format!("upstream-hash-by: the key {value:?} hashes to this endpoint"),
                )
            }
            Self::Cookie(affinity) => {
                let presented = cookie(request.headers, &affinity.cookie);
                match affinity.pick_presented(backend, presented) {
                    Some(endpoint) => choice(
                        Some(endpoint),
                        format!(
                            "affinity: the cookie {}={} keeps the client on this endpoint",
                            affinity.cookie,
                            presented.unwrap_or_default()
                        ),
                    ),
                    None => choice(
                        None,
                        format!(
                            "affinity: no valid {} cookie: a new session is placed ({}) and \
                             the cookie set",
                            affinity.cookie,
                            match affinity.mode {
                                AffinityMode::Balanced => "at random on the hash ring",
                                AffinityMode::Persistent => "by round robin",
                            }
                        ),
                    ),
                }
            }
        }
    }
}

/// 64-bit FNV-1a with a final avalanche (MurmurHash3's fmix64): stable across processes and
/// versions, so hashing agrees after a restart, and keys that differ in one character (such
/// as `/item/1` and `/item/2`) land far apart on the ring.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// A consistent-hash ring over a backend's endpoints: when one is added or removed, only the
/// keys of its share move.
#[derive(Debug)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub fn new(endpoints: &[SocketAddr]) -> Self {
        let mut points: Vec<(u64, usize)> = endpoints
            .iter()
            .enumerate()
            .flat_map(|(index, endpoint)| {
                (0..RING_POINTS).map(move |i| (fnv1a(format!("{endpoint}#{i}").as_bytes()), index))
            })
            .collect();
        points.sort_unstable();
        Self { points }
    }

    /// The endpoint index for `hash`: the first point at or after it, round the ring.
    pub fn lookup(&self, hash: u64) -> usize {
        let at = self.points.partition_point(|(point, _)| *point < hash);
        self.points
            .get(at)
            .or(self.points.first())
            .map_or(0, |p| p.1)
    }
}

/// Load of each endpoint of a backend, for `ewma`.
#[derive(Debug)]
pub struct EndpointLoads {
    started: Instant,
    loads: Vec<EndpointLoad>,
}

#[derive(Debug, Default)]
struct EndpointLoad {
    /// Moving average of response time in microseconds, as f64 bits.
    ewma: AtomicU64,
    /// When it was last updated, in milliseconds since `started`.
    updated: AtomicU64,
    in_flight: AtomicU32,
}

/// A request counted in flight on an endpoint; report its latency with [`InFlight::done`].
pub struct InFlight<'a> {
    load: &'a EndpointLoads,
    index: usize,
}

impl EndpointLoads {
    pub fn new(endpoints: usize) -> Self {
        Self {
            started: Instant::now(),
            loads: (0..endpoints).map(|_| EndpointLoad::default()).collect(),
        }
    }

    fn score(&self, index: usize) -> f64 {
        let load = &self.loads[index];
        let ewma = f64::from_bits(load.ewma.load(Ordering::Relaxed));
        (ewma.max(1.0)) * f64::from(load.in_flight.load(Ordering::Relaxed) + 1)
    }

    /// Two endpoints at random, the less loaded one (latency times requests in flight).
    fn pick_two(&self) -> usize {
        let n = self.loads.len() as u64;
        if n == 1 {
            return 0;
        }
        let a = crate::random::below(n) as usize;
        let b = (a + 1 + crate::random::below(n - 1) as usize) % n as usize;
        if self.score(b) < self.score(a) { b } else { a }
    }

    /// Counts a request on the endpoint at `index` until done.
    pub fn start(&self, index: usize) -> Option<InFlight<'_>> {
        let load = self.loads.get(index)?;
        load.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight { load: self, index })
    }
}

impl InFlight<'_> {
    /// Folds `latency` into the endpoint's average.
    pub fn done(self, latency: Duration) {
        let loads = self.load;
        let load = &loads.loads[self.index];
        let now = loads.started.elapsed().as_millis() as u64;
        let since = now.saturating_sub(load.updated.swap(now, Ordering::Relaxed));
        let weight = (-(since as f64) / EWMA_DECAY.as_millis() as f64).exp();
        let previous = f64::from_bits(load.ewma.load(Ordering::Relaxed));
        let sample = latency.as_micros() as f64;
        let next = if previous == 0.0 {
            sample
        } else {
            previous * weight + sample * (1.0 - weight)
        };
        load.ewma.store(next.to_bits(), Ordering::Relaxed);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.load.loads[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// `upstream-hash-by`: text and nginx variables, such as `$request_uri` or `$http_x_user$host`;
/// at least one variable (a constant key would send every request to one endpoint).
pub fn hash_key(text: &str) -> Result<Template, String> {
    let key = Template::parse(text)?;
    if key.is_literal() {
        return Err("names no variable (such as $request_uri or $remote_addr)".into());
    }
    Ok(key)
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// `affinity: cookie` and its `session-cookie-*` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    pub cookie: String,
    pub max_age: Option<u64>,
    pub path: String,
    pub same_site: Option<&'static str>,
    pub mode: AffinityMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityMode {
    /// The cookie holds a session id, placed on the hash ring: scaling moves only a share of
    /// the sessions (ingress-nginx's `balanced`).
    Balanced,
    /// The cookie names the endpoint: a session stays until its endpoint is gone.
    Persistent,
}

/// The session id that names `endpoint` in persistent affinity cookies.
fn endpoint_id(endpoint: SocketAddr) -> String {
    format!("{:016x}", fnv1a(endpoint.to_string().as_bytes()))
}

/// A cookie name: an RFC 6265 token.
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Affinity {
    fn pick(&self, backend: &Backend, request: &RequestView<'_>) -> Option<Pick> {
        let presented = cookie(request.headers, &self.cookie);
        if let Some(endpoint) = self.pick_presented(backend, presented) {
            return Some(Pick {
                endpoint,
                set_cookie: None,
            });
        }
        let (endpoint, id) = match self.mode {
            AffinityMode::Persistent => {
                let endpoint = backend.next_endpoint()?;
                (endpoint, endpoint_id(endpoint))
            }
            AffinityMode::Balanced => {
                let id = format!("{:016x}", crate::random::next_u64());
                let endpoint = *backend
                    .endpoints
                    .get(backend.ring().lookup(fnv1a(id.as_bytes())))?;
                (endpoint, id)
            }
        };
        Some(Pick {
            endpoint,
            set_cookie: self.set_cookie(&id),
        })
    }

    /// The endpoint a well-formed session cookie keeps the client on: in persistent mode, the
    /// endpoint it names while it is still there; in balanced mode, its place on the ring.
    fn pick_presented(&self, backend: &Backend, presented: Option<&str>) -> Option<SocketAddr> {
        let id = presented.filter(|v| v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()))?;
        match self.mode {
            AffinityMode::Persistent => backend
                .endpoints
                .iter()
                .copied()
                .find(|e| endpoint_id(*e) == id),
            AffinityMode::Balanced => backend
                .endpoints
                .get(backend.ring().lookup(fnv1a(id.as_bytes())))
                .copied(),
        }
    }

    fn set_cookie(&self, value: &str) -> Option<HeaderValue> {
        let mut cookie = format!("{}={value}; Path={}", self.cookie, self.path);
        if let Some(max_age) = self.max_age {
            cookie.push_str(&format!("; Max-Age={max_age}"));
        }
        if let Some(same_site) = self.same_site {
            cookie.push_str(&format!("; SameSite={same_site}"));
            if same_site == "None" {
                cookie.push_str("; Secure");
            }
        }
        cookie.push_str("; HttpOnly");
        HeaderValue::from_str(&cookie).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, 1], 8000 + i)))
            .collect()
    }

    #[test]
    fn similar_keys_spread_over_the_ring() {
        let ring = Ring::new(&endpoints(3));
        let mut counts = [0usize; 3];
        for i in 0..300 {
            counts[ring.lookup(fnv1a(format!("/item/{i}").as_bytes()))] += 1;
        }
        assert!(counts.iter().all(|c| (50..150).contains(c)), "{counts:?}");
    }

    #[test]
    fn the_ring_moves_only_the_share_of_a_new_endpoint() {
        let before = Ring::new(&endpoints(4));
        let after = Ring::new(&endpoints(5));
        let keys: Vec<u64> = (0..10_000)
            .map(|i| fnv1a(format!("key{i}").as_bytes()))
            .collect();
        let moved = keys
            .iter()
            .filter(|k| before.lookup(**k) != after.lookup(**k))
            .count();
        // About a fifth moves to the new endpoint; nothing moves between the old ones.
        assert!((1000..3000).contains(&moved), "{moved} moved");
        assert!(keys.iter().all(|k| {
            let (b, a) = (before.lookup(*k), after.lookup(*k));
            b == a || a == 4
        }));
    }

    #[test]
    fn hash_keys_name_a_variable() {
        assert!(hash_key("$http_x_user-${request_uri}").is_ok());
        assert!(hash_key("$nonsense").is_err());
        assert!(hash_key("plain text").is_err());
    }

    #[test]
    fn ewma_prefers_the_faster_endpoint() {
        let loads = EndpointLoads::new(2);
        loads.start(0).unwrap().done(Duration::from_millis(100));
        loads.start(1).unwrap().done(Duration::from_millis(1));
        let fast = (0..100).filter(|_| loads.pick_two() == 1).count();
        assert_eq!(fast, 100, "with two endpoints both are compared every time");
    }
}
