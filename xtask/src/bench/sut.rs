//! The systems under test: started pinned to CPU 1, their CPU time and memory read from /proc.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::fixtures::{
    self, Fixtures, GATEWAY_PORTS, GATEWAY_TCP_PORTS, HAPROXY_PORTS, HAPROXY_TCP_PORTS,
    NGINX_PORTS, NGINX_TCP_PORTS,
};

/// The CPU every system under test runs on; load and backend run on the other.
pub const SUT_CPU: &str = "1";
pub const LOAD_CPU: &str = "0";
/// Both CPUs, for a gateway with two worker threads.
pub const ALL_CPUS: &str = "0,1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Gateway,
    Nginx,
    Haproxy,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Gateway, Kind::Nginx, Kind::Haproxy];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    /// (HTTP port, HTTPS port).
    pub fn ports(self) -> (u16, u16) {
        match self {
            Kind::Gateway => GATEWAY_PORTS,
            Kind::Nginx => NGINX_PORTS,
            Kind::Haproxy => HAPROXY_PORTS,
        }
    }

    /// Layer 4 TCP ports: (to the bulk server, to backend 0).
    pub fn tcp_ports(self) -> (u16, u16) {
        match self {
            Kind::Gateway => GATEWAY_TCP_PORTS,
            Kind::Nginx => NGINX_TCP_PORTS,
            Kind::Haproxy => HAPROXY_TCP_PORTS,
        }
    }
}

/// How a system under test is configured for one test.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// TLS session resumption (tickets, caches) on.
    pub resumption: bool,
    /// Inside a network namespace of the run: nginx and HAProxy listen on every address (the
    /// VIP too); the gateway gets these arguments for its fast path.
    pub vip: Option<Vec<String>>,
    /// The gateway's worker threads (0: one); with more than one it may use every CPU.
    pub workers: usize,
    /// The gateway serves HTTP/3 too (`--http3`).
    pub http3: bool,
    /// The gateway reads its objects from this API server (`--kubernetes`) instead of the
    /// manifests folder.
    pub kubeconfig: Option<PathBuf>,
    /// A program the gateway runs under, with its arguments (callgrind for `link-order`).
    pub under: Vec<String>,
}

/// A running system under test; stopped when dropped.
pub struct Sut {
    pub kind: Kind,
    child: Child,
}

impl Sut {
    pub fn start(kind: Kind, fixtures: &Fixtures, gateway: &Path, options: Options) -> Result<Sut> {
        let dir = &fixtures.dir;
        std::fs::create_dir_all(dir.join("nginx-tmp"))?;
        let mut command = Command::new("taskset");
        let workers = options.workers.max(1);
        command.args(["-c", if workers > 1 { ALL_CPUS } else { SUT_CPU }]);
        match kind {
            Kind::Gateway => {
                let (http, https) = kind.ports();
                command.args(&options.under).arg(gateway).arg("run");
                match &options.kubeconfig {
                    Some(kubeconfig) => command
                        .args([
                            "--kubernetes",
                            "--watch-ingress-without-class",
                            "--kubeconfig",
                        ])
                        .arg(kubeconfig),
                    None => command.arg("--manifests").arg(fixtures.manifests()),
                };
                command
                    .args(["--http-listen", &format!("127.0.0.1:{http}")])
                    .args(["--https-listen", &format!("127.0.0.1:{https}")])
                    .args(["--admin-listen", "127.0.0.1:9180"])
                    .args(["--worker-threads", &workers.to_string()])
                    .args([
                        "--tls-ciphers",
                        "TLS13_AES_128_GCM_SHA256",
                        "--tls-kx-groups",
                        "X25519",
                    ])
                    .args(["--hsts", ""])
                    .args(["--tcp-services-configmap", "bench/tcp-services"])
                    // As the peers are configured: no access log.
                    .args(["--access-log", "off"])
                    .env("RUST_LOG", "warn");
                if !options.resumption {
                    command.arg("--no-tls-resumption");
                }
                if options.http3 {
                    command.arg("--http3");
                }
                command.args(options.vip.iter().flatten());
            }
            Kind::Nginx => {
                command
                    .arg("nginx")
                    .arg("-c")
                    .arg(dir.join(config_name("nginx", &options, "conf")))
                    .arg("-p")
                    .arg(dir);
            }
            Kind::Haproxy => {
                command
                    .arg("haproxy")
                    .arg("-db")
                    .arg("-f")
                    .arg(dir.join(config_name("haproxy", &options, "cfg")));
            }
        }
        let log = std::fs::File::create(dir.join(format!("{}.log", kind.name())))?;
        // A process group of its own: stopping it stops every process it made (a master
        // killed before its workers would leave them serving the next test).
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))?;
        let mut sut = Sut { kind, child };
        sut.wait_ready()?;
        // Something else answering on its ports (a leftover from another run) is not it.
        if let Some(status) = sut.child.try_wait()? {
            bail!(
                "{} exited at start ({status}); see its log in the bench folder",
                kind.name()
            );
        }
        Ok(sut)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if crate::http_get(("127.0.0.1", self.kind.ports().0), "r0.bench.test", "/")
                .is_ok_and(|(s, _)| s == 200)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "{} did not get ready (see its log in the bench folder)",
            self.kind.name()
        )
    }

    /// Every process of this system under test (nginx has a master and a worker).
    pub fn pids(&self) -> Vec<u32> {
        let root = self.child.id();
        let mut pids = vec![root];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(children(pids[i]));
            i += 1;
        }
        pids
    }

    /// User plus system CPU seconds used so far by all its processes.
    pub fn cpu_seconds(&self) -> f64 {
        self.pids().into_iter().map(process_cpu_seconds).sum()
    }

    /// Proportional set size of all its processes, in bytes.
    pub fn pss_bytes(&self) -> u64 {
        self.pids()
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
            .filter_map(|rollup| {
                rollup
                    .lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .sum::<u64>()
            * 1024
    }

    /// The processes of nginx (grows when reloads leave old workers behind).
    pub fn process_count(&self) -> usize {
        self.pids().len()
    }

    /// Tells nginx to reload its configuration.
    pub fn nginx_reload(&self, fixtures: &Fixtures) -> Result<()> {
        let out = Command::new("nginx")
            .arg("-c")
            .arg(fixtures.dir.join("nginx.conf"))
            .arg("-p")
            .arg(&fixtures.dir)
            .args(["-s", "reload"])
            .output()?;
        if !out.status.success() {
            bail!(
                "nginx -s reload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Sut {
    /// Stops it as an orchestrator would (SIGTERM), waiting up to a minute for it to drain and
    /// exit, so that a tool it runs under writes its results.
    pub fn terminate(mut self) -> Result<()> {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "{} did not exit within a minute of SIGTERM",
                    self.kind.name()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the group is the one the child leads.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
        // Let the ports go before the next system binds them.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The peer's configuration file for `options`.
fn config_name(system: &str, options: &Options, extension: &str) -> String {
    let address = if options.vip.is_some() {
        fixtures::ANY
    } else {
        fixtures::LOOPBACK
    };
    fixtures::config_name(system, options.resumption, address, extension)
}

fn children(pid: u32) -> Vec<u32> {
    let path = PathBuf::from(format!("/proc/{pid}/task/{pid}/children"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// User plus system CPU seconds one process has used so far (0 when it is gone).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    (utime + stime) / CLOCK_TICKS_PER_SECOND
}

/// /proc reports CPU times in clock ticks (USER_HZ), 100 per second on Linux.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
