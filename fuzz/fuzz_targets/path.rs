//! Path normalisation: never a panic; a normal form is its own normal form, starts with "/",
//! and has no empty, "." or ".." segment left.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let Ok(normal) = gateway::normalize::path(raw) else {
        return;
    };
    assert!(normal.starts_with('/'));
    assert!(!normal.contains("//"), "{raw:?} -> {normal:?}");
    for segment in normal.split('/').skip(1) {
        assert!(segment != "." && segment != "..", "{raw:?} -> {normal:?}");
    }
    let again = gateway::normalize::path(&normal).expect("a normal form normalises");
    assert_eq!(again, normal);
});
