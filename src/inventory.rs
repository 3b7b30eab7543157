//! Inventory: the chain of custody from CloudTrail's deliveries to the chunks. With
//! `VALIDATE` on, each shard writes, beside its chunks, `_inventory.json.gz` (a day of
//! one shard) or `_inventory-PLAN-SSSSS.json.gz` (shard `SSSSS` of a plan): gzip NDJSON,
//! one line per source file in the order its records were written, then one per file a
//! verified digest lists that is missing:
//!
//! ```json
//! {"key":"AWSLogs/…/…json.gz","size":1234,"etag":"\"…\"","sha256":"…","records":14,
//!  "chunks":["000000.ndjson.gz"],"validation":"verified","digest":"AWSLogs/…/CloudTrail-Digest/…json.gz"}
//! ```
//!
//! `sha256` is of the file's decoded bytes (what CloudTrail's digest lists); `chunks`
//! names the chunks its records went to (none when no record of it was written);
//! `validation` is `verified`, `modified`, `missing` or `not_covered`, and `digest` the
//! verified digest that lists it. The `_` prefix keeps Athena from reading it. The
//! manifest lists each inventory with its SHA-256 (`inventory`), so `ctagg verify`
//! checks it as it checks the chunks. Rendering is pure: rows and chunks in, bytes out.

use std::io::Write;

use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};

use crate::manifest::ChunkEntry;
use crate::validate::{FilesRead, Status};

/// An inventory as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryFile {
    pub key: String,
    /// Source files it lists (missing ones included).
    pub files: u64,
    /// Its size as stored.
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the object's bytes.
    pub sha256: String,
}

/// One line of an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub sha256: String,
    pub records: u64,
    pub chunks: Vec<String>,
    pub validation: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The lines of `read` (in order), each with the chunks of `chunks` (the shard's, in
/// order) its records went to, one at a time.
pub fn lines<'a>(read: &'a FilesRead, chunks: &'a [ChunkEntry]) -> impl Iterator<Item = Line> + 'a {
    // Chunk i holds the records [ends[i-1], ends[i]) of the shard's sequence.
    let ends: Vec<u64> = chunks
        .iter()
        .scan(0u64, |at, c| {
            *at += c.records;
            Some(*at)
        })
        .collect();
    let name = move |i: usize| {
        let key = &chunks[i].key;
        key.rsplit('/').next().unwrap_or(key).to_string()
    };
    let (mut at, mut chunk) = (0u64, 0usize);
    read.rows.iter().map(move |r| {
        let mut names = Vec::new();
        if r.records > 0 {
            let end = at + r.records;
            while chunk < ends.len() && ends[chunk] <= at {
                chunk += 1;
            }
            let mut c = chunk;
            while c < ends.len() {
                names.push(name(c));
                if ends[c] >= end {
                    break;
                }
                c += 1;
            }
            at = end;
        }
        Line {
            key: read.key(r),
            size: (r.status != Status::Missing).then_some(r.size),
            etag: read.etag(r),
            sha256: hex::encode(r.sha256),
            records: r.records,
            chunks: names,
            validation: r.status,
            digest: r.digest.map(|i| read.digests.get(i)),
        }
    })
}

/// The inventory's bytes: gzip NDJSON of [`lines`], no timestamp in the gzip header.
pub fn render(read: &FilesRead, chunks: &[ChunkEntry]) -> Vec<u8> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    for line in lines(read, chunks) {
        serde_json::to_writer(&mut gz, &line).expect("a line serialises");
        gz.write_all(b"\n").expect("writing to memory cannot fail");
    }
    gz.finish().expect("writing to memory cannot fail")
}

/// Reads an inventory's bytes back, line by line.
pub fn parse(gz: &[u8]) -> Result<Vec<Line>, String> {
    use std::io::BufRead;
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(gz));
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("not gzip: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::FileDone;

    fn chunk(name: &str, records: u64) -> ChunkEntry {
        ChunkEntry {
            key: format!("p/2024/02/12/{name}"),
            records,
            bytes: 1,
            uncompressed_bytes: 1,
            sha256: String::new(),
        }
    }

    /// Each file's records are found in the chunks they went to: within one, across a
    /// boundary, none at all; the lines keep the order read and read back the same.
    #[test]
    fn each_file_names_the_chunks_of_its_records() {
        let mut read = FilesRead::default();
        for (i, kept) in [3u64, 4, 0, 2, 5].iter().enumerate() {
            let key = format!("AWSLogs/1/CloudTrail/r/2024/02/12/f{i}.json.gz");
            let file = FileDone {
                key: &key,
                size: 10 + i as u64,
                etag: Some("\"e\""),
                records: *kept,
                sha256: Some([i as u8; 32]),
            };
            read.add(&file, *kept);
        }
        // Chunks of 5, 5 and 4 records: f0 0..3, f1 3..7, f2 none, f3 7..9, f4 9..14.
        let chunks = [chunk("a", 5), chunk("b", 5), chunk("c", 4)];
        let got: Vec<Vec<String>> = lines(&read, &chunks).map(|l| l.chunks).collect();
        let want: Vec<Vec<&str>> =
            vec![vec!["a"], vec!["a", "b"], vec![], vec!["b"], vec!["b", "c"]];
        assert_eq!(got, want);
        let back = parse(&render(&read, &chunks)).unwrap();
        assert_eq!(back, lines(&read, &chunks).collect::<Vec<_>>());
        assert_eq!(back[1].size, Some(11));
        assert_eq!(back[1].sha256, hex::encode([1u8; 32]));
        assert_eq!(back[1].validation, Status::NotCovered);
        assert_eq!(back[1].digest, None);
    }
}
