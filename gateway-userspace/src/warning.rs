//! Warnings about input the gateway could not use: each names the object, the field and the
//! reason, and where the object came from.

use std::fmt;

use serde::Serialize;

use crate::store::ObjectKey;

/// Something in the input that was left out or changed, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Warning {
    /// The object the warning is about (`ingress default/shop`), or the file where no object
    /// could be read.
    pub object: String,
    /// The manifest file, where the object came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The field at fault, as a path (`spec.rules[0].http.paths[1].path`); empty for the whole
    /// object.
    pub field: String,
    /// What is wrong and what the gateway did about it.
    pub message: String,
    /// Not a mistake in the input, only worth knowing (an object of a kind the gateway does not
    /// read, a Service with no ready endpoint yet): `gateway check` does not fail on it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub notice: bool,
}

impl Warning {
    /// A warning about one field of an object.
    pub fn new(
        key: &ObjectKey,
        source: Option<&str>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object: key.to_string(),
            source: source.map(str::to_string),
            field: field.into(),
            message: message.into(),
            notice: false,
        }
    }

    /// The same, as a notice.
    pub fn as_notice(mut self) -> Self {
        self.notice = true;
        self
    }

    /// A warning about a file as a whole (unreadable, not YAML).
    pub fn file(path: &str, message: impl Into<String>) -> Self {
        Self {
            object: format!("file {path}"),
            source: None,
            field: String::new(),
            message: message.into(),
            notice: false,
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.object)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}
