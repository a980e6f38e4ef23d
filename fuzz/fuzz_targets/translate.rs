//! Any objects a manifest file can hold, translated: a snapshot and warnings, never a panic,
//! and the same objects always give the same routes.
#![no_main]

use std::time::SystemTime;

use gateway::snapshot::Snapshot;
use gateway::translate::translate;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|text: &str| {
    let Ok((store, warnings)) = common::store_of(text) else {
        return;
    };
    let options = common::options();
    let now = SystemTime::UNIX_EPOCH;
    let first = translate(&store, &options, warnings.clone(), &Snapshot::default(), now);
    let second = translate(&store, &options, warnings, &Snapshot::default(), now);
    assert_eq!(first.warnings.len(), second.warnings.len());
});
