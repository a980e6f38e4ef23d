//! Every listening socket of the process, by name (`http`, `https`, `admin`, `steer-http4`,
//! `vip 198.51.100.10:80`, ...): bound here, or inherited from the previous process through a
//! hand-off, and handed on to the next one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, UdpSocket};

use super::quic_relay::{self, Relay};

pub struct Sockets {
    /// Sockets in use, kept so that they can be handed on.
    live: Mutex<BTreeMap<String, Live>>,
    /// Sockets received from the previous process and not claimed yet.
    inherited: Mutex<HashMap<String, OwnedFd>>,
    /// The tag of the QUIC connection IDs this process issues.
    quic_tag: u8,
}

impl Default for Sockets {
    fn default() -> Self {
        Self::inheriting(HashMap::new())
    }
}

/// The name under which the relay channel of QUIC socket `name` is handed on.
fn relay_name(name: &str) -> String {
    format!("relay {name}")
}

impl Sockets {
    /// A registry that first hands out these inherited sockets.
    pub fn inheriting(inherited: HashMap<String, OwnedFd>) -> Self {
        let predecessor_tag = (inherited.iter())
            .filter(|(name, _)| name.starts_with("relay "))
            .filter_map(|(_, fd)| quic_relay::read_tag(fd))
            .last();
        Self {
            live: Mutex::default(),
            inherited: Mutex::new(inherited),
            quic_tag: quic_relay::process_tag(predecessor_tag),
        }
    }

    /// The listening socket `name` for `address`: the inherited one when it is on that address
    /// (any port when `address` asks for port 0), else a new one.
    pub fn listen(&self, name: &str, address: SocketAddr) -> std::io::Result<Arc<TcpListener>> {
        let listener = match self.inherited(name).map(adopt).transpose()? {
            Some(listener) if same_address(listener.local_addr()?, address) => listener,
            _ => bind(address)?,
        };
        let listener = Arc::new(listener);
        self.keep(name, Live::Tcp(listener.clone()));
        Ok(listener)
    }

    /// The UDP socket `name` for `address`, inherited or new, as [`Sockets::listen`].
    pub fn listen_udp(&self, name: &str, address: SocketAddr) -> std::io::Result<Arc<UdpSocket>> {
        let socket = self.udp_socket(name, address)?;
        socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        self.keep(name, Live::Udp(socket.clone()));
        Ok(socket)
    }

    /// The UDP socket `name` for a QUIC endpoint, inherited or new, as [`Sockets::listen`]: a
    /// plain socket, which the endpoint reads itself (a duplicate is kept for handing on), and
    /// its relay to the previous process's connections on it (see [`quic_relay`]).
    pub fn quic_socket(
        &self,
        name: &str,
        address: SocketAddr,
    ) -> std::io::Result<(std::net::UdpSocket, Arc<Relay>)> {
        let socket = self.udp_socket(name, address)?;
        let predecessor = self.inherited(&relay_name(name));
        let relay = Relay::new(self.quic_tag, predecessor)?;
        let fd = socket.as_fd().try_clone_to_owned()?;
        self.keep(name, Live::Quic(fd, relay.clone()));
        Ok((socket, relay))
    }

    /// The inherited UDP socket `name` when it is on `address`, else a new one.
    fn udp_socket(&self, name: &str, address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
        match self.inherited(name).map(std::net::UdpSocket::from) {
            Some(socket) if same_address(socket.local_addr()?, address) => Ok(socket),
            _ => std::net::UdpSocket::bind(address),
        }
    }

    fn inherited(&self, name: &str) -> Option<OwnedFd> {
        let mut inherited = self.inherited.lock().unwrap_or_else(|e| e.into_inner());
        inherited.remove(name)
    }

    fn keep(&self, name: &str, socket: Live) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), socket);
    }

    /// Stops handing `name` on (its accept loop has ended).
    pub fn forget(&self, name: &str) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// The sockets to hand on: names and duplicated descriptors, valid whatever the accept
    /// loops do meanwhile; each QUIC socket with a new relay channel to the next process.
    pub fn live(&self) -> std::io::Result<Vec<(String, OwnedFd)>> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut handed = Vec::with_capacity(live.len());
        for (name, socket) in live.iter() {
            let fd = match socket {
                Live::Tcp(listener) => listener.as_fd(),
                Live::Udp(socket) => socket.as_fd(),
                Live::Quic(socket, relay) => {
                    handed.push((relay_name(name), relay.successor_channel()?));
                    socket.as_fd()
                }
            };
            handed.push((name.clone(), fd.try_clone_to_owned()?));
        }
        Ok(handed)
    }

    /// The next process took the sockets over: QUIC endpoints read only what it relays to
    /// them from now on.
    pub fn hand_over(&self) {
        for socket in self.live.lock().unwrap_or_else(|e| e.into_inner()).values() {
            if let Live::Quic(_, relay) = socket {
                relay.hand_over();
            }
        }
    }

    /// Lets go of every socket: each closes once its accept loop has ended too (after a
    /// hand-off, the next process keeps them open).
    pub fn release_all(&self) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.inherited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Closes inherited sockets nobody claimed (a VIP that is gone since the last process).
    pub fn close_unclaimed(&self) -> Vec<String> {
        let mut inherited = self.inherited.lock().unwrap_or_else(|e| e.into_inner());
        let names = inherited.keys().cloned().collect();
        inherited.clear();
        names
    }
}

/// A socket in use.
enum Live {
    Tcp(Arc<TcpListener>),
    Udp(Arc<UdpSocket>),
    Quic(OwnedFd, Arc<Relay>),
}

fn same_address(bound: SocketAddr, wanted: SocketAddr) -> bool {
    bound.ip() == wanted.ip() && (wanted.port() == 0 || wanted.port() == bound.port())
}

/// A listening socket of the runtime, bound from synchronous code.
fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Handshakes the kernel may hold for accept (and the SYN queue it sizes by it). std's 128
/// drops a burst of new connections beyond it, each retried a second later; nginx defaults to
/// 511, and the bench's nginx and HAProxy run with 4096 and more. Capped at net.core.somaxconn.
const LISTEN_BACKLOG: u32 = 4096;

fn adopt(fd: OwnedFd) -> std::io::Result<TcpListener> {
    let socket = std::net::TcpListener::from(fd);
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket)
}
