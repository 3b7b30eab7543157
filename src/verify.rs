//! `ctagg verify DAY`: re-checks an aggregated day from S3 alone. Every chunk the
//! manifest lists (and every inventory of source files, with `VALIDATE`) is read and
//! its size and SHA-256 compared with the manifest's; any
//! other object or folder in the day's folder that Athena would read (a name not
//! starting with `_` or `.`) is named too. The manifest is the root of the proof: an
//! auditor keeps its SHA-256 (printed here) from the day it was written, and passes it
//! back (`--manifest-sha256`), so that a manifest changed together with its chunks is
//! caught as well.

use std::collections::HashSet;
use std::fmt;

use aws_lc_rs::digest::{Context, SHA256};
use aws_sdk_s3::Client;

use crate::config::Config;
use crate::digest::sha256_hex;
use crate::error::Error;
use crate::layout;
use crate::listing::list_level;
use crate::manifest::Manifest;
use crate::source::STREAM_RESUMES;
use crate::trigger::Day;
use crate::writer;

/// What was found for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Listed, and its bytes are what the manifest says.
    Verified,
    /// Listed, but its bytes differ (size or SHA-256).
    Changed { detail: String },
    /// Listed, but not in the folder.
    Missing,
    /// In the folder, a name Athena reads (not `_`- or `.`-prefixed), but not listed.
    Extra,
    /// Listed without a SHA-256 (a manifest from before they were recorded).
    NoChecksum,
    /// A source file no CloudTrail digest vouches for (`--sources`; not a failure).
    NotCovered,
}

/// Whether Athena reads an object of this name in a table's folder (it skips names
/// starting with `_` or `.`).
fn athena_reads(name: &str) -> bool {
    !(name.starts_with('_') || name.starts_with('.'))
}

/// The day's verdict: each chunk's finding, in the manifest's order, extras last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub manifest_key: String,
    /// Lowercase hex SHA-256 of the manifest as read.
    pub manifest_sha256: String,
    pub chunks: Vec<(String, Finding)>,
}

impl Verification {
    /// Whether every chunk is verified and nothing else is there.
    pub fn holds(&self) -> bool {
        self.chunks.iter().all(|(_, f)| *f == Finding::Verified)
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ok = self
            .chunks
            .iter()
            .filter(|(_, x)| *x == Finding::Verified)
            .count();
        write!(
            f,
            "{ok} of {} chunks verified against {} (SHA-256 {})",
            self.chunks.len(),
            self.manifest_key,
            self.manifest_sha256
        )?;
        for (key, finding) in &self.chunks {
            let what = match finding {
                Finding::Verified => continue,
                Finding::Changed { detail } => format!("changed: {detail}"),
                Finding::Missing => "missing: listed by the manifest, not in the folder".into(),
                Finding::Extra => {
                    "extra: in the folder, read by Athena, not listed by the manifest".into()
                }
                Finding::NoChecksum => {
                    "not verifiable: the manifest has no SHA-256 for it (aggregate the day again)"
                        .into()
                }
                Finding::NotCovered => "not covered by a CloudTrail digest".into(),
            };
            write!(f, "\n  {key}: {what}")?;
        }
        Ok(())
    }
}

/// Verifies `day`'s chunks in `cfg`'s destination; with `manifest_sha256`, the manifest
/// itself too (a differing one is a [`Finding::Changed`] of its own). An error is a
/// failed request, or a day without a manifest; what does not hold is a [`Finding`].
pub async fn verify_day(
    s3: &Client,
    cfg: &Config,
    day: Day,
    manifest_sha256: Option<&str>,
) -> Result<Verification, Error> {
    let bucket = cfg.dst_bucket.as_str();
    let (manifest_key, raw, manifest) = read_manifest(s3, cfg, day).await?;
    let read_sha256 = sha256_hex(&raw);
    let mut chunks = Vec::new();
    if let Some(want) = manifest_sha256 {
        if !want.trim().eq_ignore_ascii_case(&read_sha256) {
            let detail = format!("SHA-256 {read_sha256}, expected {}", want.trim());
            chunks.push((
                format!("s3://{bucket}/{manifest_key}"),
                Finding::Changed { detail },
            ));
        }
    }
    let folder = layout::day_prefix(&cfg.dst_prefix, day);
    let (folders, objects) = list_level(s3, bucket, &folder).await?;
    let present: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    // The chunks, then the inventories of the source files: (key, bytes, SHA-256).
    let listed_objects = manifest
        .chunks
        .iter()
        .map(|c| (&c.key, c.bytes, &c.sha256))
        .chain(
            manifest
                .inventory
                .iter()
                .map(|i| (&i.key, i.bytes, &i.sha256)),
        );
    for (key, bytes, want) in listed_objects {
        let finding = if !present.contains(key.as_str()) {
            Finding::Missing
        } else if want.is_empty() {
            Finding::NoChecksum
        } else {
            match read_hash(s3, bucket, key).await? {
                Some((size, sha256)) => compare(bytes, want, size, &sha256),
                None => Finding::Missing,
            }
        };
        chunks.push((format!("s3://{bucket}/{key}"), finding));
    }
    let listed: HashSet<&str> = manifest.chunks.iter().map(|c| c.key.as_str()).collect();
    let others = objects
        .iter()
        .map(|o| o.key.as_str())
        .chain(folders.iter().map(String::as_str));
    for key in others {
        let name = &key[folder.len()..];
        if athena_reads(name) && !listed.contains(key) {
            chunks.push((format!("s3://{bucket}/{key}"), Finding::Extra));
        }
    }
    Ok(Verification {
        manifest_key: format!("s3://{bucket}/{manifest_key}"),
        manifest_sha256: read_sha256,
        chunks,
    })
}

/// The day's manifest: its key, its bytes as read, and what they say.
pub async fn read_manifest(
    s3: &Client,
    cfg: &Config,
    day: Day,
) -> Result<(String, Vec<u8>, Manifest), Error> {
    let bucket = cfg.dst_bucket.as_str();
    let manifest_key = layout::manifest_key(&cfg.dst_prefix, day);
    let no_manifest = || {
        let detail = format!("no manifest: {day} is not aggregated, or not complete");
        Error::s3_detail("GetObject", bucket, &manifest_key, detail)
    };
    let raw = writer::get_if_exists(s3, bucket, &manifest_key, "GetObject")
        .await?
        .ok_or_else(no_manifest)?;
    let manifest: Manifest = serde_json::from_slice(&raw).map_err(|e| {
        let detail = format!("not a manifest of ours: {e}");
        Error::s3_detail("GetObject", bucket, &manifest_key, detail)
    })?;
    Ok((manifest_key, raw.to_vec(), manifest))
}

/// The finding for a chunk the manifest records as `bytes` long with `sha256`, read as
/// `size` bytes hashing to `read`.
pub fn compare(bytes: u64, sha256: &str, size: u64, read: &str) -> Finding {
    if size != bytes {
        Finding::Changed {
            detail: format!("{size} bytes, the manifest says {bytes}"),
        }
    } else if !read.eq_ignore_ascii_case(sha256) {
        Finding::Changed {
            detail: format!("SHA-256 {read}, the manifest says {sha256}"),
        }
    } else {
        Finding::Verified
    }
}

/// The size and hex SHA-256 of an object, read as a stream; `None` when it is gone. A
/// body broken off is read again from its start (as [`writer::get_if_exists`] does).
async fn read_hash(s3: &Client, bucket: &str, key: &str) -> Result<Option<(u64, String)>, Error> {
    for again in 0.. {
        let Some(out) = writer::open_if_exists(s3, bucket, key, "GetObject").await? else {
            return Ok(None);
        };
        let mut body = out.body;
        let (mut hash, mut size) = (Context::new(&SHA256), 0u64);
        loop {
            match body.try_next().await {
                Ok(Some(piece)) => {
                    size += piece.len() as u64;
                    hash.update(&piece);
                }
                Ok(None) => return Ok(Some((size, hex::encode(hash.finish())))),
                Err(e) if again < STREAM_RESUMES => {
                    tracing::warn!(bucket, key, error = %crate::error::error_chain(&e), "body broken off; asking for it again");
                    break;
                }
                Err(e) => {
                    return Err(Error::s3_read(
                        "GetObject (reading the body)",
                        bucket,
                        key,
                        &e,
                    ))
                }
            }
        }
    }
    unreachable!("the loop returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_verified_only_when_size_and_hash_match() {
        let h = "ab".repeat(32);
        assert_eq!(compare(10, &h, 10, &h), Finding::Verified);
        assert_eq!(compare(10, &h, 10, &h.to_uppercase()), Finding::Verified);
        assert!(matches!(compare(10, &h, 11, &h), Finding::Changed { .. }));
        assert!(matches!(
            compare(10, &h, 10, &"cd".repeat(32)),
            Finding::Changed { .. }
        ));
    }
}
