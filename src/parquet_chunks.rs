//! Parquet chunks: records → Parquet files of a CloudTrail table (`OUTPUT_FORMAT=parquet`).
//! The chunks stage for that format: like [`crate::chunks`], no I/O of its own, and the
//! file's bytes are handed out in pieces as row groups are written.
//!
//! **Schema.** [`COLUMNS`]: CloudTrail's top-level fields, named exactly as CloudTrail
//! names them, in the order CloudTrail writes them. Strings are UTF-8 columns, `readOnly`
//! and `managementEvent` BOOLEAN, `eventTime` a TIMESTAMP (microseconds, UTC). Objects
//! and arrays (`userIdentity`, `requestParameters`, `resources`, …) are strings holding
//! the value's JSON text exactly as in the source (the same bytes the NDJSON output
//! has). Last comes [`OTHER_FIELDS`]: a JSON object of every top-level field the columns
//! could not hold, or null when there is none.
//!
//! **Nothing is lost.** A field goes into [`OTHER_FIELDS`], with its source text, when
//! - the schema has no column of its name (a field CloudTrail adds later);
//! - its value is not of the column's type (a string `readOnly`, a number `eventName`,
//!   a JSON `null` in a string or boolean column), and the typed column is then null;
//! - it is `eventTime` and the timestamp would not give back its text exactly (another
//!   format than CloudTrail's `2024-02-12T10:00:00Z`, or nanoseconds): the column holds
//!   the instant when it parses as RFC 3339, null when not;
//! - its name occurs a second time in the record.
//!
//! So a record reads back as: the non-null columns (JSON columns parsed), then the
//! entries of [`OTHER_FIELDS`] over them. (Field order and escapes survive only in the
//! NDJSON output, which is byte-exact.)
//!
//! **Files.** zstd (level [`ZSTD_LEVEL`]). Sizes are the parquet crate's estimate of the
//! encoded size: the pages written (compressed) plus the pages and dictionaries in
//! progress (not yet compressed, up to ~1 MiB each per column), so it runs ahead of
//! the stored size. A row group is closed once its estimate reaches
//! `PARQUET_ROW_GROUP_BYTES` (the crate's `max_row_group_bytes`; no row count limit). A
//! file is closed once its bytes written plus the row group's estimate reach
//! `PARQUET_FILE_BYTES`: it ends at most one batch of [`BATCH_BYTES`] of records,
//! encoded, above that size, and usually somewhat below it. Column statistics are on (per page and chunk).
//! The footer's `created_by` is fixed and no timestamp or random id is written, so the
//! same records give the same bytes. Memory holds one batch of records as columns and
//! the row group in progress, encoded, whatever the size of the day or of one file.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, SecondsFormat, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::chunks::{Build, ChunkInfo, Lines, Piece};

/// `PARQUET_FILE_BYTES` default: files of up to about 256 MiB (Athena reads files of
/// 128 MB–1 GB best).
pub const DEFAULT_PARQUET_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// `PARQUET_ROW_GROUP_BYTES` default: row groups of up to about 64 MiB encoded: few
/// per file for Athena, held in memory while they fill (see the module doc).
pub const DEFAULT_PARQUET_ROW_GROUP_BYTES: u64 = 64 * 1024 * 1024;
/// zstd's level: its default, about gzip 6's size at several times its speed.
pub const ZSTD_LEVEL: i32 = 3;
/// Records (as JSON bytes) gathered into columns before they are handed to the encoder.
pub const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// The column of the fields no other column holds (a JSON object, or null).
pub const OTHER_FIELDS: &str = "otherFields";
/// The footer's `created_by`: fixed, so that reruns write the same bytes.
pub const CREATED_BY: &str = concat!("cloudtrail-aggregator ", env!("CARGO_PKG_VERSION"));

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON string, as UTF-8.
    Str,
    /// A JSON `true` or `false`.
    Bool,
    /// An RFC 3339 string, as a UTC timestamp in microseconds.
    Time,
    /// Any JSON value, as its source text.
    Json,
}

/// The columns, before [`OTHER_FIELDS`]: CloudTrail's record fields (its record
/// contents reference) in CloudTrail's order.
pub const COLUMNS: &[(&str, Kind)] = &[
    ("eventVersion", Kind::Str),
    ("userIdentity", Kind::Json),
    ("eventTime", Kind::Time),
    ("eventSource", Kind::Str),
    ("eventName", Kind::Str),
    ("awsRegion", Kind::Str),
    ("sourceIPAddress", Kind::Str),
    ("userAgent", Kind::Str),
    ("errorCode", Kind::Str),
    ("errorMessage", Kind::Str),
    ("requestParameters", Kind::Json),
    ("responseElements", Kind::Json),
    ("additionalEventData", Kind::Json),
    ("requestID", Kind::Str),
    ("eventID", Kind::Str),
    ("readOnly", Kind::Bool),
    ("resources", Kind::Json),
    ("eventType", Kind::Str),
    ("apiVersion", Kind::Str),
    ("managementEvent", Kind::Bool),
    ("recipientAccountId", Kind::Str),
    ("serviceEventDetails", Kind::Json),
    ("sharedEventID", Kind::Str),
    ("vpcEndpointId", Kind::Str),
    ("vpcEndpointAccountId", Kind::Str),
    ("eventCategory", Kind::Str),
    ("addendum", Kind::Json),
    ("sessionCredentialFromConsole", Kind::Str),
    ("edgeDeviceDetails", Kind::Json),
    ("tlsDetails", Kind::Json),
    ("insightDetails", Kind::Json),
];

/// The Arrow schema of the files: [`COLUMNS`], then [`OTHER_FIELDS`]; every column
/// nullable (a field may be absent).
pub fn schema() -> SchemaRef {
    let mut fields: Vec<Field> = COLUMNS
        .iter()
        .map(|&(name, kind)| {
            let t = match kind {
                Kind::Str | Kind::Json => DataType::Utf8,
                Kind::Bool => DataType::Boolean,
                Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            };
            Field::new(name, t, true)
        })
        .collect();
    fields.push(Field::new(OTHER_FIELDS, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// One column being filled.
enum Column {
    Str(StringBuilder),
    Bool(BooleanBuilder),
    Time(TimestampMicrosecondBuilder),
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Str | Kind::Json => Column::Str(StringBuilder::new()),
            Kind::Bool => Column::Bool(BooleanBuilder::new()),
            Kind::Time => Column::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        }
    }

    fn null(&mut self) {
        match self {
            Column::Str(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Time(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Str(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
        }
    }
}

/// A record's top-level fields, in source order, each value as its source text.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// A key, borrowed from the record unless it holds an escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CloudTrail record (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(24);
                while let Some(Key(k)) = map.next_key()? {
                    let v: &'de RawValue = map.next_value()?;
                    fields.push((k, v));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// The value of a JSON string's source text (`"…"`), or `None` for any other value.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// `eventTime`'s instant in microseconds, and whether the column gives back `text`
/// exactly (CloudTrail's own format).
pub fn event_time(text: &str) -> Option<(i64, bool)> {
    let t = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    let exact = t.to_rfc3339_opts(SecondsFormat::AutoSi, true) == text
        && t.timestamp_subsec_nanos() % 1000 == 0;
    Some((t.timestamp_micros(), exact))
}

/// Records gathered as columns, one batch at a time.
struct Rows {
    schema: SchemaRef,
    /// Column index by field name.
    index: HashMap<&'static str, usize>,
    columns: Vec<Column>,
    other: StringBuilder,
    rows: usize,
    bytes: usize,
    /// Per record: the columns whose name was met, and those holding a value (reused).
    claimed: Vec<bool>,
    filled: Vec<bool>,
}

impl Rows {
    fn new() -> Rows {
        Rows {
            schema: schema(),
            index: COLUMNS
                .iter()
                .enumerate()
                .map(|(i, (n, _))| (*n, i))
                .collect(),
            columns: COLUMNS.iter().map(|&(_, k)| Column::new(k)).collect(),
            other: StringBuilder::new(),
            rows: 0,
            bytes: 0,
            claimed: vec![false; COLUMNS.len()],
            filled: vec![false; COLUMNS.len()],
        }
    }

    /// Adds one record (a JSON object, as the records stage hands it on).
    fn push(&mut self, record: &[u8]) -> io::Result<()> {
        let Fields(fields) = serde_json::from_slice(record).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a record is not a JSON object: {e}"),
            )
        })?;
        self.claimed.iter_mut().for_each(|s| *s = false);
        self.filled.iter_mut().for_each(|s| *s = false);
        let mut other: Vec<(&str, &RawValue)> = Vec::new();
        for (name, raw) in &fields {
            // A name the schema lacks, or one seen already in this record: otherFields.
            let Some(&i) = self.index.get(name.as_ref()).filter(|&&i| !self.claimed[i]) else {
                other.push((name, raw));
                continue;
            };
            self.claimed[i] = true;
            // Whether the column holds the value, and whether otherFields keeps its text.
            let (filled, keep_text) = match (&mut self.columns[i], COLUMNS[i].1) {
                (Column::Str(b), Kind::Json) => {
                    b.append_value(raw.get());
                    (true, false)
                }
                (Column::Str(b), _) => match json_str(raw) {
                    Some(s) => {
                        b.append_value(s);
                        (true, false)
                    }
                    None => (false, true),
                },
                (Column::Bool(b), _) => match raw.get() {
                    v @ ("true" | "false") => {
                        b.append_value(v == "true");
                        (true, false)
                    }
                    _ => (false, true),
                },
                (Column::Time(b), _) => match json_str(raw).as_deref().and_then(event_time) {
                    Some((micros, exact)) => {
                        b.append_value(micros);
                        (true, !exact)
                    }
                    None => (false, true),
                },
            };
            self.filled[i] = filled;
            if keep_text {
                other.push((name, raw));
            }
        }
        for (i, col) in self.columns.iter_mut().enumerate() {
            if !self.filled[i] {
                col.null();
            }
        }
        if other.is_empty() {
            self.other.append_null();
        } else {
            let mut text = String::from("{");
            for (n, (name, raw)) in other.iter().enumerate() {
                if n > 0 {
                    text.push(',');
                }
                text.push_str(&serde_json::to_string(name).expect("a string serialises"));
                text.push(':');
                text.push_str(raw.get());
            }
            text.push('}');
            self.other.append_value(text);
        }
        self.rows += 1;
        self.bytes += record.len() + 1;
        Ok(())
    }

    /// The rows gathered so far as one batch; the builders start empty again.
    fn take(&mut self) -> io::Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        arrays.push(Arc::new(self.other.finish()));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(io::Error::other)
    }
}

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
        let mut start = 0;
        for &end in &lines.ends {
            self.rows.push(&lines.data[start..end - 1])?;
            start = end;
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
