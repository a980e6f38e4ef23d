//! Test hosts in network namespaces: a gateway namespace and a client namespace joined by a
//! veth pair, with a VIP on the gateway side that no socket binds. Names are unique per test
//! run, and everything is removed on drop, also when a test panics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The addresses every topology uses; they exist only inside its namespaces.
pub const GATEWAY_ADDR: &str = "198.18.0.1";
pub const CLIENT_ADDR: &str = "198.18.0.2";
/// A second client address, routed the same way, for "another source".
pub const OTHER_CLIENT_ADDR: &str = "198.18.2.2";
pub const VIP: &str = "198.18.1.1";
pub const GATEWAY_ADDR6: &str = "fd00:18::1";
pub const CLIENT_ADDR6: &str = "fd00:18::2";
pub const OTHER_CLIENT_ADDR6: &str = "fd00:18::3";
pub const VIP6: &str = "fd00:18:1::1";
/// The gateway's side of the veth pair.
pub const GATEWAY_IFACE: &str = "veth-gw";

/// Two namespaces and a veth pair between them.
pub struct Topology {
    pub gateway_ns: String,
    pub client_ns: String,
    /// A pin folder on bpffs for this topology's gateway.
    pub pin_dir: PathBuf,
}

impl Topology {
    /// Builds the topology, or `None` (saying why) where namespaces cannot be made: not root.
    pub fn new() -> Option<Topology> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: network namespace tests need root (CI runs them as root)");
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let topology = Topology {
            gateway_ns: format!("gwt-gw-{id}"),
            client_ns: format!("gwt-cl-{id}"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/gwt-{id}")),
        };
        let (gw, cl) = (&topology.gateway_ns, &topology.client_ns);
        for args in [
            vec!["netns", "add", gw],
            vec!["netns", "add", cl],
            vec![
                "link",
                "add",
                GATEWAY_IFACE,
                "netns",
                gw,
                "type",
                "veth",
                "peer",
                "name",
                "veth-cl",
                "netns",
                cl,
            ],
            vec!["-n", gw, "link", "set", "lo", "up"],
            vec!["-n", cl, "link", "set", "lo", "up"],
            vec![
                "-n",
                gw,
                "addr",
                "add",
                &format!("{GATEWAY_ADDR}/24"),
                "dev",
                GATEWAY_IFACE,
            ],
            vec![
                "-n",
                gw,
                "addr",
                "add",
                &format!("{GATEWAY_ADDR6}/64"),
                "dev",
                GATEWAY_IFACE,
                "nodad",
            ],
            vec!["-n", gw, "link", "set", GATEWAY_IFACE, "up"],
            vec![
                "-n",
                cl,
                "addr",
                "add",
                &format!("{CLIENT_ADDR}/24"),
                "dev",
                "veth-cl",
            ],
            vec![
                "-n",
                cl,
                "addr",
                "add",
                &format!("{OTHER_CLIENT_ADDR}/32"),
                "dev",
                "veth-cl",
            ],
            vec![
                "-n",
                cl,
                "addr",
                "add",
                &format!("{CLIENT_ADDR6}/64"),
                "dev",
                "veth-cl",
                "nodad",
            ],
            vec![
                "-n",
                cl,
                "addr",
                "add",
                &format!("{OTHER_CLIENT_ADDR6}/64"),
                "dev",
                "veth-cl",
                "nodad",
            ],
            vec!["-n", cl, "link", "set", "veth-cl", "up"],
            // The VIPs: local to the gateway namespace, bound by no socket.
            vec!["-n", gw, "addr", "add", &format!("{VIP}/32"), "dev", "lo"],
            vec!["-n", gw, "addr", "add", &format!("{VIP6}/128"), "dev", "lo"],
            vec![
                "-n",
                gw,
                "route",
                "add",
                &format!("{OTHER_CLIENT_ADDR}/32"),
                "dev",
                GATEWAY_IFACE,
            ],
            vec![
                "-n",
                cl,
                "route",
                "add",
                "198.18.1.0/24",
                "via",
                GATEWAY_ADDR,
            ],
            vec![
                "-n",
                cl,
                "-6",
                "route",
                "add",
                "fd00:18:1::/64",
                "via",
                GATEWAY_ADDR6,
            ],
        ] {
            ip(&args);
        }
        Some(topology)
    }

    /// A command that runs in the gateway namespace. nsenter (unlike `ip netns exec`) keeps
    /// the mount namespace, so pins on /sys/fs/bpf outlive the process as on a real node.
    pub fn in_gateway(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/var/run/netns/{}", self.gateway_ns))
            .arg("--")
            .arg(program);
        command
    }

    /// A command that runs in the client namespace.
    pub fn in_client(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.client_ns, program]);
        command
    }

    /// Runs a command in `namespace` (`ip -n` form), panicking if it fails.
    pub fn ip(&self, args: &[&str]) {
        ip(args);
    }

    /// `curl` from the client namespace: the HTTP status, or `None` when no connection could
    /// be made within `timeout` (a dropped SYN looks like that).
    pub fn curl(
        &self,
        url: &str,
        host: &str,
        source: Option<&str>,
        timeout: Duration,
    ) -> Option<u16> {
        let mut command = self.in_client("curl");
        command
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .args([
                "--connect-timeout",
                &format!("{:.2}", timeout.as_secs_f64()),
            ])
            .args(["--max-time", &format!("{:.2}", timeout.as_secs_f64() + 5.0)])
            .args(["-H", &format!("Host: {host}")]);
        if let Some(source) = source {
            command.args(["--interface", source]);
        }
        let output = command.arg(url).output().expect("run curl");
        let code: u16 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (code != 0).then_some(code)
    }

    /// Runs `f` in a thread that has entered the gateway namespace, and returns its result.
    pub fn within_gateway<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        within(&self.gateway_ns, f)
    }

    /// The counters of listener `address` for `reason` (`passed`, `dropped_acl`,
    /// `dropped_syn_budget`), read from the pinned maps with `gateway bpf stats --json`.
    pub fn counter(&self, address: SocketAddr, reason: &str) -> u64 {
        let output = run(Command::new(crate::gateway::binary("gateway"))
            .args(["bpf", "stats", "--json", "--bpf-pin-dir"])
            .arg(&self.pin_dir));
        let stats: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stats JSON");
        stats["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["address"] == address.to_string())
            .map_or(0, |l| {
                l["counters"][reason]["packets"].as_u64().unwrap_or(0)
            })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.gateway_ns])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.client_ns])
            .status();
        if self.pin_dir.exists() {
            let _ = Command::new(crate::gateway::binary("gateway"))
                .args(["bpf", "detach", "--bpf-pin-dir"])
                .arg(&self.pin_dir)
                .output();
        }
    }
}

/// Runs `f` in a thread that has entered network namespace `name` (sockets it opens live
/// there), and returns its result.
pub fn within<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let file = std::fs::File::open(&path).expect("open the namespace");
                // SAFETY: a valid namespace fd; only this thread moves.
                let rc = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("namespace thread")
    })
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// Runs a command and panics with its output if it fails.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A process that is killed when dropped.
pub struct Background(pub std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Topology {
    /// Starts `program` in the gateway namespace until dropped.
    pub fn spawn_in_gateway(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> Background {
        let child = self
            .in_gateway(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a process in the gateway namespace");
        Background(child)
    }

    /// Opens `count` TCP connections to `target` from `source` at once, from the client
    /// namespace; returns how many were established within `timeout` (a dropped SYN is not
    /// retried within it).
    pub fn connect_burst(
        &self,
        source: &str,
        target: SocketAddr,
        count: usize,
        timeout: Duration,
    ) -> usize {
        let script = format!(
            r#"
import selectors, socket, time
sockets = []
for _ in range({count}):
    s = socket.socket(socket.AF_INET6 if ":" in "{source}" else socket.AF_INET)
    s.bind(("{source}", 0))
    s.setblocking(False)
    s.connect_ex(("{ip}", {port}))
    sockets.append(s)
deadline = time.time() + {timeout}
connected = set()
sel = selectors.DefaultSelector()
for s in sockets:
    sel.register(s, selectors.EVENT_WRITE)
while time.time() < deadline and len(connected) < len(sockets):
    for key, _ in sel.select(timeout=0.05):
        if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            connected.add(key.fileobj)
        sel.unregister(key.fileobj)
print(len(connected))
"#,
            ip = target.ip(),
            port = target.port(),
            timeout = timeout.as_secs_f64(),
        );
        let output = run(self.in_client("python3").args(["-c", &script]));
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a count")
    }
}
