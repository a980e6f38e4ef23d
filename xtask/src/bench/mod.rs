//! `cargo xtask bench`: the gateway side by side with nginx and HAProxy in one run, on one
//! machine, as ../shared/BENCHMARKS.md describes. Results go to bench/results/<date>.json and a
//! Markdown table of medians and ratios beside it.

mod attack;
pub mod backend;
mod churn;
mod fixtures;
pub mod h3_client;
pub mod link_order;
mod load;
mod netns;
mod profile;
mod report;
mod sut;
pub mod tls_client;
mod xdp;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::{cargo, root, run};
use load::{Measured, OhaTarget};
use sut::{Kind, Options, Sut};

/// How long and how often.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Only these tests (`T1`, `T3`, ...); all when empty.
    pub only: Vec<String>,
    pub rounds: usize,
    /// Length of each throughput or latency run.
    pub run: Duration,
    pub route_updates: usize,
    pub churn_mutations: usize,
}

impl Plan {
    pub fn new(quick: bool, only: Vec<String>) -> Self {
        if quick {
            Plan {
                quick,
                only,
                rounds: 1,
                run: Duration::from_secs(5),
                route_updates: 20,
                churn_mutations: 100,
            }
        } else {
            Plan {
                quick,
                only,
                rounds: 3,
                run: Duration::from_secs(10),
                route_updates: 100,
                churn_mutations: 1000,
            }
        }
    }

    fn wants(&self, test: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|t| t.eq_ignore_ascii_case(test))
    }
}

/// One measurement of one system in one round.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Record {
    pub sut: String,
    pub test: String,
    pub round: usize,
    /// Named figures: rps, sut_cpu_s, per_cpu_s, p50_ms, p99_ms, errors, pss_bytes, ...
    pub values: BTreeMap<String, f64>,
}

impl Record {
    fn new(sut: &str, test: &str, round: usize) -> Self {
        Self {
            sut: sut.to_string(),
            test: test.to_string(),
            round,
            values: BTreeMap::new(),
        }
    }

    fn set(&mut self, name: &str, value: f64) -> &mut Self {
        self.values.insert(name.to_string(), value);
        self
    }

    fn measured(&mut self, m: &Measured) -> &mut Self {
        self.set("rps", m.rps)
            .set("requests", m.requests)
            .set("errors", m.errors);
        for (name, value) in [
            ("p50_ms", m.p50_ms),
            ("p99_ms", m.p99_ms),
            ("p999_ms", m.p999_ms),
            ("max_ms", m.max_ms),
        ] {
            if let Some(value) = value {
                self.set(name, value);
            }
        }
        self
    }
}

/// The eBPF object and the release builds of the gateway and of this tool: the backend and the
/// TLS load client are this tool's own code, optimized like the gateway, or they would be the
/// bottleneck.
fn build_release() -> Result<()> {
    crate::ebpf::build()?;
    cargo(&[
        "build",
        "--release",
        "-p",
        "gateway-userspace",
        "-p",
        "xtask",
    ])
}

/// The whole run.
pub fn run_all(quick: bool, only: Vec<String>, other_gateway: Option<PathBuf>) -> Result<()> {
    let plan = Plan::new(quick, only);
    raise_file_limit()?;
    install_tools()?;
    build_release()?;
    let gateway = match &other_gateway {
        Some(path) => path
            .canonicalize()
            .with_context(|| format!("--gateway {}", path.display()))?,
        None => root().join("target/release/gateway"),
    };
    link_order::report_missing(&gateway)?;
    let work = root().join("bench/work");
    let started = Instant::now();
    let steal_before = steal_ticks()?;
    let fixtures = fixtures::generate(&work, 100)?;
    let backend = Backend::start()?;
    let mut records = Vec::new();

    section(&plan, "T1", false, || {
        println!("== T0/T1 max throughput (wrk, HTTP/1.1 keep-alive, 100 routes)");
        let direct = load::wrk(
            fixtures::BACKEND_PORTS[0],
            plan.run,
            64,
            &fixtures.dir.join("hosts.lua"),
        )?;
        records.push({
            let mut r = Record::new("direct", "T1", 0);
            r.measured(&direct);
            r
        });
        for round in 0..plan.rounds {
            // The gateway once more with two worker threads (free to use both CPUs, the load's
            // too): requests per CPU-second must not fall with more threads (T1-w2).
            let runs = shuffled(round)
                .into_iter()
                .map(|kind| (kind, 1))
                .chain([(Kind::Gateway, 2)]);
            for (kind, workers) in runs {
                let options = Options {
                    workers,
                    ..Options::default()
                };
                let sut = Sut::start(kind, &fixtures, &gateway, options)?;
                let cpu = sut.cpu_seconds();
                let backend_cpu = backend.cpu_seconds();
                let m = load::wrk(
                    kind.ports().0,
                    plan.run,
                    64,
                    &fixtures.dir.join("hosts.lua"),
                )?;
                let used = sut.cpu_seconds() - cpu;
                // The backend shares CPU 0 with the load: it must not be what limits.
                let backend_share = (backend.cpu_seconds() - backend_cpu) / plan.run.as_secs_f64();
                if backend_share > 0.9 {
                    println!(
                        "  warning: the backend used {:.0}% of its CPU: it may be the limit",
                        backend_share * 100.0
                    );
                }
                let test = if workers > 1 { "T1-w2" } else { "T1" };
                let mut r = Record::new(kind.name(), test, round);
                r.measured(&m)
                    .set("sut_cpu_s", used)
                    .set("backend_cpu_share", backend_share)
                    .set("per_cpu_s", m.requests / used.max(1e-9));
                println!(
                    "  {:8} round {round}: {:>9.0} rps, {:>9.0} req per SUT CPU-s, errors {} ({test})",
                    kind.name(),
                    m.rps,
                    m.requests / used.max(1e-9),
                    m.errors
                );
                records.push(r);
            }
        }
        Ok(())
    });

    section(&plan, "profile", false, || {
        println!("== Profile: the gateway under T1's and T4's loads (perf, flame graphs)");
        for load in [profile::Load::Http1, profile::Load::Http2Tls] {
            profile::gateway(load, &fixtures, &gateway, &root().join("bench/results"))?;
        }
        Ok(())
    });

    section(&plan, "T2", false, || {
        println!("== T2 added latency, open loop (oha, latency correction)");
        let slowest = Kind::ALL
            .iter()
            .filter_map(|k| {
                median(
                    records
                        .iter()
                        .filter(|r| r.test == "T1" && r.sut == k.name())
                        .map(|r| r.values["rps"]),
                )
            })
            .fold(f64::INFINITY, f64::min);
        // Without a T1 in this run, a rate every system sustains on these machines.
        let slowest = if slowest.is_finite() {
            slowest
        } else {
            10_000.0
        };
        let fractions: &[f64] = if plan.quick {
            &[0.5]
        } else {
            &[0.25, 0.5, 0.75]
        };
        // Each round measures the client straight to the backend too: its spread over the
        // rounds is the noise floor the report holds the added latencies against.
        for round in 0..plan.rounds {
            for &fraction in fractions {
                let rate = (slowest * fraction) as u32;
                let direct = load::oha(
                    &OhaTarget::loopback(fixtures::BACKEND_PORTS[3], "r7.bench.test"),
                    plan.run,
                    32,
                    Some(rate),
                )?;
                let mut r = Record::new("direct", "T2", round);
                r.measured(&direct).set("rate", f64::from(rate));
                records.push(r);
                for kind in shuffled(round) {
                    let sut = Sut::start(kind, &fixtures, &gateway, Options::default())?;
                    let m = load::oha(
                        &OhaTarget::loopback(kind.ports().0, "r7.bench.test"),
                        plan.run,
                        32,
                        Some(rate),
                    )?;
                    drop(sut);
                    let mut r = Record::new(kind.name(), "T2", round);
                    r.measured(&m).set("rate", f64::from(rate));
                    for (added, through, straight) in [
                        ("added_p50_ms", m.p50_ms, direct.p50_ms),
                        ("added_p99_ms", m.p99_ms, direct.p99_ms),
                        ("added_p999_ms", m.p999_ms, direct.p999_ms),
                    ] {
                        if let (Some(through), Some(straight)) = (through, straight) {
                            r.set(added, through - straight);
                        }
                    }
                    println!(
                        "  {:8} round {round} at {rate:>6}/s: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms (direct {:.3} / {:.3} / {:.3} ms), errors {}",
                        kind.name(),
                        m.p50_ms.unwrap_or(0.0),
                        m.p99_ms.unwrap_or(0.0),
                        m.p999_ms.unwrap_or(0.0),
                        direct.p50_ms.unwrap_or(0.0),
                        direct.p99_ms.unwrap_or(0.0),
                        direct.p999_ms.unwrap_or(0.0),
                        m.errors
                    );
                    records.push(r);
                }
            }
        }
        Ok(())
    });

    section(&plan, "T3", false, || {
        println!(
            "== T3 TLS 1.3 handshakes (ECDSA P-256, X25519, AES-128-GCM), one request per connection"
        );
        for (test, resumption) in [("T3", false), ("T3b", true)] {
            for round in 0..plan.rounds {
                for kind in shuffled(round) {
                    let sut = Sut::start(
                        kind,
                        &fixtures,
                        &gateway,
                        Options {
                            resumption,
                            ..Options::default()
                        },
                    )?;
                    let cpu = sut.cpu_seconds();
                    let m = if resumption {
                        load::resumed_handshakes(kind.ports().1, plan.run, 32)?
                    } else {
                        load::oha_handshakes(kind.ports().1, plan.run, 32)?
                    };
                    let used = sut.cpu_seconds() - cpu;
                    let mut r = Record::new(kind.name(), test, round);
                    r.measured(&m)
                        .set("sut_cpu_s", used)
                        .set("per_cpu_s", m.requests / used.max(1e-9))
                        .set("cpu_us_per_handshake", used * 1e6 / m.requests.max(1.0));
                    println!(
                        "  {test} {:8} round {round}: {:>7.0} handshakes/s, {:>7.0} per SUT CPU-s, errors {}",
                        kind.name(),
                        m.rps,
                        m.requests / used.max(1e-9),
                        m.errors
                    );
                    records.push(r);
                }
            }
        }
        Ok(())
    });

    section(&plan, "T4", true, || {
        println!("== T4 HTTP/2 over TLS (h2load)");
        // Rounds, as T1's: one run per system moved the ratio by a third on a noisy VM.
        let runs = (0..plan.rounds).flat_map(|round| {
            [("T4", "/", 16, 10), ("T4-bulk", "/bytes/1m", 4, 1)]
                .into_iter()
                .map(move |run| (round, run))
        });
        for (round, (test, path, clients, streams)) in runs {
            for kind in shuffled(round) {
                let sut = Sut::start(
                    kind,
                    &fixtures,
                    &gateway,
                    Options {
                        resumption: true,
                        ..Options::default()
                    },
                )?;
                let cpu = sut.cpu_seconds();
                match load::h2load(kind.ports().1, path, plan.run, clients, streams) {
                    Ok(m) => {
                        let used = sut.cpu_seconds() - cpu;
                        let mut r = Record::new(kind.name(), test, round);
                        r.measured(&m)
                            .set("sut_cpu_s", used)
                            .set("per_cpu_s", m.requests / used.max(1e-9));
                        if test == "T4-bulk" {
                            r.set("mb_per_cpu_s", m.requests / used.max(1e-9));
                        }
                        println!(
                            "  {test} {:8} round {round}: {:>8.0} req/s, {:>8.0} per SUT CPU-s, errors {}",
                            kind.name(),
                            m.rps,
                            m.requests / used.max(1e-9),
                            m.errors
                        );
                        records.push(r);
                    }
                    Err(e) => println!("  {test} {:8}: h2load failed: {e:#}", kind.name()),
                }
            }
        }
        Ok(())
    });
    section(&plan, "T12", false, || {
        println!(
            "== T12 HTTP/3 (this tool's QUIC client) beside the gateway's own HTTP/2 + TLS (h2load) in the same \
             process; no peer here speaks HTTP/3 (nginx 1.22 has no http_v3_module, HAProxy 2.6 is built without QUIC)"
        );
        let runs = (0..plan.rounds).flat_map(|round| {
            [("T12", "/", 16, 10), ("T12-bulk", "/bytes/1m", 4, 1)]
                .into_iter()
                .map(move |run| (round, run))
        });
        for (round, (test, path, clients, streams)) in runs {
            let options = Options {
                resumption: true,
                http3: true,
                ..Options::default()
            };
            let sut = Sut::start(Kind::Gateway, &fixtures, &gateway, options)?;
            for protocol in ["h3", "h2"] {
                let cpu = sut.cpu_seconds();
                let port = Kind::Gateway.ports().1;
                let measured = match protocol {
                    "h3" => load::h3(port, path, plan.run, clients, streams),
                    _ => load::h2load(port, path, plan.run, clients, streams),
                };
                match measured {
                    Ok(m) => {
                        let used = sut.cpu_seconds() - cpu;
                        let name = match protocol {
                            "h3" => test.to_string(),
                            _ => format!("{test}-h2"),
                        };
                        let mut r = Record::new(Kind::Gateway.name(), &name, round);
                        r.measured(&m)
                            .set("sut_cpu_s", used)
                            .set("per_cpu_s", m.requests / used.max(1e-9));
                        println!(
                            "  {name} round {round}: {:>8.0} req/s, {:>8.0} per SUT CPU-s, errors {}",
                            m.rps,
                            m.requests / used.max(1e-9),
                            m.errors
                        );
                        records.push(r);
                    }
                    Err(e) => println!("  {test} {protocol}: the load failed: {e:#}"),
                }
            }
        }
        Ok(())
    });
    section(&plan, "T5", true, || {
        println!(
            "== T5 memory per idle connection (9,000 keep-alive connections: HAProxy's maxconn fits the file limit here), plain and TLS"
        );
        for (test, tls) in [("T5", false), ("T5-tls", true)] {
            for kind in shuffled(0) {
                let sut = Sut::start(kind, &fixtures, &gateway, Options::default())?;
                let m = idle_connections(&sut, 9_000, tls)?;
                println!(
                    "  {test:6} {:8}: {:>7.0} bytes per connection (Pss), {:>7.0} kernel bytes",
                    kind.name(),
                    m.0,
                    m.1
                );
                let mut r = Record::new(kind.name(), test, 0);
                r.set("pss_bytes_per_conn", m.0)
                    .set("kernel_bytes_per_conn", m.1);
                records.push(r);
            }
        }
        Ok(())
    });

    section(&plan, "T6", false, || {
        println!("== T6 route update to first served request");
        for kind in shuffled(0) {
            let sut = Sut::start(kind, &fixtures, &gateway, Options::default())?;
            let latencies = churn::update_latencies(&sut, &fixtures, plan.route_updates)?;
            let mut r = Record::new(kind.name(), "T6", 0);
            r.set("p50_ms", percentile(&latencies, 0.5))
                .set("p99_ms", percentile(&latencies, 0.99))
                .set("max_ms", percentile(&latencies, 1.0));
            println!(
                "  {:8}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} updates",
                kind.name(),
                r.values["p50_ms"],
                r.values["p99_ms"],
                r.values["max_ms"],
                latencies.len()
            );
            records.push(r);
            drop(sut);
            // Every run starts from the same 100 routes.
            fixtures::generate(&work, 100)?;
        }
        Ok(())
    });

    section(&plan, "T7", false, || {
        println!(
            "== T7 failed requests during {} route changes under load",
            plan.churn_mutations
        );
        for kind in shuffled(0) {
            let sut = Sut::start(kind, &fixtures, &gateway, Options::default())?;
            let (m, processes) =
                churn::failures_under_churn(&sut, &fixtures, plan.churn_mutations)?;
            let mut r = Record::new(kind.name(), "T7", 0);
            r.measured(&m)
                .set("pss_bytes", sut.pss_bytes() as f64)
                .set("processes", processes as f64);
            println!(
                "  {:8}: {} requests, {} failed, p99.9 {:.1} ms, max {:.1} ms, {} processes after",
                kind.name(),
                m.requests,
                m.errors,
                m.p999_ms.unwrap_or(0.0),
                m.max_ms.unwrap_or(0.0),
                processes
            );
            records.push(r);
            drop(sut);
            fixtures::generate(&work, 100)?;
        }
        Ok(())
    });

    section(&plan, "T8", true, || {
        println!("== T8 10,000 routes: start to ready, memory");
        let big = fixtures::generate(&work, 10_000)?;
        for kind in shuffled(0) {
            let begin = Instant::now();
            let sut = Sut::start(kind, &big, &gateway, Options::default())?;
            let ready = begin.elapsed().as_secs_f64() * 1000.0;
            // Memory is what a system holds once settled, not the garbage of its start (the
            // gateway's allocator returns the parse buffers within about a second).
            std::thread::sleep(Duration::from_secs(2));
            let mut r = Record::new(kind.name(), "T8", 0);
            r.set("ready_ms", ready)
                .set("pss_bytes", sut.pss_bytes() as f64);
            println!(
                "  {:8}: ready in {ready:.0} ms, Pss {:.1} MB",
                kind.name(),
                sut.pss_bytes() as f64 / 1e6
            );
            records.push(r);
        }
        // The same routes as 10,000 Ingresses listed from an API server (the tests' fake, which
        // speaks the real list/watch protocol to the gateway's kube-rs client); neither peer
        // reads Kubernetes objects.
        let program = test_program("fake-apiserver")?;
        let ingresses = fixtures::api_ingresses(&work, 10_000)?;
        let api = ApiServer::start(
            &program,
            &[big.manifests().join("services.yaml"), ingresses],
        )?;
        let begin = Instant::now();
        let options = Options {
            kubeconfig: Some(api.kubeconfig.clone()),
            ..Options::default()
        };
        let sut = Sut::start(Kind::Gateway, &big, &gateway, options)?;
        let ready = begin.elapsed().as_secs_f64() * 1000.0;
        std::thread::sleep(Duration::from_secs(2));
        let mut r = Record::new("gateway", "T8-kube", 0);
        r.set("ready_ms", ready)
            .set("pss_bytes", sut.pss_bytes() as f64);
        println!(
            "  gateway from the API server: ready in {ready:.0} ms, Pss {:.1} MB",
            sut.pss_bytes() as f64 / 1e6
        );
        records.push(r);
        fixtures::generate(&work, 100)?;
        Ok(())
    });

    section(&plan, "T9", false, || {
        println!(
            "== T9/T10 XDP drops, the tax on other traffic, sk_lookup against DNAT (veth in network namespaces)"
        );
        records.append(&mut xdp::run(&gateway, &plan)?);
        Ok(())
    });

    section(&plan, "T9-cost", false, || {
        println!("== T9-cost the XDP program's own cost per packet, by path (BPF_PROG_TEST_RUN)");
        let program = test_program("xdp-cost")?;
        let text = crate::output(&mut Command::new(program))?;
        let mut r = Record::new("gateway", "T9-cost", 0);
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)?;
            let (Some(path), Some(ns)) = (value["path"].as_str(), value["ns_per_packet"].as_f64())
            else {
                bail!("xdp-cost printed {line:?}");
            };
            println!("  {path:22} {ns:>5.0} ns per packet");
            r.set(&format!("ns_{path}"), ns);
        }
        records.push(r);
        Ok(())
    });

    section(&plan, "T11", false, || {
        println!("== T11 layer 4 TCP: bulk MiB and new connections per SUT CPU-second");
        let _bulk = BulkServer::start()?;
        for round in 0..plan.rounds {
            for kind in shuffled(round) {
                let sut = Sut::start(kind, &fixtures, &gateway, Options::default())?;
                let (bulk_port, connections_port) = kind.tcp_ports();
                let cpu = sut.cpu_seconds();
                let bytes = load::iperf3(bulk_port, plan.run)?;
                let used = sut.cpu_seconds() - cpu;
                let mib = bytes / (1024.0 * 1024.0);
                let mut r = Record::new(kind.name(), "T11", round);
                r.set("mib_per_s", mib / plan.run.as_secs_f64())
                    .set("sut_cpu_s", used)
                    .set("per_cpu_s", mib / used.max(1e-9));
                records.push(r);
                let cpu = sut.cpu_seconds();
                let target = OhaTarget::loopback(connections_port, "r0.bench.test");
                let m = load::oha_fresh_connections(&target, plan.run, 32, None)?;
                let used_connecting = sut.cpu_seconds() - cpu;
                let mut r = Record::new(kind.name(), "T11-conn", round);
                r.measured(&m)
                    .set("sut_cpu_s", used_connecting)
                    .set("per_cpu_s", m.requests / used_connecting.max(1e-9));
                records.push(r);
                println!(
                    "  {:8} round {round}: {:>7.0} MiB/s, {:>7.0} MiB per SUT CPU-s; {:>6.0} connections/s, {:>6.0} per SUT CPU-s, errors {}",
                    kind.name(),
                    mib / plan.run.as_secs_f64(),
                    mib / used.max(1e-9),
                    m.rps,
                    m.requests / used_connecting.max(1e-9),
                    m.errors
                );
            }
        }
        Ok(())
    });

    section(&plan, "T13", false, || {
        println!(
            "== T13 authentication: requests per SUT CPU-second, plain, basic auth, external auth \
             (not cached, cached); HAProxy left out (no external auth without Lua or SPOE)"
        );
        for round in 0..plan.rounds {
            for kind in shuffled(round).into_iter().filter(|k| *k != Kind::Haproxy) {
                let sut = Sut::start(kind, &fixtures, &gateway, Options::default())?;
                for (variant, (host, _)) in ["plain", "basic", "extauth", "extauth-cached"]
                    .into_iter()
                    .zip(fixtures::AUTH_ROUTES)
                {
                    let cpu = sut.cpu_seconds();
                    let script = fixtures.dir.join(format!("{host}.lua"));
                    let m = load::wrk(kind.ports().0, plan.run, 64, &script)?;
                    let used = sut.cpu_seconds() - cpu;
                    let test = format!("T13-{variant}");
                    let mut r = Record::new(kind.name(), &test, round);
                    r.measured(&m)
                        .set("sut_cpu_s", used)
                        .set("per_cpu_s", m.requests / used.max(1e-9));
                    println!(
                        "  {:8} round {round}: {variant:15} {:>9.0} rps, {:>9.0} req per SUT CPU-s, errors {}",
                        kind.name(),
                        m.rps,
                        m.requests / used.max(1e-9),
                        m.errors
                    );
                    records.push(r);
                }
            }
        }
        Ok(())
    });

    section(&plan, "attack", false, || {
        println!(
            "== Under attack: a legitimate client ({} new connections/s) beside slowloris, idle connections, HTTP/2 rapid reset",
            attack::LEGIT_RATE
        );
        records.append(&mut attack::run(&plan, &fixtures, &gateway)?);
        Ok(())
    });

    section(&plan, "syn-flood", false, || {
        println!(
            "== Under a SYN flood: the legitimate client and a flood at a VIP (veth in network namespaces)"
        );
        records.append(&mut attack::syn_floods(&plan, &fixtures, &gateway)?);
        Ok(())
    });

    let steal = steal_ticks()?.saturating_sub(steal_before);
    let elapsed = started.elapsed();
    let environment = Environment {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        quick: plan.quick,
        rounds: plan.rounds,
        seconds: elapsed.as_secs(),
        steal_ticks: steal,
        other_gateway: other_gateway.map(|_| gateway.display().to_string()),
    };
    report::write(&root().join("bench/results"), &environment, &records)
}

/// The bulk TCP server behind every system's layer 4 bulk port (iperf3, on the load's CPU);
/// stopped when dropped.
struct BulkServer(Child);

impl BulkServer {
    fn start() -> Result<Self> {
        let child = Command::new("taskset")
            .args(["-c", sut::LOAD_CPU, "iperf3", "-s", "-B", "127.0.0.1"])
            .args(["-p", &fixtures::BULK_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self(child))
    }
}

impl Drop for BulkServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A program of the test crate (`xdp-cost`, `fake-apiserver`), built for release; its path.
fn test_program(name: &str) -> Result<PathBuf> {
    cargo(&["build", "--release", "-p", "gateway-e2e", "--bin", name])?;
    Ok(root().join("target/release").join(name))
}

/// The tests' fake Kubernetes API server serving the objects of some YAML files (on the load's
/// CPU); stopped when dropped.
struct ApiServer {
    child: Child,
    kubeconfig: PathBuf,
}

impl ApiServer {
    fn start(program: &std::path::Path, files: &[PathBuf]) -> Result<Self> {
        let mut child = Command::new("taskset")
            .args(["-c", sut::LOAD_CPU])
            .arg(program)
            .args(files)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting fake-apiserver")?;
        // It prints its kubeconfig once every object is in.
        let mut line = String::new();
        let stdout = child.stdout.take().context("fake-apiserver's stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let server = Self {
            child,
            kubeconfig: line.trim().into(),
        };
        if server.kubeconfig.as_os_str().is_empty() {
            bail!("fake-apiserver exited without serving");
        }
        Ok(server)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// Facts about the run that go with the figures.
#[derive(Debug, Serialize)]
pub struct Environment {
    pub kernel: String,
    pub quick: bool,
    pub rounds: usize,
    pub seconds: u64,
    pub steal_ticks: u64,
    /// The gateway binary benchmarked, when it is not this checkout's release build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_gateway: Option<String>,
}

/// Runs one test of the suite when the plan wants it (`full_only`: not in a quick run); a
/// failure is reported and the run goes on.
fn section(plan: &Plan, test: &str, full_only: bool, body: impl FnOnce() -> Result<()>) {
    if (full_only && plan.quick) || !plan.wants(test) {
        return;
    }
    if let Err(error) = body() {
        println!("  {test} failed: {error:#}");
    }
}

/// The order of the systems in `round`: rotated, so no system always runs first.
fn shuffled(round: usize) -> Vec<Kind> {
    let mut kinds = Kind::ALL.to_vec();
    let turn = round % kinds.len();
    kinds.rotate_left(turn);
    kinds
}

pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let index = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[index]
}

/// This tool built with optimizations (for the backend and the TLS load client).
pub fn release_tool() -> PathBuf {
    root().join("target/release/xtask")
}

/// Lets this process and the systems it starts hold the connections of the tests (HAProxy
/// checks that its maxconn fits under the soft limit).
fn raise_file_limit() -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!(
            "reading the open file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        bail!(
            "raising the open file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Steal ticks of all CPUs so far (/proc/stat): a noisy neighbour shows here.
fn steal_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("/proc/stat is empty")?;
    Ok(cpu
        .split_whitespace()
        .nth(8)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// The benchmark backend on CPU 0 (this very binary, `xtask bench-backend`).
struct Backend(Child);

impl Backend {
    /// Started in the caller's network namespace.
    fn start() -> Result<Self> {
        let child = Command::new("taskset")
            .args(["-c", sut::LOAD_CPU])
            .arg(release_tool())
            .arg("bench-backend")
            .stdout(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::http_get(("127.0.0.1", fixtures::BACKEND_PORTS[3]), "x", "/").is_err() {
            if Instant::now() > deadline {
                bail!("the benchmark backend did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self(child))
    }
}

impl Backend {
    /// CPU seconds the backend has used so far.
    fn cpu_seconds(&self) -> f64 {
        sut::process_cpu_seconds(self.0.id())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Opens `count` keep-alive connections (TLS ones when `tls`) that each made one request,
/// holds them, and returns the system's Pss growth and the kernel's TCP memory growth per
/// connection.
fn idle_connections(sut: &Sut, count: usize, tls: bool) -> Result<(f64, f64)> {
    let pss_before = sut.pss_bytes() as f64;
    let tcp_before = tcp_memory_bytes()?;
    let script = format!(
        r#"
import asyncio, resource, ssl, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
context = None
if {tls}:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
async def one():
    r, w = await asyncio.open_connection("127.0.0.1", {port}, ssl=context,
        server_hostname="r1.bench.test" if context else None)
    w.write(b"GET / HTTP/1.1\r\nHost: r1.bench.test\r\n\r\n")
    await w.drain()
    await asyncio.wait_for(r.readuntil(b"ok"), 10)
    return w
async def main():
    held = []
    for i in range(0, {count}, 500):
        held += await asyncio.gather(*[one() for _ in range(min(500, {count} - i))])
    print("ready", flush=True)
    sys.stdin.readline()
asyncio.run(main())
"#,
        port = if tls {
            sut.kind.ports().1
        } else {
            sut.kind.ports().0
        },
        tls = if tls { "True" } else { "False" },
    );
    let mut holder = Command::new("taskset")
        .args(["-c", sut::LOAD_CPU, "python3", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().context("stdout")?),
        &mut line,
    )?;
    if line.trim() != "ready" {
        let _ = holder.kill();
        bail!("the idle connection holder failed");
    }
    std::thread::sleep(Duration::from_secs(3));
    let pss = (sut.pss_bytes() as f64 - pss_before) / count as f64;
    let kernel = (tcp_memory_bytes()? - tcp_before) / count as f64;
    let _ = holder.kill();
    let _ = holder.wait();
    Ok((pss, kernel))
}

/// The kernel's TCP buffer memory (/proc/net/sockstat, pages).
fn tcp_memory_bytes() -> Result<f64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat")?;
    let pages: f64 = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    Ok(pages * 4096.0)
}

/// Debian packages and crates the benchmarks drive, installed when missing.
fn install_tools() -> Result<()> {
    let packages = [
        "nginx",
        // nginx's `stream` module, for the layer 4 row (T11).
        "libnginx-mod-stream",
        "haproxy",
        "wrk",
        "nghttp2-client",
        "netsniff-ng",
        "iptables",
        "nftables",
        "iperf3",
        "iproute2",
        "python3",
        "linux-perf",
    ];
    if !crate::install_packages(&packages)?.is_empty() {
        // Debian starts the packaged services; the benchmarks run their own.
        for service in ["nginx", "haproxy"] {
            let _ = Command::new("systemctl").args(["stop", service]).status();
            let _ = Command::new("pkill").args(["-x", service]).status();
        }
    }
    if Command::new("oha").arg("--version").output().is_err() {
        println!("installing oha from crates.io (a few minutes, once)");
        run(Command::new("cargo").args(["install", "oha", "--locked"]))?;
    }
    Ok(())
}
