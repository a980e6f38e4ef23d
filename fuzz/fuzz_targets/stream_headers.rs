//! What layer 4 reads before relaying: the PROXY protocol header and the TLS ClientHello's
//! server name, on any bytes. Never a panic, and a decision made on the first bytes of a
//! connection is never contradicted by the bytes after them (peeking again with more bytes
//! must not change what a connection is).
#![no_main]

use gateway::stream::client_hello::{self, Hello};
use gateway::stream::proxy_protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (cut, bytes) = input;
    let cut = usize::from(cut) % (bytes.len() + 1);
    let (prefix, whole) = (&bytes[..cut], bytes);

    match (proxy_protocol::parse(prefix), proxy_protocol::parse(whole)) {
        (Ok(None), _) => {}
        (Ok(Some(header)), decided) => assert_eq!(decided, Ok(Some(header))),
        (Err(_), decided) => assert!(decided.is_err(), "refused early, accepted later"),
    }

    match (client_hello::parse(prefix), client_hello::parse(whole)) {
        (Ok(Hello::Incomplete), _) => {}
        (Ok(hello), decided) => assert_eq!(decided, Ok(hello)),
        (Err(_), decided) => assert!(decided.is_err(), "refused early, accepted later"),
    }
});
