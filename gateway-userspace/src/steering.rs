//! How VIP:port traffic reaches the proxy, kept in line with every published route table:
//! through the kernel fast path (XDP classification, sk_lookup into the proxy's two sockets),
//! or, where BPF is unavailable, by binding each VIP:port itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::bpf::plan::{self, FastPathConfig};
use crate::bpf::{BpfSettings, FastPath, StatsReport, SteeringSockets};
use crate::lifecycle::Sockets;
use crate::proxy::Proxy;
use crate::publish::RouteTable;
use crate::snapshot::Snapshot;

/// The steering in force.
pub struct Steering {
    config: FastPathConfig,
    mode: Mode,
    sockets: Arc<Sockets>,
}

enum Mode {
    Kernel(Mutex<FastPath>),
    /// One socket per VIP:port, each served by the proxy.
    Direct {
        proxy: Arc<Proxy>,
        acceptor: TlsAcceptor,
        bound: Mutex<HashMap<SocketAddr, JoinHandle<()>>>,
    },
}

/// Loopback sockets on ephemeral ports for steered connections (sk_lookup hands them
/// connections to any VIP; nothing else reaches them), inherited across restarts.
fn steering_sockets(sockets: &Sockets) -> Result<SteeringSockets> {
    let v4 = std::net::Ipv4Addr::LOCALHOST;
    let v6 = std::net::Ipv6Addr::LOCALHOST;
    Ok(SteeringSockets {
        http4: sockets.listen("steer-http4", (v4, 0).into())?,
        https4: sockets.listen("steer-https4", (v4, 0).into())?,
        http6: sockets.listen("steer-http6", (v6, 0).into()).ok(),
        https6: sockets.listen("steer-https6", (v6, 0).into()).ok(),
    })
}

/// The name under which a directly bound VIP socket is handed on.
fn vip_socket_name(address: SocketAddr) -> String {
    format!("vip {address}")
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
        let Some(bpf) = bpf else {
            return Self::direct(config, proxy, acceptor, sockets);
        };
        let started = steering_sockets(&sockets).and_then(|steering| {
            let fast_path = FastPath::start(bpf, &steering)?;
            let SteeringSockets {
                http4,
                https4,
                http6,
                https6,
            } = steering;
            for http in std::iter::once(http4).chain(http6) {
                tokio::spawn(proxy.clone().serve(http, None));
            }
            for https in std::iter::once(https4).chain(https6) {
                tokio::spawn(proxy.clone().serve(https, Some(acceptor.clone())));
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
                return Self::direct(config, proxy, acceptor, sockets);
            }
        };
        Self {
            config,
            mode,
            sockets,
        }
    }

    /// Every listener bound directly, with no kernel program.
    fn direct(
        config: FastPathConfig,
        proxy: Arc<Proxy>,
        acceptor: TlsAcceptor,
        sockets: Arc<Sockets>,
    ) -> Self {
        Self {
            config,
            mode: Mode::Direct {
                proxy,
                acceptor,
                bound: Mutex::new(HashMap::new()),
            },
            sockets,
        }
    }

    /// Applies `snapshot`'s listeners and allow-lists.
    pub fn sync(&self, snapshot: &Snapshot) {
        let wanted = plan::wanted(&self.config, snapshot);
        match &self.mode {
            Mode::Kernel(fast_path) => {
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
            }
            Mode::Direct {
                proxy,
                acceptor,
                bound,
            } => {
                let mut bound = bound.lock().unwrap_or_else(|e| e.into_inner());
                let specs: Vec<_> = self
                    .config
                    .vips
                    .iter()
                    .chain(&snapshot.listeners)
                    .copied()
                    .collect();
                bound.retain(|addr, task| {
                    let keep = specs.iter().any(|s| s.addr == *addr);
                    if !keep {
                        task.abort();
                        self.sockets.forget(&vip_socket_name(*addr));
                    }
                    keep
                });
                for spec in specs {
                    if bound.contains_key(&spec.addr) {
                        continue;
                    }
                    let listener = match self.sockets.listen(&vip_socket_name(spec.addr), spec.addr)
                    {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::warn!(address = %spec.addr, %error, "cannot bind VIP address");
                            continue;
                        }
                    };
                    let tls = spec.tls.then(|| acceptor.clone());
                    bound.insert(spec.addr, tokio::spawn(proxy.clone().serve(listener, tls)));
                }
            }
        }
    }

    /// The fast path's counters, when it is on.
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
            Mode::Direct { .. } => None,
        }
    }

    /// Syncs after every published table, forever.
    pub async fn follow(self: Arc<Self>, table: Arc<RouteTable>) {
        let mut published = table.subscribe();
        loop {
            let snapshot = table.current();
            self.sync(&snapshot);
            if published.changed().await.is_err() {
                return;
            }
        }
    }
}
