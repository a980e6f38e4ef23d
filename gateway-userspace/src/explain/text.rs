//! An explanation as a person reads it in a terminal.

use std::fmt::{self, Write};

use super::{Explanation, Stage, Verdict};

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Listener => "listener",
            Self::FastPath => "fast path",
            Self::Host => "host",
            Self::Rule => "rule",
            Self::Canary => "canary",
            Self::Split => "split",
            Self::Policy => "policy",
            Self::Endpoint => "endpoint",
        }
    }
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chosen => "chosen",
            Self::Lost => "lost",
            Self::NoMatch => "no match",
            Self::NotTried => "not tried",
            Self::Applies => "applies",
            Self::Answers => "answers",
            Self::Drops => "drops",
            Self::Note => "note",
        }
    }
}

impl fmt::Display for Explanation {
    /// One line per step (stage, verdict, subject) with its reason below, then the outcome.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        writeln!(out, "{}", self.request)?;
        for step in &self.steps {
            writeln!(
                out,
                "  {:<10} {:<10} {}",
                step.stage.as_str(),
                step.verdict.as_str(),
                step.subject
            )?;
            writeln!(out, "  {:<10} {:<10} {}", "", "", step.reason)?;
        }
        match self.outcome.status {
            Some(status) => write!(out, "=> {status}: {}", self.outcome.summary)?,
            None => write!(out, "=> {}", self.outcome.summary)?,
        }
        f.write_str(&out)
    }
}
