//! Any text as a manifest file: parsed or refused with a warning, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = gateway::source::manifest::parse("fuzz.yaml", text);
});
