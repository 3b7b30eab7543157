//! `ctagg verify DAY --sources`: the chain of custody checked again from S3 alone, the
//! other way from [`crate::verify`]: from the day's manifest to its inventories (their
//! SHA-256 in the manifest), from each inventory line to the source file (read again,
//! gunzipped, its SHA-256 against the line's), and to the CloudTrail digest the line
//! names (read again, its signature checked with `ListPublicKeys`, and it must list
//! that file with that SHA-256).
//!
//! A source file is verified only when all of that holds. A file the inventory records
//! as missing is reported missing; one not covered by a digest is reported as such
//! without failing the day (as `VALIDATE=strict` lets it through).

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};

use crate::config::Config;
use crate::digest;
use crate::error::Error;
use crate::inventory::{self, Line};
use crate::trigger::Day;
use crate::validate::{self, PublicKeys, Status};
use crate::verify::{read_manifest, Finding};
use crate::writer;

/// What was found for each source file of the day, in inventory order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub files: Vec<(String, Finding)>,
}

impl Sources {
    /// Whether every source file is verified, or not covered by a digest.
    pub fn holds(&self) -> bool {
        self.files
            .iter()
            .all(|(_, f)| matches!(f, Finding::Verified | Finding::NotCovered))
    }
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |want: fn(&Finding) -> bool| self.files.iter().filter(|(_, x)| want(x)).count();
        write!(
            f,
            "{} of {} source files verified against their CloudTrail digests ({} not covered by a digest)",
            count(|x| *x == Finding::Verified),
            self.files.len(),
            count(|x| *x == Finding::NotCovered)
        )?;
        for (key, finding) in &self.files {
            let what = match finding {
                Finding::Verified | Finding::NotCovered => continue,
                Finding::Changed { detail } => format!("changed: {detail}"),
                Finding::Missing => {
                    "missing: its digest lists it, the bucket does not have it".into()
                }
                other => format!("{other:?}"),
            };
            write!(f, "\n  {key}: {what}")?;
        }
        Ok(())
    }
}

/// The digests the lines name: key → the files each lists (key → SHA-256 hex), or why
/// it does not verify.
type Digests = HashMap<String, Result<HashMap<String, String>, String>>;

/// Checks every source file of `day`'s inventories (see the module doc).
pub async fn verify_sources(s3: &Client, cfg: &Config, day: Day) -> Result<Sources, Error> {
    let dst = cfg.dst_bucket.as_str();
    let (manifest_key, _, manifest) = read_manifest(s3, cfg, day).await?;
    if manifest.inventory.is_empty() {
        let detail = "it lists no inventory of source files: the day was aggregated with VALIDATE=off (aggregate it again with VALIDATE=report)".to_string();
        return Err(Error::s3_detail("GetObject", dst, &manifest_key, detail));
    }
    let src = manifest
        .source
        .strip_prefix("s3://")
        .and_then(|s| s.split('/').next())
        .unwrap_or_default()
        .to_string();
    let mut lines: Vec<Line> = Vec::new();
    let mut files = Vec::new();
    for inv in &manifest.inventory {
        let what = "GetObject (an inventory)";
        let bytes = writer::get_if_exists(s3, dst, &inv.key, what).await?;
        let held = bytes.filter(|b| digest::sha256_hex(b).eq_ignore_ascii_case(&inv.sha256));
        let parsed = held.map(|b| inventory::parse(&b));
        match parsed {
            Some(Ok(l)) => lines.extend(l),
            _ => {
                let detail = "the inventory is missing or not what the manifest says (run `ctagg verify` without --sources)".to_string();
                files.push((
                    format!("s3://{dst}/{}", inv.key),
                    Finding::Changed { detail },
                ));
            }
        }
    }
    let digests = read_digests(s3, cfg, day, &src, &lines).await?;
    let checked: Vec<Finding> = futures::stream::iter(&lines)
        .map(|l| check_line(s3, &src, l, &digests))
        .buffered(cfg.max_concurrent_gets.max(1))
        .try_collect()
        .await?;
    for (l, finding) in lines.iter().zip(checked) {
        files.push((format!("s3://{src}/{}", l.key), finding));
    }
    Ok(Sources { files })
}

/// Reads and checks every digest the lines name, concurrently.
async fn read_digests(
    s3: &Client,
    cfg: &Config,
    day: Day,
    bucket: &str,
    lines: &[Line],
) -> Result<Digests, Error> {
    let mut keys: Vec<String> = lines.iter().filter_map(|l| l.digest.clone()).collect();
    keys.sort();
    keys.dedup();
    let fetched: Vec<validate::DigestObject> = futures::stream::iter(keys)
        .map(|k| validate::read_digest(s3, bucket, k))
        .buffered(cfg.max_concurrent_gets.max(1))
        .try_collect()
        .await?;
    let mut public_keys = PublicKeys::new(&cfg.cloudtrail, day).await;
    let mut out = Digests::new();
    for d in fetched {
        let keys = public_keys.for_digest(&d).await?;
        let checked = d.verified(bucket, keys).map(|parsed| {
            parsed
                .digest
                .log_files
                .into_iter()
                .filter(|f| f.s3_bucket == bucket)
                .map(|f| (f.s3_object, f.hash_value.to_ascii_lowercase()))
                .collect()
        });
        out.insert(d.key, checked);
    }
    Ok(out)
}

/// One line's finding: its source read again, and its digest.
async fn check_line(
    s3: &Client,
    bucket: &str,
    l: &Line,
    digests: &Digests,
) -> Result<Finding, Error> {
    if l.validation == Status::Missing {
        return Ok(Finding::Missing);
    }
    let what = "GetObject (a source file)";
    let Some(stored) = writer::get_if_exists(s3, bucket, &l.key, what).await? else {
        return Ok(Finding::Missing);
    };
    let mut decoded = Vec::new();
    if let Err(e) = flate2::read::MultiGzDecoder::new(stored.as_ref()).read_to_end(&mut decoded) {
        let detail = format!("not gzip any more: {e}");
        return Ok(Finding::Changed { detail });
    }
    let sha256 = digest::sha256_hex(&decoded);
    if !sha256.eq_ignore_ascii_case(&l.sha256) {
        let detail = format!(
            "SHA-256 of its decoded bytes {sha256}, the inventory says {}",
            l.sha256
        );
        return Ok(Finding::Changed { detail });
    }
    let Some(d) = &l.digest else {
        return Ok(Finding::NotCovered);
    };
    Ok(match digests.get(d) {
        Some(Ok(listed)) => match listed.get(&l.key) {
            Some(h) if h.eq_ignore_ascii_case(&sha256) && l.validation == Status::Verified => {
                Finding::Verified
            }
            Some(h) => Finding::Changed {
                detail: format!("its digest s3://{bucket}/{d} lists SHA-256 {h}"),
            },
            None => Finding::Changed {
                detail: format!("its digest s3://{bucket}/{d} does not list it"),
            },
        },
        Some(Err(why)) => Finding::Changed {
            detail: format!("its digest s3://{bucket}/{d} does not verify: {why}"),
        },
        None => Finding::Changed {
            detail: format!("its digest s3://{bucket}/{d} could not be read"),
        },
    })
}
