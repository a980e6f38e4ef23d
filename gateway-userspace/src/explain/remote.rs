//! `gateway explain --admin ADDR`: the same question asked of a running gateway, whose table
//! (and fast-path flags) may differ from any folder at hand.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Explanation;

/// Asks the admin listener at `admin` to explain a request.
pub fn ask_admin(
    admin: SocketAddr,
    url: &str,
    method: &str,
    headers: &[String],
    from: Option<&str>,
) -> Result<Explanation> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("url", url).append_pair("method", method);
    for header in headers {
        query.append_pair("header", header);
    }
    if let Some(from) = from {
        query.append_pair("from", from);
    }
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .with_context(|| format!("connecting to the admin listener {admin}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /explain?{} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n",
        query.finish()
    )?;
    let mut response = Vec::new();
    stream
        .take(16 << 20)
        .read_to_end(&mut response)
        .with_context(|| format!("reading the answer of {admin}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the admin listener's answer has no body")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{admin}: {}", body.trim());
    }
    serde_json::from_str(body).context("the admin listener's explanation is not valid JSON")
}
