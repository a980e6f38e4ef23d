//! T9: packets per second dropped for a denied source by iptables raw, nft netdev, tc, and the
//! gateway's XDP program (native and generic), on one veth pair between two namespaces made for
//! the run; and the throughput tax of the XDP program on traffic it does not match (iperf3).
//! Every address here exists only inside those namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::netns::Net;
use super::{Plan, Record};
use crate::output;

const DENIED: [u8; 4] = [198, 18, 5, 5];

/// A way to drop the denied source, set up and read on the gateway side.
enum Dropper {
    IptablesRaw,
    NftNetdev,
    TcClsact,
    Xdp(&'static str),
}

impl Dropper {
    fn name(&self) -> String {
        match self {
            Dropper::IptablesRaw => "iptables-raw".into(),
            Dropper::NftNetdev => "nft-netdev".into(),
            Dropper::TcClsact => "tc-clsact".into(),
            Dropper::Xdp(mode) => format!("xdp-{mode}"),
        }
    }
}

pub fn run(gateway: &Path, plan: &Plan) -> Result<Vec<Record>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespaces, XDP)");
    }
    let net = Net::create()?;
    let seconds = if plan.quick { 3 } else { 10 };
    let denied = DENIED.map(|b| b.to_string());
    let config = net.syn_flood_config("denied", denied.each_ref().map(String::as_str), 80)?;
    let manifests = std::env::temp_dir().join(format!("xgb-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&manifests)?;

    let mut records = Vec::new();
    for dropper in [
        Dropper::IptablesRaw,
        Dropper::NftNetdev,
        Dropper::TcClsact,
        Dropper::Xdp("native"),
        Dropper::Xdp("generic"),
    ] {
        match measure_drops(&net, &dropper, gateway, &manifests, &config, seconds) {
            Ok(record) => records.push(record),
            Err(e) => println!("  {:14} unavailable here: {e:#}", dropper.name()),
        }
    }

    // The tax on traffic the program does not match.
    let mut server = net
        .gw("taskset")
        .args(["-c", "1", "iperf3", "-s", "-B", "198.18.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    for mode in ["none", "native", "generic"] {
        let daemon = match mode {
            "none" => None,
            mode => Some(start_gateway(&net, gateway, &manifests, mode)?),
        };
        let json = output(net.gen_cmd("iperf3").args([
            "-c",
            "198.18.0.1",
            "-t",
            &seconds.to_string(),
            "-J",
        ]))?;
        let gbps = serde_json::from_str::<serde_json::Value>(&json)?["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9;
        if let Some(daemon) = daemon {
            stop_gateway(&net, gateway, daemon)?;
        }
        println!("  iperf3 with {mode:8} XDP: {gbps:.2} Gbit/s");
        let mut record = Record::new(&format!("xdp-{mode}"), "T9-tax", 0);
        record.set("gbps", gbps);
        records.push(record);
    }
    let _ = server.kill();
    let _ = server.wait();

    // T10: connections to the VIP handed to the proxy by sk_lookup, against the usual way, a
    // DNAT rule to an address the proxy binds.
    for (delivery, keepalive) in [
        ("sk_lookup", true),
        ("dnat", true),
        ("sk_lookup", false),
        ("dnat", false),
    ] {
        match measure_delivery(&net, gateway, &manifests, delivery, keepalive, seconds) {
            Ok(record) => records.push(record),
            Err(e) => println!("  T10 {delivery}: unavailable here: {e:#}"),
        }
    }
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir_all(&manifests);
    Ok(records)
}

/// HTTP requests from the client namespace to the VIP for `seconds` (the gateway answers them
/// itself: no route, so only delivery and HTTP are measured), with keep-alive or a new
/// connection per request; requests per gateway CPU-second and per machine CPU-second.
fn measure_delivery(
    net: &Net,
    gateway: &Path,
    manifests: &Path,
    delivery: &str,
    keepalive: bool,
    seconds: u64,
) -> Result<Record> {
    let mut command = gateway_command(net, gateway, manifests);
    let dnat = [
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        "198.18.1.1",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "DNAT",
        "--to-destination",
        "198.18.0.1:18080",
    ];
    if delivery == "dnat" {
        output(net.gw("iptables").args(dnat))?;
        command.args(["--http-listen", "198.18.0.1:18080"]);
    } else {
        command
            .args([
                "--http-listen",
                "127.0.0.1:18080",
                "--vip",
                "198.18.1.1:80=http",
                "--bpf-pin-dir",
            ])
            .arg(&net.pin_dir);
    }
    let mut daemon = command.spawn()?;
    let result = (|| {
        std::thread::sleep(Duration::from_millis(800));
        let pid = daemon.id();
        let cpu = super::sut::process_cpu_seconds;
        let (cpu_before, busy_before) = (cpu(pid), busy_ticks()?);
        let mut wrk = net.gen_cmd("wrk");
        wrk.args([
            "-t1",
            "-c32",
            &format!("-d{seconds}s"),
            "-H",
            "Host: nothing.bench.test",
        ]);
        if !keepalive {
            wrk.args(["-H", "Connection: close"]);
        }
        let text = output(wrk.arg("http://198.18.1.1/"))?;
        let requests: f64 = text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .context("wrk printed no request count")?;
        let used = cpu(pid) - cpu_before;
        let busy = (busy_ticks()? - busy_before) as f64 / 100.0;
        Ok::<_, anyhow::Error>((requests, used, busy))
    })();
    if delivery == "dnat" {
        let _ = daemon.kill();
        let _ = daemon.wait();
        let mut undo = dnat;
        undo[2] = "-D";
        output(net.gw("iptables").args(undo))?;
    } else {
        stop_gateway(net, gateway, daemon)?;
    }
    let (requests, used, busy) = result?;
    let connections = if keepalive {
        "keep-alive"
    } else {
        "new connection per request"
    };
    println!(
        "  T10 {delivery:9} {connections:26}: {:>7.0} req/s, {:>7.0} per gateway CPU-s, {:>7.0} per machine CPU-s",
        requests / seconds as f64,
        requests / used.max(1e-9),
        requests / busy.max(1e-9)
    );
    let test = if keepalive { "T10" } else { "T10-new-conn" };
    let mut record = Record::new(delivery, test, 0);
    record
        .set("rps", requests / seconds as f64)
        .set("per_cpu_s", requests / used.max(1e-9))
        .set("per_machine_cpu_s", requests / busy.max(1e-9));
    Ok(record)
}

/// Floods the denied source's SYNs for `seconds` and reads how many `dropper` dropped, and how
/// much CPU the whole machine spent per packet (generator included: the generator is the same
/// for every dropper, so differences are the droppers').
fn measure_drops(
    net: &Net,
    dropper: &Dropper,
    gateway: &Path,
    manifests: &Path,
    config: &Path,
    seconds: u64,
) -> Result<Record> {
    let daemon = setup(net, dropper, gateway, manifests)?;
    let result = (|| {
        let before = dropped(net, dropper, gateway)?;
        let busy_before = busy_ticks()?;
        let begin = Instant::now();
        let flood = net.flood(config, None)?;
        std::thread::sleep(Duration::from_secs(seconds));
        drop(flood);
        let elapsed = begin.elapsed().as_secs_f64();
        let busy = busy_ticks()? - busy_before;
        let count = dropped(net, dropper, gateway)? - before;
        Ok::<_, anyhow::Error>((count, elapsed, busy))
    })();
    teardown(net, dropper, gateway, daemon)?;
    let (count, elapsed, busy) = result?;
    if count == 0 {
        bail!("nothing was dropped");
    }
    let mpps = count as f64 / elapsed / 1e6;
    let ns_per_packet = busy as f64 * 1e7 / count as f64;
    println!(
        "  {:14} dropped {mpps:>6.3} Mpps, {ns_per_packet:>6.0} ns of CPU per packet (all CPUs, generator included)",
        dropper.name()
    );
    let mut record = Record::new(&dropper.name(), "T9", 0);
    record
        .set("mpps", mpps)
        .set("dropped", count as f64)
        .set("cpu_ns_per_packet", ns_per_packet);
    Ok(record)
}

/// Non-idle CPU ticks of all CPUs so far (/proc/stat: user, nice, system, irq, softirq).
fn busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .context("/proc/stat")?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    Ok([0, 1, 2, 5, 6].iter().filter_map(|i| fields.get(*i)).sum())
}

fn setup(net: &Net, dropper: &Dropper, gateway: &Path, manifests: &Path) -> Result<Option<Child>> {
    let source = DENIED.map(|b| b.to_string()).join(".");
    match dropper {
        Dropper::IptablesRaw => {
            output(net.gw("iptables").args([
                "-t",
                "raw",
                "-A",
                "PREROUTING",
                "-s",
                &source,
                "-j",
                "DROP",
            ]))?;
        }
        Dropper::NftNetdev => {
            let rules = format!(
                "table netdev xgb {{\n  chain ingress {{\n    type filter hook ingress device veth-gw priority 0;\n    ip saddr {source} counter drop\n  }}\n}}\n"
            );
            let file = write_temp("xgb.nft", &rules)?;
            output(net.gw("nft").arg("-f").arg(&file))?;
            let _ = std::fs::remove_file(file);
        }
        Dropper::TcClsact => {
            output(
                net.gw("tc")
                    .args(["qdisc", "add", "dev", "veth-gw", "clsact"]),
            )?;
            output(
                net.gw("tc")
                    .args([
                        "filter", "add", "dev", "veth-gw", "ingress", "protocol", "ip", "prio",
                        "1", "u32",
                    ])
                    .args([
                        "match",
                        "ip",
                        "src",
                        &format!("{source}/32"),
                        "action",
                        "drop",
                    ]),
            )?;
        }
        Dropper::Xdp(mode) => return Ok(Some(start_gateway(net, gateway, manifests, mode)?)),
    }
    Ok(None)
}

fn teardown(net: &Net, dropper: &Dropper, gateway: &Path, daemon: Option<Child>) -> Result<()> {
    match dropper {
        Dropper::IptablesRaw => {
            output(net.gw("iptables").args(["-t", "raw", "-F", "PREROUTING"]))?;
        }
        Dropper::NftNetdev => {
            output(net.gw("nft").args(["delete", "table", "netdev", "xgb"]))?;
        }
        Dropper::TcClsact => {
            output(
                net.gw("tc")
                    .args(["qdisc", "del", "dev", "veth-gw", "clsact"]),
            )?;
        }
        Dropper::Xdp(_) => {}
    }
    if let Some(daemon) = daemon {
        stop_gateway(net, gateway, daemon)?;
    }
    Ok(())
}

/// Packets dropped so far by `dropper`'s own counter.
fn dropped(net: &Net, dropper: &Dropper, gateway: &Path) -> Result<u64> {
    let first_number_after = |text: &str, marker: &str| -> u64 {
        text.split(marker)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(match dropper {
        Dropper::IptablesRaw => {
            let text = output(net.gw("iptables").args([
                "-t",
                "raw",
                "-L",
                "PREROUTING",
                "-v",
                "-x",
                "-n",
            ]))?;
            text.lines()
                .nth(2)
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        }
        Dropper::NftNetdev => first_number_after(
            &output(net.gw("nft").args(["list", "table", "netdev", "xgb"]))?,
            "packets ",
        ),
        Dropper::TcClsact => {
            let text = output(
                net.gw("tc")
                    .args(["-s", "filter", "show", "dev", "veth-gw", "ingress"]),
            )?;
            text.split("Sent ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().nth(2))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        }
        Dropper::Xdp(_) => {
            let json = output(
                Command::new(gateway)
                    .args(["bpf", "stats", "--json", "--bpf-pin-dir"])
                    .arg(&net.pin_dir),
            )?;
            let stats: serde_json::Value = serde_json::from_str(&json)?;
            stats["listeners"][0]["counters"]["dropped_acl"]["packets"]
                .as_u64()
                .unwrap_or(0)
        }
    })
}

/// `gateway run` in the gateway namespace, pinned to CPU 1 with one worker, quiet; the caller
/// adds its listeners.
fn gateway_command(net: &Net, gateway: &Path, manifests: &Path) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/var/run/netns/{}", net.gw_ns))
        .args(["--", "taskset", "-c", "1"])
        .arg(gateway)
        .arg("run")
        .arg("--manifests")
        .arg(manifests)
        .args([
            "--https-listen",
            "127.0.0.1:18443",
            "--admin-listen",
            "127.0.0.1:19180",
        ])
        .args(["--worker-threads", "1", "--access-log", "off"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn start_gateway(net: &Net, gateway: &Path, manifests: &Path, mode: &str) -> Result<Child> {
    let child = gateway_command(net, gateway, manifests)
        .args([
            "--http-listen",
            "127.0.0.1:18080",
            "--vip",
            "198.18.1.1:80=http",
        ])
        .args(["--xdp-iface", "veth-gw", "--xdp-mode", mode])
        .args(["--allow-source", "198.18.0.0/24", "--bpf-pin-dir"])
        .arg(&net.pin_dir)
        .spawn()?;
    // Ready once the pins exist and the listener is in the map.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !net.pin_dir.join("xdp_veth-gw").exists() {
        if Instant::now() > deadline {
            bail!("the gateway did not attach XDP in {mode} mode");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

fn stop_gateway(net: &Net, gateway: &Path, mut daemon: Child) -> Result<()> {
    let _ = daemon.kill();
    let _ = daemon.wait();
    output(
        Command::new(gateway)
            .args(["bpf", "detach", "--bpf-pin-dir"])
            .arg(&net.pin_dir),
    )?;
    Ok(())
}

fn write_temp(name: &str, text: &str) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, text)?;
    Ok(path)
}
