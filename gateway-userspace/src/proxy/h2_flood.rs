//! Watches the frames an HTTP/2 client sends, as they are read, for the floods that cost the
//! server work without moving a request forward: rapid reset (CVE-2023-44487), CONTINUATION
//! floods (CVE-2024-27316 and its family), SETTINGS / PING / WINDOW_UPDATE / PRIORITY and empty
//! DATA floods. The h2 library bounds some of them; this bounds all of them the same way, by a
//! per-connection budget that such frames spend and time refills (as Envoy and nginx do with
//! their flood counters). A connection over budget is told GOAWAY and closed.
//!
//! Only frame headers are read (9 bytes each); payloads are skipped, never copied.

use std::time::Instant;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Frames that cost work without carrying a request forward, in budget units.
const CONTROL_COST: u32 = 1;
/// A stream reset by the client: the request it opened may already be on its way to a backend.
const RESET_COST: u32 = 20;
/// What a connection may spend at once, and what one second gives back.
const BUDGET: u32 = 2_000;
const REFILL_PER_SECOND: u32 = 1_000;
/// CONTINUATION frames of one header block: a 32 KB block needs 2 at the default frame size.
const MAX_CONTINUATIONS: u32 = 32;

/// What the meter concluded from the bytes it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not HTTP/2 (an HTTP/1 connection): nothing more to watch.
    NotHttp2,
    Fine,
    /// Over budget: the connection gets GOAWAY and is closed.
    Flood(&'static str),
}

/// The frame boundaries and the budget of one connection.
#[derive(Debug)]
pub struct FloodMeter {
    state: State,
    tokens: u32,
    refilled: Instant,
    continuations: u32,
}

#[derive(Debug)]
enum State {
    /// How many bytes of the preface have matched.
    Preface(usize),
    Header {
        header: [u8; 9],
        have: usize,
    },
    Payload {
        remaining: usize,
    },
    NotHttp2,
    Flooded(&'static str),
}

impl Default for FloodMeter {
    fn default() -> Self {
        Self {
            state: State::Preface(0),
            tokens: BUDGET,
            refilled: Instant::now(),
            continuations: 0,
        }
    }
}

impl FloodMeter {
    /// Whether the connection has been seen to speak HTTP/2 (its preface arrived whole).
    pub fn is_http2(&self) -> bool {
        matches!(
            self.state,
            State::Header { .. } | State::Payload { .. } | State::Flooded(_)
        )
    }

    /// Reads `bytes`, the next ones the client sent.
    pub fn feed(&mut self, bytes: &[u8]) -> Verdict {
        self.feed_at(bytes, Instant::now())
    }

    /// Reads `bytes` as if they arrived at `now` (the budget refills with time).
    pub fn feed_at(&mut self, mut bytes: &[u8], now: Instant) -> Verdict {
        while !bytes.is_empty() {
            match &mut self.state {
                State::NotHttp2 => return Verdict::NotHttp2,
                State::Flooded(why) => return Verdict::Flood(why),
                State::Preface(matched) => {
                    let want = &PREFACE[*matched..];
                    let n = want.len().min(bytes.len());
                    if bytes[..n] != want[..n] {
                        self.state = State::NotHttp2;
                        return Verdict::NotHttp2;
                    }
                    *matched += n;
                    bytes = &bytes[n..];
                    if *matched == PREFACE.len() {
                        self.state = State::Header {
                            header: [0; 9],
                            have: 0,
                        };
                    }
                }
                State::Header { header, have } => {
                    let n = (9 - *have).min(bytes.len());
                    header[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have == 9 {
                        let header = *header;
                        if let Some(why) = self.frame(&header, now) {
                            self.state = State::Flooded(why);
                            return Verdict::Flood(why);
                        }
                    }
                }
                State::Payload { remaining } => {
                    let n = (*remaining).min(bytes.len());
                    *remaining -= n;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.state = State::Header {
                            header: [0; 9],
                            have: 0,
                        };
                    }
                }
            }
        }
        match self.state {
            State::NotHttp2 => Verdict::NotHttp2,
            State::Flooded(why) => Verdict::Flood(why),
            _ => Verdict::Fine,
        }
    }

    /// Accounts for one frame by its header; `Some(reason)` when it breaks the budget.
    fn frame(&mut self, header: &[u8; 9], now: Instant) -> Option<&'static str> {
        let length =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let kind = header[3];
        let flags = header[4];
        self.state = if length == 0 {
            State::Header {
                header: [0; 9],
                have: 0,
            }
        } else {
            State::Payload { remaining: length }
        };
        if kind == CONTINUATION {
            self.continuations += 1;
            if self.continuations > MAX_CONTINUATIONS {
                return Some("too many CONTINUATION frames in one header block");
            }
        } else {
            self.continuations = 0;
        }
        if flags & END_HEADERS != 0 && matches!(kind, HEADERS | CONTINUATION) {
            self.continuations = 0;
        }
        let (cost, why) = match kind {
            RST_STREAM => (RESET_COST, "too many streams reset (rapid reset)"),
            SETTINGS | PING | WINDOW_UPDATE | PRIORITY => (
                CONTROL_COST,
                "too many control frames (SETTINGS, PING, WINDOW_UPDATE, PRIORITY)",
            ),
            DATA if length == 0 && flags & END_STREAM == 0 => {
                (CONTROL_COST, "too many empty DATA frames")
            }
            CONTINUATION | HEADERS if length == 0 && flags & END_HEADERS == 0 => {
                (CONTROL_COST, "too many empty header frames")
            }
            _ => return None,
        };
        if self.spend(cost, now) {
            None
        } else {
            Some(why)
        }
    }

    /// Refills by the time passed, then takes `cost`; false when there was not enough.
    fn spend(&mut self, cost: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        let refill = (elapsed.as_millis() as u64 * u64::from(REFILL_PER_SECOND) / 1000) as u32;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(BUDGET);
            self.refilled = now;
        }
        match self.tokens.checked_sub(cost) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => {
                self.tokens = 0;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = payload.len() as u32;
        let mut frame = length.to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    }

    fn connection(frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        for frame in frames {
            bytes.extend(frame);
        }
        bytes
    }

    #[test]
    fn http1_is_told_apart_at_its_first_byte() {
        let mut meter = FloodMeter::default();
        assert_eq!(meter.feed(b"GET / HTTP/1.1\r\n"), Verdict::NotHttp2);
        assert!(!meter.is_http2());
    }

    #[test]
    fn ordinary_requests_byte_by_byte_are_fine() {
        let streams = (1..200u32).step_by(2).flat_map(|stream| {
            [
                frame(HEADERS, END_HEADERS, stream, &[0x82; 20]),
                frame(DATA, END_STREAM, stream, &[b'x'; 100]),
                frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]),
            ]
        });
        let bytes = connection(streams);
        let mut meter = FloodMeter::default();
        for byte in bytes.chunks(1) {
            assert_eq!(meter.feed(byte), Verdict::Fine);
        }
        assert!(meter.is_http2());
    }

    #[test]
    fn floods_run_out_of_budget() {
        let floods: [(&str, Vec<u8>); 5] = [
            ("PING", frame(PING, 0, 0, &[0; 8])),
            ("SETTINGS", frame(SETTINGS, 0, 0, &[])),
            ("empty DATA", frame(DATA, 0, 1, &[])),
            ("WINDOW_UPDATE", frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1])),
            (
                "rapid reset",
                [
                    frame(HEADERS, END_HEADERS, 1, &[0x82]),
                    frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]),
                ]
                .concat(),
            ),
        ];
        for (name, unit) in floods {
            let bytes = connection(std::iter::repeat_n(unit, 5_000));
            let mut meter = FloodMeter::default();
            assert!(matches!(meter.feed(&bytes), Verdict::Flood(_)), "{name}");
        }
    }

    #[test]
    fn an_endless_header_block_is_a_flood() {
        let mut frames = vec![frame(HEADERS, 0, 1, &[0x82])];
        frames.extend(std::iter::repeat_n(
            frame(CONTINUATION, 0, 1, &[0x40; 10]),
            40,
        ));
        let mut meter = FloodMeter::default();
        assert_eq!(
            meter.feed(&connection(frames)),
            Verdict::Flood("too many CONTINUATION frames in one header block")
        );
    }

    #[test]
    fn the_budget_refills_with_time() {
        let mut meter = FloodMeter::default();
        let start = Instant::now();
        meter.refilled = start;
        assert!(meter.spend(BUDGET, start));
        assert!(!meter.spend(1, start));
        assert!(meter.spend(REFILL_PER_SECOND, start + std::time::Duration::from_secs(1)));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// However the bytes are cut into reads, the meter sees the same frames.
            #[test]
            fn verdicts_do_not_depend_on_how_reads_are_cut(
                kinds in proptest::collection::vec(0u8..10, 0..300),
                cuts in proptest::collection::vec(1usize..64, 1..50),
            ) {
                let frames = kinds.iter().enumerate().map(|(i, kind)| {
                    frame(*kind, if i % 3 == 0 { END_HEADERS } else { 0 }, 1, &vec![0; i % 20])
                });
                let bytes = connection(frames);
                let mut whole = FloodMeter::default();
                let expected = whole.feed(&bytes);
                let mut pieces = FloodMeter::default();
                let mut verdict = Verdict::Fine;
                let mut rest = bytes.as_slice();
                for cut in cuts.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (piece, tail) = rest.split_at((*cut).min(rest.len()));
                    verdict = pieces.feed(piece);
                    rest = tail;
                    if matches!(verdict, Verdict::Flood(_)) {
                        break;
                    }
                }
                prop_assert_eq!(verdict, expected);
            }
        }
    }
}
