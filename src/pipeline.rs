//! Pipeline: a day as plan → shards → commit, and one shard of a plan (a shard
//! message). Only wiring: planning is in [`crate::plan`], a shard's stages in
//! [`crate::shard`], the commit in [`crate::commit`].
//!
//! ```text
//! day ─▶ lease ─▶ plan: the listing, shard 0 running in place while the day fits one
//!          │
//!          ├─ one shard ─▶ commit (manifest; the names and bytes of a day of one shard)
//!          │
//!          └─ many ─▶ keys files + _plan ─▶ shards: SQS messages (Lambda), or tasks of
//!                                          this process (`ctagg run`), K at a time
//!                                          └─▶ each: chunks + done file; the last one
//!                                              to finish takes the commit ─▶ commit
//! ```
//!
//! **Exactly one commit.** A shard that has written its chunks writes its `done`
//! file, then lists the plan's `done` files. S3 lists what was written before, so of
//! the shards that finish last at least one sees every `done` file; each of those tries
//! to take `_plan-RUN.commit.json` as the lease is taken (a conditional create; an
//! expired claim is taken over with `If-Match`), and only its holder commits. A claim
//! holder that fails releases it; one that dies leaves it to expire with its deadline,
//! after which the retry of its message takes it over. The commit can be made again
//! with the same outcome, so a commit that stopped half way is finished.
//!
//! **At-least-once delivery.** A shard whose `done` file exists is not run again; one
//! delivered twice at the same time runs twice and writes the same bytes under the
//! same names (a plan's content id names its chunks). A shard message whose plan is no
//! longer the day's (another run holds the lease, or the day was committed) writes
//! nothing; one whose plan was superseded while it ran deletes the chunks it wrote,
//! unless the day's current plan names them too (the same sources planned again).

use std::time::Instant;

use aws_sdk_s3::Client;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::Error;
use crate::layout::{self, Naming, PlanFiles};
use crate::lease::{self, Lease, LEASE_WITHOUT_DEADLINE};
use crate::listing::{self, list_level};
use crate::manifest::{Manifest, ShardResult};
use crate::plan::{self, Plan, PlanFile};
use crate::queue::{self, Message};
use crate::select;
use crate::shard::{self, Progress, ShardOutput, ShardRun};
use crate::trigger::{Day, ShardJob};
use crate::writer;

pub use crate::commit::Summary;

/// How long a plan whose shards run from the queue holds the day: long enough for its
/// shards to be retried (5 receives, 90 minutes apart by default) before another run
/// may take the day over.
pub const PLAN_LEASE: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

/// Options of one run that are not configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop with [`Error::Deadline`] instead of going on past this instant (the
    /// Lambda's deadline less a safety margin).
    pub deadline: Option<Instant>,
    /// Shards of a day of many run at once in this process (0: one per core).
    pub shard_concurrency: usize,
}

/// Where the shards of a day of many go.
#[derive(Debug, Clone, Copy)]
pub enum Dispatch<'a> {
    /// Tasks of this process, `RunOptions::shard_concurrency` at a time (`ctagg run`).
    InProcess,
    /// One message per shard on this queue (the Lambda).
    Queue {
        sqs: &'a aws_sdk_sqs::Client,
        queue_url: &'a str,
    },
    /// Left to the caller: the plan is written and the day held for it, as for the
    /// queue, and its shards are run by [`run_shard_job`] wherever the caller likes
    /// (other processes, machines, tests).
    Later,
    /// Nowhere: a day of many shards is an error saying what to configure.
    Refuse,
}

/// What a day's run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayOutcome {
    /// The day is complete: its manifest is written.
    Committed(Summary),
    /// The day is planned as many shards, sent to the queue; the last of them commits.
    FannedOut(FannedOut),
}

/// A day planned as many shards and sent to the queue (or left to the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FannedOut {
    pub day: Day,
    pub plan: PlanFile,
    pub duration: std::time::Duration,
}

impl FannedOut {
    /// The shard jobs of the plan, in order (what its messages say).
    pub fn jobs(&self) -> Vec<ShardJob> {
        let of = self.plan.shards.len() as u32;
        (0..of)
            .map(|index| ShardJob {
                day: self.day,
                run: layout::run_tag(&self.plan.run),
                index,
                of,
            })
            .collect()
    }
}

/// What one shard message ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardOutcome {
    /// The plan is no longer the day's: nothing was written.
    Superseded { why: String },
    /// The shard is done; the day is committed by another shard.
    Done(ShardResult),
    /// The shard was the last one, and committed the day.
    Committed(ShardResult, Box<Summary>),
}

/// Aggregates one day in this process: plans it, runs its shard(s), commits. Fails on
/// the first failed read or write, and when another run holds the day.
pub async fn aggregate_day(
    s3: &Client,
    cfg: &Config,
    day: Day,
    opts: RunOptions,
) -> Result<Summary, Error> {
    match run_day(s3, cfg, day, opts, Dispatch::InProcess).await? {
        DayOutcome::Committed(summary) => Ok(summary),
        DayOutcome::FannedOut(_) => unreachable!("shards in process are committed"),
    }
}

/// Plans `day` and runs it: in place when it fits one shard, else its shards by
/// `dispatch`.
pub async fn run_day(
    s3: &Client,
    cfg: &Config,
    day: Day,
    opts: RunOptions,
    dispatch: Dispatch<'_>,
) -> Result<DayOutcome, Error> {
    let started = Instant::now();
    let (src_bucket, dst_bucket) = (cfg.src_bucket.as_str(), cfg.dst_bucket.as_str());
    let days = select::folders_read(day, cfg.day_by);
    let lists = cfg.max_concurrent_lists;
    let folders = listing::day_folders(s3, src_bucket, &cfg.src_prefix, &days, lists).await?;
    if folders.accounts == 0 {
        return Err(Error::NoAccounts {
            bucket: cfg.src_bucket.clone(),
            prefix: cfg.src_prefix.clone(),
        });
    }
    info!(day = %day, accounts = folders.accounts, regions = folders.prefixes.len(), source = %format!("s3://{src_bucket}/{}", cfg.src_prefix), "day folders found");
    let label = crate::error::ShardLabel {
        index: 0,
        shards: 1,
        max_files: cfg.shard_limits.max_files,
        max_bytes: cfg.shard_limits.max_bytes,
    };
    let progress = Progress::default();
    let not_yet = ShardRun {
        day,
        naming: &Naming::Single,
        label,
        deadline: opts.deadline,
        folders: &[],
    };
    not_yet.check(&progress)?;
    let held_for = match opts.deadline {
        Some(d) => d.saturating_duration_since(Instant::now()),
        None => LEASE_WITHOUT_DEADLINE,
    };
    let run = lease::run_id();
    let lease = Lease::acquire(
        s3,
        dst_bucket,
        &cfg.dst_prefix,
        day,
        &run,
        chrono::Utc::now() + held_for,
    )
    .await?;
    let outcome = async {
        // The day is incomplete from now until the new manifest is written.
        let manifest_key = layout::manifest_key(&cfg.dst_prefix, day);
        writer::delete(s3, dst_bucket, &manifest_key).await?;
        let plan = plan::plan_day(s3, cfg, day, &run, folders, opts.deadline).await?;
        match plan {
            Plan::Single(output) => {
                let result = result_of(output, &run, None, 0, 1);
                let summary = crate::commit::commit(s3, cfg, day, &lease, vec![result], started);
                Ok(DayOutcome::Committed(summary.await?))
            }
            Plan::Many(plan) => {
                dispatch_shards(s3, cfg, day, &lease, plan, opts, dispatch, started).await
            }
        }
    }
    .await;
    if outcome.is_err() {
        lease.release(s3).await;
    }
    outcome
}

/// The result of shard `index` of `shards` of the plan of `run` (content id `plan`,
/// `None` for a day of one shard), ending now.
fn result_of(
    output: ShardOutput,
    run: &str,
    plan: Option<&str>,
    index: u32,
    shards: u32,
) -> ShardResult {
    ShardResult {
        run: run.to_string(),
        plan: plan.map(str::to_string),
        index,
        shards,
        files: output.stats.files,
        records: output.records(),
        bytes_read: output.stats.bytes_read,
        chunks: output.chunks,
        selection: output.selection,
        validation: output.validation,
        inventory: output.inventory,
        delivery_index: output.delivery_index,
        ended: now(),
        duration_ms: output.duration.as_millis() as u64,
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Sends a planned day's shards where `dispatch` says.
#[allow(clippy::too_many_arguments)]
async fn dispatch_shards(
    s3: &Client,
    cfg: &Config,
    day: Day,
    lease: &Lease,
    plan: PlanFile,
    opts: RunOptions,
    dispatch: Dispatch<'_>,
    started: Instant,
) -> Result<DayOutcome, Error> {
    let tag = layout::run_tag(&plan.run);
    let of = plan.shards.len() as u32;
    let jobs: Vec<ShardJob> = (0..of)
        .map(|index| ShardJob {
            day,
            run: tag.clone(),
            index,
            of,
        })
        .collect();
    match dispatch {
        Dispatch::Refuse => Err(Error::NoShardQueue {
            day: day.to_string(),
            shards: of,
            files: plan.files,
            bytes: plan.bytes,
            max_files: plan.settings.shard_max_files,
            max_bytes: plan.settings.shard_max_bytes,
        }),
        Dispatch::Queue { .. } | Dispatch::Later => {
            if let Dispatch::Queue { sqs, queue_url } = dispatch {
                let messages: Vec<Message> = jobs
                    .iter()
                    .map(|j| Message {
                        what: j.to_string(),
                        body: j.body(),
                    })
                    .collect();
                queue::send(sqs, queue_url, &messages, |_, _| {}).await?;
                info!(day = %day, shards = of, queue = %queue_url, plan = %plan.plan, "shard messages sent");
            }
            // The shards hold the day until the last of them commits it.
            if let Err(e) = lease.extend(s3, chrono::Utc::now() + PLAN_LEASE).await {
                warn!(day = %day, error = %e, "could not extend the plan's lease; its shards go on while the lease names the plan");
            }
            Ok(DayOutcome::FannedOut(FannedOut {
                day,
                plan,
                duration: started.elapsed(),
            }))
        }
        Dispatch::InProcess => {
            let k = match opts.shard_concurrency {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                k => k,
            };
            info!(day = %day, shards = of, concurrency = k, plan = %plan.plan, "running the shards in this process");
            let summary = run_in_process(s3, cfg, jobs, k).await?;
            Ok(DayOutcome::Committed(summary))
        }
    }
}

/// Runs `jobs` in this process, `k` at a time, exactly as their messages would run;
/// after a failure no further shard starts, those under way finish, and the first
/// error is returned.
async fn run_in_process(
    s3: &Client,
    cfg: &Config,
    jobs: Vec<ShardJob>,
    k: usize,
) -> Result<Summary, Error> {
    let lease_key = jobs
        .first()
        .map(|j| layout::lease_key(&cfg.dst_prefix, j.day))
        .unwrap_or_default();
    let mut pending = jobs.into_iter();
    let mut running = FuturesUnordered::new();
    let (mut committed, mut failed) = (None, None);
    loop {
        while failed.is_none() && running.len() < k.max(1) {
            let Some(job) = pending.next() else { break };
            running.push(run_shard_job(s3, cfg, job, None));
        }
        match running.next().await {
            None => break,
            Some(Ok(ShardOutcome::Committed(_, summary))) => committed = Some(*summary),
            Some(Ok(ShardOutcome::Superseded { why })) => {
                failed.get_or_insert(Error::LeaseLost {
                    lease: format!("s3://{}/{lease_key}", cfg.dst_bucket),
                    run: "this run".into(),
                    now: why,
                });
            }
            Some(Ok(ShardOutcome::Done(_))) => {}
            Some(Err(e)) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    committed.ok_or_else(|| Error::Internal {
        stage: "pipeline",
        detail: "every shard ran, and none committed the day".into(),
    })
}

/// Runs one shard of a day's plan (a shard message), and commits the day when it is
/// the last to finish. See the module doc.
pub async fn run_shard_job(
    s3: &Client,
    cfg: &Config,
    job: ShardJob,
    deadline: Option<Instant>,
) -> Result<ShardOutcome, Error> {
    let started = Instant::now();
    let dst = cfg.dst_bucket.as_str();
    let files = PlanFiles::new(&cfg.dst_prefix, job.day, &job.run);
    let lease_key = layout::lease_key(&cfg.dst_prefix, job.day);
    let Some(run) = plan_run(s3, dst, &lease_key, &job.run).await? else {
        let why = "the day's lease no longer names its plan: the plan was committed, or another run took the day over".to_string();
        info!(shard = %job, "{why}; nothing to do");
        return Ok(ShardOutcome::Superseded { why });
    };
    let lease = Lease::at(dst, &lease_key, &run);
    let what = "GetObject (reading the day's plan)";
    let Some(plan) = writer::get_json::<PlanFile>(s3, dst, &files.plan(), what).await? else {
        let why = format!("its plan s3://{dst}/{} is gone", files.plan());
        return Ok(ShardOutcome::Superseded { why });
    };
    if plan.shards.len() as u32 != job.of {
        return Err(Error::Commit {
            day: job.day.to_string(),
            detail: format!(
                "the message says {} shards, the plan s3://{dst}/{} has {}",
                job.of,
                files.plan(),
                plan.shards.len()
            ),
        });
    }
    let cfg = plan.settings.apply(cfg);
    let what = "GetObject (reading a shard's result)";
    let done = writer::get_json::<ShardResult>(s3, dst, &files.done(job.index), what).await?;
    let result = match done {
        Some(result) => {
            info!(shard = %job, "the shard is done already (a message delivered again): not run again");
            result
        }
        None => {
            let result = match run_one(s3, &cfg, &plan, &job, &files, deadline).await {
                Ok(result) => result,
                Err(e) => {
                    record_failure(s3, dst, &files, &job, &e).await;
                    return Err(Error::Shard {
                        day: job.day.to_string(),
                        index: job.index,
                        shards: job.of,
                        source: Box::new(e),
                    });
                }
            };
            if let Some(why) =
                superseded_while_running(s3, &cfg, &job, &run, &plan, &result).await?
            {
                return Ok(ShardOutcome::Superseded { why });
            }
            result
        }
    };
    commit_if_last(s3, &cfg, &job, &files, &lease, result, deadline, started).await
}

/// The id of the run holding the day's lease, when its tag is `tag`.
async fn plan_run(
    s3: &Client,
    bucket: &str,
    lease_key: &str,
    tag: &str,
) -> Result<Option<String>, Error> {
    let held = Lease::at(bucket, lease_key, "").holder(s3).await?;
    Ok(held
        .map(|body| body.run)
        .filter(|run| layout::run_tag(run) == tag))
}

/// Runs shard `job` of `plan` over its keys file and writes its `done` file.
async fn run_one(
    s3: &Client,
    cfg: &Config,
    plan: &PlanFile,
    job: &ShardJob,
    files: &PlanFiles,
    deadline: Option<Instant>,
) -> Result<ShardResult, Error> {
    let dst = cfg.dst_bucket.as_str();
    let spec = &plan.shards[job.index as usize];
    let keys_key = files.keys(job.index);
    let what = "GetObject (reading a shard's keys file)";
    let keys = writer::get_if_exists(s3, dst, &keys_key, what)
        .await?
        .ok_or_else(|| Error::s3_detail(what, dst, &keys_key, "it is missing".into()))?;
    let objects =
        plan::read_keys(keys).map(|o| o.map_err(|e| Error::s3_detail(what, dst, &keys_key, e)));
    let progress = std::sync::Arc::new(Progress::default());
    let objects = shard::counted(futures::stream::iter(objects), progress.clone());
    let naming = Naming::Shard {
        plan: plan.plan.clone(),
        index: job.index,
    };
    let run = ShardRun {
        day: job.day,
        naming: &naming,
        label: plan.label(job.index),
        deadline,
        folders: &spec.empty_folders,
    };
    info!(shard = %job, files = spec.files, bytes = spec.bytes, first = %spec.first_key, "shard started");
    let mut output = shard::run(s3, cfg, run, objects, progress).await?;
    if let Some(sel) = &mut output.selection {
        sel.next_index = spec.next_index.clone().map(Box::new);
    }
    if output.stats.files != spec.files {
        let detail = format!(
            "it lists {} objects, the plan says {}",
            output.stats.files, spec.files
        );
        return Err(Error::s3_detail(what, dst, &keys_key, detail));
    }
    let result = result_of(output, &plan.run, Some(&plan.plan), job.index, job.of);
    writer::put_json(s3, dst, &files.done(job.index), &result).await?;
    if let Err(e) = writer::delete(s3, dst, &files.failed(job.index)).await {
        warn!(shard = %job, error = %e, "could not delete the shard's failure record");
    }
    info!(shard = %job, files = result.files, records = result.records, chunks = result.chunks.len(), duration_ms = result.duration_ms, "shard done");
    Ok(result)
}

/// What `_plan-RUN-SSSSS.failed.json` holds: the last failure of a shard, for
/// `ctagg status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ShardFailure {
    pub index: u32,
    pub error: String,
    pub at: String,
}

/// Records why a shard failed (best effort: the error itself is reported anyway).
async fn record_failure(s3: &Client, bucket: &str, files: &PlanFiles, job: &ShardJob, e: &Error) {
    let failure = ShardFailure {
        index: job.index,
        error: crate::error::error_chain(e),
        at: now(),
    };
    if let Err(e) = writer::put_json(s3, bucket, &files.failed(job.index), &failure).await {
        warn!(shard = %job, error = %e, "could not record the shard's failure");
    }
}

/// After a shard has written its chunks: `None` while the day's lease still names its
/// plan; else why not, once the chunks it wrote that no current plan or manifest of the
/// day names are deleted.
async fn superseded_while_running(
    s3: &Client,
    cfg: &Config,
    job: &ShardJob,
    run: &str,
    plan: &PlanFile,
    result: &ShardResult,
) -> Result<Option<String>, Error> {
    let dst = cfg.dst_bucket.as_str();
    let lease_key = layout::lease_key(&cfg.dst_prefix, job.day);
    let held = Lease::at(dst, &lease_key, run).holder(s3).await?;
    let now_run = match held {
        Some(body) if body.run == run => return Ok(None),
        Some(body) => Some(body.run),
        None => None,
    };
    // The chunk names are the plan's content id: a current plan or manifest with the
    // same id names the same chunks, with the same bytes.
    let mut same = false;
    if let Some(other) = &now_run {
        let files = PlanFiles::new(&cfg.dst_prefix, job.day, &layout::run_tag(other));
        let what = "GetObject (reading the day's plan)";
        let current = writer::get_json::<PlanFile>(s3, dst, &files.plan(), what).await?;
        same |= current.is_some_and(|p| p.plan == plan.plan);
    }
    let manifest_key = layout::manifest_key(&cfg.dst_prefix, job.day);
    let what = "GetObject (reading the day's manifest)";
    let manifest = writer::get_json::<Manifest>(s3, dst, &manifest_key, what).await?;
    same |= manifest.is_some_and(|m| m.plan.as_deref() == Some(plan.plan.as_str()));
    let why = format!(
        "the day was taken over by {} while the shard ran",
        now_run.as_deref().unwrap_or("no run (its lease is gone)")
    );
    if !same {
        let keys: Vec<String> = result.chunks.iter().map(|c| c.key.clone()).collect();
        let keys_done = [PlanFiles::new(&cfg.dst_prefix, job.day, &job.run).done(job.index)];
        writer::delete_many(s3, dst, &keys).await?;
        writer::delete_many(s3, dst, &keys_done).await?;
        warn!(shard = %job, chunks = keys.len(), "{why}: the chunks it wrote are deleted");
    } else {
        warn!(shard = %job, "{why}: its chunks are the current plan's too, and stay");
    }
    Ok(Some(why))
}

/// Commits the day if every shard of the plan is done and this one takes the commit.
#[allow(clippy::too_many_arguments)]
async fn commit_if_last(
    s3: &Client,
    cfg: &Config,
    job: &ShardJob,
    files: &PlanFiles,
    lease: &Lease,
    result: ShardResult,
    deadline: Option<Instant>,
    started: Instant,
) -> Result<ShardOutcome, Error> {
    let dst = cfg.dst_bucket.as_str();
    let (_, objects) = list_level(s3, dst, &files.shard_files_prefix()).await?;
    let done = objects
        .iter()
        .filter(|o| files.done_shard(&o.key).is_some())
        .count() as u32;
    if done < job.of {
        info!(shard = %job, done, of = job.of, "shards done so far");
        return Ok(ShardOutcome::Done(result));
    }
    let held_for = match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()),
        None => LEASE_WITHOUT_DEADLINE,
    };
    let claimer = lease::run_id();
    let expires = chrono::Utc::now() + held_for;
    let claim = match Lease::acquire_key(s3, dst, &files.commit(), job.day, &claimer, expires).await
    {
        Ok(claim) => claim,
        Err(Error::Leased { run, .. }) => {
            info!(shard = %job, committer = %run, "every shard is done; another one commits the day");
            return Ok(ShardOutcome::Done(result));
        }
        Err(e) => return Err(e),
    };
    info!(shard = %job, "every shard is done: this one commits the day");
    let committed = async {
        let results = read_results(s3, dst, files, job.of).await?;
        crate::commit::commit(s3, cfg, job.day, lease, results, started).await
    }
    .await;
    match committed {
        Ok(summary) => Ok(ShardOutcome::Committed(result, Box::new(summary))),
        Err(e) => {
            claim.release(s3).await;
            Err(Error::Shard {
                day: job.day.to_string(),
                index: job.index,
                shards: job.of,
                source: Box::new(e),
            })
        }
    }
}

/// The `done` files of shards `0..of`.
async fn read_results(
    s3: &Client,
    bucket: &str,
    files: &PlanFiles,
    of: u32,
) -> Result<Vec<ShardResult>, Error> {
    let what = "GetObject (reading a shard's result)";
    let reads = futures::stream::iter(0..of).map(|i| async move {
        let key = files.done(i);
        writer::get_json::<ShardResult>(s3, bucket, &key, what)
            .await?
            .ok_or_else(|| Error::s3_detail(what, bucket, &key, "it is missing".into()))
    });
    reads
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}
