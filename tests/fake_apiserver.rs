//! `fake-apiserver FILE...`: the tests' fake Kubernetes API server as a program, serving the
//! objects of the YAML files given (the benchmark's 10,000 Ingresses from an API server, and by
//! hand). Prints the path of a kubeconfig for it, then serves until stopped.

use std::io::Write;

use anyhow::{Context, Result, bail};
use gateway_e2e::apiserver::FakeApiServer;

#[tokio::main]
async fn main() -> Result<()> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        bail!("usage: fake-apiserver FILE.yaml [FILE.yaml...]");
    }
    let server = FakeApiServer::start().await;
    for file in &files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        server.apply(&text);
    }
    let mut out = std::io::stdout();
    writeln!(out, "{}", server.kubeconfig().display())?;
    out.flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
