//! How VIP:port traffic reaches the proxy, kept in line with every published route table:
//! through the kernel fast path (XDP classification, sk_lookup into the proxy's sockets),
//! or, where BPF is unavailable, by binding each VIP:port itself. Listeners on a wildcard
//! address (no packet's destination) are bound directly either way.

use std::collections::HashMap;
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

/// The steering in force.
pub struct Steering {
    config: FastPathConfig,
    mode: Mode,
    sockets: Arc<Sockets>,
    proxy: Arc<Proxy>,
    acceptor: TlsAcceptor,
    /// Listeners bound directly, each served by its own task.
    bound: Mutex<HashMap<ListenerSpec, JoinHandle<()>>>,
    /// HTTP/3 on the UDP side of HTTPS VIP:ports (`--http3`), bound directly in either mode:
    /// QUIC's replies must leave from the VIP's own port, which a steered socket does not have.
    quic: Mutex<HashMap<SocketAddr, JoinHandle<()>>>,
    synced: AtomicU64,
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
            synced: AtomicU64::new(0),
        }
    }

    /// Applies `snapshot`'s listeners and allow-lists.
    pub fn sync(&self, snapshot: &Snapshot) {
        self.bind_quic(snapshot);
        match &self.mode {
            Mode::Kernel(fast_path) => {
                let wanted = plan::wanted(&self.config, snapshot);
                let mut fast_path = fast_path.lock().unwrap_or_else(|e| e.into_inner());
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
                let specs = self.config.listeners(snapshot);
                let unsteerable = specs.filter(|spec| !plan::steerable(spec));
                self.bind(&unsteerable.copied().collect::<Vec<_>>());
            }
            Mode::Direct => {
                let specs = self.config.listeners(snapshot);
                self.bind(&specs.copied().collect::<Vec<_>>());
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

    /// Binds and serves the UDP side of exactly the HTTPS listeners of `snapshot`, with
    /// `--http3` (others bound before are closed; their connections finish).
    fn bind_quic(&self, snapshot: &Snapshot) {
        let wanted: Vec<SocketAddr> = match self.config.http3 {
            true => (self.config.listeners(snapshot))
                .filter(|spec| spec.kind == ListenerKind::Https)
                .map(|spec| spec.addr)
                .collect(),
            false => Vec::new(),
        };
        let mut bound = self.quic.lock().unwrap_or_else(|e| e.into_inner());
        bound.retain(|address, task| {
            let keep = wanted.contains(address);
            if !keep {
                task.abort();
                self.sockets.forget(&quic_socket_name(*address));
            }
            keep
        });
        for address in wanted {
            if bound.contains_key(&address) {
                continue;
            }
            let name = quic_socket_name(address);
            let endpoint = (self.sockets.quic_socket(&name, address).map_err(Into::into))
                .and_then(|socket| self.proxy.quic_endpoint(socket, &self.acceptor));
            match endpoint {
                Ok(endpoint) => {
                    let served = self.proxy.clone().serve_http3(endpoint);
                    bound.insert(address, tokio::spawn(served));
                }
                Err(error) => tracing::warn!(%address, error = format!("{error:#}"),
                    "cannot bind the UDP side of an HTTPS listener for HTTP/3"),
            }
        }
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
