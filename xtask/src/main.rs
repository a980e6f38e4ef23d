//! Project tasks: `cargo xtask build-ebpf`, `cargo xtask test`, `cargo xtask demo`.

mod bench;
mod demo;
mod ebpf;
mod image;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "xdp-gateway project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF programs (installs rust-src and a bpf-linker matching rustc if missing).
    BuildEbpf,
    /// Build everything and run the whole test suite.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Benchmark the gateway side by side with nginx and HAProxy (installs what it needs).
    Bench {
        /// A short run (about 3 minutes) instead of the full one.
        #[arg(long)]
        quick: bool,
        /// Only these tests (comma-separated: T1,profile,T2,T3,T4,T5,T6,T7,T8,T9,T9-cost,T11,T13,attack,syn-flood).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Benchmark this gateway binary instead of this checkout's release build (to compare
        /// two builds: run once with each).
        #[arg(long, value_name = "PATH")]
        gateway: Option<PathBuf>,
    },
    /// Record which of the gateway's functions run (callgrind, at start with 10,000 routes and
    /// under load) into gateway-userspace/link-order.txt, which the linker puts first.
    LinkOrder,
    /// The benchmark backend (started by `bench`).
    #[command(hide = true)]
    BenchBackend,
    /// The TLS handshake load client (started by `bench`).
    #[command(hide = true)]
    TlsLoad {
        port: u16,
        seconds: u64,
        connections: usize,
        #[arg(long)]
        resume: bool,
    },
    /// The HTTP/3 load client (started by `bench`).
    #[command(hide = true)]
    H3Load {
        port: u16,
        seconds: u64,
        connections: usize,
        streams: usize,
        path: String,
    },
    /// Build the release binary and its OCI image archive (for `podman load -i` or `skopeo copy
    /// oci-archive:PATH docker://REGISTRY/NAME:TAG`).
    Image {
        /// The image reference recorded in the archive (default xdp-gateway:VERSION).
        #[arg(long)]
        tag: Option<String>,
        /// Where to write the archive (default target/xdp-gateway-VERSION.oci.tar).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Run the gateway on deploy/examples with example backends, and show routing working.
    Demo {
        /// Exit after showing the example requests instead of serving until Ctrl-C.
        #[arg(long)]
        no_wait: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf => ebpf::build().map(|_| ()),
        Task::Test { args } => test(&args),
        Task::Image { tag, output } => image::build(tag, output).map(|_| ()),
        Task::Demo { no_wait } => demo::run(!no_wait),
        Task::Bench {
            quick,
            only,
            gateway,
        } => bench::run_all(quick, only, gateway),
        Task::LinkOrder => bench::link_order::run(),
        Task::BenchBackend => bench::backend::run(),
        Task::TlsLoad {
            port,
            seconds,
            connections,
            resume,
        } => bench::tls_client::run(port, seconds, connections, resume),
        Task::H3Load {
            port,
            seconds,
            connections,
            streams,
            path,
        } => bench::h3_client::run(port, seconds, (connections, streams), &path),
    }
}

fn test(args: &[String]) -> Result<()> {
    // What the end-to-end tests drive: network namespaces (ip, nsenter), clients (curl, ping,
    // python3 for raw frames and UDP), the container image (podman with runc), a headless
    // browser for the console (chromium and its WebDriver).
    install_packages(&[
        "iproute2",
        "util-linux",
        "curl",
        "iputils-ping",
        "python3",
        "podman",
        "runc",
        "chromium",
        "chromium-driver",
    ])?;
    // kustomize renders the install's overlays: kubectl's own, from whichever package has it.
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        install_packages(&["kubectl"]).or_else(|_| install_packages(&["kubernetes-client"]))?;
    }
    // The image (which builds the eBPF object and the release binary) is tested as shipped.
    let image = image::build(None, None)?;
    // The end-to-end tests start the real binaries, so they are built first.
    cargo(&["build", "--workspace", "--bins"])?;
    let mut child = Command::new(env!("CARGO"))
        // Every test binary runs, so that the summary counts every failure.
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .env("XDP_GATEWAY_IMAGE", &image)
        .current_dir(root())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    // cargo prints one result line per test binary; the sum is the suite's result.
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().context("cargo test output")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            passed += count(result, " passed");
            failed += count(result, " failed");
        }
    }
    let status = child.wait()?;
    println!("\nsummary: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("the test suite failed ({status})");
    }
    Ok(())
}

/// Installs those of `packages` that are missing with apt-get (as root); returns them.
fn install_packages<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg")
                .args(["-s", p])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        println!("installing {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(missing)
}

/// The number before `label` in a result line (`ok. 16 passed; 0 failed; ...`).
fn count(result: &str, label: &str) -> usize {
    result
        .split(';')
        .find_map(|part| part.strip_suffix(label))
        .and_then(|n| n.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The workspace root (the folder above xtask/).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs cargo in the workspace root.
fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(env!("CARGO")).args(args).current_dir(root()))
}

/// Runs a command, failing with the command line if it fails.
fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its standard output.
pub fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One HTTP/1.1 GET with `Connection: close`: status and body.
pub fn http_get(
    addr: impl std::net::ToSocketAddrs,
    host: &str,
    path: &str,
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    // A server that resets after answering still answered.
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
