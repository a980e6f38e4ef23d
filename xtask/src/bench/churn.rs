//! Route changes on a running system: how soon a new route is served (T6), and whether any
//! request fails while routes change under load (T7). Each system changes routes its own real
//! way: the gateway through its manifests folder, nginx by rewriting its map and reloading,
//! HAProxy through its runtime API.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::fixtures::{self, Fixtures};
use super::load::{self, Measured, OhaTarget};
use super::sut::{Kind, Sut};

/// The index of the backend that answers `new`.
const NEW_BACKEND: usize = 4;

/// One route change, made the system's own way.
fn set_route(sut: &Sut, fixtures: &Fixtures, host: &str, backend: Option<usize>) -> Result<()> {
    let name = host.trim_end_matches(".bench.test");
    match sut.kind {
        Kind::Gateway => {
            let path = fixtures.manifests().join(format!("{name}.yaml"));
            match backend {
                Some(backend) => {
                    let temp = fixtures.manifests().join(format!(".{name}.tmp"));
                    std::fs::write(&temp, fixtures::extra_route(name, backend))?;
                    std::fs::rename(&temp, &path)?;
                }
                None => std::fs::remove_file(&path)?,
            }
        }
        Kind::Nginx => {
            let map_path = fixtures.dir.join("routes/nginx-hosts.map");
            let map = std::fs::read_to_string(&map_path)?;
            let mut lines: Vec<String> = map
                .lines()
                .filter(|l| l.split_whitespace().next() != Some(host))
                .map(str::to_string)
                .collect();
            if let Some(backend) = backend {
                lines.push(format!("{host} be{backend};"));
            }
            std::fs::write(&map_path, lines.join("\n") + "\n")?;
            sut.nginx_reload(fixtures)?;
        }
        Kind::Haproxy => {
            let map = fixtures.dir.join("routes/haproxy-hosts.map");
            let command = match backend {
                Some(backend) => format!(
                    "set map {} {host} be{backend}\nadd map {} {host} be{backend}\n",
                    map.display(),
                    map.display()
                ),
                None => format!("del map {} {host}\n", map.display()),
            };
            // `set` changes an existing entry; `add` creates a missing one; one of them fails.
            for line in command.lines() {
                let mut socket = UnixStream::connect(fixtures.dir.join("haproxy.sock"))?;
                socket.write_all(format!("{line}\n").as_bytes())?;
                let mut answer = String::new();
                socket.read_to_string(&mut answer)?;
                if line.starts_with("set") && answer.trim().is_empty() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Adds `count` routes one by one and measures, for each, the time from the change to the
/// first request it serves (polling every millisecond).
pub fn update_latencies(sut: &Sut, fixtures: &Fixtures, count: usize) -> Result<Vec<f64>> {
    let mut latencies = Vec::new();
    for i in 0..count {
        let host = format!("new{i}.bench.test");
        let begin = Instant::now();
        set_route(sut, fixtures, &host, Some(NEW_BACKEND))?;
        loop {
            if crate::http_get(("127.0.0.1", sut.kind.ports().0), &host, "/")
                .is_ok_and(|(status, body)| status == 200 && body == "new")
            {
                break;
            }
            if begin.elapsed() > Duration::from_secs(10) {
                bail!("{}: route {host} not served after 10 s", sut.kind.name());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(begin.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(latencies)
}

/// Constant open-loop load on `r7` while `mutations` route changes run at about 20 per second:
/// other hosts come and go, and `r7` flips between two healthy backends. Returns the load's
/// figures and the number of processes of the system afterwards.
pub fn failures_under_churn(
    sut: &Sut,
    fixtures: &Fixtures,
    mutations: usize,
) -> Result<(Measured, usize)> {
    let seconds = (mutations / 20) as u64 + 2;
    let port = sut.kind.ports().0;
    let loader = std::thread::spawn(move || {
        load::oha(
            &OhaTarget::loopback(port, "r7.bench.test"),
            Duration::from_secs(seconds),
            64,
            Some(2000),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let begin = Instant::now();
    for i in 0..mutations {
        match i % 3 {
            0 => set_route(sut, fixtures, &format!("churn{i}.bench.test"), Some(i % 4))?,
            1 if i >= 4 => set_route(sut, fixtures, &format!("churn{}.bench.test", i - 4), None)?,
            _ => set_route(sut, fixtures, "r7.bench.test", Some(i % 2))?,
        }
        // About 20 changes per second.
        let due = Duration::from_millis(50 * (i as u64 + 1));
        if let Some(wait) = due.checked_sub(begin.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let measured = loader
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    Ok((measured, sut.process_count()))
}
