//! `cargo xtask bench --only profile`: where the gateway's CPU goes under T1's load (HTTP/1.1
//! keep-alive, wrk) and T4's (HTTP/2 over TLS, h2load). perf samples the gateway with DWARF
//! call graphs while the load runs, and inferno folds the stacks and draws the flame graph,
//! written beside the day's results (`<date>-T1-gateway.svg`, `<date>-T4-gateway.svg`; the
//! folded stacks stay in the work folder, for comparing runs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::fixtures::Fixtures;
use super::load;
use super::sut::{Kind, Options, Sut};
use crate::run;

/// Seconds of samples; wrk runs a second longer on each side.
const SAMPLED: u64 = 6;

/// The loads profiled, as the benchmark's own tests run them.
#[derive(Clone, Copy)]
pub enum Load {
    /// T1: HTTP/1.1 keep-alive, 64 connections over the bench's hosts.
    Http1,
    /// T4: HTTP/2 over TLS, 16 connections with 10 streams each.
    Http2Tls,
}

impl Load {
    fn test(self) -> &'static str {
        match self {
            Load::Http1 => "T1",
            Load::Http2Tls => "T4",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Load::Http1 => "T1 HTTP/1.1 keep-alive",
            Load::Http2Tls => "T4 HTTP/2 + TLS",
        }
    }

    pub fn run(self, fixtures: &Fixtures, duration: Duration) -> Result<load::Measured> {
        let (http, https) = Kind::Gateway.ports();
        match self {
            Load::Http1 => load::wrk(http, duration, 64, &fixtures.dir.join("hosts.lua")),
            Load::Http2Tls => load::h2load(https, "/", duration, 16, 10),
        }
    }
}

pub fn gateway(load: Load, fixtures: &Fixtures, gateway: &Path, results: &Path) -> Result<PathBuf> {
    install_inferno()?;
    let options = Options {
        resumption: matches!(load, Load::Http2Tls),
        ..Options::default()
    };
    let sut = Sut::start(Kind::Gateway, fixtures, gateway, options)?;
    let pid = *sut.pids().first().context("the gateway has no process")?;
    // Warm: connections made, pools filled.
    load.run(fixtures, Duration::from_secs(2))?;
    let test = load.test();
    let data = fixtures.dir.join(format!("perf-{test}.data"));
    let mut perf = Command::new("perf")
        .args(["record", "-F", "999", "-g", "--call-graph", "dwarf,32768"])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &SAMPLED.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("perf (Debian's linux-perf)")?;
    let measured = load.run(fixtures, Duration::from_secs(SAMPLED + 2))?;
    if !perf.wait()?.success() {
        bail!("perf record failed");
    }
    drop(sut);
    std::fs::create_dir_all(results)?;
    let name = format!("{}-{test}-gateway", super::report::today());
    let folded = fixtures.dir.join(format!("{name}.folded"));
    let svg = results.join(format!("{name}.svg"));
    run(Command::new("sh").arg("-c").arg(format!(
        "perf script -i '{}' 2>/dev/null | inferno-collapse-perf > '{}' && \
         inferno-flamegraph --title 'gateway, {} ({:.0} req/s under perf)' < '{}' > '{}'",
        data.display(),
        folded.display(),
        load.title(),
        measured.rps,
        folded.display(),
        svg.display()
    )))?;
    let _ = std::fs::remove_file(&data);
    println!("  flame graph: {}", svg.display());
    Ok(svg)
}

fn install_inferno() -> Result<()> {
    if Command::new("inferno-flamegraph")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("installing inferno from crates.io (once)");
        run(Command::new("cargo").args(["install", "inferno", "--locked"]))?;
    }
    Ok(())
}
