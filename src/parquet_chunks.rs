//! Parquet chunks: records → Parquet files of the CloudTrail table (`OUTPUT_FORMAT=parquet`).
//! The chunks stage for that format: like [`crate::chunks`], no I/O of its own, and the
//! file's bytes are handed out in pieces as row groups are written.
//!
//! **Schema.** The columns of AWS's CloudTrail table ([`crate::table::COLUMNS`]), with its
//! lower-case names and types: `useridentity`, `addendum`, `tlsdetails` Parquet groups,
//! `resources` a list of groups, `webidfederationdata.attributes` a map, the rest strings —
//! so a query reads only the leaf columns it names, and a query written for AWS's table
//! runs unchanged. Then `eventtime_ts`, `eventTime`'s instant as a TIMESTAMP (UTC, µs; null
//! when it is not an RFC 3339 time), and [`OTHER_FIELDS`].
//!
//! **Values, as Athena's JSON SerDe reads the NDJSON.** A JSON string is its value; JSON
//! `null` and an absent key are SQL NULL alike, in every column and struct field; a
//! boolean in a string column (`readonly`, `managementevent`) is `'true'` or `'false'`;
//! an object or array in a string column (`requestparameters`, …) is its JSON text,
//! compact, keys in source order, escapes as JSON needs them and no more (`\u003d` is
//! `=`), integers as written and other numbers as their shortest double form (what
//! DuckDB's JSON reader gives; Athena's OpenX SerDe keeps a decimal's trailing zeros).
//! JSON keys are matched to columns and struct fields as CloudTrail spells them
//! (`sessionIssuer`, `ARN`).
//!
//! **Nothing is lost: `otherfields`.** A JSON object (null when empty) of every part of a
//! record no column holds exactly: a key the table does not name, at any depth (a field
//! CloudTrail adds later: `{"userIdentity":{"inScopeOf":{…}}}`), as its source text; a
//! value of another type than its column's, as in the source (a string `readOnly`, a
//! number in a string field: the column holds its text too, as the SerDe would); a
//! `resources` or map that does not fit whole, whole; a key that occurs a second time
//! (the second). A record reads back as its non-null columns, in CloudTrail's key
//! spelling (JSON text parsed, `'true'`/`'false'` as booleans), with `otherfields` merged
//! over them — an object into an object key by key, anything else replacing. What that
//! cannot give back: JSON `null` against an absent key, the order of keys, and the exact
//! spelling of numbers and escapes, which the NDJSON output keeps byte for byte.
//!
//! **Files.** zstd (level [`ZSTD_LEVEL`]). A row group is closed once the parquet crate's
//! estimate of its encoded size reaches `PARQUET_ROW_GROUP_BYTES`; a file once its bytes
//! written plus the row group's estimate reach `PARQUET_FILE_BYTES` (so it ends at most
//! one batch of [`BATCH_BYTES`] of records above that size). Statistics are on; the
//! footer's `created_by` is fixed and nothing depends on the clock: the same records give
//! the same bytes. Memory holds one batch of records as columns and the row group in
//! progress, whatever the size of the day or of one file.
//!
//! Each record is parsed once, by the records stage, which hands on where each top-level
//! field is ([`Record::fields`]); this stage decodes only the values it puts in columns.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, ListArray, MapArray, RecordBatch, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef, SchemaRef};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde_json::value::RawValue;

use crate::chunks::{Build, ChunkInfo, Lines, Piece};
use crate::records::{json_str, Field, Record};
use crate::table::{arrow_schema, arrow_type, Col, Kind, COLUMNS};

pub use crate::table::OTHER_FIELDS;

/// `PARQUET_FILE_BYTES` default: files of up to about 256 MiB (Athena reads files of
/// 128 MB–1 GB best).
pub const DEFAULT_PARQUET_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// `PARQUET_ROW_GROUP_BYTES` default: row groups of up to about 32 MiB encoded, held in
/// memory while they fill: 64 MiB took the organisation day to 239 MiB of peak RSS,
/// 32 MiB to 165 MiB, for files 1 % larger (BENCHMARKS.md, block 5).
pub const DEFAULT_PARQUET_ROW_GROUP_BYTES: u64 = 32 * 1024 * 1024;
/// zstd's level: its default, about gzip 6's size at several times its speed.
pub const ZSTD_LEVEL: i32 = 3;
/// Records (as JSON bytes) gathered into columns before they are handed to the encoder.
pub const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// The footer's `created_by`: fixed, so that reruns write the same bytes.
pub const CREATED_BY: &str = concat!("cloudtrail-aggregator ", env!("CARGO_PKG_VERSION"));

/// `eventTime`'s instant in microseconds, if it is an RFC 3339 time.
pub fn event_time(text: &str) -> Option<i64> {
    Some(
        DateTime::parse_from_rfc3339(text)
            .ok()?
            .with_timezone(&Utc)
            .timestamp_micros(),
    )
}

/// What a JSON value's source text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Json {
    Null,
    Bool,
    Number,
    Str,
    Object,
    Array,
}

fn json_kind(text: &str) -> Json {
    match text.as_bytes().first() {
        Some(b'n') => Json::Null,
        Some(b't' | b'f') => Json::Bool,
        Some(b'"') => Json::Str,
        Some(b'{') => Json::Object,
        Some(b'[') => Json::Array,
        _ => Json::Number,
    }
}

/// `text` (a JSON value) rendered compact, keys in order, escapes normalised.
fn canonical(text: &str, out: &mut Vec<u8>) {
    out.clear();
    let mut de = serde_json::Deserializer::from_str(text);
    let mut ser = serde_json::Serializer::new(&mut *out);
    if serde_transcode::transcode(&mut de, &mut ser).is_err() {
        // Validated JSON always transcodes; keep the source text if not.
        out.clear();
        out.extend_from_slice(text.as_bytes());
    }
}

/// What did not fit a column: its JSON text.
type Residual = Option<String>;

/// The entries of a JSON object's source text, each key and value as its text.
fn entries(text: &str) -> Vec<(&str, &str)> {
    struct Entries<'a>(Vec<(&'a str, &'a str)>);
    impl<'de> serde::Deserialize<'de> for Entries<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Entries<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Entries<'de>, A::Error> {
                    let mut out = Vec::new();
                    while let Some(k) = map.next_key::<&'de RawValue>()? {
                        let v: &'de RawValue = map.next_value()?;
                        out.push((k.get(), v.get()));
                    }
                    Ok(Entries(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Entries>(text).map_or_else(|_| Vec::new(), |e| e.0)
}

/// The elements of a JSON array's source text, each as its text.
fn elements(text: &str) -> Vec<&str> {
    serde_json::from_str::<Vec<&RawValue>>(text)
        .map(|v| v.into_iter().map(RawValue::get).collect())
        .unwrap_or_default()
}

/// An object's text from `(quoted key, value text)` entries.
fn object_text<'a>(entries: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push(':');
        s.push_str(&v);
    }
    s.push('}');
    s
}

/// A column (or struct field) being filled, shaped as its [`Kind`].
enum Builder {
    Str(Kind, StringBuilder),
    Struct {
        cols: &'static [Col],
        children: Vec<Builder>,
        valid: NullBufferBuilder,
    },
    List {
        offsets: Vec<i32>,
        valid: NullBufferBuilder,
        items: Box<Builder>,
    },
    Map {
        offsets: Vec<i32>,
        valid: NullBufferBuilder,
        keys: StringBuilder,
        values: StringBuilder,
    },
}

impl Builder {
    fn new(kind: Kind) -> Builder {
        match kind {
            Kind::Str | Kind::BoolText | Kind::Json => Builder::Str(kind, StringBuilder::new()),
            Kind::Struct(cols) => Builder::Struct {
                cols,
                children: cols.iter().map(|c| Builder::new(c.kind)).collect(),
                valid: NullBufferBuilder::new(0),
            },
            Kind::ListOf(cols) => Builder::List {
                offsets: vec![0],
                valid: NullBufferBuilder::new(0),
                items: Box::new(Builder::new(Kind::Struct(cols))),
            },
            Kind::MapStr => Builder::Map {
                offsets: vec![0],
                valid: NullBufferBuilder::new(0),
                keys: StringBuilder::new(),
                values: StringBuilder::new(),
            },
        }
    }

    fn null(&mut self) {
        match self {
            Builder::Str(_, b) => b.append_null(),
            Builder::Struct {
                children, valid, ..
            } => {
                children.iter_mut().for_each(Builder::null);
                valid.append_null();
            }
            Builder::List { offsets, valid, .. } | Builder::Map { offsets, valid, .. } => {
                offsets.push(*offsets.last().expect("offsets start at 0"));
                valid.append_null();
            }
        }
    }

    /// Fills one value from its JSON source text; returns what it could not hold.
    fn fill(&mut self, text: &str, scratch: &mut Vec<u8>) -> Residual {
        let kind = json_kind(text);
        if kind == Json::Null {
            self.null();
            return None;
        }
        match self {
            Builder::Str(want, b) => {
                let fits = match want {
                    Kind::BoolText => kind == Json::Bool,
                    Kind::Json => matches!(kind, Json::Object | Json::Array),
                    _ => kind == Json::Str,
                };
                match kind {
                    Json::Str => b.append_value(json_str(text).unwrap_or_default()),
                    Json::Object | Json::Array => {
                        canonical(text, scratch);
                        b.append_value(std::str::from_utf8(scratch).unwrap_or_default());
                    }
                    _ => b.append_value(text),
                }
                (!fits).then(|| text.to_string())
            }
            Builder::Struct {
                cols,
                children,
                valid,
            } => {
                if kind != Json::Object {
                    children.iter_mut().for_each(Builder::null);
                    valid.append_null();
                    return Some(text.to_string());
                }
                valid.append_non_null();
                fill_object(cols, children, &entries(text), scratch)
            }
            Builder::List {
                offsets,
                valid,
                items,
            } => {
                if kind != Json::Array {
                    offsets.push(*offsets.last().expect("offsets start at 0"));
                    valid.append_null();
                    return Some(text.to_string());
                }
                let elems = elements(text);
                let mut whole = true;
                for e in &elems {
                    whole &= items.fill(e, scratch).is_none();
                }
                offsets.push(offsets.last().expect("offsets start at 0") + elems.len() as i32);
                valid.append_non_null();
                (!whole).then(|| text.to_string())
            }
            Builder::Map {
                offsets,
                valid,
                keys,
                values,
            } => {
                if kind != Json::Object {
                    offsets.push(*offsets.last().expect("offsets start at 0"));
                    valid.append_null();
                    return Some(text.to_string());
                }
                let es = entries(text);
                let mut whole = true;
                for (k, v) in &es {
                    keys.append_value(json_str(k).unwrap_or_default());
                    match json_kind(v) {
                        Json::Str => values.append_value(json_str(v).unwrap_or_default()),
                        Json::Null => values.append_null(),
                        _ => {
                            canonical(v, scratch);
                            values.append_value(std::str::from_utf8(scratch).unwrap_or_default());
                            whole = false;
                        }
                    }
                }
                offsets.push(offsets.last().expect("offsets start at 0") + es.len() as i32);
                valid.append_non_null();
                (!whole).then(|| text.to_string())
            }
        }
    }

    fn finish(&mut self, kind: Kind) -> ArrayRef {
        match (self, arrow_type(kind)) {
            (Builder::Str(_, b), _) => Arc::new(b.finish()),
            (
                Builder::Struct {
                    cols,
                    children,
                    valid,
                },
                DataType::Struct(fields),
            ) => {
                let arrays = children
                    .iter_mut()
                    .zip(cols.iter())
                    .map(|(b, c)| b.finish(c.kind))
                    .collect();
                Arc::new(StructArray::new(fields, arrays, valid.finish()))
            }
            (
                Builder::List {
                    offsets,
                    valid,
                    items,
                },
                DataType::List(field),
            ) => {
                let item_kind = match kind {
                    Kind::ListOf(cols) => Kind::Struct(cols),
                    _ => unreachable!("a list builder is made for a list"),
                };
                let values = items.finish(item_kind);
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(ListArray::new(field, offsets, values, valid.finish()))
            }
            (
                Builder::Map {
                    offsets,
                    valid,
                    keys,
                    values,
                },
                DataType::Map(field, ordered),
            ) => {
                let DataType::Struct(kv) = field.data_type().clone() else {
                    unreachable!("a map's entries are a struct")
                };
                let entries = StructArray::new(
                    kv,
                    vec![
                        Arc::new(keys.finish()) as ArrayRef,
                        Arc::new(values.finish()),
                    ],
                    None,
                );
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(MapArray::new(
                    field as FieldRef,
                    offsets,
                    entries,
                    valid.finish(),
                    ordered,
                ))
            }
            _ => unreachable!("builders are made from the same kinds as the schema"),
        }
    }
}

/// Fills the fields `cols` (their `children` builders) from an object's entries; returns
/// the object of what did not fit, if anything.
fn fill_object(
    cols: &[Col],
    children: &mut [Builder],
    entries: &[(&str, &str)],
    scratch: &mut Vec<u8>,
) -> Residual {
    let mut claimed = vec![false; cols.len()];
    let mut rest: Vec<(&str, String)> = Vec::new();
    for (k, v) in entries {
        let key = json_str(k).unwrap_or_default();
        match cols.iter().position(|c| c.key == key) {
            Some(i) if !claimed[i] => {
                claimed[i] = true;
                if let Some(r) = children[i].fill(v, scratch) {
                    rest.push((k, r));
                }
            }
            _ => rest.push((k, v.to_string())),
        }
    }
    for (i, c) in claimed.iter().enumerate() {
        if !c {
            children[i].null();
        }
    }
    (!rest.is_empty()).then(|| object_text(rest))
}

/// Records gathered as columns, one batch at a time.
struct Rows {
    schema: SchemaRef,
    /// Column index by CloudTrail key.
    index: HashMap<&'static str, usize>,
    columns: Vec<Builder>,
    event_time: TimestampMicrosecondBuilder,
    other: StringBuilder,
    rows: usize,
    bytes: usize,
    /// Per record: the columns met (reused), a scratch buffer, fields found here.
    claimed: Vec<bool>,
    scratch: Vec<u8>,
    fields: Vec<Field>,
}

impl Rows {
    fn new() -> Rows {
        Rows {
            schema: arrow_schema(),
            index: COLUMNS
                .iter()
                .enumerate()
                .map(|(i, c)| (c.key, i))
                .collect(),
            columns: COLUMNS.iter().map(|c| Builder::new(c.kind)).collect(),
            event_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            other: StringBuilder::new(),
            rows: 0,
            bytes: 0,
            claimed: vec![false; COLUMNS.len()],
            scratch: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Adds one record (a JSON object, as the records stage hands it on).
    fn push(&mut self, record: Record<'_>) -> io::Result<()> {
        let mut fields = std::mem::take(&mut self.fields);
        let record = if record.fields.is_empty() && record.bytes.len() > 2 {
            // Handed on without its fields (a record made elsewhere): find them.
            crate::records::fields_of(record.bytes, &mut fields).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a record is not a JSON object: {e}"),
                )
            })?;
            Record {
                bytes: record.bytes,
                fields: &fields,
            }
        } else {
            record
        };
        self.claimed.iter_mut().for_each(|c| *c = false);
        let mut rest: Vec<(&str, String)> = Vec::new();
        let mut time = None;
        for f in record.fields {
            let quoted = &record.bytes[f.key.0 as usize..f.key.1 as usize];
            let quoted = std::str::from_utf8(quoted).unwrap_or_default();
            let value = record.value(f);
            let key = record.key(f);
            match self.index.get(key.as_ref()).copied() {
                Some(i) if !self.claimed[i] => {
                    self.claimed[i] = true;
                    if i == EVENT_TIME {
                        time = json_str(value).as_deref().and_then(event_time);
                    }
                    if let Some(r) = self.columns[i].fill(value, &mut self.scratch) {
                        rest.push((quoted, r));
                    }
                }
                _ => rest.push((quoted, value.to_string())),
            }
        }
        for (i, c) in self.claimed.iter().enumerate() {
            if !c {
                self.columns[i].null();
            }
        }
        self.event_time.append_option(time);
        if rest.is_empty() {
            self.other.append_null();
        } else {
            self.other.append_value(object_text(rest));
        }
        self.rows += 1;
        self.bytes += record.bytes.len() + 1;
        self.fields = fields;
        Ok(())
    }

    /// The rows gathered so far as one batch; the builders start empty again.
    fn take(&mut self) -> io::Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .zip(COLUMNS)
            .map(|(b, c)| b.finish(c.kind))
            .collect();
        arrays.push(Arc::new(self.event_time.finish()));
        arrays.push(Arc::new(self.other.finish()));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(io::Error::other)
    }
}

/// The index of `eventTime` in [`COLUMNS`].
const EVENT_TIME: usize = 2;

/// A file being written.
struct Building {
    writer: ArrowWriter<Vec<u8>>,
    records: u64,
    /// Bytes of the records as NDJSON lines.
    uncompressed: u64,
    /// Bytes handed out so far.
    handed_out: u64,
}

/// Builds Parquet files from records, in order, handing their bytes out in pieces
/// (each at least `part_size` except a file's last) as row groups are written.
pub struct ParquetBuilder {
    file_limit: u64,
    props: WriterProperties,
    part_size: usize,
    next_index: u32,
    rows: Rows,
    current: Option<Building>,
    out: VecDeque<Piece>,
}

impl ParquetBuilder {
    /// `file_limit`: the size at which a file is closed; `row_group_bytes`: the encoded
    /// size at which a row group is; `part_size`: the size of the pieces handed out.
    pub fn new(file_limit: u64, row_group_bytes: u64, part_size: usize) -> ParquetBuilder {
        let props = WriterProperties::builder()
            .set_created_by(CREATED_BY.to_string())
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(ZSTD_LEVEL).expect("a valid zstd level"),
            ))
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(Some(row_group_bytes.max(1) as usize))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        ParquetBuilder {
            file_limit: file_limit.max(1),
            props,
            part_size: part_size.max(1),
            next_index: 0,
            rows: Rows::new(),
            current: None,
            out: VecDeque::new(),
        }
    }

    /// Hands the gathered rows to the file's encoder, then hands out what it wrote,
    /// and closes the file once it reached its size.
    fn write_batch(&mut self) -> io::Result<()> {
        if self.rows.rows == 0 {
            return Ok(());
        }
        let (rows, bytes) = (self.rows.rows as u64, self.rows.bytes as u64);
        let batch = self.rows.take()?;
        if self.current.is_none() {
            let writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(self.props.clone()))
                .map_err(io::Error::other)?;
            self.current = Some(Building {
                writer,
                records: 0,
                uncompressed: 0,
                handed_out: 0,
            });
        }
        let b = self.current.as_mut().expect("a file is being built");
        b.writer.write(&batch).map_err(io::Error::other)?;
        b.records += rows;
        b.uncompressed += bytes;
        if b.writer.inner().len() >= self.part_size {
            let full = std::mem::take(b.writer.inner_mut());
            b.handed_out += full.len() as u64;
            self.out.push_back(Piece::Data {
                index: self.next_index,
                bytes: full,
                last: false,
            });
        }
        let size = b.writer.bytes_written() + b.writer.in_progress_size();
        if size as u64 >= self.file_limit {
            self.close()?;
        }
        Ok(())
    }

    /// Closes the file being built: its last row group and footer.
    fn close(&mut self) -> io::Result<()> {
        let Some(b) = self.current.take() else {
            return Ok(());
        };
        let rest = b.writer.into_inner().map_err(io::Error::other)?;
        let index = self.next_index;
        self.next_index += 1;
        let info = ChunkInfo {
            index,
            records: b.records,
            uncompressed_bytes: b.uncompressed,
            compressed_bytes: b.handed_out + rest.len() as u64,
        };
        self.out.push_back(Piece::Data {
            index,
            bytes: rest,
            last: true,
        });
        self.out.push_back(Piece::End(info));
        Ok(())
    }
}

impl Build for ParquetBuilder {
    fn push_lines(&mut self, lines: &Lines) -> io::Result<()> {
        for i in 0..lines.len() {
            self.rows.push(lines.record(i))?;
            if self.rows.bytes >= BATCH_BYTES {
                self.write_batch()?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.write_batch()?;
        self.close()
    }

    fn pieces(&mut self) -> std::collections::vec_deque::Drain<'_, Piece> {
        self.out.drain(..)
    }

    fn chunks_closed(&self) -> u32 {
        self.next_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record's row: each column's value as Athena would show it (JSON for
    /// structs), and otherfields.
    fn row(record: &str) -> (serde_json::Value, Option<String>) {
        let mut rows = Rows::new();
        let bytes = record.as_bytes();
        rows.push(Record::bytes(bytes)).unwrap();
        let batch = rows.take().unwrap();
        let json = {
            let mut w = arrow_json_like(&batch);
            w.remove(OTHER_FIELDS);
            serde_json::Value::Object(w)
        };
        let other = batch.column(COLUMNS.len() + 1);
        let other = (!other.is_null(0)).then(|| {
            use arrow_array::cast::AsArray;
            other.as_string::<i32>().value(0).to_string()
        });
        (json, other)
    }

    /// A batch's first row as a JSON object of its non-null columns.
    fn arrow_json_like(batch: &RecordBatch) -> serde_json::Map<String, serde_json::Value> {
        fn value(a: &dyn arrow_array::Array, i: usize) -> serde_json::Value {
            use arrow_array::cast::AsArray;
            use serde_json::Value;
            if a.is_null(i) {
                return Value::Null;
            }
            match a.data_type() {
                DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
                DataType::Struct(fields) => {
                    let s = a.as_struct();
                    let mut m = serde_json::Map::new();
                    for (f, c) in fields.iter().zip(s.columns()) {
                        let v = value(c.as_ref(), i);
                        if !v.is_null() {
                            m.insert(f.name().clone(), v);
                        }
                    }
                    Value::Object(m)
                }
                DataType::List(_) => {
                    let l = a.as_list::<i32>().value(i);
                    Value::Array((0..l.len()).map(|j| value(l.as_ref(), j)).collect())
                }
                DataType::Map(..) => {
                    let m = a.as_map().value(i);
                    let (k, v) = (m.column(0).as_string::<i32>(), m.column(1));
                    let mut out = serde_json::Map::new();
                    for j in 0..arrow_array::Array::len(&m) {
                        out.insert(k.value(j).to_string(), value(v.as_ref(), j));
                    }
                    Value::Object(out)
                }
                DataType::Timestamp(..) => {
                    use arrow_array::types::TimestampMicrosecondType;
                    Value::from(a.as_primitive::<TimestampMicrosecondType>().value(i))
                }
                other => panic!("{other}"),
            }
        }
        let mut m = serde_json::Map::new();
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            let v = value(c.as_ref(), 0);
            if !v.is_null() {
                m.insert(f.name().clone(), v);
            }
        }
        m
    }

    /// Structs hold CloudTrail's nested objects under the table's names; JSON text
    /// columns hold compact, unescaped JSON; JSON null is SQL NULL.
    #[test]
    fn documented_columns() {
        let (row, other) = row(concat!(
            r#"{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole","arn":"arn:x","sessionContext":{"sessionIssuer":{"type":"Role","userName":"Admin"},"attributes":{"mfaAuthenticated":"false"},"webIdFederationData":{"federatedProvider":"p","attributes":{"a":"b"}}}},"#,
            r#""eventTime":"2024-02-12T10:00:00Z","readOnly":true,"requestParameters":{ "key" : "a\u003db", "n" : 1.50 },"#,
            r#""responseElements":null,"resources":[{"ARN":"arn:aws:s3:::b","accountId":"1","type":"AWS::S3::Bucket"}],"#,
            r#""tlsDetails":{"tlsVersion":"TLSv1.3"},"managementEvent":false}"#
        ));
        assert_eq!(other, None);
        assert_eq!(row["useridentity"]["type"], "AssumedRole");
        assert_eq!(
            row["useridentity"]["sessioncontext"]["sessionissuer"]["username"],
            "Admin"
        );
        assert_eq!(
            row["useridentity"]["sessioncontext"]["webidfederationdata"]["attributes"]["a"],
            "b"
        );
        assert_eq!(row["readonly"], "true");
        assert_eq!(row["managementevent"], "false");
        assert_eq!(row["requestparameters"], r#"{"key":"a=b","n":1.5}"#);
        assert!(row.get("responseelements").is_none(), "JSON null is NULL");
        assert_eq!(row["resources"][0]["arn"], "arn:aws:s3:::b");
        assert_eq!(row["tlsdetails"]["tlsversion"], "TLSv1.3");
        assert_eq!(row["eventtime"], "2024-02-12T10:00:00Z");
        assert_eq!(row["eventtime_ts"], 1_707_732_000_000_000i64);
    }

    /// What no column holds exactly is kept in otherfields, nested as in the record.
    #[test]
    fn other_fields() {
        let cases: &[(&str, &str)] = &[
            (r#"{"newField":{"a":1}}"#, r#"{"newField":{"a":1}}"#),
            (
                r#"{"userIdentity":{"type":"Root","inScopeOf":{"x":"y"}}}"#,
                r#"{"userIdentity":{"inScopeOf":{"x":"y"}}}"#,
            ),
            (
                r#"{"userIdentity":{"sessionContext":{"sourceIdentity":"s","sessionIssuer":{"userName":"u","extra":1}}}}"#,
                r#"{"userIdentity":{"sessionContext":{"sourceIdentity":"s","sessionIssuer":{"extra":1}}}}"#,
            ),
            (r#"{"readOnly":"true"}"#, r#"{"readOnly":"true"}"#),
            (r#"{"eventName":7}"#, r#"{"eventName":7}"#),
            (
                r#"{"requestParameters":"text"}"#,
                r#"{"requestParameters":"text"}"#,
            ),
            (r#"{"userIdentity":"x"}"#, r#"{"userIdentity":"x"}"#),
            (
                r#"{"resources":[{"ARN":"a","arnPrefix":"p"}]}"#,
                r#"{"resources":[{"ARN":"a","arnPrefix":"p"}]}"#,
            ),
            (r#"{"eventID":"a","eventID":"b"}"#, r#"{"eventID":"b"}"#),
        ];
        for (record, want) in cases {
            let (_, other) = row(record);
            assert_eq!(other.as_deref(), Some(*want), "{record}");
        }
        // The columns still hold what fits, and the SerDe's rendering of the rest.
        let (r, _) = row(
            r#"{"readOnly":"true","eventName":7,"userIdentity":{"type":"Root","inScopeOf":{}}}"#,
        );
        assert_eq!(
            (r["readonly"].as_str(), r["eventname"].as_str()),
            (Some("true"), Some("7"))
        );
        assert_eq!(r["useridentity"]["type"], "Root");
    }
}
