//! `ctagg verify DAY`: re-checks an aggregated day from S3 alone. Every chunk the
//! manifest lists is read and its size and SHA-256 compared with the manifest's; a
//! chunk in the folder that the manifest does not list is named too. An auditor keeps
//! the manifest (or its SHA-256) from the day it was written; later, this proves that
//! the files Athena reads are still exactly those.

use std::collections::HashSet;
use std::fmt;

use aws_lc_rs::digest::{Context, SHA256};
use aws_sdk_s3::Client;

use crate::config::Config;
use crate::error::Error;
use crate::layout;
use crate::listing::list_level;
use crate::manifest::Manifest;
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
    /// In the folder, a chunk by its name, but not listed.
    Extra,
    /// Listed without a SHA-256 (a manifest from before they were recorded).
    NoChecksum,
}

/// The day's verdict: each chunk's finding, in the manifest's order, extras last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub manifest_key: String,
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
            "{ok} of {} chunks verified against {}",
            self.chunks.len(),
            self.manifest_key
        )?;
        for (key, finding) in &self.chunks {
            let what = match finding {
                Finding::Verified => continue,
                Finding::Changed { detail } => format!("changed: {detail}"),
                Finding::Missing => "missing: listed by the manifest, not in the folder".into(),
                Finding::Extra => "extra: in the folder, not listed by the manifest".into(),
                Finding::NoChecksum => {
                    "not verifiable: the manifest has no SHA-256 for it (aggregate the day again)"
                        .into()
                }
            };
            write!(f, "\n  {key}: {what}")?;
        }
        Ok(())
    }
}

/// Verifies `day`'s chunks in `cfg`'s destination. An error is a failed request, or a
/// day without a manifest; a chunk that does not hold is a [`Finding`].
pub async fn verify_day(s3: &Client, cfg: &Config, day: Day) -> Result<Verification, Error> {
    let bucket = cfg.dst_bucket.as_str();
    let manifest_key = layout::manifest_key(&cfg.dst_prefix, day);
    let manifest: Manifest = writer::get_json(s3, bucket, &manifest_key, "GetObject")
        .await?
        .ok_or_else(|| {
            Error::s3_detail(
                "GetObject",
                bucket,
                &manifest_key,
                format!("no manifest: {day} is not aggregated, or not complete"),
            )
        })?;
    let folder = layout::day_prefix(&cfg.dst_prefix, day);
    let (_, objects) = list_level(s3, bucket, &folder).await?;
    let present: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut chunks = Vec::new();
    for c in &manifest.chunks {
        let finding = if !present.contains(c.key.as_str()) {
            Finding::Missing
        } else if c.sha256.is_empty() {
            Finding::NoChecksum
        } else {
            let (size, sha256) = read_hash(s3, bucket, &c.key).await?;
            compare(c.bytes, &c.sha256, size, &sha256)
        };
        chunks.push((format!("s3://{bucket}/{}", c.key), finding));
    }
    let listed: HashSet<&str> = manifest.chunks.iter().map(|c| c.key.as_str()).collect();
    for o in &objects {
        let name = &o.key[folder.len()..];
        if layout::chunk_format(name).is_some() && !listed.contains(o.key.as_str()) {
            chunks.push((format!("s3://{bucket}/{}", o.key), Finding::Extra));
        }
    }
    Ok(Verification {
        manifest_key: format!("s3://{bucket}/{manifest_key}"),
        chunks,
    })
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

/// The size and hex SHA-256 of an object, read as a stream.
async fn read_hash(s3: &Client, bucket: &str, key: &str) -> Result<(u64, String), Error> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| Error::s3("GetObject", bucket, key, e))?;
    let mut body = out.body;
    let mut hash = Context::new(&SHA256);
    let mut size = 0u64;
    while let Some(piece) = body
        .try_next()
        .await
        .map_err(|e| Error::s3_read("GetObject", bucket, key, &e))?
    {
        size += piece.len() as u64;
        hash.update(&piece);
    }
    Ok((size, hex::encode(hash.finish())))
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
