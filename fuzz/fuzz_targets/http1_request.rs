//! The HTTP/1 server's reading of a client's byte stream (request heads, then bodies by their
//! framing), on any bytes cut into reads anywhere: never a panic, and the messages it finds
//! (or where it refuses the stream) do not depend on where the reads were cut.
#![no_main]

use gateway::proxy::h1_server::head::read_messages;
use gateway::proxy::limits::ClientLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (step, bytes) = input;
    let step = usize::from(step.max(1));
    let limits = ClientLimits::default();
    assert_eq!(
        read_messages(bytes.chunks(step), &limits),
        read_messages(bytes.chunks(bytes.len().max(1)), &limits)
    );
});
