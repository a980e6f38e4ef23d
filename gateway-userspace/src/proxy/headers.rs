//! What changes in the headers between the client and the backend: hop-by-hop headers go, the
//! forwarding headers are set, Host stays.

use std::net::IpAddr;

use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

use super::head_fields::write_field;

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Whether the Connection header lists `token` (`close`, `keep-alive`, `upgrade`).
pub fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The protocol the upgrade asks for (`Upgrade: websocket`), when the request asks to upgrade.
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    connection_lists(headers, "upgrade")
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes hop-by-hop headers, including those the Connection header names, and `Upgrade`
/// unless `keep_upgrade` carries it on (it is then re-announced with `Connection: upgrade`).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: Option<HeaderValue>) {
    // Most messages carry none of them: one look at each name costs less than a removal each.
    let carries_any = headers
        .keys()
        .any(|name| name == header::UPGRADE || HOP_BY_HOP.contains(name));
    if carries_any {
        remove_all(headers);
    }
    if let Some(protocol) = keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

fn remove_all(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The forwarding headers. The gateway is the edge: what a client claims in them is replaced,
/// never trusted (ingress-nginx's default, `use-forwarded-headers: false`).
const FORWARDING: [&HeaderName; 5] = [
    &X_FORWARDED_FOR,
    &X_REAL_IP,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_PORT,
    &X_FORWARDED_HOST,
];

/// Removes what the client claims in the forwarding headers.
pub fn remove_forwarding_claims(headers: &mut HeaderMap) {
    // One look at each name, as for the hop-by-hop headers: clients rarely send them.
    if headers.keys().any(|name| FORWARDING.contains(&name)) {
        for name in FORWARDING {
            headers.remove(name);
        }
    }
}

/// A connection's part of the forwarding headers (`X-Forwarded-For`, `X-Real-IP`,
/// `X-Forwarded-Proto`, `X-Forwarded-Port`), made once for all its requests: as values, and
/// as the lines an HTTP/1.1 head carries.
pub struct ConnectionForwarding {
    client_ip: HeaderValue,
    proto: &'static str,
    port: HeaderValue,
    lines: Box<[u8]>,
}

impl ConnectionForwarding {
    pub fn new(client: IpAddr, scheme: &'static str, port: u16) -> Self {
        let ip = client.to_string();
        let lines = format!(
            "x-forwarded-for: {ip}\r\nx-real-ip: {ip}\r\nx-forwarded-proto: {scheme}\r\n\
             x-forwarded-port: {port}\r\n"
        );
        Self {
            client_ip: HeaderValue::from_str(&ip).expect("an IP address is a valid header value"),
            proto: scheme,
            port: HeaderValue::from(port),
            lines: lines.into_bytes().into_boxed_slice(),
        }
    }
}

/// One request's forwarding headers: its connection's, and `X-Forwarded-Host`. The upstream's
/// HTTP/1.1 encoder writes them after the request's own fields (inserted one by one into the
/// request's map, they cost a tenth of forwarding a request: hashing, probing, growing the
/// map); they are inserted where the map itself is read or edited.
#[derive(Clone, Copy)]
pub struct Forwarding<'a> {
    pub connection: &'a ConnectionForwarding,
    pub host: Option<&'a HeaderValue>,
}

impl Forwarding<'_> {
    /// Sets them in `headers`, replacing what was there.
    pub fn insert_into(self, headers: &mut HeaderMap) {
        let connection = self.connection;
        headers.insert(X_FORWARDED_FOR.clone(), connection.client_ip.clone());
        headers.insert(X_REAL_IP.clone(), connection.client_ip.clone());
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(connection.proto),
        );
        headers.insert(X_FORWARDED_PORT.clone(), connection.port.clone());
        if let Some(host) = self.host {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
    }

    /// Writes them as the lines of an HTTP/1.1 head, into a head whose own fields carry none.
    pub fn write_lines(self, head: &mut Vec<u8>) {
        head.extend_from_slice(&self.connection.lines);
        if let Some(host) = self.host {
            write_field(head, b"x-forwarded-host", host.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers, None);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_is_carried_when_asked() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let upgrade = requested_upgrade(&headers);
        assert_eq!(upgrade.as_ref().unwrap(), "websocket");
        remove_hop_by_hop(&mut headers, upgrade);
        assert_eq!(headers[header::CONNECTION], "upgrade");
        assert_eq!(headers[header::UPGRADE], "websocket");
        let mut plain = HeaderMap::new();
        plain.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(
            requested_upgrade(&plain).is_none(),
            "Upgrade without Connection: upgrade"
        );
    }

    #[test]
    fn forwarding_headers_replace_client_claims() {
        let host = HeaderValue::from_static("shop.example.com:8080");
        let connection = ConnectionForwarding::new("10.1.2.3".parse().unwrap(), "http", 8080);
        let forwarding = Forwarding {
            connection: &connection,
            host: Some(&host),
        };
        let claimed = || {
            let mut headers = HeaderMap::new();
            for name in FORWARDING {
                headers.insert(name, HeaderValue::from_static("6.6.6.6"));
            }
            headers.insert("x-kept", HeaderValue::from_static("1"));
            headers
        };
        let expected = [
            ("x-forwarded-for", "10.1.2.3"),
            ("x-real-ip", "10.1.2.3"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-port", "8080"),
            ("x-forwarded-host", "shop.example.com:8080"),
        ];

        let mut inserted = claimed();
        forwarding.insert_into(&mut inserted);
        for (name, value) in expected {
            assert_eq!(inserted.get_all(name).iter().collect::<Vec<_>>(), [value]);
        }

        let mut written = claimed();
        remove_forwarding_claims(&mut written);
        assert_eq!(written.len(), 1, "only x-kept is left: {written:?}");
        let mut lines = Vec::new();
        forwarding.write_lines(&mut lines);
        let lines = String::from_utf8(lines).unwrap();
        let fields: Vec<(&str, &str)> = lines
            .split_terminator("\r\n")
            .map(|line| line.split_once(": ").unwrap())
            .collect();
        assert_eq!(fields, expected);
    }
}
