//! The server name a TLS client asks for, read from its ClientHello without terminating
//! anything: what TLS passthrough routes by. The hello is parsed strictly over as many records
//! as it spans; the bytes themselves are left for whoever serves the connection.

use std::time::Duration;

use tokio::net::TcpStream;

use super::peek::{PeekError, peek_until};

/// The most bytes of records a ClientHello may take (hellos with post-quantum key shares are
/// under 2 KiB; the limit leaves room for many extensions).
pub const MAX_HELLO: usize = 16 * 1024;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// What the first bytes of a connection say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed.
    Incomplete,
    /// A whole ClientHello, and the host name it asks for (lower-case, without a trailing
    /// dot), when it sends one.
    Complete { server_name: Option<String> },
}

/// Why the bytes are not a ClientHello.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a TLS ClientHello: {0}")]
pub struct NotAHello(pub &'static str);

/// The server name of the ClientHello a connection starts with (`None` when it sends none),
/// leaving the hello unread for whoever serves the connection.
pub async fn server_name(
    stream: &TcpStream,
    timeout: Duration,
) -> Result<Option<String>, PeekError> {
    // Room for the hello and the headers of the records it is cut into.
    let window = MAX_HELLO + 1024;
    peek_until(stream, window, timeout, |bytes| {
        parse(bytes).map(|hello| match hello {
            Hello::Incomplete => None,
            Hello::Complete { server_name } => Some(server_name),
        })
    })
    .await
}

/// Reads the ClientHello at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Hello, NotAHello> {
    // The handshake message, put together from the records' fragments.
    let mut message = Vec::new();
    let mut rest = bytes;
    loop {
        let Some(header) = rest.get(..5) else {
            check_record_start(rest)?;
            return Ok(Hello::Incomplete);
        };
        check_record_start(header)?;
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 || length > 16384 {
            return Err(NotAHello("record length is not 1-16384"));
        }
        let Some(fragment) = rest.get(5..5 + length) else {
            return Ok(Hello::Incomplete);
        };
        message.extend_from_slice(fragment);
        rest = &rest[5 + length..];
        if message.len() >= 4 {
            if message[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(NotAHello(
                    "the first handshake message is not a ClientHello",
                ));
            }
            let wanted = 4
                + (usize::from(message[1]) << 16
                    | usize::from(message[2]) << 8
                    | usize::from(message[3]));
            if wanted > MAX_HELLO {
                return Err(NotAHello("ClientHello longer than 16 KiB"));
            }
            if message.len() >= wanted {
                let server_name = name_in(&message[4..wanted])?;
                return Ok(Hello::Complete { server_name });
            }
        }
    }
}

/// A record header's first three bytes, as far as they go: a handshake record of TLS
/// (`3.x`).
fn check_record_start(header: &[u8]) -> Result<(), NotAHello> {
    if header.first().is_some_and(|&t| t != RECORD_HANDSHAKE) {
        return Err(NotAHello("the first record is not a handshake"));
    }
    if header.get(1).is_some_and(|&major| major != 3) {
        return Err(NotAHello("the record version is not TLS"));
    }
    Ok(())
}

/// A cursor over a message's fields; every read is bounds-checked.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NotAHello> {
        if self.0.len() < n {
            return Err(NotAHello("ClientHello field runs past its end"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, NotAHello> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, NotAHello> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A field with a one- or two-byte length before it.
    fn vector(&mut self, length_bytes: usize) -> Result<Fields<'a>, NotAHello> {
        let length = match length_bytes {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        Ok(Fields(self.take(length)?))
    }
}

/// The host name of a ClientHello's body.
fn name_in(body: &[u8]) -> Result<Option<String>, NotAHello> {
    let mut hello = Fields(body);
    hello.take(2 + 32)?; // legacy version, random
    if hello.vector(1)?.0.len() > 32 {
        return Err(NotAHello("session id longer than 32 bytes"));
    }
    let suites = hello.vector(2)?.0;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(NotAHello("cipher suites list is empty or odd"));
    }
    if hello.vector(1)?.0.is_empty() {
        return Err(NotAHello("compression methods list is empty"));
    }
    if hello.0.is_empty() {
        return Ok(None); // No extensions at all (TLS 1.2 allows it).
    }
    let mut extensions = hello.vector(2)?;
    if !hello.0.is_empty() {
        return Err(NotAHello("bytes after the extensions"));
    }
    let mut found = None;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vector(2)?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        if found.is_some() {
            return Err(NotAHello("server_name extension given twice"));
        }
        let mut names = data.vector(2)?;
        if !data.0.is_empty() {
            return Err(NotAHello("bytes after the server name list"));
        }
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name = names.vector(2)?.0;
            if name_type == NAME_TYPE_HOST {
                if found.is_some() {
                    return Err(NotAHello("more than one host name"));
                }
                found = Some(host_name(name)?);
            }
        }
    }
    Ok(found)
}

/// A host name as routes compare it; anything but a DNS name's characters is refused.
fn host_name(name: &[u8]) -> Result<String, NotAHello> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid {
        return Err(NotAHello("server name is not a DNS name"));
    }
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with these extensions (type, data).
    fn hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // no session id
        body.extend([0, 2, 0x13, 0x01]); // one suite
        body.extend([1, 0]); // null compression
        let mut list = Vec::new();
        for (kind, data) in extensions {
            list.extend(kind.to_be_bytes());
            list.extend((data.len() as u16).to_be_bytes());
            list.extend(data);
        }
        body.extend((list.len() as u16).to_be_bytes());
        body.extend(list);
        let mut message = vec![HANDSHAKE_CLIENT_HELLO, 0];
        message.extend((body.len() as u16).to_be_bytes());
        message.extend(body);
        records(&message, 16384)
    }

    fn records(message: &[u8], size: usize) -> Vec<u8> {
        message
            .chunks(size)
            .flat_map(|fragment| {
                let mut record = vec![RECORD_HANDSHAKE, 3, 1];
                record.extend((fragment.len() as u16).to_be_bytes());
                record.extend(fragment);
                record
            })
            .collect()
    }

    fn sni(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![NAME_TYPE_HOST];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend(entry);
        (EXTENSION_SERVER_NAME, data)
    }

    fn named(name: &str) -> Hello {
        Hello::Complete {
            server_name: Some(name.into()),
        }
    }

    #[test]
    fn the_server_name_is_found_among_other_extensions() {
        let bytes = hello(&[
            (10, vec![0, 2, 0, 29]),
            sni(b"DB.Example.com."),
            (16, vec![]),
        ]);
        assert_eq!(parse(&bytes), Ok(named("db.example.com")));
        let without = hello(&[(10, vec![0, 2, 0, 29])]);
        assert_eq!(parse(&without), Ok(Hello::Complete { server_name: None }));
    }

    #[test]
    fn any_cut_before_the_end_is_incomplete_and_records_are_joined() {
        let bytes = hello(&[sni(b"a.example.com")]);
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(Hello::Incomplete), "cut at {cut}");
        }
        // The same message in records of 7 bytes.
        let message = &bytes[5..];
        let split = records(message, 7);
        assert_eq!(parse(&split), Ok(named("a.example.com")));
        for cut in 0..split.len() {
            assert_eq!(parse(&split[..cut]), Ok(Hello::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn what_is_not_a_client_hello_is_refused() {
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse(b"\x16\x02").is_err());
        assert!(parse(&[RECORD_HANDSHAKE, 3, 3, 0, 0]).is_err());
        let mut server_hello = hello(&[sni(b"a.example.com")]);
        server_hello[5] = 2;
        assert!(parse(&server_hello).is_err());
        for bad_name in [&b"a b.example"[..], b"", b"caf\xc3\xa9.example", b"a/b"] {
            assert!(parse(&hello(&[sni(bad_name)])).is_err(), "{bad_name:?}");
        }
        assert!(parse(&hello(&[sni(b"a.example"), sni(b"b.example")])).is_err());
        // An extension whose length runs past the list.
        let mut cut = hello(&[sni(b"a.example.com")]);
        let at = cut.len() - 20;
        cut[at] = 0xff;
        assert!(parse(&cut).is_err());
    }

    use proptest::prelude::*;

    proptest! {
        /// What the first bytes decide stands when more arrive, on hellos cut into records of
        /// any size with any bytes after them, and on bytes that only start like one.
        #[test]
        fn a_decision_on_the_first_bytes_stands(
            name in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,20}){0,3}",
            record in 1usize..300,
            after in proptest::collection::vec(any::<u8>(), 0..40),
            cut in 0usize..600,
        ) {
            let whole = hello(&[(10, vec![0, 2, 0, 29]), sni(name.as_bytes())]);
            let mut bytes = records(&whole[5..], record);
            bytes.extend(&after);
            prop_assert_eq!(parse(&bytes), Ok(named(&name)));
            let cut = cut.min(bytes.len());
            match parse(&bytes[..cut]) {
                Ok(Hello::Incomplete) => {}
                decided => prop_assert_eq!(decided, Ok(named(&name))),
            }
            // The same bytes with one changed: never a panic, and a prefix never contradicts.
            let mut changed = bytes.clone();
            let at = cut % changed.len();
            changed[at] ^= 0x5a;
            match (parse(&changed[..cut]), parse(&changed)) {
                (Ok(Hello::Incomplete), _) => {}
                (Ok(hello), whole) => prop_assert_eq!(whole, Ok(hello)),
                (Err(_), whole) => prop_assert!(whole.is_err()),
            }
        }
    }
}
