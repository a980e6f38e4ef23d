//! Access logs, written off the request path: finished exchanges go through a bounded queue to
//! one writer thread, which formats and writes them. A request never waits for the log; when
//! the writer falls behind, lines are dropped and counted
//! (`xdp_gateway_access_log_dropped_total`).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use hyper::header::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::{Exchange, Record, StreamSession};

/// Exchanges waiting for the writer; beyond this, lines are dropped.
const QUEUE: usize = 64 * 1024;

/// How lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// ingress-nginx's default `upstreaminfo` text layout.
    Upstreaminfo,
}

/// Where lines go: `-` for standard output, `off` for nowhere, else a file (appended).
#[derive(Clone, Debug)]
pub enum LogTarget {
    Stdout,
    Off,
    File(PathBuf),
}

impl std::str::FromStr for LogTarget {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "-" | "stdout" => Self::Stdout,
            "off" => Self::Off,
            path => Self::File(path.into()),
        })
    }
}

/// The sending side of the log.
pub struct AccessLog {
    /// `None` once closed.
    queue: Option<SyncSender<Record>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// Lines queued before the process stops are written before it exits.
impl Drop for AccessLog {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl AccessLog {
    /// Starts the writer thread for `target` (none for `off`).
    pub fn start(target: &LogTarget, format: LogFormat) -> std::io::Result<Option<Self>> {
        let output: Box<dyn Write + Send> = match target {
            LogTarget::Off => return Ok(None),
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        let (queue, exchanges) = sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(exchanges, BufWriter::new(output), format))?;
        Ok(Some(Self {
            queue: Some(queue),
            writer: Some(writer),
        }))
    }

    /// Queues `record` for its line, or drops it (counted) when the queue is full.
    pub fn write(&self, record: Record, dropped: &Counter) {
        if let Some(queue) = &self.queue
            && let Err(TrySendError::Full(_)) = queue.try_send(record)
        {
            dropped.inc();
        }
    }
}

/// The writer: a line per record, flushed whenever the queue runs empty.
fn write_lines(exchanges: Receiver<Record>, mut output: impl Write, format: LogFormat) {
    let mut line = Vec::with_capacity(1024);
    while let Ok(first) = exchanges.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            line.clear();
            match (format, &record) {
                (LogFormat::Json, Record::Http(exchange)) => json_line(exchange, &mut line),
                (LogFormat::Upstreaminfo, Record::Http(exchange)) => {
                    upstreaminfo_line(exchange, &mut line)
                }
                (LogFormat::Json, Record::Stream(session)) => session_json(session, &mut line),
                (LogFormat::Upstreaminfo, Record::Stream(session)) => {
                    session_text(session, &mut line)
                }
            }
            line.push(b'\n');
            if output.write_all(&line).is_err() {
                return;
            }
            next = exchanges.try_recv().ok();
        }
        if output.flush().is_err() {
            return;
        }
    }
}

fn text(value: Option<&HeaderValue>) -> &str {
    value.and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The fields of a JSON line (documented in the README).
#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    request_id: &'a str,
    remote_addr: String,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    bytes_sent: u64,
    request_length: u64,
    duration: f64,
    upstream_addr: Option<String>,
    upstream_status: Option<u16>,
    upstream_response_time: Option<f64>,
    upstream_header_time: Option<f64>,
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    route_path: &'a str,
    scheme: &'static str,
    tls_version: Option<&'static str>,
    sni: Option<&'a str>,
    user_agent: &'a str,
    referer: &'a str,
}

fn json_line(exchange: &Exchange, out: &mut Vec<u8>) {
    let identity = &exchange.identity;
    let upstream = exchange.upstream.as_ref();
    let line = JsonLine {
        time: OffsetDateTime::from(exchange.time)
            .format(&Rfc3339)
            .unwrap_or_default(),
        request_id: exchange.request_id.to_str().unwrap_or(""),
        remote_addr: exchange.connection.client.to_string(),
        host: text(exchange.host.as_ref()),
        method: exchange.method.as_str(),
        path: exchange.uri.path_and_query().map_or("/", |p| p.as_str()),
        protocol: protocol(exchange.version),
        status: exchange.status.as_u16(),
        bytes_sent: exchange.response_body_bytes,
        request_length: exchange.request_bytes(),
        duration: exchange.duration.as_secs_f64(),
        upstream_addr: upstream.map(|u| u.address.to_string()),
        upstream_status: upstream.map(|u| u.status.as_u16()),
        upstream_response_time: exchange.upstream_time().map(|t| t.as_secs_f64()),
        upstream_header_time: upstream.map(|u| u.header_time.as_secs_f64()),
        namespace: &identity.namespace,
        ingress: &identity.ingress,
        service: &identity.service,
        route_path: &identity.path,
        scheme: exchange.connection.scheme,
        tls_version: exchange.connection.tls_version,
        sni: exchange.connection.sni.as_deref(),
        user_agent: text(exchange.user_agent.as_ref()),
        referer: text(exchange.referer.as_ref()),
    };
    // Serializing these fields cannot fail: strings, numbers and options only.
    let _ = serde_json::to_writer(out, &line);
}

/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
/// "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name]
/// [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length
/// $upstream_response_time $upstream_status $req_id`
fn upstreaminfo_line(exchange: &Exchange, out: &mut Vec<u8>) {
    let time = time_local(exchange.time);
    let upstream = exchange.upstream.as_ref();
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
    let _ = write!(
        out,
        "{} - - [{time}] \"{} {} {}\" {} {} \"{}\" \"{}\" {} {:.3} [{}] [] {} {} {} {} {}",
        exchange.connection.client.ip(),
        exchange.method,
        escape(exchange.uri.path_and_query().map_or("/", |p| p.as_str())),
        protocol(exchange.version),
        exchange.status.as_u16(),
        exchange.response_body_bytes,
        escape(text(exchange.referer.as_ref())),
        escape(text(exchange.user_agent.as_ref())),
        exchange.request_bytes(),
        exchange.duration.as_secs_f64(),
        upstream.map_or(String::new(), |u| u.backend.upstream_name()),
        or_dash(upstream.map(|u| u.address.to_string())),
        or_dash(upstream.map(|_| exchange.response_body_bytes.to_string())),
        or_dash(
            exchange
                .upstream_time()
                .map(|t| format!("{:.3}", t.as_secs_f64()))
        ),
        or_dash(upstream.map(|u| u.status.as_u16().to_string())),
        exchange.request_id.to_str().unwrap_or("-"),
    );
}

/// The fields of a layer 4 session's JSON line (documented in the README).
#[derive(Serialize)]
struct SessionLine<'a> {
    time: String,
    remote_addr: String,
    listener: String,
    protocol: &'static str,
    status: u16,
    end: &'static str,
    bytes_sent: u64,
    bytes_received: u64,
    session_time: f64,
    upstream_addr: Option<String>,
    namespace: Option<&'a str>,
    service: Option<&'a str>,
    route: &'a str,
    sni: Option<&'a str>,
}

fn session_json(session: &StreamSession, out: &mut Vec<u8>) {
    let backend = session.backend.as_deref();
    let line = SessionLine {
        time: OffsetDateTime::from(session.time)
            .format(&Rfc3339)
            .unwrap_or_default(),
        remote_addr: session.client.to_string(),
        listener: session.listener.to_string(),
        protocol: session.protocol,
        status: session.end.status(),
        end: session.end.as_str(),
        bytes_sent: session.bytes_sent,
        bytes_received: session.bytes_received,
        session_time: session.duration.as_secs_f64(),
        upstream_addr: session.upstream.map(|u| u.to_string()),
        namespace: backend.map(|b| b.namespace.as_str()),
        service: backend.map(|b| b.service.as_str()),
        route: &session.route,
        sni: session.server_name.as_deref(),
    };
    let _ = serde_json::to_writer(out, &line);
}

/// ingress-nginx's stream log layout: `[$remote_addr] [$time_local] $protocol $status
/// $bytes_sent $bytes_received $session_time`, then the upstream's address.
fn session_text(session: &StreamSession, out: &mut Vec<u8>) {
    let time = time_local(session.time);
    let _ = write!(
        out,
        "[{}] [{time}] {} {} {} {} {:.3} {}",
        session.client.ip(),
        session.protocol.to_ascii_uppercase(),
        session.end.status(),
        session.bytes_sent,
        session.bytes_received,
        session.duration.as_secs_f64(),
        session
            .upstream
            .map_or_else(|| "-".to_string(), |u| u.to_string()),
    );
}

/// nginx's `$time_local`.
fn time_local(time: std::time::SystemTime) -> String {
    OffsetDateTime::from(time)
        .format(format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
        ))
        .unwrap_or_default()
}

/// Quotes and backslashes escaped the way nginx escapes variables in logs (`\x22`).
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.bytes().any(|b| b == b'"' || b == b'\\') {
        return value.into();
    }
    value.replace('\\', "\\x5C").replace('"', "\\x22").into()
}

fn protocol(version: hyper::Version) -> &'static str {
    match version {
        hyper::Version::HTTP_09 => "HTTP/0.9",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_2 => "HTTP/2.0",
        hyper::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}
