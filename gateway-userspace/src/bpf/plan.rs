//! What the kernel maps should hold, and the smallest set of changes that gets them there. Pure:
//! unit-tested without a kernel; `FastPath::sync` applies the changes in the order given.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use gateway_common::{
    Listener, ListenerKey, MAX_LISTENERS, SOURCE_KEY_LISTENER_BITS, SourceKey, flags, protocol,
    sockets,
};

use crate::cidr::Cidr;
use crate::snapshot::{ListenerKind, ListenerSpec, Snapshot};

/// New connections allowed per source and listener: `RATE` per second after a burst of `BURST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynBudget {
    pub rate: u32,
    pub burst: u32,
}

impl FromStr for SynBudget {
    type Err = String;

    /// `RATE` or `RATE/BURST` (the burst defaults to the rate).
    fn from_str(text: &str) -> Result<Self, String> {
        let number = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| format!("{s:?}: expected a number of connections from 1 to 1000000"))
        };
        let (rate, burst) = match text.split_once('/') {
            Some((rate, burst)) => (number(rate)?, number(burst)?),
            None => (number(text)?, number(text)?),
        };
        Ok(Self { rate, burst })
    }
}

/// The fast path's configuration besides the route table.
#[derive(Clone, Debug, Default)]
pub struct FastPathConfig {
    /// Listeners given on the command line (`--vip`).
    pub vips: Vec<ListenerSpec>,
    /// Sources allowed on every listener (`--allow-source`); overrides the Ingresses'
    /// `whitelist-source-range`.
    pub allow_source: Option<Vec<Cidr>>,
    pub syn_budget: Option<SynBudget>,
    /// HTTPS listeners take HTTP/3 on their UDP port too (`--http3`).
    pub http3: bool,
}

impl FastPathConfig {
    /// Every VIP:port listener: the `--vip` flags, then the published Service's addresses of
    /// `snapshot`.
    pub fn listeners<'a>(
        &'a self,
        snapshot: &'a Snapshot,
    ) -> impl Iterator<Item = &'a ListenerSpec> {
        self.vips.iter().chain(&snapshot.listeners)
    }
}

/// What one listener should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedListener {
    pub socket: u32,
    /// Allowed sources; empty allows every source.
    pub allow: Vec<Cidr>,
    pub syn_budget: Option<SynBudget>,
}

/// Whether the fast path can carry `spec`: a wildcard address (`0.0.0.0:9000`, where
/// layer 4 ports go when `--http-listen` is one) is no packet's destination, so such a
/// listener is bound directly instead.
pub fn steerable(spec: &ListenerSpec) -> bool {
    !spec.addr.ip().is_unspecified()
}

/// The listeners the maps should hold, from the flags and the current route table.
pub fn wanted(
    config: &FastPathConfig,
    snapshot: &Snapshot,
) -> BTreeMap<ListenerKey, WantedListener> {
    let allow = config
        .allow_source
        .clone()
        .or_else(|| snapshot.source_allow.clone())
        .unwrap_or_default();
    let quic_slots = quic_slots(config, snapshot);
    config
        .listeners(snapshot)
        .filter(|spec| steerable(spec))
        .flat_map(|spec| {
            let socket = match spec.kind {
                ListenerKind::Http => sockets::HTTP,
                ListenerKind::Https => sockets::HTTPS,
                ListenerKind::Tcp | ListenerKind::Tls => sockets::STREAM,
                ListenerKind::Udp => sockets::UDP,
            };
            let wanted = |socket| WantedListener {
                socket,
                allow: allow.clone(),
                syn_budget: config.syn_budget,
            };
            // HTTP/3 comes to the same address and port over UDP, under the same allow-list.
            let quic = (spec.kind == ListenerKind::Https)
                .then(|| quic_slots.get(&spec.addr.port()))
                .flatten()
                .map(|slot| (quic_key(spec), wanted(*slot)));
            std::iter::once((listener_key(spec), wanted(socket))).chain(quic)
        })
        .collect()
}

/// With `--http3`, the SOCKETS slot of each port of the steerable HTTPS listeners: one QUIC
/// socket per port (its replies must leave from that port), in the order of the ports. Ports
/// beyond the [`sockets::QUIC_PORTS`] slots get none.
pub fn quic_slots(config: &FastPathConfig, snapshot: &Snapshot) -> BTreeMap<u16, u32> {
    let ports: BTreeSet<u16> = match config.http3 {
        true => (config.listeners(snapshot))
            .filter(|spec| spec.kind == ListenerKind::Https && steerable(spec))
            .map(|spec| spec.addr.port())
            .collect(),
        false => BTreeSet::new(),
    };
    ports
        .into_iter()
        .zip(sockets::QUIC..sockets::QUIC + sockets::QUIC_PORTS)
        .collect()
}

/// Where the QUIC socket of each slot of [`quic_slots`] is bound: loopback on its port, in the
/// address family of the listeners that use it (an IPv6 one in the slot [`sockets::IPV6`]
/// further). sk_lookup hands it the datagrams of every VIP on that port.
pub fn quic_sockets(config: &FastPathConfig, snapshot: &Snapshot) -> BTreeMap<u32, SocketAddr> {
    let slots = quic_slots(config, snapshot);
    (config.listeners(snapshot))
        .filter(|spec| spec.kind == ListenerKind::Https && steerable(spec))
        .filter_map(|spec| {
            let (slot, port) = (*slots.get(&spec.addr.port())?, spec.addr.port());
            Some(match spec.addr {
                SocketAddr::V4(_) => (slot, (Ipv4Addr::LOCALHOST, port).into()),
                SocketAddr::V6(_) => (sockets::IPV6 + slot, (Ipv6Addr::LOCALHOST, port).into()),
            })
        })
        .collect()
}

/// The map key of an HTTPS listener's UDP side, where HTTP/3 comes.
pub fn quic_key(spec: &ListenerSpec) -> ListenerKey {
    ListenerKey {
        protocol: protocol::UDP,
        ..listener_key(spec)
    }
}

/// The map key of a listener.
pub fn listener_key(spec: &ListenerSpec) -> ListenerKey {
    ListenerKey {
        addr: mapped(spec.addr.ip()),
        port: spec.addr.port(),
        protocol: match spec.kind {
            ListenerKind::Udp => protocol::UDP,
            _ => protocol::TCP,
        },
        _pad: 0,
    }
}

/// An address as the kernel programs see it: IPv6, or IPv4 mapped into IPv6.
pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// An ALLOW entry: the key and its prefix length in bits.
pub type AllowEntry = (SourceKey, u32);

/// What the maps hold now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub listeners: BTreeMap<ListenerKey, Listener>,
    pub allow: BTreeSet<AllowEntry>,
}

/// One change to the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    PutAllow(AllowEntry),
    PutListener(ListenerKey, Listener),
    DeleteListener(ListenerKey),
    DeleteAllow(AllowEntry),
    /// A listener id is taken by a new listener: its counters start from zero.
    ResetCounters(u32),
}

/// The changes that turn `applied` into `wanted`, in a safe order: allow entries go in before
/// the listener that needs them, and come out after the listener that used them, so that no
/// allowed packet is dropped in between. Listeners keep their ids (and counters).
pub fn changes(
    applied: &Applied,
    wanted: &BTreeMap<ListenerKey, WantedListener>,
) -> Result<(Vec<Change>, Applied), String> {
    let mut used: BTreeSet<u32> = applied
        .listeners
        .iter()
        .filter(|(key, _)| wanted.contains_key(key))
        .map(|(_, l)| l.id)
        .collect();
    let mut next = Applied::default();
    let mut resets = Vec::new();
    for (key, want) in wanted {
        let id = match applied.listeners.get(key) {
            Some(existing) => existing.id,
            None => {
                let id = (0..MAX_LISTENERS)
                    .find(|id| !used.contains(id))
                    .ok_or_else(|| format!("more than {MAX_LISTENERS} listeners"))?;
                used.insert(id);
                resets.push(Change::ResetCounters(id));
                id
            }
        };
        let (rate, burst) = want.syn_budget.map_or((0, 0), |b| (b.rate, b.burst));
        next.listeners.insert(
            *key,
            Listener {
                id,
                socket: want.socket,
                flags: if want.allow.is_empty() {
                    0
                } else {
                    flags::ALLOW_LIST
                },
                syn_rate: rate,
                syn_burst: burst,
            },
        );
        for cidr in &want.allow {
            let (addr, bits) = cidr.mapped();
            next.allow.insert((
                SourceKey { listener: id, addr },
                SOURCE_KEY_LISTENER_BITS + u32::from(bits),
            ));
        }
    }

    let mut list = resets;
    list.extend(
        next.allow
            .difference(&applied.allow)
            .map(|e| Change::PutAllow(*e)),
    );
    for (key, listener) in &next.listeners {
        if applied.listeners.get(key) != Some(listener) {
            list.push(Change::PutListener(*key, *listener));
        }
    }
    for key in applied.listeners.keys() {
        if !next.listeners.contains_key(key) {
            list.push(Change::DeleteListener(*key));
        }
    }
    list.extend(
        applied
            .allow
            .difference(&next.allow)
            .map(|e| Change::DeleteAllow(*e)),
    );
    Ok((list, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ListenerSpec {
        text.parse().unwrap()
    }

    fn config(vips: &[&str], allow: Option<&str>) -> FastPathConfig {
        FastPathConfig {
            vips: vips.iter().map(|v| spec(v)).collect(),
            allow_source: allow.map(|a| Cidr::parse_list(a).unwrap()),
            syn_budget: None,
            http3: false,
        }
    }

    #[test]
    fn https_listeners_take_http3_on_their_udp_port_with_http3_on() {
        let vips = ["198.51.100.10:443=https", "198.51.100.10:80=http"];
        let mut config = config(&vips, Some("10.0.0.0/8"));
        let without = wanted(&config, &Snapshot::default());
        assert_eq!(without.len(), 2);
        config.http3 = true;
        let with = wanted(&config, &Snapshot::default());
        assert_eq!(with.len(), 3);
        let quic = &with[&quic_key(&spec(vips[0]))];
        assert_eq!(quic.socket, sockets::QUIC);
        assert_eq!(quic.allow, with[&listener_key(&spec(vips[0]))].allow);
        assert!(!with.contains_key(&quic_key(&spec(vips[1]))));
    }

    #[test]
    fn each_https_port_gets_one_quic_slot_while_slots_last() {
        let mut vips: Vec<String> = (0..sockets::QUIC_PORTS + 2)
            .map(|i| format!("198.51.100.10:{}=https", 9000 + i))
            .collect();
        // Another VIP on the first port shares its socket; a wildcard is bound directly.
        vips.push("198.51.100.11:9000=https".into());
        vips.push("[fd00::10]:9000=https".into());
        vips.push("0.0.0.0:8443=https".into());
        let vips: Vec<&str> = vips.iter().map(String::as_str).collect();
        let mut config = config(&vips, None);
        config.http3 = true;
        let slots = quic_slots(&config, &Snapshot::default());
        assert_eq!(slots.len(), sockets::QUIC_PORTS as usize);
        assert_eq!(slots[&9000], sockets::QUIC);
        assert_eq!(slots[&9001], sockets::QUIC + 1);
        assert!(!slots.contains_key(&8443));
        let with = wanted(&config, &Snapshot::default());
        let quic_socket = |vip: &str| with.get(&quic_key(&spec(vip))).map(|l| l.socket);
        assert_eq!(quic_socket("198.51.100.11:9000=https"), Some(sockets::QUIC));
        assert_eq!(quic_socket("[fd00::10]:9000=https"), Some(sockets::QUIC));
        let bound = quic_sockets(&config, &Snapshot::default());
        assert_eq!(bound.len(), sockets::QUIC_PORTS as usize + 1);
        assert_eq!(bound[&sockets::QUIC], "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            bound[&(sockets::IPV6 + sockets::QUIC)],
            "[::1]:9000".parse().unwrap()
        );
        let last = format!("198.51.100.10:{}=https", 9000 + sockets::QUIC_PORTS);
        assert_eq!(quic_socket(&last), None, "no slot left: no UDP twin");
        assert!(with.contains_key(&listener_key(&spec(&last))));
    }

    #[test]
    fn listener_specs_parse() {
        let s = spec("198.51.100.10:443=https");
        assert_eq!(s.kind, ListenerKind::Https);
        assert_eq!(spec("198.51.100.10:53=udp").kind, ListenerKind::Udp);
        assert_eq!(s.addr.port(), 443);
        assert!(spec("[2001:db8::1]:80=http").addr.is_ipv6());
        assert!("198.51.100.10:80".parse::<ListenerSpec>().is_err());
        assert!("198.51.100.10:80=ftp".parse::<ListenerSpec>().is_err());
        assert_eq!(
            "50/100".parse::<SynBudget>().unwrap(),
            SynBudget {
                rate: 50,
                burst: 100
            }
        );
        assert_eq!(
            "20".parse::<SynBudget>().unwrap(),
            SynBudget {
                rate: 20,
                burst: 20
            }
        );
        assert!("0".parse::<SynBudget>().is_err());
    }

    #[test]
    fn first_sync_adds_everything_allow_entries_first() {
        let wanted = wanted(
            &config(&["198.51.100.10:80=http"], Some("10.0.0.0/8")),
            &Snapshot::default(),
        );
        let (list, applied) = changes(&Applied::default(), &wanted).unwrap();
        assert!(matches!(list[0], Change::ResetCounters(0)));
        assert!(matches!(
            list[1],
            Change::PutAllow((SourceKey { listener: 0, .. }, 136))
        ));
        assert!(matches!(
            list[2],
            Change::PutListener(
                _,
                Listener {
                    flags: flags::ALLOW_LIST,
                    ..
                }
            )
        ));
        assert_eq!(list.len(), 3);
        // Nothing changed, nothing to do.
        let (again, same) = changes(&applied, &wanted).unwrap();
        assert!(again.is_empty());
        assert_eq!(same, applied);
    }

    #[test]
    fn ids_are_kept_and_reused_and_removals_come_last() {
        let two = wanted(
            &config(
                &["198.51.100.10:80=http", "198.51.100.11:443=https"],
                Some("10.0.0.0/8"),
            ),
            &Snapshot::default(),
        );
        let (_, applied) = changes(&Applied::default(), &two).unwrap();
        let ids: Vec<u32> = applied.listeners.values().map(|l| l.id).collect();
        assert_eq!(ids, [0, 1]);

        // .10 goes, .12 comes: .11 keeps id 1, .12 takes the freed id 0; the allow-list
        // shrinks to nothing, so listeners lose the flag before the entries are deleted.
        let next = wanted(
            &config(&["198.51.100.11:443=https", "198.51.100.12:80=http"], None),
            &Snapshot::default(),
        );
        let (list, applied) = changes(&applied, &next).unwrap();
        let by_addr: Vec<(u16, u32)> = applied
            .listeners
            .iter()
            .map(|(k, l)| (k.addr[15] as u16, l.id))
            .collect();
        assert_eq!(by_addr, [(11, 1), (12, 0)]);
        let kinds: Vec<&str> = list
            .iter()
            .map(|c| match c {
                Change::ResetCounters(_) => "reset",
                Change::PutAllow(_) => "put-allow",
                Change::PutListener(..) => "put",
                Change::DeleteListener(_) => "delete",
                Change::DeleteAllow(_) => "delete-allow",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "reset",
                "put",
                "put",
                "delete",
                "delete-allow",
                "delete-allow"
            ]
        );
    }

    #[test]
    fn snapshot_listeners_and_consensus_allow_list() {
        let snapshot = Snapshot {
            listeners: vec![spec("[2001:db8::10]:443=https")],
            source_allow: Some(Cidr::parse_list("192.0.2.0/24").unwrap()),
            ..Snapshot::default()
        };
        let w = wanted(&config(&["198.51.100.10:80=http"], None), &snapshot);
        assert_eq!(w.len(), 2);
        assert!(
            w.values()
                .all(|l| l.allow == Cidr::parse_list("192.0.2.0/24").unwrap())
        );
        // The flag wins over the annotations.
        let w = wanted(&config(&[], Some("10.0.0.0/8")), &snapshot);
        assert_eq!(
            w.values().next().unwrap().allow,
            Cidr::parse_list("10.0.0.0/8").unwrap()
        );
        assert_eq!(w.values().next().unwrap().socket, sockets::HTTPS);
    }

    #[test]
    fn layer4_listeners_get_their_sockets_and_protocol_and_wildcards_stay_out() {
        let snapshot = Snapshot {
            listeners: vec![
                spec("198.51.100.10:9000=tcp"),
                spec("198.51.100.10:9000=udp"),
                spec("198.51.100.10:8443=tls"),
                spec("0.0.0.0:9001=tcp"),
            ],
            ..Snapshot::default()
        };
        let w = wanted(&config(&[], None), &snapshot);
        let found: Vec<(u16, u8, u32)> = (w.iter())
            .map(|(key, listener)| (key.port, key.protocol, listener.socket))
            .collect();
        assert_eq!(
            found,
            [
                (8443, protocol::TCP, sockets::STREAM),
                (9000, protocol::TCP, sockets::STREAM),
                (9000, protocol::UDP, sockets::UDP),
            ]
        );
    }
}
