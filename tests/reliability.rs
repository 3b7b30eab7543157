//! A day stays correct under overlapping runs, redeliveries, wrong configuration and
//! hostile files, against the real S3 protocol server (s3s-fs in-process).

mod common;

use aws_sdk_s3::Client;
use cloudtrail_aggregator::handler::{handle_batch, App};
use cloudtrail_aggregator::lease::LeaseBody;
use cloudtrail_aggregator::{aggregate_day, Config, Day, Error, RunOptions};
use common::*;

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";
const DAY: &str = "2024/02/12";
const FOLDER: &str = "cloudtrail-daily/2024/02/12/";
const LEASE: &str = "cloudtrail-daily/2024/02/12/_lease.json";
const MANIFEST: &str = "cloudtrail-daily/2024/02/12/_manifest.json";

fn day() -> Day {
    "2024-02-12".parse().unwrap()
}

fn config(vars: &[(&str, &str)]) -> Config {
    config_with(vars)
}

/// A server with both buckets and a day of `files` delivery files of `per_file`
/// records in two accounts; the records the output must hold, in order.
async fn day_of(files: usize, per_file: usize) -> (S3, Client, Vec<Expected>) {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    let mut all = Vec::new();
    for account in ["111111111111", "222222222222"] {
        for n in 0..files {
            let recs: Vec<String> = (0..per_file)
                .map(|i| record(account, "eu-west-1", n * 1000 + i))
                .collect();
            all.push((
                log_key("AWSLogs/", account, "eu-west-1", DAY, n),
                gzip(&delivery(&recs)),
            ));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, b) in &all {
        put(&s3, SRC, k, b.clone()).await;
    }
    let want = all.iter().flat_map(|(_, b)| expected_lines(b)).collect();
    (server, s3, want)
}

/// The day folder is whole (see `common::assert_day_whole`) and no lease is left.
async fn assert_day_whole(s3: &Client, want: &[Expected]) {
    common::assert_day_whole(s3, DST, FOLDER, want).await;
    assert_eq!(get(s3, DST, LEASE).await, None, "the lease is released");
}

async fn put_lease(s3: &Client, run: &str, expires: chrono::DateTime<chrono::Utc>) {
    let body = LeaseBody {
        run: run.into(),
        day: "2024-02-12".into(),
        expires: expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        process: None,
    };
    put(s3, DST, LEASE, serde_json::to_vec(&body).unwrap()).await;
}

/// Two overlapping runs of one day with different chunk sizes, started at several
/// offsets: each either writes the whole day or fails naming the run that holds it;
/// at the end the manifest lists exactly the chunks in the folder, which hold exactly
/// the day's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_of_one_day_leave_it_whole() {
    let mut refused = 0;
    for offset_ms in [0u64, 5, 30, 150] {
        let (_server, s3, want) = day_of(30, 40).await;
        let small = config(&[("CHUNK_SIZE_BYTES", "20000")]);
        let large = config(&[]);
        let first = aggregate_day(&s3, &small, day(), RunOptions::default());
        let second = async {
            tokio::time::sleep(std::time::Duration::from_millis(offset_ms)).await;
            aggregate_day(&s3, &large, day(), RunOptions::default()).await
        };
        let (a, b) = tokio::join!(first, second);
        let mut ok = 0;
        for r in [&a, &b] {
            match r {
                Ok(_) => ok += 1,
                Err(e @ Error::Leased { .. }) | Err(e @ Error::LeaseLost { .. }) => {
                    refused += 1;
                    let text = e.to_string();
                    assert!(
                        text.starts_with("2024-02-12 is being aggregated by run "),
                        "{text}"
                    );
                    assert!(text.contains(&format!("s3://{DST}/{LEASE}")), "{text}");
                }
                Err(e) => panic!("offset {offset_ms} ms: {e}"),
            }
        }
        assert!(ok >= 1, "offset {offset_ms} ms: {a:?} {b:?}");
        assert_day_whole(&s3, &want).await;
    }
    assert!(
        refused >= 1,
        "the runs never overlapped: the test tested nothing"
    );
}

/// A live lease of another run fails the run at once, naming the day, the run and
/// until when; nothing of the day is touched (its manifest stays).
#[tokio::test]
async fn a_live_lease_fails_the_run_naming_its_holder() {
    let (_server, s3, _) = day_of(2, 2).await;
    put(&s3, DST, MANIFEST, "{}").await;
    let until = chrono::Utc::now() + chrono::Duration::minutes(10);
    put_lease(&s3, "run-elsewhere", until).await;
    let err = aggregate_day(&s3, &config(&[]), day(), RunOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Leased { .. }), "{err:?}");
    assert!(text.contains("by run run-elsewhere until "), "{text}");
    assert!(
        text.contains(&until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "{text}"
    );
    assert_eq!(get(&s3, DST, MANIFEST).await.as_deref(), Some(&b"{}"[..]));
    assert!(
        get(&s3, DST, LEASE).await.is_some(),
        "the other run's lease stays"
    );
}

/// A run killed before its manifest (its chunks and an expired lease left behind, no
/// manifest) is redone exactly by the next run, which takes the expired lease over.
#[tokio::test]
async fn a_killed_run_is_redone_exactly_after_its_lease_expires() {
    let (_server, s3, want) = day_of(5, 20).await;
    let cfg = config(&[("CHUNK_SIZE_BYTES", "5000")]);
    aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap();
    // What a kill between the chunks and the manifest leaves: chunks, one of a larger
    // earlier run, the lease, and no manifest.
    s3.delete_object()
        .bucket(DST)
        .key(MANIFEST)
        .send()
        .await
        .unwrap();
    put(&s3, DST, &format!("{FOLDER}000999.ndjson.gz"), "stale").await;
    put_lease(
        &s3,
        "killed-run",
        chrono::Utc::now() - chrono::Duration::seconds(1),
    )
    .await;
    aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap();
    assert_day_whole(&s3, &want).await;
}

/// Two runs that created the lease at once on a server whose conditional writes are
/// not atomic (s3s-fs checks, then writes) can leave one run's body stored with the
/// other's checksum and ETag. The lease is still read (its body decides), so the
/// next run takes the expired lease over instead of failing on the checksum forever.
#[tokio::test]
async fn a_lease_stored_with_another_writes_checksum_is_still_read() {
    let (server, s3, want) = day_of(3, 5).await;
    let expired = chrono::Utc::now() - chrono::Duration::seconds(1);
    put_lease(&s3, "racer-a", expired).await;
    // The other racer's body, of the same length, lands last on disk; the checksum and
    // ETag stored beside it stay racer-a's.
    let path = server.root.join(DST).join(LEASE);
    let body = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, body.replace("racer-a", "racer-b")).unwrap();
    aggregate_day(&s3, &config(&[]), day(), RunOptions::default())
        .await
        .unwrap();
    assert_day_whole(&s3, &want).await;
}

/// A live lease of a process of this machine that has ended (a killed `ctagg run`) is
/// taken over at once by a rerun on the same machine; one of a process still running
/// is not.
#[tokio::test]
async fn a_lease_of_an_ended_process_here_is_taken_over() {
    let (_server, s3, want) = day_of(3, 5).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let until = chrono::Utc::now() + chrono::Duration::minutes(30);
    let lease = |pid: u32| LeaseBody {
        run: format!("killed-{pid}"),
        day: "2024-02-12".into(),
        expires: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        process: Some(cloudtrail_aggregator::lease::Process {
            host: host.clone(),
            pid,
        }),
    };
    // A process that has ended: a child, waited for.
    let ended = std::process::Command::new("true").spawn().unwrap();
    let pid = ended.id();
    ended.wait_with_output().unwrap();
    put(&s3, DST, LEASE, serde_json::to_vec(&lease(pid)).unwrap()).await;
    aggregate_day(&s3, &config(&[]), day(), RunOptions::default())
        .await
        .unwrap();
    assert_day_whole(&s3, &want).await;
    // pid 1 is running.
    put(&s3, DST, LEASE, serde_json::to_vec(&lease(1)).unwrap()).await;
    let err = aggregate_day(&s3, &config(&[]), day(), RunOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Leased { .. }), "{err:?}");
}

/// The same message delivered twice: in one batch, one after the other, both succeed
/// and the day is whole; delivered to two invocations at once, the second to take the
/// lease is reported as a failed message (SQS redelivers it), never a half day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_is_safe() {
    let (_server, s3, want) = day_of(20, 30).await;
    let app = App {
        s3: s3.clone(),
        sqs: None,
        config: config(&[]),
    };
    let message = |id: &str| {
        let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
        m.message_id = Some(id.to_string());
        m.body = Some(r#"{"year":2024,"month":2,"day":12}"#.to_string());
        m
    };
    let today = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
    let mut batch = aws_lambda_events::event::sqs::SqsEvent::default();
    batch.records = vec![message("m-1"), message("m-1")];
    let outcomes = handle_batch(&app, batch, today, None).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_day_whole(&s3, &want).await;

    let one = |id: &str| {
        let mut e = aws_lambda_events::event::sqs::SqsEvent::default();
        e.records = vec![message(id)];
        e
    };
    let (a, b) = tokio::join!(
        handle_batch(&app, one("m-2"), today, None),
        handle_batch(&app, one("m-2"), today, None)
    );
    for o in a.iter().chain(&b) {
        if let Err(e) = &o.result {
            assert!(e.to_string().contains("is being aggregated by run"), "{e}");
        }
    }
    assert!(a.iter().chain(&b).any(|o| o.result.is_ok()));
    assert_day_whole(&s3, &want).await;
}

/// A source prefix with no account or organisation folder under it is an error naming
/// `s3://bucket/prefix` and what was expected there, not a quiet empty day.
#[tokio::test]
async fn a_prefix_with_no_accounts_is_an_error() {
    let (_server, s3, _) = day_of(1, 1).await;
    let cfg = config(&[("SRC_PREFIX", "AWSLogs/o-nosuchorg1/")]);
    let err = aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoAccounts { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("s3://cloudtrail-logs/AWSLogs/o-nosuchorg1/"),
        "{text}"
    );
    assert!(
        text.contains("12-digit account ids or o-… organisation folders"),
        "{text}"
    );
    assert_eq!(get(&s3, DST, MANIFEST).await, None);
    // A real day with no files stays a warning and an empty manifest.
    let summary = aggregate_day(
        &s3,
        &config(&[]),
        "2024-02-13".parse().unwrap(),
        RunOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(summary.manifest.source_files, 0);
}

/// A delivery file holding a record larger than MAX_RECORD_BYTES fails the day naming
/// `s3://bucket/key` and the limit, with no manifest.
#[tokio::test]
async fn a_record_past_the_limit_fails_naming_the_object() {
    let (_server, s3, _) = day_of(1, 1).await;
    let key = log_key("AWSLogs/", "111111111111", "eu-west-1", DAY, 7);
    let big = format!("{{\"eventID\":\"x\",\"blob\":\"{}\"}}", "z".repeat(3 << 20));
    put(&s3, SRC, &key, gzip(&delivery(&[big]))).await;
    let cfg = config(&[("MAX_RECORD_BYTES", &(2u64 << 20).to_string())]);
    let err = aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("s3://{SRC}/{key}")), "{err}");
    assert!(
        err.contains("larger than MAX_RECORD_BYTES (2097152 bytes"),
        "{err}"
    );
    assert_eq!(get(&s3, DST, MANIFEST).await, None);
    assert_eq!(
        get(&s3, DST, LEASE).await,
        None,
        "a failed run releases the lease"
    );
}
