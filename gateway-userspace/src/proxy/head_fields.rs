//! An HTTP/1.x head's fields: where they lie in its buffer, for the request parser (the server)
//! and the response parser (the upstream) alike, and their lines as the writers of heads write
//! them. httparse borrows the buffer; the ranges do not, so the head can then be split off the
//! buffer and frozen, and its header values share it.

/// A byte range of the head's buffer.
pub type Range = (usize, usize);

/// Room for a head in an empty buffer: most heads fit in it (nginx's
/// `client_header_buffer_size` is as large), a longer one grows the buffer. mimalloc serves
/// blocks up to this size on its fast path; a larger block is on its slow path (a search of
/// its size's pages: 300 instructions).
const HEAD_ROOM: usize = 1024;

/// How much to make room for before the next read of a head into `buffer`: [`HEAD_ROOM`] while
/// the buffer holds nothing, `read_size` once a head is longer than one read.
pub fn head_read_room(buffer: &[u8], read_size: usize) -> usize {
    if buffer.is_empty() {
        HEAD_ROOM
    } else {
        read_size
    }
}

/// Fields most heads fit in: parsed into a stack array of this size first.
const FEW_FIELDS: usize = 24;

/// The (name, value) ranges of a head's fields: on the stack for the few fields most heads
/// have (no allocation per message), on the heap beyond. Large on purpose (0.8 KB for the
/// few), so it is filled where it lives and never moved: every move of a value holding it
/// copied it whole (a tenth of the instructions the parsers spent on a head).
#[allow(clippy::large_enum_variant)]
pub enum FieldRanges {
    Few {
        ranges: [(Range, Range); FEW_FIELDS],
        count: usize,
    },
    Many(Vec<(Range, Range)>),
}

impl Default for FieldRanges {
    fn default() -> Self {
        Self::Few {
            ranges: [((0, 0), (0, 0)); FEW_FIELDS],
            count: 0,
        }
    }
}

impl FieldRanges {
    /// Becomes the ranges of `fields`, parsed from the buffer that starts at `base`.
    pub fn set(&mut self, fields: &[httparse::Header<'_>], base: usize) {
        let ranges_of = |field: &httparse::Header<'_>| {
            (range(base, field.name.as_bytes()), range(base, field.value))
        };
        match self {
            Self::Few { ranges, count } if fields.len() <= FEW_FIELDS => {
                for (slot, field) in ranges.iter_mut().zip(fields) {
                    *slot = ranges_of(field);
                }
                *count = fields.len();
            }
            Self::Many(ranges) => {
                ranges.clear();
                ranges.extend(fields.iter().map(ranges_of));
            }
            Self::Few { .. } => *self = Self::Many(fields.iter().map(ranges_of).collect()),
        }
    }

    pub fn as_slice(&self) -> &[(Range, Range)] {
        match self {
            Self::Few { ranges, count } => &ranges[..*count],
            Self::Many(ranges) => ranges,
        }
    }
}

/// Where `part`, a slice of the buffer that starts at `base`, lies in it.
pub fn range(base: usize, part: &[u8]) -> Range {
    let start = part.as_ptr() as usize - base;
    (start, start + part.len())
}

/// Runs `parse` with room for a few fields on the stack, and again with room for `limit` when
/// the head has more.
pub fn with_room<'b, T>(
    limit: usize,
    mut parse: impl FnMut(&mut [httparse::Header<'b>]) -> Result<T, httparse::Error>,
) -> Result<T, httparse::Error> {
    match parse(&mut [httparse::EMPTY_HEADER; FEW_FIELDS]) {
        Err(httparse::Error::TooManyHeaders) if limit > FEW_FIELDS => {
            parse(&mut vec![httparse::EMPTY_HEADER; limit])
        }
        parsed => parsed,
    }
}

/// Writes one field's line (`name: value`) into a head.
pub fn write_field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: usize) -> String {
        let mut head = String::from("GET / HTTP/1.1\r\n");
        for i in 0..fields {
            head.push_str(&format!("x-{i}: v{i}\r\n"));
        }
        head + "\r\n"
    }

    /// The ranges of the fields of `head`, parsed with room for `limit`.
    fn ranges(head: &str, limit: usize) -> Result<Vec<(String, String)>, httparse::Error> {
        let buffer = head.as_bytes();
        let mut fields = FieldRanges::default();
        with_room(limit, |parsed| {
            let mut request = httparse::Request::new(parsed);
            request.parse(buffer)?;
            fields.set(request.headers, buffer.as_ptr() as usize);
            Ok(())
        })?;
        let text = |(start, end): Range| head[start..end].to_string();
        Ok(fields
            .as_slice()
            .iter()
            .map(|&(name, value)| (text(name), text(value)))
            .collect())
    }

    #[test]
    fn few_and_many_fields_give_the_same_ranges() {
        for count in [0, 1, FEW_FIELDS, FEW_FIELDS + 1, 80] {
            let found = ranges(&head(count), 100).unwrap();
            let expected: Vec<_> = (0..count)
                .map(|i| (format!("x-{i}"), format!("v{i}")))
                .collect();
            assert_eq!(found, expected, "{count} fields");
        }
    }

    #[test]
    fn more_fields_than_the_limit_are_refused() {
        assert_eq!(
            ranges(&head(FEW_FIELDS + 2), FEW_FIELDS + 1),
            Err(httparse::Error::TooManyHeaders)
        );
        // A limit below the stack's room parses what fits; the caller checks its own limit.
        assert_eq!(ranges(&head(3), 2).unwrap().len(), 3);
    }
}
