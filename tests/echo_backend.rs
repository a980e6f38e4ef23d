//! `echo-backend NAME=ADDR...`: the test backend as a program, for the demo and by hand. Each
//! backend answers with its name and the request it saw.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use gateway_e2e::backend::Backend;

#[tokio::main]
async fn main() -> Result<()> {
    let specs: Vec<String> = std::env::args().skip(1).collect();
    if specs.is_empty() {
        bail!("usage: echo-backend NAME=ADDR [NAME=ADDR...]   e.g. web=127.0.0.1:9001");
    }
    let mut running = Vec::new();
    for spec in &specs {
        let (name, addr) = spec
            .split_once('=')
            .with_context(|| format!("{spec:?}: expected NAME=ADDR"))?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("{spec:?}: bad address"))?;
        let backend = Backend::start_on(name, addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for {name}"))?;
        println!("backend {name} listening on {}", backend.addr);
        running.push(backend);
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
