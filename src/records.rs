//! Records: the bytes of one CloudTrail delivery file → its records, one at a time.
//!
//! [`RecordReader::read`] detects gzip by its magic bytes (never by key or metadata)
//! and decodes multi-member streams with flate2's `MultiGzDecoder`; anything else is
//! read as plain JSON. Every JSON value is parsed by serde_json: each element of the
//! `Records` array is taken as a [`RawValue`], i.e. as the bytes it has in the source,
//! so AWS's escapes (`\u003d`), key order and number spelling survive unchanged while
//! serde_json validates it (syntax, UTF-8). Between the values this module reads only
//! the document's punctuation — `{`, `:`, `,`, `[`, `]`, `}` and whitespace — so that
//! it can hand out one record at a time from a window of the decoded stream: memory
//! holds the window ([`WINDOW_BYTES`], or one record if larger), never the file.
//!
//! Why not serde_json over the whole stream (`from_reader` with a visitor over
//! `Records`): its reader path takes the input a byte at a time, and the 1 GB day's
//! records took 3.39 s of CPU that way against 0.57 s for the scanner this module had
//! before (`records/scan.rs`, a JSON grammar of our own) — a third more CPU for the
//! whole run. serde_json over slices of the window reads it at 1.5 GB/s, as fast as the
//! scanner within 10 % (BENCHMARKS.md, "Records: serde_json").
//!
//! **Fields, from the same parse.** When a later stage needs a record's fields (Parquet
//! output, `DAY_BY=event`, `DEDUP`), the element is parsed as a map of keys and
//! [`RawValue`]s instead of one `RawValue`: the same single pass over its bytes, which
//! also gives where each top-level key and value is ([`Record::fields`]). Nothing
//! downstream parses the record again; a value (`userIdentity`) is decoded only by the
//! stage that needs what is inside it.
//!
//! Every element must be an object. An element containing a raw line break (a
//! pretty-printed source) is re-written compactly — insignificant whitespace removed,
//! string and number bytes untouched — so that one record is always one line. The
//! file must be one JSON object with exactly one `Records` array; other keys beside
//! it are validated and ignored. Anything else is an error: this module never guesses.

use std::io::{self, BufReader, Cursor, Read};

use flate2::bufread::MultiGzDecoder;
use serde_json::value::RawValue;

/// How much of the decoded stream is read at a time (a window grows beyond it only to
/// hold one value larger than it).
pub const WINDOW_BYTES: usize = 1024 * 1024;
/// Size of the read buffer in front of the gzip decoder.
const BUF_SIZE: usize = 64 * 1024;

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
    #[error("record {index} is not a JSON object (it starts with {found})")]
    RecordNotObject { index: u64, found: String },
    #[error("record {index} is not valid JSON: {reason}")]
    InvalidRecord { index: u64, reason: String },
    #[error("Records is not an array (found {found} at byte {offset})")]
    RecordsNotArray { found: String, offset: u64 },
    #[error("invalid JSON at byte {offset}: {reason}")]
    Syntax { offset: u64, reason: String },
    #[error("truncated JSON: the file ends at byte {offset} inside {inside}")]
    Truncated { offset: u64, inside: &'static str },
    #[error("unexpected data after the end of the JSON object at byte {offset}")]
    TrailingData { offset: u64 },
    #[error("record {index} is larger than MAX_RECORD_BYTES ({limit} bytes; Athena reads rows of up to 32 MB): raise MAX_RECORD_BYTES to accept it")]
    RecordTooLarge { index: u64, limit: u64 },
    #[error("a JSON value at byte {offset} is larger than MAX_RECORD_BYTES ({limit} bytes): raise MAX_RECORD_BYTES to accept it")]
    TooLarge { offset: u64, limit: u64 },
    #[error("the file decodes to more than MAX_FILE_BYTES ({limit} bytes): raise MAX_FILE_BYTES to accept it")]
    FileTooLarge { limit: u64 },
}

/// True when `bytes` starts with the gzip magic number.
fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// The largest record a file may hold by default (`MAX_RECORD_BYTES`): Athena's
/// limit for one row, 32 MB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 32 * 1024 * 1024;
/// The largest decoded size of one file by default (`MAX_FILE_BYTES`): well above any
/// CloudTrail delivery file, well below what a gzip bomb decodes to.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// What one file may hold, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest record (or any other JSON value of the file), in bytes.
    pub record_bytes: u64,
    /// The largest decoded file, in bytes.
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            record_bytes: DEFAULT_MAX_RECORD_BYTES,
            file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Reads delivery files one after another, reusing its buffers from one to the next.
#[derive(Debug, Default)]
pub struct RecordReader {
    limits: Limits,
    /// Whether records are handed on with their fields.
    want_fields: bool,
    /// Whether the SHA-256 of each file's decoded bytes is taken, and the last one's.
    want_sha256: bool,
    sha256: Option<[u8; 32]>,
    fields: Vec<Field>,
    /// A window of the decoded bytes of a file.
    window: Vec<u8>,
    /// A record being compacted.
    line: Vec<u8>,
}

/// The stream of one file: gzip-decoded or plain, with the peeked bytes put back.
type Source<'r> = Box<dyn Read + 'r>;

impl RecordReader {
    /// A reader that refuses files past `limits` (without reading them whole).
    pub fn new(limits: Limits) -> Self {
        RecordReader {
            limits,
            ..RecordReader::default()
        }
    }

    /// A reader that hands every record on with its top-level fields.
    pub fn with_fields(mut self) -> Self {
        self.want_fields = true;
        self
    }

    /// A reader that also takes the SHA-256 of each file's decoded bytes as it reads
    /// them (what a CloudTrail digest lists): [`RecordReader::sha256`].
    pub fn with_sha256(mut self) -> Self {
        self.want_sha256 = true;
        self
    }

    /// The SHA-256 of the decoded bytes of the last file read to its end, when asked
    /// for with [`RecordReader::with_sha256`].
    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.sha256
    }

    /// Reads `source` (gzip or plain) and calls `each` with every record's bytes, in
    /// order. `each` returns `false` to stop reading; `Ok(None)` then says the file was
    /// not read to the end. Returns the number of records on success.
    pub fn read<'r, R: Read + 'r>(
        &mut self,
        source: R,
        each: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<Option<u64>, RecordsError> {
        self.read_records(source, &mut |r| each(r.bytes))
    }

    /// [`RecordReader::read`], handing on [`Record`]s (with their fields if
    /// [`RecordReader::with_fields`]).
    pub fn read_records<'r, R: Read + 'r>(
        &mut self,
        source: R,
        each: &mut dyn FnMut(Record<'_>) -> bool,
    ) -> Result<Option<u64>, RecordsError> {
        self.sha256 = None;
        let (gzip, decoded) = open(source).map_err(RecordsError::Io)?;
        let mut hash = self
            .want_sha256
            .then(|| aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256));
        let decoded: Source<'_> = match hash.as_mut() {
            Some(ctx) => Box::new(Hashing {
                inner: decoded,
                ctx,
            }),
            None => decoded,
        };
        self.window.clear();
        let mut w = Window {
            src: decoded,
            buf: &mut self.window,
            pos: 0,
            base: 0,
            eof: false,
            gzip,
            limits: self.limits,
        };
        let fields = self.want_fields.then_some(&mut self.fields);
        let result = parse(&mut w, &mut self.line, fields, each);
        // A JSON error in a gzip stream may really be a damaged stream whose garbage
        // decoded before its checksum was reached: the gzip error is the cause. (Read
        // on only within the file limit, and not past a limit already hit.)
        let json_error = matches!(&result, Err(e) if !matches!(e,
            RecordsError::Gzip(_) | RecordsError::TooLarge { .. } | RecordsError::RecordTooLarge { .. } | RecordsError::FileTooLarge { .. }));
        if gzip && json_error {
            let left = self
                .limits
                .file_bytes
                .saturating_sub(w.base + w.buf.len() as u64);
            if let Err(e) = io::copy(&mut (&mut w.src).take(left), &mut io::sink()) {
                return Err(RecordsError::Gzip(e));
            }
        }
        if matches!(result, Ok(Some(_))) && self.want_sha256 {
            // The parse stops at the end of the JSON (nothing but blanks may follow):
            // the hash covers the decoded file to its end, as the digest's does.
            io::copy(&mut w.src, &mut io::sink()).map_err(|e| match gzip {
                true => RecordsError::Gzip(e),
                false => RecordsError::Io(e),
            })?;
            drop(w);
            self.sha256 = hash.map(|ctx| {
                let d = ctx.finish();
                d.as_ref().try_into().expect("a SHA-256 is 32 bytes")
            });
        }
        result
    }
}

/// Where one top-level field of a record is in the record's bytes: its key (with its
/// quotes, as in the source) and its value (a JSON value's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Field {
    pub key: (u32, u32),
    pub value: (u32, u32),
}

/// One record as the records stage hands it on: its bytes (one line of NDJSON, as in
/// the source) and, when asked for, its top-level fields in source order.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub bytes: &'a [u8],
    pub fields: &'a [Field],
}

impl<'a> Record<'a> {
    /// A record without its fields.
    pub fn bytes(bytes: &'a [u8]) -> Record<'a> {
        Record { bytes, fields: &[] }
    }

    /// The key of `f`, unescaped (borrowed unless it holds an escape).
    pub fn key(&self, f: &Field) -> std::borrow::Cow<'a, str> {
        let quoted = &self.bytes[f.key.0 as usize..f.key.1 as usize];
        std::str::from_utf8(quoted)
            .ok()
            .and_then(json_str)
            .unwrap_or_default()
    }

    /// The JSON text of `f`'s value.
    pub fn value(&self, f: &Field) -> &'a str {
        let v = &self.bytes[f.value.0 as usize..f.value.1 as usize];
        // The records stage hands out validated JSON: UTF-8.
        std::str::from_utf8(v).unwrap_or_default()
    }

    /// Whether `f`'s key is `name` (as unescaped).
    pub fn key_is(&self, f: &Field, name: &str) -> bool {
        let quoted = &self.bytes[f.key.0 as usize..f.key.1 as usize];
        let inner = &quoted[1..quoted.len() - 1];
        inner == name.as_bytes() || (inner.contains(&b'\\') && self.key(f) == name)
    }
}

/// The string a JSON string's source text (`"…"`, quotes included) stands for: borrowed
/// when it holds no escape; `None` when the text is not a JSON string.
pub fn json_str(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(std::borrow::Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text)
        .ok()
        .map(std::borrow::Cow::Owned)
}

/// A record's top-level fields while it is parsed: each key's and value's address and
/// length in the bytes parsed (turned into [`Field`]s against the record's start). Its
/// buffer is reused from record to record (a fresh one per record cost the event day
/// ~12 % of its CPU in the allocator: ~1 KB is past glibc's per-thread cache).
struct FieldAddrs(Vec<[usize; 4]>);

thread_local! {
    static ADDRS: std::cell::RefCell<Vec<[usize; 4]>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for FieldAddrs {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        ADDRS.with(|a| *a.borrow_mut() = buf);
    }
}

impl<'de> serde::Deserialize<'de> for FieldAddrs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FieldAddrs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<FieldAddrs, A::Error> {
                let mut fields = ADDRS.with(|a| std::mem::take(&mut *a.borrow_mut()));
                fields.clear();
                while let Some(k) = map.next_key::<&'de RawValue>()? {
                    let v: &'de RawValue = map.next_value()?;
                    let (k, v) = (k.get(), v.get());
                    fields.push([k.as_ptr() as usize, k.len(), v.as_ptr() as usize, v.len()]);
                }
                Ok(FieldAddrs(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl FieldAddrs {
    /// The fields against a record starting at `start` (an address).
    fn spans(&self, start: usize, out: &mut Vec<Field>) {
        out.clear();
        out.extend(self.0.iter().map(|[k, kl, v, vl]| Field {
            key: ((k - start) as u32, (k - start + kl) as u32),
            value: ((v - start) as u32, (v - start + vl) as u32),
        }));
    }
}

/// The top-level fields of `record` (one JSON object): for a record the records stage
/// re-wrote (a pretty-printed source, compacted), and for records made elsewhere.
pub fn fields_of(record: &[u8], out: &mut Vec<Field>) -> Result<(), serde_json::Error> {
    let addrs: FieldAddrs = serde_json::from_slice(record)?;
    addrs.spans(record.as_ptr() as usize, out);
    Ok(())
}

/// One delivery file to read: its key, its size and ETag in the listing, and its body.
pub struct SourceFile<R> {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub body: R,
}

/// A file read to its end, as [`RecordSink::file_done`] hears of it.
#[derive(Debug, Clone, Copy)]
pub struct FileDone<'a> {
    pub key: &'a str,
    pub size: u64,
    pub etag: Option<&'a str>,
    /// Records it held.
    pub records: u64,
    /// The SHA-256 of its decoded bytes, when [`RecordSink::wants_sha256`].
    pub sha256: Option<[u8; 32]>,
}

/// Where the records stage puts what it reads.
pub trait RecordSink {
    /// A file begins: the records until the next `file_start` are its.
    fn file_start(&mut self, _key: &str) {}
    /// Whether records are to come with their fields ([`Record::fields`]).
    fn wants_fields(&self) -> bool {
        false
    }
    /// One record, without its newline; `false` stops the stage (the next one has gone,
    /// or the sink refused the record and keeps the reason).
    fn record(&mut self, record: Record<'_>) -> bool;
    /// Whether the SHA-256 of each file's decoded bytes is wanted in `file_done`.
    fn wants_sha256(&self) -> bool {
        false
    }
    /// A file was read to its end.
    fn file_done(&mut self, _file: &FileDone<'_>) {}
}

/// Totals of the records stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub files: u64,
    pub records: u64,
    /// Bytes of the source objects as stored (mostly gzip).
    pub bytes_read: u64,
}

/// Why a file of the day could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Its content is not a CloudTrail delivery file.
    #[error("{key}: {source}")]
    Records {
        key: String,
        #[source]
        source: RecordsError,
    },
    /// Its body could not be read (a lost connection, a timeout).
    #[error("{key}: {source}")]
    Read {
        key: String,
        #[source]
        source: io::Error,
    },
    /// Its body was not as long as the listing said (it changed since).
    #[error("{key}: read {read} bytes, but the listing said {listed}")]
    Size { key: String, read: u64, listed: u64 },
}

/// The records stage: reads `files` in order and hands every record to `sink`.
/// `Ok(None)` when the sink stopped it.
pub fn read_files<R: Read>(
    files: impl IntoIterator<Item = SourceFile<R>>,
    limits: Limits,
    sink: &mut impl RecordSink,
) -> Result<Option<ReadStats>, FileError> {
    let mut reader = RecordReader::new(limits);
    if sink.wants_fields() {
        reader = reader.with_fields();
    }
    if sink.wants_sha256() {
        reader = reader.with_sha256();
    }
    let mut stats = ReadStats::default();
    for file in files {
        sink.file_start(&file.key);
        let mut body = Counting {
            inner: file.body,
            count: 0,
            failure: None,
        };
        let read = reader.read_records(&mut body, &mut |r| sink.record(r));
        let records = match (read, body.failure.take()) {
            (Ok(Some(n)), _) => n,
            (Ok(None), _) => return Ok(None),
            // The body's own read failed (connection lost, timeout): not the content.
            (Err(_), Some(source)) => {
                return Err(FileError::Read {
                    key: file.key,
                    source,
                })
            }
            (Err(source), None) => {
                return Err(FileError::Records {
                    key: file.key,
                    source,
                })
            }
        };
        if body.count != file.size {
            let (read, listed) = (body.count, file.size);
            return Err(FileError::Size {
                key: file.key,
                read,
                listed,
            });
        }
        stats.files += 1;
        stats.records += records;
        stats.bytes_read += body.count;
        sink.file_done(&FileDone {
            key: &file.key,
            size: file.size,
            etag: file.etag.as_deref(),
            records,
            sha256: reader.sha256(),
        });
    }
    Ok(Some(stats))
}

/// Counts the bytes read through it, and keeps the first error of the source itself,
/// so that a lost connection is reported as a failed read, not as whatever the gzip
/// decoder made of it.
struct Counting<R> {
    inner: R,
    count: u64,
    failure: Option<io::Error>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::Interrupted || self.failure.is_some() {
                    return Err(e);
                }
                // The reader sees a stand-in; the error itself is reported.
                let stand_in = io::Error::new(e.kind(), "the source's read failed");
                self.failure = Some(e);
                Err(stand_in)
            }
        }
    }
}

/// Passes the decoded bytes of a file through a SHA-256 as they are read.
struct Hashing<'c, R> {
    inner: R,
    ctx: &'c mut aws_lc_rs::digest::Context,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }
}

/// Peeks at the first two bytes of `source` and wraps it in a gzip decoder when they
/// are the gzip magic.
fn open<'r, R: Read + 'r>(mut source: R) -> io::Result<(bool, Source<'r>)> {
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
    let peeked = Cursor::new(head).take(n as u64).chain(source);
    if is_gzip(&head[..n]) {
        let buffered = BufReader::with_capacity(BUF_SIZE, peeked);
        Ok((true, Box::new(MultiGzDecoder::new(buffered))))
    } else {
        Ok((false, Box::new(peeked)))
    }
}

/// A window of the decoded stream: `buf[pos..]` is what is not read yet; `base` is
/// the stream offset of `buf[0]`.
struct Window<'a, 'r> {
    src: Source<'r>,
    buf: &'a mut Vec<u8>,
    pos: usize,
    base: u64,
    eof: bool,
    gzip: bool,
    limits: Limits,
}

impl Window<'_, '_> {
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more of the stream into the window; `false` at its end.
    fn fill(&mut self) -> Result<bool, RecordsError> {
        if self.eof {
            return Ok(false);
        }
        // Keep only the unread part, at the front.
        self.buf.drain(..self.pos);
        self.base += self.pos as u64;
        self.pos = 0;
        let len = self.buf.len();
        // `len` bytes are one value not yet whole: past the limit, stop reading it.
        if len as u64 > self.limits.record_bytes {
            let (offset, limit) = (self.base, self.limits.record_bytes);
            return Err(RecordsError::TooLarge { offset, limit });
        }
        let decoded = self.base + len as u64;
        if decoded > self.limits.file_bytes {
            let limit = self.limits.file_bytes;
            return Err(RecordsError::FileTooLarge { limit });
        }
        let want = WINDOW_BYTES.max(2 * len);
        // Into the buffer's spare capacity (kept from file to file): nothing is zeroed.
        // One byte past the file limit, to tell a file at the limit from a larger one.
        let room = (want - len) as u64;
        let read = (&mut self.src)
            .take(room.min(self.limits.file_bytes + 1 - decoded))
            .read_to_end(self.buf)
            .map_err(|e| {
                if self.gzip {
                    RecordsError::Gzip(e)
                } else {
                    RecordsError::Io(e)
                }
            })?;
        if self.base + self.buf.len() as u64 > self.limits.file_bytes {
            let limit = self.limits.file_bytes;
            return Err(RecordsError::FileTooLarge { limit });
        }
        if (read as u64) < room {
            self.eof = true;
        }
        Ok(read > 0)
    }

    /// The next byte that is not whitespace, not consumed; `None` at the stream's end.
    fn peek(&mut self) -> Result<Option<u8>, RecordsError> {
        loop {
            let skip = self.unread().iter().take_while(|b| is_ws(**b)).count();
            self.pos += skip;
            if let Some(&b) = self.unread().first() {
                return Ok(Some(b));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Consumes `want` (after whitespace), or fails saying what was found instead.
    fn expect(&mut self, want: u8, inside: &'static str) -> Result<(), RecordsError> {
        match self.peek()? {
            Some(b) if b == want => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(RecordsError::Syntax {
                offset: self.offset(),
                reason: format!("expected '{}', found {}", want as char, describe_byte(b)),
            }),
            None => Err(self.truncated(inside)),
        }
    }

    fn truncated(&self, inside: &'static str) -> RecordsError {
        RecordsError::Truncated {
            offset: self.base + self.buf.len() as u64,
            inside,
        }
    }
}

/// Parses one JSON value of type `T` at the start of `bytes` (after whitespace):
/// `Ok(Some((value, end)))`, or `Ok(None)` when `bytes` ends inside it (or right at its
/// end, where a number could go on).
fn one_value<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<Option<(T, usize)>, serde_json::Error> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<T>();
    match values.next() {
        Some(Ok(v)) if values.byte_offset() < bytes.len() => Ok(Some((v, values.byte_offset()))),
        Some(Ok(_)) | None => Ok(None),
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => Err(e),
    }
}

/// The byte offset in `bytes` of serde_json's `line` and `column` (both from 1).
fn offset_of(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)
            .map_or(bytes.len(), |(i, _)| i + 1)
    };
    (line_start + column.saturating_sub(1)).min(bytes.len())
}

/// serde_json's message without its ` at line L column C`.
fn reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Parses the next value of type `$t` from the window `$w`, reading more of the stream
/// until the window holds all of it: `Ok((value, end))`, `end` its end in `$w.buf`.
/// A value the stream ends inside is `$w.truncated($inside)`; invalid JSON is
/// `$err(offset, reason)`. (A macro, not a function: the value borrows the window,
/// which the loop refills, and only inline does the borrow checker see that a refill
/// happens only when no value was borrowed.)
macro_rules! next_value {
    ($w:expr, $t:ty, $inside:expr, $err:expr) => {{
        loop {
            let start = $w.pos;
            match one_value::<$t>(&$w.buf[start..]) {
                Ok(Some((v, end))) => break Ok((v, start + end)),
                Ok(None) => {
                    let more = match $w.fill() {
                        Ok(more) => more,
                        Err(e) => break Err(e),
                    };
                    if !more {
                        // The stream ended: the value is whole only if it parses now.
                        let start = $w.pos;
                        let mut all = serde_json::Deserializer::from_slice(&$w.buf[start..])
                            .into_iter::<$t>();
                        break match all.next() {
                            Some(Ok(v)) => Ok((v, start + all.byte_offset())),
                            Some(Err(e)) if !e.is_eof() => Err($err(
                                $w.base
                                    + (start + offset_of(&$w.buf[start..], e.line(), e.column()))
                                        as u64,
                                reason(&e),
                            )),
                            _ => Err($w.truncated($inside)),
                        };
                    }
                }
                Err(e) => {
                    break Err($err(
                        $w.base
                            + (start + offset_of(&$w.buf[start..], e.line(), e.column())) as u64,
                        reason(&e),
                    ))
                }
            }
        }
    }};
}

/// Parses a whole document from the window, handing every record to `each` (with its
/// fields, into `fields`, when given).
fn parse(
    w: &mut Window<'_, '_>,
    line: &mut Vec<u8>,
    mut fields: Option<&mut Vec<Field>>,
    each: &mut dyn FnMut(Record<'_>) -> bool,
) -> Result<Option<u64>, RecordsError> {
    let syntax = |offset, reason| RecordsError::Syntax { offset, reason };
    match w.peek()? {
        None if w.offset() == 0 => return Err(RecordsError::Empty),
        None => return Err(w.truncated("leading whitespace")),
        Some(b'{') => w.pos += 1,
        Some(b) => {
            return Err(RecordsError::NotAnObject {
                found: describe_byte(b),
                offset: w.offset(),
            })
        }
    }
    let mut records: Option<u64> = None;
    let mut first = true;
    loop {
        match w.peek()? {
            None => return Err(w.truncated("the top-level object")),
            Some(b'}') => {
                w.pos += 1;
                break;
            }
            Some(_) if first => {}
            Some(_) => w.expect(b',', "the top-level object")?,
        }
        first = false;
        let (key, end) = next_value!(w, String, "a key", syntax)?;
        w.pos = end;
        w.expect(b':', "the top-level object")?;
        if key != "Records" {
            let (_, end) = next_value!(w, &RawValue, "a value", syntax)?;
            w.pos = end;
            continue;
        }
        if records.is_some() {
            return Err(RecordsError::DuplicateRecords);
        }
        match w.peek()? {
            Some(b'[') => w.pos += 1,
            Some(b) => {
                return Err(RecordsError::RecordsNotArray {
                    found: describe_byte(b),
                    offset: w.offset(),
                })
            }
            None => return Err(w.truncated("the Records array")),
        }
        let mut index = 0u64;
        loop {
            match w.peek()? {
                None => return Err(w.truncated("the Records array")),
                Some(b']') => {
                    w.pos += 1;
                    break;
                }
                Some(_) if index == 0 => {}
                Some(b',') => w.pos += 1,
                Some(b) => {
                    return Err(RecordsError::Syntax {
                        offset: w.offset(),
                        reason: format!(
                            "expected ',' or ']' after record {}, found {}",
                            index - 1,
                            describe_byte(b)
                        ),
                    })
                }
            }
            let invalid = |_, reason| RecordsError::InvalidRecord { index, reason };
            let too_large = |e| match e {
                RecordsError::TooLarge { limit, .. } => {
                    RecordsError::RecordTooLarge { index, limit }
                }
                e => e,
            };
            match w.peek()? {
                Some(b'{') => {}
                Some(b) if fields.is_some() => {
                    let found = describe_byte(b);
                    return Err(RecordsError::RecordNotObject { index, found });
                }
                _ => {}
            }
            let (bytes, end) = match fields.as_deref_mut() {
                None => {
                    let (raw, end) =
                        next_value!(w, &RawValue, "a record", invalid).map_err(too_large)?;
                    (raw.get().as_bytes(), end)
                }
                Some(out) => {
                    let (addrs, end) =
                        next_value!(w, FieldAddrs, "a record", invalid).map_err(too_large)?;
                    let bytes = &w.buf[w.pos..end];
                    addrs.spans(bytes.as_ptr() as usize, out);
                    (bytes, end)
                }
            };
            let limit = w.limits.record_bytes;
            if bytes.len() as u64 > limit {
                return Err(RecordsError::RecordTooLarge { index, limit });
            }
            if bytes.first() != Some(&b'{') {
                let found = describe_byte(bytes[0]);
                return Err(RecordsError::RecordNotObject { index, found });
            }
            let no_fields: &[Field] = &[];
            let go_on = if bytes.contains(&b'\n') || bytes.contains(&b'\r') {
                line.clear();
                line.extend_from_slice(bytes);
                minify_in_place(line);
                match fields.as_deref_mut() {
                    Some(out) => {
                        fields_of(line, out).map_err(|e| RecordsError::InvalidRecord {
                            index,
                            reason: reason(&e),
                        })?;
                        each(Record {
                            bytes: line,
                            fields: out,
                        })
                    }
                    None => each(Record::bytes(line)),
                }
            } else {
                let fields = fields.as_deref().map_or(no_fields, |f| f.as_slice());
                each(Record { bytes, fields })
            };
            w.pos = end;
            index += 1;
            if !go_on {
                return Ok(None);
            }
        }
        records = Some(index);
    }
    if w.peek()?.is_some() {
        return Err(RecordsError::TrailingData { offset: w.offset() });
    }
    records.map(Some).ok_or(RecordsError::MissingRecords)
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

/// Removes insignificant whitespace outside strings, leaving every other byte as it is.
fn minify_in_place(buf: &mut Vec<u8>) {
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

    type KeyValues = Vec<(String, String)>;

    /// Every record of `bytes` with its fields read as `(key, value text)`, through the
    /// reader with fields, and the records through the one without.
    fn with_fields(bytes: &[u8]) -> Vec<(Vec<u8>, KeyValues)> {
        let mut out = Vec::new();
        RecordReader::default()
            .with_fields()
            .read_records(bytes, &mut |r| {
                let fields = r
                    .fields
                    .iter()
                    .map(|f| (r.key(f).into_owned(), r.value(f).to_string()));
                out.push((r.bytes.to_vec(), fields.collect()));
                true
            })
            .unwrap();
        assert_eq!(
            out.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>(),
            all(bytes).unwrap(),
            "the same records with fields as without"
        );
        out
    }

    /// The records stage's one parse gives each record's top-level fields, in source
    /// order, each value as its source text; escaped keys read unescaped; a
    /// pretty-printed record's fields point into its compacted line.
    #[test]
    fn records_come_with_their_fields() {
        let doc = br#"{"Records":[ {"a":1,"b":{"c":[1,2]},"k\u0065y":"v\u003d"} ,
            {
              "eventTime" : "2024-02-12T00:00:00Z",
              "x" : { "y" : null }
            }, {}]}"#;
        let got = with_fields(doc);
        let fields: Vec<Vec<(String, String)>> = got.iter().map(|(_, f)| f.clone()).collect();
        assert_eq!(
            fields,
            vec![
                vec![
                    ("a".into(), "1".into()),
                    ("b".into(), r#"{"c":[1,2]}"#.into()),
                    ("key".into(), r#""v\u003d""#.into()),
                ],
                vec![
                    ("eventTime".into(), r#""2024-02-12T00:00:00Z""#.into()),
                    ("x".into(), r#"{"y":null}"#.into()),
                ],
                vec![],
            ]
        );
        // The real fixtures: every field, against serde_json's own reading.
        for file in [gunzip(COMPACT_GZ), NEW_FIELDS.to_vec(), ALL_NULL.to_vec()] {
            for (bytes, fields) in with_fields(&file) {
                let v: serde_json::Map<String, Value> = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(fields.len(), v.len());
                for (k, text) in fields {
                    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v[&k], "{k}");
                }
            }
        }
        // A record that is not an object is refused as before.
        let mut r = RecordReader::default().with_fields();
        let err = r
            .read_records(&br#"{"Records":[[1]]}"#[..], &mut |_| true)
            .unwrap_err();
        assert!(
            matches!(err, RecordsError::RecordNotObject { index: 0, .. }),
            "{err:?}"
        );
    }

    fn all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordsError> {
        let mut out = Vec::new();
        RecordReader::default().read(bytes, &mut |r| {
            out.push(r.to_vec());
            true
        })?;
        Ok(out)
    }

    /// The records of `bytes` read as a stream: a file larger than `WINDOW_BYTES`
    /// made of `bytes` and padding whitespace before its end, so that the streaming
    /// parser is the one that reads it.
    fn streamed(bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordsError> {
        let json = if is_gzip(bytes) {
            gunzip(bytes)
        } else {
            bytes.to_vec()
        };
        let mut padded = vec![b' '; WINDOW_BYTES + 1];
        padded.splice(0..0, json);
        all(&padded)
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

    /// A compact gzip delivery gives its records as the exact source bytes, from
    /// memory and streamed alike.
    #[test]
    fn compact_gzip_records_are_byte_exact() {
        let json = gunzip(COMPACT_GZ);
        let recs = all(COMPACT_GZ).unwrap();
        assert_eq!(recs.len(), 6);
        let want: Vec<Box<RawValue>> = {
            #[derive(serde::Deserialize)]
            struct F {
                #[serde(rename = "Records")]
                records: Vec<Box<RawValue>>,
            }
            serde_json::from_slice::<F>(&json).unwrap().records
        };
        for (got, want) in recs.iter().zip(&want) {
            assert_eq!(got.as_slice(), want.get().as_bytes());
        }
        assert_eq!(streamed(COMPACT_GZ).unwrap(), recs);
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
            assert_eq!(streamed(&src).unwrap(), recs);
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
        assert_eq!(streamed(&gz).unwrap(), recs);
    }

    /// Numbers past f64's range are valid JSON and pass through as they are (found by
    /// tests/fuzz.rs, where serde_json's `Value` refused them as a reference).
    #[test]
    fn numbers_of_any_size_pass_through() {
        let rec = r#"{"n":1e999,"m":-123456789012345678901234567890,"f":0.1e-999}"#;
        let src = format!("{{\"Records\":[{rec}]}}");
        assert_eq!(all(src.as_bytes()).unwrap(), vec![rec.as_bytes().to_vec()]);
    }

    /// One byte per read gives the same records (escapes and strings split across reads).
    #[test]
    fn one_byte_reads() {
        let rec = r#"{"s":"a\\\"b\u00e9\n","t":[{"x":"]}"}],"u":"\\"}"#;
        let src = format!(
            "  {{\"k\":{{\"Records\":1}}, \"Records\" : [ {rec} , {rec} ] , \"z\": [\"]\"] }} \n"
        );
        let read = |bytes: &[u8]| {
            let mut got = Vec::new();
            RecordReader::default()
                .read(OneByte(bytes), &mut |r| {
                    got.push(r.to_vec());
                    true
                })
                .unwrap();
            got
        };
        let got = read(src.as_bytes());
        assert_eq!(got, vec![rec.as_bytes().to_vec(), rec.as_bytes().to_vec()]);
        assert_eq!(read(&gzip(src.as_bytes())), got);
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

    /// Every malformed shape is an error that says what is wrong, from memory and
    /// streamed alike.
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
            (b"{\"Records\":[{\"a\":\"\xff\"}]}", "record 0 is not valid JSON"),
            (b"{\"Records\":[{\"a\":1} {\"b\":2}]}", "expected ',' or ']' after record 0"),
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
            // The streaming parser says the same (whitespace-only and empty files
            // aside: padding makes them other files).
            if !input.iter().all(|b| is_ws(*b)) && !is_gzip(input) && !want.contains("after") {
                let s = streamed(input).unwrap_err().to_string();
                assert!(s.contains(want), "streamed {s:?} should contain {want:?}");
            }
        }
    }

    /// Buffers reused from one file to the next change nothing, across gzip and plain
    /// files, small and large ones.
    #[test]
    fn reused_reader_reads_the_same() {
        let big = format!(
            "{{\"Records\":[{{\"b\":\"{}\"}},{{\"c\":1}}]}}",
            "x".repeat(WINDOW_BYTES + 10)
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
        let mut reader = RecordReader::default();
        for f in &files {
            let mut got = Vec::new();
            reader
                .read(&f[..], &mut |r| {
                    got.push(r.to_vec());
                    true
                })
                .unwrap();
            assert_eq!(got, all(f).unwrap());
        }
    }

    /// A source that breaks off mid-file (a lost connection), read by the records stage:
    /// a failed read of that file, naming the source's own error, not a "corrupt gzip".
    #[test]
    fn a_broken_source_is_a_read_error() {
        struct Broken<'a>(&'a [u8]);
        impl Read for Broken<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "connection reset by peer",
                    ));
                }
                let n = self.0.len().min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        struct Count(u64);
        impl RecordSink for Count {
            fn record(&mut self, _: Record<'_>) -> bool {
                self.0 += 1;
                true
            }
        }
        fn file<R: Read>(body: R, size: usize) -> SourceFile<R> {
            SourceFile {
                key: "AWSLogs/111111111111/CloudTrail/us-east-1/2024/02/12/f.json.gz".into(),
                size: size as u64,
                etag: None,
                body,
            }
        }
        let whole = gzip(&gunzip(COMPACT_GZ));
        let half = Broken(&whole[..whole.len() / 2]);
        match read_files([file(half, whole.len())], Limits::default(), &mut Count(0)) {
            Err(FileError::Read { key, source }) => {
                assert!(key.ends_with("/f.json.gz"));
                assert_eq!(source.to_string(), "connection reset by peer");
            }
            other => panic!("{other:?}"),
        }
        // Read whole, but shorter than listed: the object changed since the listing.
        let mut count = Count(0);
        let err = read_files(
            [file(&whole[..], whole.len() + 1)],
            Limits::default(),
            &mut count,
        )
        .unwrap_err();
        assert!(err.to_string().contains("but the listing said"), "{err}");
        // And whole: the totals.
        let stats = read_files(
            [file(&whole[..], whole.len())],
            Limits::default(),
            &mut count,
        )
        .unwrap()
        .unwrap();
        assert_eq!((stats.files, stats.records), (1, 6));
        assert_eq!(stats.bytes_read, whole.len() as u64);
    }

    /// A file several windows long reads the same as serde_json reads it whole,
    /// wherever the window's edges fall: inside strings, escapes, numbers, between
    /// records, in the whitespace between tokens.
    #[test]
    fn window_edges_change_nothing() {
        let mut recs = Vec::new();
        let mut len = 0;
        let mut i = 0u64;
        while len < 3 * WINDOW_BYTES + 12_345 {
            let pad = "\\u003d\\\"é".repeat((i % 37) as usize);
            let r = format!(
                "{{\"eventID\":\"{i}\",\"s\":\"{pad}\",\"n\":{},\"a\":[{}, true,null]}}",
                i * 7919,
                i % 10
            );
            len += r.len() + 3;
            recs.push(r);
            i += 1;
        }
        let src = format!(
            "{{ \"x\" : 12345 , \"Records\" :\n [ {} ] }}",
            recs.join(" ,\n")
        );
        let want: Vec<Vec<u8>> = recs.iter().map(|r| r.as_bytes().to_vec()).collect();
        assert_eq!(all(src.as_bytes()).unwrap(), want);
        assert_eq!(all(&gzip(src.as_bytes())).unwrap(), want);
        // A number cut by the window's end is not taken as whole: `12345` starts 3 bytes
        // before it (taken as `123`, the `45` after it would be an error).
        let tail = format!(
            "{{\"Records\":[],\"x\":{}12345}}",
            " ".repeat(WINDOW_BYTES - 21)
        );
        assert_eq!(tail.find("12345"), Some(WINDOW_BYTES - 3));
        assert_eq!(all(tail.as_bytes()).unwrap().len(), 0);
    }

    /// An endless source: `head`, then `fill` over and over; counts what was read.
    struct Endless {
        head: Vec<u8>,
        fill: Vec<u8>,
        at: usize,
        read: u64,
    }
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(64 * 1024);
            for b in &mut buf[..n] {
                *b = if self.at < self.head.len() {
                    self.head[self.at]
                } else {
                    self.fill[(self.at - self.head.len()) % self.fill.len()]
                };
                self.at += 1;
            }
            self.read += n as u64;
            Ok(n)
        }
    }

    /// A record past MAX_RECORD_BYTES, or a file decoding past MAX_FILE_BYTES, fails
    /// naming the limit and how to raise it, having read little more than the limit.
    #[test]
    fn limits_stop_a_hostile_file_early() {
        let limits = Limits {
            record_bytes: 3 * WINDOW_BYTES as u64,
            file_bytes: 20 * WINDOW_BYTES as u64,
        };
        // One endless record.
        let mut src = Endless {
            head: b"{\"Records\":[{\"a\":1},{\"x\":\"".to_vec(),
            fill: b"abcdefgh".to_vec(),
            at: 0,
            read: 0,
        };
        let mut n = 0;
        let err = RecordReader::new(limits)
            .read(&mut src, &mut |_| {
                n += 1;
                true
            })
            .unwrap_err();
        assert_eq!(n, 1);
        assert!(
            matches!(err, RecordsError::RecordTooLarge { index: 1, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("raise MAX_RECORD_BYTES"), "{text}");
        assert!(
            src.read <= limits.record_bytes * 2 + WINDOW_BYTES as u64,
            "{}",
            src.read
        );
        // Endless small records, gzip-compressed (a gzip bomb, streamed).
        let record = b"{\"eventID\":\"0123456789\"},".to_vec();
        let mut plain = b"{\"Records\":[".to_vec();
        plain.extend(record.repeat(WINDOW_BYTES * 30 / record.len()));
        let bomb = gzip(&plain);
        let mut n = 0u64;
        let err = RecordReader::new(limits)
            .read(&bomb[..], &mut |_| {
                n += 1;
                true
            })
            .unwrap_err();
        assert!(matches!(err, RecordsError::FileTooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("raise MAX_FILE_BYTES"), "{err}");
        assert!(
            n * (record.len() as u64) <= limits.file_bytes,
            "{n} records"
        );
        // At the limits, a file still reads.
        let ok = format!(
            "{{\"Records\":[{{\"x\":\"{}\"}}]}}",
            "y".repeat(2 * WINDOW_BYTES)
        );
        assert_eq!(
            RecordReader::new(limits)
                .read(ok.as_bytes(), &mut |_| true)
                .unwrap(),
            Some(1)
        );
        let small = Limits {
            record_bytes: 10,
            ..limits
        };
        let err = RecordReader::new(small)
            .read(ok.as_bytes(), &mut |_| true)
            .unwrap_err();
        assert!(
            matches!(
                err,
                RecordsError::RecordTooLarge {
                    index: 0,
                    limit: 10
                }
            ),
            "{err:?}"
        );
    }

    /// Records are handed out one at a time: a streamed file's first record comes out
    /// before the rest is read, and the reader stops when asked to.
    #[test]
    fn streams_one_record_at_a_time() {
        let rec = b"{\"eventName\":\"x\"}";
        let mut src = b"{\"Records\":[".to_vec();
        src.extend_from_slice(rec);
        src.push(b',');
        src.extend(std::iter::repeat_n(b' ', WINDOW_BYTES));
        // The rest of the stream is broken: the first record must still come out first.
        src.extend_from_slice(b"{\"eventName\":");
        let mut got = Vec::new();
        let res = RecordReader::default().read(&src[..], &mut |r| {
            got.push(r.to_vec());
            true
        });
        assert_eq!(got, vec![rec.to_vec()]);
        assert!(
            matches!(res, Err(RecordsError::Truncated { .. })),
            "{res:?}"
        );
        // Asked to stop after the first record: not read to the end, no error.
        let two = b"{\"Records\":[{\"a\":1},{\"b\":2}]}";
        let mut n = 0;
        let res = RecordReader::default().read(&two[..], &mut |_| {
            n += 1;
            false
        });
        assert_eq!((n, res.unwrap()), (1, None));
    }

    /// The SHA-256 taken while reading is that of the decoded bytes — to the end of the
    /// file, trailing blanks and a second gzip member included — and of the bytes as
    /// they are for a plain file; a file not read to its end has none.
    #[test]
    fn sha256_of_the_decoded_bytes() {
        let sha = |b: &[u8]| -> [u8; 32] {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
            d.as_ref().try_into().unwrap()
        };
        let body = b"{\"Records\":[{\"a\":1},{\"b\":2}]}\n\n".to_vec();
        let mut two = gzip(&body[..10]);
        two.extend(gzip(&body[10..]));
        for (what, stored) in [
            ("gzip", gzip(&body)),
            ("two members", two),
            ("plain", body.clone()),
        ] {
            let mut r = RecordReader::new(Limits::default()).with_sha256();
            assert_eq!(
                r.read(&stored[..], &mut |_| true).unwrap(),
                Some(2),
                "{what}"
            );
            assert_eq!(r.sha256(), Some(sha(&body)), "{what}");
            // Stopped after the first record: no hash of a part.
            assert_eq!(r.read(&stored[..], &mut |_| false).unwrap(), None, "{what}");
            assert_eq!(r.sha256(), None, "{what}");
        }
        let mut plain = RecordReader::new(Limits::default());
        plain.read(&body[..], &mut |_| true).unwrap();
        assert_eq!(plain.sha256(), None, "not asked for");
    }
}
