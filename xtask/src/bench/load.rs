//! The load generators, pinned to the load CPU, and what their output says.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::sut::LOAD_CPU;
use crate::output;

/// What one load run measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub requests: f64,
    /// Requests answered 200, where the generator tells (oha).
    pub ok: Option<f64>,
    pub rps: f64,
    pub errors: f64,
    /// Latency percentiles in milliseconds, where the generator reports them.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

fn pinned(program: &str) -> Command {
    let mut command = Command::new("taskset");
    command.args(["-c", LOAD_CPU, program]);
    command
}

/// Closed-loop maximum throughput with wrk (HTTP/1.1 keep-alive, random route per request).
pub fn wrk(
    port: u16,
    duration: Duration,
    connections: u32,
    script: &std::path::Path,
) -> Result<Measured> {
    let text = output(
        pinned("wrk")
            .args([
                "-t1",
                &format!("-c{connections}"),
                &format!("-d{}s", duration.as_secs()),
                "--latency",
                "-s",
            ])
            .arg(script)
            .arg(format!("http://127.0.0.1:{port}/")),
    )?;
    let number_after = |label: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let percentile = |label: &str| -> Option<f64> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(label))
            .map(str::trim)
            .and_then(parse_duration_ms)
    };
    let socket_errors: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    Ok(Measured {
        requests,
        ok: None,
        rps: number_after("Requests/sec:").context("wrk printed no Requests/sec")?,
        errors: number_after("Non-2xx or 3xx responses:").unwrap_or(0.0) + socket_errors,
        p50_ms: percentile("50%"),
        p99_ms: percentile("99%"),
        ..Measured::default()
    })
}

/// `1.23ms`, `456.00us`, `2.01s` in milliseconds.
fn parse_duration_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// What oha runs against.
pub struct OhaTarget<'a> {
    pub address: &'a str,
    pub port: u16,
    pub host: &'a str,
}

impl<'a> OhaTarget<'a> {
    pub fn loopback(port: u16, host: &'a str) -> Self {
        Self {
            address: "127.0.0.1",
            port,
            host,
        }
    }

    fn url(&self) -> String {
        format!("http://{}:{}/", self.address, self.port)
    }
}

/// oha for `duration`: open loop at `rate` requests per second (with latency correction) when
/// given, else as fast as `connections` allow.
pub fn oha(
    target: &OhaTarget<'_>,
    duration: Duration,
    connections: u32,
    rate: Option<u32>,
) -> Result<Measured> {
    let mut command = pinned("oha");
    command
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "-z",
            &format!("{}s", duration.as_secs()),
        ])
        .args(["-c", &connections.to_string()]);
    if let Some(rate) = rate {
        command.args(["-q", &rate.to_string(), "--latency-correction"]);
    }
    command.args(["-H", &format!("Host: {}", target.host)]);
    oha_measured(command.arg(target.url()))
}

/// oha with a new connection for every request (what a new client sees), for `duration`:
/// open loop at `rate` per second when given, else as fast as `connections` allow.
pub fn oha_fresh_connections(
    target: &OhaTarget<'_>,
    duration: Duration,
    connections: u32,
    rate: Option<u32>,
) -> Result<Measured> {
    let mut command = pinned("oha");
    command
        .args(["--no-tui", "--output-format", "json", "--disable-keepalive"])
        .args(["-z", &format!("{}s", duration.as_secs())])
        .args(["-c", &connections.to_string()]);
    if let Some(rate) = rate {
        command.args(["-q", &rate.to_string(), "--latency-correction"]);
    }
    command
        .args(["-H", &format!("Host: {}", target.host)])
        .arg(target.url());
    oha_measured(&mut command)
}

/// Bytes iperf3 moved through `port` to the bulk server in `duration` (one stream).
pub fn iperf3(port: u16, duration: Duration) -> Result<f64> {
    let mut command = pinned("iperf3");
    command
        .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-J"])
        .args(["-t", &duration.as_secs().to_string()]);
    let json: serde_json::Value = serde_json::from_str(&crate::output(&mut command)?)?;
    json["end"]["sum_received"]["bytes"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("iperf3 reported no bytes: {json}"))
}

/// Full TLS handshakes with oha (the fastest client here): one request per connection to
/// `r7.bench.test` on `port`.
pub fn oha_handshakes(port: u16, duration: Duration, connections: u32) -> Result<Measured> {
    let mut command = pinned("oha");
    command
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--insecure",
            "--disable-keepalive",
        ])
        .args([
            "-z",
            &format!("{}s", duration.as_secs()),
            "-c",
            &connections.to_string(),
        ])
        .args([
            "--connect-to",
            &format!("r7.bench.test:{port}:127.0.0.1:{port}"),
        ])
        .arg(format!("https://r7.bench.test:{port}/"));
    oha_measured(&mut command)
}

/// Runs an oha command and reads its JSON summary.
fn oha_measured(command: &mut Command) -> Result<Measured> {
    let json: serde_json::Value = serde_json::from_str(&output(command)?).context("oha JSON")?;
    let summary = &json["summary"];
    let seconds = |v: &serde_json::Value| v.as_f64().map(|s| s * 1000.0);
    let percentiles = &json["latencyPercentiles"];
    let ok: f64 = json["statusCodeDistribution"]["200"]
        .as_f64()
        .unwrap_or(0.0);
    let all_statuses: f64 = json["statusCodeDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_f64()).sum())
        .unwrap_or(0.0);
    // Requests still in flight when the duration ends are cut off by oha itself: not failures.
    let connection_errors: f64 = json["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("aborted due to deadline"))
                .filter_map(|(_, v)| v.as_f64())
                .sum()
        })
        .unwrap_or(0.0);
    Ok(Measured {
        requests: all_statuses,
        ok: Some(ok),
        rps: summary["requestsPerSec"].as_f64().unwrap_or(0.0),
        errors: (all_statuses - ok) + connection_errors,
        p50_ms: seconds(&percentiles["p50"]),
        p99_ms: seconds(&percentiles["p99"]),
        p999_ms: seconds(&percentiles["p99.9"]),
        max_ms: seconds(&summary["slowest"]),
    })
}

/// h2load over TLS (HTTP/2): `clients` connections, `streams` concurrent streams each.
pub fn h2load(
    port: u16,
    path: &str,
    duration: Duration,
    clients: u32,
    streams: u32,
) -> Result<Measured> {
    let text = output(
        pinned("h2load")
            .args(["-t1", &format!("-c{clients}"), &format!("-m{streams}")])
            .args(["-D", &duration.as_secs().to_string()])
            .args(["--connect-to", &format!("127.0.0.1:{port}")])
            .arg(format!("https://r7.bench.test:{port}{path}")),
    )?;
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|part| part.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("h2load printed no req/s")?;
    let count = |label: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("requests:"))
            .and_then(|l| l.split(',').find(|p| p.trim().ends_with(label)))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0)
    };
    Ok(Measured {
        requests: count("succeeded"),
        ok: None,
        rps,
        errors: count("failed") + count("errored") + count("timeout"),
        ..Measured::default()
    })
}

/// HTTP/3 requests from this tool's own QUIC client (Debian's h2load has no QUIC), pinned to
/// the load CPU: `connections` connections with `streams` requests in flight on each.
pub fn h3(
    port: u16,
    path: &str,
    duration: Duration,
    connections: u32,
    streams: u32,
) -> Result<Measured> {
    let (connections, streams) = (connections.to_string(), streams.to_string());
    let args = [connections.as_str(), streams.as_str(), path];
    own_client("h3-load", port, duration, &args).map(|(measured, _)| measured)
}

/// Resumed TLS handshakes, one request per connection, from this tool's own rustls client
/// (oha never resumes a session), pinned to the load CPU.
pub fn resumed_handshakes(port: u16, duration: Duration, connections: u32) -> Result<Measured> {
    let connections = connections.to_string();
    let (measured, json) = own_client(
        "tls-load",
        port,
        duration,
        &[connections.as_str(), "--resume"],
    )?;
    if json["resumed"].as_f64().unwrap_or(0.0) == 0.0 {
        bail!("the server resumed no session: {json}");
    }
    Ok(measured)
}

/// Runs one of this tool's load clients (`xtask TASK PORT SECONDS ARGS...`) pinned to the load
/// CPU: its figures, and the JSON it printed.
fn own_client(
    task: &str,
    port: u16,
    duration: Duration,
    args: &[&str],
) -> Result<(Measured, serde_json::Value)> {
    let mut command = Command::new("taskset");
    command
        .args(["-c", LOAD_CPU])
        .arg(super::release_tool())
        .args([task, &port.to_string(), &duration.as_secs().to_string()])
        .args(args);
    let json: serde_json::Value =
        serde_json::from_str(&output(&mut command)?).with_context(|| format!("{task} JSON"))?;
    let requests = json["requests"].as_f64().unwrap_or(0.0);
    let seconds = json["seconds"].as_f64().unwrap_or(1.0);
    let measured = Measured {
        requests,
        ok: None,
        rps: requests / seconds,
        errors: json["errors"].as_f64().unwrap_or(0.0),
        ..Measured::default()
    };
    Ok((measured, json))
}
