//! The PROXY protocol (HAProxy's, versions 1 and 2): a header a load balancer puts before a
//! connection's first byte to say whose connection it is. Read strictly (anything malformed is
//! refused, never guessed at) and written for backends that ask for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::peek::{PeekError, peek_until};

use crate::snapshot::stream::ProxyProtocol;

/// Version 2's first twelve bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included.
const V1_MAX: usize = 107;
/// The longest version 2 header accepted (its 16 fixed bytes and addresses with their TLVs);
/// load balancers send well under this.
const V2_MAX: usize = 1024;

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its length: the connection's own bytes start after it.
    pub len: usize,
    /// The client and the address it connected to; `None` for `UNKNOWN` (v1) and `LOCAL` or
    /// unspecified families (v2): the connection's own addresses stand.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Parses the header at the start of `bytes`: `Ok(None)` when more bytes are needed to decide.
pub fn parse(bytes: &[u8]) -> Result<Option<Header>, HeaderError> {
    if bytes.len() < V2_SIGNATURE.len() {
        let v1 = b"PROXY ";
        let v2 = &V2_SIGNATURE[..];
        let could_be = |sig: &[u8]| sig.starts_with(&bytes[..bytes.len().min(sig.len())]);
        return if could_be(v1) || could_be(v2) {
            Ok(None)
        } else {
            Err(HeaderError::Missing)
        };
    }
    if bytes.starts_with(&V2_SIGNATURE) {
        parse_v2(bytes)
    } else if bytes.starts_with(b"PROXY ") {
        parse_v1(bytes)
    } else {
        Err(HeaderError::Missing)
    }
}

fn parse_v1(bytes: &[u8]) -> Result<Option<Header>, HeaderError> {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX {
            Err(HeaderError::Malformed(
                "version 1 line longer than 107 bytes",
            ))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&bytes[6..end])
        .map_err(|_| HeaderError::Malformed("version 1 line is not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match fields.as_slice() {
        ["UNKNOWN", ..] => Ok(Some(Header {
            len,
            addresses: None,
        })),
        [family, source, destination, source_port, destination_port] => {
            let ip = |text: &str| -> Result<IpAddr, HeaderError> {
                let ip = match *family {
                    "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4),
                    "TCP6" => text.parse::<Ipv6Addr>().map(IpAddr::V6),
                    _ => {
                        return Err(HeaderError::Malformed(
                            "version 1 family is not TCP4 or TCP6",
                        ));
                    }
                };
                ip.map_err(|_| HeaderError::Malformed("version 1 address does not parse"))
            };
            let port = |text: &str| -> Result<u16, HeaderError> {
                let canonical = !text.is_empty()
                    && text.len() <= 5
                    && text.bytes().all(|b| b.is_ascii_digit())
                    && (text == "0" || !text.starts_with('0'));
                canonical
                    .then(|| text.parse::<u16>().ok())
                    .flatten()
                    .ok_or(HeaderError::Malformed("version 1 port is not 0-65535"))
            };
            Ok(Some(Header {
                len,
                addresses: Some((
                    SocketAddr::new(ip(source)?, port(source_port)?),
                    SocketAddr::new(ip(destination)?, port(destination_port)?),
                )),
            }))
        }
        _ => Err(HeaderError::Malformed(
            "version 1 line does not have 5 fields",
        )),
    }
}

fn parse_v2(bytes: &[u8]) -> Result<Option<Header>, HeaderError> {
    let Some(fixed) = bytes.get(..16) else {
        return Ok(None);
    };
    let (version_command, family) = (fixed[12], fixed[13]);
    if version_command >> 4 != 2 {
        return Err(HeaderError::Malformed(
            "version 2 signature with another version",
        ));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => {
            return Err(HeaderError::Malformed(
                "version 2 command is not LOCAL or PROXY",
            ));
        }
    };
    let len = 16 + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > V2_MAX {
        return Err(HeaderError::Malformed(
            "version 2 header longer than 1024 bytes",
        ));
    }
    let Some(header) = bytes.get(..len) else {
        return Ok(None);
    };
    let body = &header[16..];
    let addresses = match family {
        // TCP or UDP over IPv4, then over IPv6.
        0x11 | 0x12 if body.len() >= 12 => {
            let ip = |at: usize| IpAddr::from([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        0x21 | 0x22 if body.len() >= 36 => {
            let ip = |at: usize| {
                let octets: [u8; 16] = body[at..at + 16].try_into().unwrap_or_default();
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        0x11 | 0x12 | 0x21 | 0x22 => {
            return Err(HeaderError::Malformed("version 2 addresses cut short"));
        }
        // Unspecified, or Unix sockets: the connection's own addresses stand.
        0x00 | 0x31 | 0x32 => None,
        _ => return Err(HeaderError::Malformed("version 2 family is unknown")),
    };
    Ok(Some(Header {
        len,
        addresses: if local { None } else { addresses },
    }))
}

/// The header that tells a backend the connection is `source`'s, to `destination`. An IPv4
/// address beside an IPv6 one is written mapped into IPv6 (both sides of a header share a
/// family).
pub fn encode(version: ProxyProtocol, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source_ip, destination_ip) = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(as_v6(s)), IpAddr::V6(as_v6(d))),
    };
    match version {
        ProxyProtocol::V1 => {
            let family = if source_ip.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {source_ip} {destination_ip} {} {}\r\n",
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        ProxyProtocol::V2 => {
            let mut header = V2_SIGNATURE.to_vec();
            header.push(0x21); // version 2, PROXY
            let mut addresses = Vec::with_capacity(36);
            match (source_ip, destination_ip) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    header.push(0x11);
                    addresses.extend(s.octets());
                    addresses.extend(d.octets());
                }
                (s, d) => {
                    header.push(0x21);
                    addresses.extend(as_v6(s).octets());
                    addresses.extend(as_v6(d).octets());
                }
            }
            addresses.extend(source.port().to_be_bytes());
            addresses.extend(destination.port().to_be_bytes());
            header.extend((addresses.len() as u16).to_be_bytes());
            header.extend(addresses);
            header
        }
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Reads the header a connection must start with, and nothing after it: whatever follows is
/// read by whoever serves the connection, TLS or not.
pub async fn read_header(stream: &mut TcpStream, timeout: Duration) -> Result<Header, PeekError> {
    let header = peek_until(stream, V2_MAX, timeout, parse).await?;
    let mut consumed = vec![0u8; header.len];
    stream.read_exact(&mut consumed).await?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn version_1_lines() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 443\r\nGET /";
        let header = parse(line).unwrap().unwrap();
        assert_eq!(header.len, 45);
        assert_eq!(
            header.addresses,
            Some((addr("192.0.2.1:51234"), addr("198.51.100.2:443")))
        );
        let v6 = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(v6.addresses.unwrap().0, addr("[2001:db8::1]:1"));
        let unknown = parse(b"PROXY UNKNOWN whatever\r\n").unwrap().unwrap();
        assert_eq!((unknown.len, unknown.addresses), (24, None));
        // Cut anywhere before its end, a header is not decided yet.
        for cut in 0..45 {
            assert_eq!(parse(&line[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn version_1_refuses_what_is_not_exact() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 51234\r\n"[..],
            b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeaderError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&endless), Err(HeaderError::Malformed(_))));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Missing));
        assert_eq!(parse(b"\x16\x03\x01"), Err(HeaderError::Missing));
    }

    #[test]
    fn version_2_round_trips_and_reads_tlvs_past() {
        let (source, destination) = (addr("192.0.2.1:51234"), addr("198.51.100.2:443"));
        let written = encode(ProxyProtocol::V2, source, destination);
        assert_eq!(written.len(), 28);
        let header = parse(&written).unwrap().unwrap();
        assert_eq!(
            (header.len, header.addresses),
            (28, Some((source, destination)))
        );
        for cut in 0..28 {
            assert_eq!(parse(&written[..cut]), Ok(None), "cut at {cut}");
        }
        // A TLV (AWS's VPC endpoint id, type 0xEA) is counted in the length and passed over.
        let mut with_tlv = written.clone();
        with_tlv[15] += 7;
        with_tlv.extend([0xea, 0x00, 0x04, b'v', b'p', b'c', b'e']);
        assert_eq!(parse(&with_tlv).unwrap().unwrap().len, 35);
        let v6 = encode(
            ProxyProtocol::V2,
            addr("[2001:db8::1]:1"),
            addr("192.0.2.9:2"),
        );
        let parsed = parse(&v6).unwrap().unwrap();
        assert_eq!(
            parsed.addresses,
            Some((addr("[2001:db8::1]:1"), addr("[::ffff:192.0.2.9]:2")))
        );
        let mut local = written.clone();
        local[12] = 0x20;
        assert_eq!(parse(&local).unwrap().unwrap().addresses, None);
    }

    #[test]
    fn version_2_refuses_bad_versions_commands_families_and_lengths() {
        let good = encode(ProxyProtocol::V2, addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        let with = |at: usize, byte: u8| {
            let mut bytes = good.clone();
            bytes[at] = byte;
            bytes
        };
        for bad in [with(12, 0x11), with(12, 0x22), with(13, 0x41), with(15, 4)] {
            assert!(
                matches!(parse(&bad), Err(HeaderError::Malformed(_))),
                "{bad:?}"
            );
        }
        let huge = [&V2_SIGNATURE[..], &[0x21, 0x11, 0x10, 0x00]].concat();
        assert!(matches!(parse(&huge), Err(HeaderError::Malformed(_))));
    }

    #[test]
    fn version_1_writes_what_it_reads() {
        let (source, destination) = (addr("192.0.2.1:51234"), addr("198.51.100.2:443"));
        let written = encode(ProxyProtocol::V1, source, destination);
        assert_eq!(written, b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 443\r\n");
        let header = parse(&written).unwrap().unwrap();
        assert_eq!(header.addresses, Some((source, destination)));
        let mixed = encode(
            ProxyProtocol::V1,
            addr("192.0.2.1:1"),
            addr("[2001:db8::2]:2"),
        );
        assert_eq!(mixed, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n");
    }

    use proptest::prelude::*;

    /// Bytes that often start like a header: random, or after either signature.
    fn header_like() -> impl Strategy<Value = Vec<u8>> {
        let tail = proptest::collection::vec(any::<u8>(), 0..120);
        prop_oneof![
            tail.clone(),
            tail.clone()
                .prop_map(|t| [b"PROXY ".as_slice(), &t].concat()),
            tail.prop_map(|t| [V2_SIGNATURE.as_slice(), &t].concat()),
        ]
    }

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| (ip, port).into()),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| (ip, port).into()),
        ]
    }

    proptest! {
        /// What the first bytes decide stands when more arrive (peeking again must not change
        /// what a connection is).
        #[test]
        fn a_decision_on_the_first_bytes_stands(bytes in header_like(), cut in 0usize..200) {
            let cut = cut.min(bytes.len());
            match (parse(&bytes[..cut]), parse(&bytes)) {
                (Ok(None), _) => {}
                (Ok(Some(header)), whole) => prop_assert_eq!(whole, Ok(Some(header))),
                (Err(_), whole) => prop_assert!(whole.is_err()),
            }
        }

        /// Every header written is read back whole, and every cut of it waits for more.
        #[test]
        fn written_headers_read_back(source in socket_addr(), destination in socket_addr(), v2 in any::<bool>()) {
            let version = if v2 { ProxyProtocol::V2 } else { ProxyProtocol::V1 };
            let written = encode(version, source, destination);
            let header = parse(&written).unwrap().unwrap();
            prop_assert_eq!(header.len, written.len());
            let (read_source, read_destination) = header.addresses.unwrap();
            let canonical = |a: SocketAddr| (a.ip().to_canonical(), a.port());
            prop_assert_eq!(canonical(read_source), canonical(source));
            prop_assert_eq!(canonical(read_destination), canonical(destination));
            for cut in 0..written.len() {
                prop_assert_eq!(parse(&written[..cut]), Ok(None));
            }
        }
    }
}
