//! Results: every figure of every round as JSON, and a Markdown table of medians (min-max) with
//! the ratio of the gateway to the best peer, where "best" depends on whether more or less is
//! better for that figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::attack::SCENARIOS;
use super::{Environment, Record};

/// The figures the table shows, per test: (test, value, label, higher is better).
const ROWS: [(&str, &str, &str, bool); 44] = [
    ("T1", "rps", "T1 HTTP/1.1 keep-alive, requests/s", true),
    ("T1", "per_cpu_s", "T1 requests per SUT CPU-second", true),
    (
        "T1-w2",
        "per_cpu_s",
        "T1 requests per SUT CPU-second, gateway with 2 worker threads",
        true,
    ),
    (
        "T2",
        "added_p50_ms",
        "T2 added p50 latency (ms) at 50% load",
        false,
    ),
    (
        "T2",
        "added_p99_ms",
        "T2 added p99 latency (ms) at 50% load",
        false,
    ),
    (
        "T2",
        "added_p999_ms",
        "T2 added p99.9 latency (ms) at 50% load",
        false,
    ),
    ("T3", "rps", "T3 full TLS handshakes/s", true),
    (
        "T3",
        "per_cpu_s",
        "T3 full handshakes per SUT CPU-second",
        true,
    ),
    ("T3b", "rps", "T3b resumed TLS handshakes/s", true),
    (
        "T3b",
        "per_cpu_s",
        "T3b resumed handshakes per SUT CPU-second",
        true,
    ),
    (
        "T4",
        "per_cpu_s",
        "T4 HTTP/2+TLS requests per SUT CPU-second",
        true,
    ),
    (
        "T4-bulk",
        "per_cpu_s",
        "T4 bulk TLS MiB per SUT CPU-second",
        true,
    ),
    (
        "T12",
        "per_cpu_s",
        "T12 HTTP/3 requests per SUT CPU-second (no peer here speaks HTTP/3)",
        true,
    ),
    (
        "T12-h2",
        "per_cpu_s",
        "T12 the same over HTTP/2 + TLS, same process and run",
        true,
    ),
    (
        "T12-bulk",
        "per_cpu_s",
        "T12 bulk HTTP/3 MiB per SUT CPU-second",
        true,
    ),
    (
        "T12-bulk-h2",
        "per_cpu_s",
        "T12 bulk over HTTP/2 + TLS, same process and run",
        true,
    ),
    (
        "T5",
        "pss_bytes_per_conn",
        "T5 bytes per idle connection (Pss)",
        false,
    ),
    (
        "T5-tls",
        "pss_bytes_per_conn",
        "T5 bytes per idle TLS connection (Pss)",
        false,
    ),
    ("T6", "p50_ms", "T6 route update to served, p50 (ms)", false),
    ("T6", "p99_ms", "T6 route update to served, p99 (ms)", false),
    (
        "T7",
        "errors",
        "T7 failed requests during route churn",
        false,
    ),
    ("T7", "p999_ms", "T7 p99.9 latency during churn (ms)", false),
    ("T7", "processes", "T7 processes after churn", false),
    (
        "T8",
        "ready_ms",
        "T8 start to ready with 10k routes (ms)",
        false,
    ),
    (
        "T8",
        "pss_bytes",
        "T8 memory with 10k routes (Pss bytes)",
        false,
    ),
    (
        "T8-kube",
        "ready_ms",
        "T8 start to ready with 10k Ingresses from the API server (ms)",
        false,
    ),
    (
        "T8-kube",
        "pss_bytes",
        "T8 memory with 10k Ingresses from the API server (Pss bytes)",
        false,
    ),
    (
        "T9",
        "mpps",
        "T9 denied-source drops, Mpps (generator-bound on veth)",
        true,
    ),
    (
        "T9",
        "cpu_ns_per_packet",
        "T9 CPU ns per dropped packet (whole machine)",
        false,
    ),
    (
        "T9-tax",
        "gbps",
        "T9 TCP throughput through the XDP interface, Gbit/s",
        true,
    ),
    (
        "T10",
        "per_cpu_s",
        "T10 keep-alive requests to a VIP per gateway CPU-second",
        true,
    ),
    (
        "T10-new-conn",
        "per_machine_cpu_s",
        "T10 new connections to a VIP per machine CPU-second",
        true,
    ),
    (
        "T9-cost",
        "ns_other_pass",
        "T9 XDP ns per packet: not for a listener (pass)",
        false,
    ),
    (
        "T9-cost",
        "ns_established_pass",
        "T9 XDP ns per packet: listener, allow-listed, established (pass)",
        false,
    ),
    (
        "T9-cost",
        "ns_denied_drop",
        "T9 XDP ns per packet: listener, denied source (drop)",
        false,
    ),
    (
        "T9-cost",
        "ns_syn_in_budget_pass",
        "T9 XDP ns per packet: new connection within the SYN budget (pass)",
        false,
    ),
    (
        "T9-cost",
        "ns_syn_over_budget_drop",
        "T9 XDP ns per packet: SYN over the budget (drop)",
        false,
    ),
    ("T11", "mib_per_s", "T11 layer 4 TCP bulk, MiB/s", true),
    (
        "T11",
        "per_cpu_s",
        "T11 layer 4 TCP bulk MiB per SUT CPU-second",
        true,
    ),
    (
        "T11-conn",
        "per_cpu_s",
        "T11 layer 4 TCP new connections per SUT CPU-second",
        true,
    ),
    (
        "T13-plain",
        "per_cpu_s",
        "T13 plain route (no auth), requests per SUT CPU-second",
        true,
    ),
    (
        "T13-basic",
        "per_cpu_s",
        "T13 basic auth (htpasswd $apr1$), requests per SUT CPU-second",
        true,
    ),
    (
        "T13-extauth",
        "per_cpu_s",
        "T13 external auth, not cached, requests per SUT CPU-second",
        true,
    ),
    (
        "T13-extauth-cached",
        "per_cpu_s",
        "T13 external auth, cached verdicts, requests per SUT CPU-second",
        true,
    ),
];

/// The figures of each attack (`attack::SCENARIOS`): (value, label, higher is better).
const ATTACK_FIGURES: [(&str, &str, bool); 5] = [
    ("success_pct", "legitimate requests answered (%)", true),
    ("p99_ms", "legitimate p99 (ms)", false),
    ("sut_cpu_s", "SUT CPU-seconds", false),
    (
        "softirq_cpu_s",
        "kernel softirq CPU-seconds, all CPUs",
        false,
    ),
    ("pss_bytes", "SUT memory (Pss bytes)", false),
];

/// Every row of the table: `ROWS`, then each attack's figures.
fn rows() -> Vec<(&'static str, &'static str, String, bool)> {
    let fixed = ROWS
        .iter()
        .map(|&(test, value, label, higher)| (test, value, label.to_string(), higher));
    let attacks = SCENARIOS.iter().flat_map(|&(test, scenario)| {
        ATTACK_FIGURES.iter().map(move |&(value, label, higher)| {
            (test, value, format!("{scenario}: {label}"), higher)
        })
    });
    fixed.chain(attacks).collect()
}

#[derive(Serialize)]
struct Document<'a> {
    environment: &'a Environment,
    records: &'a [Record],
}

/// Writes `<dir>/<date>.json` and `<dir>/<date>.md`, and prints the table.
pub fn write(dir: &Path, environment: &Environment, records: &[Record]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let date = today();
    let suffix = if environment.quick { "-quick" } else { "" };
    let json = dir.join(format!("{date}{suffix}.json"));
    // A run of some tests (`--only`) replaces those tests in the day's results, and keeps
    // the others.
    let mut ran: Vec<String> = records.iter().map(|r| r.test.clone()).collect();
    ran.dedup();
    let mut all: Vec<Record> = std::fs::read_to_string(&json)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|document| serde_json::from_value(document["records"].clone()).ok())
        .unwrap_or_default();
    all.retain(|old: &Record| !records.iter().any(|new| new.test == old.test));
    all.extend(records.iter().cloned());
    let records = all.as_slice();
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&Document {
            environment,
            records,
        })?,
    )?;
    let table = markdown(environment, records, &ran);
    std::fs::write(dir.join(format!("{date}{suffix}.md")), &table)?;
    println!("\n{table}\nwritten: {}", json.display());
    chart(&json);
    Ok(())
}

/// The PNG chart beside the JSON, drawn by bench/chart.py with matplotlib (installed from
/// PyPI when missing); a run without it still has its JSON and table.
fn chart(json: &Path) {
    let python = |args: &[&str]| {
        std::process::Command::new("python3")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !python(&["-c", "import matplotlib"])
        && !python(&["-m", "pip", "install", "--quiet", "matplotlib"])
    {
        println!("no chart: matplotlib is not installable here");
        return;
    }
    let script = crate::root().join("bench/chart.py");
    if !python(&[&script.to_string_lossy(), &json.to_string_lossy()]) {
        println!("no chart: bench/chart.py failed");
    }
}

fn markdown(environment: &Environment, records: &[Record], ran: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmark {} ({} runs, {} round(s), kernel {})\n\nThe last run took {} s (steal ticks {}) and measured {}; figures of other tests come from earlier runs of the day.\n",
        today(),
        if environment.quick { "quick" } else { "full" },
        environment.rounds,
        environment.kernel,
        environment.seconds,
        environment.steal_ticks,
        ran.join(", ")
    );
    if let Some(binary) = &environment.other_gateway {
        let _ = writeln!(
            out,
            "The gateway benchmarked is {binary}, not this checkout's release build.\n"
        );
    }
    let _ = writeln!(
        out,
        "Medians (min-max over rounds). SUT pinned to CPU 1, load and backend on CPU 0.\n"
    );
    let backend = records
        .iter()
        .filter_map(|r| r.values.get("backend_cpu_share"))
        .fold(None, |max: Option<f64>, v| {
            Some(max.map_or(*v, |m| m.max(*v)))
        });
    if let Some(share) = backend {
        let _ = writeln!(
            out,
            "The benchmark backend used at most {:.0}% of a CPU during T1 (below 100%: it was not the limit).\n",
            share * 100.0
        );
    }
    let _ = writeln!(
        out,
        "| figure | gateway | nginx | haproxy | gateway vs best peer |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (test, value, label, higher_is_better) in rows() {
        let cell = |sut: &str| -> Option<(f64, f64, f64)> {
            let mut values: Vec<f64> = records
                .iter()
                .filter(|r| r.sut == sut && r.test == test)
                .filter(|r| test != "T2" || is_half_load(r, records))
                .filter_map(|r| r.values.get(value).copied())
                .collect();
            if values.is_empty() {
                return None;
            }
            values.sort_by(|a, b| a.total_cmp(b));
            Some((
                values[values.len() / 2],
                values[0],
                values[values.len() - 1],
            ))
        };
        let cells: BTreeMap<&str, Option<(f64, f64, f64)>> = [
            "gateway",
            "nginx",
            "haproxy",
            "xdp-native",
            "iptables-raw",
            "sk_lookup",
            "dnat",
        ]
        .iter()
        .map(|s| (*s, cell(s)))
        .collect();
        if cells.values().all(Option::is_none) {
            continue;
        }
        // An added latency within the direct client's own spread over the rounds cannot be
        // told from noise: it is shown as such, never as a figure (or a negative one).
        let noise = added_latency_noise(test, value, records);
        let below_noise = |median: f64| noise.is_some_and(|noise| median <= noise);
        let show = |c: &Option<(f64, f64, f64)>| match c {
            Some((median, _, _)) if below_noise(*median) => {
                format!("below noise ({})", number(noise.unwrap_or(0.0)))
            }
            Some((median, min, max)) if (max - min).abs() > f64::EPSILON => {
                format!("{} ({}-{})", number(*median), number(*min), number(*max))
            }
            Some((median, _, _)) => number(*median),
            None => "-".to_string(),
        };
        let ours = cells["gateway"]
            .or(cells["xdp-native"])
            .or(cells["sk_lookup"])
            .map(|c| c.0);
        let peers = [
            cells["nginx"],
            cells["haproxy"],
            cells["iptables-raw"],
            cells["dnat"],
        ];
        let best = peers
            .iter()
            .flatten()
            .map(|c| c.0)
            .reduce(|a, b| if higher_is_better { a.max(b) } else { a.min(b) });
        let ratio = match (ours, best) {
            (Some(ours), Some(best)) if below_noise(ours) || below_noise(best) => {
                match (below_noise(ours), below_noise(best)) {
                    (true, true) => "within noise".to_string(),
                    (true, false) => "better (the gateway's within noise)".to_string(),
                    _ => "worse (the peers' within noise)".to_string(),
                }
            }
            (Some(ours), Some(best)) if best.abs() > f64::EPSILON && ours.abs() > f64::EPSILON => {
                let ratio = if higher_is_better {
                    ours / best
                } else {
                    best / ours
                };
                format!(
                    "{ratio:.2}x {}",
                    if ratio >= 1.0 { "better" } else { "worse" }
                )
            }
            (Some(ours), Some(best)) if ours == best => "equal".to_string(),
            _ => "-".to_string(),
        };
        // T9 and T10 compare kernel paths: XDP with iptables raw, sk_lookup with DNAT (shown in
        // the nginx column). T9-cost measures the gateway's own program and keeps its column.
        let kernel_path = cells["gateway"].is_none();
        let (gateway_cell, peer_cells) = if kernel_path && test.starts_with("T9") {
            (
                show(&cells["xdp-native"]),
                (show(&cells["iptables-raw"]), "-".to_string()),
            )
        } else if kernel_path && test.starts_with("T10") {
            (
                show(&cells["sk_lookup"]),
                (show(&cells["dnat"]), "-".to_string()),
            )
        } else {
            (
                show(&cells["gateway"]),
                (show(&cells["nginx"]), show(&cells["haproxy"])),
            )
        };
        let _ = writeln!(
            out,
            "| {label} | {gateway_cell} | {} | {} | {ratio} |",
            peer_cells.0, peer_cells.1
        );
    }
    let xdp: Vec<&Record> = records
        .iter()
        .filter(|r| r.test.starts_with("T9") || r.test.starts_with("T10"))
        .collect();
    if !xdp.is_empty() {
        let _ = writeln!(
            out,
            "\nT9 and T10 detail (in their rows the nginx column holds iptables raw, and DNAT):\n"
        );
        for r in xdp {
            let figures: Vec<String> = r
                .values
                .iter()
                .map(|(k, v)| format!("{k} {}", number(*v)))
                .collect();
            let _ = writeln!(out, "- {} {}: {}", r.test, r.sut, figures.join(", "));
        }
    }
    out
}

/// For a T2 added-latency row: how much the direct client's own percentile moves from round to
/// round at 50% load, as the median of its deviations from their median (one stray round does
/// not make everything noise); `None` for other rows.
fn added_latency_noise(test: &str, value: &str, records: &[Record]) -> Option<f64> {
    let percentile = value.strip_prefix("added_").filter(|_| test == "T2")?;
    let direct: Vec<f64> = records
        .iter()
        .filter(|r| r.sut == "direct" && r.test == "T2" && is_half_load(r, records))
        .filter_map(|r| r.values.get(percentile).copied())
        .collect();
    let middle = median_of(direct.clone())?;
    median_of(direct.iter().map(|v| (v - middle).abs()).collect())
}

fn median_of(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// T2 rows in the table are the ones at 50% of the slowest system's maximum.
fn is_half_load(record: &Record, records: &[Record]) -> bool {
    let mut rates: Vec<f64> = records
        .iter()
        .filter(|r| r.test == "T2")
        .filter_map(|r| r.values.get("rate").copied())
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    rates.dedup();
    let middle = rates.get(rates.len() / 2).copied();
    record.values.get("rate").copied() == middle
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

pub fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "undated".to_string())
}
