//! The HTTP/2 flood meter on any bytes after a valid preface, cut into reads anywhere: never a
//! panic, and the same verdict whatever the cuts.
#![no_main]

use std::time::Instant;

use gateway::proxy::h2_flood::{FloodMeter, Verdict};
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn verdict(bytes: &[u8], step: usize, now: Instant) -> Verdict {
    let mut meter = FloodMeter::default();
    let mut verdict = Verdict::Fine;
    for piece in bytes.chunks(step) {
        verdict = meter.feed_at(piece, now);
        if matches!(verdict, Verdict::Flood(_)) {
            break;
        }
    }
    verdict
}

fuzz_target!(|input: (u8, &[u8])| {
    let (step, frames) = input;
    let bytes = [PREFACE, frames].concat();
    // One instant for both runs: the budget refills with time, the frames are the same.
    let now = Instant::now();
    let whole = verdict(&bytes, bytes.len(), now);
    let pieces = verdict(&bytes, usize::from(step.max(1)), now);
    assert_eq!(whole, pieces);
});
