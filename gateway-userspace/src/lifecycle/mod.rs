//! How the daemon stops and restarts without failing requests: a graceful drain on SIGTERM,
//! and a hand-off of its listening sockets to a new process over a Unix socket.

pub mod drain;
pub mod handoff;
pub mod quic_relay;
pub mod sockets;
pub mod workers;

pub use drain::{Drain, DrainState};
pub use sockets::Sockets;
pub use workers::Workers;
