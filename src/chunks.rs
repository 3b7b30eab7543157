//! Chunks: records → gzip NDJSON objects under a byte bound. No I/O of its own: the
//! compressed bytes are handed out in pieces of about one upload part, so a chunk is
//! never held whole in memory.
//!
//! Each record becomes one line (`record` + `\n`). A chunk is closed *before* a line
//! would take its uncompressed size past the bound, so every chunk stays within it,
//! except a chunk holding a single record larger than the bound on its own.
//! The gzip header carries no timestamp, file name or OS-dependent field, so the
//! same records always give the same bytes.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

use crate::records::{Field, Record, RecordSink};

/// S3's `CHUNK_SIZE_BYTES` default: 64 MiB of uncompressed NDJSON per chunk.
pub const DEFAULT_CHUNK_SIZE_BYTES: u64 = 64 * 1024 * 1024;

/// Default gzip level (zlib's default: the usual size/speed balance).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// Records written as NDJSON lines into one buffer: `data` holds the lines, each
/// ending in `\n`; `ends[i]` is the offset just past line `i`; with them, when the
/// records stage gave them, each record's top-level fields (`fields`, record `i`'s up to
/// `field_ends[i]`, as offsets into its line). This is how records travel from the
/// records stage to the chunk builder, a block at a time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lines {
    pub data: Vec<u8>,
    pub ends: Vec<usize>,
    pub fields: Vec<Field>,
    pub field_ends: Vec<usize>,
}

impl Lines {
    pub fn with_capacity(bytes: usize) -> Lines {
        Lines {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(bytes / 512),
            fields: Vec::new(),
            field_ends: Vec::with_capacity(bytes / 512),
        }
    }

    /// Appends one record as a line.
    pub fn push(&mut self, record: &[u8]) {
        self.push_record(Record::bytes(record));
    }

    /// Appends one record as a line, with its fields.
    pub fn push_record(&mut self, record: Record<'_>) {
        self.data.extend_from_slice(record.bytes);
        self.data.push(b'\n');
        self.ends.push(self.data.len());
        self.fields.extend_from_slice(record.fields);
        self.field_ends.push(self.fields.len());
    }

    /// Record `i` (without its newline), with its fields.
    pub fn record(&self, i: usize) -> Record<'_> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let fields = if i == 0 { 0 } else { self.field_ends[i - 1] };
        Record {
            bytes: &self.data[start..self.ends[i] - 1],
            fields: &self.fields[fields..self.field_ends[i]],
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Empties the block, keeping its buffers for reuse.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.fields.clear();
        self.field_ends.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Room beyond `part_size` in a part buffer: what one write of a block of lines can
/// add after the buffer reached `part_size - 1`.
const PART_SLACK: usize = 2 * 1024 * 1024;

/// A finished chunk, as the manifest describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// 0-based number of the chunk in the day (`000000.ndjson.gz` is 0).
    pub index: u32,
    /// Records (lines) in the chunk.
    pub records: u64,
    /// Size of the NDJSON before compression.
    pub uncompressed_bytes: u64,
    /// Size of the gzip object.
    pub compressed_bytes: u64,
}

/// What the builder hands out, in order: a chunk's compressed bytes in one or more
/// pieces (each at least `part_size` except the last), then its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// `last`: the chunk's final piece, followed by its `End`. A piece that is not the
    /// last is a full part: the chunk goes up as a multipart upload, which can start.
    Data {
        index: u32,
        bytes: Vec<u8>,
        last: bool,
    },
    End(ChunkInfo),
}

struct Building {
    encoder: GzEncoder<Vec<u8>>,
    records: u64,
    uncompressed: u64,
    compressed: u64,
}

/// Builds chunks from records, in order. Compressed output is handed out in pieces of
/// about `part_size` bytes as it is produced, so a chunk is never held whole.
pub struct ChunkBuilder {
    limit: u64,
    level: Compression,
    part_size: usize,
    next_index: u32,
    current: Option<Building>,
    out: VecDeque<Piece>,
}

impl ChunkBuilder {
    /// `limit`: the largest uncompressed size of a chunk in bytes (at least 1);
    /// `part_size`: the size of the compressed pieces handed out (at least 1).
    pub fn new(limit: u64, gzip_level: u32, part_size: usize) -> Self {
        ChunkBuilder {
            limit: limit.max(1),
            level: Compression::new(gzip_level.min(9)),
            part_size: part_size.max(1),
            next_index: 0,
            current: None,
            out: VecDeque::new(),
        }
    }

    /// An empty buffer for the next piece, with room for a whole part so that it
    /// never doubles (pages are only touched as they are written).
    fn part_buffer(&self) -> Vec<u8> {
        Vec::with_capacity(self.part_size + PART_SLACK)
    }

    /// Adds one record (without its newline).
    pub fn push(&mut self, record: &[u8]) -> io::Result<()> {
        let mut lines = Lines::with_capacity(record.len() + 1);
        lines.push(record);
        self.push_lines(&lines)
    }

    /// Adds a block of lines, rolling over to a new chunk before a line would take the
    /// current one past the bound.
    pub fn push_lines(&mut self, lines: &Lines) -> io::Result<()> {
        let ends = &lines.ends;
        let mut i = 0;
        let mut off = 0;
        while i < ends.len() {
            if self.current.is_none() {
                self.current = Some(Building {
                    encoder: GzBuilder::new()
                        .mtime(0)
                        .write(self.part_buffer(), self.level),
                    records: 0,
                    uncompressed: 0,
                    compressed: 0,
                });
            }
            let b = self.current.as_mut().expect("a chunk is being built");
            let room = self.limit.saturating_sub(b.uncompressed);
            let mut j = i + ends[i..].partition_point(|e| (e - off) as u64 <= room);
            if j == i {
                if b.records > 0 {
                    self.close()?;
                    continue;
                }
                j = i + 1; // a record larger than the bound: a chunk of its own
            }
            let end = ends[j - 1];
            b.encoder.write_all(&lines.data[off..end])?;
            b.records += (j - i) as u64;
            b.uncompressed += (end - off) as u64;
            if b.encoder.get_ref().len() >= self.part_size {
                let fresh = Vec::with_capacity(self.part_size + PART_SLACK);
                let full = std::mem::replace(b.encoder.get_mut(), fresh);
                b.compressed += full.len() as u64;
                self.out.push_back(Piece::Data {
                    index: self.next_index,
                    bytes: full,
                    last: false,
                });
            }
            i = j;
            off = end;
        }
        Ok(())
    }

    /// Closes the chunk being built, if it has any record.
    fn close(&mut self) -> io::Result<()> {
        let Some(b) = self.current.take() else {
            return Ok(());
        };
        if b.records == 0 {
            return Ok(());
        }
        let rest = b.encoder.finish()?;
        let index = self.next_index;
        self.next_index += 1;
        let info = ChunkInfo {
            index,
            records: b.records,
            uncompressed_bytes: b.uncompressed,
            compressed_bytes: b.compressed + rest.len() as u64,
        };
        if !rest.is_empty() {
            self.out.push_back(Piece::Data {
                index,
                bytes: rest,
                last: true,
            });
        }
        self.out.push_back(Piece::End(info));
        Ok(())
    }

    /// Closes the last chunk (if it has any record).
    pub fn finish(&mut self) -> io::Result<()> {
        self.close()
    }

    /// Takes the pieces produced so far, in order.
    pub fn pieces(&mut self) -> std::collections::vec_deque::Drain<'_, Piece> {
        self.out.drain(..)
    }

    /// Number of chunks closed so far.
    pub fn chunks_closed(&self) -> u32 {
        self.next_index
    }
}

/// A builder of output chunks of one format, driven by [`compress`]: gzip NDJSON
/// ([`ChunkBuilder`]) or Parquet ([`crate::parquet_chunks::ParquetBuilder`]).
pub trait Build: Send {
    /// Adds a block of lines (one record each), in order.
    fn push_lines(&mut self, lines: &Lines) -> io::Result<()>;
    /// Closes the last chunk (if it has any record).
    fn finish(&mut self) -> io::Result<()>;
    /// Takes the pieces produced so far, in order.
    fn pieces(&mut self) -> std::collections::vec_deque::Drain<'_, Piece>;
    /// Number of chunks closed so far.
    fn chunks_closed(&self) -> u32;
}

impl Build for ChunkBuilder {
    fn push_lines(&mut self, lines: &Lines) -> io::Result<()> {
        ChunkBuilder::push_lines(self, lines)
    }
    fn finish(&mut self) -> io::Result<()> {
        ChunkBuilder::finish(self)
    }
    fn pieces(&mut self) -> std::collections::vec_deque::Drain<'_, Piece> {
        ChunkBuilder::pieces(self)
    }
    fn chunks_closed(&self) -> u32 {
        ChunkBuilder::chunks_closed(self)
    }
}

/// Size of the blocks of lines passed from the records stage to the chunks stage.
const LINES_BLOCK: usize = 256 * 1024;

/// The records stage's end of the channel to the chunks stage: records packed into
/// blocks of lines, full blocks sent on. The chunks stage hands the blocks back empty,
/// so a run allocates a handful of them, not one per 256 KiB.
pub struct LineBlocks {
    tx: SyncSender<Lines>,
    spare: Receiver<Lines>,
    current: Lines,
}

/// The chunks stage's end of that channel.
pub struct LineBlocksRx {
    rx: Receiver<Lines>,
    spare: SyncSender<Lines>,
}

/// A channel of blocks of lines holding up to `depth` full blocks.
pub fn line_blocks(depth: usize) -> (LineBlocks, LineBlocksRx) {
    let (tx, rx) = sync_channel(depth);
    let (spare_tx, spare_rx) = sync_channel(depth + 2);
    let blocks = LineBlocks {
        tx,
        spare: spare_rx,
        current: Lines::default(),
    };
    (
        blocks,
        LineBlocksRx {
            rx,
            spare: spare_tx,
        },
    )
}

impl LineBlocks {
    /// An empty block with room for a full block and the record that ends it.
    fn next_block(&self) -> Lines {
        match self.spare.try_recv() {
            Ok(mut lines) => {
                lines.clear();
                lines
            }
            Err(_) => Lines::with_capacity(LINES_BLOCK + 64 * 1024),
        }
    }

    /// Sends the last, partly filled block (dropping `self` closes the channel).
    pub fn finish(mut self) {
        if !self.current.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.current));
        }
    }
}

impl RecordSink for LineBlocks {
    fn record(&mut self, record: Record<'_>) -> bool {
        if self.current.data.capacity() == 0 {
            self.current = self.next_block();
        }
        self.current.push_record(record);
        if self.current.data.len() < LINES_BLOCK {
            return true;
        }
        let next = self.next_block();
        let full = std::mem::replace(&mut self.current, next);
        self.tx.send(full).is_ok()
    }
}

/// The chunks stage: compresses the blocks of lines from `lines` into chunks and hands
/// every piece to `hand_out` as it fills, in order; stops early when `hand_out`
/// returns `false` (the next stage has gone).
pub fn compress(
    lines: LineBlocksRx,
    builder: &mut dyn Build,
    mut hand_out: impl FnMut(Piece) -> bool,
) -> io::Result<()> {
    let mut hand_out_all = |builder: &mut dyn Build| builder.pieces().all(&mut hand_out);
    for block in lines.rx.iter() {
        builder.push_lines(&block)?;
        // Back to the records stage for reuse, unless a huge record made it grow.
        if block.data.capacity() <= 2 * LINES_BLOCK {
            let _ = lines.spare.try_send(block);
        }
        if !hand_out_all(builder) {
            return Ok(());
        }
    }
    builder.finish()?;
    hand_out_all(builder);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    /// A whole chunk, put together from its pieces.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Chunk {
        index: u32,
        data: Vec<u8>,
        records: u64,
        uncompressed_bytes: u64,
    }

    fn collect(b: &mut ChunkBuilder, out: &mut Vec<Chunk>, data: &mut Vec<u8>) {
        let mut pieces = b.pieces().peekable();
        while let Some(p) = pieces.next() {
            match p {
                Piece::Data { index, bytes, last } => {
                    assert_eq!(index as usize, out.len(), "pieces come in chunk order");
                    let ends = matches!(pieces.peek(), Some(Piece::End(_)));
                    assert_eq!(last, ends, "`last` marks the piece before the End");
                    data.extend(bytes);
                }
                Piece::End(info) => {
                    assert_eq!(info.compressed_bytes, data.len() as u64);
                    out.push(Chunk {
                        index: info.index,
                        data: std::mem::take(data),
                        records: info.records,
                        uncompressed_bytes: info.uncompressed_bytes,
                    });
                }
            }
        }
    }

    fn build_parts(limit: u64, part: usize, records: &[&[u8]]) -> Vec<Chunk> {
        let mut b = ChunkBuilder::new(limit, 6, part);
        let (mut out, mut data) = (Vec::new(), Vec::new());
        for r in records {
            b.push(r).unwrap();
            collect(&mut b, &mut out, &mut data);
        }
        b.finish().unwrap();
        collect(&mut b, &mut out, &mut data);
        assert!(data.is_empty());
        out
    }

    fn build(limit: u64, records: &[&[u8]]) -> Vec<Chunk> {
        build_parts(limit, 8 << 20, records)
    }

    /// Chunks roll over before the bound is passed and keep every line in order.
    #[test]
    fn rolls_over_before_the_bound() {
        let recs: Vec<&[u8]> = vec![b"{\"a\":1}", b"{\"b\":22}", b"{\"c\":333}", b"{}"];
        // line sizes: 8, 9, 10, 3
        let chunks = build(18, &recs);
        let lines: Vec<Vec<u8>> = chunks.iter().map(|c| gunzip(&c.data)).collect();
        assert_eq!(lines[0], b"{\"a\":1}\n{\"b\":22}\n");
        assert_eq!(lines[1], b"{\"c\":333}\n{}\n");
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].uncompressed_bytes, 17);
        assert_eq!(chunks[1].records, 2);
        assert_eq!(chunks[1].index, 1);
    }

    /// A bound hit exactly still fits; one more byte rolls over.
    #[test]
    fn exact_fit_stays_in_one_chunk() {
        let chunks = build(17, &[b"{\"a\":1}", b"{\"b\":22}"]);
        assert_eq!(chunks.len(), 1);
        let chunks = build(16, &[b"{\"a\":1}", b"{\"b\":22}"]);
        assert_eq!(chunks.len(), 2);
    }

    /// A record larger than the bound gets a chunk of its own.
    #[test]
    fn oversized_record_alone() {
        let big = vec![b'x'; 100];
        let chunks = build(10, &[b"{}", &big, b"{}"]);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].records, 1);
        assert_eq!(chunks[1].uncompressed_bytes, 101);
    }

    /// No records, no chunk.
    #[test]
    fn empty_gives_nothing() {
        assert!(build(10, &[]).is_empty());
    }

    /// Same records, same bytes; the gzip header has no timestamp.
    #[test]
    fn deterministic_bytes_without_mtime() {
        let recs: Vec<Vec<u8>> = (0..5000)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "y".repeat(i % 97)).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = recs.iter().map(|r| r.as_slice()).collect();
        let a = build(100_000, &refs);
        let b = build(100_000, &refs);
        assert_eq!(a, b);
        assert!(a.len() > 1);
        for c in &a {
            assert_eq!(&c.data[4..8], &[0, 0, 0, 0], "mtime must be zero");
            assert_eq!(c.data[3] & 0x08, 0, "no file name");
        }
        let all: Vec<u8> = a.iter().flat_map(|c| gunzip(&c.data)).collect();
        let want: Vec<u8> = recs
            .iter()
            .flat_map(|r| [r.as_slice(), b"\n"].concat())
            .collect();
        assert_eq!(all, want);
    }
}
