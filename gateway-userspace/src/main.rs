//! `gateway`: the xdp-gateway daemon and its command-line tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use gateway::admin::Admin;
use gateway::proxy::{Proxy, ProxyConfig};
use gateway::publish::RouteTable;
use gateway::source::files::ManifestDir;
use gateway::translate::{ClassSelector, TranslateOptions, translate};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Kubernetes edge gateway with an XDP fast path"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the routes of a manifests folder, applying every change live.
    Run(RunArgs),
    /// Print the route table of a manifests folder, with the URL of every route.
    Routes(RoutesArgs),
}

#[derive(Args)]
struct SourceArgs {
    /// Folder of Kubernetes YAML manifests (Ingress, IngressClass, Service, EndpointSlice,
    /// Secret); every *.yaml and *.yml file below it is read.
    #[arg(long, value_name = "DIR")]
    manifests: PathBuf,
    /// The IngressClass name this gateway serves.
    #[arg(long, default_value = "xdp-gateway")]
    ingress_class: String,
    /// The `spec.controller` of IngressClasses that belong to this gateway.
    #[arg(long, default_value = "xdp-gateway.io/ingress")]
    controller: String,
    /// Where plain HTTP is served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
}

impl SourceArgs {
    fn translate_options(&self) -> TranslateOptions {
        TranslateOptions {
            classes: ClassSelector {
                class_name: self.ingress_class.clone(),
                controller: self.controller.clone(),
            },
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Where /healthz, /readyz and /routes are served.
    #[arg(long, default_value = "127.0.0.1:9180")]
    admin_listen: SocketAddr,
    /// Seconds to wait for a TCP connection to a backend.
    #[arg(long, default_value_t = 5)]
    proxy_connect_timeout: u64,
    /// Seconds to wait for a backend's response headers.
    #[arg(long, default_value_t = 60)]
    proxy_read_timeout: u64,
    /// Worker threads of the proxy (default: one per CPU).
    #[arg(long, env = "GATEWAY_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

#[derive(Args)]
struct RoutesArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Print JSON (the same document as the admin /routes endpoint) instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Run(args) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = args.worker_threads {
                runtime.worker_threads(threads.max(1));
            }
            runtime.enable_all().build()?.block_on(run(args))
        }
        Command::Routes(args) => routes(args),
    }
}

async fn run(args: RunArgs) -> Result<()> {
    let options = args.source.translate_options();
    let table = Arc::new(RouteTable::default());

    let http = TcpListener::bind(args.source.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--http-listen)",
                args.source.http_listen
            )
        })?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-listen)", args.admin_listen))?;
    let http_address = http.local_addr()?;
    tracing::info!(http = %http_address, admin = %admin.local_addr()?, "listening");

    let mut manifests = ManifestDir::new(&args.source.manifests);
    manifests.rescan();
    let (store, warnings) = manifests.store();
    table.publish(translate(&store, &options, warnings));

    let watcher_table = table.clone();
    tokio::spawn(manifests.watch(move |store, warnings| {
        watcher_table.publish(translate(&store, &options, warnings));
    }));

    let proxy = Arc::new(Proxy::new(
        table.clone(),
        ProxyConfig {
            connect_timeout: Duration::from_secs(args.proxy_connect_timeout),
            read_timeout: Duration::from_secs(args.proxy_read_timeout),
        },
    ));
    let admin_server = Arc::new(Admin {
        table,
        http_listen: http_address,
    });
    tokio::spawn(admin_server.serve(admin));
    tokio::select! {
        _ = proxy.serve_http(http) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; exiting"),
    }
    Ok(())
}

fn routes(args: RoutesArgs) -> Result<()> {
    let mut manifests = ManifestDir::new(&args.source.manifests);
    manifests.rescan();
    let (store, warnings) = manifests.store();
    let snapshot = translate(&store, &args.source.translate_options(), warnings);
    let report = gateway::status::report(&snapshot, 1, args.source.http_listen);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
