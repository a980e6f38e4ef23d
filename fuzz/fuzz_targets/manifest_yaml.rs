//! Any text as one YAML document: where the manifest reader reads it, serde_yaml reads the same
//! value (what the manifest reader does not read is left to serde_yaml).
#![no_main]

use gateway::source::yaml::Reader;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

fuzz_target!(|text: &str| {
    let Ok(mut reader) = Reader::new(text) else {
        return;
    };
    let Ok(ours) = Value::deserialize(reader.root()) else {
        return;
    };
    if !reader.at_end() {
        return;
    }
    let theirs = serde_yaml::from_str::<Value>(text);
    assert_eq!(Some(&ours), theirs.as_ref().ok(), "{text:?}: {theirs:?}");
});
