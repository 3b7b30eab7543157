//! Records: the bytes of one CloudTrail delivery file → its records, one at a time.
//!
//! [`open`] detects gzip by its magic bytes (never by key or metadata) and decodes
//! multi-member streams; anything else is read as plain JSON. [`RecordReader`] is a
//! generator over the `Records` array: it scans the stream structurally (strings,
//! escapes, nesting) and hands out each element as the bytes it has in the source,
//! so AWS's escapes (`\u003d`), key order and number spelling survive unchanged.
//! Only one record is held at a time, whatever the size of the file.
//!
//! Every element must be an object and is validated as it is scanned: JSON syntax by
//! the scanner in `records/scan.rs` (in the same pass that finds the element's end,
//! no second parse), then UTF-8. An element containing a raw line break (a
//! pretty-printed source) is re-written compactly — insignificant whitespace removed,
//! string and number bytes untouched — so that one record is always one line.
//!
//! The file must be one JSON object with exactly one `Records` array; other keys
//! beside it are validated and ignored. Anything else is an error: this module never
//! guesses.

use std::fmt;
use std::io::{self, BufRead, Read};

use flate2::Decompress;
mod gunzip;
mod scan;
use gunzip::Gunzip;

/// Size of the read buffers in front of and behind the gzip decoder.
const BUF_SIZE: usize = 128 * 1024;

/// What went wrong while reading a delivery file. Offsets count bytes of the decoded
/// (uncompressed) stream.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("corrupt gzip stream: {0}")]
    Gzip(#[source] io::Error),
    #[error("read failed: {0}")]
    Io(#[source] io::Error),
    #[error("the file is empty; expected a JSON object with a Records array")]
    Empty,
    #[error("expected a JSON object with a Records array, found {found} at byte {offset}")]
    NotAnObject { found: String, offset: u64 },
    #[error("the JSON object has no Records array")]
    MissingRecords,
    #[error("the JSON object has more than one Records key")]
    DuplicateRecords,
    #[error("Records is not an array (found {found} at byte {offset})")]
    RecordsNotArray { found: String, offset: u64 },
    #[error("record {index} is not a JSON object (it starts with {found})")]
    RecordNotObject { index: u64, found: String },
    #[error("record {index} is not valid JSON: {reason}")]
    InvalidRecord { index: u64, reason: String },
    #[error("invalid JSON at byte {offset}: {reason}")]
    Syntax { offset: u64, reason: String },
    #[error("truncated JSON: the file ends at byte {offset} inside {inside}")]
    Truncated { offset: u64, inside: &'static str },
    #[error("unexpected data after the end of the JSON object at byte {offset}")]
    TrailingData { offset: u64 },
}

/// The source with its first (peeked) bytes put back in front.
type Peeked<R> = io::Chain<io::Take<io::Cursor<[u8; 2]>>, R>;

/// The decoded byte stream of one delivery file, gzip or plain.
pub struct Decoded<R: Read> {
    inner: DecodedInner<R>,
}

enum DecodedInner<R: Read> {
    Gzip(Box<Gunzip<Reuse<Peeked<R>>>>),
    Plain(Peeked<R>),
}

impl<R: Read> Decoded<R> {
    /// Whether the source started with the gzip magic bytes.
    pub fn is_gzip(&self) -> bool {
        matches!(self.inner, DecodedInner::Gzip(_))
    }
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            DecodedInner::Gzip(d) => d.read(buf),
            DecodedInner::Plain(r) => r.read(buf),
        }
    }
}

/// True when `bytes` starts with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Wraps a source in a (multi-member) gzip decoder when its first two bytes are the
/// gzip magic; otherwise passes it through as plain bytes.
pub fn decode<R: Read>(source: R) -> io::Result<Decoded<R>> {
    decode_with(source, Vec::new(), None)
}

/// [`decode`], with a buffer to reuse for the compressed input and an inflate state.
fn decode_with<R: Read>(
    mut source: R,
    input_buf: Vec<u8>,
    inflate: Option<Decompress>,
) -> io::Result<Decoded<R>> {
    let mut head = [0u8; 2];
    let mut n = 0;
    while n < head.len() {
        match source.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let gzip = is_gzip(&head[..n]);
    let peeked = io::Cursor::new(head).take(n as u64).chain(source);
    let inner = if gzip {
        DecodedInner::Gzip(Box::new(Gunzip::new(
            Reuse::new(peeked, input_buf),
            inflate,
        )))
    } else {
        DecodedInner::Plain(peeked)
    };
    Ok(Decoded { inner })
}

/// Opens a delivery file held in memory (gzip or plain) as a record reader.
pub fn open_slice(bytes: &[u8]) -> RecordReader<Decoded<&[u8]>> {
    open_slice_with(bytes, Buffers::default())
}

/// [`open_slice`], reusing the buffers of an earlier reader ([`RecordReader::into_buffers`]).
pub fn open_slice_with(bytes: &[u8], bufs: Buffers) -> RecordReader<Decoded<&[u8]>> {
    // Reading the first two bytes of a slice cannot fail.
    open_with(bytes, bufs).expect("reading a slice cannot fail")
}

/// Opens any byte source (gzip or plain) as a record reader. Fails only if the first
/// read of the source fails.
pub fn open<R: Read>(source: R) -> io::Result<RecordReader<Decoded<R>>> {
    open_with(source, Buffers::default())
}

/// [`open`], reusing the buffers of an earlier reader.
pub fn open_with<R: Read>(source: R, bufs: Buffers) -> io::Result<RecordReader<Decoded<R>>> {
    let decoded = decode_with(source, bufs.input, bufs.inflate)?;
    Ok(RecordReader::new(decoded, bufs.decoded, bufs.record))
}

/// The buffers of a record reader and its inflate state, to hand to the next one:
/// reading many small files then costs no allocation per file for them.
#[derive(Debug, Default)]
pub struct Buffers {
    input: Vec<u8>,
    decoded: Vec<u8>,
    record: Vec<u8>,
    inflate: Option<Decompress>,
}

/// A buffered reader whose buffer is handed in and can be taken back.
struct Reuse<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
}

impl<R: Read> Reuse<R> {
    fn new(inner: R, mut buf: Vec<u8>) -> Self {
        if buf.len() < BUF_SIZE {
            buf.resize(BUF_SIZE, 0);
        }
        Reuse {
            inner,
            buf,
            pos: 0,
            filled: 0,
        }
    }

    fn into_parts(self) -> (R, Vec<u8>) {
        (self.inner, self.buf)
    }

    fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }
}

impl<R: Read> Read for Reuse<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.filled && out.len() >= self.buf.len() {
            return self.inner.read(out);
        }
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Reuse<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.filled {
            self.filled = self.inner.read(&mut self.buf)?;
            self.pos = 0;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.filled);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    FirstMember,
    NextMember,
    FirstElement,
    NextElement,
    End,
    Done,
}

/// A streaming reader of the `Records` array of one delivery file.
///
/// Use [`RecordReader::next_record`] to borrow each record in turn without
/// allocating, or iterate to get owned `Vec<u8>` records.
pub struct RecordReader<R: Read> {
    reader: Reuse<R>,
    gzip: bool,
    state: State,
    offset: u64,
    index: u64,
    seen_records: bool,
    record: Vec<u8>,
    scratch: Vec<u8>,
    scanner: scan::Scanner,
}

impl<R: Read> fmt::Debug for RecordReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordReader")
            .field("state", &self.state)
            .field("offset", &self.offset)
            .field("index", &self.index)
            .finish()
    }
}

impl<R: Read> RecordReader<Decoded<R>> {
    fn new(decoded: Decoded<R>, buf: Vec<u8>, mut record: Vec<u8>) -> Self {
        let gzip = decoded.is_gzip();
        record.clear();
        RecordReader {
            reader: Reuse::new(decoded, buf),
            gzip,
            state: State::Start,
            offset: 0,
            index: 0,
            seen_records: false,
            record,
            scratch: Vec::new(),
            scanner: scan::Scanner::default(),
        }
    }

    /// Gives back the buffers for the next file's reader.
    pub fn into_buffers(self) -> Buffers {
        let (decoded, buf) = self.reader.into_parts();
        let (input, inflate) = match decoded.inner {
            DecodedInner::Gzip(d) => {
                let (input, inflate) = d.into_parts();
                (input.into_parts().1, Some(inflate))
            }
            DecodedInner::Plain(_) => (Vec::new(), None),
        };
        Buffers {
            input,
            decoded: buf,
            record: self.record,
            inflate,
        }
    }
}

impl<R: Read> RecordReader<R> {
    /// Number of records handed out so far.
    pub fn records_read(&self) -> u64 {
        self.index
    }

    /// Number of decoded bytes consumed so far.
    pub fn bytes_decoded(&self) -> u64 {
        self.offset
    }

    fn io_err(&self, e: io::Error) -> RecordsError {
        if self.gzip {
            RecordsError::Gzip(e)
        } else {
            RecordsError::Io(e)
        }
    }

    fn fill(&mut self) -> Result<&[u8], RecordsError> {
        loop {
            match self.reader.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(self.reader.buffer())
    }

    fn consume(&mut self, n: usize) {
        self.reader.consume(n);
        self.offset += n as u64;
    }

    /// Skips whitespace and returns the next byte without consuming it.
    fn peek_non_ws(&mut self) -> Result<Option<u8>, RecordsError> {
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|b| !is_ws(*b)) {
                Some(i) => {
                    let b = buf[i];
                    self.consume(i);
                    return Ok(Some(b));
                }
                None => {
                    let n = buf.len();
                    self.consume(n);
                }
            }
        }
    }

    fn require(&mut self, inside: &'static str) -> Result<u8, RecordsError> {
        match self.peek_non_ws()? {
            Some(b) => Ok(b),
            None => Err(RecordsError::Truncated {
                offset: self.offset,
                inside,
            }),
        }
    }

    fn syntax(&self, reason: impl Into<String>) -> RecordsError {
        RecordsError::Syntax {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    /// Copies one complete JSON value (any type) into `out`, starting at the next byte,
    /// which the caller has already found with [`Self::require`], and checks its syntax
    /// on the way ([`scan::Scanner`]). `invalid` turns a syntax error at a byte offset
    /// within the value into the error to report. Afterwards
    /// `self.scanner.line_breaks()` tells whether the value holds raw line breaks
    /// between its tokens.
    fn scan_value(
        &mut self,
        out: &mut Vec<u8>,
        invalid: impl Fn(u64, String) -> RecordsError,
    ) -> Result<(), RecordsError> {
        out.clear();
        self.scanner.start();
        loop {
            let buf = self.reader.buffer();
            if buf.is_empty() {
                self.fill()?;
                if self.reader.buffer().is_empty() {
                    return self
                        .scanner
                        .at_eof()
                        .map_err(|inside| RecordsError::Truncated {
                            offset: self.offset,
                            inside,
                        });
                }
                continue;
            }
            match self.scanner.feed(buf) {
                scan::Step::More => {
                    let n = buf.len();
                    out.extend_from_slice(buf);
                    self.consume(n);
                }
                scan::Step::Done(n) => {
                    out.extend_from_slice(&buf[..n]);
                    self.consume(n);
                    return Ok(());
                }
                scan::Step::Invalid { at, reason } => {
                    return Err(invalid(out.len() as u64 + at as u64, reason));
                }
            }
        }
    }

    fn expect_byte(&mut self, want: u8, inside: &'static str) -> Result<(), RecordsError> {
        let b = self.require(inside)?;
        if b != want {
            return Err(self.syntax(format!(
                "expected '{}', found {}",
                want as char,
                describe_byte(b)
            )));
        }
        self.consume(1);
        Ok(())
    }

    /// Between the members of an object or the elements of an array: consumes `close`
    /// and returns `true` at the end, otherwise consumes the `,` that must separate this
    /// item from the previous one (none before the first) and returns `false`.
    fn closed_or_separated(
        &mut self,
        close: u8,
        first: bool,
        inside: &'static str,
    ) -> Result<bool, RecordsError> {
        let b = self.require(inside)?;
        if b == close {
            self.consume(1);
            return Ok(true);
        }
        if !first {
            if b != b',' {
                return Err(self.syntax(format!(
                    "expected ',' or '{}' in {inside}, found {}",
                    close as char,
                    describe_byte(b)
                )));
            }
            self.consume(1);
        }
        Ok(false)
    }

    /// Reads `"key":` and returns the decoded key.
    fn read_key(&mut self) -> Result<String, RecordsError> {
        let b = self.require("the top-level object")?;
        if b != b'"' {
            return Err(self.syntax(format!(
                "expected an object key, found {}",
                describe_byte(b)
            )));
        }
        let mut raw = std::mem::take(&mut self.scratch);
        let offset = self.offset;
        let scanned = self.scan_value(&mut raw, |at, reason| RecordsError::Syntax {
            offset: offset + at,
            reason: format!("invalid object key: {reason}"),
        });
        let key = scanned.and_then(|()| {
            serde_json::from_slice::<String>(&raw).map_err(|e| RecordsError::Syntax {
                offset,
                reason: format!("invalid object key: {e}"),
            })
        });
        raw.clear();
        self.scratch = raw;
        let key = key?;
        self.expect_byte(b':', "the top-level object")?;
        Ok(key)
    }

    /// Reads and validates a value beside `Records`, and discards it.
    fn skip_member_value(&mut self) -> Result<(), RecordsError> {
        self.require("the top-level object")?;
        let offset = self.offset;
        let mut raw = std::mem::take(&mut self.scratch);
        let res = self.scan_value(&mut raw, |at, reason| RecordsError::Syntax {
            offset: offset + at,
            reason,
        });
        let res = res.and_then(|()| {
            check_utf8(&raw).map_err(|reason| RecordsError::Syntax { offset, reason })
        });
        raw.clear();
        self.scratch = raw;
        res
    }

    /// Scans the next array element into `self.record` and checks it.
    fn read_element(&mut self) -> Result<(), RecordsError> {
        let index = self.index;
        let first = self.require("the Records array")?;
        if first != b'{' {
            return Err(RecordsError::RecordNotObject {
                index,
                found: describe_byte(first),
            });
        }
        let mut rec = std::mem::take(&mut self.record);
        let res = self.scan_value(&mut rec, |at, reason| RecordsError::InvalidRecord {
            index,
            reason: format!("{reason} at byte {at} of the record"),
        });
        self.record = rec;
        res?;
        check_utf8(&self.record).map_err(|reason| RecordsError::InvalidRecord { index, reason })?;
        if self.scanner.line_breaks() {
            // Raw line breaks can only be whitespace between tokens here: the scanner
            // rejects raw control characters inside strings.
            minify_in_place(&mut self.record);
        }
        Ok(())
    }

    /// The next record as a borrowed slice, `None` after the last one.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, RecordsError> {
        match self.advance() {
            Ok(true) => Ok(Some(&self.record)),
            Ok(false) => Ok(None),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// A JSON error in a gzip source may really be a damaged stream whose garbage
    /// decoded before the checksum was reached: drain the rest and report the gzip
    /// error if there is one.
    fn explain(&mut self, e: RecordsError) -> RecordsError {
        self.state = State::Done;
        if !self.gzip || matches!(e, RecordsError::Gzip(_) | RecordsError::Io(_)) {
            return e;
        }
        match io::copy(&mut self.reader, &mut io::sink()) {
            Err(gz) => RecordsError::Gzip(gz),
            Ok(_) => e,
        }
    }

    /// Moves to the next record; `true` when `self.record` holds one.
    fn advance(&mut self) -> Result<bool, RecordsError> {
        loop {
            match self.state {
                State::Start => {
                    let b = match self.peek_non_ws()? {
                        Some(b) => b,
                        None if self.offset == 0 => return Err(RecordsError::Empty),
                        None => {
                            return Err(RecordsError::Truncated {
                                offset: self.offset,
                                inside: "leading whitespace",
                            })
                        }
                    };
                    if b != b'{' {
                        return Err(RecordsError::NotAnObject {
                            found: describe_byte(b),
                            offset: self.offset,
                        });
                    }
                    self.consume(1);
                    self.state = State::FirstMember;
                }
                State::FirstMember | State::NextMember => {
                    let first = self.state == State::FirstMember;
                    if self.closed_or_separated(b'}', first, "the top-level object")? {
                        self.state = State::End;
                        continue;
                    }
                    let key = self.read_key()?;
                    if key == "Records" {
                        if self.seen_records {
                            return Err(RecordsError::DuplicateRecords);
                        }
                        self.seen_records = true;
                        let b = self.require("the Records array")?;
                        if b != b'[' {
                            return Err(RecordsError::RecordsNotArray {
                                found: describe_byte(b),
                                offset: self.offset,
                            });
                        }
                        self.consume(1);
                        self.state = State::FirstElement;
                    } else {
                        self.skip_member_value()?;
                        self.state = State::NextMember;
                    }
                }
                State::FirstElement | State::NextElement => {
                    let first = self.state == State::FirstElement;
                    if self.closed_or_separated(b']', first, "the Records array")? {
                        self.state = State::NextMember;
                        continue;
                    }
                    self.read_element()?;
                    self.index += 1;
                    self.state = State::NextElement;
                    return Ok(true);
                }
                State::End => {
                    if let Some(_b) = self.peek_non_ws()? {
                        return Err(RecordsError::TrailingData {
                            offset: self.offset,
                        });
                    }
                    if !self.seen_records {
                        return Err(RecordsError::MissingRecords);
                    }
                    self.state = State::Done;
                }
                State::Done => return Ok(false),
            }
        }
    }
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = Result<Vec<u8>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r.to_vec())),
            Ok(None) => None,
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// Checks that a scanned value is UTF-8 (its syntax was checked while scanning).
fn check_utf8(raw: &[u8]) -> Result<(), String> {
    std::str::from_utf8(raw).map_err(|e| format!("invalid UTF-8: {e}"))?;
    Ok(())
}

/// Removes insignificant whitespace outside strings, leaving every other byte as it is.
pub fn minify_in_place(buf: &mut Vec<u8>) {
    let mut w = 0;
    let mut in_str = false;
    let mut escape = false;
    for r in 0..buf.len() {
        let b = buf[r];
        if in_str {
            if escape {
                escape = false;
            } else if b == b'\\' {
                escape = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if is_ws(b) {
            continue;
        } else if b == b'"' {
            in_str = true;
        }
        buf[w] = b;
        w += 1;
    }
    buf.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use serde_json::Value;
    use std::io::Write;

    const COMPACT_GZ: &[u8] =
        include_bytes!("../tests/fixtures/cloudtrail/SerializerTestFileCompact.json.gz");
    const LOKI_GZ: &[u8] =
        include_bytes!("../tests/fixtures/cloudtrail/loki-cloudtrail-log-file.json.gz");
    const NEW_FIELDS: &[u8] =
        include_bytes!("../tests/fixtures/cloudtrail/SerializerTestFileNewFieldsInRoot.json");
    const BAD_JSON: &[u8] =
        include_bytes!("../tests/fixtures/cloudtrail/SerializerTestFileBadJsonFormat.json");
    const ALL_NULL: &[u8] =
        include_bytes!("../tests/fixtures/cloudtrail/SerializerAllFieldsNull.json");

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordsError> {
        open_slice(bytes).collect()
    }

    /// The records as serde_json sees them (values, for comparison).
    fn reference(json: &[u8]) -> Vec<Value> {
        let v: Value = serde_json::from_slice(json).unwrap();
        v["Records"].as_array().unwrap().clone()
    }

    /// A reader that hands out one byte per read, to cross every buffer boundary.
    struct OneByte<'a>(&'a [u8]);
    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    /// A compact gzip delivery gives its records as the exact source bytes.
    #[test]
    fn compact_gzip_records_are_byte_exact() {
        let json = gunzip(COMPACT_GZ);
        let recs = all(COMPACT_GZ).unwrap();
        assert_eq!(recs.len(), 6);
        let want: Vec<Box<serde_json::value::RawValue>> = {
            #[derive(serde::Deserialize)]
            struct F {
                #[serde(rename = "Records")]
                records: Vec<Box<serde_json::value::RawValue>>,
            }
            serde_json::from_slice::<F>(&json).unwrap().records
        };
        for (got, want) in recs.iter().zip(&want) {
            assert_eq!(got.as_slice(), want.get().as_bytes());
        }
    }

    /// Gzip is recognised by magic bytes: the same bytes plain or gzip give the same records.
    #[test]
    fn plain_and_gzip_agree() {
        let json = gunzip(COMPACT_GZ);
        assert_eq!(all(&json).unwrap(), all(COMPACT_GZ).unwrap());
    }

    /// A multi-member gzip stream (split at an arbitrary byte) reads as one document.
    #[test]
    fn multi_member_gzip() {
        let json = gunzip(COMPACT_GZ);
        for split in [1, 17, json.len() / 2, json.len() - 1] {
            let mut multi = gzip(&json[..split]);
            multi.extend(gzip(&json[split..]));
            assert_eq!(
                all(&multi).unwrap(),
                all(&json).unwrap(),
                "split at {split}"
            );
        }
    }

    /// Pretty-printed records come out on one line, equal in value to the source.
    #[test]
    fn pretty_printed_records_are_compacted() {
        for src in [gunzip(LOKI_GZ), ALL_NULL.to_vec()] {
            let recs = all(&src).unwrap();
            let want = reference(&src);
            assert_eq!(recs.len(), want.len());
            for (got, want) in recs.iter().zip(&want) {
                assert!(!got.contains(&b'\n') && !got.contains(&b'\r'));
                assert!(!got.starts_with(b"{ ") && !got.contains(&b'\t'));
                let v: Value = serde_json::from_slice(got).unwrap();
                assert_eq!(&v, want);
            }
        }
    }

    /// Compacting keeps string bytes (spaces, escapes) and number spelling as they are.
    #[test]
    fn compaction_touches_only_whitespace_between_tokens() {
        let src = b"{\"Records\":[{\n  \"a\" : \"x  y\\n\\\" z\",\r\n  \"n\": 1.50e3,\n  \"l\": [ 1 , {\"k\" : null} ]\n}]}";
        let recs = all(src).unwrap();
        assert_eq!(
            recs,
            vec![b"{\"a\":\"x  y\\n\\\" z\",\"n\":1.50e3,\"l\":[1,{\"k\":null}]}".to_vec()]
        );
    }

    /// Records without raw line breaks pass unchanged, spaces and all; escaped newlines,
    /// HTML-safe escapes and non-ASCII text survive byte for byte.
    #[test]
    fn escapes_and_non_ascii_survive() {
        let rec = "{\"policy\": \"{\\n  \\\"a\\\": 1\\n}\", \"eq\":\"a\\u003db\\u0026c\",\"name\":\"Zoë 東京 😀\",\"big\":12345678901234567890123,\"f\":0.1000}";
        let src = format!("{{\"Records\":[{rec},{rec}]}}");
        let recs = all(src.as_bytes()).unwrap();
        assert_eq!(recs, vec![rec.as_bytes().to_vec(), rec.as_bytes().to_vec()]);
        let gz = gzip(src.as_bytes());
        assert_eq!(all(&gz).unwrap(), recs);
    }

    /// One byte per read gives the same records (escapes and strings split across reads).
    #[test]
    fn one_byte_reads() {
        let rec = r#"{"s":"a\\\"b\u00e9\n","t":[{"x":"]}"}],"u":"\\"}"#;
        let src = format!(
            "  {{\"k\":{{\"Records\":1}}, \"Records\" : [ {rec} , {rec} ] , \"z\": [\"]\"] }} \n"
        );
        let got: Vec<Vec<u8>> = open(OneByte(src.as_bytes()))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, vec![rec.as_bytes().to_vec(), rec.as_bytes().to_vec()]);
        let gz = gzip(src.as_bytes());
        let got2: Vec<Vec<u8>> = open(OneByte(&gz))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got2, got);
    }

    /// Unknown keys beside Records are ignored; an empty Records array is a valid file.
    #[test]
    fn unknown_keys_and_empty_records() {
        let recs = all(NEW_FIELDS).unwrap();
        assert_eq!(recs.len(), reference(NEW_FIELDS).len());
        assert!(!recs.is_empty());
        assert_eq!(all(b"{\"Records\": []}").unwrap().len(), 0);
        assert_eq!(all(b"{\"Records\":[]}\n").unwrap().len(), 0);
        assert_eq!(all(&gzip(b"{\"Records\":[]}")).unwrap().len(), 0);
    }

    fn err(bytes: &[u8]) -> String {
        match all(bytes) {
            Ok(r) => panic!("expected an error, got {} records", r.len()),
            Err(e) => e.to_string(),
        }
    }

    /// Every malformed shape is an error that says what is wrong.
    #[test]
    fn bad_inputs_are_named_errors() {
        let truncated = &gunzip(COMPACT_GZ)[..500];
        let mut corrupt = COMPACT_GZ.to_vec();
        let mid = corrupt.len() / 2;
        for b in &mut corrupt[mid..mid + 40] {
            *b ^= 0x5a;
        }
        let cut_gz = &COMPACT_GZ[..COMPACT_GZ.len() / 2];
        let cases: Vec<(&[u8], &str)> = vec![
            (BAD_JSON, "not valid JSON"),
            (b"", "the file is empty"),
            (b"  \n", "truncated"),
            (b"[{\"eventName\":\"x\"}]", "expected a JSON object with a Records array, found '['"),
            (
                b"{\"awsAccountId\":\"123456789012\",\"digestStartTime\":\"2024-01-01T00:00:00Z\",\"logFiles\":[]}",
                "no Records array",
            ),
            (b"{\"Records\":{}}", "Records is not an array"),
            (b"{\"Records\":[],\"Records\":[]}", "more than one Records"),
            (b"{\"Records\":[1]}", "record 0 is not a JSON object"),
            (b"{\"Records\":[{\"a\":1},\"x\"]}", "record 1 is not a JSON object"),
            (b"{\"Records\":[{\"a\":tru}]}", "record 0 is not valid JSON"),
            (b"{\"Records\":[{\"a\":\"\xff\"}]}", "invalid UTF-8"),
            (b"{\"Records\":[{\"a\":1} {\"b\":2}]}", "expected ',' or ']'"),
            (b"{\"Records\":[]} x", "unexpected data after the end"),
            (b"{\"Records\":[]}{\"Records\":[]}", "unexpected data after the end"),
            (b"{\"Records\":[], \"x\": nul}", "invalid JSON"),
            (b"{\"Records\":[{\"a\":1}", "truncated"),
            (truncated, "truncated"),
            (&corrupt, "corrupt gzip"),
            (cut_gz, "corrupt gzip"),
            (b"\x1f\x8b", "corrupt gzip"),
        ];
        for (input, want) in cases {
            let e = err(input);
            assert!(
                e.contains(want),
                "{:?}: {e:?} should contain {want:?}",
                String::from_utf8_lossy(&input[..input.len().min(40)])
            );
        }
    }

    /// Buffers handed from one reader to the next change nothing, across gzip and plain
    /// files, small and large records.
    #[test]
    fn recycled_buffers_read_the_same() {
        let big = format!(
            "{{\"Records\":[{{\"b\":\"{}\"}},{{\"c\":1}}]}}",
            "x".repeat(300_000)
        );
        let files: Vec<Vec<u8>> = vec![
            COMPACT_GZ.to_vec(),
            ALL_NULL.to_vec(),
            gzip(big.as_bytes()),
            NEW_FIELDS.to_vec(),
            LOKI_GZ.to_vec(),
            big.into_bytes(),
            b"{\"Records\":[]}".to_vec(),
            COMPACT_GZ.to_vec(),
        ];
        let mut bufs = Buffers::default();
        for f in &files {
            let mut r = open_slice_with(f, std::mem::take(&mut bufs));
            let mut got = Vec::new();
            while let Some(rec) = r.next_record().unwrap() {
                got.push(rec.to_vec());
            }
            bufs = r.into_buffers();
            assert_eq!(got, all(f).unwrap());
        }
        assert!(bufs.decoded.len() >= BUF_SIZE && bufs.input.len() >= BUF_SIZE);
    }

    /// Records are handed out one at a time: a file can be consumed before it is all read.
    #[test]
    fn streams_one_record_at_a_time() {
        let rec = b"{\"eventName\":\"x\"}";
        let mut src = b"{\"Records\":[".to_vec();
        src.extend_from_slice(rec);
        // The rest of the stream is broken: the first record must still come out first.
        src.extend_from_slice(b",{\"eventName\":");
        let mut r = open_slice(&src);
        assert_eq!(r.next_record().unwrap(), Some(&rec[..]));
        assert!(r.next_record().is_err());
    }
}
