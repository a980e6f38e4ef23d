//! The XDP program run on frames in the kernel (BPF_PROG_TEST_RUN), with maps pinned in a
//! folder of its own, and the frames the tests and the cost measurement build.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, TestRunResult, Xdp};
use aya::{Ebpf, EbpfLoader};
use gateway_common::{
    Counters, Listener, ListenerKey, SOURCE_KEY_LISTENER_BITS, SourceKey, flags, protocol, reason,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// The XDP program loaded from the object `cargo xtask build-ebpf` built, with maps pinned in a
/// folder of its own.
pub struct Program {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl Program {
    pub fn load() -> Option<Program> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: loading eBPF programs needs root (CI runs this as root)");
            return None;
        }
        let object =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/gateway-ebpf.o");
        let bytes = std::fs::read(&object)
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask build-ebpf`)", object.display()));
        ensure_bpffs();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/gwt-frames-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&pin_dir).unwrap();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .load(&bytes)
            .unwrap();
        let xdp: &mut Xdp = ebpf.program_mut("gateway_xdp").unwrap().try_into().unwrap();
        xdp.load().unwrap();
        Some(Program { ebpf, pin_dir })
    }

    /// Adds TCP listener `id` at `address`, allowing `allow` (all sources when empty), with
    /// an optional SYN budget (rate, burst).
    pub fn listener(&mut self, id: u32, address: &str, allow: &[&str], syn: Option<(u32, u32)>) {
        self.add_listener(id, (address, protocol::TCP), allow, syn);
    }

    /// Adds UDP listener `id` at `address`, allowing `allow` (all sources when empty).
    pub fn udp_listener(&mut self, id: u32, address: &str, allow: &[&str]) {
        self.add_listener(id, (address, protocol::UDP), allow, None);
    }

    fn add_listener(
        &mut self,
        id: u32,
        (address, transport): (&str, u8),
        allow: &[&str],
        syn: Option<(u32, u32)>,
    ) {
        let address: SocketAddr = address.parse().unwrap();
        let mut listeners: HashMap<_, ListenerKey, Listener> =
            HashMap::try_from(self.ebpf.map_mut("LISTENERS").unwrap()).unwrap();
        let key = ListenerKey {
            addr: mapped(address.ip()),
            port: address.port(),
            protocol: transport,
            _pad: 0,
        };
        let listener = Listener {
            id,
            socket: 0,
            flags: if allow.is_empty() {
                0
            } else {
                flags::ALLOW_LIST
            },
            syn_rate: syn.map_or(0, |s| s.0),
            syn_burst: syn.map_or(0, |s| s.1),
        };
        listeners.insert(key, listener, 0).unwrap();
        let mut trie: LpmTrie<_, SourceKey, u32> =
            LpmTrie::try_from(self.ebpf.map_mut("ALLOW").unwrap()).unwrap();
        for cidr in allow {
            let (ip, bits) = cidr.split_once('/').unwrap();
            let ip: IpAddr = ip.parse().unwrap();
            let bits: u32 = bits.parse::<u32>().unwrap() + if ip.is_ipv4() { 96 } else { 0 };
            let key = Key::new(
                SOURCE_KEY_LISTENER_BITS + bits,
                SourceKey {
                    listener: id,
                    addr: mapped(ip),
                },
            );
            trie.insert(&key, 1, 0).unwrap();
        }
    }

    /// Runs the program on `frame`; returns its action.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.test_run(frame, 1).return_value
    }

    /// The program's own time per run on `frame`, averaged by the kernel over `repeat` runs.
    pub fn time_per_run(&self, frame: &[u8], repeat: u32) -> std::time::Duration {
        self.test_run(frame, repeat).duration
    }

    fn test_run(&self, frame: &[u8], repeat: u32) -> TestRunResult {
        let xdp: &Xdp = self
            .ebpf
            .program("gateway_xdp")
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })
        .unwrap()
    }

    /// Packets counted for listener `id` and `reason` (all CPUs).
    pub fn counted(&self, id: u32, reason: u32) -> u64 {
        self.slot(id * reason::COUNT + reason)
    }

    pub fn slot(&self, slot: u32) -> u64 {
        let stats: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(self.ebpf.map("STATS").unwrap()).unwrap();
        stats.get(&slot, 0).unwrap().iter().map(|c| c.packets).sum()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

fn ensure_bpffs() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .unwrap();
        assert!(status.success(), "mounting bpffs");
    }
}

pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A TCP header to `port` with `flags`.
pub fn tcp(port: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&port.to_be_bytes());
    h[12] = 0x50;
    h[13] = flags;
    h
}

/// A UDP header to `port`, and a payload.
pub fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&port.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv4 packet with `options` bytes of options (a multiple of 4) and a fragment offset.
pub fn ipv4(
    source: &str,
    destination: &str,
    protocol: u8,
    options: usize,
    fragment_offset: u16,
    payload: &[u8],
) -> Vec<u8> {
    let source: std::net::Ipv4Addr = source.parse().unwrap();
    let destination: std::net::Ipv4Addr = destination.parse().unwrap();
    let header_len = 20 + options;
    let mut h = vec![0u8; header_len];
    h[0] = 0x40 | (header_len / 4) as u8;
    h[2..4].copy_from_slice(&((header_len + payload.len()) as u16).to_be_bytes());
    h[6..8].copy_from_slice(&fragment_offset.to_be_bytes());
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&source.octets());
    h[16..20].copy_from_slice(&destination.octets());
    h.extend_from_slice(payload);
    h
}

pub fn ipv6(source: &str, destination: &str, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let source: std::net::Ipv6Addr = source.parse().unwrap();
    let destination: std::net::Ipv6Addr = destination.parse().unwrap();
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = next_header;
    h[7] = 64;
    h[8..24].copy_from_slice(&source.octets());
    h[24..40].copy_from_slice(&destination.octets());
    h.extend_from_slice(payload);
    h
}

/// An Ethernet frame with `tags` (802.1Q, or 802.1ad outer + 802.1Q inner for two).
pub fn ethernet(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (i, tag) in tags.iter().enumerate() {
        let tpid: u16 = if tags.len() == 2 && i == 0 {
            0x88a8
        } else {
            0x8100
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tag.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn v4_syn(source: &str, destination: &str, port: u16) -> Vec<u8> {
    ethernet(
        &[],
        0x0800,
        &ipv4(source, destination, 6, 0, 0, &tcp(port, SYN)),
    )
}
