//! Reads Go composite literals (`http.ExpectedResponse{Request: http.Request{Path: "/"}}`) out
//! of the Gateway API conformance suite's sources, so that its expectations are checked as
//! written upstream rather than copied by hand. Only what those literals use is understood:
//! strings, integers, booleans, named constants and nested composites; anything else (a call, an
//! expression) reads as `Value::Other`.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    /// A name: `true`, `ns`, `confsuite.InfraBackendServiceNameV1`.
    Name(String),
    /// `Type{...}` (the type left out in lists): keyed fields or plain elements.
    Composite(Vec<(Option<String>, Value)>),
    Other,
}

impl Value {
    /// A field of a composite.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Composite(fields) => fields
                .iter()
                .find(|(key, _)| key.as_deref() == Some(name))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// The elements of a list composite, or the entries of a map composite.
    pub fn entries(&self) -> Vec<(Option<&str>, &Value)> {
        match self {
            Value::Composite(fields) => fields.iter().map(|(k, v)| (k.as_deref(), v)).collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Str(String),
    Int(i64),
    Name(String),
    Punct(char),
}

fn tokenize(source: &str) -> Vec<Token> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if source[i..].starts_with("//") {
            i += source[i..].find('\n').unwrap_or(source.len() - i);
        } else if source[i..].starts_with("/*") {
            i += source[i..]
                .find("*/")
                .map_or(source.len() - i, |end| end + 2);
        } else if c == '"' {
            let mut text = String::new();
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                    text.push(match bytes[i] {
                        b'n' => '\n',
                        b't' => '\t',
                        other => other as char,
                    });
                } else {
                    let ch = source[i..].chars().next().unwrap_or('?');
                    text.push(ch);
                    i += ch.len_utf8() - 1;
                }
                i += 1;
            }
            i += 1;
            tokens.push(Token::Str(text));
        } else if c == '`' {
            let end = source[i + 1..]
                .find('`')
                .map_or(source.len(), |e| i + 1 + e);
            tokens.push(Token::Str(source[i + 1..end].to_string()));
            i = end + 1;
        } else if c.is_ascii_digit() {
            let end = source[i..]
                .find(|ch: char| !ch.is_ascii_alphanumeric() && ch != '.' && ch != '_')
                .map_or(source.len(), |e| i + e);
            tokens.push(match source[i..end].parse() {
                Ok(n) => Token::Int(n),
                Err(_) => Token::Name(source[i..end].to_string()),
            });
            i = end;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = source[i..]
                .find(|ch: char| !ch.is_ascii_alphanumeric() && ch != '_' && ch != '.')
                .map_or(source.len(), |e| i + e);
            tokens.push(Token::Name(source[i..end].to_string()));
            i = end;
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn is(&self, punct: char) -> bool {
        self.peek() == Some(&Token::Punct(punct))
    }

    /// One value, up to (not including) the `,` or `}` that ends it.
    fn value(&mut self) -> Value {
        if self.is('{') {
            return self.composite();
        }
        let start = self.at;
        let mut depth = 0usize;
        while let Some(token) = self.peek() {
            match token {
                Token::Punct('{') if depth == 0 => return self.composite(),
                Token::Punct('(' | '[') => depth += 1,
                Token::Punct(')' | ']') => depth = depth.saturating_sub(1),
                Token::Punct(',' | '}') if depth == 0 => break,
                _ => {}
            }
            self.at += 1;
        }
        match &self.tokens[start..self.at] {
            [Token::Str(s)] => Value::Str(s.clone()),
            [Token::Int(n)] => Value::Int(*n),
            [Token::Name(n)] => Value::Name(n.clone()),
            _ => Value::Other,
        }
    }

    /// `{ [key:] value, ... }`, from its opening brace.
    fn composite(&mut self) -> Value {
        self.at += 1;
        let mut fields = Vec::new();
        while self.peek().is_some() && !self.is('}') {
            let keyed = matches!(self.tokens.get(self.at + 1), Some(Token::Punct(':')));
            let key = match (keyed, self.peek()) {
                (true, Some(Token::Name(k) | Token::Str(k))) => Some(k.clone()),
                _ => None,
            };
            if keyed {
                self.at += 2;
            }
            fields.push((key, self.value()));
            if self.is(',') {
                self.at += 1;
            }
        }
        self.at += 1;
        Value::Composite(fields)
    }
}

/// Every `TYPE{...}` literal in `source`, in order; a `[]TYPE{...}` list gives its elements.
pub fn literals_of(source: &str, type_name: &str) -> Vec<Value> {
    let mut parser = Parser {
        tokens: tokenize(source),
        at: 0,
    };
    let mut found = Vec::new();
    while parser.at + 1 < parser.tokens.len() {
        let is_type = parser.tokens[parser.at] == Token::Name(type_name.to_string())
            && parser.tokens[parser.at + 1] == Token::Punct('{');
        if !is_type {
            parser.at += 1;
            continue;
        }
        let list = parser.at >= 2
            && parser.tokens[parser.at - 2] == Token::Punct('[')
            && parser.tokens[parser.at - 1] == Token::Punct(']');
        parser.at += 1;
        let value = parser.composite();
        if list {
            found.extend(value.entries().into_iter().map(|(_, v)| v.clone()));
        } else {
            found.push(value);
        }
    }
    found
}

/// A `map[string]string{...}` as a map; `None` where a key or value is not a literal string.
pub fn string_map(
    value: &Value,
    constants: &BTreeMap<&str, &str>,
) -> Option<BTreeMap<String, String>> {
    value
        .entries()
        .into_iter()
        .map(|(key, value)| Some((key?.to_string(), text(value, constants)?)))
        .collect()
}

/// A string literal, or a named string constant.
pub fn text(value: &Value, constants: &BTreeMap<&str, &str>) -> Option<String> {
    match value {
        Value::Str(s) => Some(s.clone()),
        Value::Name(name) => constants.get(name.as_str()).map(|s| s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keyed_fields_maps_and_pointers_are_read() {
        let source = r#"
            testCases := []http.ExpectedResponse{{
                Request:   http.Request{Path: "/", Headers: map[string]string{"Version": "one"}},
                Backend:   confsuite.InfraBackendServiceNameV1, // a comment
                Response:  http.Response{StatusCodes: []int{200, 204}},
                RedirectRequest: &roundtripper.RedirectRequest{Port: "8083"},
                Other: fmt.Sprintf("%d", f(1, 2)),
            }, {
                Request: http.Request{Path: `/raw`},
            }}
            single := http.ExpectedResponse{Namespace: ns}
        "#;
        let found = literals_of(source, "http.ExpectedResponse");
        assert_eq!(found.len(), 3);
        let first = &found[0];
        let request = first.field("Request").unwrap();
        assert_eq!(request.field("Path"), Some(&Value::Str("/".into())));
        let constants = BTreeMap::new();
        let headers = string_map(request.field("Headers").unwrap(), &constants).unwrap();
        assert_eq!(headers["Version"], "one");
        let codes: Vec<_> = first
            .field("Response")
            .unwrap()
            .field("StatusCodes")
            .unwrap()
            .entries();
        assert_eq!(codes.len(), 2);
        assert_eq!(
            first.field("RedirectRequest").unwrap().field("Port"),
            Some(&Value::Str("8083".into()))
        );
        assert_eq!(first.field("Other"), Some(&Value::Other));
        assert_eq!(
            found[1].field("Request").unwrap().field("Path"),
            Some(&Value::Str("/raw".into()))
        );
        assert_eq!(found[2].field("Namespace"), Some(&Value::Name("ns".into())));
    }
}
