//! The real `gateway` binary in a child process, killed when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::netns::Topology;

/// The path of a binary built from this workspace (`gateway`, `echo-backend`). `cargo xtask
/// test` builds them before running the tests.
pub fn binary(name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(format!("{}_BIN", name.to_uppercase().replace('-', "_"))) {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; binaries one folder up.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target folder");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo xtask test` does, or `cargo build --bins`)",
        path.display()
    );
    path
}

/// The value of the sample `name{...}` whose labels include every pair of `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// The gateway's access log file, once it has `count` lines (the writer is asynchronous).
pub fn log_lines(path: &std::path::Path, count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= count || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `kind`/`namespace`/`name` object of the /routes report's gateway_api list.
pub fn object<'a>(routes: &'a serde_json::Value, kind: &str, name: &str) -> &'a serde_json::Value {
    routes["gateway_api"]
        .as_array()
        .and_then(|list| list.iter().find(|o| o["kind"] == kind && o["name"] == name))
        .unwrap_or_else(|| panic!("no {kind} {name} in {routes:#}"))
}

/// The condition `type_` of a condition list.
pub fn condition<'a>(conditions: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    conditions
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:#}"))
}

/// A running gateway.
pub struct Gateway {
    child: Child,
    /// Where it serves plain HTTP.
    pub http: SocketAddr,
    /// Where it serves HTTPS.
    pub https: SocketAddr,
    /// Where it serves /healthz, /readyz and /routes.
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// The network namespace it runs in, when not this process's.
    netns: Option<String>,
    /// The podman container it runs in, if it runs in one.
    container: Option<String>,
}

impl Gateway {
    /// Starts `gateway run --manifests DIR` on ephemeral loopback ports with `extra` flags, and
    /// waits until it is ready.
    pub fn start(manifests: &Path, extra: &[&str]) -> Gateway {
        let mut command = Command::new(binary("gateway"));
        command.arg("run").arg("--manifests").arg(manifests);
        Self::launch(command, None, extra)
    }

    /// Starts `gateway run --kubernetes` against the API server of `kubeconfig`.
    pub fn start_kubernetes(kubeconfig: &Path, extra: &[&str]) -> Gateway {
        let mut command = Command::new(binary("gateway"));
        command
            .args(["run", "--kubernetes", "--kubeconfig"])
            .arg(kubeconfig);
        Self::launch(command, None, extra)
    }

    /// Starts the gateway of the container image `image` with podman, on the host's network
    /// with `manifests` mounted read-only, as `gateway run --manifests DIR`. Signals to the
    /// returned process reach the gateway (podman forwards them), and its exit status is the
    /// gateway's.
    pub fn start_container(image: &str, manifests: &Path, extra: &[&str]) -> Gateway {
        let name = format!("gateway-test-{}", std::process::id());
        let mut command = podman_run();
        command
            .args(["--name", &name, "--network", "host"])
            .arg("--volume")
            .arg(format!("{}:/manifests:ro", manifests.display()))
            .args(["--env", "RUST_LOG=info,gateway=debug", image])
            .args(["run", "--manifests", "/manifests"]);
        let mut gateway = Self::launch(command, None, extra);
        gateway.container = Some(name);
        gateway
    }

    /// Starts it in the gateway namespace of `topology`, with its pin folder.
    pub fn start_in(topology: &Topology, manifests: &Path, extra: &[&str]) -> Gateway {
        let mut args = extra.to_vec();
        if !extra.contains(&"--bpf-pin-dir") {
            args.extend(["--bpf-pin-dir", topology.pin_dir.to_str().unwrap()]);
        }

        let mut command = topology.in_gateway(binary("gateway"));
        command.arg("run").arg("--manifests").arg(manifests);
        Self::launch(command, Some(topology.gateway_ns.clone()), &args)
    }

    fn launch(mut command: Command, netns: Option<String>, extra: &[&str]) -> Gateway {
        let mut child = command
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--https-listen",
                "127.0.0.1:0",
            ])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info,gateway=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addresses, found) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = log.clone();
        // Drains stderr for the life of the process (a full pipe would block the gateway),
        // keeping the lines for assertions and picking out the bound addresses.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[gateway] {line}");
                if line.contains("listening") {
                    let _ = addresses.send([
                        field(&line, "http="),
                        field(&line, "https="),
                        field(&line, "admin="),
                    ]);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let (http, https, admin) = match found.recv_timeout(Duration::from_secs(20)) {
            Ok([Some(http), Some(https), Some(admin)]) => (http, https, admin),
            other => {
                let _ = child.kill();
                panic!("gateway did not report its addresses: {other:?}");
            }
        };
        let gateway = Gateway {
            child,
            http,
            https,
            admin,
            log,
            netns,
            container: None,
        };
        gateway.wait_ready();
        gateway
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .admin_get("/readyz")
                .is_some_and(|(status, _)| status == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("gateway not ready within 20s");
    }

    /// The admin /routes document.
    pub fn routes(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/routes").expect("GET /routes");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("/routes is JSON")
    }

    /// Waits until /routes satisfies `condition` (the manifests folder is applied
    /// asynchronously), panicking after 10 seconds.
    pub fn wait_routes(&self, what: &str, condition: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if condition(&self.routes()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}: {:#}", self.routes());
    }

    /// GET `path` from the admin listener (from inside the gateway's namespace if it has one).
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let admin = self.admin;
        match &self.netns {
            None => crate::client::blocking_get(admin, path),
            Some(ns) => crate::netns::within(ns, || crate::client::blocking_get(admin, path)),
        }
    }

    /// Stops the process at once (SIGKILL), as a crash or an OOM kill would.
    /// Time each of the process's threads named `name…` has spent on a CPU so far (ns, from
    /// /proc schedstat), by thread name; for a gateway started as a process here.
    pub fn cpu_time_of_threads(&self, name: &str) -> BTreeMap<String, u64> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut times = BTreeMap::new();
        for task in std::fs::read_dir(&tasks)
            .expect("the gateway's threads")
            .flatten()
        {
            let read = |file: &str| std::fs::read_to_string(task.path().join(file));
            let (Ok(comm), Ok(schedstat)) = (read("comm"), read("schedstat")) else {
                continue;
            };
            let comm = comm.trim();
            if comm.starts_with(name) {
                let on_cpu = schedstat.split(' ').next().and_then(|n| n.parse().ok());
                times.insert(comm.to_string(), on_cpu.expect("schedstat's first field"));
            }
        }
        times
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every line the gateway logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM, as the kubelet does when it stops the pod.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to the gateway");
    }

    /// Waits up to `limit` for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killing `podman run` leaves its container running.
        if let Some(name) = &self.container {
            let _ = podman()
                .args(["rm", "--force", "--time", "0", name])
                .output();
        }
    }
}

/// podman with runc, because crun refuses the hybrid cgroup hierarchies some of the machines
/// the tests run on have.
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc"]);
    command
}

/// `podman run --rm` with limits the tests' machines allow: podman's defaults are higher than
/// this process's, and a container may not raise them; no more processes than the kernel has
/// PIDs (some kernels refuse a higher limit in a container).
pub fn podman_run() -> Command {
    let mut command = podman();
    command.args(["run", "--rm"]);
    let pids: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(u64::MAX);
    for (name, resource, most) in [
        ("nofile", libc::RLIMIT_NOFILE, u64::MAX),
        ("nproc", libc::RLIMIT_NPROC, pids),
    ] {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) fills the struct it is given.
        if unsafe { libc::getrlimit(resource, &mut limit) } == 0 {
            let (soft, hard) = (limit.rlim_cur.min(most), limit.rlim_max.min(most));
            command.arg(format!("--ulimit={name}={soft}:{hard}"));
        }
    }
    command
}

/// The address after `key` in a log line (`http=127.0.0.1:8080`).
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line.find(key)? + key.len();
    line[start..].split_whitespace().next()?.parse().ok()
}
