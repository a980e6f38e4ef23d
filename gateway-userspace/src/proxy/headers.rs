//! What changes in the headers between the client and the backend: hop-by-hop headers go, the
//! forwarding headers are set, Host stays.

use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

use super::Connection;

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

/// Sets the forwarding headers. The gateway is the edge: what a client claims in these headers
/// is replaced, never trusted (ingress-nginx's default, `use-forwarded-headers: false`).
pub fn set_forwarding(
    headers: &mut HeaderMap,
    connection: &Connection,
    host: Option<&HeaderValue>,
) {
    let ip = &connection.forwarded_for;
    headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
    headers.insert(X_REAL_IP.clone(), ip.clone());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(connection.scheme),
    );
    headers.insert(X_FORWARDED_PORT.clone(), connection.forwarded_port.clone());
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        headers.insert(header::HOST, host.clone());
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
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        let host = HeaderValue::from_static("shop.example.com:8080");
        let connection = Connection::new(
            "10.1.2.3:5555".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
            "http",
            None,
            None,
        );
        set_forwarding(&mut headers, &connection, Some(&host));
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(headers["x-real-ip"], "10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "shop.example.com:8080");
        assert_eq!(headers["x-forwarded-port"], "8080");
        assert_eq!(headers["host"], "shop.example.com:8080");
    }
}
