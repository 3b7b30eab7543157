//! Manifest: what `_manifest.json` holds, what a shard reports in its `done` file, and
//! the merge of shard results into the day's manifest. Types only: they serialise and
//! read back; no I/O.
//!
//! The manifest marks a day complete. It lists every chunk of every shard in record
//! order (shard by shard), with its records and sizes, and in `shards` the plan the
//! day was run by: for each shard its source files and bytes, records, chunks and the
//! time it ended (one entry for a day of one shard). Apart from those end times it
//! depends only on the sources and the settings, so a rerun writes the same manifest
//! but for `shards[].ended`.

use serde::{Deserialize, Serialize};

use crate::config::OutputFormat;
use crate::delivery_index::FolderEntry;
use crate::inventory::InventoryFile;
use crate::select::Selection;
use crate::validate::Validation;

/// One chunk as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub key: String,
    pub records: u64,
    /// Compressed size, as stored.
    pub bytes: u64,
    pub uncompressed_bytes: u64,
    /// Lowercase hex SHA-256 of the object's bytes as written, for `ctagg verify`;
    /// empty (and not written) in manifests from before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

/// One shard of the day's plan, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub index: u32,
    /// Source files the shard read, and their bytes as stored.
    pub files: u64,
    pub bytes: u64,
    pub records: u64,
    pub chunks: u32,
    /// When the shard's chunks were all written (RFC 3339, UTC).
    pub ended: String,
}

/// What `_manifest.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub date: String,
    /// `ndjson` or `parquet`.
    pub format: OutputFormat,
    pub source: String,
    pub source_files: u64,
    pub records: u64,
    /// Bytes of the source objects as stored (mostly gzip).
    pub bytes_read: u64,
    /// Bytes of the chunks as stored (gzip or Parquet).
    pub bytes_written: u64,
    /// Bytes of the records as NDJSON (before compression, or before Parquet encoding).
    pub uncompressed_bytes_written: u64,
    pub chunks: Vec<ChunkEntry>,
    /// What `DAY_BY=event` or `DEDUP` selected; absent with the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// What `VALIDATE` found: CloudTrail's digests against the files read, summed over
    /// the shards; absent when `VALIDATE=off` ([`crate::validate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// The inventories of the day's source files, one per shard, with their SHA-256
    /// ([`crate::inventory`]; with `VALIDATE`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryFile>,
    /// With `DAY_BY=event`: what this run learnt of its delivery folders, for the run
    /// of the day before ([`crate::delivery_index`]); `files` counts the files indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_index: Option<Box<InventoryFile>>,
    /// The content id of the plan of a day of many shards (its chunks' names start
    /// with it); absent for a day of one shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The shards the day was run as, in order.
    #[serde(default)]
    pub shards: Vec<ShardEntry>,
    pub generator: String,
}

/// What `generator` says.
pub const GENERATOR: &str = concat!("cloudtrail-aggregator ", env!("CARGO_PKG_VERSION"));

/// What one shard reports once its chunks are written: its `done` file, and the part
/// of the manifest it contributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardResult {
    /// The id of the run that planned the day.
    pub run: String,
    /// The plan's content id; `None` for a day of one shard.
    pub plan: Option<String>,
    pub index: u32,
    /// How many shards the plan has.
    pub shards: u32,
    pub files: u64,
    /// Records written (after selection).
    pub records: u64,
    pub bytes_read: u64,
    pub chunks: Vec<ChunkEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// What `VALIDATE` found in the shard's files (absent when off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// The shard's inventory of source files (with `VALIDATE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryFile>,
    /// With `DAY_BY=event`: the shard's part of the day's delivery index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_index: Option<Vec<FolderEntry>>,
    /// RFC 3339, UTC.
    pub ended: String,
    pub duration_ms: u64,
}

impl ShardResult {
    /// The shard as the manifest lists it.
    pub fn entry(&self) -> ShardEntry {
        ShardEntry {
            index: self.index,
            files: self.files,
            bytes: self.bytes_read,
            records: self.records,
            chunks: self.chunks.len() as u32,
            ended: self.ended.clone(),
        }
    }
}

/// Why shard results cannot be merged into one day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("no shard results")]
    Empty,
    #[error("shard {index} is missing (results for {got} of {want} shards)")]
    Missing { index: u32, got: usize, want: u32 },
    #[error("shard {index} belongs to another plan ({found}, expected {expected})")]
    OtherPlan {
        index: u32,
        found: String,
        expected: String,
    },
}

impl Manifest {
    /// The day's manifest from the results of every shard of its plan (any order; one
    /// per shard index, `0..shards`).
    pub fn merge(
        date: String,
        format: OutputFormat,
        source: String,
        mut results: Vec<ShardResult>,
    ) -> Result<Manifest, MergeError> {
        results.sort_by_key(|r| r.index);
        results.dedup_by_key(|r| r.index);
        let first = results.first().ok_or(MergeError::Empty)?;
        let (want, plan, run) = (first.shards, first.plan.clone(), first.run.clone());
        for (i, r) in results.iter().enumerate() {
            if r.index != i as u32 {
                let (index, got) = (i as u32, results.len());
                return Err(MergeError::Missing { index, got, want });
            }
            if r.plan != plan || r.run != run {
                return Err(MergeError::OtherPlan {
                    index: r.index,
                    found: format!("{:?} of run {}", r.plan, r.run),
                    expected: format!("{plan:?} of run {run}"),
                });
            }
        }
        if results.len() as u32 != want {
            let got = results.len();
            return Err(MergeError::Missing {
                index: got as u32,
                got,
                want,
            });
        }
        let mut selection: Option<Selection> = None;
        for r in &results {
            match (&mut selection, &r.selection) {
                (None, Some(s)) => selection = Some(s.clone()),
                (Some(acc), Some(s)) => acc.merge(s),
                _ => {}
            }
        }
        let validation = results
            .iter()
            .filter_map(|r| r.validation)
            .reduce(|mut a, b| {
                a.add(&b);
                a
            });
        let chunks: Vec<ChunkEntry> = results.iter().flat_map(|r| r.chunks.clone()).collect();
        Ok(Manifest {
            date,
            format,
            source,
            source_files: results.iter().map(|r| r.files).sum(),
            records: results.iter().map(|r| r.records).sum(),
            bytes_read: results.iter().map(|r| r.bytes_read).sum(),
            bytes_written: chunks.iter().map(|c| c.bytes).sum(),
            uncompressed_bytes_written: chunks.iter().map(|c| c.uncompressed_bytes).sum(),
            chunks,
            selection,
            validation,
            inventory: results.iter().filter_map(|r| r.inventory.clone()).collect(),
            delivery_index: None,
            plan,
            shards: results.iter().map(ShardResult::entry).collect(),
            generator: GENERATOR.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(index: u32, shards: u32, chunks: &[&str]) -> ShardResult {
        ShardResult {
            run: "r".into(),
            plan: Some("0123456789ab".into()),
            index,
            shards,
            files: 10 + index as u64,
            records: 100,
            bytes_read: 1000,
            chunks: chunks
                .iter()
                .map(|k| ChunkEntry {
                    key: k.to_string(),
                    records: 50,
                    bytes: 7,
                    uncompressed_bytes: 70,
                    sha256: String::new(),
                })
                .collect(),
            selection: None,
            validation: None,
            inventory: None,
            delivery_index: None,
            ended: format!("2024-02-13T01:0{index}:00Z"),
            duration_ms: 5,
        }
    }

    /// Results merge in shard order, whatever order they come in; totals add up.
    #[test]
    fn merges_in_shard_order() {
        let m = Manifest::merge(
            "2024-02-12".into(),
            OutputFormat::Ndjson,
            "s3://b/AWSLogs/".into(),
            vec![
                result(2, 3, &["c"]),
                result(0, 3, &["a0", "a1"]),
                result(1, 3, &[]),
            ],
        )
        .unwrap();
        let keys: Vec<&str> = m.chunks.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["a0", "a1", "c"]);
        assert_eq!(m.source_files, 10 + 11 + 12);
        assert_eq!(m.records, 300);
        assert_eq!((m.bytes_written, m.uncompressed_bytes_written), (21, 210));
        assert_eq!(m.plan.as_deref(), Some("0123456789ab"));
        let shards: Vec<(u32, u32)> = m.shards.iter().map(|s| (s.index, s.chunks)).collect();
        assert_eq!(shards, [(0, 2), (1, 0), (2, 1)]);
        // It reads back as written.
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }

    /// A missing shard, or one of another plan, is refused.
    #[test]
    fn refuses_incomplete_or_mixed_results() {
        let merge = |rs| {
            Manifest::merge("d".into(), OutputFormat::Ndjson, "s".into(), rs)
                .unwrap_err()
                .to_string()
        };
        assert!(merge(vec![result(0, 3, &[]), result(2, 3, &[])]).contains("shard 1 is missing"));
        assert!(merge(vec![result(0, 2, &[])]).contains("shard 1 is missing"));
        let mut other = result(1, 2, &[]);
        other.plan = Some("ffffffffffff".into());
        assert!(merge(vec![result(0, 2, &[]), other]).contains("another plan"));
        assert_eq!(
            Manifest::merge("d".into(), OutputFormat::Ndjson, "s".into(), vec![]),
            Err(MergeError::Empty)
        );
    }

    /// A manifest written before shards existed still reads (no `shards`, no `plan`).
    #[test]
    fn reads_an_earlier_manifest() {
        let text = r#"{"date":"2024-02-12","format":"ndjson","source":"s3://b/AWSLogs/","source_files":1,"records":2,"bytes_read":3,"bytes_written":4,"uncompressed_bytes_written":5,"chunks":[{"key":"k","records":2,"bytes":4,"uncompressed_bytes":5}],"generator":"cloudtrail-aggregator 0.1.0"}"#;
        let m: Manifest = serde_json::from_str(text).unwrap();
        assert!(m.shards.is_empty() && m.plan.is_none() && m.selection.is_none());
    }
}
