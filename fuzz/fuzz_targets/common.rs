//! What the translate targets share: a manifest text into a store, and the options of a
//! gateway that serves every Ingress of its class and those without one.

use gateway::store::Store;
use gateway::translate::{ClassSelector, TranslateOptions};
use gateway::warning::Warning;

/// The objects of `text` in a store, with the warnings of reading it.
pub fn store_of(text: &str) -> Result<(Store, Vec<Warning>), Warning> {
    let (objects, warnings) = gateway::source::manifest::parse("fuzz.yaml", text)?;
    let mut store = Store::default();
    for object in objects {
        store.insert(Some("fuzz.yaml".into()), object);
    }
    Ok((store, warnings))
}

pub fn options() -> TranslateOptions {
    TranslateOptions {
        classes: ClassSelector {
            class_name: "xdp-gateway".into(),
            controller: "xdp-gateway.io/ingress".into(),
            serve_classless: true,
        },
        ..TranslateOptions::default()
    }
}
