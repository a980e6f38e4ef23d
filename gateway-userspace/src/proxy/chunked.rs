//! The chunked transfer coding (RFC 9112 7.1), read strictly: hex sizes that fit in 64 bits,
//! extensions skipped up to a CRLF, data followed by exactly CRLF, trailer lines skipped.
//! Shared, with bodies of a fixed length, by the HTTP/1 server (clients' request bodies) and the
//! HTTP/1 upstream codec (backends' response bodies).

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// A body delimited by its framing: a length or the chunked coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimited {
    /// The bytes still to come.
    Length(u64),
    Chunked(Chunked),
}

impl Delimited {
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Delimited::Length(0) | Delimited::Chunked(Chunked::Done)
        )
    }

    /// Takes the next data of the body out of `buffered` (framing bytes are dropped);
    /// `Ok(None)` when more input is needed, or the body is done.
    pub fn take(&mut self, buffered: &mut BytesMut) -> Result<Option<Bytes>, Malformed> {
        match self {
            Delimited::Length(left) => {
                if *left == 0 || buffered.is_empty() {
                    return Ok(None);
                }
                let n = (*left).min(buffered.len() as u64) as usize;
                *left -= n as u64;
                Ok(Some(buffered.split_to(n).freeze()))
            }
            Delimited::Chunked(chunked) => {
                while !buffered.is_empty() && !chunked.is_done() {
                    let advance = chunked.advance(buffered)?;
                    let mut taken = buffered.split_to(advance.consumed);
                    if let Some(range) = advance.data {
                        return Ok(Some(taken.split_off(range.start).freeze()));
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Where in a chunked body a reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// The size line: the size so far, and whether a digit was seen.
    Size(u64, bool),
    /// An extension, up to the end of the size line (the chunk's size kept).
    Extension(u64),
    /// After the size line's CR.
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// After a CR at the start of a trailer line: the body ends at the LF.
    EndLf,
    /// The body has ended.
    Done,
}

/// What one step over the input did.
#[derive(Debug, PartialEq, Eq)]
pub struct Advance {
    /// Bytes of the input read (framing and data).
    pub consumed: usize,
    /// Where in the input the chunk data read in this step is, if any.
    pub data: Option<Range<usize>>,
}

/// The coding is broken: the message cannot be followed any further.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl Default for Chunked {
    fn default() -> Self {
        Chunked::Size(0, false)
    }
}

impl Chunked {
    /// Reads `bytes` up to the end of the first run of chunk data (so the caller can take it),
    /// the end of the body, or the end of the input.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<Advance, Malformed> {
        for (i, &byte) in bytes.iter().enumerate() {
            *self = match (*self, byte) {
                (Chunked::Done, _) => return Ok(Advance::framing(i)),
                (Chunked::Data(left), _) => {
                    let n = (left as usize).min(bytes.len() - i);
                    *self = match left - n as u64 {
                        0 => Chunked::DataCr,
                        left => Chunked::Data(left),
                    };
                    return Ok(Advance {
                        consumed: i + n,
                        data: Some(i..i + n),
                    });
                }
                (Chunked::Size(size, _), b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let digit = u64::from(char::from(byte).to_digit(16).unwrap_or(0));
                    match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                        Some(size) => Chunked::Size(size, true),
                        None => return Err(Malformed),
                    }
                }
                (Chunked::Size(size, true), b'\r') => Chunked::SizeLf(size),
                (Chunked::Size(size, true), b';') => Chunked::Extension(size),
                (Chunked::Extension(size), b'\r') => Chunked::SizeLf(size),
                (Chunked::Extension(_), b'\n') => return Err(Malformed),
                (Chunked::Extension(size), _) => Chunked::Extension(size),
                (Chunked::SizeLf(0), b'\n') => Chunked::TrailerStart,
                (Chunked::SizeLf(size), b'\n') => Chunked::Data(size),
                (Chunked::DataCr, b'\r') => Chunked::DataLf,
                (Chunked::DataLf, b'\n') => Chunked::Size(0, false),
                (Chunked::TrailerStart, b'\r') => Chunked::EndLf,
                (Chunked::EndLf, b'\n') => {
                    *self = Chunked::Done;
                    return Ok(Advance::framing(i + 1));
                }
                (Chunked::Trailer, b'\n') => Chunked::TrailerStart,
                (Chunked::TrailerStart | Chunked::Trailer, byte) if byte != b'\n' => {
                    Chunked::Trailer
                }
                _ => return Err(Malformed),
            };
        }
        Ok(Advance::framing(bytes.len()))
    }

    pub fn is_done(&self) -> bool {
        *self == Chunked::Done
    }
}

impl Advance {
    fn framing(consumed: usize) -> Self {
        Self {
            consumed,
            data: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data of `body` read in pieces of `step` bytes, or `Malformed`.
    fn decode(body: &[u8], step: usize) -> Result<(Vec<u8>, bool), Malformed> {
        let mut chunked = Chunked::default();
        let mut data = Vec::new();
        for mut piece in body.chunks(step) {
            while !piece.is_empty() && !chunked.is_done() {
                let advance = chunked.advance(piece)?;
                if let Some(range) = advance.data {
                    data.extend_from_slice(&piece[range]);
                }
                piece = &piece[advance.consumed..];
            }
        }
        Ok((data, chunked.is_done()))
    }

    #[test]
    fn chunks_extensions_and_trailers_in_any_pieces() {
        let body = b"5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
        for step in 1..body.len() {
            assert_eq!(
                decode(body, step),
                Ok((b"hello0123456789".to_vec(), true)),
                "step {step}"
            );
        }
    }

    #[test]
    fn broken_codings_are_malformed() {
        for body in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5;ext\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"0\r\n\n",
            b"11111111111111111\r\n",
        ] {
            assert_eq!(decode(body, 1), Err(Malformed), "{body:?}");
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        assert_eq!(decode(b"5\r\nhel", 2), Ok((b"hel".to_vec(), false)));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A chunked encoding of `chunks` (empty ones left out: an empty chunk ends the body).
        fn encode(chunks: &[Vec<u8>]) -> Vec<u8> {
            let mut body = Vec::new();
            for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                body.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
                body.extend(chunk);
                body.extend(b"\r\n");
            }
            body.extend(b"0\r\n\r\n");
            body
        }

        proptest! {
            #[test]
            fn any_encoding_decodes_to_its_data_in_any_pieces(
                chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
                step in 1usize..64,
            ) {
                let data: Vec<u8> = chunks.concat();
                prop_assert_eq!(decode(&encode(&chunks), step), Ok((data, true)));
            }

            #[test]
            fn any_bytes_are_read_without_panicking_or_reading_past_them(
                bytes in proptest::collection::vec(any::<u8>(), 0..400),
            ) {
                let mut chunked = Chunked::default();
                let mut rest = &bytes[..];
                while let Ok(advance) = chunked.advance(rest) {
                    prop_assert!(advance.consumed <= rest.len());
                    if let Some(data) = &advance.data {
                        prop_assert!(data.end <= advance.consumed);
                    }
                    rest = &rest[advance.consumed..];
                    if rest.is_empty() || chunked.is_done() {
                        break;
                    }
                }
            }
        }
    }
}
