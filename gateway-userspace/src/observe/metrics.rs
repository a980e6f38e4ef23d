//! `/metrics`: the request metrics under the names and labels of ingress-nginx (so existing
//! dashboards keep working), and the gateway's own under `xdp_gateway_`.
//!
//! Request series are keyed by the route (host and path as the rule wrote them, Ingress,
//! Service), the method (unknown methods are `OTHER`) and the status: bounded by the route
//! table, never by what clients send.

use std::collections::HashMap;
use std::fmt::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hyper::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{Exchange, StreamSession};
use crate::bpf::StatsReport;
use crate::publish::RouteTable;
use crate::snapshot::RouteIdentity;

/// Seconds buckets of ingress-nginx's duration histograms (Prometheus' defaults).
const TIME_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The controller labels every ingress-nginx request series carries.
#[derive(Clone, Debug, Default)]
pub struct Controller {
    /// The IngressClass served.
    pub class: String,
    pub namespace: String,
    pub pod: String,
}

/// One label pair with a fixed name.
type Label = [(&'static str, &'static str); 1];

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestSeries>,
    /// Requests sent on a kept-alive backend connection (`reused="true"`) or a new one.
    pub upstream_requests: Family<Label, Counter>,
    /// Open client connections by scheme.
    pub connections_active: Family<Label, Gauge>,
    /// Accepted client connections by scheme.
    pub connections: Family<Label, Counter>,
    /// Idle HTTP/1 connections parked (held as their sockets until the client sends again).
    pub connections_parked: Gauge,
    /// Completed TLS handshakes by version and resumption.
    pub tls_handshakes: Family<[(&'static str, &'static str); 2], Counter>,
    pub tls_handshake_failures: Counter,
    /// QUIC handshakes asked to prove their source address first (Retry), as handshakes piled up.
    pub http3_retries: Counter,
    /// Connections refused at accept, by the limit they were over.
    pub connections_refused: Family<Label, Counter>,
    /// Connections the gateway closed on a client: timeouts and floods, by reason.
    pub connections_closed: Family<Label, Counter>,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Copies of mirrored requests, by outcome: `sent`, `dropped` (too many on their way),
    /// `failed`.
    pub mirrored_requests: Family<Label, Counter>,
    /// Layer 4 sessions by protocol and how they ended, and their bytes by direction.
    stream_sessions: Family<[(&'static str, &'static str); 2], Counter>,
    stream_bytes: Family<[(&'static str, &'static str); 2], Counter>,
    /// Layer 4 sessions open now, by protocol.
    pub stream_sessions_active: Family<Label, Gauge>,
}

impl Metrics {
    /// The registry, reading the route table (generations, warnings, certificates) on scrape.
    pub fn new(controller: Controller, table: Arc<RouteTable>) -> Self {
        let mut registry = Registry::default();
        let requests = Arc::new(RequestSeries {
            controller,
            series: RwLock::default(),
        });
        registry.register_collector(Box::new(requests.clone()));
        registry.register_collector(Box::new(TableCollector {
            table: table.clone(),
        }));
        registry.register(
            "xdp_gateway_config_apply_duration_seconds",
            "Time to translate the objects and publish a route table",
            table.apply_seconds.clone(),
        );
        let upstream_requests = Family::default();
        let connections_active = Family::default();
        let connections = Family::default();
        let connections_parked = Gauge::default();
        let tls_handshakes = Family::default();
        let tls_handshake_failures = Counter::default();
        let http3_retries = Counter::default();
        let access_log_dropped = Counter::default();
        let connections_refused = Family::default();
        let connections_closed = Family::default();
        let mirrored_requests = Family::default();
        let stream_sessions = Family::default();
        let stream_bytes = Family::default();
        let stream_sessions_active = Family::default();
        registry.register(
            "xdp_gateway_stream_sessions",
            "Layer 4 sessions (TCP, UDP, TLS passed through) by protocol and how they ended",
            stream_sessions.clone(),
        );
        registry.register(
            "xdp_gateway_stream_bytes",
            "Bytes of layer 4 sessions by protocol and direction (received from clients, sent to them)",
            stream_bytes.clone(),
        );
        registry.register(
            "xdp_gateway_stream_sessions_active",
            "Layer 4 sessions open now, by protocol",
            stream_sessions_active.clone(),
        );
        registry.register(
            "xdp_gateway_mirrored_requests",
            "Copies of mirrored requests: sent, dropped (too many on their way), failed",
            mirrored_requests.clone(),
        );
        registry.register(
            "xdp_gateway_connections_refused",
            "Client connections refused at accept, by the limit they were over",
            connections_refused.clone(),
        );
        registry.register(
            "xdp_gateway_connections_closed",
            "Client connections closed by the gateway: header and keep-alive timeouts, HTTP/2 floods",
            connections_closed.clone(),
        );
        registry.register(
            "xdp_gateway_upstream_requests",
            "Requests sent to backends, by whether the connection was reused from the pool",
            upstream_requests.clone(),
        );
        registry.register(
            "xdp_gateway_connections_active",
            "Client connections open now",
            connections_active.clone(),
        );
        registry.register(
            "xdp_gateway_connections",
            "Client connections accepted",
            connections.clone(),
        );
        registry.register(
            "xdp_gateway_connections_parked",
            "Idle HTTP/1 client connections parked: held as their sockets until the client sends again",
            connections_parked.clone(),
        );
        registry.register(
            "xdp_gateway_tls_handshakes",
            "Completed TLS handshakes by protocol version and resumption",
            tls_handshakes.clone(),
        );
        registry.register(
            "xdp_gateway_tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "xdp_gateway_http3_retries",
            "QUIC handshakes asked to prove their source address first (Retry) while handshakes piled up",
            http3_retries.clone(),
        );
        registry.register(
            "xdp_gateway_access_log_dropped",
            "Access log lines dropped because the log writer fell behind",
            access_log_dropped.clone(),
        );
        Self {
            registry,
            requests,
            upstream_requests,
            connections_active,
            connections,
            connections_parked,
            tls_handshakes,
            tls_handshake_failures,
            http3_retries,
            connections_refused,
            connections_closed,
            access_log_dropped,
            mirrored_requests,
            stream_sessions,
            stream_bytes,
            stream_sessions_active,
        }
    }

    /// Counts a finished layer 4 session.
    pub fn record_session(&self, session: &StreamSession) {
        let protocol = ("protocol", session.protocol);
        self.stream_sessions
            .get_or_create(&[protocol, ("end", session.end.as_str())])
            .inc();
        for (direction, bytes) in [
            ("received", session.bytes_received),
            ("sent", session.bytes_sent),
        ] {
            self.stream_bytes
                .get_or_create(&[protocol, ("direction", direction)])
                .inc_by(bytes);
        }
    }

    /// Counts a finished exchange.
    pub fn record(&self, exchange: &Exchange) {
        let labels = RequestLabels {
            identity: exchange.identity.clone(),
            canary: exchange.canary.clone(),
            method: method_label(&exchange.method),
            status: exchange.status.as_u16(),
        };
        self.requests.with(labels, |stats| {
            stats.count.fetch_add(1, Ordering::Relaxed);
            stats
                .request_duration
                .observe(exchange.duration.as_secs_f64());
            stats.request_size.observe(exchange.request_bytes() as f64);
            stats
                .response_size
                .observe(exchange.response_bytes() as f64);
            if let Some(upstream_time) = exchange.upstream_time() {
                stats.response_duration.observe(upstream_time.as_secs_f64());
            }
        });
    }

    /// The Prometheus text exposition (OpenMetrics) of every metric, with the fast path's
    /// counters when it is on.
    pub fn encode(&self, fast_path: Option<StatsReport>) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode_registry(&mut text, &self.registry)?;
        if let Some(report) = fast_path {
            let mut registry = Registry::default();
            registry.register_collector(Box::new(FastPathCollector(report)));
            prometheus_client::encoding::text::encode_registry(&mut text, &registry)?;
        }
        prometheus_client::encoding::text::encode_eof(&mut text)?;
        Ok(text)
    }

    /// A counter of `family` labelled `key=value`.
    pub fn labelled<M: Clone + Default>(
        family: &Family<Label, M>,
        key: &'static str,
        value: &'static str,
    ) -> M {
        family.get_or_create_owned(&[(key, value)])
    }
}

/// Methods outside this list are one label value, `OTHER`, so clients cannot add series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("OTHER", Method::as_str)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RequestLabels {
    identity: Arc<RouteIdentity>,
    /// The canary backend that served it (`namespace-service-port`), if one did.
    canary: Option<String>,
    method: &'static str,
    status: u16,
}

/// The five request metrics of one label set, updated together.
struct RequestStats {
    count: AtomicU64,
    request_duration: Histogram,
    response_duration: Histogram,
    request_size: Histogram,
    response_size: Histogram,
}

impl Default for RequestStats {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            request_duration: Histogram::new(TIME_BUCKETS),
            response_duration: Histogram::new(TIME_BUCKETS),
            // ingress-nginx's default length buckets are 10..100 bytes, which put almost every
            // real request and response in +Inf; powers of four from 64 B to 16 MiB say more.
            request_size: Histogram::new(exponential_buckets(64.0, 4.0, 10)),
            response_size: Histogram::new(exponential_buckets(64.0, 4.0, 10)),
        }
    }
}

/// Every request series, encoded as the ingress-nginx families on scrape.
struct RequestSeries {
    controller: Controller,
    /// Hashed with foldhash: every request looks its series up, and SipHash over the route's
    /// five strings was a visible part of the T1 profile. The keys are routes the gateway was
    /// given and bounded label values, not client input that could be crafted to collide.
    series: RwLock<HashMap<RequestLabels, RequestStats, foldhash::fast::RandomState>>,
}

impl fmt::Debug for RequestSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestSeries")
    }
}

impl RequestSeries {
    /// Updates the series of `labels`, made the first time it is seen.
    fn with(&self, labels: RequestLabels, update: impl Fn(&RequestStats)) {
        if let Some(stats) = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&labels)
        {
            return update(stats);
        }
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        update(series.entry(labels).or_default());
    }
}

/// The labels of one series, in ingress-nginx's names.
struct EncodedLabels<'a>(&'a Controller, &'a RequestLabels);

impl EncodeLabelSet for EncodedLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        let EncodedLabels(controller, labels) = self;
        let identity = &labels.identity;
        let mut status = String::with_capacity(3);
        write!(status, "{}", labels.status)?;
        let pairs: [(&str, &str); 11] = [
            ("canary", labels.canary.as_deref().unwrap_or("")),
            ("controller_class", &controller.class),
            ("controller_namespace", &controller.namespace),
            ("controller_pod", &controller.pod),
            ("host", &identity.host),
            ("ingress", &identity.ingress),
            ("method", labels.method),
            ("namespace", &identity.namespace),
            ("path", &identity.path),
            ("service", &identity.service),
            ("status", &status),
        ];
        pairs.as_slice().encode(encoder)
    }
}

type Pick = fn(&RequestStats) -> &Histogram;

const REQUEST_HISTOGRAMS: [(&str, &str, Pick); 4] = [
    (
        "nginx_ingress_controller_request_duration_seconds",
        "The request processing time in seconds, until the response was sent",
        |s| &s.request_duration,
    ),
    (
        "nginx_ingress_controller_response_duration_seconds",
        "The time spent receiving the response from the backend, in seconds",
        |s| &s.response_duration,
    ),
    (
        "nginx_ingress_controller_request_size",
        "The request length (including request line, header, and request body)",
        |s| &s.request_size,
    ),
    (
        "nginx_ingress_controller_response_size",
        "The response length (including status line, header, and body)",
        |s| &s.response_size,
    ),
];

impl Collector for RequestSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        {
            // A counter named without `_total`, as ingress-nginx exposes it and dashboards
            // query it: OpenMetrics would add the suffix to a counter, so it is typed unknown.
            let mut metric = encoder.encode_descriptor(
                "nginx_ingress_controller_requests",
                "The total number of client requests",
                None,
                MetricType::Unknown,
            )?;
            for (labels, stats) in series.iter() {
                let labels = EncodedLabels(&self.controller, labels);
                metric
                    .encode_family(&labels)?
                    .encode_gauge(&stats.count.load(Ordering::Relaxed))?;
            }
        }
        for (name, help, pick) in REQUEST_HISTOGRAMS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (labels, stats) in series.iter() {
                let labels = EncodedLabels(&self.controller, labels);
                pick(stats).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Read from the current route table on scrape.
#[derive(Debug)]
struct TableCollector {
    table: Arc<RouteTable>,
}

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = self.table.current();
        let generation = ConstGauge::new(self.table.generation() as i64);
        generation.encode(encoder.encode_descriptor(
            "xdp_gateway_config_generation",
            "Route tables published since the start",
            None,
            MetricType::Gauge,
        )?)?;
        let warnings = ConstGauge::new(snapshot.warnings.len() as i64);
        warnings.encode(encoder.encode_descriptor(
            "xdp_gateway_config_warnings",
            "Problems in the input of the route table served now (see /routes)",
            None,
            MetricType::Gauge,
        )?)?;

        let served = snapshot.certificates.served();
        let mut info = encoder.encode_descriptor(
            "nginx_ingress_controller_ssl_certificate_info",
            "Certificates served, by host",
            None,
            MetricType::Gauge,
        )?;
        for (host, certificate, secret) in &served {
            let (namespace, secret_name) =
                secret.and_then(|s| s.split_once('/')).unwrap_or_default();
            let details = &certificate.details;
            let identifier = format!("{}-{}", details.issuer_common_name, details.serial_number);
            let labels: [(&str, &str); 8] = [
                ("host", host),
                ("identifier", &identifier),
                ("issuer_common_name", &details.issuer_common_name),
                ("issuer_organization", &details.issuer_organization),
                ("namespace", namespace),
                ("public_key_algorithm", details.public_key_algorithm),
                ("secret_name", secret_name),
                ("serial_number", &details.serial_number),
            ];
            ConstGauge::new(1).encode(info.encode_family(&labels.as_slice())?)?;
        }
        let mut expiry = encoder.encode_descriptor(
            "nginx_ingress_controller_ssl_expire_time_seconds",
            "Expiry of the certificate served for a host, in seconds since the Unix epoch",
            None,
            MetricType::Gauge,
        )?;
        for (host, certificate, secret) in &served {
            let (namespace, secret_name) =
                secret.and_then(|s| s.split_once('/')).unwrap_or_default();
            let labels: [(&str, &str); 3] = [
                ("host", host),
                ("namespace", namespace),
                ("secret_name", secret_name),
            ];
            ConstGauge::new(certificate.not_after)
                .encode(expiry.encode_family(&labels.as_slice())?)?;
        }
        Ok(())
    }
}

/// The XDP counters of one scrape.
#[derive(Debug)]
struct FastPathCollector(StatsReport);

impl Collector for FastPathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let report = &self.0;
        type Field = fn(&crate::bpf::Count) -> u64;
        let families: [(&str, &str, Field); 2] = [
            (
                "xdp_gateway_xdp_packets",
                "Packets seen by the XDP classifier, by listener and verdict reason",
                |c| c.packets,
            ),
            (
                "xdp_gateway_xdp_bytes",
                "Bytes seen by the XDP classifier, by listener and verdict reason",
                |c| c.bytes,
            ),
        ];
        for (name, help, field) in families {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for listener in &report.listeners {
                let address = listener.address.to_string();
                for (reason, count) in &listener.counters {
                    let labels: [(&str, &str); 3] = [
                        ("listener", &address),
                        ("protocol", listener.protocol),
                        ("reason", reason),
                    ];
                    ConstCounter::new(field(count))
                        .encode(metric.encode_family(&labels.as_slice())?)?;
                }
            }
            let labels: [(&str, &str); 3] =
                [("listener", "none"), ("protocol", ""), ("reason", "passed")];
            ConstCounter::new(field(&report.other))
                .encode(metric.encode_family(&labels.as_slice())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
