//! Any objects a manifest file can hold, translated: a snapshot and warnings, never a panic,
//! and the same objects always give the same routes.
#![no_main]

use std::time::SystemTime;

use gateway::snapshot::Snapshot;
use gateway::store::Store;
use gateway::translate::{ClassSelector, TranslateOptions, translate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok((objects, warnings)) = gateway::source::manifest::parse("fuzz.yaml", text) else {
        return;
    };
    let mut store = Store::default();
    for object in objects {
        store.insert(Some("fuzz.yaml".into()), object);
    }
    let options = TranslateOptions {
        classes: ClassSelector {
            class_name: "xdp-gateway".into(),
            controller: "xdp-gateway.io/ingress".into(),
            serve_classless: true,
        },
        ..TranslateOptions::default()
    };
    let now = SystemTime::UNIX_EPOCH;
    let first = translate(&store, &options, warnings.clone(), &Snapshot::default(), now);
    let second = translate(&store, &options, warnings, &Snapshot::default(), now);
    assert_eq!(first.warnings.len(), second.warnings.len());
});
