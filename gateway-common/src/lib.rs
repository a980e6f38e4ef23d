//! Types shared by the kernel programs (`gateway-ebpf`) and the daemon (`gateway-userspace`).
//!
//! Every map key and value is `#[repr(C)]`, `Copy`, made of integers only and free of implicit
//! padding (explicit `_pad` fields where alignment needs them), so that the kernel and userspace
//! agree on the layout byte for byte. With the `user` feature the types implement `aya::Pod`.
#![no_std]

/// Most listeners (VIP:port pairs) one gateway serves; sizes the per-listener counters.
pub const MAX_LISTENERS: u32 = 4096;
/// Most allow-list entries (CIDRs over all listeners).
pub const MAX_ALLOW_ENTRIES: u32 = 65536;

/// The layout of the maps (their keys, values and slots): a daemon finding pins of another
/// layout (an older gateway's) replaces them whole instead of sharing them. Raise it with any
/// change to a map's meaning.
pub const LAYOUT: u32 = 4;

/// Map names, as the programs define them and the daemon pins them.
pub mod maps {
    /// One entry: the [`super::LAYOUT`] of the pinned maps.
    pub const LAYOUT: &str = "LAYOUT";
    pub const LISTENERS: &str = "LISTENERS";
    pub const ALLOW: &str = "ALLOW";
    pub const SYN_BUDGET: &str = "SYN_BUDGET";
    pub const STATS: &str = "STATS";
    pub const SOCKETS: &str = "SOCKETS";
}

/// Program names (their functions in gateway-ebpf).
pub mod programs {
    pub const XDP: &str = "gateway_xdp";
    pub const SK_LOOKUP: &str = "gateway_sk_lookup";
}

/// A listener: destination address, port and transport protocol of traffic the gateway owns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    /// An IPv6 address, or an IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`), as on the wire.
    pub addr: [u8; 16],
    /// The port, host byte order.
    pub port: u16,
    /// [`protocol::TCP`] or [`protocol::UDP`].
    pub protocol: u8,
    pub _pad: u8,
}

/// IP protocol numbers of the transports a listener can have.
pub mod protocol {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// What the gateway does with a listener's traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Listener {
    /// The listener's slot in the counters, below [`MAX_LISTENERS`].
    pub id: u32,
    /// The proxy socket that takes its connections: an index of the SOCKETS map.
    pub socket: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// New connections (SYN without ACK) per second allowed from one source; 0 for no budget.
    pub syn_rate: u32,
    /// New connections one source may open at once before the rate applies.
    pub syn_burst: u32,
}

/// Bits of [`Listener::flags`].
pub mod flags {
    /// Sources must match the listener's entries in ALLOW; without it every source is allowed.
    pub const ALLOW_LIST: u32 = 1;
}

/// Indexes of the SOCKETS map: the proxy's sockets. A socket takes connections of its own
/// address family only, so IPv6 connections go to the slot [`sockets::IPV6`] further.
pub mod sockets {
    pub const HTTP: u32 = 0;
    pub const HTTPS: u32 = 1;
    /// Layer 4 TCP: ports relayed whole, TLS passed through by server name.
    pub const STREAM: u32 = 2;
    /// Layer 4 UDP: every UDP listener's datagrams, told apart by their original destination.
    pub const UDP: u32 = 3;
    /// HTTP/3: one QUIC socket per port of the HTTPS listeners, slots `QUIC..QUIC + QUIC_PORTS`.
    /// A QUIC reply must leave from the very port its client sent to (the socket's own), while
    /// IP_PKTINFO gives it the VIP as its source address.
    pub const QUIC: u32 = 4;
    pub const QUIC_PORTS: u32 = 16;
    pub const IPV6: u32 = QUIC + QUIC_PORTS;
    pub const COUNT: u32 = 2 * IPV6;
}

/// A source address seen on a listener: the key of ALLOW (an LPM trie, whose prefix covers all
/// 32 bits of `listener` and then the address) and of the SYN budget hashes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub listener: u32,
    /// IPv6, or IPv4 mapped into IPv6, as on the wire.
    pub addr: [u8; 16],
}

/// Bits of a [`SourceKey`] in an LPM prefix before the address starts.
pub const SOURCE_KEY_LISTENER_BITS: u32 = 32;

/// Where a source's two SYN budget buckets are: keyed hashes of its listener and address.
pub mod syn_buckets {
    use super::SourceKey;

    /// Buckets that sources share by hashing (a power of two).
    pub const COUNT: u32 = 65536;

    /// The key of a source's second bucket, from the key of its first.
    #[inline(always)]
    pub fn second_seed(seed: u32) -> u32 {
        seed ^ 0x5bd1_e995
    }

    /// The bucket of `source` under `seed`: multiply and fold per word, then murmur3's
    /// finalizer.
    #[inline(always)]
    pub fn index(source: &SourceKey, seed: u32) -> u32 {
        let mut hash = seed ^ source.listener.wrapping_mul(0x9e37_79b9);
        let a = &source.addr;
        for word in [
            [a[0], a[1], a[2], a[3]],
            [a[4], a[5], a[6], a[7]],
            [a[8], a[9], a[10], a[11]],
            [a[12], a[13], a[14], a[15]],
        ] {
            hash = (hash ^ u32::from_ne_bytes(word)).wrapping_mul(0x85eb_ca6b);
            hash ^= hash >> 13;
        }
        hash = hash.wrapping_mul(0xc2b2_ae35);
        hash ^= hash >> 16;
        hash & (COUNT - 1)
    }
}

/// A token bucket of new connections, shared by the sources that hash to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynBucket {
    /// Tokens left, in thousandths of a connection.
    pub tokens_milli: u64,
    /// When the bucket was last refilled (bpf_ktime_get_ns).
    pub last_ns: u64,
}

/// Packet and byte counters, one slot per CPU in a per-CPU array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// Why a packet was counted: the STATS slot of listener `id` and reason `r` is
/// `id * reason::COUNT + r`; slot [`reason::OTHER_SLOT`] counts traffic of no listener.
pub mod reason {
    pub const PASSED: u32 = 0;
    pub const DROPPED_ACL: u32 = 1;
    pub const DROPPED_SYN_BUDGET: u32 = 2;
    pub const COUNT: u32 = 3;
    /// Packets the gateway does not own (passed untouched).
    pub const OTHER_SLOT: u32 = super::MAX_LISTENERS * COUNT;
    /// Size of the STATS map.
    pub const SLOTS: u32 = OTHER_SLOT + 1;
    /// Names, by reason.
    pub const NAMES: [&str; COUNT as usize] = ["passed", "dropped_acl", "dropped_syn_budget"];
}

const _: () = {
    assert!(core::mem::size_of::<ListenerKey>() == 20);
    assert!(core::mem::size_of::<Listener>() == 20);
    assert!(core::mem::size_of::<SourceKey>() == 20);
    assert!(core::mem::size_of::<SynBucket>() == 16);
    assert!(core::mem::size_of::<Counters>() == 16);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is repr(C), all-integer, with no implicit padding (asserted above), so
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::Listener {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SynBucket {}
    unsafe impl aya::Pod for super::Counters {}
}
