//! A day of many shards: plan → shards → one commit, against the S3 protocol server.
//! Shards run in this process (as `ctagg run` runs them) or one at a time through
//! `run_shard_job` (as their SQS messages run them: delivered late, twice, at the same
//! time, after the plan was superseded).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_s3::Client;
use cloudtrail_aggregator::pipeline::{run_day, run_shard_job, DayOutcome, Dispatch, FannedOut};
use cloudtrail_aggregator::status::{day_status, DayStatus};
use cloudtrail_aggregator::{aggregate_day, Config, Day, RunOptions, ShardOutcome, Summary};
use common::*;

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";

fn day() -> Day {
    "2024-02-12".parse().unwrap()
}

fn config(dst_prefix: &str, vars: &[(&str, &str)]) -> Config {
    let mut all = vec![
        ("SRC_BUCKET", SRC),
        ("DST_BUCKET", DST),
        ("DST_PREFIX", dst_prefix),
    ];
    all.extend_from_slice(vars);
    config_with(&all)
}

/// A day of 3 accounts × 2 regions × `per` files of 1-4 records, in the organisation
/// layout, sorted by key; with the records it must hold, in key order.
fn org_day(per: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut n = 0;
    for account in ["111111111111", "222222222222", "333333333333"] {
        for region in ["eu-west-1", "us-east-1"] {
            for f in 0..per {
                let recs: Vec<String> = (0..1 + (n % 4))
                    .map(|i| record(account, region, n * 10 + i))
                    .collect();
                n += 1;
                let key = log_key("AWSLogs/o-abc123def4/", account, region, "2024/02/12", f);
                files.push((key, gzip(&delivery(&recs))));
            }
        }
    }
    files.sort();
    files
}

fn want(files: &[(String, Vec<u8>)]) -> Vec<Expected> {
    files.iter().flat_map(|(_, b)| expected_lines(b)).collect()
}

async fn serve(server: &S3, files: &[(String, Vec<u8>)]) -> Client {
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    for (k, b) in files {
        put(&s3, SRC, k, b.clone()).await;
    }
    s3
}

/// Every object under `prefix` with its bytes (manifests without their end times).
async fn snapshot(s3: &Client, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for k in keys(s3, DST, prefix).await {
        out.push((k.clone(), get(s3, DST, &k).await.unwrap()));
    }
    without_end_times(out)
}

/// The NDJSON of a day's chunks, read in the manifest's order.
async fn records_in_manifest_order(s3: &Client, folder: &str) -> Vec<u8> {
    let m: serde_json::Value = serde_json::from_slice(
        &get(s3, DST, &format!("{folder}_manifest.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    let mut all = Vec::new();
    for c in m["chunks"].as_array().unwrap() {
        all.extend(gunzip(
            &get(s3, DST, c["key"].as_str().unwrap()).await.unwrap(),
        ));
    }
    all
}

/// Aggregates the day in this process into `dst_prefix` with `vars`.
async fn run_with(s3: &Client, dst_prefix: &str, vars: &[(&str, &str)]) -> Summary {
    aggregate_day(s3, &config(dst_prefix, vars), day(), RunOptions::default())
        .await
        .unwrap()
}

/// Plans the day as shards left to the caller (`Dispatch::Later`).
async fn plan(s3: &Client, cfg: &Config) -> FannedOut {
    match run_day(s3, cfg, day(), RunOptions::default(), Dispatch::Later)
        .await
        .unwrap()
    {
        DayOutcome::FannedOut(f) => f,
        DayOutcome::Committed(_) => panic!("the day fitted one shard"),
    }
}

/// A day of many shards, run in this process, holds exactly the single run's records
/// in the same order; its chunk names sort in that order; the manifest records the
/// plan; nothing of the plan is left; a rerun writes the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_shards_hold_the_single_runs_records_in_order() {
    let files = org_day(7);
    let server = S3::new();
    let s3 = serve(&server, &files).await;
    let single = run_with(&s3, "one/", &[]).await;
    assert_eq!(single.manifest.shards.len(), 1);
    assert!(single.manifest.plan.is_none());
    let cfg = config("many/", &[("SHARD_MAX_FILES", "5")]);
    let opts = RunOptions {
        shard_concurrency: 3,
        ..RunOptions::default()
    };
    let many = aggregate_day(&s3, &cfg, day(), opts).await.unwrap();
    let m = &many.manifest;
    assert_eq!(m.shards.len(), 9, "42 files in shards of at most 5");
    assert_eq!(m.shards.iter().map(|s| s.files).sum::<u64>(), 42);
    assert!(m.shards.iter().all(|s| s.files <= 5));
    assert_eq!(m.records, single.manifest.records);
    let plan = m.plan.clone().expect("a plan id");
    let names: Vec<&str> = m.chunks.iter().map(|c| c.key.as_str()).collect();
    assert!(names
        .iter()
        .all(|k| k.starts_with(&format!("many/2024/02/12/{plan}-"))));
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "chunk names sort in record order");
    assert_eq!(
        records_in_manifest_order(&s3, "many/2024/02/12/").await,
        records_in_manifest_order(&s3, "one/2024/02/12/").await,
        "the shards' records, in the manifest's order, are the single run's"
    );
    assert_day_whole(&s3, DST, "many/2024/02/12/", &want(&files)).await;
    let left: Vec<String> = keys(&s3, DST, "many/").await;
    assert!(
        left.iter()
            .all(|k| k.ends_with(".ndjson.gz") || k.ends_with("_manifest.json")),
        "only chunks and the manifest are left: {left:?}"
    );
    let first = snapshot(&s3, "many/").await;
    aggregate_day(&s3, &cfg, day(), opts).await.unwrap();
    assert_eq!(snapshot(&s3, "many/").await, first, "a rerun differs");
}

/// The same in Parquet and in event days with DEDUP: as many records as the single run,
/// the same duplicates dropped (an account and region is never split), reruns
/// identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_in_parquet_and_event_days_with_dedup() {
    let files = straddling_days();
    let server = S3::new();
    let s3 = serve(&server, &files).await;
    let event = [("DAY_BY", "event"), ("DEDUP", "eventid")];
    let single = run_with(&s3, "one/", &event).await;
    let sharded = [
        ("DAY_BY", "event"),
        ("DEDUP", "eventid"),
        ("SHARD_MAX_FILES", "4"),
    ];
    let many = run_with(&s3, "many/", &sharded).await;
    assert_eq!(
        many.manifest.shards.len(),
        4,
        "one per account and region (6 files each)"
    );
    let (want, _, other, dups) = event_day_oracle(&files, "2024-02-12", true);
    assert_eq!(many.manifest.records, want.len() as u64);
    assert_eq!(many.manifest.selection, single.manifest.selection);
    let sel = many.manifest.selection.as_ref().unwrap();
    assert_eq!((sel.duplicates, sel.other_days), (dups, other));
    assert_day_whole(&s3, DST, "many/2024/02/12/", &want).await;

    let parquet = [("OUTPUT_FORMAT", "parquet"), ("SHARD_MAX_FILES", "10")];
    let pq = run_with(&s3, "pq/", &parquet).await;
    assert_eq!(
        pq.manifest.shards.len(),
        2,
        "12 files in shards of at most 10"
    );
    let all_of_day: u64 = files
        .iter()
        .filter(|(k, _)| k.contains("/2024/02/12/"))
        .map(|(_, b)| expected_lines(b).len() as u64)
        .sum();
    assert_eq!(pq.manifest.records, all_of_day);
    assert!(pq
        .manifest
        .chunks
        .iter()
        .all(|c| c.key.ends_with(".parquet")));
    let first = snapshot(&s3, "pq/").await;
    run_with(&s3, "pq/", &parquet).await;
    assert_eq!(snapshot(&s3, "pq/").await, first, "a Parquet rerun differs");
}

/// With DEDUP, an account's folders under its organisation and its own trail are one
/// shard's: duplicates across the two trails are dropped as in a single run.
#[tokio::test]
async fn dedup_keeps_one_accounts_two_trails_in_one_shard() {
    let mut files = Vec::new();
    for (prefix, tag) in [("AWSLogs/", "own"), ("AWSLogs/o-abc123def4/", "org")] {
        for account in ["111111111111", "222222222222"] {
            for f in 0..3 {
                // Both trails log the same events of the account.
                let recs: Vec<String> = (0..2)
                    .map(|i| {
                        event_record(
                            account,
                            "us-east-1",
                            "2024-02-12T10:00:00Z",
                            &format!("{account}-{f}-{i}"),
                        )
                    })
                    .collect();
                let mut key = log_key(prefix, account, "us-east-1", "2024/02/12", f);
                key = key.replace(".json.gz", &format!("_{tag}.json.gz"));
                files.push((key, gzip(&delivery(&recs))));
            }
        }
    }
    files.sort();
    let server = S3::new();
    let s3 = serve(&server, &files).await;
    let dedup = [("DEDUP", "eventid")];
    let single = run_with(&s3, "one/", &dedup).await;
    let sharded = [("DEDUP", "eventid"), ("SHARD_MAX_FILES", "2")];
    let many = run_with(&s3, "many/", &sharded).await;
    assert_eq!(many.manifest.shards.len(), 2, "one per account");
    assert_eq!(single.manifest.records, 12);
    assert_eq!(many.manifest.records, 12);
    let sel = many.manifest.selection.as_ref().unwrap();
    assert_eq!(sel.duplicates, 12);
    let lines =
        |b: Vec<u8>| -> HashSet<Vec<u8>> { b.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect() };
    assert_eq!(
        lines(records_in_manifest_order(&s3, "many/2024/02/12/").await),
        lines(records_in_manifest_order(&s3, "one/2024/02/12/").await),
        "the same records survive"
    );
}

/// Shards run one message at a time: no manifest until every shard is done (the status
/// says which are pending); a shard delivered again is not run again; the last one
/// commits; a message of the committed plan writes nothing.
#[tokio::test]
async fn no_manifest_until_every_shard_ran_and_redeliveries_change_nothing() {
    let files = org_day(4);
    let (server, seen) = S3::recording(None);
    let s3 = serve(&server, &files).await;
    let cfg = config("d/", &[("SHARD_MAX_FILES", "5")]);
    let fanned = plan(&s3, &cfg).await;
    let jobs = fanned.jobs();
    assert_eq!(jobs.len(), 5);
    let manifest_key = "d/2024/02/12/_manifest.json";
    for job in &jobs[..4] {
        let outcome = run_shard_job(&s3, &cfg, job.clone(), None).await.unwrap();
        assert!(matches!(outcome, ShardOutcome::Done(_)), "{outcome:?}");
        assert!(get(&s3, DST, manifest_key).await.is_none());
    }
    match day_status(&s3, &cfg, day()).await.unwrap() {
        DayStatus::Running { plan: Some(p), .. } => {
            assert_eq!((p.done.len(), p.pending.clone()), (4, vec![4]));
        }
        other => panic!("{other}"),
    }
    // Shard 1 delivered again: nothing is written.
    let before = snapshot(&s3, "d/").await;
    seen.lock().unwrap().clear();
    let again = run_shard_job(&s3, &cfg, jobs[1].clone(), None)
        .await
        .unwrap();
    assert!(matches!(again, ShardOutcome::Done(_)));
    assert_eq!(snapshot(&s3, "d/").await, before);
    let writes: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !["GetObject", "ListObjectsV2", "HeadObject"].contains(&r.op.as_str()))
        .map(|r| format!("{} {}", r.op, r.uri))
        .collect();
    assert!(
        writes.is_empty(),
        "a shard delivered again wrote: {writes:?}"
    );
    let last = run_shard_job(&s3, &cfg, jobs[4].clone(), None)
        .await
        .unwrap();
    let ShardOutcome::Committed(_, summary) = last else {
        panic!("the last shard commits: {last:?}")
    };
    assert_eq!(summary.manifest.shards.len(), 5);
    assert_day_whole(&s3, DST, "d/2024/02/12/", &want(&files)).await;
    let done = snapshot(&s3, "d/").await;
    for job in &jobs {
        let late = run_shard_job(&s3, &cfg, job.clone(), None).await.unwrap();
        assert!(matches!(late, ShardOutcome::Superseded { .. }), "{late:?}");
    }
    assert_eq!(
        snapshot(&s3, "d/").await,
        done,
        "a late message changed the day"
    );
    assert!(matches!(
        day_status(&s3, &cfg, day()).await.unwrap(),
        DayStatus::Complete { .. }
    ));
}

/// The last shards finishing together, each delivered twice at once: exactly one
/// commit (one manifest written), the day whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_shards_finishing_together_commit_exactly_once() {
    for round in 0..3 {
        let files = org_day(3);
        let (server, seen) = S3::recording(None);
        let s3 = serve(&server, &files).await;
        let cfg = config("d/", &[("SHARD_MAX_FILES", "4")]);
        let jobs = plan(&s3, &cfg).await.jobs();
        let n = jobs.len();
        assert!(n >= 4);
        for job in &jobs[..n - 2] {
            run_shard_job(&s3, &cfg, job.clone(), None).await.unwrap();
        }
        let last = [&jobs[n - 2], &jobs[n - 1], &jobs[n - 2], &jobs[n - 1]];
        let runs = last.map(|job| {
            let (s3, cfg, job) = (s3.clone(), cfg.clone(), job.clone());
            tokio::spawn(async move { run_shard_job(&s3, &cfg, job, None).await })
        });
        let mut committed = 0;
        for r in runs {
            match r.await.unwrap().unwrap() {
                ShardOutcome::Committed(..) => committed += 1,
                ShardOutcome::Done(_) | ShardOutcome::Superseded { .. } => {}
            }
        }
        assert_eq!(committed, 1, "round {round}: exactly one shard commits");
        let manifests = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.op == "PutObject" && r.uri.contains("_manifest.json"))
            .count();
        assert_eq!(manifests, 1, "round {round}: the manifest is written once");
        assert_day_whole(&s3, DST, "d/2024/02/12/", &want(&files)).await;
    }
}

/// A plan superseded by another run (its lease expired and taken over, the sources
/// changed): its shard messages write nothing; one that was running when it happened
/// deletes what it wrote; the new plan's commit keeps none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_plan_writes_nothing_the_new_commit_keeps() {
    let mut files = org_day(3);
    // The first GET of a file of shard 1 is held: the run in place, stopped when the
    // listing passed shard 0's 4 files, never asks for it.
    let (server, held) = S3::holding(Hold {
        op: "GetObject",
        target: files[5].0.clone(),
        others: usize::MAX,
        at_most: Duration::from_secs(4),
    });
    let s3 = serve(&server, &files).await;
    let cfg = config("d/", &[("SHARD_MAX_FILES", "4")]);
    let a = plan(&s3, &cfg).await;
    let a_jobs = a.jobs();
    let s = (s3.clone(), cfg.clone(), a_jobs[1].clone());
    let running = tokio::spawn(async move { run_shard_job(&s.0, &s.1, s.2, None).await });
    // While A's shard 1 waits for its GET: A's lease expires, a file arrives, and run B
    // takes the day over.
    while !held.held.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lease = get(&s3, DST, "d/2024/02/12/_lease.json").await.unwrap();
    let mut lease: serde_json::Value = serde_json::from_slice(&lease).unwrap();
    lease["expires"] = "2024-01-01T00:00:00Z".into();
    put(
        &s3,
        DST,
        "d/2024/02/12/_lease.json",
        serde_json::to_vec(&lease).unwrap(),
    )
    .await;
    let extra = log_key(
        "AWSLogs/o-abc123def4/",
        "333333333333",
        "us-east-1",
        "2024/02/12",
        99,
    );
    let extra_file = gzip(&delivery(&[record("333333333333", "us-east-1", 9999)]));
    put(&s3, SRC, &extra, extra_file.clone()).await;
    files.push((extra, extra_file));
    files.sort();
    let b = plan(&s3, &cfg).await;
    assert_ne!(a.plan.plan, b.plan.plan, "other sources, another plan id");
    // A's shard 1 goes on, finds the day taken over, and deletes what it wrote.
    let outcome = running.await.unwrap().unwrap();
    assert!(
        matches!(outcome, ShardOutcome::Superseded { .. }),
        "{outcome:?}"
    );
    let a_chunks: Vec<String> = keys(&s3, DST, &format!("d/2024/02/12/{}-", a.plan.plan)).await;
    assert!(
        a_chunks.is_empty(),
        "the superseded shard's chunks stay: {a_chunks:?}"
    );
    // A's other messages write nothing.
    let before = snapshot(&s3, "d/").await;
    for job in a_jobs.iter().filter(|j| j.index != 1) {
        let o = run_shard_job(&s3, &cfg, job.clone(), None).await.unwrap();
        assert!(matches!(o, ShardOutcome::Superseded { .. }), "{o:?}");
    }
    assert_eq!(snapshot(&s3, "d/").await, before);
    for job in b.jobs() {
        run_shard_job(&s3, &cfg, job, None).await.unwrap();
    }
    assert_day_whole(&s3, DST, "d/2024/02/12/", &want(&files)).await;
    let left = keys(&s3, DST, "d/").await;
    assert!(
        left.iter()
            .all(|k| !k.contains(&a.plan.plan) && !k.contains("/_plan-")),
        "{left:?}"
    );
}

/// A shard that fails names the day, the shard and the object; the day has no
/// manifest, and its status says which shard failed and why. A shard past its
/// deadline says which shard and what to lower.
#[tokio::test]
async fn a_failing_shard_is_named_and_the_day_stays_incomplete() {
    let mut files = org_day(3);
    let bad = files[9].0.clone();
    files[9].1 = gzip(b"{\"Records\":[{\"eventID\":");
    let server = S3::new();
    let s3 = serve(&server, &files).await;
    let cfg = config("d/", &[("SHARD_MAX_FILES", "6")]);
    let jobs = plan(&s3, &cfg).await.jobs();
    let err = run_shard_job(&s3, &cfg, jobs[0].clone(), Some(std::time::Instant::now()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "2024-02-12, shard 0 of 3: 2024-02-12, shard 0 of 3, stopped before the deadline"
        ),
        "{err}"
    );
    assert!(err.contains("lower SHARD_MAX_FILES (now 6)"), "{err}");
    let err = run_shard_job(&s3, &cfg, jobs[1].clone(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("2024-02-12, shard 1 of 3: "), "{err}");
    assert!(err.contains(&format!("s3://{SRC}/{bad}")), "{err}");
    for job in [&jobs[0], &jobs[2]] {
        run_shard_job(&s3, &cfg, job.clone(), None).await.unwrap();
    }
    assert!(get(&s3, DST, "d/2024/02/12/_manifest.json").await.is_none());
    let status = day_status(&s3, &cfg, day()).await.unwrap().to_string();
    assert!(
        status.contains("3 shards: 2 done, 0 pending, 1 failed"),
        "{status}"
    );
    assert!(status.contains("shard 1 failed at "), "{status}");
    assert!(status.contains(&bad), "{status}");
    // While the plan is pending, another run of the day is refused.
    let err = aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is being aggregated by run"), "{err}");
}

/// A day that outgrows one shard while it is listed stops the run in place; what an
/// earlier run of one shard wrote (`000000.ndjson.gz`) is cleaned up by the commit.
#[tokio::test]
async fn a_day_that_outgrows_one_shard_leaves_nothing_of_the_run_in_place() {
    let files = org_day(5);
    let server = S3::new();
    let s3 = serve(&server, &files).await;
    run_with(&s3, "d/", &[("CHUNK_SIZE_BYTES", "2000")]).await;
    assert!(keys(&s3, DST, "d/2024/02/12/000003.ndjson.gz").await.len() == 1);
    let sharded = [("CHUNK_SIZE_BYTES", "2000"), ("SHARD_MAX_FILES", "12")];
    let s = run_with(&s3, "d/", &sharded).await;
    assert_eq!(s.manifest.shards.len(), 3);
    assert!(s
        .stale_chunks_deleted
        .iter()
        .any(|k| k.ends_with("/000000.ndjson.gz")));
    assert_day_whole(&s3, DST, "d/2024/02/12/", &want(&files)).await;
}

/// A day whose first folders suggest more than one shard, but that fits one after all
/// (the rest of its folders are empty that day): it is one shard, run once listed,
/// with the names and records of a day of one shard.
#[tokio::test]
async fn a_day_that_only_looked_larger_than_one_shard_is_one_shard() {
    let mut files = Vec::new();
    for a in 0..5 {
        let account = format!("{:012}", 111_111_111_111u64 + a);
        for r in 0..20 {
            let region = format!("xx-region-{r:02}");
            // 64 of the 100 folders hold 10 files on the day; the others only files of
            // another day (their day folder is empty).
            let on_day = (a * 20 + r) < 64;
            let day = if on_day { "2024/02/12" } else { "2024/02/11" };
            for f in 0..if on_day { 10 } else { 1 } {
                let rec = record(&account, &region, f);
                files.push((
                    log_key("AWSLogs/", &account, &region, day, f),
                    gzip(&delivery(&[rec])),
                ));
            }
        }
    }
    files.sort();
    let on_day: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|(k, _)| k.contains("/2024/02/12/"))
        .cloned()
        .collect();
    assert_eq!(on_day.len(), 640);
    let server = S3::new();
    let s3 = serve(&server, &files).await;
    let s = run_with(&s3, "d/", &[("SHARD_MAX_FILES", "700")]).await;
    assert_eq!(s.manifest.shards.len(), 1);
    assert!(s.manifest.plan.is_none());
    assert_eq!(s.manifest.chunks[0].key, "d/2024/02/12/000000.ndjson.gz");
    assert_day_whole(&s3, DST, "d/2024/02/12/", &want(&on_day)).await;
}

/// A next day of many shards, its folders cut between them, writes one delivery index
/// (a part per shard); the day before, of many shards too, reads by it only the files
/// of the next folder holding earlier events, and holds exactly its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_days_delivery_index_serves_a_sharded_day_before() {
    let files = straddling_days();
    let server = S3::new();
    let s3 = serve(&server, &files).await;
    let cfg = config("idx/", &[("DAY_BY", "event"), ("SHARD_MAX_FILES", "5")]);
    let next: Day = "2024-02-13".parse().unwrap();
    let next_day = aggregate_day(&s3, &cfg, next, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(next_day.manifest.shards.len(), 3, "12 files in shards of 5");
    let index = next_day.manifest.delivery_index.as_ref().unwrap();
    assert_eq!(index.files, 12);
    let summary = aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap();
    let (want, _, _, _) = event_day_oracle(&files, "2024-02-12", false);
    assert_day_whole(&s3, DST, "idx/2024/02/12/", &want).await;
    assert_eq!(
        summary.manifest.shards.len(),
        4,
        "12 + 5 files in shards of 5"
    );
    let sel = summary.manifest.selection.as_ref().unwrap();
    let used = sel.next_index.as_ref().unwrap();
    assert_eq!((used.folders_matched, used.files_skipped), (4, 7));
    assert_eq!(sel.folders[1].files, 5);
}
