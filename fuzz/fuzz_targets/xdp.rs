//! The XDP program on frames built from fuzz input through BPF_PROG_TEST_RUN (needs root and
//! `cargo xtask build-ebpf`): every frame gets PASS or DROP, and a frame that is not TCP to a
//! listener's address and port is always passed.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use aya::maps::HashMap;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use gateway_common::{Listener, ListenerKey};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const LISTENER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const LISTENER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

#[derive(Debug, Arbitrary)]
struct Frame {
    tags: u8,
    tag_tpids: (bool, bool),
    v6: bool,
    source: [u8; 16],
    to_listener: bool,
    other_destination: [u8; 16],
    protocol: u8,
    ihl: u8,
    fragment: u16,
    to_listener_port: bool,
    port: u16,
    tcp_offset: u8,
    flags: u8,
    tail: Vec<u8>,
    cut: u8,
}

impl Frame {
    fn bytes(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for i in 0..self.tags % 3 {
            let qinq = if i == 0 { self.tag_tpids.0 } else { self.tag_tpids.1 };
            f.extend_from_slice(&(if qinq { 0x88a8u16 } else { 0x8100 }).to_be_bytes());
            f.extend_from_slice(&[0, 10]);
        }
        f.extend_from_slice(&(if self.v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
        let port = if self.to_listener_port { 80 } else { self.port };
        let mut tcp = vec![0u8; 20];
        tcp[2..4].copy_from_slice(&port.to_be_bytes());
        tcp[12] = self.tcp_offset;
        tcp[13] = self.flags;
        tcp.extend_from_slice(&self.tail);
        if self.v6 {
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(tcp.len() as u16).to_be_bytes());
            ip[6] = self.protocol;
            ip[8..24].copy_from_slice(&self.source);
            let destination = if self.to_listener { LISTENER_V6.octets() } else { self.other_destination };
            ip[24..40].copy_from_slice(&destination);
            f.extend(ip);
        } else {
            let ihl = usize::from(self.ihl % 16).max(5);
            let mut ip = vec![0u8; ihl * 4];
            ip[0] = 0x40 | self.ihl % 16;
            let total = (ip.len() + tcp.len()) as u16;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[6..8].copy_from_slice(&self.fragment.to_be_bytes());
            ip[9] = self.protocol;
            ip[12..16].copy_from_slice(&self.source[..4]);
            let destination = if self.to_listener {
                LISTENER_V4.octets()
            } else {
                self.other_destination[..4].try_into().unwrap()
            };
            ip[16..20].copy_from_slice(&destination);
            f.extend(ip);
        }
        f.extend(tcp);
        // The kernel refuses test frames shorter than an Ethernet header.
        f.truncate(f.len().saturating_sub(usize::from(self.cut)).max(14));
        f
    }

    /// Whether the frame could be for the listener: TCP to its address and port.
    fn maybe_for_listener(&self) -> bool {
        let to_address = self.to_listener
            || (self.v6 && self.other_destination == LISTENER_V6.octets())
            || (!self.v6 && self.other_destination[..4] == LISTENER_V4.octets());
        let to_port = self.to_listener_port || self.port == 80;
        to_address && to_port && self.protocol == 6
    }
}

static PROGRAM: LazyLock<Mutex<Ebpf>> = LazyLock::new(|| {
    let object = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/gateway-ebpf.o");
    let bytes = std::fs::read(&object).expect("run `cargo xtask build-ebpf` first");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/gw-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&pin_dir).expect("bpffs mounted at /sys/fs/bpf, and root");
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&pin_dir)
        .load(&bytes)
        .expect("load the eBPF object");
    let xdp: &mut Xdp = ebpf.program_mut("gateway_xdp").unwrap().try_into().unwrap();
    xdp.load().expect("load the XDP program");
    let mut listeners: HashMap<_, ListenerKey, Listener> =
        HashMap::try_from(ebpf.map_mut("LISTENERS").unwrap()).unwrap();
    for addr in [LISTENER_V4.to_ipv6_mapped().octets(), LISTENER_V6.octets()] {
        let key = ListenerKey { addr, port: 80, protocol: 6, _pad: 0 };
        let listener = Listener { id: 0, socket: 0, flags: 0, syn_rate: 1, syn_burst: 1 };
        listeners.insert(key, listener, 0).unwrap();
    }
    Mutex::new(ebpf)
});

fuzz_target!(|frame: Frame| {
    let bytes = frame.bytes();
    let ebpf = PROGRAM.lock().unwrap();
    let xdp: &Xdp = ebpf.program("gateway_xdp").unwrap().try_into().unwrap();
    let mut out = vec![0u8; bytes.len() + 256];
    let action = xdp
        .test_run(TestRunOptions {
            data_in: Some(&bytes),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value;
    assert!(action == XDP_PASS || action == XDP_DROP, "{frame:?}: {action}");
    if !frame.maybe_for_listener() {
        assert_eq!(action, XDP_PASS, "{frame:?}");
    }
});
