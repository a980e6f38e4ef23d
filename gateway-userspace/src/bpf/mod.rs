//! The kernel fast path: loads the eBPF programs embedded in this binary, attaches the XDP
//! classifier to interfaces and the sk_lookup steering to the network namespace, pins maps and
//! links (so that a restart keeps filtering and steering), and syncs the maps by diff.

pub mod plan;

use std::fs::File;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues, SockMap};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{SkLookup, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use gateway_common::{
    Counters, LAYOUT, Listener, ListenerKey, SourceKey, maps, programs, reason, sockets,
};
use serde::Serialize;

use plan::{Applied, Change, WantedListener};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded so a user runs one binary.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf.o"));

/// The proxy's sockets that steered connections are handed to: one per kind of listener and
/// address family (IPv6 ones are absent on a node without IPv6).
pub struct SteeringSockets {
    pub http: Family<tokio::net::TcpListener>,
    pub https: Family<tokio::net::TcpListener>,
    /// Layer 4 TCP: ports relayed whole and TLS passed through.
    pub stream: Family<tokio::net::TcpListener>,
    pub udp: Family<tokio::net::UdpSocket>,
}

/// An IPv4 socket, and its IPv6 twin where the node has IPv6.
pub struct Family<S> {
    pub v4: std::sync::Arc<S>,
    pub v6: Option<std::sync::Arc<S>>,
}

impl<S> Family<S> {
    /// The IPv4 socket, then the IPv6 one.
    pub fn each(&self) -> impl Iterator<Item = std::sync::Arc<S>> + '_ {
        std::iter::once(self.v4.clone()).chain(self.v6.clone())
    }
}

impl<S: std::os::fd::AsFd> Family<S> {
    fn fds(
        &self,
    ) -> (
        std::os::fd::BorrowedFd<'_>,
        Option<std::os::fd::BorrowedFd<'_>>,
    ) {
        (self.v4.as_fd(), self.v6.as_ref().map(|s| s.as_fd()))
    }
}

/// The pinned sk_lookup link, in the pin folder.
const SK_LOOKUP_LINK: &str = "sk_lookup_link";
/// bpffs's magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Driver (native) mode, or generic mode where the driver has no XDP support or is veth
    /// (where native mode costs other traffic most of its throughput).
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// Where and how the programs are attached.
#[derive(Clone, Debug)]
pub struct BpfSettings {
    /// Folder on bpffs for the pinned maps and links.
    pub pin_dir: PathBuf,
    /// Interfaces that get the XDP classifier.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
}

/// The loaded programs and what their maps hold.
pub struct FastPath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    applied: Applied,
    /// Each interface and the XDP mode it got.
    pub attached: Vec<(String, &'static str)>,
}

impl FastPath {
    /// Loads the programs (reusing the maps a previous run pinned), attaches them, and puts
    /// the proxy's listening sockets into the SOCKETS map.
    pub fn start(settings: &BpfSettings, sockets: &SteeringSockets) -> Result<Self> {
        if OBJECT.is_empty() {
            bail!(
                "this binary was built without its eBPF programs (build with `cargo xtask build-ebpf` first)"
            );
        }
        let pin_dir = settings.pin_dir.clone();
        ensure_bpffs(&pin_dir)?;
        replace_other_layout(&pin_dir)?;
        std::fs::create_dir_all(&pin_dir)
            .with_context(|| format!("creating the pin folder {}", pin_dir.display()))?;
        // Which sources share a SYN budget bucket must not be predictable from outside.
        let seed = crate::random::next_u64() as u32;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .override_global("SYN_HASH_SEED", &seed, true)
            .load(OBJECT)
            .context("loading the eBPF programs")?;

        let sk_lookup: &mut SkLookup = ebpf
            .program_mut(programs::SK_LOOKUP)
            .context("sk_lookup program missing")?
            .try_into()?;
        sk_lookup.load().context("loading the sk_lookup program")?;
        let sk_lookup_link = pin_dir.join(SK_LOOKUP_LINK);
        // A link pinned by a previous run keeps steering with the same pinned maps.
        if !sk_lookup_link.exists() {
            let netns =
                File::open("/proc/self/ns/net").context("opening this network namespace")?;
            let id = sk_lookup.attach(netns).context("attaching sk_lookup")?;
            let link = FdLink::from(sk_lookup.take_link(id)?);
            link.pin(&sk_lookup_link)
                .context("pinning the sk_lookup link")?;
        }

        let xdp: &mut Xdp = ebpf
            .program_mut(programs::XDP)
            .context("XDP program missing")?
            .try_into()?;
        xdp.load().context("loading the XDP program")?;
        let mut attached = Vec::new();
        for interface in &settings.interfaces {
            let link_path = pin_dir.join(format!("xdp_{interface}"));
            let mode = if link_path.exists() {
                // Replace the program of the pinned link atomically: no packet goes unfiltered.
                let pinned = PinnedLink::from_pin(&link_path)?;
                let link = XdpLink::try_from(FdLink::from(pinned))?;
                xdp.attach_to_link(link)
                    .with_context(|| format!("replacing the XDP program on {interface}"))?;
                "kept (pinned link)"
            } else {
                let (id, mode) = attach_xdp(xdp, interface, settings.mode)?;
                let link = FdLink::try_from(xdp.take_link(id)?)?;
                link.pin(&link_path)
                    .with_context(|| format!("pinning the XDP link of {interface}"))?;
                mode
            };
            attached.push((interface.clone(), mode));
        }

        let mut layout: Array<_, u32> = Array::try_from(map_mut(&mut ebpf, maps::LAYOUT)?)?;
        layout
            .set(0, LAYOUT, 0)
            .context("recording the maps' layout")?;

        let applied = read_applied(&mut ebpf)?;
        let mut fast_path = Self {
            ebpf,
            pin_dir,
            applied,
            attached,
        };
        for (slot, family) in [
            (sockets::HTTP, sockets.http.fds()),
            (sockets::HTTPS, sockets.https.fds()),
            (sockets::STREAM, sockets.stream.fds()),
            (sockets::UDP, sockets.udp.fds()),
        ] {
            let (v4, v6) = family;
            fast_path.put_socket(slot, v4)?;
            if let Some(v6) = v6 {
                fast_path.put_socket(sockets::IPV6 + slot, v6)?;
            }
        }
        Ok(fast_path)
    }

    /// Puts a proxy socket into SOCKETS[`slot`] (a slot of its address family).
    pub fn put_socket(&mut self, slot: u32, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        let mut socket_map = SockMap::try_from(map_mut(&mut self.ebpf, maps::SOCKETS)?)?;
        socket_map
            .set(slot, &fd, 0)
            .with_context(|| format!("adding a proxy socket to SOCKETS[{slot}]"))
    }

    /// Empties SOCKETS[`slot`] (the map holds a reference to its socket until then).
    pub fn clear_socket(&mut self, slot: u32) -> Result<()> {
        let mut socket_map = SockMap::try_from(map_mut(&mut self.ebpf, maps::SOCKETS)?)?;
        match socket_map.clear_index(&slot) {
            Ok(()) => Ok(()),
            // Already empty.
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("emptying SOCKETS[{slot}]")),
        }
    }

    /// Brings the maps to `wanted` by diff; returns the number of changes made.
    pub fn sync(
        &mut self,
        wanted: &std::collections::BTreeMap<ListenerKey, WantedListener>,
    ) -> Result<usize> {
        let (list, next) = plan::changes(&self.applied, wanted).map_err(anyhow::Error::msg)?;
        let count = list.len();
        let result = list.into_iter().try_for_each(|change| self.apply(change));
        match result {
            Ok(()) => self.applied = next,
            // Start the next sync from what the maps really hold.
            Err(_) => self.applied = read_applied(&mut self.ebpf)?,
        }
        result.map(|()| count)
    }

    fn apply(&mut self, change: Change) -> Result<()> {
        match change {
            Change::PutAllow((key, bits)) => {
                let mut allow: LpmTrie<_, SourceKey, u32> =
                    LpmTrie::try_from(map_mut(&mut self.ebpf, maps::ALLOW)?)?;
                allow.insert(&Key::new(bits, key), 1, 0)?;
            }
            Change::DeleteAllow((key, bits)) => {
                let mut allow: LpmTrie<_, SourceKey, u32> =
                    LpmTrie::try_from(map_mut(&mut self.ebpf, maps::ALLOW)?)?;
                allow.remove(&Key::new(bits, key))?;
            }
            Change::PutListener(key, listener) => {
                let mut listeners: HashMap<_, ListenerKey, Listener> =
                    HashMap::try_from(map_mut(&mut self.ebpf, maps::LISTENERS)?)?;
                listeners.insert(key, listener, 0)?;
            }
            Change::DeleteListener(key) => {
                let mut listeners: HashMap<_, ListenerKey, Listener> =
                    HashMap::try_from(map_mut(&mut self.ebpf, maps::LISTENERS)?)?;
                listeners.remove(&key)?;
            }
            Change::ResetCounters(id) => {
                let mut stats: PerCpuArray<_, Counters> =
                    PerCpuArray::try_from(map_mut(&mut self.ebpf, maps::STATS)?)?;
                let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
                for r in 0..reason::COUNT {
                    let zeros = PerCpuValues::try_from(vec![Counters::default(); cpus])?;
                    stats.set(id * reason::COUNT + r, zeros, 0)?;
                }
            }
        }
        Ok(())
    }

    /// The folder the maps and links are pinned in.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }
}

/// Pins of another layout (an older gateway's maps and programs, whose keys and socket slots
/// differ) cannot be shared: they are removed, and the fast path starts afresh, which leaves
/// VIPs unsteered for the moment until the new link is attached.
fn replace_other_layout(pin_dir: &Path) -> Result<()> {
    let pinned = [maps::LISTENERS, SK_LOOKUP_LINK]
        .iter()
        .any(|name| pin_dir.join(name).exists());
    if !pinned {
        return Ok(());
    }
    let found = MapData::from_pin(pin_dir.join(maps::LAYOUT))
        .ok()
        .and_then(|data| {
            let layout: Array<_, u32> = Array::try_from(Map::from_map_data(data).ok()?).ok()?;
            layout.get(&0, 0).ok()
        });
    if found == Some(LAYOUT) {
        return Ok(());
    }
    tracing::warn!(
        found = ?found,
        expected = LAYOUT,
        pin_dir = %pin_dir.display(),
        "the pinned fast path is of another layout (an older gateway's): replacing it"
    );
    detach(pin_dir).context("removing the pins of another layout")?;
    Ok(())
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("map {name} missing"))
}

fn attach_xdp(
    xdp: &mut Xdp,
    interface: &str,
    mode: AttachMode,
) -> Result<(aya::programs::xdp::XdpLinkId, &'static str)> {
    match mode {
        AttachMode::Native => Ok((xdp_attach(xdp, interface, XdpMode::Driver)?, "native")),
        AttachMode::Generic => Ok((xdp_attach(xdp, interface, XdpMode::Skb)?, "generic")),
        // Native XDP on veth turns off GRO and copies packets: measured, it cuts TCP throughput
        // of unrelated traffic by three quarters, where generic mode costs nothing.
        AttachMode::Auto if driver_of(interface).as_deref() == Some("veth") => {
            Ok((xdp_attach(xdp, interface, XdpMode::Skb)?, "generic (veth)"))
        }
        AttachMode::Auto => match xdp_attach(xdp, interface, XdpMode::Driver) {
            Ok(id) => Ok((id, "native")),
            Err(native_error) => {
                tracing::info!(interface, error = %native_error, "no native XDP; using generic mode");
                Ok((xdp_attach(xdp, interface, XdpMode::Skb)?, "generic"))
            }
        },
    }
}

/// The kernel driver of an interface (ethtool's GDRVINFO), e.g. `veth`, `mlx5_core`.
fn driver_of(interface: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.as_bytes();
    if name.len() >= request.ifr_name.len() {
        return None;
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(name) {
        *slot = *byte as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: a datagram socket for the ioctl, closed below; the request points at `info`,
    // which outlives the call.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if socket < 0 {
            return None;
        }
        let rc = libc::ioctl(socket, SIOCETHTOOL, &mut request);
        libc::close(socket);
        if rc != 0 {
            return None;
        }
    }
    let end = info
        .driver
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

fn xdp_attach(
    xdp: &mut Xdp,
    interface: &str,
    mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId> {
    xdp.attach(interface, mode)
        .with_context(|| format!("attaching XDP to {interface} in {mode:?} mode"))
}

/// What the pinned maps hold (after a restart, the previous run's listeners).
fn read_applied(ebpf: &mut Ebpf) -> Result<Applied> {
    let mut applied = Applied::default();
    let listeners: HashMap<_, ListenerKey, Listener> =
        HashMap::try_from(map_mut(ebpf, maps::LISTENERS)?)?;
    for entry in listeners.iter() {
        let (key, listener) = entry?;
        applied.listeners.insert(key, listener);
    }
    let allow: LpmTrie<_, SourceKey, u32> = LpmTrie::try_from(map_mut(ebpf, maps::ALLOW)?)?;
    for key in allow.keys() {
        let key = key?;
        applied.allow.insert((key.data(), key.prefix_len()));
    }
    Ok(applied)
}

/// Mounts bpffs on /sys/fs/bpf when nothing is mounted there (as on a fresh host).
fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(root) || is_bpffs(root) {
        return Ok(());
    }
    let source = c"bpf";
    let target = c"/sys/fs/bpf";
    // SAFETY: valid NUL-terminated strings and no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting bpffs on /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    }
}

/// The counters of one listener.
#[derive(Debug, Serialize)]
pub struct ListenerStats {
    pub address: std::net::SocketAddr,
    pub protocol: &'static str,
    pub id: u32,
    pub allow_list: bool,
    /// Per reason (`passed`, `dropped_acl`, `dropped_syn_budget`): packets and bytes.
    pub counters: std::collections::BTreeMap<&'static str, Count>,
}

/// Packets and bytes, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// Every counter of the fast path.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub listeners: Vec<ListenerStats>,
    /// Packets that were for no listener and passed untouched.
    pub other: Count,
}

/// Reads the counters from the maps pinned in `pin_dir` (works from another process too).
pub fn read_stats(pin_dir: &Path) -> Result<StatsReport> {
    let pinned = |name: &str| -> Result<Map> {
        let data = MapData::from_pin(pin_dir.join(name))
            .with_context(|| format!("opening the pinned map {}/{name}", pin_dir.display()))?;
        Ok(Map::from_map_data(data)?)
    };
    let listeners: HashMap<_, ListenerKey, Listener> = HashMap::try_from(pinned(maps::LISTENERS)?)?;
    let stats: PerCpuArray<_, Counters> = PerCpuArray::try_from(pinned(maps::STATS)?)?;
    let sum = |slot: u32| -> Result<Count> {
        let values = stats.get(&slot, 0)?;
        Ok(values.iter().fold(Count::default(), |acc, c| Count {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    };

    let mut report = StatsReport {
        listeners: Vec::new(),
        other: sum(reason::OTHER_SLOT)?,
    };
    for entry in listeners.iter() {
        let (key, listener) = entry?;
        let ip = std::net::Ipv6Addr::from(key.addr);
        let ip = ip
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(ip), std::net::IpAddr::V4);
        let mut counters = std::collections::BTreeMap::new();
        for (r, name) in reason::NAMES.iter().enumerate() {
            counters.insert(*name, sum(listener.id * reason::COUNT + r as u32)?);
        }
        report.listeners.push(ListenerStats {
            address: std::net::SocketAddr::new(ip, key.port),
            protocol: match listener.socket {
                sockets::HTTPS => "https",
                sockets::STREAM => "tcp",
                sockets::UDP => "udp",
                sockets::HTTP => "http",
                _ => "quic",
            },
            id: listener.id,
            allow_list: listener.flags & gateway_common::flags::ALLOW_LIST != 0,
            counters,
        });
    }
    report.listeners.sort_by_key(|l| l.address);
    Ok(report)
}

/// Detaches everything a gateway pinned in `pin_dir` and removes the folder: links (so the
/// programs stop), then maps. Returns what was removed.
pub fn detach(pin_dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pin_dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // Links first: once a link is gone, its program no longer runs.
    paths.sort_by_key(|p| !is_link(p));
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if is_link(&path) {
            let link = PinnedLink::from_pin(&path)
                .with_context(|| format!("opening link {}", path.display()))?;
            drop(
                link.unpin()
                    .with_context(|| format!("unpinning {}", path.display()))?,
            );
        } else {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        removed.push(name);
    }
    std::fs::remove_dir(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
    Ok(removed)
}

fn is_link(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == SK_LOOKUP_LINK || n.starts_with("xdp_"))
}
