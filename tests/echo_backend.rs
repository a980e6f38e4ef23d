//! `echo-backend NAME=ADDR...`: the test backend as a program, for the demo and by hand. Each
//! backend answers with its name and the request it saw; `NAME=udp:ADDR` is a UDP backend that
//! answers each datagram with `NAME:` and the datagram.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use gateway_e2e::backend::{Backend, UdpBackend};

#[tokio::main]
async fn main() -> Result<()> {
    let specs: Vec<String> = std::env::args().skip(1).collect();
    if specs.is_empty() {
        bail!("usage: echo-backend NAME=[udp:]ADDR [NAME=[udp:]ADDR...]   e.g. web=127.0.0.1:9001");
    }
    let (mut running, mut udp_backends) = (Vec::new(), Vec::new());
    for spec in &specs {
        let (name, addr) = spec
            .split_once('=')
            .with_context(|| format!("{spec:?}: expected NAME=ADDR"))?;
        let (udp, addr) = match addr.strip_prefix("udp:") {
            Some(addr) => (true, addr),
            None => (false, addr),
        };
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("{spec:?}: bad address"))?;
        if udp {
            let backend = UdpBackend::start_on(name, addr)
                .await
                .with_context(|| format!("cannot bind {addr} for {name}"))?;
            println!("UDP backend {name} on {}", backend.addr);
            udp_backends.push(backend);
            continue;
        }
        let backend = Backend::start_on(name, addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for {name}"))?;
        println!("backend {name} listening on {}", backend.addr);
        running.push(backend);
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
