//! A validating JSON scanner: finds where one JSON value ends and checks its syntax in
//! the same pass, fed in pieces of any size.
//!
//! The record reader copies each element of `Records` out of the decoded stream; this
//! scanner tells it where the element ends and whether it is valid JSON — structure,
//! strings (escapes, no raw control characters), numbers and literals, exactly the
//! grammar of RFC 8259 — so that no second parse of the record is needed. Inside
//! strings, which are most of a CloudTrail record, it skips eight bytes at a time.
//! UTF-8 is not checked here: the caller checks the whole value with
//! `std::str::from_utf8`.
//!
//! Nesting is tracked on a heap stack (one byte per level), so depth is limited only
//! by the size of the value.

use super::{describe_byte, is_ws};

/// What the scanner expects at the next byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Any value.
    Value,
    /// A value or `]` (just after `[`).
    ValueOrClose,
    /// An object key or `}` (just after `{`).
    KeyOrClose,
    /// An object key (after `,` in an object).
    Key,
    /// The `:` after a key.
    Colon,
    /// `,` or the close of the innermost container, after a value inside it.
    CommaOrClose,
    /// Inside a string; `key` when it is an object key.
    Str {
        key: bool,
    },
    /// After a `\` inside a string.
    Escape {
        key: bool,
    },
    /// Inside `\uXXXX`, `left` hex digits to go.
    Hex {
        key: bool,
        left: u8,
    },
    Num(Num),
    /// Inside `true`, `false` or `null`: `word[at..]` is still to come.
    Lit {
        word: &'static [u8],
        at: u8,
    },
}

/// Where in a number the scanner is (RFC 8259 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    /// After `-`: a digit must follow.
    Minus,
    /// A leading `0`: no more integer digits.
    Zero,
    Int,
    /// After `.`: a digit must follow.
    Dot,
    Frac,
    /// After `e` / `E`: a sign or digit must follow.
    E,
    /// After the exponent's sign: a digit must follow.
    ESign,
    Exp,
}

impl Num {
    /// Whether a number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }
}

/// The outcome of feeding the scanner a piece of input.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The whole piece belongs to the value, which goes on.
    More,
    /// The value ends after the first `n` bytes of the piece.
    Done(usize),
    /// The byte at `at` of the piece is not valid here.
    Invalid { at: usize, reason: String },
}

/// A resumable scanner of one JSON value. [`Scanner::start`] it, [`Scanner::feed`] it
/// consecutive pieces until it returns [`Step::Done`] or [`Step::Invalid`]; at the end
/// of the input, [`Scanner::at_eof`] says whether the value is complete there.
#[derive(Debug)]
pub(super) struct Scanner {
    st: St,
    /// `{` or `[` for each open container, innermost last.
    stack: Vec<u8>,
    /// A raw `\n` or `\r` appeared (necessarily between tokens).
    line_breaks: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            st: St::Value,
            stack: Vec::new(),
            line_breaks: false,
        }
    }
}

impl Scanner {
    /// Gets ready for a new value (leading whitespace allowed).
    pub(super) fn start(&mut self) {
        self.st = St::Value;
        self.stack.clear();
        self.line_breaks = false;
    }

    /// Whether the value scanned so far holds a raw line break between tokens.
    pub(super) fn line_breaks(&self) -> bool {
        self.line_breaks
    }

    /// At the end of the input: `Ok` if the value is complete there (only a top-level
    /// number can be, as nothing else marks its own end), else what it is inside.
    pub(super) fn at_eof(&self) -> Result<(), &'static str> {
        match self.st {
            St::Num(n) if n.complete() && self.stack.is_empty() => Ok(()),
            St::Str { .. } | St::Escape { .. } | St::Hex { .. } => Err("a string"),
            _ if self.stack.is_empty() => Err("a value"),
            _ if self.stack.last() == Some(&b'{') => Err("an object"),
            _ => Err("an array"),
        }
    }

    /// A value just ended: either the whole value did, or the scanner now expects `,`
    /// or a close in the enclosing container.
    fn value_ended(&mut self) -> bool {
        if self.stack.is_empty() {
            true
        } else {
            self.st = St::CommaOrClose;
            false
        }
    }

    fn close(&mut self) -> bool {
        self.stack.pop();
        self.value_ended()
    }

    /// Scans the next piece of the value.
    pub(super) fn feed(&mut self, buf: &[u8]) -> Step {
        let n = buf.len();
        let mut i = 0;
        while i < n {
            let b = buf[i];
            match self.st {
                St::Str { key } => {
                    i += string_stop(&buf[i..]);
                    if i == n {
                        return Step::More;
                    }
                    match buf[i] {
                        b'"' => {
                            i += 1;
                            // Compact JSON's commonest steps, `"key":"value","key"`,
                            // taken here without a trip round the loop per byte.
                            if key {
                                if buf.get(i) == Some(&b':') {
                                    i += 1;
                                    if buf.get(i) == Some(&b'"') {
                                        i += 1;
                                        self.st = St::Str { key: false };
                                    } else {
                                        self.st = St::Value;
                                    }
                                } else {
                                    self.st = St::Colon;
                                }
                            } else if self.value_ended() {
                                return Step::Done(i);
                            } else if buf.get(i) == Some(&b',')
                                && buf.get(i + 1) == Some(&b'"')
                                && self.stack.last() == Some(&b'{')
                            {
                                i += 2;
                                self.st = St::Str { key: true };
                            }
                        }
                        b'\\' => {
                            i += 1;
                            self.st = St::Escape { key };
                        }
                        c => {
                            return invalid(
                                i,
                                format!("raw control character 0x{c:02x} in a string"),
                            )
                        }
                    }
                }
                St::Escape { key } => {
                    self.st = match b {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => St::Str { key },
                        b'u' => St::Hex { key, left: 4 },
                        _ => return invalid(i, format!("invalid escape \\{}", describe_byte(b))),
                    };
                    i += 1;
                }
                St::Hex { key, left } => {
                    if !b.is_ascii_hexdigit() {
                        return invalid(
                            i,
                            format!(
                                "invalid \\u escape: {} is not a hex digit",
                                describe_byte(b)
                            ),
                        );
                    }
                    self.st = if left == 1 {
                        St::Str { key }
                    } else {
                        St::Hex {
                            key,
                            left: left - 1,
                        }
                    };
                    i += 1;
                }
                St::Num(num) => {
                    let next = match (num, b) {
                        (Num::Minus, b'0') => Some(Num::Zero),
                        (Num::Minus | Num::Int, b'1'..=b'9') | (Num::Int, b'0') => Some(Num::Int),
                        (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
                        (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
                        (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::E),
                        (Num::E, b'+' | b'-') => Some(Num::ESign),
                        (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Some(Num::Exp),
                        _ => None,
                    };
                    match next {
                        Some(next) => {
                            self.st = St::Num(next);
                            i += 1;
                        }
                        // The number ends before this byte, which is looked at again.
                        None if num.complete() => {
                            if self.value_ended() {
                                return Step::Done(i);
                            }
                        }
                        None => {
                            return invalid(
                                i,
                                format!("invalid number: unexpected {}", describe_byte(b)),
                            )
                        }
                    }
                }
                St::Lit { word, at } => {
                    if b != word[at as usize] {
                        let word = std::str::from_utf8(word).unwrap_or_default();
                        return invalid(
                            i,
                            format!(
                                "invalid literal (expected {word}), found {}",
                                describe_byte(b)
                            ),
                        );
                    }
                    i += 1;
                    if at as usize + 1 < word.len() {
                        self.st = St::Lit { word, at: at + 1 };
                    } else if self.value_ended() {
                        return Step::Done(i);
                    }
                }
                _ if is_ws(b) => {
                    if b == b'\n' || b == b'\r' {
                        self.line_breaks = true;
                    }
                    i += 1;
                }
                St::Value | St::ValueOrClose => {
                    i += 1;
                    self.st = match b {
                        b']' if self.st == St::ValueOrClose => {
                            if self.close() {
                                return Step::Done(i);
                            }
                            continue;
                        }
                        b'{' => {
                            self.stack.push(b'{');
                            St::KeyOrClose
                        }
                        b'[' => {
                            self.stack.push(b'[');
                            St::ValueOrClose
                        }
                        b'"' => St::Str { key: false },
                        b'-' => St::Num(Num::Minus),
                        b'0' => St::Num(Num::Zero),
                        b'1'..=b'9' => St::Num(Num::Int),
                        b't' => St::Lit {
                            word: b"true",
                            at: 1,
                        },
                        b'f' => St::Lit {
                            word: b"false",
                            at: 1,
                        },
                        b'n' => St::Lit {
                            word: b"null",
                            at: 1,
                        },
                        _ => {
                            return invalid(
                                i - 1,
                                format!("expected a value, found {}", describe_byte(b)),
                            )
                        }
                    };
                }
                St::KeyOrClose | St::Key => {
                    i += 1;
                    match b {
                        b'"' => self.st = St::Str { key: true },
                        b'}' if self.st == St::KeyOrClose => {
                            if self.close() {
                                return Step::Done(i);
                            }
                        }
                        _ => {
                            return invalid(
                                i - 1,
                                format!("expected an object key, found {}", describe_byte(b)),
                            )
                        }
                    }
                }
                St::Colon => {
                    if b != b':' {
                        return invalid(
                            i,
                            format!(
                                "expected ':' after an object key, found {}",
                                describe_byte(b)
                            ),
                        );
                    }
                    self.st = St::Value;
                    i += 1;
                }
                St::CommaOrClose => {
                    let object = self.stack.last() == Some(&b'{');
                    i += 1;
                    match b {
                        b',' if object => self.st = St::Key,
                        b',' => self.st = St::Value,
                        b'}' if object => {
                            if self.close() {
                                return Step::Done(i);
                            }
                        }
                        b']' if !object => {
                            if self.close() {
                                return Step::Done(i);
                            }
                        }
                        _ => {
                            let close = if object { '}' } else { ']' };
                            return invalid(
                                i - 1,
                                format!("expected ',' or '{close}', found {}", describe_byte(b)),
                            );
                        }
                    }
                }
            }
        }
        Step::More
    }
}

fn invalid(at: usize, reason: String) -> Step {
    Step::Invalid { at, reason }
}

/// The index of the first byte of `s` that ends a run of plain string content — `"`,
/// `\` or a control character below 0x20 — or `s.len()` if there is none. Eight bytes
/// at a time: a byte of a word is flagged when it equals `"`, equals `\` or is below
/// 0x20; borrows can only flag bytes above a real hit, so the lowest flag is exact.
#[inline]
fn string_stop(s: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= s.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&s[i..i + 8]);
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * b'"' as u64);
        let backslash = w ^ (ONES * b'\\' as u64);
        let hits = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w);
        let hits = hits & HIGHS;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < s.len() {
        let b = s[i];
        if b == b'"' || b == b'\\' || b < 0x20 {
            return i;
        }
        i += 1;
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;

    const COMPACT_GZ: &[u8] =
        include_bytes!("../../tests/fixtures/cloudtrail/SerializerTestFileCompact.json.gz");
    const LOKI_GZ: &[u8] =
        include_bytes!("../../tests/fixtures/cloudtrail/loki-cloudtrail-log-file.json.gz");
    const INSIGHTS: &[u8] = include_bytes!("../../tests/fixtures/cloudtrail/insights-example.json");

    /// The scanner's verdict on `input` as one whole JSON text, fed in the pieces that
    /// `cuts` delimits: valid when the value ends with nothing but whitespace after it.
    fn verdict(input: &[u8], cuts: &[usize]) -> bool {
        let mut s = Scanner::default();
        s.start();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&input.len())) {
            let to = to.clamp(from, input.len());
            match s.feed(&input[from..to]) {
                Step::More => from = to,
                Step::Done(n) => return input[from + n..].iter().all(|b| is_ws(*b)),
                Step::Invalid { at, .. } => {
                    assert!(from + at < input.len(), "error position past the input");
                    return false;
                }
            }
        }
        s.at_eof().is_ok()
    }

    fn serde_verdict(input: &[u8]) -> bool {
        serde_json::from_slice::<IgnoredAny>(input).is_ok()
    }

    /// A small deterministic generator (xorshift64), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The records of three real files of different shapes (compact, pretty-printed
    /// Insights events, a multi-account log).
    fn records() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for file in [COMPACT_GZ, LOKI_GZ, INSIGHTS] {
            let before = out.len();
            let mut r = super::super::open_slice(file);
            while let Some(rec) = r.next_record().unwrap() {
                out.push(rec.to_vec());
            }
            assert!(out.len() > before);
        }
        out
    }

    /// Hand-picked edge cases agree with serde_json, whole and cut at every byte.
    #[test]
    fn edge_cases_agree_with_serde_json() {
        let cases: &[&str] = &[
            "{}",
            "[]",
            "{ }",
            "[ ]",
            " {\"a\" : 1 } ",
            "{\"a\":1,}",
            "{,}",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":}",
            "{1:2}",
            "{\"a\":1\"b\":2}",
            "[[[]]]",
            "[[]",
            "[]]",
            "{\"a\":[}",
            "0",
            "-0",
            "01",
            "-01",
            "1.",
            "1.5",
            ".5",
            "1e",
            "1e5",
            "1E+5",
            "1e-05",
            "1e+",
            "-",
            "--1",
            "1.2.3",
            "0e",
            "0.0e0",
            "123456789012345678901234567890",
            "-1.5E-300",
            "true",
            "false",
            "null",
            "tru",
            "nul",
            "truex",
            "True",
            "[true,false,null]",
            "nulll",
            "\"\"",
            "\"a\"",
            "\"\\\"\"",
            "\"\\\\\"",
            "\"\\/\"",
            "\"\\b\\f\\n\\r\\t\"",
            "\"\\x\"",
            "\"\\u0041\"",
            "\"\\u004\"",
            "\"\\u00G1\"",
            "\"\\uD83D\\uDE00\"",
            "\"\\uDE00\"",
            "\"a\tb\"",
            "\"a\nb\"",
            "\"a\u{1f}b\"",
            "\"a\u{7f}b\"",
            "\"é ü 漢字\"",
            "\"unterminated",
            "{\"a\":\"b\\\"}",
            "{\"a\":\"x\"}\n",
            "{\"a\":\"x\"} {}",
            "\n\t{\r\n\"a\"\n:\n1\n}\n",
            "{\"a\":{\"b\":[1,{\"c\":null}]}}",
            "",
            "   ",
            "{\"a\":1}x",
            "[1]]",
            "\"a\"\"b\"",
        ];
        for case in cases {
            let input = case.as_bytes();
            let want = serde_verdict(input);
            assert_eq!(verdict(input, &[]), want, "{case:?} whole");
            for cut in 0..=input.len() {
                assert_eq!(verdict(input, &[cut]), want, "{case:?} cut at {cut}");
            }
        }
    }

    /// Real records, mutated at random (bytes dropped, replaced, inserted, pieces cut at
    /// random points), get the same verdict as serde_json: the scanner accepts exactly
    /// the JSON that the parse it replaces accepted.
    #[test]
    fn mutated_records_agree_with_serde_json() {
        const ALPHABET: &[u8] = b"{}[]:,\"\\ \n\t-+.eE0123456789tfnulrsaxu/\x01\x1f";
        let recs = records();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut valid, mut invalid_) = (0, 0);
        for round in 0..20_000 {
            let mut input = recs[round % recs.len()].clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(input.len() + 1);
                match rng.below(3) {
                    0 if at < input.len() => {
                        input.remove(at);
                    }
                    1 if at < input.len() => input[at] = ALPHABET[rng.below(ALPHABET.len())],
                    _ => input.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                }
            }
            let mut cuts: Vec<usize> = (0..rng.below(4))
                .map(|_| rng.below(input.len() + 1))
                .collect();
            cuts.sort_unstable();
            let want = serde_verdict(&input);
            assert_eq!(
                verdict(&input, &cuts),
                want,
                "round {round}: {:?} cut at {cuts:?}",
                String::from_utf8_lossy(&input)
            );
            if want {
                valid += 1;
            } else {
                invalid_ += 1;
            }
        }
        // Both verdicts are exercised in quantity.
        assert!(
            valid > 1_000 && invalid_ > 1_000,
            "{valid} valid, {invalid_} invalid"
        );
    }

    /// The word-at-a-time search finds the first stop byte wherever it is.
    #[test]
    fn string_stop_finds_the_first_stop_byte() {
        for len in 0..40 {
            for at in 0..=len {
                for stop in [b'"', b'\\', 0x00, 0x0a, 0x1f] {
                    let mut s = vec![b'a'; len];
                    // Bytes that must not stop the search, around the real stop.
                    for (k, b) in s.iter_mut().enumerate() {
                        *b = [b'a', 0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'['][k % 8];
                    }
                    if at < len {
                        s[at] = stop;
                        if at + 1 < len {
                            s[at + 1] = b'"';
                        }
                    }
                    assert_eq!(string_stop(&s), at, "len {len}, stop 0x{stop:02x} at {at}");
                }
            }
        }
    }

    /// Where the value ends is reported exactly, and line breaks between tokens noticed.
    #[test]
    fn reports_the_end_and_line_breaks() {
        let mut s = Scanner::default();
        s.start();
        assert_eq!(s.feed(b"{\"a\":\"}\"},{\"b\":1}"), Step::Done(9));
        assert!(!s.line_breaks());
        s.start();
        assert_eq!(s.feed(b"{\n\"a\": 1\r\n}]"), Step::Done(11));
        assert!(s.line_breaks());
        s.start();
        assert_eq!(s.feed(b"12"), Step::More);
        assert_eq!(s.at_eof(), Ok(()));
        assert_eq!(s.feed(b"3,"), Step::Done(1));
        s.start();
        assert_eq!(s.feed(b"{\"a\":[1,"), Step::More);
        assert_eq!(s.at_eof(), Err("an array"));
        match s.feed(b"}") {
            Step::Invalid { at, reason } => {
                assert_eq!(at, 0);
                assert_eq!(reason, "expected a value, found '}'");
            }
            other => panic!("{other:?}"),
        }
    }
}
