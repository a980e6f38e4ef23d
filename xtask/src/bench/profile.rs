//! `cargo xtask bench --only profile`: where the gateway's CPU goes under T1's load. perf
//! samples the gateway with DWARF call graphs while wrk runs, and inferno folds the stacks and
//! draws the flame graph, written beside the day's results (`<date>-T1-gateway.svg`; the folded
//! stacks stay in the work folder, for comparing runs).

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

pub fn t1(fixtures: &Fixtures, gateway: &Path, results: &Path) -> Result<PathBuf> {
    install_inferno()?;
    let sut = Sut::start(Kind::Gateway, fixtures, gateway, Options::default())?;
    let pid = *sut.pids().first().context("the gateway has no process")?;
    let port = Kind::Gateway.ports().0;
    let script = fixtures.dir.join("hosts.lua");
    // Warm: connections made, pools filled.
    load::wrk(port, Duration::from_secs(2), 64, &script)?;
    let data = fixtures.dir.join("perf-T1.data");
    let mut perf = Command::new("perf")
        .args(["record", "-F", "999", "-g", "--call-graph", "dwarf,32768"])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &SAMPLED.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("perf (Debian's linux-perf)")?;
    let measured = load::wrk(port, Duration::from_secs(SAMPLED + 2), 64, &script)?;
    if !perf.wait()?.success() {
        bail!("perf record failed");
    }
    drop(sut);
    std::fs::create_dir_all(results)?;
    let name = format!("{}-T1-gateway", super::report::today());
    let folded = fixtures.dir.join(format!("{name}.folded"));
    let svg = results.join(format!("{name}.svg"));
    run(Command::new("sh").arg("-c").arg(format!(
        "perf script -i '{}' 2>/dev/null | inferno-collapse-perf > '{}' && \
         inferno-flamegraph --title 'gateway, T1 HTTP/1.1 keep-alive ({:.0} req/s under perf)' < '{}' > '{}'",
        data.display(),
        folded.display(),
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
