//! The gateway's kernel programs.
//!
//! `gateway_xdp` classifies every packet of an interface by destination address and port: what
//! is not for a gateway listener passes untouched; listener traffic from a source outside the
//! listener's allow-list, or opening connections beyond the source's SYN budget, is dropped; the
//! rest passes on to the kernel stack. Everything is counted per listener and reason.
//!
//! `gateway_sk_lookup` hands the connections of every listener to the proxy's one HTTP, HTTPS,
//! layer 4 TCP or UDP socket (HTTP/3: the QUIC socket of the listener's port), so that any
//! number of VIP:port pairs need no socket each and no NAT.
#![no_std]
#![no_main]

use aya_ebpf::bindings::{sk_action, xdp_action};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::{map, sk_lookup, xdp};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{Array, HashMap, LpmTrie, PerCpuArray, SockMap};
use aya_ebpf::programs::{SkLookupContext, XdpContext};
use gateway_common::{
    Counters, Listener, ListenerKey, MAX_ALLOW_ENTRIES, MAX_LISTENERS, SOURCE_KEY_LISTENER_BITS,
    SourceKey, SynBucket, flags, protocol, reason, sockets, syn_buckets,
};

#[map(name = "LISTENERS")]
static LISTENERS: HashMap<ListenerKey, Listener> = HashMap::pinned(MAX_LISTENERS, 0);

#[map(name = "ALLOW")]
static ALLOW: LpmTrie<SourceKey, u32> = LpmTrie::pinned(MAX_ALLOW_ENTRIES, 0);

/// New-connection token buckets, shared by hashing: each source (per listener) owns two of
/// them, chosen by two keyed hashes. A fixed array, not a map of sources: a flood from spoofed
/// addresses costs two array lookups per SYN, never an insertion or an eviction.
#[map(name = "SYN_BUDGET")]
static SYN_BUDGET: Array<SynBucket> = Array::pinned(syn_buckets::COUNT, 0);

/// The key of the bucket hashes, drawn by the daemon at load (`set_global`): sources that
/// share a bucket cannot be picked in advance.
#[unsafe(no_mangle)]
static SYN_HASH_SEED: u32 = 0;

#[map(name = "STATS")]
static STATS: PerCpuArray<Counters> = PerCpuArray::pinned(reason::SLOTS, 0);

#[map(name = "SOCKETS")]
static SOCKETS: SockMap = SockMap::pinned(sockets::COUNT, 0);

/// The layout of these maps, written by the daemon (`gateway_common::LAYOUT`); never read here.
#[map(name = "LAYOUT")]
static LAYOUT: Array<u32> = Array::pinned(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
/// A bucket idle longer than this is simply full again (and the arithmetic cannot overflow).
const MAX_REFILL_NS: u64 = 10_000_000_000;

#[xdp]
pub fn gateway_xdp(ctx: XdpContext) -> u32 {
    match classify(&ctx) {
        Some(action) => action,
        None => {
            count(reason::OTHER_SLOT, (ctx.data_end() - ctx.data()) as u64);
            xdp_action::XDP_PASS
        }
    }
}

/// A pointer to a `T` at `offset` into the packet, if the packet is long enough.
#[inline(always)]
fn at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Reads a `T` at `offset`; `None` (pass the packet) when it does not fit.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: `at` checked that the whole `T` lies inside the packet; unaligned read because
    // headers are not aligned for `T`.
    at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

/// `None` means "not for a listener, or not parsable": pass untouched.
#[inline(always)]
fn classify(ctx: &XdpContext) -> Option<u32> {
    let mut ether_type = u16::from_be(read::<u16>(ctx, 12)?);
    let mut offset = ETH_HLEN;
    // Up to two VLAN tags (802.1Q, or QinQ).
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = u16::from_be(read::<u16>(ctx, offset + 2)?);
        offset += 4;
    }
    let mut source = [0u8; 16];
    let mut destination = [0u8; 16];
    let (transport, transport_protocol) = match ether_type {
        ETH_P_IPV4 => {
            let version_ihl = read::<u8>(ctx, offset)?;
            let header_len = usize::from(version_ihl & 0x0f) * 4;
            if version_ihl >> 4 != 4 || header_len < 20 {
                return None;
            }
            // Only the first fragment carries the transport header.
            let fragment = u16::from_be(read::<u16>(ctx, offset + 6)?);
            if fragment & 0x1fff != 0 {
                return None;
            }
            let ip_protocol = transport(read::<u8>(ctx, offset + 9)?)?;
            source[10] = 0xff;
            source[11] = 0xff;
            destination[10] = 0xff;
            destination[11] = 0xff;
            source[12..].copy_from_slice(&read::<[u8; 4]>(ctx, offset + 12)?);
            destination[12..].copy_from_slice(&read::<[u8; 4]>(ctx, offset + 16)?);
            (offset + header_len, ip_protocol)
        }
        ETH_P_IPV6 => {
            // Extension headers before TCP or UDP are rare on service traffic: passed, not
            // parsed.
            if read::<u8>(ctx, offset)? >> 4 != 6 {
                return None;
            }
            let ip_protocol = transport(read::<u8>(ctx, offset + 6)?)?;
            source = read::<[u8; 16]>(ctx, offset + 8)?;
            destination = read::<[u8; 16]>(ctx, offset + 24)?;
            (offset + 40, ip_protocol)
        }
        _ => return None,
    };
    // The destination port is at the same offset in TCP and UDP headers; a TCP header cut
    // before its flags is not parsable.
    let port = u16::from_be(read::<u16>(ctx, transport + 2)?);
    let tcp_flags = match transport_protocol {
        protocol::TCP => read::<u8>(ctx, transport + 13)?,
        _ => 0,
    };
    let bytes = (ctx.data_end() - ctx.data()) as u64;

    let key = ListenerKey {
        addr: destination,
        port,
        protocol: transport_protocol,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once; a concurrent update can at worst give a mix of
    // old and new fields for this one packet.
    let listener = (unsafe { LISTENERS.get(&key) }).copied()?;

    let slot = |r: u32| listener.id * reason::COUNT + r;
    let source_key = SourceKey {
        listener: listener.id,
        addr: source,
    };
    if listener.flags & flags::ALLOW_LIST != 0
        && ALLOW
            .get(Key::new(SOURCE_KEY_LISTENER_BITS + 128, source_key))
            .is_none()
    {
        count(slot(reason::DROPPED_ACL), bytes);
        return Some(xdp_action::XDP_DROP);
    }
    let opens_connection = tcp_flags & TCP_FLAG_SYN != 0 && tcp_flags & TCP_FLAG_ACK == 0;
    if opens_connection && listener.syn_rate > 0 && !take_syn_token(&listener, &source_key) {
        count(slot(reason::DROPPED_SYN_BUDGET), bytes);
        return Some(xdp_action::XDP_DROP);
    }
    count(slot(reason::PASSED), bytes);
    Some(xdp_action::XDP_PASS)
}

/// The transport protocol, if it is one listeners can have.
#[inline(always)]
fn transport(ip_protocol: u8) -> Option<u8> {
    (ip_protocol == protocol::TCP || ip_protocol == protocol::UDP).then_some(ip_protocol)
}

/// Takes one new-connection token from each of the source's two buckets; `false` when both
/// are empty. A source that shares one of its buckets with a flooding source by chance keeps
/// the other, so only the flooding source is held to the budget.
#[inline(always)]
fn take_syn_token(listener: &Listener, source: &SourceKey) -> bool {
    // SAFETY: a global of this program, set at load and read only here.
    let seed = unsafe { core::ptr::read_volatile(&SYN_HASH_SEED) };
    let (Some(first), Some(second)) = (
        SYN_BUDGET.get_ptr_mut(syn_buckets::index(source, seed)),
        SYN_BUDGET.get_ptr_mut(syn_buckets::index(source, syn_buckets::second_seed(seed))),
    ) else {
        return true;
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: both pointers come from array lookups; concurrent updates from other CPUs may
    // race, which only makes the budget approximate.
    unsafe {
        let first_tokens = refilled(&*first, listener, now);
        let second_tokens = refilled(&*second, listener, now);
        let allowed = first_tokens >= 1000 || second_tokens >= 1000;
        let spend = if allowed { 1000 } else { 0 };
        *first = SynBucket {
            tokens_milli: first_tokens.saturating_sub(spend),
            last_ns: now,
        };
        *second = SynBucket {
            tokens_milli: second_tokens.saturating_sub(spend),
            last_ns: now,
        };
        allowed
    }
}

/// A bucket's tokens (thousandths) at `now`. A bucket never used (all zero) is full.
#[inline(always)]
fn refilled(bucket: &SynBucket, listener: &Listener, now: u64) -> u64 {
    let full = u64::from(listener.syn_burst.max(1)) * 1000;
    let elapsed = now.saturating_sub(bucket.last_ns).min(MAX_REFILL_NS);
    let refill = elapsed * u64::from(listener.syn_rate) / 1_000_000;
    (bucket.tokens_milli + refill).min(full)
}

#[inline(always)]
fn count(slot: u32, bytes: u64) {
    if let Some(counters) = STATS.get_ptr_mut(slot) {
        // SAFETY: this CPU's own slot of a per-CPU array; nothing else writes it meanwhile.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += bytes;
        }
    }
}

#[sk_lookup]
pub fn gateway_sk_lookup(ctx: SkLookupContext) -> u32 {
    let lookup = ctx.lookup;
    // The verifier only accepts context reads at constant offsets from the context pointer:
    // every field is read on its own, volatile so that the compiler cannot merge the reads
    // into pointer arithmetic.
    // SAFETY: the kernel passes a valid bpf_sk_lookup for the duration of the call.
    let field = |f: *const u32| unsafe { core::ptr::read_volatile(f) };
    // SAFETY: only field addresses are taken here, never dereferenced outside `field`.
    let (ip_protocol, family) = unsafe { (field(&raw const (*lookup).protocol), field(&raw const (*lookup).family)) };
    if ip_protocol != u32::from(protocol::TCP) && ip_protocol != u32::from(protocol::UDP) {
        return sk_action::SK_PASS;
    }
    // Every field is read before branching on the family, so that no branch merges its reads
    // into a computed offset. SAFETY: as above.
    let (ip4, ip6, port) = unsafe {
        (
            field(&raw const (*lookup).local_ip4),
            [
                field(&raw const (*lookup).local_ip6[0]),
                field(&raw const (*lookup).local_ip6[1]),
                field(&raw const (*lookup).local_ip6[2]),
                field(&raw const (*lookup).local_ip6[3]),
            ],
            field(&raw const (*lookup).local_port),
        )
    };
    let mut addr = [0u8; 16];
    let family_slot = match family {
        AF_INET => {
            addr[10] = 0xff;
            addr[11] = 0xff;
            addr[12..].copy_from_slice(&ip4.to_ne_bytes());
            0
        }
        AF_INET6 => {
            for (i, word) in ip6.iter().enumerate() {
                addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            sockets::IPV6
        }
        _ => return sk_action::SK_PASS,
    };

    let key = ListenerKey {
        addr,
        port: port as u16,
        protocol: ip_protocol as u8,
        _pad: 0,
    };

    // SAFETY: copied out at once, as in the XDP program.
    if let Some(listener) = unsafe { LISTENERS.get(&key) }.copied() {
        // Without a socket in the slot (the proxy is restarting), the usual lookup runs.
        let _ = SOCKETS.redirect_sk_lookup(&ctx, listener.socket + family_slot, 0);

    }
    sk_action::SK_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
