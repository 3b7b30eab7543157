//! Status: where a day stands, from its output folder alone (`ctagg status DAY`):
//! complete (its manifest, with the shards it was run as), being aggregated (the lease;
//! for a plan of many shards, which are done, pending or failed and why), or not
//! aggregated.

use std::fmt;

use aws_sdk_s3::Client;

use crate::config::Config;
use crate::error::Error;
use crate::layout::{self, PlanFiles};
use crate::lease::{Lease, LeaseBody};
use crate::listing::list_level;
use crate::manifest::{Manifest, ShardResult};
use crate::pipeline::ShardFailure;
use crate::plan::PlanFile;
use crate::trigger::Day;
use crate::writer;

/// Where a day stands.
#[derive(Debug, Clone)]
pub enum DayStatus {
    /// The manifest is written.
    Complete { key: String, manifest: Manifest },
    /// A run holds the day's lease; `plan` when it planned many shards.
    Running {
        lease: LeaseBody,
        plan: Option<PlanState>,
    },
    /// Neither a manifest nor a lease.
    NotAggregated,
}

/// The shards of a plan under way.
#[derive(Debug, Clone)]
pub struct PlanState {
    pub plan: PlanFile,
    pub done: Vec<ShardResult>,
    pub failed: Vec<ShardFailure>,
    /// Shards neither done nor failed.
    pub pending: Vec<u32>,
}

/// Reads where `day` stands.
pub async fn day_status(s3: &Client, cfg: &Config, day: Day) -> Result<DayStatus, Error> {
    let dst = cfg.dst_bucket.as_str();
    let manifest_key = layout::manifest_key(&cfg.dst_prefix, day);
    let lease_key = layout::lease_key(&cfg.dst_prefix, day);
    let lease = Lease::at(dst, &lease_key, "").holder(s3).await?;
    let Some(lease) = lease else {
        let what = "GetObject (reading the day's manifest)";
        return Ok(
            match writer::get_json::<Manifest>(s3, dst, &manifest_key, what).await? {
                Some(manifest) => DayStatus::Complete {
                    key: format!("s3://{dst}/{manifest_key}"),
                    manifest,
                },
                None => DayStatus::NotAggregated,
            },
        );
    };
    let files = PlanFiles::new(&cfg.dst_prefix, day, &layout::run_tag(&lease.run));
    let what = "GetObject (reading the day's plan)";
    let Some(plan) = writer::get_json::<PlanFile>(s3, dst, &files.plan(), what).await? else {
        return Ok(DayStatus::Running { lease, plan: None });
    };
    let (_, objects) = list_level(s3, dst, &files.shard_files_prefix()).await?;
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for o in &objects {
        if files.done_shard(&o.key).is_some() {
            let what = "GetObject (reading a shard's result)";
            if let Some(r) = writer::get_json::<ShardResult>(s3, dst, &o.key, what).await? {
                done.push(r);
            }
        } else if files.failed_shard(&o.key).is_some() {
            let what = "GetObject (reading a shard's failure)";
            if let Some(f) = writer::get_json::<ShardFailure>(s3, dst, &o.key, what).await? {
                failed.push(f);
            }
        }
    }
    failed.retain(|f| !done.iter().any(|d| d.index == f.index));
    let pending = (0..plan.shards.len() as u32)
        .filter(|i| !done.iter().any(|d| d.index == *i) && !failed.iter().any(|f| f.index == *i))
        .collect();
    Ok(DayStatus::Running {
        lease,
        plan: Some(PlanState {
            plan,
            done,
            failed,
            pending,
        }),
    })
}

/// Shard numbers as ranges: `0-3, 5, 9-10`.
fn ranges(ids: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

impl fmt::Display for DayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DayStatus::NotAggregated => write!(f, "not aggregated (no manifest, no run under way)"),
            DayStatus::Complete { key, manifest: m } => {
                write!(
                    f,
                    "complete: {} files, {} records in {} chunks, {} shard(s) ({key})",
                    m.source_files,
                    m.records,
                    m.chunks.len(),
                    m.shards.len().max(1)
                )?;
                for s in m.shards.iter().filter(|_| m.shards.len() > 1) {
                    write!(
                        f,
                        "\n  shard {}: done at {}: {} files, {} records, {} chunks",
                        s.index, s.ended, s.files, s.records, s.chunks
                    )?;
                }
                Ok(())
            }
            DayStatus::Running { lease, plan: None } => write!(
                f,
                "being aggregated as one shard by run {} (lease until {})",
                lease.run, lease.expires
            ),
            DayStatus::Running {
                lease,
                plan: Some(p),
            } => {
                write!(
                    f,
                    "being aggregated: plan {} of run {} (lease until {}), {} shards: {} done, {} pending, {} failed",
                    p.plan.plan,
                    lease.run,
                    lease.expires,
                    p.plan.shards.len(),
                    p.done.len(),
                    p.pending.len(),
                    p.failed.len()
                )?;
                let mut done: Vec<u32> = p.done.iter().map(|d| d.index).collect();
                done.sort();
                if !done.is_empty() {
                    write!(f, "\n  done: {}", ranges(&done))?;
                }
                if !p.pending.is_empty() {
                    write!(f, "\n  pending: {}", ranges(&p.pending))?;
                }
                for x in &p.failed {
                    write!(f, "\n  shard {} failed at {}: {}", x.index, x.at, x.error)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shard lists read as ranges.
    #[test]
    fn shard_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 3, 5, 9, 10]), "0-3, 5, 9-10");
        assert_eq!(ranges(&[7]), "7");
        assert_eq!(ranges(&[]), "");
    }
}
