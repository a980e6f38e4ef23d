//! The HTTP/1 framing reader on any bytes, cut into reads anywhere: never a panic, and the
//! ambiguous head it finds does not depend on where the reads were cut.
#![no_main]

use gateway::proxy::h1_framing::{FramingCheck, FramingReader};
use libfuzzer_sys::fuzz_target;

fn refused(bytes: &[u8], step: usize) -> Result<(), &'static str> {
    let check = FramingCheck::default();
    let mut reader = FramingReader::new(32 * 1024);
    for piece in bytes.chunks(step) {
        reader.feed(piece, &check);
    }
    // The first request that would be refused, if any, among the first 64.
    for _ in 0..64 {
        check.next_request()?;
    }
    Ok(())
}

fuzz_target!(|input: (u8, &[u8])| {
    let (step, bytes) = input;
    let step = usize::from(step.max(1));
    assert_eq!(refused(bytes, step), refused(bytes, bytes.len().max(1)));
});
