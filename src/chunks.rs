//! Chunks: records → gzip NDJSON objects under a byte bound. No I/O.
//!
//! Each record becomes one line (`record` + `\n`). A chunk is closed *before* a line
//! would take its uncompressed size past the bound, so every chunk stays within it,
//! except a chunk holding a single record larger than the bound on its own.
//! The gzip header carries no timestamp, file name or OS-dependent field, so the
//! same records always give the same bytes.

use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

/// S3's `CHUNK_SIZE_BYTES` default: 64 MiB of uncompressed NDJSON per chunk.
pub const DEFAULT_CHUNK_SIZE_BYTES: u64 = 64 * 1024 * 1024;

/// Default gzip level (zlib's default: the usual size/speed balance).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// Lines are gathered into blocks of this size before they reach the compressor, so
/// that it sees few large writes rather than one per record.
const BLOCK: usize = 256 * 1024;

/// One finished chunk: its position in the day and its compressed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// 0-based number of the chunk in the day (`000000.ndjson.gz` is 0).
    pub index: u32,
    /// The gzip bytes to upload.
    pub data: Vec<u8>,
    /// Records (lines) in the chunk.
    pub records: u64,
    /// Size of the NDJSON before compression.
    pub uncompressed_bytes: u64,
}

struct Building {
    encoder: GzEncoder<Vec<u8>>,
    pending: Vec<u8>,
    records: u64,
    uncompressed: u64,
}

/// Builds chunks from records, in order.
pub struct ChunkBuilder {
    limit: u64,
    level: Compression,
    next_index: u32,
    current: Option<Building>,
}

impl ChunkBuilder {
    /// `limit`: the largest uncompressed size of a chunk in bytes (at least 1).
    pub fn new(limit: u64, gzip_level: u32) -> Self {
        ChunkBuilder {
            limit: limit.max(1),
            level: Compression::new(gzip_level.min(9)),
            next_index: 0,
            current: None,
        }
    }

    /// Adds one record (without its newline). Returns the previous chunk when this
    /// record did not fit in it.
    pub fn push(&mut self, record: &[u8]) -> io::Result<Option<Chunk>> {
        let line = record.len() as u64 + 1;
        let mut finished = None;
        if let Some(b) = &self.current {
            if b.records > 0 && b.uncompressed + line > self.limit {
                finished = self.close()?;
            }
        }
        let level = self.level;
        let b = self.current.get_or_insert_with(|| Building {
            encoder: GzBuilder::new().mtime(0).write(Vec::new(), level),
            pending: Vec::with_capacity(BLOCK + 4096),
            records: 0,
            uncompressed: 0,
        });
        b.pending.extend_from_slice(record);
        b.pending.push(b'\n');
        b.records += 1;
        b.uncompressed += line;
        if b.pending.len() >= BLOCK {
            b.encoder.write_all(&b.pending)?;
            b.pending.clear();
        }
        Ok(finished)
    }

    /// Closes the chunk being built, if it has any record.
    fn close(&mut self) -> io::Result<Option<Chunk>> {
        let Some(mut b) = self.current.take() else {
            return Ok(None);
        };
        if b.records == 0 {
            return Ok(None);
        }
        b.encoder.write_all(&b.pending)?;
        let data = b.encoder.finish()?;
        let index = self.next_index;
        self.next_index += 1;
        Ok(Some(Chunk {
            index,
            data,
            records: b.records,
            uncompressed_bytes: b.uncompressed,
        }))
    }

    /// Closes the last chunk; `None` when no record was pushed since the last chunk.
    pub fn finish(mut self) -> io::Result<Option<Chunk>> {
        self.close()
    }

    /// Number of chunks closed so far.
    pub fn chunks_closed(&self) -> u32 {
        self.next_index
    }
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

    fn build(limit: u64, records: &[&[u8]]) -> Vec<Chunk> {
        let mut b = ChunkBuilder::new(limit, 6);
        let mut out = Vec::new();
        for r in records {
            out.extend(b.push(r).unwrap());
        }
        out.extend(b.finish().unwrap());
        out
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
