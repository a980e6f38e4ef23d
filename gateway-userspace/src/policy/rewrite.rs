//! `rewrite-target` and regular-expression paths (`use-regex`), compiled once per snapshot with
//! the `regex` crate: linear time whatever the pattern or the request, with size limits.

use regex::{Captures, Regex, RegexBuilder};

/// Compiled programs larger than this are refused (a pattern like `(a{1000}){1000}`).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Nesting deeper than this is refused.
const REGEX_NEST_LIMIT: u32 = 32;

/// The case-insensitive regular expression of a path under `use-regex`, anchored at the start
/// as ingress-nginx's `location ~* "^<path>"`, and at the end too for `Exact`.
pub fn path_regex(path: &str, exact: bool) -> Result<Regex, String> {
    let anchored = if exact {
        format!("^(?:{path})$")
    } else {
        format!("^{path}")
    };
    RegexBuilder::new(&anchored)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => {
                "the regular expression is too large once compiled".to_string()
            }
            other => format!("not a valid regular expression: {other}"),
        })
}

/// The path the backend sees: literal text and `$1`..`$9` from the route's path expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Capture(usize),
}

impl Rewrite {
    /// Parses a target such as `/$2` or `/api/$1/items`.
    pub fn parse(target: &str) -> Result<Self, String> {
        if !target.starts_with('/') && !target.starts_with('$') {
            return Err("must be a path (start with \"/\" or a capture such as $1)".into());
        }
        if let Some(bad) = target
            .chars()
            .find(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '{' | '}' | ';' | '#'))
        {
            return Err(format!("{bad:?} is not allowed in a rewrite target"));
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = target.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' {
                match chars.next() {
                    Some(d @ '1'..='9') => {
                        if !text.is_empty() {
                            parts.push(Part::Text(std::mem::take(&mut text)));
                        }
                        parts.push(Part::Capture(d as usize - '0' as usize));
                    }
                    other => {
                        return Err(format!(
                            "\"${}\" is not a capture: use $1 to $9",
                            other.map(String::from).unwrap_or_default()
                        ));
                    }
                }
            } else {
                text.push(c);
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    /// The highest capture the target uses (0 for none).
    pub fn highest_capture(&self) -> usize {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Capture(n) => Some(*n),
                Part::Text(_) => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The rewritten path and query: captures from `captures` (unmatched groups are empty), the
    /// request's query appended unless the target has its own (as nginx's `rewrite`).
    pub fn apply(&self, captures: Option<&Captures<'_>>, query: Option<&str>) -> String {
        let mut path = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => path.push_str(text),
                Part::Capture(n) => {
                    if let Some(group) = captures.and_then(|c| c.get(*n)) {
                        path.push_str(group.as_str());
                    }
                }
            }
        }
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        match query {
            Some(query) if !path.contains('?') => format!("{path}?{query}"),
            _ => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_fill_the_target_and_the_query_follows() {
        let regex = path_regex("/something(/|$)(.*)", false).unwrap();
        let rewrite = Rewrite::parse("/$2").unwrap();
        assert_eq!(rewrite.highest_capture(), 2);
        let captures = regex.captures("/something/new/a").unwrap();
        assert_eq!(rewrite.apply(Some(&captures), Some("x=1")), "/new/a?x=1");
        let captures = regex.captures("/something").unwrap();
        assert_eq!(rewrite.apply(Some(&captures), None), "/");
        assert!(regex.is_match("/SOMETHING/x"), "case-insensitive as ~*");
        let own_query = Rewrite::parse("/v2?from=old").unwrap();
        assert_eq!(own_query.apply(None, Some("x=1")), "/v2?from=old");
    }

    #[test]
    fn bad_targets_and_patterns_are_refused() {
        for bad in [
            "relative", "/a b", "/$0", "/$x", "/a;b", "/a{b}", "/a\"b", "/$",
        ] {
            assert!(Rewrite::parse(bad).is_err(), "{bad}");
        }
        assert!(path_regex("/(unclosed", false).is_err());
        let huge = path_regex("/(a{1000}){1000}", false).unwrap_err();
        assert!(huge.contains("too large"), "{huge}");
        assert!(path_regex(&"(".repeat(100), false).is_err());
    }

    #[test]
    fn pathological_patterns_stay_linear() {
        // 2^50000 steps for a backtracking engine (this test would never end); one pass here.
        let regex = path_regex("/(a+)+$", false).unwrap();
        let input = format!("/{}!", "a".repeat(50_000));
        assert!(!regex.is_match(&input));
    }
}
