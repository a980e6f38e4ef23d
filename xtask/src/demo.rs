//! `cargo xtask demo`: the gateway on deploy/examples with example backends on loopback, and
//! the requests that show host and path routing working.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, http_get, root};

const HTTP: &str = "127.0.0.1:8080";
/// The listener of the example Gateway (deploy/examples/gateway-api.yaml).
const GATEWAY_LISTENER: &str = "127.0.0.1:8081";
const ADMIN: &str = "127.0.0.1:9180";

/// Scheme, host and path of each example request, and who should answer it.
const EXAMPLES: [(&str, &str, &str, &str); 10] = [
    ("http", "shop.example.com", "/", "(308)"),
    ("https", "shop.example.com", "/", "web"),
    ("https", "shop.example.com", "/api/orders?id=7", "api"),
    ("https", "shop.example.com", "/healthz", "api"),
    ("http", "docs.127.0.0.1.nip.io", "/guide", "docs"),
    ("http", "v2.docs.example.com", "/", "docs"),
    ("http", "unknown.example.com", "/", "(404)"),
    ("https", "unknown.example.com", "/", "(404)"),
    ("gateway", "store.example.com", "/api/orders", "api"),
    ("gateway", "store.example.com", "/", "web"),
];
const HTTPS_PORT: u16 = 8443;

/// Children that are killed when the demo ends, however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(wait: bool) -> Result<()> {
    cargo(&[
        "build",
        "--bins",
        "-p",
        "gateway-userspace",
        "-p",
        "gateway-e2e",
    ])?;
    let bin = root().join("target/debug");
    let examples = root().join("deploy/examples");
    let mut processes = Processes(Vec::new());
    processes.0.push(
        Command::new(bin.join("echo-backend"))
            .args([
                "web=127.0.0.1:9001",
                "api=127.0.0.1:9002",
                "docs=127.0.0.1:9003",
            ])
            .spawn()
            .context("starting the example backends")?,
    );
    processes.0.push(
        Command::new(bin.join("gateway"))
            .arg("run")
            .arg("--manifests")
            .arg(&examples)
            .args(["--http-listen", HTTP, "--admin-listen", ADMIN])
            .args(["--https-listen", &format!("127.0.0.1:{HTTPS_PORT}")])
            // The demo prints its own lines; request logs would interleave with them.
            .args(["--access-log", "off"])
            .spawn()
            .context("starting the gateway")?,
    );
    wait_ready(&mut processes)?;

    println!("\n== Routes (gateway routes --manifests deploy/examples) ==\n");
    let routes = Command::new(bin.join("gateway"))
        .arg("routes")
        .arg("--manifests")
        .arg(&examples)
        .output()?;
    print!("{}", String::from_utf8_lossy(&routes.stdout));

    println!("\n== Requests through the gateway ==\n");
    let mut wrong = 0;
    for (scheme, host, path, expected) in EXAMPLES {
        let (command, answer) = if scheme == "https" {
            // -k: the example certificate is self-signed.
            let command = format!(
                "curl -k --resolve {host}:{HTTPS_PORT}:127.0.0.1 'https://{host}:{HTTPS_PORT}{path}'"
            );
            (command, curl_https(host, path))
        } else {
            // The Gateway's routes are served on the Gateway's own listener.
            let address = if scheme == "gateway" {
                GATEWAY_LISTENER
            } else {
                HTTP
            };
            let command = format!("curl -H 'Host: {host}' 'http://{address}{path}'");
            (command, http_get(address, host, path))
        };
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                println!("{command}\n    -> skipped: {e:#}");
                continue;
            }
        };
        let answered = service_in(&body).unwrap_or_else(|| format!("({status})"));
        let mark = if answered == expected {
            "ok"
        } else {
            "UNEXPECTED"
        };
        wrong += usize::from(answered != expected);
        println!("{command}\n    -> {status}, answered by {answered}  [{mark}]");
    }
    if wrong > 0 {
        bail!("{wrong} example requests were not routed as expected");
    }
    if !wait {
        return Ok(());
    }
    println!(
        "\nThe gateway serves http://{HTTP}. The console: http://{ADMIN}/ (and \
         http://{ADMIN}/routes as JSON). Edit the files in deploy/examples/ and the routes change \
         live. Ctrl-C stops everything."
    );
    for child in &mut processes.0 {
        child.wait()?;
    }
    Ok(())
}

fn wait_ready(processes: &mut Processes) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for child in &mut processes.0 {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "a demo process exited early ({status}); is port 8080, 8443, 9180 or 9001-9003 taken?"
                );
            }
        }
        if http_get(ADMIN, "admin", "/readyz").is_ok_and(|(status, _)| status == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the gateway was not ready within 30s")
}

/// An HTTPS GET through curl (which speaks TLS): status and body.
fn curl_https(host: &str, path: &str) -> Result<(u16, String)> {
    let output = Command::new("curl")
        .args(["-sk", "--max-time", "5", "--resolve"])
        .arg(format!("{host}:{HTTPS_PORT}:127.0.0.1"))
        .arg(format!("https://{host}:{HTTPS_PORT}{path}"))
        .args(["-w", "\n%{http_code}"])
        .output()
        .context("curl is needed for the HTTPS examples")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').context("no status from curl")?;
    Ok((
        status.trim().parse().context("curl status")?,
        body.to_string(),
    ))
}

/// The `service` field of the example backend's JSON answer.
fn service_in(body: &str) -> Option<String> {
    let start = body.find("\"service\":\"")? + "\"service\":\"".len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_string())
}
