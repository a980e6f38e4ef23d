//! How VIP:port traffic reaches the proxy, kept in line with every published route table:
//! through the kernel fast path (XDP classification, sk_lookup into the proxy's sockets),
//! or, where BPF is unavailable, by binding each VIP:port itself. Listeners on a wildcard
//! address (no packet's destination) are bound directly either way.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Result;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::bpf::plan::{self, FastPathConfig};
use crate::bpf::{BpfSettings, Family, FastPath, StatsReport, SteeringSockets};
use crate::lifecycle::Sockets;
use crate::proxy::Proxy;
use crate::publish::RouteTable;
use crate::snapshot::{ListenerKind, ListenerSpec, Snapshot};
use gateway_common::sockets;

/// The steering in force.
pub struct Steering {
    config: FastPathConfig,
    mode: Mode,
    sockets: Arc<Sockets>,
    proxy: Arc<Proxy>,
    acceptor: TlsAcceptor,
    /// Listeners bound directly, each served by its own task.
    bound: Mutex<HashMap<ListenerSpec, JoinHandle<()>>>,
    /// HTTP/3 on the UDP side of HTTPS listeners (`--http3`), by the address its socket is
    /// bound to: see [`Steering::sync`].
    quic: Mutex<HashMap<SocketAddr, QuicSocket>>,
    /// The QUIC sockets last put into the SOCKETS slots, by slot (unknown before the first sync:
    /// a previous process may have left other sockets there).
    quic_slots: Mutex<Option<BTreeMap<u32, SocketAddr>>>,
    synced: AtomicU64,
}

/// A QUIC socket and the task serving its endpoint.
struct QuicSocket {
    served: JoinHandle<()>,
    /// A duplicate, for the SOCKETS map.
    fd: OwnedFd,
}

enum Mode {
    Kernel(Mutex<FastPath>),
    /// One socket per VIP:port.
    Direct,
}

/// Loopback sockets on ephemeral ports for steered connections and datagrams (sk_lookup hands
/// them those of any VIP; nothing else reaches them), inherited across restarts.
fn steering_sockets(sockets: &Sockets) -> Result<SteeringSockets> {
    let (v4, v6) = (Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
    let tcp = |kind: &str| -> Result<Family<TcpListener>> {
        Ok(Family {
            v4: sockets.listen(&format!("steer-{kind}4"), (v4, 0).into())?,
            v6: sockets
                .listen(&format!("steer-{kind}6"), (v6, 0).into())
                .ok(),
        })
    };
    Ok(SteeringSockets {
        http: tcp("http")?,
        https: tcp("https")?,
        stream: tcp("stream")?,
        udp: Family {
            v4: sockets.listen_udp("steer-udp4", (v4, 0).into())?,
            v6: sockets.listen_udp("steer-udp6", (v6, 0).into()).ok(),
        },
    })
}

/// The name under which a directly bound socket is handed on (`vip 198.51.100.10:80`,
/// `udp 127.0.0.1:53`).
fn socket_name(spec: &ListenerSpec) -> String {
    match spec.kind {
        ListenerKind::Udp => format!("udp {}", spec.addr),
        _ => format!("vip {}", spec.addr),
    }
}

/// The name under which the UDP socket of an HTTPS listener's HTTP/3 is handed on.
fn quic_socket_name(address: SocketAddr) -> String {
    format!("quic {address}")
}

impl Steering {
    /// Starts the fast path; where it cannot start, says why once and falls back to binding.
    /// Steered connections go to two sockets of their own (HTTP and HTTPS), dual-stack so
    /// that IPv4 and IPv6 VIPs can both be handed to them.
    pub fn start(
        config: FastPathConfig,
        bpf: Option<&BpfSettings>,
        proxy: Arc<Proxy>,
        acceptor: TlsAcceptor,
        sockets: Arc<Sockets>,
    ) -> Self {
        let direct = |config, proxy, acceptor, sockets| Self {
            config,
            mode: Mode::Direct,
            sockets,
            proxy,
            acceptor,
            bound: Mutex::default(),
            quic: Mutex::default(),
            quic_slots: Mutex::default(),
            synced: AtomicU64::new(0),
        };
        let Some(bpf) = bpf else {
            return direct(config, proxy, acceptor, sockets);
        };
        let started = steering_sockets(&sockets).and_then(|steering| {
            let fast_path = FastPath::start(bpf, &steering)?;
            let streams = proxy.streams();
            for http in steering.http.each() {
                tokio::spawn(proxy.clone().serve(http, None));
            }
            for https in steering.https.each() {
                tokio::spawn(proxy.clone().serve(https, Some(acceptor.clone())));
            }
            // Each connection (datagram) goes where its original destination says.
            for stream in steering.stream.each() {
                tokio::spawn(streams.clone().serve_tcp(stream, None));
            }
            for udp in steering.udp.each() {
                tokio::spawn(streams.clone().serve_udp(udp, None));
            }
            Ok(fast_path)
        });
        let mode = match started {
            Ok(fast_path) => {
                tracing::info!(pin_dir = %fast_path.pin_dir().display(),
                    interfaces = ?fast_path.attached, "kernel fast path on: XDP classification and sk_lookup steering");
                Mode::Kernel(Mutex::new(fast_path))
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "KERNEL FAST PATH OFF: no XDP filtering, no sk_lookup steering; binding each VIP:port directly"
                );
                return direct(config, proxy, acceptor, sockets);
            }
        };
        Self {
            config,
            mode,
            sockets,
            proxy,
            acceptor,
            bound: Mutex::default(),
            quic: Mutex::default(),
            quic_slots: Mutex::default(),
            synced: AtomicU64::new(0),
        }
    }

    /// Applies `snapshot`'s listeners and allow-lists.
    ///
    /// With `--http3`, the UDP side of an HTTPS listener is served by a QUIC socket: in the
    /// kernel mode one per port, bound to loopback and handed the datagrams of every VIP on that
    /// port by sk_lookup (a QUIC reply must leave from the port its client sent to, the socket's
    /// own, while IP_PKTINFO gives it the VIP as source); otherwise, and for wildcard
    /// listeners, one bound to the listener's own address.
    pub fn sync(&self, snapshot: &Snapshot) {
        let specs: Vec<ListenerSpec> = self.config.listeners(snapshot).copied().collect();
        let https = |spec: &&ListenerSpec| self.config.http3 && spec.kind == ListenerKind::Https;
        match &self.mode {
            Mode::Kernel(fast_path) => {
                let direct: Vec<ListenerSpec> = (specs.iter())
                    .filter(|spec| !plan::steerable(spec))
                    .copied()
                    .collect();
                let steered = plan::quic_sockets(&self.config, snapshot);
                let unplaced: Vec<SocketAddr> = (specs.iter().filter(https))
                    .filter(|spec| {
                        plan::steerable(spec)
                            && !steered.values().any(|a| a.port() == spec.addr.port())
                    })
                    .map(|spec| spec.addr)
                    .collect();
                let quic: Vec<SocketAddr> = (direct.iter().filter(https))
                    .map(|spec| spec.addr)
                    .chain(steered.values().copied())
                    .collect();
                self.bind_quic(&quic);
                let mut fast_path = fast_path.lock().unwrap_or_else(|e| e.into_inner());
                // Sockets are in their slots before listeners point at them.
                self.fill_quic_slots(&mut fast_path, steered, &unplaced);
                let wanted = plan::wanted(&self.config, snapshot);
                match fast_path.sync(&wanted) {
                    Ok(0) => {}
                    Ok(changes) => {
                        tracing::info!(changes, listeners = wanted.len(), "kernel maps updated")
                    }
                    Err(error) => tracing::error!(
                        error = format!("{error:#}"),
                        "updating the kernel maps failed"
                    ),
                }
                drop(fast_path);
                self.bind(&direct);
            }
            Mode::Direct => {
                let quic: Vec<SocketAddr> = specs.iter().filter(https).map(|s| s.addr).collect();
                self.bind_quic(&quic);
                self.bind(&specs);
            }
        }
    }

    /// Binds and serves exactly `specs` (others bound before are closed).
    fn bind(&self, specs: &[ListenerSpec]) {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound.retain(|spec, task| {
            let keep = specs.contains(spec);
            if !keep {
                task.abort();
                self.sockets.forget(&socket_name(spec));
            }
            keep
        });
        for spec in specs {
            if bound.contains_key(spec) {
                continue;
            }
            match self.serve(spec) {
                Ok(task) => {
                    bound.insert(*spec, task);
                }
                Err(error) => {
                    tracing::warn!(address = %spec.addr, kind = %spec.kind, %error, "cannot bind listener address")
                }
            }
        }
    }

    /// Binds and serves a QUIC endpoint on exactly the UDP addresses `wanted` (others bound
    /// before are closed; their connections finish).
    fn bind_quic(&self, wanted: &[SocketAddr]) {
        let mut bound = self.quic.lock().unwrap_or_else(|e| e.into_inner());
        bound.retain(|address, socket| {
            let keep = wanted.contains(address);
            if !keep {
                socket.served.abort();
                self.sockets.forget(&quic_socket_name(*address));
            }
            keep
        });
        for &address in wanted {
            if bound.contains_key(&address) {
                continue;
            }
            let name = quic_socket_name(address);
            let served = self
                .sockets
                .quic_socket(&name, address)
                .and_then(|(socket, relay)| {
                    let fd = socket.as_fd().try_clone_to_owned()?;
                    Ok((socket, relay, fd))
                });
            let served = (served.map_err(anyhow::Error::from)).and_then(|(socket, relay, fd)| {
                let endpoint = self.proxy.quic_endpoint(socket, relay, &self.acceptor)?;
                let served = tokio::spawn(self.proxy.clone().serve_http3(endpoint));
                Ok(QuicSocket { served, fd })
            });
            match served {
                Ok(socket) => {
                    bound.insert(address, socket);
                }
                Err(error) => tracing::warn!(%address, error = format!("{error:#}"),
                    "cannot bind the UDP side of an HTTPS listener for HTTP/3"),
            }
        }
    }

    /// Puts the bound QUIC sockets of `steered` into their SOCKETS slots and empties the other
    /// QUIC slots, when that differs from what the slots last got (and then says which HTTPS
    /// listeners found no slot).
    fn fill_quic_slots(
        &self,
        fast_path: &mut FastPath,
        mut steered: BTreeMap<u32, SocketAddr>,
        unplaced: &[SocketAddr],
    ) {
        let bound = self.quic.lock().unwrap_or_else(|e| e.into_inner());
        steered.retain(|_, address| bound.contains_key(address));
        let mut filled = self.quic_slots.lock().unwrap_or_else(|e| e.into_inner());
        if filled.as_ref() == Some(&steered) {
            return;
        }
        for address in unplaced {
            tracing::warn!(%address, slots = sockets::QUIC_PORTS,
                "no HTTP/3 for this HTTPS listener: its port is beyond the ports the fast path has QUIC slots for");
        }
        let quic = sockets::QUIC..sockets::QUIC + sockets::QUIC_PORTS;
        for slot in quic.flat_map(|slot| [slot, sockets::IPV6 + slot]) {
            let result = match steered.get(&slot).map(|address| &bound[address]) {
                Some(socket) => fast_path.put_socket(slot, socket.fd.as_fd()),
                None => fast_path.clear_socket(slot),
            };
            if let Err(error) = result {
                tracing::error!(
                    error = format!("{error:#}"),
                    "updating the QUIC sockets of the fast path failed"
                );
            }
        }
        *filled = Some(steered);
    }

    /// A socket bound for `spec`, served by the right proxy.
    fn serve(&self, spec: &ListenerSpec) -> std::io::Result<JoinHandle<()>> {
        let name = socket_name(spec);
        let streams = self.proxy.streams().clone();
        Ok(match spec.kind {
            ListenerKind::Udp => {
                let socket = self.sockets.listen_udp(&name, spec.addr)?;
                tokio::spawn(streams.serve_udp(socket, Some(spec.addr)))
            }
            kind => {
                let listener = self.sockets.listen(&name, spec.addr)?;
                match kind {
                    ListenerKind::Tcp | ListenerKind::Tls => {
                        tokio::spawn(streams.serve_tcp(listener, Some(spec.addr)))
                    }
                    ListenerKind::Https => {
                        let tls = Some(self.acceptor.clone());
                        tokio::spawn(self.proxy.clone().serve(listener, tls))
                    }
                    _ => tokio::spawn(self.proxy.clone().serve(listener, None)),
                }
            }
        })
    }

    /// The fast path's counters, when it is on.
    /// The generation of the last table whose listeners are in place (bound, or in the maps):
    /// until the source's first one is, the gateway is not ready.
    pub fn synced_generation(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// The fast path's flags (`--vip`, `--allow-source`, `--syn-budget`).
    pub fn config(&self) -> &FastPathConfig {
        &self.config
    }

    /// The interfaces XDP is attached to and the mode each got (`native`, `generic`); empty
    /// when listeners are bound directly.
    pub fn attached(&self) -> Vec<(String, &'static str)> {
        match &self.mode {
            Mode::Kernel(fast_path) => fast_path
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .attached
                .clone(),
            Mode::Direct => Vec::new(),
        }
    }

    pub fn stats(&self) -> Option<Result<StatsReport>> {
        match &self.mode {
            Mode::Kernel(fast_path) => {
                let pin_dir = fast_path
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pin_dir()
                    .to_path_buf();
                Some(crate::bpf::read_stats(&pin_dir))
            }
            Mode::Direct => None,
        }
    }

    /// Syncs after every published table, forever.
    pub async fn follow(self: Arc<Self>, table: Arc<RouteTable>) {
        let mut published = table.subscribe();
        loop {
            // Read before the table: what is recorded as synced is never newer than it.
            let generation = table.generation();
            let snapshot = table.current();
            self.sync(&snapshot);
            self.synced.store(generation, Ordering::Release);
            if published.changed().await.is_err() {
                return;
            }
        }
    }
}
