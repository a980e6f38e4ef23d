//! Two network namespaces made for a run and joined by a veth pair: a generator side
//! (198.18.0.2) and a gateway side (198.18.0.1, with the VIP 198.18.1.1 on its loopback). The
//! gateway side routes the flood sources (198.18.5.0/24 and 198.19.0.0/16) back over the veth,
//! where nothing answers them. Every address exists only inside these namespaces.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::output;

/// The VIP on the gateway side.
pub const VIP: &str = "198.18.1.1";

/// The namespaces of the run; removed when dropped.
pub struct Net {
    pub gen_ns: String,
    pub gw_ns: String,
    /// bpffs folder for the gateway's pins in this run.
    pub pin_dir: PathBuf,
}

impl Net {
    pub fn create() -> Result<Net> {
        let id = std::process::id();
        let net = Net {
            gen_ns: format!("xgb-gen-{id}"),
            gw_ns: format!("xgb-gw-{id}"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/xgb-{id}")),
        };
        let (gen_ns, gw) = (net.gen_ns.as_str(), net.gw_ns.as_str());
        let vip = format!("{VIP}/32");
        for args in [
            vec!["netns", "add", gen_ns],
            vec!["netns", "add", gw],
            vec![
                "link", "add", "veth-gw", "netns", gw, "type", "veth", "peer", "name", "veth-gen",
                "netns", gen_ns,
            ],
            vec!["-n", gw, "addr", "add", "198.18.0.1/24", "dev", "veth-gw"],
            vec!["-n", gw, "addr", "add", &vip, "dev", "lo"],
            vec!["-n", gw, "link", "set", "veth-gw", "up"],
            vec!["-n", gw, "link", "set", "lo", "up"],
            vec!["-n", gw, "route", "add", "198.18.5.0/24", "dev", "veth-gw"],
            vec!["-n", gw, "route", "add", "198.19.0.0/16", "dev", "veth-gw"],
            vec![
                "-n",
                gen_ns,
                "addr",
                "add",
                "198.18.0.2/24",
                "dev",
                "veth-gen",
            ],
            vec!["-n", gen_ns, "link", "set", "veth-gen", "up"],
            vec!["-n", gen_ns, "link", "set", "lo", "up"],
            vec![
                "-n",
                gen_ns,
                "route",
                "add",
                "198.18.1.0/24",
                "via",
                "198.18.0.1",
            ],
        ] {
            output(Command::new("ip").args(&args))?;
        }
        Ok(net)
    }

    /// `program` on the gateway side.
    pub fn gw(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.gw_ns, program]);
        command
    }

    /// `program` on the generator side, pinned to CPU 0.
    pub fn gen_cmd(&self, program: &str) -> Command {
        let mut command = Command::new("taskset");
        command.args(["-c", "0", "ip", "netns", "exec", &self.gen_ns, program]);
        command
    }

    /// Runs `f` in a thread that has entered namespace `ns`: the sockets it opens and the
    /// processes it starts live there.
    pub fn within<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = format!("/var/run/netns/{ns}");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = std::fs::File::open(&path).with_context(|| path.clone())?;
                    // SAFETY: a valid namespace fd; setns moves only this thread.
                    let rc = unsafe {
                        libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                    };
                    if rc != 0 {
                        anyhow::bail!("setns {path}: {}", std::io::Error::last_os_error());
                    }
                    f()
                })
                .join()
                .map_err(|_| anyhow::anyhow!("a thread in {ns} panicked"))?
        })
    }

    /// A trafgen configuration for TCP SYNs to the VIP's `port` over the veth, from `source`
    /// (four trafgen byte expressions: `198`, `drnd(1)`, ...) and random source ports.
    pub fn syn_flood_config(&self, name: &str, source: [&str; 4], port: u16) -> Result<PathBuf> {
        let mac =
            output(Command::new("ip").args(["-n", &self.gw_ns, "-br", "link", "show", "veth-gw"]))?;
        let mac = mac.split_whitespace().nth(2).context("no MAC")?;
        let mac: Vec<String> = mac.split(':').map(|b| format!("0x{b}")).collect();
        let vip: Vec<&str> = VIP.split('.').collect();
        let config = format!(
            "{{\n  {}, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00,\n  \
             0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x40, 0x06, csumip(14, 33),\n  \
             {}, {},\n  \
             drnd(2), {:#04x}, {:#04x}, drnd(4), 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xff, 0xff, csumtcp(14, 34), 0x00, 0x00\n}}\n",
            mac.join(", "),
            source.join(", "),
            vip.join(", "),
            port >> 8,
            port & 0xff,
        );
        let path = std::env::temp_dir().join(format!("xgb-{name}-{}.cfg", std::process::id()));
        std::fs::write(&path, config)?;
        Ok(path)
    }

    /// trafgen on the generator side sending `config` on the veth, at `rate` (as trafgen
    /// reads it: `200000pps`) or as fast as one CPU can, until the flood is dropped.
    pub fn flood(&self, config: &Path, rate: Option<&str>) -> Result<Flood> {
        let mut command = self.gen_cmd("trafgen");
        command
            .args(["--dev", "veth-gen", "--conf"])
            .arg(config)
            .args(["--cpus", "1"]);
        if let Some(rate) = rate {
            command.args(["--rate", rate]);
        }
        // trafgen sends from a worker process of its own: the group is what must be stopped.
        let child = command
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start trafgen")?;
        Ok(Flood(child))
    }
}

/// A running trafgen; stopped (with its workers) when dropped.
pub struct Flood(Child);

impl Drop for Flood {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the group is the one the child leads.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.gen_ns])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.gw_ns])
            .status();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
