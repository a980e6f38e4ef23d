//! A YAML reader for the shape Kubernetes manifests take, deserializing straight into the typed
//! objects: block mappings and sequences (sequences also at their key's indentation), flow
//! collections on one line, plain, quoted and block scalars, comments. serde_yaml loads every
//! event of a document before deserializing the first field; for one Ingress with 10,000 rules
//! that was 30 MB of events and most of the gateway's start.
//!
//! It reads a strict subset of YAML and, for what it accepts, gives what serde_yaml gives (the
//! tests compare both on every manifest of the repository and on mutations of them). Everything
//! else (anchors, aliases, tags, multi-line plain or quoted scalars, flow collections over several
//! lines, tabs, floats, hexadecimal integers) is an error here, and the caller reads the file
//! through serde_yaml instead, which also says what is wrong and where.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, Visitor};

/// Why a document is not read here (it is then read through serde_yaml).
#[derive(Debug)]
pub struct Unsupported(String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

impl de::Error for Unsupported {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self(message.to_string())
    }
}

type Result<T> = std::result::Result<T, Unsupported>;

fn unsupported<T>(what: &str) -> Result<T> {
    Err(Unsupported(what.to_string()))
}

/// Collections nested deeper than this are left to serde_yaml (which has a limit of its own).
const MAX_DEPTH: usize = 64;
/// libyaml does not look further than this for the `:` of a key.
const MAX_KEY_LENGTH: usize = 1024;

/// One document (a block mapping at column 0, optionally after a `---` line).
pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    line_start: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// Checks the characters (libyaml refuses control characters and reads a few Unicode
    /// line breaks as such) and moves to the document's first key.
    pub fn new(text: &'a str) -> Result<Self> {
        check_characters(text)?;
        let mut reader = Self {
            text,
            pos: 0,
            line_start: 0,
            depth: 0,
        };
        if reader.next_content()? == Some(0) && reader.rest().starts_with("---") {
            if !is_blank_or_end(reader.byte_at(reader.pos + 3)) {
                return unsupported("content right after `---`");
            }
            reader.pos += 3;
            reader.end_of_line()?;
        }
        if reader.next_content()? != Some(0) || reader.at_dash() {
            return unsupported("a document that is not a block mapping at column 0");
        }
        Ok(reader)
    }

    /// The document's top-level mapping.
    pub fn root(&mut self) -> NodeDeserializer<'_, 'a> {
        NodeDeserializer {
            reader: self,
            node: Node::BlockMapping { column: 0 },
        }
    }

    /// Whether all of the document was read (the root mapping's visitor may stop early).
    pub fn at_end(&mut self) -> bool {
        matches!(self.next_content(), Ok(None))
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn byte_at(&self, index: usize) -> Option<u8> {
        self.text.as_bytes().get(index).copied()
    }

    fn peek(&self) -> Option<u8> {
        self.byte_at(self.pos)
    }

    fn column(&self) -> usize {
        self.pos - self.line_start
    }

    /// Whether a `#` at `index` starts a comment (it must follow a space or start the line).
    fn starts_comment(&self, index: usize) -> bool {
        self.byte_at(index) == Some(b'#')
            && (index == self.line_start || self.byte_at(index - 1) == Some(b' '))
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn skip_to_line_end(&mut self) {
        self.pos = self
            .rest()
            .find(['\r', '\n'])
            .map_or(self.text.len(), |i| self.pos + i);
    }

    /// Past the line break at `pos` (`\r` is always followed by `\n`: checked up front).
    fn skip_line_break(&mut self) {
        match self.peek() {
            Some(b'\r') => self.pos += 2,
            Some(b'\n') => self.pos += 1,
            _ => return,
        }
        self.line_start = self.pos;
    }

    /// After a value: nothing but spaces and a comment is left on the line.
    fn end_of_line(&mut self) -> Result<()> {
        self.skip_spaces();
        if self.starts_comment(self.pos) {
            self.skip_to_line_end();
        }
        match self.peek() {
            None | Some(b'\r' | b'\n') => Ok(()),
            Some(b'\t') => unsupported("a tab"),
            Some(_) => unsupported("more after a value on its line"),
        }
    }

    /// Moves to the first character of the next line with content (neither blank nor a
    /// comment), or stays at the content the reader is at; its column, or `None` at the end.
    fn next_content(&mut self) -> Result<Option<usize>> {
        loop {
            self.skip_spaces();
            if self.starts_comment(self.pos) {
                self.skip_to_line_end();
            }
            match self.peek() {
                None => return Ok(None),
                Some(b'\r' | b'\n') => self.skip_line_break(),
                Some(b'\t') => return unsupported("a tab"),
                Some(_) => return Ok(Some(self.column())),
            }
        }
    }

    /// Whether the reader is at a block sequence's `-` (followed by a space or the line's end).
    fn at_dash(&self) -> bool {
        self.peek() == Some(b'-') && is_blank_or_end(self.byte_at(self.pos + 1))
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return unsupported("collections nested too deep");
        }
        Ok(())
    }

    /// The key of a block mapping entry at the reader and the position after its `:`; `None`
    /// when the line is not `key: ...`.
    fn scan_key(&self) -> Result<Option<(Scalar<'a>, usize)>> {
        // `---` and `...` at the start of a line end the document.
        if self.column() == 0
            && (self.rest().starts_with("---") || self.rest().starts_with("..."))
            && is_blank_or_end(self.byte_at(self.pos + 3))
        {
            return Ok(None);
        }
        let (key, mut end) = match self.peek() {
            Some(quote @ (b'"' | b'\'')) => self.quoted(quote)?,
            _ if !self.plain_may_start(self.pos) => return Ok(None),
            _ => {
                let mut end = self.pos;
                loop {
                    match self.byte_at(end) {
                        None | Some(b'\r' | b'\n') => return Ok(None),
                        Some(b':') if is_blank_or_end(self.byte_at(end + 1)) => break,
                        Some(b'\t') => return unsupported("a tab"),
                        _ if self.starts_comment(end) => return Ok(None),
                        _ => end += 1,
                    }
                }
                let key = self.text[self.pos..end].trim_end_matches(' ');
                (Scalar::plain(key), end)
            }
        };
        while self.byte_at(end) == Some(b' ') {
            end += 1;
        }
        if end - self.pos > MAX_KEY_LENGTH {
            return unsupported("a key longer than 1024 bytes");
        }
        if self.byte_at(end) == Some(b':') && is_blank_or_end(self.byte_at(end + 1)) {
            Ok(Some((key, end + 1)))
        } else {
            Ok(None)
        }
    }

    /// Whether a plain scalar may start at `index` (not at an indicator). `-`, `?` and `:`
    /// followed by a space are indicators; `?` and `:` before anything else are left to
    /// serde_yaml too.
    fn plain_may_start(&self, index: usize) -> bool {
        match self.byte_at(index) {
            None | Some(b' ' | b'\t' | b'\r' | b'\n') => false,
            Some(b'-') => !is_blank_or_end(self.byte_at(index + 1)),
            Some(
                b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|'
                | b'>' | b'\'' | b'"' | b'%' | b'@' | b'`',
            ) => false,
            Some(_) => true,
        }
    }

    /// A quoted scalar on one line starting at the reader; the position after its closing
    /// quote.
    fn quoted(&self, quote: u8) -> Result<(Scalar<'a>, usize)> {
        let bytes = self.text.as_bytes();
        let start = self.pos + 1;
        let mut owned: Option<String> = None;
        let mut run = start;
        let mut i = start;
        loop {
            match bytes.get(i) {
                None | Some(b'\r' | b'\n') => return unsupported("a quoted scalar over lines"),
                Some(&b) if b == quote => {
                    if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                        let text = owned.get_or_insert_with(String::new);
                        text.push_str(&self.text[run..=i]);
                        i += 2;
                        run = i;
                        continue;
                    }
                    break;
                }
                Some(b'\\') if quote == b'"' => {
                    let text = owned.get_or_insert_with(String::new);
                    text.push_str(&self.text[run..i]);
                    let (unescaped, length) = unescape(&bytes[i + 1..])?;
                    text.push(unescaped);
                    i += 1 + length;
                    run = i;
                }
                Some(_) => i += 1,
            }
        }
        let text = match owned {
            Some(mut text) => {
                text.push_str(&self.text[run..i]);
                Cow::Owned(text)
            }
            None => Cow::Borrowed(&self.text[start..i]),
        };
        Ok((Scalar { text, plain: false }, i + 1))
    }

    fn read_quoted(&mut self, quote: u8) -> Result<Scalar<'a>> {
        let (scalar, end) = self.quoted(quote)?;
        self.pos = end;
        Ok(scalar)
    }

    /// A plain scalar in block context: the rest of the line up to a comment.
    fn block_plain(&mut self) -> Result<Scalar<'a>> {
        let start = self.pos;
        loop {
            match self.peek() {
                None | Some(b'\r' | b'\n') => break,
                Some(b':') if is_blank_or_end(self.byte_at(self.pos + 1)) => {
                    return unsupported("`: ` in a plain scalar");
                }
                Some(b'\t') => return unsupported("a tab"),
                _ if self.starts_comment(self.pos) => break,
                _ => self.pos += 1,
            }
        }
        let text = self.text[start..self.pos].trim_end_matches(' ');
        self.end_of_line()?;
        Ok(Scalar::plain(text))
    }

    /// A plain scalar in a flow collection: up to `,`, a bracket, or `: `.
    fn flow_plain(&mut self) -> Result<Scalar<'a>> {
        if !self.plain_may_start(self.pos) {
            return unsupported("an indicator at the start of a flow scalar");
        }
        let start = self.pos;
        loop {
            match self.peek() {
                None | Some(b'\r' | b'\n' | b',' | b'[' | b']' | b'{' | b'}') => break,
                Some(b':') if is_blank_or_end(self.byte_at(self.pos + 1)) => break,
                Some(b':') => return unsupported("`:` inside a flow scalar"),
                Some(b'\t') => return unsupported("a tab"),
                _ if self.starts_comment(self.pos) => return unsupported("a comment in a flow"),
                _ => self.pos += 1,
            }
        }
        Ok(Scalar::plain(
            self.text[start..self.pos].trim_end_matches(' '),
        ))
    }

    /// A literal (`|`) or folded (`>`) block scalar, the reader at its indicator; `parent` is
    /// the column of the collection it is in (its lines are indented further).
    fn block_scalar(&mut self, parent: usize) -> Result<Scalar<'a>> {
        let folded = self.peek() == Some(b'>');
        self.pos += 1;
        let chomping = match self.peek() {
            Some(b'-') => Chomping::Strip,
            Some(b'+') => Chomping::Keep,
            _ => Chomping::Clip,
        };
        if chomping != Chomping::Clip {
            self.pos += 1;
        }
        if !matches!(self.peek(), None | Some(b' ' | b'\r' | b'\n')) {
            return unsupported("a block scalar header other than `|`, `>`, `-` and `+`");
        }
        self.end_of_line()?;
        self.skip_line_break();
        let mut text = String::new();
        let mut indent = None;
        // Empty lines since the last line with content.
        let mut empty_lines = 0;
        while self.pos < self.text.len() {
            let spaces = self.rest().bytes().take_while(|b| *b == b' ').count();
            let content = self.pos + spaces;
            if matches!(self.byte_at(content), None | Some(b'\r' | b'\n')) {
                match indent {
                    Some(indent) if spaces <= indent && content < self.text.len() => {}
                    _ => return unsupported("a block scalar's unusual empty line"),
                }
                empty_lines += 1;
                self.pos = content;
                self.skip_line_break();
                continue;
            }
            let first = indent.is_none();
            let indent = *indent.get_or_insert(spaces);
            if spaces < indent {
                break;
            }
            if indent <= parent {
                return unsupported("an empty block scalar");
            }
            self.pos += indent;
            let line_start = self.pos;
            self.skip_to_line_end();
            let line = &self.text[line_start..self.pos];
            if self.pos == self.text.len() {
                return unsupported("a block scalar without a line break at the end");
            }
            self.skip_line_break();
            if line.starts_with('\t') {
                return unsupported("a tab after a block scalar's indentation");
            }
            if folded && line.starts_with(' ') {
                return unsupported("a more-indented line in a folded scalar");
            }
            if !first {
                // The previous line's break: kept in a literal scalar, folded into a space
                // between two lines of a folded one (where only empty lines make breaks).
                if !folded {
                    text.push('\n');
                } else if empty_lines == 0 {
                    text.push(' ');
                }
                (0..empty_lines).for_each(|_| text.push('\n'));
            }
            text.push_str(line);
            empty_lines = 0;
        }
        if indent.is_none() {
            return unsupported("an empty block scalar");
        }
        match chomping {
            Chomping::Strip => {}
            Chomping::Clip => text.push('\n'),
            Chomping::Keep => (0..=empty_lines).for_each(|_| text.push('\n')),
        }
        Ok(Scalar {
            text: Cow::Owned(text),
            plain: false,
        })
    }

    /// The node after a block mapping's `:` (`item` false) or a block sequence's `-` (`item`
    /// true), in a collection at column `parent`.
    fn block_node(&mut self, parent: usize, item: bool) -> Result<Node<'a>> {
        self.skip_spaces();
        if self.starts_comment(self.pos) {
            self.skip_to_line_end();
        }
        match self.peek() {
            None | Some(b'\r' | b'\n') => {
                // The node is on the lines below, or empty.
                let column = self.next_content()?;
                return Ok(match column {
                    Some(column) if column > parent => {
                        if self.at_dash() {
                            Node::BlockSequence { column }
                        } else {
                            Node::BlockMapping { column }
                        }
                    }
                    // A sequence may stand at its key's indentation.
                    Some(column) if column == parent && !item && self.at_dash() => {
                        Node::BlockSequence { column }
                    }
                    _ => Node::Scalar(Scalar::plain("")),
                });
            }
            _ => {}
        }
        let column = self.column();
        Ok(match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                Node::FlowMapping { outermost: true }
            }
            Some(b'[') => {
                self.pos += 1;
                Node::FlowSequence { outermost: true }
            }
            Some(b'|' | b'>') => Node::Scalar(self.block_scalar(parent)?),
            _ if item && self.at_dash() => Node::BlockSequence { column },
            _ if item && self.scan_key()?.is_some() => Node::BlockMapping { column },
            Some(quote @ (b'"' | b'\'')) => {
                let scalar = self.read_quoted(quote)?;
                self.end_of_line()?;
                Node::Scalar(scalar)
            }
            _ if self.plain_may_start(self.pos) => Node::Scalar(self.block_plain()?),
            _ => return unsupported("an anchor, alias, tag or other indicator"),
        })
    }

    /// A node inside a flow collection.
    fn flow_node(&mut self) -> Result<Node<'a>> {
        self.skip_spaces();
        Ok(match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                Node::FlowMapping { outermost: false }
            }
            Some(b'[') => {
                self.pos += 1;
                Node::FlowSequence { outermost: false }
            }
            Some(quote @ (b'"' | b'\'')) => Node::Scalar(self.read_quoted(quote)?),
            _ => Node::Scalar(self.flow_plain()?),
        })
    }

    /// At the next entry of a block collection at `column` (a key, or a `-` in a sequence);
    /// false at its end.
    fn block_entry(&mut self, column: usize, sequence: bool) -> Result<bool> {
        match self.next_content()? {
            Some(at) if at > column => unsupported("more indentation than the entries above"),
            // A line at a mapping's column must be a key (`block_key` says if it is not).
            Some(at) if at == column => Ok(!sequence || self.at_dash()),
            _ => Ok(false),
        }
    }

    /// A block mapping's key and its `:`.
    fn block_key(&mut self) -> Result<Scalar<'a>> {
        let Some((key, after)) = self.scan_key()? else {
            return unsupported("a line that is not `key: value` in a mapping");
        };
        self.pos = after;
        Ok(key)
    }

    /// A flow mapping's key and its `:` (a plain key ends at `: `; a quoted one may be
    /// followed by `:` right away).
    fn flow_key(&mut self) -> Result<Scalar<'a>> {
        let Node::Scalar(key) = self.flow_node()? else {
            return unsupported("a collection as a key");
        };
        self.skip_spaces();
        if self.peek() != Some(b':') {
            return unsupported("a flow mapping entry without `: `");
        }
        self.pos += 1;
        Ok(key)
    }

    fn flow_value(&mut self) -> Result<Node<'a>> {
        self.skip_spaces();
        if matches!(self.peek(), None | Some(b',' | b'}' | b'\r' | b'\n')) {
            return unsupported("an empty value in a flow mapping");
        }
        self.flow_node()
    }

    fn flow_item(&mut self) -> Result<Node<'a>> {
        let node = self.flow_node()?;
        if let Node::Scalar(_) = node {
            self.skip_spaces();
            if self.peek() == Some(b':') {
                return unsupported("a mapping inside a flow sequence");
            }
        }
        Ok(node)
    }

    /// Past the `,` between entries of a flow collection, or at its end (`closing`) and past
    /// it; whether there is another entry.
    fn flow_entry(&mut self, first: bool, closing: u8, outermost: bool) -> Result<bool> {
        self.skip_spaces();
        if self.peek() == Some(closing) {
            self.pos += 1;
            if outermost {
                self.end_of_line()?;
            }
            return Ok(false);
        }
        if !first {
            if self.peek() != Some(b',') {
                return unsupported("a flow collection not closed on its line");
            }
            self.pos += 1;
            self.skip_spaces();
            if matches!(self.peek(), Some(b',' | b']' | b'}')) {
                return unsupported("an empty entry in a flow collection");
            }
        }
        Ok(true)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Chomping {
    Strip,
    Clip,
    Keep,
}

fn is_blank_or_end(byte: Option<u8>) -> bool {
    matches!(byte, None | Some(b' ' | b'\r' | b'\n'))
}

/// The escape after a `\` in a double-quoted scalar and its length.
fn unescape(bytes: &[u8]) -> Result<(char, usize)> {
    let hex = |digits: usize| -> Result<(char, usize)> {
        let code = bytes
            .get(1..=digits)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .and_then(char::from_u32);
        match code {
            Some(c) => Ok((c, 1 + digits)),
            None => unsupported("a bad escape"),
        }
    };
    let simple = match bytes.first() {
        Some(b'0') => '\0',
        Some(b'a') => '\x07',
        Some(b'b') => '\x08',
        Some(b't' | b'\t') => '\t',
        Some(b'n') => '\n',
        Some(b'v') => '\x0b',
        Some(b'f') => '\x0c',
        Some(b'r') => '\r',
        Some(b'e') => '\x1b',
        Some(b' ') => ' ',
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'x') => return hex(2),
        Some(b'u') => return hex(4),
        Some(b'U') => return hex(8),
        _ => return unsupported("an escape left to serde_yaml"),
    };
    Ok((simple, 1))
}

/// libyaml refuses control characters (other than tab and line breaks) and non-characters, and
/// reads `\r`, U+0085, U+2028 and U+2029 as line breaks: those are left to it.
fn check_characters(text: &str) -> Result<()> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let ok = match b {
            b'\t' | b'\n' | 0x20..=0x7e => true,
            b'\r' => bytes.get(i + 1) == Some(&b'\n'),
            0x80.. => {
                // Only the first byte of a character is looked at.
                if b & 0xc0 == 0x80 {
                    continue;
                }
                let c = text[i..].chars().next().unwrap_or('\0');
                !matches!(
                    c,
                    '\u{80}'
                        ..='\u{9f}'
                            | '\u{2028}'
                            | '\u{2029}'
                            | '\u{feff}'
                            | '\u{fffe}'
                            | '\u{ffff}'
                )
            }
            _ => false,
        };
        if !ok {
            return unsupported("a control character or line break left to serde_yaml");
        }
    }
    Ok(())
}

/// A scalar's text; plain scalars are resolved (null, booleans, integers) by what asks.
#[derive(Clone)]
struct Scalar<'a> {
    text: Cow<'a, str>,
    plain: bool,
}

impl<'a> Scalar<'a> {
    fn plain(text: &'a str) -> Self {
        Self {
            text: Cow::Borrowed(text),
            plain: true,
        }
    }

    fn is_null(&self) -> bool {
        self.plain && matches!(&*self.text, "" | "~" | "null" | "Null" | "NULL")
    }

    fn boolean(&self) -> Option<bool> {
        match &*self.text {
            "true" | "True" | "TRUE" if self.plain => Some(true),
            "false" | "False" | "FALSE" if self.plain => Some(false),
            _ => None,
        }
    }

    /// A plain decimal integer without leading zeros (serde_yaml reads `+1`, `0x1f`, `0o17`
    /// and `1.5` too: those are left to it).
    fn integer(&self) -> Option<i128> {
        let digits = self.text.strip_prefix('-').unwrap_or(&self.text);
        let well_formed = self.plain
            && !digits.is_empty()
            && digits.len() <= 20
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        well_formed.then(|| self.text.parse().ok()).flatten()
    }

    /// Whether serde_yaml might read this plain scalar as a number other than a plain integer
    /// (a float as Rust reads one, `.inf`, `.nan`, hexadecimal, octal, binary, a sign).
    fn may_be_number(&self) -> bool {
        let unsigned = self.text.trim_start_matches(['+', '-']);
        self.plain
            && self
                .text
                .starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
            && (self.text.parse::<f64>().is_ok()
                || unsigned.starts_with(['.', '+', '-'])
                || ["0x", "0o", "0b"].iter().any(|p| unsigned.starts_with(p)))
    }

    fn visit_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        match self.text {
            Cow::Borrowed(text) => visitor.visit_borrowed_str(text),
            Cow::Owned(text) => visitor.visit_str(&text),
        }
    }
}

/// A node, read as far as needed to know what it is: scalars whole, collections up to their
/// first entry.
enum Node<'a> {
    Scalar(Scalar<'a>),
    BlockMapping { column: usize },
    BlockSequence { column: usize },
    FlowMapping { outermost: bool },
    FlowSequence { outermost: bool },
}

/// Deserializes one node.
pub struct NodeDeserializer<'r, 'a> {
    reader: &'r mut Reader<'a>,
    node: Node<'a>,
}

impl<'r, 'a> NodeDeserializer<'r, 'a> {
    fn invalid_type(&self, expected: &dyn de::Expected) -> Unsupported {
        let unexpected = match &self.node {
            Node::Scalar(_) => de::Unexpected::Other("a scalar"),
            Node::BlockMapping { .. } | Node::FlowMapping { .. } => de::Unexpected::Map,
            Node::BlockSequence { .. } | Node::FlowSequence { .. } => de::Unexpected::Seq,
        };
        de::Error::invalid_type(unexpected, expected)
    }

    /// Visits a collection; `None` for a scalar.
    fn visit_collection<V: Visitor<'a>>(self, visitor: V) -> Option<Result<V::Value>> {
        let mapping = match self.node {
            Node::Scalar(_) => return None,
            Node::BlockMapping { .. } | Node::FlowMapping { .. } => true,
            Node::BlockSequence { .. } | Node::FlowSequence { .. } => false,
        };
        let reader = self.reader;
        if let Err(e) = reader.enter() {
            return Some(Err(e));
        }
        let mut entries = Entries {
            reader: &mut *reader,
            collection: self.node,
            state: Progress::First,
        };
        let result = if mapping {
            visitor.visit_map(&mut entries)
        } else {
            visitor.visit_seq(&mut entries)
        };
        // The reader must stand after the collection.
        let result = match result {
            Ok(_) if entries.state != Progress::Done => {
                unsupported("a visitor that left entries unread")
            }
            result => result,
        };
        reader.depth -= 1;
        Some(result)
    }

    fn scalar<V: Visitor<'a>>(
        self,
        visitor: V,
        read: impl FnOnce(Scalar<'a>, V) -> Result<V::Value>,
    ) -> Result<V::Value> {
        match self.node {
            Node::Scalar(scalar) => read(scalar, visitor),
            _ => Err(self.invalid_type(&visitor)),
        }
    }
}

#[derive(PartialEq)]
enum Progress {
    First,
    Next,
    Done,
}

/// The entries of a collection, read as the visitor asks for them.
struct Entries<'r, 'a> {
    reader: &'r mut Reader<'a>,
    collection: Node<'a>,
    state: Progress,
}

impl Entries<'_, '_> {
    /// Moves to the next entry; false at the end of the collection.
    fn next_entry(&mut self) -> Result<bool> {
        if self.state == Progress::Done {
            return Ok(false);
        }
        let first = self.state == Progress::First;
        let more = match self.collection {
            Node::BlockMapping { column } => self.reader.block_entry(column, false)?,
            Node::BlockSequence { column } => self.reader.block_entry(column, true)?,
            Node::FlowMapping { outermost } => self.reader.flow_entry(first, b'}', outermost)?,
            Node::FlowSequence { outermost } => self.reader.flow_entry(first, b']', outermost)?,
            Node::Scalar(_) => false,
        };
        self.state = if more { Progress::Next } else { Progress::Done };
        Ok(more)
    }
}

impl<'a> de::MapAccess<'a> for Entries<'_, 'a> {
    type Error = Unsupported;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.next_entry()? {
            return Ok(None);
        }
        let reader = &mut *self.reader;
        let key = match self.collection {
            Node::FlowMapping { .. } => reader.flow_key()?,
            _ => reader.block_key()?,
        };
        seed.deserialize(NodeDeserializer {
            reader,
            node: Node::Scalar(key),
        })
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value> {
        let reader = &mut *self.reader;
        let node = match self.collection {
            Node::BlockMapping { column } => reader.block_node(column, false)?,
            _ => reader.flow_value()?,
        };
        seed.deserialize(NodeDeserializer { reader, node })
    }
}

impl<'a> de::SeqAccess<'a> for Entries<'_, 'a> {
    type Error = Unsupported;

    fn next_element_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.next_entry()? {
            return Ok(None);
        }
        let reader = &mut *self.reader;
        let node = match self.collection {
            Node::BlockSequence { column } => {
                reader.pos += 1; // the `-`
                reader.block_node(column, true)?
            }
            _ => reader.flow_item()?,
        };
        seed.deserialize(NodeDeserializer { reader, node })
            .map(Some)
    }
}

/// The entries of an empty plain scalar read as a collection (serde_yaml reads `key:` with
/// nothing below as an empty list or map).
struct Empty;

impl<'a> de::SeqAccess<'a> for Empty {
    type Error = Unsupported;

    fn next_element_seed<T: DeserializeSeed<'a>>(&mut self, _: T) -> Result<Option<T::Value>> {
        Ok(None)
    }
}

impl<'a> de::MapAccess<'a> for Empty {
    type Error = Unsupported;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, _: K) -> Result<Option<K::Value>> {
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, _: V) -> Result<V::Value> {
        unsupported("a value without a key")
    }
}

/// A scalar read as an enum: its text names a unit variant.
struct UnitVariant<'a>(Scalar<'a>);

impl<'a> de::EnumAccess<'a> for UnitVariant<'a> {
    type Error = Unsupported;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'a>>(self, seed: V) -> Result<(V::Value, Self)> {
        let name = de::value::CowStrDeserializer::new(self.0.text.clone());
        Ok((seed.deserialize(name)?, self))
    }
}

impl<'a> de::VariantAccess<'a> for UnitVariant<'a> {
    type Error = Unsupported;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'a>>(self, _: T) -> Result<T::Value> {
        unsupported("an enum variant with a value")
    }

    fn tuple_variant<V: Visitor<'a>>(self, _: usize, _: V) -> Result<V::Value> {
        unsupported("an enum variant with a value")
    }

    fn struct_variant<V: Visitor<'a>>(self, _: &'static [&'static str], _: V) -> Result<V::Value> {
        unsupported("an enum variant with a value")
    }
}

macro_rules! signed {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
            self.scalar(visitor, |scalar, visitor| match scalar.integer() {
                Some(n) => match i64::try_from(n) {
                    Ok(n) => visitor.visit_i64(n),
                    Err(_) => unsupported("an integer out of range"),
                },
                None => unsupported("not a plain decimal integer"),
            })
        }
    )*};
}

macro_rules! unsigned {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
            self.scalar(visitor, |scalar, visitor| match scalar.integer() {
                // serde_yaml refuses a sign here, even on `-0`.
                Some(_) if scalar.text.starts_with('-') => unsupported("a sign on an unsigned integer"),
                Some(n) => match u64::try_from(n) {
                    Ok(n) => visitor.visit_u64(n),
                    Err(_) => unsupported("an integer out of range"),
                },
                None => unsupported("not a plain decimal integer"),
            })
        }
    )*};
}

macro_rules! left_to_serde_yaml {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
            unsupported(concat!(stringify!($method), " is left to serde_yaml"))
        }
    )*};
}

impl<'a> de::Deserializer<'a> for NodeDeserializer<'_, 'a> {
    type Error = Unsupported;

    signed!(
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64
    );
    unsigned!(
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64
    );
    left_to_serde_yaml!(
        deserialize_i128,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_bytes,
        deserialize_byte_buf
    );

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        let Node::Scalar(scalar) = self.node else {
            return self.visit_collection(visitor).expect("a collection");
        };
        if !scalar.plain {
            return scalar.visit_str(visitor);
        }
        if scalar.is_null() {
            return visitor.visit_unit();
        }
        if let Some(boolean) = scalar.boolean() {
            return visitor.visit_bool(boolean);
        }
        // As serde_yaml: unsigned unless there is a sign.
        match scalar.integer() {
            Some(n) if scalar.text.starts_with('-') => {
                visitor.visit_i64(i64::try_from(n).map_err(de::Error::custom)?)
            }
            Some(n) => visitor.visit_u64(u64::try_from(n).map_err(de::Error::custom)?),
            None if scalar.may_be_number() => unsupported("a number left to serde_yaml"),
            None => scalar.visit_str(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.scalar(visitor, |scalar, visitor| match scalar.boolean() {
            Some(boolean) => visitor.visit_bool(boolean),
            None => unsupported("not a boolean"),
        })
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.scalar(visitor, |scalar, visitor| scalar.visit_str(visitor))
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        match &self.node {
            Node::Scalar(scalar) if scalar.is_null() => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        match &self.node {
            Node::Scalar(scalar) if scalar.is_null() => visitor.visit_unit(),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        match &self.node {
            Node::Scalar(scalar) if scalar.plain && scalar.text.is_empty() => {
                visitor.visit_seq(Empty)
            }
            Node::BlockSequence { .. } | Node::FlowSequence { .. } => {
                self.visit_collection(visitor).expect("a collection")
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(self, _: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        match &self.node {
            Node::Scalar(scalar) if scalar.plain && scalar.text.is_empty() => {
                visitor.visit_map(Empty)
            }
            Node::BlockMapping { .. } | Node::FlowMapping { .. } => {
                self.visit_collection(visitor).expect("a collection")
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.scalar(visitor, |scalar, visitor| {
            visitor.visit_enum(UnitVariant(scalar))
        })
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        if let Some(skipped) = self.visit_collection(IgnoredAny) {
            skipped?;
        }
        visitor.visit_unit()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde::Deserialize;
    use serde_json::Value;

    use super::*;

    /// A document through this reader into a JSON value (which asks for `any` everywhere).
    fn read(text: &str) -> Result<Value> {
        let mut reader = Reader::new(text)?;
        let value = Value::deserialize(reader.root())?;
        if !reader.at_end() {
            return unsupported("not read to the end");
        }
        Ok(value)
    }

    /// Where this reader reads a document, serde_yaml must read the same.
    fn assert_same_as_serde_yaml(text: &str) -> bool {
        let Ok(ours) = read(text) else {
            return false;
        };
        match serde_yaml::from_str::<Value>(text) {
            Ok(theirs) => assert_eq!(ours, theirs, "{text:?}"),
            Err(e) => panic!("read here, refused by serde_yaml ({e}): {text:?}"),
        }
        true
    }

    /// Documents using everything the reader reads.
    pub(crate) const SAMPLES: [&str; 4] = [
        r#"# a shop
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop   # trailing comment
  namespace: "shop"
  labels: {app: shop, tier: 'web', "quoted":x}
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /$2
    nginx.ingress.kubernetes.io/configuration-snippet: |
      more_set_headers "X-A: b";
        indented line

      after an empty line
    folded: >-
      one
      two

      three
    kept: |+
      text

    stripped: |-
      text
    empty:
    quoted: "a \"b\" \u00e9 \x41 \t end"
    single: 'it''s # not a comment'
    url: http://a.test:8080/x#frag
spec:
  ingressClassName: xdp
  tls:
  - hosts: ["a.test", b.test]
    secretName: tls
  rules:
  - host: a.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
  -   host: b.test
      http: {paths: [{path: /b, pathType: Exact, backend: {service: {name: web, port: {name: http}}}}]}
  -
    host: c.test
"#,
        "---\r\napiVersion: v1\r\nkind: Service\r\nmetadata:\r\n  name: web\r\nspec:\r\n  \
         ports:\r\n    - name: http\r\n      port: 80\r\n      targetPort: 8080\r\n    - \
         {name: admin, port: -1, targetPort: admin}\r\n  selector: {app: web}\r\n  \
         type: ~\r\n",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: tls, namespace: shop}\ntype: \
         kubernetes.io/tls\nstringData:\n  tls.crt: |\n    -----BEGIN CERTIFICATE-----\n    \
         MIIB\n    -----END CERTIFICATE-----\n  tls.key: |\n    x\ndata:\n  ca.crt: \
         Y2E=\n",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  \
         labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports: [{name: \
         http, port: 8080, protocol: TCP}]\nendpoints:\n- addresses: [10.0.0.1, \
         '10.0.0.2']\n  conditions: {ready: true, serving: True, terminating: FALSE}\n  \
         zone: null\n- addresses:\n  - 10.0.0.3\n  conditions:\n    ready: false\nlist: []\n\
         map: {}\n\"quoted key\": 0\nnegative: -12\nzero: -0\n",
    ];

    #[test]
    fn reads_manifests_as_serde_yaml_does() {
        for sample in SAMPLES {
            assert!(
                assert_same_as_serde_yaml(sample),
                "{sample}: {:?}",
                read(sample).err()
            );
        }
        let value = read(SAMPLES[0]).unwrap();
        let annotations = &value["metadata"]["annotations"];
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/configuration-snippet"],
            "more_set_headers \"X-A: b\";\n  indented line\n\nafter an empty line\n"
        );
        assert_eq!(annotations["folded"], "one two\nthree");
        assert_eq!(annotations["kept"], "text\n\n");
        assert_eq!(annotations["quoted"], "a \"b\" \u{e9} A \t end");
        assert_eq!(value["spec"]["rules"][2]["host"], "c.test");
    }

    #[test]
    fn leaves_the_rest_to_serde_yaml() {
        for unusual in [
            "a: &anchor 1\nb: *anchor\n",
            "a: !tag 1\n",
            "a: plain\n  continued\n",
            "a: \"quoted\n  continued\"\n",
            "a: {b: 1,\n  c: 2}\n",
            "a:\tb\n",
            "a: 1.5\n",
            "a: 0x1f\n",
            "a: +1\n",
            "a: |2\n   x\n",
            "a: |\n\n  x\n",
            "a: |\n  x",
            "a: \"\\/\"\n",
            "a: b: c\n",
            "? a\n: b\n",
            "- a\n",
            "  a: 1\n",
            "a: 1\n b: 2\n",
            "a:\n  - 1\n  b: 2\n",
            "a: [b: c]\n",
            "a: {b}\n",
            "a: {b: 1,}\n",
            "a: {b:1}\n",
            "a: 'x'y\n",
            "a: x\u{85}y\n",
            "a: x\ry\n",
            "a: \u{7f}\n",
            "--- {a: 1}\n",
            "a: 1\n---\nb: 2\n",
            "a: 1\n--- : 2\n",
            "a: 1\n... : 2\n",
        ] {
            assert!(read(unusual).is_err(), "{unusual:?}: {:?}", read(unusual));
        }
    }

    /// Small random edits of a document: characters YAML gives meaning to, inserted, removed
    /// or replaced (deterministic).
    pub(crate) fn mutations(seed: &str, count: usize) -> impl Iterator<Item = String> + '_ {
        const ALPHABET: &[u8] = b" \n:-#\"'{}[],|>+a1\t&*!?%@\\0.~";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed.len() as u64;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        (0..count).map(move |_| {
            let mut text = seed.as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(text.len() + 1);
                let byte = ALPHABET[next(ALPHABET.len())];
                match next(4) {
                    0 if at < text.len() => {
                        text.remove(at);
                    }
                    1 if at < text.len() => text[at] = byte,
                    2 => drop(text.splice(at..at, *b"  ")),
                    _ => text.insert(at, byte),
                };
            }
            // The samples are ASCII and so are the edits.
            String::from_utf8(text).expect("ASCII")
        })
    }

    #[test]
    fn edited_manifests_read_as_serde_yaml_does_or_not_at_all() {
        for sample in SAMPLES {
            let read_here = mutations(sample, 3000)
                .filter(|text| assert_same_as_serde_yaml(text))
                .count();
            // Most edits land in scalars and still read.
            assert!(read_here > 300, "{read_here} of 3000 read");
        }
    }
}
