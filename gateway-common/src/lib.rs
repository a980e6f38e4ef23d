//! Types shared by the kernel programs (`gateway-ebpf`) and the daemon (`gateway-userspace`).
//!
//! Every map key and value is `#[repr(C)]`, `Copy`, made of integers only and free of implicit
//! padding, so that the kernel and userspace agree on the layout byte for byte.
#![no_std]

/// Packet and byte counters, one slot per CPU in a per-CPU array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// Name of the per-CPU array that holds the XDP program's [`Counters`].
pub const STATS_MAP: &str = "STATS";

/// Slots of [`STATS_MAP`].
pub mod stat {
    /// Every packet the XDP program saw.
    pub const SEEN: u32 = 0;
    /// Number of slots in the map.
    pub const COUNT: u32 = 1;
}

const _: () = assert!(core::mem::size_of::<Counters>() == 16);
