//! `gateway`: the xdp-gateway daemon and its command-line tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use hyper::header::HeaderValue;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use gateway::admin::Admin;
use gateway::bpf::plan::{FastPathConfig, SynBudget};
use gateway::bpf::{AttachMode, BpfSettings};
use gateway::cidr::CidrList;
use gateway::cluster::{ClusterWriter, PublishedAddress};
use gateway::console::{Console, Writer};
use gateway::lifecycle::{Drain, Sockets, Workers, handoff};
use gateway::observe::metrics::Controller;
use gateway::observe::{AccessLog, LogFormat, LogTarget, Metrics, Observer};
use gateway::policy::service_url::ServiceUrl;
use gateway::source::kube::KubeSource;

use gateway::snapshot::{ListenerKind, ListenerSpec};
use gateway::steering::Steering;

use gateway::alloc::{LargeBlocksMapped, Mimalloc};
use gateway::proxy::{ClientLimits, Proxy, ProxyConfig, h3_server};
use gateway::publish::RouteTable;
use gateway::snapshot::Snapshot;
use gateway::source::files::ManifestDir;
use gateway::status::Listeners;
use gateway::stream::StreamConfig;
use gateway::tls;
use gateway::translate::{
    ClassSelector, GatewayOptions, StreamOptions, TranslateOptions, translate,
};

/// Many small allocations per request (header values, URIs): mimalloc serves them faster than
/// the system allocator, measured on the benchmark's request path. Blocks of megabytes (while a
/// large manifest is read) are mappings of their own that grow without a copy.
#[global_allocator]
static ALLOCATOR: LargeBlocksMapped<Mimalloc> = LargeBlocksMapped(Mimalloc);

/// mimalloc backs its arena with transparent huge pages: 6 MB of a gateway at rest were huge
/// pages mostly unused. The arena was reserved (and advised for them) before main; the
/// process-wide switch keeps its pages small from here on (`MIMALLOC_ALLOW_THP=1` keeps them).
/// Measured on the T1 keep-alive load: no change in requests per CPU-second.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// mimalloc commits its arena eagerly where the system overcommits, and a purge of eagerly
/// committed memory only resets it: reset pages count as resident until the kernel needs them
/// (with 10k routes, 15.9 MB anonymous memory at rest instead of 13.0 MB). The option is read
/// when the arena is reserved, at the first allocation, which comes before main: so it is set
/// by a constructor (`MIMALLOC_ARENA_EAGER_COMMIT` still decides when set). Measured on the
/// T1 keep-alive load: no change in requests per CPU-second.
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ARENA_LAZILY: extern "C" fn() = commit_arena_lazily;

extern "C" fn commit_arena_lazily() {
    /// `mi_option_arena_eager_commit` in mimalloc 3's option list (mimalloc.h), which
    /// libmimalloc-sys does not name.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
        // SAFETY: setting an option writes mimalloc's option table, valid from load time.
        unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) };
    }
}

/// Translating a large table leaves megabytes of parse garbage that mimalloc returns to the
/// system only lazily (with 10k routes: 127 MB two seconds after loading, 52 MB once returned);
/// after a table is applied, it is asked to return it now. So are the tasks of connections that
/// were just parked (9,000 connections parked after a burst: 2.7 KB Pss each before, 0.3 KB
/// after); purging every free at once instead cost a third of the keep-alive requests per
/// CPU-second.
fn release_garbage() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; it is safe to call at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[derive(Parser)]
#[command(
    name = "gateway",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("GATEWAY_COMMIT"), ")"),
    about = "Kubernetes edge gateway with an XDP fast path"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the routes of a manifests folder, applying every change live.
    Run(Box<RunArgs>),

    /// Print the route table of a manifests folder, with the URL of every route.
    Routes(RoutesArgs),
    /// Validate a manifests folder (or a live cluster) the way `run` would read it: print every
    /// problem with its object and field, and exit with status 1 if there is any.
    Check(CheckArgs),
    /// Explain where one request would go and why: the listener, the XDP program's verdict on
    /// its connection, every candidate rule, the policy steps and the endpoint.
    Explain(ExplainArgs),
    /// Inspect or remove the kernel fast path (its pinned maps and links).
    #[command(subcommand)]
    Bpf(BpfCommand),
}

#[derive(Subcommand)]
enum BpfCommand {
    /// Print the XDP counters per listener and reason.
    Stats {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        bpf_pin_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Detach the programs and remove every pinned map and link.
    Detach {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        bpf_pin_dir: PathBuf,
    },
}

/// Where maps and links are pinned (on bpffs, shared by restarts of the daemon).
const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdp-gateway";

#[derive(Args)]
struct SourceArgs {
    /// Folder of Kubernetes YAML manifests (Ingress, IngressClass, Service, EndpointSlice,
    /// Secret); every *.yaml and *.yml file below it is read.
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// The IngressClass name this gateway serves.
    #[arg(long, default_value = "xdp-gateway")]
    ingress_class: String,
    /// The `spec.controller` of IngressClasses that belong to this gateway.
    #[arg(long, default_value = "xdp-gateway.io/ingress")]
    controller: String,
    /// Where plain HTTP is served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Where HTTPS is served.
    #[arg(long, default_value = "127.0.0.1:8443")]
    https_listen: SocketAddr,
    /// The gateway's own Service (NAMESPACE/NAME): its LoadBalancer IPs, external IPs and
    /// NodePorts become listeners of the fast path.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_namespaced)]
    publish_service: Option<(String, String)>,
    /// This node's address, on which the published Service's NodePorts are served (repeatable).
    #[arg(long, value_name = "IP")]
    node_ip: Vec<std::net::IpAddr>,
    /// The `spec.controllerName` of GatewayClasses that belong to this gateway.
    #[arg(long, default_value = "xdp-gateway.io/gateway-controller")]
    gateway_controller: String,
    /// Where the listeners of Gateways are served, each at its own port (repeatable).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    gateway_address: Vec<std::net::IpAddr>,
    /// The ConfigMap of TCP ports to relay (`"PORT": "NAMESPACE/SERVICE:PORT[:PROXY][:PROXY]"`,
    /// as ingress-nginx's); its ports are served on the IP of --http-listen.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_namespaced)]
    tcp_services_configmap: Option<(String, String)>,
    /// The ConfigMap of UDP ports to relay (`"PORT": "NAMESPACE/SERVICE:PORT"`).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_namespaced)]
    udp_services_configmap: Option<(String, String)>,
    /// Let Ingresses annotated `nginx.ingress.kubernetes.io/ssl-passthrough: "true"` have
    /// their hosts' TLS passed to their backend undecrypted, chosen by server name.
    #[arg(long)]
    enable_ssl_passthrough: bool,
    /// The auth service every Ingress is checked against (ingress-nginx's global-auth-url), but
    /// those with their own `auth-url` or `enable-global-auth: "false"`.
    #[arg(long, value_name = "URL", value_parser = parse_service_url)]
    global_auth_url: Option<ServiceUrl>,
}

fn parse_service_url(text: &str) -> Result<ServiceUrl, String> {
    ServiceUrl::parse(text).map_err(|e| format!("{text:?} {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ConsoleChoice {
    On,
    Off,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FastPathChoice {
    Auto,
    Off,
}

/// A `--vip`: HTTP or HTTPS (layer 4 ports come from the ConfigMaps).
fn parse_http_vip(text: &str) -> Result<ListenerSpec, String> {
    let spec: ListenerSpec = text.parse()?;
    match spec.kind {
        ListenerKind::Http | ListenerKind::Https => Ok(spec),
        kind => Err(format!("{kind}: a --vip is http or https")),
    }
}

fn parse_namespaced(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns.into(), name.into())),
        _ => Err(format!("{text:?}: expected NAMESPACE/NAME")),
    }
}

impl SourceArgs {
    fn translate_options(&self) -> TranslateOptions {
        TranslateOptions {
            classes: ClassSelector {
                class_name: self.ingress_class.clone(),
                controller: self.controller.clone(),
                serve_classless: false,
            },
            publish_service: self.publish_service.clone(),
            node_ips: self.node_ip.clone(),
            gateway: GatewayOptions {
                controller: self.gateway_controller.clone(),
                addresses: self.gateway_address.clone(),
            },
            streams: StreamOptions {
                tcp_services: self.tcp_services_configmap.clone(),
                udp_services: self.udp_services_configmap.clone(),
                address: Some(self.http_listen.ip()),
                taken_ports: vec![self.http_listen.port(), self.https_listen.port()],
                ssl_passthrough: self.enable_ssl_passthrough,
            },
            global_auth: self.global_auth_url.clone(),
        }
    }

    /// What the Kubernetes source watches besides the kinds it always does.
    fn kube_source(&self, namespace: Option<String>) -> KubeSource {
        KubeSource {
            namespace,
            config_maps: (self.tcp_services_configmap.iter())
                .chain(&self.udp_services_configmap)
                .cloned()
                .collect(),
        }
    }
}

/// Reading objects from the Kubernetes API instead of a folder (`run` and `check`).
#[derive(Args)]
struct ClusterArgs {
    /// Use the Kubernetes API (in-cluster config, --kubeconfig, or KUBECONFIG) instead of a
    /// manifests folder.
    #[arg(long, conflicts_with = "manifests")]
    kubernetes: bool,
    /// The kubeconfig file to use with --kubernetes.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Only this namespace (a per-project gateway).
    #[arg(long, value_name = "NAMESPACE")]
    watch_namespace: Option<String>,
    /// Serve Ingresses without a class even when none of our IngressClasses is the default.
    #[arg(long)]
    watch_ingress_without_class: bool,
}

/// What one client may take (nginx's defaults).
#[derive(Args)]
struct ClientLimitArgs {
    /// Seconds a client has to send a whole request head, from its first byte (or from the
    /// connection's start).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    client_header_timeout: u64,
    /// Seconds a connection may stay idle between requests (HTTP/2: with no open stream).
    #[arg(long, default_value_t = 75, value_name = "SECONDS")]
    keepalive_timeout: u64,
    /// Seconds a client may pause between two parts of a request body (then 408).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    client_body_timeout: u64,
    /// Seconds a client has to finish its TLS handshake, waiting for a turn included.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    tls_handshake_timeout: u64,
    /// Seconds between HTTP/2 PINGs; a client that does not answer within as long is dropped.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    http2_ping_interval: u64,
    /// Streams one HTTP/2 connection may have open at once.
    #[arg(long, default_value_t = 128)]
    http2_max_concurrent_streams: u32,
    /// Longest request target, and longest header line, in bytes (414 and 431 past it).
    #[arg(long, default_value_t = 8192, value_name = "BYTES")]
    max_request_line: usize,
    /// Largest request head in bytes (431 past it).
    #[arg(long, default_value_t = 32768, value_name = "BYTES")]
    max_request_head: usize,
    /// Most header fields in one request (431 past it).
    #[arg(long, default_value_t = 100)]
    max_request_headers: usize,
    /// Client connections held at once (0: no limit); later ones are closed at accept.
    #[arg(long, default_value_t = 65_536)]
    max_connections: usize,
    /// Client connections one source address may hold at once (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_connections_per_source: usize,
    /// TLS handshakes in progress at once; later connections wait for a turn.
    #[arg(long, default_value_t = 1024)]
    max_tls_handshakes: usize,
}

impl ClientLimitArgs {
    fn limits(&self) -> ClientLimits {
        ClientLimits {
            header_timeout: Duration::from_secs(self.client_header_timeout),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout),
            body_timeout: Duration::from_secs(self.client_body_timeout),
            handshake_timeout: Duration::from_secs(self.tls_handshake_timeout),
            http2_ping_interval: Duration::from_secs(self.http2_ping_interval.max(1)),
            http2_max_streams: self.http2_max_concurrent_streams,
            max_line: self.max_request_line,
            max_head: self.max_request_head,
            max_headers: self.max_request_headers,
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            max_tls_handshakes: self.max_tls_handshakes,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    client: ClientLimitArgs,
    /// Addresses written to the status of served Ingresses (comma-separated IPs or host
    /// names), in addition to those of --publish-service.
    #[arg(long, value_delimiter = ',')]
    publish_address: Vec<String>,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long)]
    election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "xdp-gateway-leader")]
    election_id: String,
    /// Where /healthz, /readyz, /routes, /metrics, /explain and the console are served.
    #[arg(long, default_value = "127.0.0.1:9180")]
    admin_listen: SocketAddr,
    /// The web console on the admin listener (`/`).
    #[arg(long, value_enum, default_value_t = ConsoleChoice::On)]
    console: ConsoleChoice,
    /// The token that lets the console change routes (at least 16 characters); without it the
    /// console is read-only.
    #[arg(long, value_name = "FILE")]
    console_token_file: Option<PathBuf>,
    /// With --kubernetes: the console may create, change and delete Ingresses through the API
    /// server (needs deploy/kubernetes/console-rbac.yaml).
    #[arg(long)]
    console_write: bool,
    /// Where access log lines go: `-` (standard output), `off`, or a file (appended).
    #[arg(long, default_value = "-", value_name = "-|off|FILE")]
    access_log: LogTarget,
    /// The layout of access log lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    access_log_format: LogFormat,
    /// Seconds to wait for a TCP connection to a backend.
    #[arg(long, default_value_t = 5)]
    proxy_connect_timeout: u64,
    /// Seconds to wait for a backend's response headers, and that an upgraded connection
    /// (WebSocket) may carry nothing either way before it is closed.
    #[arg(long, default_value_t = 60)]
    proxy_read_timeout: u64,
    /// Every HTTP and HTTPS connection must start with a PROXY protocol header (v1 or v2,
    /// as a load balancer in front sends it); its client address is used everywhere.
    #[arg(long)]
    proxy_protocol: bool,
    /// Seconds a relayed TCP connection (TCP port, TLS passed through) may carry nothing
    /// either way before it is closed.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    stream_idle_timeout: u64,
    /// Seconds a UDP session lives after its last datagram either way.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    udp_session_timeout: u64,
    /// UDP sessions (client flows) one socket holds at once: per port where ports are bound
    /// directly, per address family for all steered VIPs; new flows beyond it are dropped.
    #[arg(long, default_value_t = 4096)]
    udp_max_sessions: usize,
    /// Threads that serve connections, each with its own single-threaded runtime; connections
    /// are dealt to them in turn and stay on one (default: one per CPU; with 1, the main
    /// thread serves everything).
    #[arg(long, env = "GATEWAY_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Certificate chain (PEM) for handshakes no Secret answers; self-signed if not given.
    #[arg(long, requires = "default_key", value_name = "PEM")]
    default_cert: Option<String>,
    /// Private key (PEM) of --default-cert.
    #[arg(long, requires = "default_cert", value_name = "PEM")]
    default_key: Option<String>,
    /// Strict-Transport-Security value sent on HTTPS responses of TLS hosts; empty turns it off.
    #[arg(long, default_value = "max-age=31536000; includeSubDomains")]
    hsts: String,
    /// The port HTTP-to-HTTPS redirects point to (default: the --https-listen port; use 443
    /// when a load balancer maps 443 to it).
    #[arg(long)]
    redirect_https_port: Option<u16>,
    /// Turn off TLS session resumption (tickets and the session cache).
    #[arg(long)]
    no_tls_resumption: bool,
    /// Serve HTTP/3 (QUIC) on the UDP port of --https-listen, offered to HTTPS clients of TLS
    /// hosts with `Alt-Svc` (on the --redirect-https-port).
    #[arg(long)]
    http3: bool,
    /// Let HTTP/3 clients resuming a session send requests in 0-RTT, saving a round trip. Only
    /// safe methods are forwarded before the handshake ends (with `Early-Data: 1`): early data
    /// can be replayed by an attacker.
    #[arg(long = "http3-0rtt", requires = "http3")]
    http3_early_data: bool,
    /// Only these TLS cipher suites, in order (comma-separated rustls names, e.g.
    /// TLS13_AES_128_GCM_SHA256).
    #[arg(long, value_delimiter = ',')]
    tls_ciphers: Vec<String>,
    /// Only these TLS key exchange groups, in order (comma-separated, e.g. X25519,secp256r1).
    #[arg(long, value_delimiter = ',')]
    tls_kx_groups: Vec<String>,
    /// `off`: no kernel programs and no VIP listeners, even with --publish-service (which then
    /// only gives Ingress status its addresses): for a gateway in a pod network behind its
    /// Service, as a per-project gateway runs. `auto`: on when there are VIPs, a published
    /// Service or XDP interfaces.
    #[arg(long, value_enum, default_value_t = FastPathChoice::Auto)]
    fast_path: FastPathChoice,
    /// A VIP:port the gateway owns, and whether it speaks http or https (repeatable):
    /// `198.51.100.10:80=http`. Its connections reach the proxy through sk_lookup.
    #[arg(long, value_name = "ADDR:PORT=http|https", value_parser = parse_http_vip)]
    vip: Vec<ListenerSpec>,
    /// Interfaces that get the XDP classifier (comma-separated).
    #[arg(long, value_name = "IFACE[,IFACE...]", value_delimiter = ',')]
    xdp_iface: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    /// Sources allowed on every listener, dropped in XDP otherwise (comma-separated CIDRs);
    /// without it, the Ingresses' whitelist-source-range applies where they all agree.
    #[arg(long, value_name = "CIDR[,CIDR...]")]
    allow_source: Option<CidrList>,
    /// New connections per second one source may open on one listener (RATE or RATE/BURST);
    /// SYNs beyond it are dropped in XDP.
    #[arg(long, value_name = "RATE[/BURST]")]
    syn_budget: Option<SynBudget>,
    /// Folder on bpffs for the pinned maps and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    bpf_pin_dir: PathBuf,
    /// Seconds between SIGTERM (when /readyz turns unready and responses start closing their
    /// connections) and closing the listeners: time for load balancers to take the node out.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    drain_delay: u64,
    /// Seconds in-flight requests and upgraded connections get to finish after the listeners
    /// close, before the process exits anyway.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    drain_timeout: u64,
    /// Unix socket for hitless restarts: a new process started with the same path takes the
    /// listening sockets of the running one, which then drains and exits.
    #[arg(long, value_name = "PATH")]
    handoff_socket: Option<PathBuf>,
    /// After handing off and draining, wait for SIGTERM instead of exiting (in a pod, so that
    /// the kubelet does not restart the old container, which would take the sockets back).
    #[arg(long, requires = "handoff_socket")]
    linger_after_handoff: bool,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON (warnings and a summary) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RoutesArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Print JSON (the same document as the admin /routes endpoint) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExplainArgs {
    /// The request's URL (`http://shop.example.com/cart`, or `http://VIP:PORT/path` with
    /// `--header Host:name`).
    url: String,
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// A request header `Name: value` (repeatable).
    #[arg(long, short = 'H', value_name = "NAME:VALUE")]
    header: Vec<String>,
    /// The client's address, for allow-lists (in the XDP program and the Ingresses).
    #[arg(long, value_name = "IP")]
    from: Option<String>,
    /// Ask a running gateway (its admin address) instead of reading --manifests.
    #[arg(long, value_name = "ADDR", conflicts_with = "manifests")]
    admin: Option<SocketAddr>,
    #[command(flatten)]
    source: SourceArgs,
    /// Print JSON (the same document as the admin /explain endpoint).
    #[arg(long)]
    json: bool,
}

fn main() -> Result<ExitCode> {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let command = Cli::parse().command;
    if !matches!(command, Command::Run(_)) {
        // The report commands print to a pipe (`gateway check | head`): a reader that goes
        // away ends them quietly, as it ends any Unix tool, instead of a panic in println!.
        // The server keeps Rust's default (SIGPIPE ignored): a client going away is an error
        // on its socket, never a signal.
        // SAFETY: restoring a signal's default disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match command {
        Command::Run(args) => {
            // Every runtime is single-threaded: the main one, and one per worker when there
            // are several (see lifecycle::workers).
            let threads = args.worker_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            });
            let workers = Workers::start(threads)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = runtime.block_on(run(*args, workers));
            // Drained: whatever is left (watchers, idle pools) is not waited for.
            runtime.shutdown_timeout(Duration::from_secs(1));
            result.map(|()| ExitCode::SUCCESS)
        }
        Command::Routes(args) => routes(args).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => check(args),
        Command::Explain(args) => explain(args).map(|()| ExitCode::SUCCESS),
        Command::Bpf(command) => bpf(command).map(|()| ExitCode::SUCCESS),
    }
}

async fn run(args: RunArgs, workers: Workers) -> Result<()> {
    // A gateway already running on this node hands its listening sockets over; without one,
    // they are bound here.
    let mut predecessor = match &args.handoff_socket {
        Some(path) => handoff::receive(path).context("taking over from the running gateway")?,
        None => None,
    };
    let inherited = predecessor
        .as_mut()
        .map(|p| std::mem::take(&mut p.sockets))
        .unwrap_or_default();
    if !inherited.is_empty() {
        tracing::info!(
            sockets = inherited.len(),
            "taking over the sockets of the running gateway"
        );
    }
    let sockets = Arc::new(Sockets::inheriting(inherited));
    let drain = Arc::new(Drain::new(workers));
    let mut options = args.source.translate_options();
    if args.fast_path == FastPathChoice::Off {
        // The published Service then only gives Ingress status its addresses.
        options.publish_service = None;
    }
    if args.cluster.kubernetes {
        options.classes.serve_classless = args.cluster.watch_ingress_without_class;
    }
    let console_options = options.clone();
    let table = Arc::new(RouteTable::default());
    if args.console == ConsoleChoice::On {
        table.keep_sources();
    }
    let console_token = args
        .console_token_file
        .as_deref()
        .map(gateway::console::Token::read)
        .transpose()?;

    let default_files = args
        .default_cert
        .as_deref()
        .zip(args.default_key.as_deref());
    let default_certificate = tls::default_certificate(default_files)?;
    let resolver = Arc::new(tls::SniResolver::new(table.clone(), default_certificate));
    let tls_settings = tls::TlsSettings {
        resumption: !args.no_tls_resumption,
        cipher_suites: args.tls_ciphers.clone(),
        kx_groups: args.tls_kx_groups.clone(),
    };

    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(resolver, &tls_settings)?));

    let http = listen(&sockets, "http", args.source.http_listen, "--http-listen")?;
    let https = listen(
        &sockets,
        "https",
        args.source.https_listen,
        "--https-listen",
    )?;
    let admin = listen(&sockets, "admin", args.admin_listen, "--admin-listen")?;
    let http_address = http.local_addr()?;
    let https_address = https.local_addr()?;
    let quic = args
        .http3
        .then(|| sockets.quic_socket("https-quic", https_address))
        .transpose()
        .with_context(|| format!("cannot listen on UDP {https_address} (--http3)"))?;
    tracing::info!(http = %http_address, https = %https_address, admin = %admin.local_addr()?, "listening");

    match (&args.source.manifests, args.cluster.kubernetes) {
        (Some(folder), false) => {
            let mut manifests = ManifestDir::new(folder);
            manifests.rescan();
            let (store, warnings) = manifests.store();
            table.apply(Arc::new(store), &options, warnings);
            release_garbage();
            let watcher_table = table.clone();
            tokio::spawn(manifests.watch(move |store, warnings| {
                watcher_table.apply(Arc::new(store), &options, warnings);
                release_garbage();
            }));
        }
        (None, true) => start_kubernetes(&args, table.clone(), options).await?,
        _ => anyhow::bail!("give either --manifests DIR or --kubernetes"),
    }
    if predecessor.is_some() {
        // The running gateway serves until this one has a route table to serve with.
        let mut published = table.subscribe();
        while !table.is_ready() {
            published.changed().await?;
        }
    }

    let hsts = match args.hsts.as_str() {
        "" => None,
        value => Some(HeaderValue::from_str(value).context("--hsts is not a valid header value")?),
    };
    let metrics = Arc::new(Metrics::new(
        Controller {
            class: args.source.ingress_class.clone(),
            namespace: std::env::var("POD_NAMESPACE").unwrap_or_default(),
            pod: std::env::var("POD_NAME").unwrap_or_default(),
        },
        table.clone(),
    ));
    let access_log = AccessLog::start(&args.access_log, args.access_log_format)
        .with_context(|| format!("cannot open the access log {:?}", args.access_log))?;
    let observer = Arc::new(Observer::new(metrics.clone(), access_log));
    let https_redirect_port = args.redirect_https_port.unwrap_or(https_address.port());
    let proxy = Arc::new(Proxy::new(
        table.clone(),
        ProxyConfig {
            connect_timeout: Duration::from_secs(args.proxy_connect_timeout),
            read_timeout: Duration::from_secs(args.proxy_read_timeout),
            hsts,
            alt_svc: args.http3.then(|| h3_server::alt_svc(https_redirect_port)),
            http3_early_data: args.http3_early_data,
            https_redirect_port,
            client_limits: args.client.limits(),
            accept_proxy_protocol: args.proxy_protocol,
            release_memory: release_garbage,
            stream: StreamConfig {
                connect_timeout: Duration::from_secs(args.proxy_connect_timeout),
                idle_timeout: Duration::from_secs(args.stream_idle_timeout),
                udp_idle_timeout: Duration::from_secs(args.udp_session_timeout),
                udp_max_sessions: args.udp_max_sessions,
                header_timeout: Duration::from_secs(args.client.tls_handshake_timeout),
            },
        },
        observer,
        drain.clone(),
    ));
    // The kernel fast path is for VIPs; a gateway that has none needs no BPF.
    if args.fast_path == FastPathChoice::Off && !(args.vip.is_empty() && args.xdp_iface.is_empty())
    {
        anyhow::bail!("--fast-path off leaves no way to serve --vip or --xdp-iface: drop one");
    }
    let wants_fast_path = args.fast_path == FastPathChoice::Auto
        && (!args.vip.is_empty()
            || args.source.publish_service.is_some()
            || !args.xdp_iface.is_empty());
    // Without the fast path, VIPs and Gateway listeners are bound directly.
    let steering = {
        let config = FastPathConfig {
            vips: args.vip.clone(),
            allow_source: args.allow_source.clone().map(|list| list.0),
            syn_budget: args.syn_budget,
            http3: args.http3,
        };
        let settings = BpfSettings {
            pin_dir: args.bpf_pin_dir.clone(),
            interfaces: args.xdp_iface.clone(),
            mode: args.xdp_mode,
        };
        Arc::new(Steering::start(
            config,
            wants_fast_path.then_some(&settings),
            proxy.clone(),
            acceptor.clone(),
            sockets.clone(),
        ))
    };
    // Listeners are in place before /readyz says so; later tables follow as published.
    steering.sync(&table.current());
    tokio::spawn(steering.clone().follow(table.clone()));

    let listeners = Listeners {
        http: http_address,
        https: https_address,
    };
    let place = gateway::explain::Place {
        listeners,
        fast_path: steering.config().clone(),
        https_redirect_port,
    };
    let console = match args.console {
        ConsoleChoice::Off => None,
        ConsoleChoice::On => Some(Arc::new(Console {
            table: table.clone(),
            steering: Some(steering.clone()),
            place: place.clone(),
            options: console_options,
            writer: console_writer(&args).await?,
            token: console_token,
        })),
    };
    let admin_server = Arc::new(Admin {
        steering: Some(steering),
        table,
        metrics,
        drain: drain.clone(),
        place,
        console,
        header_timeout: Duration::from_secs(args.client.client_header_timeout),
        body_timeout: Duration::from_secs(args.client.client_body_timeout),
    });
    tokio::spawn(admin_server.serve(admin));
    tokio::spawn(proxy.clone().serve(http, None));
    if let Some((quic, relay)) = quic {
        let endpoint = proxy.quic_endpoint(quic, relay, &acceptor)?;
        tokio::spawn(proxy.clone().serve_http3(endpoint));
    }
    tokio::spawn(proxy.serve(https, Some(acceptor)));
    if let Some(predecessor) = predecessor {
        predecessor
            .ready()
            .context("telling the running gateway to drain")?;
        tracing::info!("took over from the running gateway");
    }
    for name in sockets.close_unclaimed() {
        tracing::info!(
            socket = name,
            "closed an inherited socket that is no longer used"
        );
    }
    stop(&args, &drain, &sockets).await
}

/// Waits for SIGTERM (or SIGINT) or for a new process to take the sockets, then drains. A second
/// signal ends the drain at once.
async fn stop(args: &RunArgs, drain: &Drain, sockets: &Arc<Sockets>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let handoff = async {
        match &args.handoff_socket {
            Some(path) => handoff::serve(path.clone(), sockets.clone()).await,
            None => std::future::pending().await,
        }
    };
    let handed_off = tokio::select! {
        served = handoff => {
            served?;
            true
        }
        _ = terminate.recv() => false,
        _ = interrupt.recv() => false,
    };
    if handed_off {
        // The new process accepts from the same sockets now: stop at once, closing nothing.
        tracing::info!("a new process took over the listening sockets; draining");
        sockets.hand_over();
        sockets.release_all();
        drain.start(false);
    } else {
        tracing::info!(
            delay_seconds = args.drain_delay,
            "draining: /readyz is unready, listeners close after the delay"
        );
        drain.start(true);
    }
    let drained = async {
        tokio::time::sleep(Duration::from_secs(args.drain_delay)).await;
        drain.stop();
        sockets.release_all();
        drain.wait(Duration::from_secs(args.drain_timeout)).await
    };
    tokio::select! {
        left = drained => match left {
            0 => tracing::info!("drained; exiting"),
            left => tracing::warn!(connections = left, "drain deadline reached; exiting with connections open"),
        },
        _ = terminate.recv() => tracing::warn!("signalled again; exiting without finishing the drain"),
        _ = interrupt.recv() => tracing::warn!("interrupted again; exiting without finishing the drain"),
    }
    if handed_off && args.linger_after_handoff {
        tracing::info!("handed off; waiting for SIGTERM");
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
    Ok(())
}

/// Watches the API server into the route table, and writes status and Events back from the
/// leader replica.
async fn start_kubernetes(
    args: &RunArgs,
    table: Arc<RouteTable>,
    options: TranslateOptions,
) -> Result<()> {
    let client = gateway::source::kube::client(args.cluster.kubeconfig.as_deref())
        .await
        .context("connecting to the Kubernetes API")?;
    // Unique per replica: the pod name in a cluster, else host name and process id.
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let election_namespace = args
        .election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_string());
    let writer = Arc::new(ClusterWriter::new(
        client.clone(),
        identity,
        election_namespace,
        args.election_id.clone(),
        PublishedAddress {
            addresses: args.publish_address.clone(),
            service: args.source.publish_service.clone(),
            node_ips: args.source.node_ip.clone(),
        },
        options.gateway.clone(),
    ));
    tokio::spawn(writer.clone().lead());

    let (latest, mut stores) = tokio::sync::watch::channel(None::<Arc<gateway::store::Store>>);
    let source = args
        .source
        .kube_source(args.cluster.watch_namespace.clone());
    let watched_table = table.clone();
    tokio::spawn(source.watch(client, move |store| {
        let store = Arc::new(store);
        watched_table.apply(store.clone(), &options, Vec::new());
        release_garbage();
        latest.send_replace(Some(store));
    }));
    // Status follows every table, and catches up when this replica becomes the leader.
    tokio::spawn(async move {
        loop {
            let store = stores.borrow_and_update().clone();
            if let Some(store) = store {
                writer.write(&store, &table.current()).await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), stores.changed()).await;
        }
    });
    Ok(())
}

/// Where the console's changes go: the manifests folder, or the API server with
/// --console-write.
async fn console_writer(args: &RunArgs) -> Result<Writer> {
    Ok(match (&args.source.manifests, args.console_write) {
        (Some(folder), _) => Writer::Folder(folder.clone()),
        (None, true) => Writer::Cluster(
            gateway::source::kube::client(args.cluster.kubeconfig.as_deref())
                .await
                .context("connecting to the Kubernetes API for the console")?,
        ),
        (None, false) => Writer::ReadOnly(
            "the console changes a cluster's Ingresses only with --console-write (and the RBAC \
             of deploy/kubernetes/console-rbac.yaml)",
        ),
    })
}

fn listen(
    sockets: &Sockets,
    name: &str,
    address: SocketAddr,
    flag: &str,
) -> Result<Arc<TcpListener>> {
    sockets
        .listen(name, address)
        .with_context(|| format!("cannot listen on {address} ({flag})"))
}

/// The table `run --manifests DIR` would serve first.
fn translate_folder(source: &SourceArgs, command: &str) -> Result<Snapshot> {
    let folder = source
        .manifests
        .as_ref()
        .with_context(|| format!("gateway {command} needs --manifests DIR"))?;
    let mut manifests = ManifestDir::new(folder);
    manifests.rescan();
    let (store, warnings) = manifests.store();
    Ok(translate(
        &store,
        &source.translate_options(),
        warnings,
        &Snapshot::default(),
        SystemTime::now(),
    ))
}

/// The table `run --kubernetes` would serve first: every kind listed once.
fn translate_cluster(args: &CheckArgs) -> Result<Snapshot> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = runtime.block_on(async {
        let client = gateway::source::kube::client(args.cluster.kubeconfig.as_deref())
            .await
            .context("connecting to the Kubernetes API")?;
        let source = args
            .source
            .kube_source(args.cluster.watch_namespace.clone());
        let (listed, first) = tokio::sync::oneshot::channel();
        let mut listed = Some(listed);
        let watch = source.watch(client, move |store| {
            if let Some(listed) = listed.take() {
                let _ = listed.send(store);
            }
        });
        tokio::select! {
            () = watch => anyhow::bail!("the watch ended before every kind was listed"),
            store = first => Ok(store?),
            () = tokio::time::sleep(Duration::from_secs(60)) => {
                anyhow::bail!("the API server did not list every kind within 60s")
            }
        }
    })?;
    let mut options = args.source.translate_options();
    options.classes.serve_classless = args.cluster.watch_ingress_without_class;
    Ok(translate(
        &store,
        &options,
        Vec::new(),
        &Snapshot::default(),
        SystemTime::now(),
    ))
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let snapshot = if args.cluster.kubernetes {
        translate_cluster(&args)?
    } else {
        translate_folder(&args.source, "check")?
    };
    let summary = gateway::status::CheckSummary::of(&snapshot);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "summary": summary,
                "warnings": snapshot.warnings,
            }))?
        );
    } else {
        for warning in &snapshot.warnings {
            match warning.notice {
                true => println!("notice: {warning}"),
                false => println!("{warning}"),
            }
        }
        println!("{summary}");
    }
    Ok(match summary.problems {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

fn routes(args: RoutesArgs) -> Result<()> {
    let snapshot = translate_folder(&args.source, "routes")?;
    let listeners = Listeners {
        http: args.source.http_listen,
        https: args.source.https_listen,
    };
    let report = gateway::status::report(&snapshot, 1, listeners);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn explain(args: ExplainArgs) -> Result<()> {
    let explanation = match args.admin {
        Some(admin) => gateway::explain::ask_admin(
            admin,
            &args.url,
            &args.method,
            &args.header,
            args.from.as_deref(),
        )?,
        None => {
            let question = gateway::explain::Question::new(
                &args.url,
                &args.method,
                &args.header,
                args.from.as_deref(),
            )
            .map_err(anyhow::Error::msg)?;
            let snapshot = translate_folder(&args.source, "explain")?;
            let place = gateway::explain::Place {
                listeners: Listeners {
                    http: args.source.http_listen,
                    https: args.source.https_listen,
                },
                fast_path: FastPathConfig::default(),
                https_redirect_port: args.source.https_listen.port(),
            };
            gateway::explain::explain(&snapshot, &place, &question)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        println!("{explanation}");
    }
    Ok(())
}

fn bpf(command: BpfCommand) -> Result<()> {
    match command {
        BpfCommand::Stats { bpf_pin_dir, json } => {
            let report = gateway::bpf::read_stats(&bpf_pin_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            println!(
                "{:<44} {:<6} {:<20} {:>12} {:>14}",
                "LISTENER", "PROTO", "REASON", "PACKETS", "BYTES"
            );
            for listener in &report.listeners {
                for (reason, count) in &listener.counters {
                    println!(
                        "{:<44} {:<6} {:<20} {:>12} {:>14}",
                        listener.address, listener.protocol, reason, count.packets, count.bytes
                    );
                }
            }
            println!(
                "{:<44} {:<6} {:<20} {:>12} {:>14}",
                "(not a listener)", "", "passed", report.other.packets, report.other.bytes
            );
            Ok(())
        }
        BpfCommand::Detach { bpf_pin_dir } => {
            let removed = gateway::bpf::detach(&bpf_pin_dir)?;
            if removed.is_empty() {
                println!("nothing pinned in {}", bpf_pin_dir.display());
            } else {
                println!(
                    "removed from {}: {}",
                    bpf_pin_dir.display(),
                    removed.join(", ")
                );
            }
            Ok(())
        }
    }
}
