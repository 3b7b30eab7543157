//! Commit: the results of every shard of a day → its manifest, once.
//!
//! Made by whoever finishes a day: the run itself for a day of one shard, else the
//! shard that holds the plan's commit (`_plan-RUN.commit.json`, taken with a
//! conditional create like the lease: see [`crate::pipeline::run_shard_job`]). While
//! the day's lease is still the planning run's, it
//! 1. merges the shards' results, in shard order, into the manifest; with `VALIDATE`,
//!    sums what each shard's digests showed, and with `strict` and any problem deletes
//!    the day's chunks and fails here, writing no manifest;
//! 2. deletes every chunk in the day's folder that the manifest does not list (an
//!    earlier run's, of another format, of another plan, or of a run in place that
//!    stopped when the day turned out larger than one shard) — cleanup by set
//!    difference, whatever named them;
//! 3. with `DAY_BY=event`, writes the day's delivery index from the shards' parts
//!    ([`crate::delivery_index`]), then `_manifest.json`, naming it: the day is complete;
//! 4. deletes the plan's files, and those of any earlier plan of the day, then the
//!    lease.
//!
//! Every step can be made again with the same outcome, so a commit that failed half
//! way is finished by the next attempt.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::Error;
use crate::layout;
use crate::lease::Lease;
use crate::listing::list_level;
use crate::manifest::{Manifest, ShardResult};
use crate::shard::log_selection;
use crate::trigger::Day;
use crate::validate::{Validate, Validation};
use crate::writer;

/// The outcome of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub day: Day,
    pub manifest_key: String,
    pub manifest: Manifest,
    pub stale_chunks_deleted: Vec<String>,
    /// From the start of the run (or the shard) that committed.
    pub duration: Duration,
}

/// Says what `VALIDATE` found; with `strict` and a problem, deletes the day's chunks
/// (Athena reads no rows of a day that failed) and fails with no manifest.
async fn checked(
    s3: &Client,
    cfg: &Config,
    day: Day,
    manifest: &Manifest,
    v: &Validation,
) -> Result<(), Error> {
    crate::metrics::emit_validation(&cfg.metrics_namespace, day, v);
    if v.failed() {
        warn!(day = %day, validate = %cfg.validate, validation = %v, "CloudTrail's digests do not vouch for every log file of the day");
    } else {
        info!(day = %day, validation = %v, "CloudTrail's digests checked");
    }
    if cfg.validate != Validate::Strict || !v.failed() {
        return Ok(());
    }
    let chunks: Vec<String> = manifest.chunks.iter().map(|c| c.key.clone()).collect();
    writer::delete_many(s3, &cfg.dst_bucket, &chunks).await?;
    Err(Error::Integrity {
        day: day.to_string(),
        validation: *v,
    })
}

/// Commits `day` from the results of all its shards, while `lease` is the day's.
pub async fn commit(
    s3: &Client,
    cfg: &Config,
    day: Day,
    lease: &Lease,
    mut results: Vec<ShardResult>,
    started: Instant,
) -> Result<Summary, Error> {
    let dst = cfg.dst_bucket.as_str();
    lease.check(s3).await?;
    let source = format!("s3://{}/{}", cfg.src_bucket, cfg.src_prefix);
    results.sort_by_key(|r| r.index);
    results.dedup_by_key(|r| r.index);
    // Every shard's part, in shard order, or no index (a shard of an earlier version
    // made none).
    let index_parts = results
        .iter_mut()
        .map(|r| r.delivery_index.take())
        .collect::<Option<Vec<_>>>();
    let mut manifest = Manifest::merge(day.to_string(), cfg.output_format, source.clone(), results)
        .map_err(|e| Error::Commit {
            day: day.to_string(),
            detail: e.to_string(),
        })?;
    if let Some(sel) = &manifest.selection {
        log_selection(day, sel);
    }
    if manifest.source_files == 0 {
        warn!(day = %day, source = %source, "no CloudTrail files for this day");
    }
    if let Some(v) = &manifest.validation {
        checked(s3, cfg, day, &manifest, v).await?;
    }
    let folder = layout::day_prefix(&cfg.dst_prefix, day);
    let (_, objects) = list_level(s3, dst, &folder).await?;
    let keep: HashSet<&str> = manifest
        .chunks
        .iter()
        .map(|c| c.key.as_str())
        .chain(manifest.inventory.iter().map(|i| i.key.as_str()))
        .collect();
    let (mut stale, mut plan_files) = (Vec::new(), Vec::new());
    for o in objects {
        let name = &o.key[folder.len()..];
        // An earlier run's delivery index goes when this run writes none (it would be
        // named by no manifest); otherwise it is overwritten below.
        let old_index = name == layout::DELIVERY_INDEX_NAME && index_parts.is_none();
        let ours = layout::chunk_format(name).is_some() || layout::is_inventory(name) || old_index;
        if ours && !keep.contains(o.key.as_str()) {
            stale.push(o.key);
        } else if layout::is_plan_file(name) {
            plan_files.push(o.key);
        }
    }
    writer::delete_many(s3, dst, &stale).await?;
    for key in &stale {
        info!(key = %format!("s3://{dst}/{key}"), "stale chunk (or inventory, or delivery index) from an earlier run deleted");
    }
    manifest.delivery_index = crate::delivery_index::write(s3, cfg, day, &source, index_parts)
        .await?
        .map(Box::new);
    let manifest_key = layout::manifest_key(&cfg.dst_prefix, day);
    writer::put_json(s3, dst, &manifest_key, &manifest).await?;
    // The plan has served. A file left behind (this delete failed) is `_`-prefixed,
    // so never read as data, and the day's next commit deletes it.
    if let Err(e) = writer::delete_many(s3, dst, &plan_files).await {
        warn!(day = %day, error = %e, "could not delete the plan's files; the day's next commit does");
    }
    lease.release(s3).await;
    let duration = started.elapsed();
    info!(
        day = %day,
        files = manifest.source_files,
        records = manifest.records,
        chunks = manifest.chunks.len(),
        shards = manifest.shards.len(),
        bytes_read = manifest.bytes_read,
        bytes_written = manifest.bytes_written,
        duration_ms = duration.as_millis() as u64,
        manifest = %format!("s3://{dst}/{manifest_key}"),
        "day aggregated"
    );
    Ok(Summary {
        day,
        manifest_key,
        manifest,
        stale_chunks_deleted: stale,
        duration,
    })
}
